//! Search over the canonical resources (CodeSystem, ValueSet, ConceptMap): the controls every
//! search shares (`_count`, `_offset`, `_summary`), matching on a resource's fields, and the
//! `searchset` Bundle with its paging links (`self`, `first`, `previous`, `next`, `last`).
//! What each resource type matches on lives with its handler.

use serde_json::{Value as Json, json};

use super::request::{FhirRequest, RequestAddress};
use crate::error::FhirError;

/// The paging and summary controls of one search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchControls {
    /// `_count`: most resources on one page (`None`: every match on one page).
    pub count: Option<usize>,
    /// `_offset`: how many matches come before this page.
    pub offset: usize,
}

/// Reads a non-negative integer query parameter.
fn non_negative(req: &FhirRequest, name: &str) -> Result<Option<usize>, FhirError> {
    req.query_value(name)
        .map(|v| {
            v.trim().parse::<usize>().map_err(|_| {
                FhirError::Invalid(format!("{name} must be a non-negative integer, not '{v}'"))
            })
        })
        .transpose()
}

/// Validates the common search controls (`_count`, `_offset`, `_summary`).
pub fn search_controls(req: &FhirRequest) -> Result<SearchControls, FhirError> {
    let count = non_negative(req, "_count")?;
    let offset = non_negative(req, "_offset")?.unwrap_or(0);
    if let Some(s) = req.query_value("_summary")
        && !["true", "false", "count", "text", "data"].contains(&&*s)
    {
        return Err(FhirError::Invalid(format!(
            "_summary must be true, false, count, text or data, not '{s}'"
        )));
    }
    Ok(SearchControls { count, offset })
}

/// Text search parameters shared by the canonical resources: exact match on `url`, `version`,
/// `status`, `_id` and `system`, case-insensitive starts-with on `name`, `title` and `publisher`
/// (`:contains` and `:exact` modifiers on `name` and `title`).
pub fn search_matches(req: &FhirRequest, get: &dyn Fn(&str) -> Option<String>) -> bool {
    req.query().all(|(k, v)| {
        let field = get(k.split(':').next().unwrap_or(&k));
        match &*k {
            "url" | "version" | "status" | "_id" | "system" => field.as_deref() == Some(&*v),
            "name" | "title" | "publisher" => {
                field.is_some_and(|f| f.to_lowercase().starts_with(&v.to_lowercase()))
            }
            "name:contains" | "title:contains" => {
                field.is_some_and(|f| f.to_lowercase().contains(&v.to_lowercase()))
            }
            "name:exact" | "title:exact" => field.as_deref() == Some(&*v),
            _ => true,
        }
    })
}

/// The URL of this search with `_offset` set to `offset` (left out when 0); every other
/// parameter is kept in the order sent. Absolute when the request named its host.
fn page_url(req: &FhirRequest, address: &RequestAddress, offset: Option<usize>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in req.query() {
        if offset.is_none() || k != "_offset" {
            query.append_pair(&k, &v);
        }
    }
    if let Some(offset) = offset.filter(|o| *o > 0) {
        query.append_pair("_offset", &offset.to_string());
    }
    let query = query.finish();
    let origin = address.origin.as_deref().unwrap_or("");
    if query.is_empty() {
        format!("{origin}{}", address.path)
    } else {
        format!("{origin}{}?{query}", address.path)
    }
}

/// The paging links of one page: `self` always; `first` and `last` when the matches come in
/// pages; `previous` and `next` when there is such a page. `_count=0` asks for the total only, so
/// it has no pages to link.
fn page_links(
    req: &FhirRequest,
    address: &RequestAddress,
    controls: SearchControls,
    total: usize,
) -> Vec<Json> {
    let link = |relation: &str, url: String| json!({ "relation": relation, "url": url });
    let mut links = vec![link("self", page_url(req, address, None))];
    let size = match controls.count {
        Some(0) => return links,
        Some(n) => n,
        None => total.max(1),
    };
    let last = total.saturating_sub(1) / size * size;
    links.push(link("first", page_url(req, address, Some(0))));
    if controls.offset > 0 {
        let previous = controls.offset.saturating_sub(size).min(last);
        links.push(link("previous", page_url(req, address, Some(previous))));
    }
    if let Some(next) = controls.offset.checked_add(size).filter(|n| *n < total) {
        links.push(link("next", page_url(req, address, Some(next))));
    }
    links.push(link("last", page_url(req, address, Some(last))));
    links
}

/// The `searchset` Bundle of one page of `matches`: `total` counts every match, the entries are
/// the page chosen by `_offset` and `_count`, each rendered by `render`, and the links lead to
/// the other pages. `_summary=count` gives the total alone.
pub fn searchset<T>(
    req: &FhirRequest,
    address: &RequestAddress,
    controls: SearchControls,
    matches: Vec<T>,
    mut render: impl FnMut(T) -> Result<Json, FhirError>,
) -> Result<Json, FhirError> {
    let total = matches.len();
    let counting = req.query_value("_summary").as_deref() == Some("count");
    let controls = if counting {
        SearchControls {
            count: Some(0),
            ..controls
        }
    } else {
        controls
    };
    let link = page_links(req, address, controls, total);
    // `fullUrl` is absolute when the request named its host: the base is the search path
    // without its resource type.
    let base = match (&address.origin, address.path.rsplit_once('/')) {
        (Some(origin), Some((base, _))) => format!("{origin}{base}/"),
        _ => String::new(),
    };
    let entry = matches
        .into_iter()
        .skip(controls.offset)
        .take(controls.count.unwrap_or(usize::MAX))
        .map(|m| {
            let r = render(m)?;
            let full = format!(
                "{base}{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            );
            Ok(json!({ "fullUrl": full, "resource": r, "search": { "mode": "match" } }))
        })
        .collect::<Result<Vec<_>, FhirError>>()?;
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": link,
    });
    if !entry.is_empty() {
        bundle["entry"] = Json::Array(entry);
    }
    Ok(bundle)
}
