//! A concept's page: display, status and validity; every property (Codings linked to their own
//! concepts); parents and children, to walk a hierarchy; designations; its history through every
//! release (`$concept-history`); and the equivalent `$lookup` request.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, concept_href, register_href, scroll_table, thousands};
use super::register::status_text;
use super::{Browser, Page, host_of, register_on, registry_as_of, render};
use crate::error::FhirError;
use crate::store::{CodeSystemVersion, Registry, Value};
use crate::terminology::history::{
    ConceptHistory, HistoryRequest, PropertyChange, concept_history_entries,
};
use crate::terminology::lookup::find_concept;

/// Children listed on a concept's page (a commissioner has hundreds of practices at most; the
/// rest are counted).
const CHILDREN_SHOWN: usize = 500;

/// The query of a concept's page.
#[derive(Debug, Deserialize)]
pub struct ConceptQuery {
    /// As of this date.
    date: Option<String>,
}

/// `GET /registers/{id}/concepts/{code}?date=`.
pub async fn concept_page(
    State(browser): State<Browser>,
    Path((id, code)): Path<(String, String)>,
    Query(query): Query<ConceptQuery>,
    headers: HeaderMap,
) -> Response {
    let base = browser.fhir_base.clone();
    let host = host_of(&headers);
    render(&browser, move |live| {
        let date = query.date.as_deref().map(str::trim).filter(|d| !d.is_empty());
        let registry = registry_as_of(live, date)?;
        let register = register_on(live, &registry, &id, date)?;
        let (cs, r) = match find_concept(&registry, &register.meta.url, None, &code) {
            Ok(found) => found,
            Err(e @ FhirError::UnknownCode(_)) => {
                return gone(&base, &registry, &register, &id, &code, date, e);
            }
            Err(e) => return Err(e),
        };
        let c = cs.concept(r);
        let history = concept_history_entries(
            &registry,
            &HistoryRequest {
                system: cs.meta.url.clone(),
                code: c.code.to_string(),
                properties: Vec::new(),
            },
        )?;
        let register_title = cs.meta.title.clone().unwrap_or_else(|| cs.meta.id.clone());
        let title = match &c.display {
            Some(d) => format!("{} {d}", c.code),
            None => c.code.to_string(),
        };
        let children = cs.children(&c.code);
        let lookup = format!(
            "{base}/CodeSystem/$lookup{}",
            layout::query(&[("system", Some(&cs.meta.url)), ("code", Some(&c.code)), ("date", date)])
        );
        let body = html! {
            @if let Some(d) = date {
                p class="as-of-note" { "As it stood on " strong { (d) } " (version " (cs.version) ")." }
            }
            (layout::as_of_form(&concept_href(&id, &c.code, None), date, &[]))
            dl class="meta" {
                dt { "Code" } dd { code { (c.code) } }
                dt { "Display" } dd { (c.display.as_deref().unwrap_or("—")) }
                @if let Some(d) = &c.definition { dt { "Definition" } dd { (d) } }
                dt { "Status" } dd { (status_text(&c)) }
                @if c.not_selectable { dt { "Abstract" } dd { "yes (a grouping, not for use in records)" } }
                dt { "Valid from" } dd { (c.valid_from.as_deref().unwrap_or("—")) }
                dt { "Valid to" } dd { (c.valid_to.as_deref().unwrap_or("—")) }
                dt { "Register" } dd { a href=(register_href(&id, date)) { (register_title) } " version " (cs.version) }
            }
            @if !c.parents.is_empty() || !children.is_empty() {
                section aria-labelledby="hierarchy" {
                    h2 id="hierarchy" { "Hierarchy" }
                    @if !c.parents.is_empty() {
                        h3 { "Parents" }
                        ul {
                            @for p in &c.parents {
                                li { (coded_link(&cs, &id, p, date)) }
                            }
                        }
                    }
                    @if !children.is_empty() {
                        h3 { "Children (" (thousands(children.len())) ")" }
                        ul class="children" {
                            @for ch in children.iter().take(CHILDREN_SHOWN) {
                                li {
                                    a href=(concept_href(&id, cs.code(*ch), date)) { code { (cs.code(*ch)) } }
                                    " " (cs.display(*ch).unwrap_or(""))
                                }
                            }
                        }
                        @if children.len() > CHILDREN_SHOWN {
                            p class="muted" { "The first " (CHILDREN_SHOWN) " are listed." }
                        }
                    }
                }
            }
            @if !c.properties.is_empty() {
                section aria-labelledby="props" {
                    h2 id="props" { "Properties" }
                    (scroll_table("Properties", html! {
                        table {
                            thead { tr { th scope="col" { "Property" } th scope="col" { "Value" } } }
                            tbody {
                                @for (name, v) in &c.properties {
                                    tr {
                                        td { code { (name) } }
                                        td { (value(&registry, v, date)) }
                                    }
                                }
                            }
                        }
                    }))
                }
            }
            @if !c.designations.is_empty() {
                section aria-labelledby="designations" {
                    h2 id="designations" { "Designations" }
                    (scroll_table("Designations", html! {
                        table {
                            thead { tr { th scope="col" { "Language" } th scope="col" { "Use" } th scope="col" { "Value" } } }
                            tbody {
                                @for d in &c.designations {
                                    tr {
                                        td { (d.language.as_deref().unwrap_or("")) }
                                        td { @if let Some(u) = &d.use_ { (u.display.as_deref().unwrap_or(&u.code)) } }
                                        td { (d.value) }
                                    }
                                }
                            }
                        }
                    }))
                }
            }
            (history_section(&id, &history))
            (layout::fhir_request(&host, &lookup))
        };
        Ok(Page::from(layout::page(
            &base,
            &title,
            &[("Registers", "/".to_string()), (register_title.as_str(), register_href(&id, date))],
            body,
        )))
    })
    .await
}

