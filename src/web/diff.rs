//! The difference between two versions of a register (`$diff`): pick two versions, see the counts
//! by property and a paged list of added, removed and changed concepts with old → new.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::concept::changes_list;
use super::layout::{self, concept_href, register_href, scroll_table, thousands};
use super::register::offset_of;
use super::{Browser, PAGE_SIZE, host_of, register_on, render};
use crate::error::FhirError;
use crate::store::version_start;
use crate::terminology::history::{DiffRequest, diff_versions_of};

/// The query of a diff page.
#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    /// The older version (default: the one before `to`).
    from: Option<String>,
    /// The newer version (default: the latest).
    to: Option<String>,
    /// First concept shown.
    offset: Option<String>,
}

/// `GET /registers/{id}/diff?from=&to=&offset=`.
pub async fn diff_page(
    State(browser): State<Browser>,
    Path(id): Path<String>,
    Query(query): Query<DiffQuery>,
    headers: HeaderMap,
) -> Response {
    let base = browser.fhir_base.clone();
    let host = host_of(&headers);
    let timelines = browser.timelines.clone();
    render(&browser, move |registry| {
        let cs = register_on(registry, registry, &id, None)?;
        let versions = registry.code_system_versions(&cs.meta.url);
        let pick = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        let to = pick(&query.to).unwrap_or_else(|| cs.version.clone());
        let from = match pick(&query.from) {
            Some(f) => f,
            None => {
                let at = versions.iter().position(|v| v.version == to).unwrap_or(0);
                match at.checked_sub(1).and_then(|i| versions.get(i)) {
                    Some(v) => v.version.clone(),
                    None => {
                        return Err(FhirError::NotFound(format!(
                            "'{to}' is the first version of the register: there is no earlier version to compare it with"
                        )));
                    }
                }
            }
        };
        let offset = offset_of(query.offset.as_deref())?;
        let (old, new) = diff_versions_of(
            registry,
            &DiffRequest {
                url: cs.meta.url.clone(),
                from_version: from.clone(),
                to_version: Some(to.clone()),
                properties: Vec::new(),
                offset,
                count: PAGE_SIZE,
            },
        )?;
        let d = timelines.diff(&old, &new)?.page(&old, &new, &[], offset, PAGE_SIZE);
        let register_title = cs.meta.title.clone().unwrap_or_else(|| cs.meta.id.clone());
        let title = format!("Changes from {} to {}", d.from_version, d.to_version);
        let here = format!("/registers/{}/diff", layout::enc(&id));
        let href = |o: usize| {
            let o = o.to_string();
            format!(
                "{here}{}",
                layout::query(&[("from", Some(&d.from_version)), ("to", Some(&d.to_version)), ("offset", Some(o.as_str()).filter(|o| *o != "0"))])
            )
        };
        let date_of = |v: &str| version_start(v);
        let (from_date, to_date) = (date_of(&d.from_version), date_of(&d.to_version));
        let fhir = format!(
            "{base}/CodeSystem/$diff{}",
            layout::query(&[("url", Some(&d.url)), ("fromVersion", Some(&d.from_version)), ("toVersion", Some(&d.to_version))])
        );
        let body = html! {
            form class="pick" method="get" action=(here) {
                label for="from" { "From" }
                select id="from" name="from" {
                    @for v in versions {
                        option value=(v.version) selected[v.version == d.from_version] { (v.version) }
                    }
                }
                label for="to" { "to" }
                select id="to" name="to" {
                    @for v in versions {
                        option value=(v.version) selected[v.version == d.to_version] { (v.version) }
                    }
                }
                button type="submit" { "Compare" }
            }
            section aria-labelledby="counts" {
                h2 id="counts" { "Counts" }
                dl class="meta" id="diff-counts" {
                    dt { "Added" } dd class="change-added" data-count="added" { (thousands(d.added)) }
                    dt { "Removed" } dd class="change-removed" data-count="removed" { (thousands(d.removed)) }
                    dt { "Changed" } dd class="change-changed" data-count="changed" { (thousands(d.changed)) }
                    dt { "Unchanged" } dd data-count="unchanged" { (thousands(d.unchanged)) }
                }
                @if !d.per_field.is_empty() {
                    (scroll_table("Changes by property", html! {
                        table {
                            caption { "Changed concepts by property" }
                            thead { tr { th scope="col" { "Property" } th scope="col" class="num" { "Concepts" } } }
                            tbody {
                                @for (p, n) in &d.per_field {
                                    tr { td { code { (p) } } td class="num" { (thousands(*n)) } }
                                }
                            }
                        }
                    }))
                }
            }
            section aria-labelledby="concepts" {
                h2 id="concepts" { "Concepts" }
                p class="muted" { "Added first, then removed, then changed, each in code order." }
                (layout::pager(offset, d.concepts.len(), d.total, &href))
                @if !d.concepts.is_empty() {
                    (scroll_table("Changed concepts", html! {
                        table class="diff" {
                            thead {
                                tr {
                                    th scope="col" { "Code" }
                                    th scope="col" { "Change" }
                                    th scope="col" { "Display" }
                                    th scope="col" { "Old → new" }
                                }
                            }
                            tbody {
                                @for e in &d.concepts {
                                    @let at = if e.change == "removed" { from_date.as_deref() } else { to_date.as_deref() };
                                    tr {
                                        td { a href=(concept_href(&id, &e.code, at)) { code { (e.code) } } }
                                        td { span class={ "change-" (e.change) } { (e.change) } }
                                        td { (e.display.as_deref().unwrap_or("")) }
                                        td { @if !e.changes.is_empty() { (changes_list(&e.changes)) } }
                                    }
                                }
                            }
                        }
                    }))
                }
            }
            (layout::fhir_request(&host, &fhir))
        };
        Ok(layout::page(
            &base,
            &title,
            &[("Registers", "/".to_string()), (register_title.as_str(), register_href(&id, None))],
            body,
        ))
    })
    .await
}
