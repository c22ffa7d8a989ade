//! Integration tests: the real router (`oneshot`) over the shipped mappings fed with real register
//! slices from `tests/fixtures`, plus a few tests over a bound loopback port.

mod batch_limits;
mod conformance2;
mod datadictionary;
mod default_run;
mod edge;
mod epcmem;
mod errors;
mod expand;
mod fuzz_corpus;
mod history;
mod history_scale;
mod hot_path;
mod icd10_hes;
mod lookup;
mod loopback;
mod mapping_tests;
mod mappings;
mod nspl;
mod observability;
mod opcs4;
mod operations;
mod packed_filters;
mod r4;
mod request_limits;
mod resources;
mod store_hygiene;
mod support;
mod sync;
mod translate;
mod upstream;
mod validate;
mod versions;
mod web;
mod workload;
mod xml_limits;

// jemalloc, as in the server binary: `hot_path` reads its per-thread allocation counter.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
