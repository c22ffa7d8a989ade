//! The committed fuzz corpus (`fuzz/corpus/{target}/`), replayed through the same entry points
//! the fuzz targets call (`fhir_registers::fuzzing`), so every input the fuzzer kept — crashes it
//! found included — keeps being run by `cargo test` without the fuzzer.

use std::path::PathBuf;

use fhir_registers::fuzzing;

use super::support::repo;

/// A fuzz target's entry point.
type Target = fn(&[u8]);

/// Every fuzz target, by the name of its corpus folder.
const TARGETS: [(&str, Target); 6] = [
    ("mapping_toml", fuzzing::mapping_toml),
    ("csv_rows", fuzzing::csv_rows),
    ("parameters_json", fuzzing::parameters_json),
    ("parameters_xml", fuzzing::parameters_xml),
    ("compose", fuzzing::compose),
    ("filters", fuzzing::filters),
];

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = repo().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_runs_without_panicking() {
    for (target, run) in TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "fuzz/corpus/{target} has seeds");
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} panicked (reproduce: cargo fuzz run {target} {})",
                file.display(),
                file.display()
            );
        }
    }
}

#[test]
fn the_fuzzed_code_system_is_there_to_fuzz() {
    // The compose and filter targets are only worth running if their CodeSystem loads.
    let registry = fuzzing::small_registry();
    assert_eq!(
        registry
            .code_system(fuzzing::SMALL_CODE_SYSTEM, None)
            .map(|cs| cs.len()),
        Some(7)
    );
    assert!(!fuzzing::shipped_mappings().is_empty());
}
