//! Store and operation benchmarks: `$lookup`, `$validate-code`, `$expand` with a text filter and
//! paging, and hierarchy `is-a`, over the real registers.
//!
//! Inputs: the full OS Code-Point Open 2014-08 file (1.68M postcodes) from
//! `../shared/data/postcodes` when it is there (else the shipped 34k-postcode slice), and the
//! shipped WHO ICD-10 2019 file. Run with `cargo bench --bench store`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use fhir_registers::fhir::params::OperationParams;
use fhir_registers::mapping::{self, MappingSet};
use fhir_registers::registers;
use fhir_registers::source;
use fhir_registers::store::persist;
use fhir_registers::store::{CodeSystemVersion, Registry};
use fhir_registers::terminology::expand::{ExpandLimits, ExpandRequest, expand};
use fhir_registers::terminology::lookup::{LookupRequest, lookup, lookup_json};
use fhir_registers::terminology::validate::{Target, ValidateRequest, validate_code};

const POSTCODE: &str =
    "https://digital.nhs.uk/services/organisation-data-service/CodeSystem/postcode";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Imports a register into a temporary data directory and loads it back as `serve` does
/// (large record files read in place, small ones decoded).
fn load(
    set: &MappingSet,
    feed: &str,
    file: &Path,
    data_dir: &Path,
    registry: &mut Registry,
) -> Vec<String> {
    let m = set.mapping(feed).expect("mapping");
    let local = source::local_file(file.to_str().expect("path")).expect("file");
    let started = Instant::now();
    let release = mapping::read_release(m, &local, "bench", &mut |_| {}).expect("imports");
    let codes: Vec<String> = (0..release.concepts.len())
        .map(|i| release.concepts.code(i).to_string())
        .collect();
    persist::save_release(data_dir, release, false).expect("stores");
    let read = started.elapsed();
    let meta = Arc::new(set.code_systems[&m.spec.code_system.url].clone());
    let loaded = Instant::now();
    let parts = registers::load_releases(data_dir, [m.feed()], true);
    registry.add_code_system(CodeSystemVersion::new(meta, "bench".into(), parts));
    eprintln!(
        "{feed}: {} concepts from {} (import {:.1} s, load {:.2} s)",
        codes.len(),
        file.display(),
        read.as_secs_f64(),
        loaded.elapsed().as_secs_f64()
    );
    codes
}

fn params(pairs: &[(&str, &str)]) -> OperationParams {
    OperationParams::from_query(
        &pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
    )
}