/// A code not in the version in force: the 404 it is, with the code's history when it was in an
/// earlier version (removed since), so that its last version is a click away.
fn gone(
    base: &str,
    registry: &Registry,
    register: &CodeSystemVersion,
    id: &str,
    code: &str,
    date: Option<&str>,
    unknown: FhirError,
) -> Result<Page, FhirError> {
    let request = HistoryRequest {
        system: register.meta.url.clone(),
        code: code.to_string(),
        properties: Vec::new(),
    };
    let Ok(history) = concept_history_entries(registry, &request) else {
        return Err(unknown);
    };
    let register_title = register
        .meta
        .title
        .clone()
        .unwrap_or_else(|| register.meta.id.clone());
    let body = html! {
        p class="error" role="alert" { (unknown.client_text()) }
        p { "The code was in earlier versions of the register: its history follows. Open a version to see the code as it stood then." }
        (history_section(id, &history))
    };
    Ok(Page(
        axum::http::StatusCode::NOT_FOUND,
        layout::page(
            base,
            "No such code",
            &[
                ("Registers", "/".to_string()),
                (register_title.as_str(), register_href(id, date)),
            ],
            body,
        ),
    ))
}

/// A code of the same register, linked, with its display.
fn coded_link(cs: &CodeSystemVersion, id: &str, code: &str, date: Option<&str>) -> Markup {
    let display = cs.find(code).and_then(|r| cs.display(r));
    html! {
        @if display.is_some() {
            a href=(concept_href(id, code, date)) { code { (code) } }
            " " (display.unwrap_or(""))
        } @else {
            code { (code) } " " span class="muted" { "(not in this register)" }
        }
    }
}

/// A property value; a Coding of a register this server holds links to that concept's page.
fn value(registry: &Registry, v: &Value, date: Option<&str>) -> Markup {
    match v {
        Value::Coding {
            system,
            code,
            display,
        } => {
            let target = registry.code_system(system, None);
            html! {
                @match target {
                    Some(t) => a href=(concept_href(&t.meta.id, code, date)) { code { (code) } },
                    None => code { (code) },
                }
                @if let Some(d) = display { " " (d) }
                " " span class="muted url" { "(" (system) ")" }
            }
        }
        Value::Boolean(b) => html! { (if *b { "yes" } else { "no" }) },
        other => html! { (other.as_text()) },
    }
}

fn values_text(values: &[Value]) -> String {
    if values.is_empty() {
        return "(none)".into();
    }
    values
        .iter()
        .map(|v| v.as_text().into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row per release: added, changed (old → new), unchanged, removed.
fn history_section(id: &str, history: &ConceptHistory) -> Markup {
    html! {
        section aria-labelledby="history" {
            h2 id="history" { "History" }
            (scroll_table("History", html! {
                table class="history" {
                    caption class="muted" { "This code in every release of the register" }
                    thead {
                        tr {
                            th scope="col" { "Version" }
                            th scope="col" { "Change" }
                            th scope="col" { "Display" }
                            th scope="col" { "What changed" }
                        }
                    }
                    tbody {
                        @for e in &history.entries {
                            tr {
                                td {
                                    @match crate::store::version_start(&e.version) {
                                        Some(d) => a href=(concept_href(id, &history.code, Some(&d))) { (e.version) },
                                        None => (e.version),
                                    }
                                }
                                td { span class={ "change-" (e.change) } { (e.change) } }
                                td { (e.concept.as_ref().and_then(|c| c.display.as_deref()).unwrap_or("")) }
                                td {
                                    @if e.change == "changed" {
                                        (changes_list(&e.changes))
                                    }
                                }
                            }
                        }
                    }
                }
            }))
        }
    }
}

/// What changed, one property a line: `name: old → new`.
pub fn changes_list(changes: &[PropertyChange]) -> Markup {
    html! {
        ul class="changes" {
            @for ch in changes {
                li {
                    code { (ch.code) } ": "
                    del { (values_text(&ch.from)) }
                    " → "
                    ins { (values_text(&ch.to)) }
                }
            }
        }
    }
}
