//! A mapping file's text, parsed and compiled.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fhir_registers::fuzzing::mapping_toml(data));
