//! Value shaping used by mappings: normalisers, templates and date parsing. Pure functions over
//! strings, no I/O.

use std::fmt;

/// A normaliser applied to a value (in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normaliser {
    /// Strip leading/trailing white space.
    Trim,
    /// Upper-case.
    Upper,
    /// Lower-case.
    Lower,
    /// Remove every white space character.
    RemoveSpaces,
    /// Collapse runs of white space into one space (and trim).
    CollapseSpaces,
    /// UK postcode in the conventional spaced form (`TS181HU` → `TS18 1HU`).
    Postcode,
    /// Title Case each word.
    Title,
}

impl Normaliser {
    /// Parses a normaliser name as written in mapping files.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "trim" => Self::Trim,
            "upper" => Self::Upper,
            "lower" => Self::Lower,
            "remove-spaces" | "nospace" => Self::RemoveSpaces,
            "collapse-spaces" => Self::CollapseSpaces,
            "postcode" => Self::Postcode,
            "title" => Self::Title,
            _ => return None,
        })
    }

    /// The names accepted by [`Normaliser::parse`], for error messages.
    pub const NAMES: &'static str =
        "trim, upper, lower, remove-spaces (nospace), collapse-spaces, postcode, title";

    /// Applies the normaliser.
    pub fn apply(self, value: &str) -> String {
        match self {
            Self::Trim => value.trim().to_string(),
            Self::Upper => value.to_uppercase(),
            Self::Lower => value.to_lowercase(),
            Self::RemoveSpaces => value.chars().filter(|c| !c.is_whitespace()).collect(),
            Self::CollapseSpaces => value.split_whitespace().collect::<Vec<_>>().join(" "),
            Self::Postcode => spaced_postcode(value),
            Self::Title => title_case(value),
        }
    }
}

/// UK postcode in the conventional form: outward code, one space, 3-character inward code.
/// Values that are too short to be a postcode are returned upper-cased and trimmed.
pub fn spaced_postcode(value: &str) -> String {
    let compact: String = value
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect();
    if compact.len() < 5 || !compact.is_ascii() {
        return compact;
    }
    let (outward, inward) = compact.split_at(compact.len() - 3);
    format!("{outward} {inward}")
}

fn title_case(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut start = true;
    for c in value.chars() {
        if c.is_alphanumeric() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = !(c == '\'' || c == '’');
        }
    }
    out
}

/// A parsed template: literal text and `{column|fn|fn}` slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The pieces in order.
    pub pieces: Vec<TemplatePiece>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePiece {
    /// Literal text.
    Literal(String),
    /// A column reference with normalisers.
    Slot {
        /// Column name.
        column: String,
        /// Normalisers applied to the column value.
        normalisers: Vec<Normaliser>,
    },
}

