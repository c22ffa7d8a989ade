//! A register's page: its metadata and declared properties, its timeline of versions with what
//! changed in each, a search over its codes (paged), all as the register stood on a chosen date.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, concept_href, register_href, scroll_table, thousands};
use super::{Browser, PAGE_SIZE, host_of, register_on, registry_as_of, render};
use crate::error::FhirError;
use crate::store::CodeSystemVersion;
use crate::terminology::compose::Expansion;
use crate::terminology::expand::code_system_page;
use crate::terminology::resources::code_system_resource_id;

/// The query of a register's page.
#[derive(Debug, Deserialize)]
pub struct RegisterQuery {
    /// Words or a code prefix to search for.
    q: Option<String>,
    /// First result shown.
    offset: Option<String>,
    /// As of this date.
    date: Option<String>,
}

/// A paging offset from a query (absent: 0; not a number: 400).
pub fn offset_of(text: Option<&str>) -> Result<usize, FhirError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(0),
        Some(t) => t
            .parse()
            .map_err(|_| FhirError::Invalid(format!("'offset' must be a whole number, not '{t}'"))),
    }
}

/// `GET /registers/{id}?q=&offset=&date=`.
pub async fn register_page(
    State(browser): State<Browser>,
    Path(id): Path<String>,
    Query(query): Query<RegisterQuery>,
    headers: HeaderMap,
) -> Response {
    let base = browser.fhir_base.clone();
    let host = host_of(&headers);
    let limits = browser.state.limits;
    let timelines = browser.timelines.clone();
    render(&browser, move |live| {
        let date = query.date.as_deref().map(str::trim).filter(|d| !d.is_empty());
        let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let offset = offset_of(query.offset.as_deref())?;
        let registry = registry_as_of(live, date)?;
        let cs = register_on(live, &registry, &id, date)?;
        let versions = registry.code_system_versions(&cs.meta.url);
        let steps = timelines.steps(versions)?;
        let (page, total) = code_system_page(&registry, &cs, q, offset, PAGE_SIZE, limits)?;
        let title = cs.meta.title.clone().unwrap_or_else(|| cs.meta.id.clone());
        let latest = live
            .code_system(&cs.meta.url, None)
            .is_some_and(|l| l.version == cs.version);
        let resource_id = code_system_resource_id(&cs, latest);
        let here = register_href(&id, None);
        let body = html! {
            @if let Some(d) = date {
                p class="as-of-note" { "As the register stood on " strong { (d) } ": version " (cs.version) "." }
            }
            (layout::as_of_form(&here, date, &[("q", q)]))
            (metadata(&cs))
            section aria-labelledby="timeline" {
                h2 id="timeline" { "Versions (" (steps.len()) ")" }
                (scroll_table("Versions", html! {
                    table {
                        caption class="muted" { "Each release, with what changed against the one before" }
                        thead {
                            tr {
                                th scope="col" { "Version" }
                                th scope="col" { "Date" }
                                th scope="col" class="num" { "Concepts" }
                                th scope="col" class="num" { "Added" }
                                th scope="col" class="num" { "Removed" }
                                th scope="col" class="num" { "Changed" }
                                th scope="col" { "Compare" }
                            }
                        }
                        tbody {
                            @for (i, step) in steps.iter().enumerate() {
                                @let v = &step.version.version;
                                tr {
                                    td {
                                        @match &step.date {
                                            Some(d) => a href=(register_href(&id, Some(d))) { (v) },
                                            None => (v),
                                        }
                                    }
                                    td { (step.date.as_deref().unwrap_or("")) }
                                    td class="num" { (thousands(step.version.len())) }
                                    @match step.counts {
                                        Some(c) => {
                                            td class="num" { (thousands(c.added)) }
                                            td class="num" { (thousands(c.removed)) }
                                            td class="num" { (thousands(c.changed)) }
                                            td {
                                                a href={ "/registers/" (layout::enc(&id)) "/diff" (layout::query(&[("from", Some(&steps[i - 1].version.version)), ("to", Some(v))])) } {
                                                    "Diff with " (steps[i - 1].version.version)
                                                }
                                            }
                                        }
                                        None => {
                                            td class="num" { (thousands(step.version.len())) }
                                            td class="num" { "—" }
                                            td class="num" { "—" }
                                            td { "First release" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }))
            }
            section aria-labelledby="codes" {
                h2 id="codes" { "Codes" }
                form class="search" role="search" method="get" action=(here) data-live="results" {
                    label for="q" { "Search codes and displays" }
                    input id="q" type="search" name="q" value=[q] autocomplete="off" placeholder="code or words";
                    @if let Some(d) = date {
                        input type="hidden" name="date" value=(d);
                    }
                    button type="submit" { "Search" }
                }
                (results(&id, date, q, offset, &page, total))
            }
            (layout::fhir_request(&host, &format!("{base}/CodeSystem/{}?_summary=true", layout::enc(&resource_id))))
        };
        Ok(layout::page(&base, &title, &[("Registers", "/".to_string())], body))
    })
    .await
}

/// The register's metadata and declared properties.
fn metadata(cs: &CodeSystemVersion) -> Markup {
    let m = &cs.meta;
    html! {
        section aria-labelledby="about" {
            h2 id="about" { "About" }
            dl class="meta" {
                dt { "Canonical URL" } dd { code { (m.url) } }
                dt { "Resource id" } dd { code { (m.id) } }
                @if let Some(p) = &m.publisher { dt { "Custodian" } dd { (p) } }
                dt { "Version" } dd { (cs.version) }
                dt { "Concepts" } dd { (thousands(cs.len())) }
                dt { "Status" } dd { (m.status) }
                dt { "Content" } dd { (m.content) }
                @if let Some(h) = &m.hierarchy_meaning { dt { "Hierarchy" } dd { (h) } }
                @if let Some(d) = &m.description { dt { "Description" } dd { (d) } }
                @if let Some(c) = &m.copyright { dt { "Licence" } dd { (c) } }
            }
            @if !m.properties.is_empty() {
                details class="properties" {
                summary { "Declared properties (" (m.properties.len()) ")" }
                (scroll_table("Properties", html! {
                    table {
                        thead {
                            tr {
                                th scope="col" { "Code" }
                                th scope="col" { "Type" }
                                th scope="col" { "Meaning" }
                            }
                        }
                        tbody {
                            @for p in &m.properties {
                                tr {
                                    td { code { (p.code) } }
                                    td { (p.kind) }
                                    td { (p.description.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }))
                }
            }
        }
    }
}

/// The codes found, with a pager: the section search-as-you-type replaces.
fn results(
    id: &str,
    date: Option<&str>,
    q: Option<&str>,
    offset: usize,
    page: &Expansion,
    total: usize,
) -> Markup {
    let base = format!("/registers/{}", layout::enc(id));
    let href = |o: usize| layout::page_href(&base, q, date, o);
    html! {
        div id="results" {
            (layout::pager(offset, page.members.len(), total, &href))
            @if !page.members.is_empty() {
                (scroll_table("Codes found", html! {
                    table {
                        thead {
                            tr {
                                th scope="col" { "Code" }
                                th scope="col" { "Display" }
                                th scope="col" { "Status" }
                            }
                        }
                        tbody {
                            @for m in &page.members {
                                @let c = page.concept(m);
                                tr {
                                    td { a href=(concept_href(id, &c.code, date)) { code { (c.code) } } }
                                    td { (c.display.as_deref().unwrap_or("")) }
                                    td { (status_text(&c)) }
                                }
                            }
                        }
                    }
                }))
            }
        }
    }
}

/// A concept's status in words: its `status` property, else active or inactive.
pub fn status_text(c: &crate::store::Concept) -> String {
    match (&c.status, c.inactive) {
        (Some(s), _) => s.to_string(),
        (None, true) => "inactive".into(),
        (None, false) => "active".into(),
    }
}
