//! The text and regex filters over a small CodeSystem.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fhir_registers::fuzzing::filters(data));
