//! fhir-registers: national reference-data registers served as FHIR R4 terminology.
//!
//! Data flows one way: [`source`] (files, URLs) → [`mapping`] (declarative mapping files) →
//! [`store`] (versioned concepts and indexes) ← [`terminology`] (the FHIR operations) ← [`http`]
//! (axum). [`registers`] assembles the store from mappings, stored releases and plain FHIR
//! resources; [`app`] builds the router that tests drive with `tower::ServiceExt::oneshot`.
//! [`web`] is the register browser: HTML pages at `/` over the same `terminology` functions.
//! Beside that flow, [`metrics`] counts what the server answers, syncs, imports and publishes,
//! for `GET /metrics`.

pub mod authoring;
pub mod commands;
pub mod config;
pub mod error;
pub mod fhir;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod mapping;
pub mod metrics;
pub mod registers;
pub mod source;
pub mod store;
pub mod sync;
pub mod terminology;
pub mod web;

pub use http::{AppState, app};
