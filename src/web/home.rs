//! The home page (every register, ValueSet and ConceptMap the server holds) and the search across
//! registers.

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, concept_href, register_href, scroll_table, thousands};
use super::timeline::version_date;
use super::{Browser, render};
use crate::error::FhirError;
use crate::store::Registry;
use crate::terminology::expand::code_system_page;

/// Characters of a licence shown on the home page (the register's page has all of it).
const LICENCE_CHARS: usize = 100;

/// The start of `text`, at most `max` characters, cut at a word with `…` when it is longer.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    let at = cut.rfind(' ').unwrap_or(cut.len());
    format!("{}…", cut[..at].trim_end_matches([',', ';', ':', '.']))
}

/// Codes shown per register in a search across registers.
const HITS_PER_REGISTER: usize = 10;

/// `GET /`: the registers, ValueSets and ConceptMaps, and a search box across registers.
pub async fn home_page(State(browser): State<Browser>) -> Response {
    let base = browser.fhir_base.clone();
    render(&browser, move |registry| Ok(home(&base, registry))).await
}

/// The search box across registers; `live`: the results below it follow the typing.
fn search_form(q: Option<&str>, live: bool) -> Markup {
    html! {
        form class="search" role="search" method="get" action="/search" data-live=[live.then_some("results")] {
            label for="q" { "Search every register" }
            input id="q" type="search" name="q" value=[q] placeholder="code or words, e.g. densham or asthma";
            button type="submit" { "Search" }
        }
    }
}

fn home(fhir_base: &str, registry: &Registry) -> Markup {
    let mut registers: Vec<_> = registry.latest_code_systems().collect();
    registers.sort_by_key(|cs| {
        cs.meta
            .title
            .clone()
            .unwrap_or_else(|| cs.meta.id.clone())
            .to_lowercase()
    });
    let mut value_sets: Vec<_> = registry.all_value_sets().collect();
    value_sets.sort_by(|a, b| a.id.cmp(&b.id));
    let concept_maps: Vec<_> = registry.all_concept_maps().collect();
    let body = html! {
        p { "Every register this server holds, with its releases. Open one to search it, walk its hierarchy, see a concept's history or compare two releases." }
        (search_form(None, false))
        h2 id="registers" { "Registers (" (registers.len()) ")" }
        (scroll_table("Registers", html! {
            table {
                caption class="muted" { "Latest version of each CodeSystem" }
                thead {
                    tr {
                        th scope="col" { "Register" }
                        th scope="col" { "Custodian" }
                        th scope="col" { "Canonical URL" }
                        th scope="col" { "Latest version" }
                        th scope="col" class="num" { "Versions" }
                        th scope="col" class="num" { "Concepts" }
                        th scope="col" { "Licence" }
                    }
                }
                tbody {
                    @for cs in &registers {
                        tr {
                            td { a href=(register_href(&cs.meta.id, None)) { (cs.meta.title.as_deref().unwrap_or(&cs.meta.id)) } }
                            td { (cs.meta.publisher.as_deref().unwrap_or("")) }
                            td class="url" { code { (cs.meta.url) } }
                            td {
                                (cs.version)
                                @if let Some(d) = version_date(cs).filter(|d| *d != cs.version) {
                                    br; span class="muted" { (d) }
                                }
                            }
                            td class="num" { (registry.code_system_versions(&cs.meta.url).len()) }
                            td class="num" { (thousands(cs.len())) }
                            td class="licence" { (short(cs.meta.copyright.as_deref().unwrap_or(""), LICENCE_CHARS)) }
                        }
                    }
                }
            }
        }))
        div class="cols" {
            section aria-labelledby="value-sets" {
                h2 id="value-sets" { "ValueSets (" (value_sets.len()) ")" }
                ul {
                    @for vs in &value_sets {
                        li {
                            a href={ "/valuesets/" (layout::enc(&vs.id)) } {
                                (vs.resource.get("title").and_then(|t| t.as_str()).unwrap_or(&vs.id))
                            }
                        }
                    }
                }
            }
            section aria-labelledby="concept-maps" {
                h2 id="concept-maps" { "ConceptMaps (" (concept_maps.len()) ")" }
                ul {
                    @for cm in &concept_maps {
                        li {
                            a href={ (fhir_base) "/ConceptMap/" (layout::enc(&cm.id)) } { (cm.id) }
                            " "
                            span class="muted" { "(FHIR JSON)" }
                        }
                    }
                }
            }
        }
    };
    layout::page(fhir_base, "Registers", &[], body)
}

/// The query of the search across registers.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// `GET /search?q=`: the first codes of each register whose code or display words start with the
/// words typed (the `$expand` text filter of each register).
pub async fn search_page(
    State(browser): State<Browser>,
    Query(query): Query<SearchQuery>,
) -> Response {
    let base = browser.fhir_base.clone();
    let limits = browser.state.limits;
    render(&browser, move |registry| {
        let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let mut found = Vec::new();
        if let Some(q) = q {
            for cs in registry.latest_code_systems() {
                let (page, total) = code_system_page(registry, cs, Some(q), 0, HITS_PER_REGISTER, limits)?;
                if total > 0 {
                    found.push((cs.clone(), page, total));
                }
            }
        }
        let title = match q {
            Some(q) => format!("Search: {q}"),
            None => "Search".to_string(),
        };
        let body = html! {
            (search_form(q, true))
            div id="results" {
                @if q.is_some() && found.is_empty() {
                    p { "No register has a code or display matching that." }
                }
                @for (cs, page, total) in &found {
                    section {
                        h2 {
                            a href={ (register_href(&cs.meta.id, None)) (layout::query(&[("q", q)])) } {
                                (cs.meta.title.as_deref().unwrap_or(&cs.meta.id))
                            }
                            " "
                            span class="muted" { "(" (thousands(*total)) " found)" }
                        }
                        ul {
                            @for m in &page.members {
                                @let code = page.code(m);
                                li {
                                    a href=(concept_href(&cs.meta.id, code, None)) { code { (code) } }
                                    " "
                                    (page.systems[m.system].display(m.concept).unwrap_or(""))
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, FhirError>(layout::page(&base, &title, &[("Registers", "/".to_string())], body))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn licences_are_cut_at_a_word() {
        assert_eq!(
            short("Open Government Licence", 100),
            "Open Government Licence"
        );
        assert_eq!(
            short("Open Government Licence v3.0", 18),
            "Open Government…"
        );
        assert_eq!(short("Crown copyright, and more", 17), "Crown copyright…");
    }
}
