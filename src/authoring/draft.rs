//! `fhir-registers new`: drafts a mapping from a register file. The file is profiled
//! ([`super::profile`]) and each column becomes what it looks like: the code, the display, a
//! date property with its format, an integer, boolean, decimal, code or string property; a
//! status column gets a value table to fill in, open and close dates the concept's validity. The
//! draft is commented where a human must decide, and carries a `[[test]]` case on a fixture slice
//! cut from the file.

use std::fmt::Write as _;
use std::io::{BufRead, Write as _};
use std::path::Path;

use super::profile::{Column, Kind, profile};

/// What to draft from.
#[derive(Debug, Clone)]
pub struct DraftInput<'a> {
    /// The register file.
    pub file: &'a Path,
    /// Column names for a file without a header (then the first line is data).
    pub columns: Option<Vec<String>>,
    /// The register id (`[a-z0-9-]+`).
    pub id: String,
    /// The CodeSystem's canonical URL.
    pub url: Option<String>,
    /// Where the fixture slice goes (relative to the mapping: `tests/{id}_slice.csv`), and how
    /// many data rows it keeps.
    pub fixture_rows: usize,
}

/// A drafted mapping: its text, and the fixture slice to write beside it.
#[derive(Debug)]
pub struct Draft {
    /// The TOML text.
    pub mapping: String,
    /// The fixture's path relative to the mapping's folder.
    pub fixture_path: String,
    /// The fixture's bytes (header line included when the file has one).
    pub fixture: Vec<u8>,
}

fn open(file: &Path) -> Result<Box<dyn std::io::Read>, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let reader = std::io::BufReader::with_capacity(1 << 16, f);
    Ok(if file.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

/// A TOML basic string (JSON escapes are valid TOML escapes).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A property code from a column name: lower camel case of its words (`open_date` → `openDate`);
/// the property codes FHIR defines for every CodeSystem get a suffix.
fn property_code(name: &str) -> String {
    let code = camel(name);
    if matches!(
        code.as_str(),
        "status" | "inactive" | "parent" | "child" | "notSelectable"
    ) {
        code + "Value"
    } else {
        code
    }
}

fn camel(name: &str) -> String {
    let mut out = String::new();
    for (i, word) in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        let w = word.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&w);
        } else {
            let mut cs = w.chars();
            if let Some(f) = cs.next() {
                out.push(f.to_ascii_uppercase());
                out.extend(cs);
            }
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "column");
    }
    out
}

fn name_has(c: &Column, words: &[&str]) -> bool {
    let n = c.name.to_ascii_lowercase();
    words.iter().any(|w| n.contains(w))
}

fn date_format(k: Kind) -> Option<&'static str> {
    match k {
        Kind::DateCompact => Some("YYYYMMDD"),
        Kind::DateIso => Some("YYYY-MM-DD"),
        Kind::Month => Some("YYYYMM"),
        _ => None,
    }
}

