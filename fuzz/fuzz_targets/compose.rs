//! ValueSet compose evaluation (expansion and membership) over a small CodeSystem.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fhir_registers::fuzzing::compose(data));
