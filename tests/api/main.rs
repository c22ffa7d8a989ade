//! Integration tests: the real router (`oneshot`) over the shipped mappings fed with real register
//! slices from `tests/fixtures`, plus a few tests over a bound loopback port.

mod default_run;
mod errors;
mod expand;
mod fuzz_corpus;
mod history;
mod lookup;
mod loopback;
mod mappings;
mod r4;
mod resources;
mod support;
mod translate;
mod validate;
mod versions;
