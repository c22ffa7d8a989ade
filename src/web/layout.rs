//! The page frame every browser page shares (head, skip link, header, footer) and the small
//! pieces several pages use: links to registers and concepts, the "as of date" control, pagers
//! and the equivalent FHIR request.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left as they are in a path segment or query value.
const KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment or query value, percent-encoded.
pub fn enc(text: &str) -> String {
    utf8_percent_encode(text, KEPT).to_string()
}

/// A query string (`?a=1&b=2`) of the pairs whose value is given and not empty (`""` when none
/// is).
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", enc(v)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The link to one page of a searched, dated list at `base`: `q`, `date` and `offset` (left out
/// when 0) as its query.
pub fn page_href(base: &str, q: Option<&str>, date: Option<&str>, offset: usize) -> String {
    let offset = offset.to_string();
    format!(
        "{base}{}",
        query(&[
            ("q", q),
            ("date", date),
            ("offset", Some(offset.as_str()).filter(|o| *o != "0"))
        ])
    )
}

/// The link to a register's page.
pub fn register_href(id: &str, date: Option<&str>) -> String {
    format!("/registers/{}{}", enc(id), query(&[("date", date)]))
}

/// The link to a concept's page.
pub fn concept_href(register_id: &str, code: &str, date: Option<&str>) -> String {
    format!(
        "/registers/{}/concepts/{}{}",
        enc(register_id),
        enc(code),
        query(&[("date", date)])
    )
}

/// The whole page: `title` in the head and as the `h1`, `crumbs` (text, link) above it;
/// `fhir_base` is where the FHIR API is (`/fhir`).
pub fn page(fhir_base: &str, title: &str, crumbs: &[(&str, String)], body: Markup) -> Markup {
    let metadata = format!("{fhir_base}/metadata");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fhir-registers" }
                link rel="stylesheet" href=(super::assets::STYLE_PATH);
                link rel="icon" type="image/svg+xml" href=(super::assets::ICON_PATH);
                script src=(super::assets::SCRIPT_PATH) defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="site" {
                    a class="brand" href="/" { "fhir-registers" }
                    nav aria-label="Site" {
                        ul {
                            li { a href="/" { "Registers" } }
                            li { a href=(metadata) { "FHIR API" } }
                        }
                    }
                }
                @if !crumbs.is_empty() {
                    nav class="crumbs" aria-label="Breadcrumb" {
                        ol {
                            @for (text, href) in crumbs {
                                li { a href=(href) { (text) } }
                            }
                            li aria-current="page" { (title) }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                    // Where the script announces how many results a search found.
                    div id="announce" class="sr-only" aria-live="polite" {}
                }
                footer class="site" {
                    p {
                        "Served by fhir-registers from the registers it holds. Every page has a FHIR equivalent under "
                        a href=(metadata) { (fhir_base) } "."
                    }
                }
            }
        }
    }
}

/// An error page: what went wrong, in the words the FHIR API would use.
pub fn error(fhir_base: &str, status: StatusCode, title: &str, text: &str) -> Markup {
    page(
        fhir_base,
        title,
        &[],
        html! {
            p class="error" role="alert" { (text) }
            p class="muted" { "HTTP " (status.as_u16()) }
            p { a href="/" { "Back to the list of registers" } }
        },
    )
}

/// The "as of date" control: a GET form that reloads `action` as it stood on the chosen date,
/// keeping the other `kept` parameters.
pub fn as_of_form(action: &str, date: Option<&str>, kept: &[(&str, Option<&str>)]) -> Markup {
    html! {
        form class="as-of" method="get" action=(action) {
            @for (name, value) in kept {
                @if let Some(v) = value.filter(|v| !v.is_empty()) {
                    input type="hidden" name=(name) value=(v);
                }
            }
            label for="as-of-date" { "As of date" }
            input id="as-of-date" type="date" name="date" value=[date];
            button type="submit" { "Show" }
            @if date.is_some() {
                " "
                a href=(action) { "Latest" }
            }
        }
    }
}

/// "Showing 51–100 of 1,234" with previous and next links; `href(offset)` makes the links.
pub fn pager(offset: usize, shown: usize, total: usize, href: &dyn Fn(usize) -> String) -> Markup {
    let first = if shown == 0 { 0 } else { offset + 1 };
    html! {
        nav class="pager" aria-label="Pages" {
            p class="count" {
                @if total == 0 {
                    "No results"
                } @else {
                    "Showing " (thousands(first)) "–" (thousands(offset + shown)) " of " (thousands(total))
                }
            }
            @if offset > 0 {
                a rel="prev" href=(href(offset.saturating_sub(super::PAGE_SIZE))) { "← Previous" }
            }
            @if offset + shown < total {
                " "
                a rel="next" href=(href(offset + super::PAGE_SIZE)) { "Next →" }
            }
        }
    }
}

/// A count with thousands separators (`2,712,345`).
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The equivalent FHIR request: its URL (relative to this server) and a `curl` command, in
/// `pre` blocks the script gives a copy button.
pub fn fhir_request(host: &str, path_and_query: &str) -> Markup {
    let curl = format!("curl -H 'Accept: application/fhir+json' 'http://{host}{path_and_query}'");
    html! {
        section aria-labelledby="fhir-request" {
            h2 id="fhir-request" { "The same in FHIR" }
            p { a href=(path_and_query) { code { (path_and_query) } } }
            pre class="copy" { code { (curl) } }
        }
    }
}

/// A table wrapped so that it scrolls sideways on a narrow screen (and can be scrolled with the
/// keyboard).
pub fn scroll_table(label: &str, table: Markup) -> Markup {
    html! {
        div class="table-wrap" role="region" aria-label={ "Table: " (label) } tabindex="0" { (table) }
    }
}
