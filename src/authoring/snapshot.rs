//! The snapshot of a test case: the CodeSystem (without concepts) and ValueSets a mapping makes,
//! the first concepts in full and a summary of all of them, as stable text (no timestamps, no
//! hashes), so that a change to a mapping shows as a readable diff.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::mapping::{self, Mapping, MappingSet};
use crate::store::{CodeSystemMeta, CodeSystemVersion, Concept, IndexedRelease, Release, Value};
use crate::terminology::resources::code_system_json;

/// How many distinct values of a property the summary lists with their counts.
const VALUES_SHOWN: usize = 8;

/// The snapshot text of a release read through a mapping: `first` concepts in full. `meta` is
/// the CodeSystem as served (merged over the mappings that feed it); without it, the mapping's
/// own view.
pub fn render(
    m: &Mapping,
    meta: Option<&CodeSystemMeta>,
    test_name: &str,
    file: &str,
    release: Release,
    first: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mapping: {}", m.id());
    let _ = writeln!(out, "test: {test_name}");
    let _ = writeln!(out, "file: {file}");
    let _ = writeln!(out, "version: {}", release.info.version);
    let _ = writeln!(
        out,
        "rows read: {}; concepts: {}",
        release.info.rows_read, release.info.concepts
    );
    let concepts: Vec<Concept> = release.concepts.iter().collect();

    out.push_str("\n## CodeSystem (without concepts)\n\n");
    let value_sets = mapping::value_set_resources(m);
    let own = MappingSet::from_mappings(vec![m.clone()]).unwrap_or_default();
    if let Some(meta) = meta.or_else(|| own.code_systems.values().next()) {
        let version = release.info.version.clone();
        let cs = CodeSystemVersion::new(
            Arc::new(meta.clone()),
            version,
            vec![Arc::new(IndexedRelease::new(release))],
        );
        let mut resource = code_system_json(&cs, true, false);
        if let Some(r) = resource.as_object_mut() {
            // Provenance carries import times; the tag says "summary".
            r.shift_remove("extension");
            r.shift_remove("meta");
        }
        out.push_str(&serde_json::to_string_pretty(&resource).unwrap_or_default());
        out.push('\n');
    }
    if !value_sets.is_empty() {
        out.push_str("\n## ValueSets\n\n");
        for vs in &value_sets {
            out.push_str(&serde_json::to_string_pretty(vs).unwrap_or_default());
            out.push('\n');
        }
    }

    let _ = writeln!(
        out,
        "\n## The first {} of {} concepts (in code order)\n",
        first.min(concepts.len()),
        concepts.len()
    );
    for c in concepts.iter().take(first) {
        concept(&mut out, c);
    }
    summary(&mut out, &concepts);
    out
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Code(s) | Value::String(s) | Value::DateTime(s) | Value::Decimal(s) => {
            format!("{s:?}")
        }
        Value::Integer(i) => i.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Coding {
            system,
            code,
            display,
        } => match display {
            Some(d) => format!("{system}|{code} {d:?}"),
            None => format!("{system}|{code}"),
        },
    }
}

fn concept(out: &mut String, c: &Concept) {
    let _ = writeln!(
        out,
        "{} {}",
        c.code,
        c.display
            .as_deref()
            .map(|d| format!("{d:?}"))
            .unwrap_or_default()
    );
    if let Some(d) = &c.definition {
        let _ = writeln!(out, "  definition: {d:?}");
    }
    let mut flags = Vec::new();
    if let Some(s) = &c.status {
        flags.push(format!("status: {s}"));
    }
    if c.inactive {
        flags.push("inactive: true".into());
    }
    if c.not_selectable {
        flags.push("not selectable: true".into());
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "  {}", flags.join(", "));
    }
    if !c.parents.is_empty() {
        let parents: Vec<&str> = c.parents.iter().map(|p| &**p).collect();
        let _ = writeln!(out, "  parents: {}", parents.join(", "));
    }
    if c.valid_from.is_some() || c.valid_to.is_some() {
        let _ = writeln!(
            out,
            "  valid: {} to {}",
            c.valid_from.as_deref().unwrap_or("…"),
            c.valid_to.as_deref().unwrap_or("…")
        );
    }
    for d in &c.designations {
        let _ = writeln!(
            out,
            "  designation{}{}: {:?}",
            d.language
                .as_deref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default(),
            d.use_
                .as_ref()
                .map(|u| format!(" [{}|{}]", u.system, u.code))
                .unwrap_or_default(),
            d.value
        );
    }
    for (k, v) in &c.properties {
        let _ = writeln!(out, "  {k} = {}", value_text(v));
    }
}

/// Counts over every concept: statuses, flags, parents, and per property how many concepts have
/// it and its most common values.
fn summary(out: &mut String, concepts: &[Concept]) {
    let _ = writeln!(out, "\n## Summary of all {} concepts\n", concepts.len());
    if let (Some(first), Some(last)) = (concepts.first(), concepts.last()) {
        let _ = writeln!(out, "codes: {} … {}", first.code, last.code);
    }
    let count = |f: &dyn Fn(&Concept) -> bool| concepts.iter().filter(|c| f(c)).count();
    let _ = writeln!(
        out,
        "with display: {}; with definition: {}; inactive: {}; not selectable: {}; with parents: {}; with validity dates: {}",
        count(&|c| c.display.is_some()),
        count(&|c| c.definition.is_some()),
        count(&|c| c.inactive),
        count(&|c| c.not_selectable),
        count(&|c| !c.parents.is_empty()),
        count(&|c| c.valid_from.is_some() || c.valid_to.is_some()),
    );
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for c in concepts {
        *statuses
            .entry(c.status.as_deref().unwrap_or("(none)"))
            .or_default() += 1;
    }
    let _ = writeln!(out, "status: {}", counts(&statuses, usize::MAX));
    let mut props: BTreeMap<&str, (usize, BTreeMap<String, usize>)> = BTreeMap::new();
    for c in concepts {
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in &c.properties {
            let entry = props.entry(k).or_default();
            if !seen.contains(&&**k) {
                entry.0 += 1;
                seen.push(k);
            }
            // Codings by their code: the system is the same for nearly all of them.
            let shown = match v {
                Value::Coding { code, .. } => code.to_string(),
                other => value_text(other),
            };
            *entry.1.entry(shown).or_default() += 1;
        }
    }
    for (k, (with, values)) in &props {
        let distinct = values.len();
        let mut top: Vec<(&String, &usize)> = values.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let shown: Vec<String> = top
            .iter()
            .take(VALUES_SHOWN)
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "property {k}: on {with} concepts, {distinct} distinct value(s){}{}",
            if shown.is_empty() {
                ""
            } else {
                "; most common: "
            },
            shown.join(", ")
        );
    }
}

fn counts(map: &BTreeMap<&str, usize>, limit: usize) -> String {
    map.iter()
        .take(limit)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