fn benches(c: &mut Criterion) {
    let set = MappingSet::load_dir(&repo().join("mappings")).expect("mappings");
    let mut registry = Registry::default();
    let full = repo().join("../shared/data/postcodes/codepoint_open_gb_2014-08.csv.gz");
    let postcodes = if full.is_file() {
        full
    } else {
        repo().join("mappings/data/postcodes/codepoint_open_2014-08_TS_DL_HG.csv.gz")
    };
    let data = tempfile::tempdir().expect("tempdir");
    let codes = load(
        &set,
        "postcodes-codepoint",
        &postcodes,
        data.path(),
        &mut registry,
    );
    // ICD-10 read in place too (it is small enough to be decoded otherwise), so the hierarchy
    // filters below run on packed records as a national-scale register's would.
    persist::set_decode_limit(0);
    load(
        &set,
        "icd10-who",
        &repo().join("mappings/data/icd10/who_icd10_2019_flat.csv"),
        data.path(),
        &mut registry,
    );
    for vs in set.value_sets() {
        registers::add_value_set(&mut registry, vs);
    }
    let picks: Vec<&String> = (0..1024)
        .map(|i| &codes[(i * 7919 * 104_729) % codes.len()])
        .collect();

    let mut g = c.benchmark_group("lookup");
    let mut i = 0;
    g.bench_function("postcode", |b| {
        b.iter(|| {
            i = (i + 1) % picks.len();
            let req = LookupRequest {
                system: POSTCODE.into(),
                code: picks[i].clone(),
                ..Default::default()
            };
            // As `serve` answers in compact JSON: written straight to bytes.
            black_box(lookup_json(&registry, &req).expect("found"))
        })
    });
    g.bench_function("icd10_with_parse", |b| {
        let p = params(&[("system", ICD10), ("code", "J45.9")]);
        b.iter(|| {
            black_box(
                lookup(&registry, &LookupRequest::from_params(&p).expect("ok")).expect("found"),
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("validate_code");
    g.bench_function("postcode_in_code_system", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % picks.len();
            let p = params(&[("url", POSTCODE), ("code", picks[i].as_str())]);
            let req = ValidateRequest::from_params(&p, Target::CodeSystem).expect("ok");
            black_box(validate_code(&registry, &req).expect("answers"))
        })
    });
    g.bench_function("icd10_in_value_set_is_a", |b| {
        let p = params(&[
            (
                "url",
                "https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x",
            ),
            ("system", ICD10),
            ("code", "J45.9"),
        ]);
        let req = ValidateRequest::from_params(&p, Target::ValueSet).expect("ok");
        b.iter(|| black_box(validate_code(&registry, &req).expect("answers")))
    });
    g.finish();

    let mut g = c.benchmark_group("expand");
    g.sample_size(20);
    let limits = ExpandLimits::default();
    for filter in ["ts18 1", "b1", "ab10 1a"] {
        g.bench_function(
            format!("postcodes_filter_{}", filter.replace(' ', "_")),
            |b| {
                let p = params(&[
                    (
                        "url",
                        "https://fhir-registers.org/fhir/ValueSet/postcodes-all",
                    ),
                    ("filter", filter),
                    ("count", "20"),
                ]);
                let req = ExpandRequest::from_params(&p).expect("ok");
                b.iter(|| black_box(expand(&registry, &req, limits).expect("expands")))
            },
        );
    }
    g.bench_function("postcodes_deep_page", |b| {
        let offset = (codes.len() / 2).to_string();
        let p = params(&[
            (
                "url",
                "https://fhir-registers.org/fhir/ValueSet/postcodes-all",
            ),
            ("offset", &offset),
            ("count", "20"),
        ]);
        let req = ExpandRequest::from_params(&p).expect("ok");
        b.iter(|| black_box(expand(&registry, &req, limits).expect("expands")))
    });
    g.bench_function("icd10_is_a_chapter_x", |b| {
        let p = params(&[
            (
                "url",
                "https://fhir-registers.org/fhir/ValueSet/icd-10-chapter-x",
            ),
            ("count", "20"),
        ]);
        let req = ExpandRequest::from_params(&p).expect("ok");
        b.iter(|| black_box(expand(&registry, &req, limits).expect("expands")))
    });
    g.finish();

    // Property and hierarchy filters in compose: each first checked against the same release
    // decoded (every record in memory), then timed on the packed (read in place) one.
    let decoded = decoded_postcodes(&set, &postcodes);
    let mut g = c.benchmark_group("expand_filters");
    g.sample_size(10);
    for (name, system, filter) in FILTERS {
        let vs = serde_json::json!({"resourceType": "ValueSet", "status": "active",
            "compose": {"include": [{"system": system, "filter": [filter()]}]}});
        let req = ExpandRequest {
            value_set: Some(vs),
            count: Some(20),
            ..ExpandRequest::default()
        };
        let packed = expand(&registry, &req, limits).expect("expands");
        if system == POSTCODE {
            let other = expand(&decoded, &req, limits).expect("expands");
            assert_eq!(
                (
                    &packed["expansion"]["total"],
                    &packed["expansion"]["contains"]
                ),
                (
                    &other["expansion"]["total"],
                    &other["expansion"]["contains"]
                ),
                "{name}: packed and decoded differ"
            );
        }
        eprintln!("{name}: total {}", packed["expansion"]["total"]);
        g.bench_function(name, |b| {
            b.iter(|| black_box(expand(&registry, &req, limits).expect("expands")))
        });
    }
    g.finish();
}

/// The filters timed by `expand_filters`: (name, system, filter).
type FilterCase = (&'static str, &'static str, fn() -> serde_json::Value);

const FILTERS: [FilterCase; 10] = [
    (
        "postcodes_eq_district",
        POSTCODE,
        || serde_json::json!({"property": "adminDistrict", "op": "=", "value": "E06000004"}),
    ),
    (
        "postcodes_in_wards",
        POSTCODE,
        || serde_json::json!({"property": "EW", "op": "in", "value": "E05001549,E05001541"}),
    ),
    (
        "postcodes_in_two_districts",
        POSTCODE,
        || serde_json::json!({"property": "adminDistrict", "op": "in", "value": "E06000004,E06000005"}),
    ),
    (
        "postcodes_regex_code",
        POSTCODE,
        || serde_json::json!({"property": "code", "op": "regex", "value": "TS18.*"}),
    ),
    (
        "postcodes_exists_county",
        POSTCODE,
        || serde_json::json!({"property": "adminCounty", "op": "exists", "value": "true"}),
    ),
    (
        "postcodes_regex_ward",
        POSTCODE,
        || serde_json::json!({"property": "EW", "op": "regex", "value": "E0500154[19]"}),
    ),
    (
        "icd10_is_a_chapter",
        ICD10,
        || serde_json::json!({"property": "concept", "op": "is-a", "value": "X"}),
    ),
    (
        "icd10_descendent_of_block",
        ICD10,
        || serde_json::json!({"property": "concept", "op": "descendent-of", "value": "J40-J47"}),
    ),
    (
        "icd10_child_of_category",
        ICD10,
        || serde_json::json!({"property": "concept", "op": "child-of", "value": "J45"}),
    ),
    (
        "icd10_is_not_a_chapter",
        ICD10,
        || serde_json::json!({"property": "concept", "op": "is-not-a", "value": "X"}),
    ),
];

/// The postcode release again, every record decoded when loaded (for comparing answers).
fn decoded_postcodes(set: &MappingSet, file: &Path) -> Registry {
    let data = tempfile::tempdir().expect("tempdir");
    let default = persist::decode_limit();
    persist::set_decode_limit(usize::MAX);
    let mut decoded = Registry::default();
    load(set, "postcodes-codepoint", file, data.path(), &mut decoded);
    persist::set_decode_limit(default);
    decoded
}

criterion_group! {
    name = store;
    config = Criterion::default();
    targets = benches
}
criterion_main!(store);