/// Why a template could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Template {
    /// Parses `"{name} ({postcode|postcode})"`. `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest.find('}').ok_or_else(|| {
                        TemplateError(format!("unclosed `{{` at character {} of {text:?}", i + 1))
                    })?;
                    let inner = &rest[..end];
                    if inner.contains('{') {
                        return Err(TemplateError(format!(
                            "unclosed `{{` at character {} of {text:?}",
                            i + 1
                        )));
                    }
                    let mut parts = inner.split('|').map(str::trim);
                    let column = parts.next().unwrap_or_default().to_string();
                    if column.is_empty() {
                        return Err(TemplateError(format!("empty `{{}}` in template {text:?}")));
                    }
                    let normalisers = parts
                        .map(|name| {
                            Normaliser::parse(name).ok_or_else(|| {
                                TemplateError(format!(
                                    "unknown function `{name}` in template {text:?} (expected one of {})",
                                    Normaliser::NAMES
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if !literal.is_empty() {
                        pieces.push(TemplatePiece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(TemplatePiece::Slot {
                        column,
                        normalisers,
                    });
                    for _ in 0..=inner.chars().count() {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(TemplateError(format!(
                        "unmatched `}}` at character {} of {text:?} (write `}}}}` for a literal brace)",
                        i + 1
                    )));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(TemplatePiece::Literal(literal));
        }
        Ok(Self { pieces })
    }

    /// Column names the template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            TemplatePiece::Slot { column, .. } => Some(column.as_str()),
            TemplatePiece::Literal(_) => None,
        })
    }
}

/// How a date column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFormat {
    /// `20171031`.
    Yyyymmdd,
    /// `201710`.
    Yyyymm,
    /// `2017-10-31`.
    IsoDate,
    /// `31/10/2017`.
    DdMmYyyy,
}

impl DateFormat {
    /// Parses a format name as written in mapping files.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "YYYYMMDD" => Self::Yyyymmdd,
            "YYYYMM" => Self::Yyyymm,
            "YYYY-MM-DD" => Self::IsoDate,
            "DD/MM/YYYY" => Self::DdMmYyyy,
            _ => return None,
        })
    }

    /// The format as written in mapping files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Yyyymmdd => "YYYYMMDD",
            Self::Yyyymm => "YYYYMM",
            Self::IsoDate => "YYYY-MM-DD",
            Self::DdMmYyyy => "DD/MM/YYYY",
        }
    }

    /// Parses a value into a FHIR date (`YYYY-MM-DD` or `YYYY-MM`), or `None` when it is not a
    /// real date in this format.
    pub fn to_fhir(self, value: &str) -> Option<String> {
        let v = value.trim();
        if !v.is_ascii() {
            return None;
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (y, m, d) = match self {
            Self::Yyyymmdd if v.len() == 8 && digits(v) => (&v[0..4], &v[4..6], Some(&v[6..8])),
            Self::Yyyymm if v.len() == 6 && digits(v) => (&v[0..4], &v[4..6], None),
            Self::IsoDate
                if v.len() == 10 && &v[4..5] == "-" && &v[7..8] == "-" && digits(&v[0..4]) =>
            {
                (&v[0..4], &v[5..7], Some(&v[8..10]))
            }
            Self::DdMmYyyy if v.len() == 10 && &v[2..3] == "/" && &v[5..6] == "/" => {
                (&v[6..10], &v[3..5], Some(&v[0..2]))
            }
            _ => return None,
        };
        if !digits(y) || !digits(m) || d.is_some_and(|d| !digits(d)) {
            return None;
        }
        let year: u32 = y.parse().ok()?;
        let month: u32 = m.parse().ok()?;
        if !(1..=12).contains(&month) || year == 0 {
            return None;
        }
        match d {
            None => Some(format!("{y}-{m}")),
            Some(d) => {
                let day: u32 = d.parse().ok()?;
                if day == 0 || day > days_in_month(year, month) {
                    return None;
                }
                Some(format!("{y}-{m}-{d}"))
            }
        }
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// Whether `value` is a FHIR date (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`) that really exists.
pub fn is_fhir_date(value: &str) -> bool {
    if !value.is_ascii() {
        return false;
    }
    match value.len() {
        4 => value.bytes().all(|b| b.is_ascii_digit()),
        7 => {
            DateFormat::Yyyymm
                .to_fhir(&value.replace('-', ""))
                .is_some()
                && &value[4..5] == "-"
        }
        10 => DateFormat::IsoDate.to_fhir(value).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisers_shape_codes() {
        assert_eq!(Normaliser::Trim.apply("  A81001 "), "A81001");
        assert_eq!(Normaliser::Upper.apply("a81001"), "A81001");
        assert_eq!(Normaliser::RemoveSpaces.apply("TS18 1HU"), "TS181HU");
        assert_eq!(
            Normaliser::CollapseSpaces.apply(" THE  HEALTH   CENTRE "),
            "THE HEALTH CENTRE"
        );
        assert_eq!(
            Normaliser::Title.apply("THE DENSHAM SURGERY"),
            "The Densham Surgery"
        );
        assert_eq!(Normaliser::Title.apply("ST JOHN'S"), "St John's");
        assert_eq!(Normaliser::parse("nospace"), Some(Normaliser::RemoveSpaces));
        assert_eq!(Normaliser::parse("shout"), None);
    }

    #[test]
    fn postcodes_get_their_conventional_space() {
        assert_eq!(spaced_postcode("TS181HU"), "TS18 1HU");
        assert_eq!(spaced_postcode("B1  1AY"), "B1 1AY");
        assert_eq!(spaced_postcode("ec1a1bb"), "EC1A 1BB");
        assert_eq!(spaced_postcode("TS18 1HU"), "TS18 1HU");
        assert_eq!(spaced_postcode("AB1"), "AB1");
    }

    #[test]
    fn templates_parse_slots_functions_and_braces() {
        let t = Template::parse("{name} ({postcode|postcode}) {{x}}").expect("parses");
        assert_eq!(
            t.pieces,
            vec![
                TemplatePiece::Slot {
                    column: "name".into(),
                    normalisers: vec![]
                },
                TemplatePiece::Literal(" (".into()),
                TemplatePiece::Slot {
                    column: "postcode".into(),
                    normalisers: vec![Normaliser::Postcode]
                },
                TemplatePiece::Literal(") {x}".into()),
            ]
        );
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["name", "postcode"]);
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert!(
            Template::parse("{name")
                .expect_err("invalid")
                .0
                .contains("unclosed")
        );
        assert!(
            Template::parse("{}")
                .expect_err("invalid")
                .0
                .contains("empty")
        );
        assert!(
            Template::parse("{name|shout}")
                .expect_err("invalid")
                .0
                .contains("unknown function `shout`")
        );
        assert!(
            Template::parse("a}b")
                .expect_err("invalid")
                .0
                .contains("unmatched")
        );
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(
            DateFormat::Yyyymmdd.to_fhir("20171031").as_deref(),
            Some("2017-10-31")
        );
        assert_eq!(DateFormat::Yyyymmdd.to_fhir("2019131"), None);
        assert_eq!(DateFormat::Yyyymmdd.to_fhir("20190231"), None);
        assert_eq!(
            DateFormat::Yyyymmdd.to_fhir("20200229").as_deref(),
            Some("2020-02-29")
        );
        assert_eq!(DateFormat::Yyyymmdd.to_fhir("19000229"), None);
        assert_eq!(
            DateFormat::Yyyymm.to_fhir("202111").as_deref(),
            Some("2021-11")
        );
        assert_eq!(DateFormat::Yyyymm.to_fhir("202113"), None);
        assert_eq!(
            DateFormat::IsoDate.to_fhir("2024-07-24").as_deref(),
            Some("2024-07-24")
        );
        assert_eq!(
            DateFormat::DdMmYyyy.to_fhir("31/10/2017").as_deref(),
            Some("2017-10-31")
        );
        assert!(is_fhir_date("2020-01-01"));
        assert!(is_fhir_date("2019"));
        assert!(is_fhir_date("2019-10"));
        assert!(!is_fhir_date("2019-13-01"));
        assert!(!is_fhir_date("yesterday"));
        assert!(
            !is_fhir_date("202é-01-1"),
            "multi-byte text is rejected, not sliced"
        );
        assert_eq!(DateFormat::IsoDate.to_fhir("2020é1-01"), None);
    }
}