/// Drafts a mapping for `input.file`.
pub fn draft(input: &DraftInput) -> Result<Draft, String> {
    let name = input.file.display().to_string();
    let delimiter = if name.contains(".tsv") || name.contains(".tab") {
        b'\t'
    } else {
        b','
    };
    let header = input.columns.is_none();
    let names = input.columns.clone().unwrap_or_default();
    let (rows, columns) = profile(open(input.file)?, delimiter, header, &names, None)?;
    if columns.is_empty() {
        return Err(format!("{name}: no columns"));
    }
    if !header && names.len() != columns.len() {
        return Err(format!(
            "{name}: --columns names {} columns, the file has {}",
            names.len(),
            columns.len()
        ));
    }
    // The code: a column distinct on every row, preferring one named like a code.
    let code = columns
        .iter()
        .filter(|c| {
            c.kind == Kind::Code
                || (c.empty == 0 && !c.distinct_capped && c.distinct as u64 == rows)
        })
        .max_by_key(|c| {
            (
                name_has(c, &["code", "pcd", "id", "key"]),
                std::cmp::Reverse(c.position),
            )
        })
        .ok_or_else(|| {
            format!("{name}: no column has a distinct value on every row, so none can be the code")
        })?;
    // The display: a text column named like one. Guessing from distinctness alone picks area
    // codes in a postcode file, so without a name the author chooses.
    let display = columns
        .iter()
        .filter(|c| {
            c.position != code.position
                && matches!(c.kind, Kind::Text | Kind::Code)
                && name_has(c, &["name", "display", "desc", "title", "label"])
        })
        .max_by_key(|c| c.distinct);
    let validity_from = columns
        .iter()
        .find(|c| date_format(c.kind).is_some() && name_has(c, &["open", "start", "intr", "from"]));
    let validity_to = columns.iter().find(|c| {
        date_format(c.kind).is_some() && name_has(c, &["close", "end", "term", "valid_to"])
    });
    let status = columns
        .iter()
        .find(|c| c.kind == Kind::Enumerated && name_has(c, &["status"]));
    let id = &input.id;
    let url = input
        .url
        .clone()
        .unwrap_or_else(|| format!("https://example.org/fhir/CodeSystem/{id}"));
    let file_name = input
        .file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let version = crate::mapping::version_from_name(&file_name);

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Drafted by `fhir-registers new` from {file_name} ({rows} rows, {} columns).",
        columns.len()
    );
    t.push_str("# Check every guess marked TODO, then: fhir-registers check THIS.toml FILE\n");
    t.push_str("# and fhir-registers test THIS --accept (see mappings/README.md).\n\n");
    let _ = writeln!(
        t,
        "[register]\nid = {}\ntitle = {}",
        q(id),
        q(&format!("TODO: {file_name}"))
    );
    t.push_str("custodian = \"TODO: who publishes the register\"\nlicence = \"TODO: the licence and attribution\"\n\n");
    let _ = writeln!(
        t,
        "[source]\nformat = {}\nheader = {header}",
        q(if delimiter == b'\t' { "tsv" } else { "csv" })
    );
    if !header {
        t.push_str("columns = [\n");
        for n in &names {
            let _ = writeln!(t, "  {},", q(n));
        }
        t.push_str("]\n");
    }
    if let Some(v) = &version {
        let _ = writeln!(t, "default_version = {}", q(v));
    }
    t.push('\n');
    let _ = writeln!(
        t,
        "[code_system]\nurl = {}  # TODO: the canonical URL\nname = {}\ntitle = {}\nstatus = \"active\"\ncontent = \"complete\"  # or \"fragment\" for a slice",
        q(&url),
        q(&camel(id)),
        q(&format!("TODO: {id}"))
    );
    let props: Vec<&Column> = columns
        .iter()
        .filter(|c| {
            c.position != code.position
                && c.kind != Kind::Empty
                && status.is_none_or(|s| s.position != c.position)
        })
        .collect();
    for c in &props {
        let kind = match c.kind {
            Kind::DateCompact | Kind::DateIso | Kind::Month => "dateTime",
            Kind::Integer => "integer",
            Kind::Decimal => "decimal",
            Kind::Boolean => "boolean",
            Kind::Enumerated => "code",
            _ => "string",
        };
        let _ = writeln!(
            t,
            "\n[[code_system.property]]\ncode = {}\ntype = \"{kind}\"\ndescription = {}",
            q(&property_code(&c.name)),
            q(&format!(
                "Column {} {:?} ({}; {} distinct values, {} empty).",
                c.position,
                c.name,
                c.kind.label(),
                c.distinct,
                c.empty
            ))
        );
    }
    let _ = writeln!(
        t,
        "\n[concept]\ncode = {{ column = {}, normalise = [\"trim\"] }}",
        q(&code.name)
    );
    match display {
        Some(d) => {
            let _ = writeln!(
                t,
                "display = {{ column = {}, normalise = [\"trim\"] }}",
                q(&d.name)
            );
        }
        None => t.push_str(
            "# TODO: no text column looks like a display; add `display = { column = \"…\" }`\n",
        ),
    }
    if validity_from.is_some() || validity_to.is_some() {
        let fmt = validity_from
            .or(validity_to)
            .and_then(|c| date_format(c.kind))
            .unwrap_or("YYYYMMDD");
        t.push_str("\n# Business validity: when the thing the code stands for began and ended.\n[concept.validity]\n");
        if let Some(f) = validity_from {
            let _ = writeln!(t, "from = {}", q(&f.name));
        }
        if let Some(e) = validity_to {
            let _ = writeln!(t, "to = {}", q(&e.name));
        }
        let _ = writeln!(t, "date_format = \"{fmt}\"");
    }
    if let Some(s) = status {
        let _ = writeln!(
            t,
            "\n# TODO: map each status value to a FHIR status (and `inactive = true` where it means closed).\n[concept.status]\ncolumn = {}\n\n[concept.status.values]",
            q(&s.name)
        );
        for (v, n) in &s.top {
            let _ = writeln!(
                t,
                "{} = {{ status = {} }}  # {n} rows",
                q(v),
                q(&v.to_ascii_lowercase())
            );
        }
        if s.distinct > s.top.len() {
            let _ = writeln!(
                t,
                "# … {} more values: list them all",
                s.distinct - s.top.len()
            );
        }
    }
    for c in &props {
        let _ = write!(
            t,
            "\n[[concept.property]]\ncode = {}\ncolumn = {}\n",
            q(&property_code(&c.name)),
            q(&c.name)
        );
        match date_format(c.kind) {
            Some(f) => {
                let _ = writeln!(t, "date_format = \"{f}\"");
            }
            None if matches!(c.kind, Kind::Text | Kind::Code | Kind::Enumerated) => {
                t.push_str("normalise = [\"trim\"]\n");
            }
            None => {}
        }
    }
    let _ = writeln!(
        t,
        "\n[[value_set]]\nid = {}\nurl = {}\nname = {}\ntitle = {}\ndescription = \"Every code of the register.\"\n\n[[value_set.include]]",
        q(&format!("{id}-all")),
        q(&format!(
            "{}/ValueSet/{id}-all",
            url.rsplit_once("/CodeSystem")
                .map_or(url.as_str(), |(b, _)| b)
        )),
        q(&format!("{}All", camel(id))),
        q(&format!("All of {id}"))
    );

    // The fixture: the header (if any) and the first rows, byte for byte.
    let mut fixture = Vec::new();
    let mut lines = std::io::BufReader::new(open(input.file)?);
    let mut line = Vec::new();
    let mut kept = 0usize;
    let want = input.fixture_rows + usize::from(header);
    while kept < want {
        line.clear();
        let n = lines
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{name}: {e}"))?;
        if n == 0 {
            break;
        }
        let _ = fixture.write_all(&line);
        kept += 1;
    }
    let data_rows = kept - usize::from(header);
    let fixture_path = format!("tests/{id}_slice.csv");
    let _ = writeln!(
        t,
        "\n# A test case on a slice of the file (the first {data_rows} rows); see \"Testing a mapping\".\n[[test]]\nname = \"first-rows\"\nfile = {}\nrows = {data_rows}",
        q(&fixture_path)
    );
    if let Some(v) = &version {
        let _ = writeln!(t, "version = {}", q(v));
    }
    Ok(Draft {
        mapping: t,
        fixture_path,
        fixture,
    })
}
