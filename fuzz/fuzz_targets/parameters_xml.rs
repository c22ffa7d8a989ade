//! An XML request body read as Parameters and as each operation's request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fhir_registers::fuzzing::parameters_xml(data));
