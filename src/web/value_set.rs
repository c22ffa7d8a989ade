//! A ValueSet's page: its compose rules in words, and its expansion (`$expand`), paged and
//! filterable, as it stood on a chosen date.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, concept_href, register_href, scroll_table};
use super::register::{offset_of, status_text};
use super::{Browser, PAGE_SIZE, host_of, registry_as_of, render};
use crate::error::FhirError;
use crate::store::Registry;
use crate::terminology::compose::{Compose, Expansion, Rule};
use crate::terminology::expand::expansion_page;

/// The query of a ValueSet's page.
#[derive(Debug, Deserialize)]
pub struct ValueSetQuery {
    /// Words or a code prefix to filter on.
    q: Option<String>,
    /// First code shown.
    offset: Option<String>,
    /// As of this date.
    date: Option<String>,
}

/// `GET /valuesets/{id}?q=&offset=&date=`.
pub async fn value_set_page(
    State(browser): State<Browser>,
    Path(id): Path<String>,
    Query(query): Query<ValueSetQuery>,
    headers: HeaderMap,
) -> Response {
    let base = browser.fhir_base.clone();
    let limits = browser.state.limits;
    let host = host_of(&headers);
    render(&browser, move |live| {
        let date = query.date.as_deref().map(str::trim).filter(|d| !d.is_empty());
        let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let offset = offset_of(query.offset.as_deref())?;
        let registry = registry_as_of(live, date)?;
        let vs = registry
            .value_set_by_id(&id)
            .ok_or_else(|| FhirError::NotFound(format!("There is no ValueSet '{id}' on this server")))?;
        let compose = Compose::from_value_set(&vs.resource)?;
        let (page, total) = expansion_page(&registry, &vs.resource, q, offset, PAGE_SIZE, limits)?;
        let title = vs
            .resource
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or(&vs.id)
            .to_string();
        let here = format!("/valuesets/{}", layout::enc(&id));
        let expand = format!(
            "{base}/ValueSet/$expand{}",
            layout::query(&[("url", Some(&vs.url)), ("filter", q), ("date", date), ("count", Some("50"))])
        );
        let body = html! {
            @if let Some(d) = date {
                p class="as-of-note" { "As it stood on " strong { (d) } "." }
            }
            (layout::as_of_form(&here, date, &[("q", q)]))
            dl class="meta" {
                dt { "Canonical URL" } dd { code { (vs.url) } }
                @if let Some(v) = &vs.version { dt { "Version" } dd { (v) } }
                @if let Some(d) = vs.resource.get("description").and_then(|d| d.as_str()) { dt { "Description" } dd { (d) } }
            }
            section aria-labelledby="rules" {
                h2 id="rules" { "Rules" }
                (rules(&registry, &compose, date))
            }
            section aria-labelledby="expansion" {
                h2 id="expansion" { "Codes" }
                form class="search" role="search" method="get" action=(here) data-live="results" {
                    label for="q" { "Filter codes and displays" }
                    input id="q" type="search" name="q" value=[q] autocomplete="off" placeholder="code or words";
                    @if let Some(d) = date {
                        input type="hidden" name="date" value=(d);
                    }
                    button type="submit" { "Filter" }
                }
                (results(&registry, &here, date, q, offset, &page, total))
            }
            (layout::fhir_request(&host, &expand))
        };
        Ok(layout::page(&base, &title, &[("Registers", "/".to_string())], body))
    })
    .await
}

/// The compose rules, one sentence each.
fn rules(registry: &Registry, compose: &Compose, date: Option<&str>) -> Markup {
    html! {
        ul class="rules" {
            @for rule in &compose.include {
                li { "Include " (rule_words(registry, rule, date)) }
            }
            @for rule in &compose.exclude {
                li { "Exclude " (rule_words(registry, rule, date)) }
            }
            @if compose.inactive == Some(false) {
                li { "Inactive codes are left out." }
            }
        }
    }
}

fn rule_words(registry: &Registry, rule: &Rule, date: Option<&str>) -> Markup {
    let system = rule.system.as_deref().map(|url| {
        let cs = registry.code_system(url, None);
        html! {
            @match &cs {
                Some(cs) => a href=(register_href(&cs.meta.id, date)) { (cs.meta.title.as_deref().unwrap_or(&cs.meta.id)) },
                None => code { (url) },
            }
            @if let Some(v) = &rule.version { " version " (v) }
        }
    });
    let id = rule
        .system
        .as_deref()
        .and_then(|url| registry.code_system(url, None))
        .map(|cs| cs.meta.id.clone());
    html! {
        @if !rule.concepts.is_empty() {
            "these " (rule.concepts.len()) " codes"
            @if let Some(s) = &system { " of " (s) }
            ": "
            @for (i, (code, _)) in rule.concepts.iter().enumerate() {
                @if i > 0 { ", " }
                @match &id {
                    Some(id) => a href=(concept_href(id, code, date)) { code { (code) } },
                    None => code { (code) },
                }
            }
        } @else if rule.filters.is_empty() {
            @match &system {
                Some(s) => { "every code of " (s) }
                None => "every code",
            }
        } @else {
            "the codes of "
            @if let Some(s) = &system { (s) }
            " where "
            @for (i, f) in rule.filters.iter().enumerate() {
                @if i > 0 { " and " }
                code { (f.property) } " " (op_words(&f.op)) " " code { (f.value) }
            }
        }
        @if !rule.value_sets.is_empty() {
            @if rule.system.is_some() { ", and " } @else { "the codes " }
            "in "
            @for (i, v) in rule.value_sets.iter().enumerate() {
                @if i > 0 { " and " }
                code { (v) }
            }
        }
    }
}

/// A filter operator in words.
fn op_words(op: &str) -> &str {
    match op {
        "=" => "is",
        "is-a" => "is, or is under,",
        "descendent-of" => "is under",
        "is-not-a" => "is not, and is not under,",
        "regex" => "matches the pattern",
        "in" => "is one of",
        "not-in" => "is none of",
        "exists" => "exists:",
        "generalizes" => "is above, or is,",
        "child-of" => "is a direct child of",
        "descendent-leaf" => "is a leaf under",
        other => other,
    }
}

/// The codes of the page, with a pager: the section search-as-you-type replaces.
fn results(
    registry: &Registry,
    here: &str,
    date: Option<&str>,
    q: Option<&str>,
    offset: usize,
    page: &Expansion,
    total: usize,
) -> Markup {
    let href = |o: usize| layout::page_href(here, q, date, o);
    html! {
        div id="results" {
            (layout::pager(offset, page.members.len(), total, &href))
            @if !page.members.is_empty() {
                (scroll_table("Codes", html! {
                    table {
                        thead {
                            tr {
                                th scope="col" { "Code" }
                                th scope="col" { "Display" }
                                th scope="col" { "Status" }
                                th scope="col" { "Register" }
                            }
                        }
                        tbody {
                            @for m in &page.members {
                                @let cs = &page.systems[m.system];
                                @let c = page.concept(m);
                                @let id = registry.code_system(&cs.meta.url, None).map(|l| l.meta.id.clone()).unwrap_or_else(|| cs.meta.id.clone());
                                tr {
                                    td { a href=(concept_href(&id, &c.code, date)) { code { (c.code) } } }
                                    td { (m.display.as_deref().or(c.display.as_deref()).unwrap_or("")) }
                                    td { (status_text(&c)) }
                                    td { (cs.meta.title.as_deref().unwrap_or(&cs.meta.id)) }
                                }
                            }
                        }
                    }
                }))
            }
        }
    }
}
