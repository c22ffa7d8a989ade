//! Register rows read through a shipped mapping.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fhir_registers::fuzzing::csv_rows(data));
