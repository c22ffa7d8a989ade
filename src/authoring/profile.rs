//! A column profile of a register file: per column, empty cells, distinct values, the most common
//! values, min/max of dates and numbers, and a guess of what the column is (a code, a display, a
//! date in some format, an integer, a boolean, an enumeration). `check` prints it; `new` drafts a
//! mapping from it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;

/// Distinct values counted per column; past it the count is "more than".
const DISTINCT_LIMIT: usize = 50_000;

/// What a column looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every cell empty.
    Empty,
    /// Dates `YYYYMMDD`.
    DateCompact,
    /// Dates `YYYY-MM-DD`.
    DateIso,
    /// Months `YYYYMM`.
    Month,
    /// Whole numbers.
    Integer,
    /// Decimal numbers.
    Decimal,
    /// `true`/`false`, `Y`/`N`, `1`/`0`.
    Boolean,
    /// A few distinct values (a status, a type).
    Enumerated,
    /// Short values, distinct on (nearly) every row: an identifier.
    Code,
    /// Longer text.
    Text,
}

impl Kind {
    /// How the profile names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::DateCompact => "date YYYYMMDD",
            Self::DateIso => "date YYYY-MM-DD",
            Self::Month => "month YYYYMM",
            Self::Integer => "integer",
            Self::Decimal => "decimal",
            Self::Boolean => "boolean",
            Self::Enumerated => "enumerated",
            Self::Code => "code",
            Self::Text => "text",
        }
    }
}

/// One column's profile.
#[derive(Debug, Clone)]
pub struct Column {
    /// 1-based position.
    pub position: usize,
    /// Its name (the header's, or the mapping's `columns`, or `column_N`).
    pub name: String,
    /// Non-empty cells.
    pub filled: u64,
    /// Empty cells.
    pub empty: u64,
    /// Distinct non-empty values (at most [`DISTINCT_LIMIT`] counted).
    pub distinct: usize,
    /// Whether there were more distinct values than counted.
    pub distinct_capped: bool,
    /// The most common values with their counts.
    pub top: Vec<(String, u64)>,
    /// Smallest and largest value, for dates and numbers.
    pub range: Option<(String, String)>,
    /// Longest value, in characters.
    pub longest: usize,
    /// What the column looks like.
    pub kind: Kind,
}

#[derive(Default)]
struct Acc {
    /// Hashes of every value while no value has repeated (`None` once one has): whether the
    /// column can be the code, however many rows the file has.
    unique: Option<std::collections::HashSet<u64>>,
    filled: u64,
    empty: u64,
    counts: HashMap<String, u64>,
    capped: bool,
    longest: usize,
    all_compact_date: bool,
    all_iso_date: bool,
    all_month: bool,
    all_integer: bool,
    all_decimal: bool,
    min: Option<String>,
    max: Option<String>,
    min_num: Option<f64>,
    max_num: Option<f64>,
}

fn is_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn compact_date(s: &str) -> bool {
    is_digits(s, 8)
        && (s[..2] == *"19" || s[..2] == *"20")
        && matches!(s[4..6].parse::<u32>(), Ok(1..=12))
        && matches!(s[6..8].parse::<u32>(), Ok(1..=31))
}

fn iso_date(s: &str) -> bool {
    s.len() == 10
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[7] == b'-'
        && compact_date(&format!("{}{}{}", &s[..4], &s[5..7], &s[8..]))
}

fn month(s: &str) -> bool {
    is_digits(s, 6)
        && (s[..2] == *"19" || s[..2] == *"20")
        && matches!(s[4..].parse::<u32>(), Ok(1..=12))
}

/// Profiles a CSV/TSV file: `names` name the columns when it has no header.
pub fn profile(
    reader: impl Read,
    delimiter: u8,
    header: bool,
    names: &[String],
    max_rows: Option<u64>,
) -> Result<(u64, Vec<Column>), String> {
    let mut csv = crate::source::csv_reader(reader, delimiter, header);
    let mut headers: Vec<String> = if header {
        csv.headers()
            .map_err(|e| e.to_string())?
            .iter()
            .map(crate::source::clean_header)
            .collect()
    } else {
        names.to_vec()
    };
    let mut accs: Vec<Acc> = Vec::new();
    let mut rows = 0u64;
    let mut record = csv::StringRecord::new();
    while csv.read_record(&mut record).map_err(|e| e.to_string())? {
        rows += 1;
        for (i, cell) in record.iter().enumerate() {
            if accs.len() <= i {
                accs.resize_with(i + 1, || Acc {
                    unique: Some(std::collections::HashSet::new()),
                    all_compact_date: true,
                    all_iso_date: true,
                    all_month: true,
                    all_integer: true,
                    all_decimal: true,
                    ..Acc::default()
                });
            }
            let a = &mut accs[i];
            let v = cell.trim();
            if v.is_empty() {
                a.empty += 1;
                continue;
            }
            a.filled += 1;
            a.longest = a.longest.max(v.chars().count());
            a.all_compact_date &= compact_date(v);
            a.all_iso_date &= iso_date(v);
            a.all_month &= month(v);
            let int = v.parse::<i64>().is_ok();
            a.all_integer &= int;
            let num = v.parse::<f64>().ok().filter(|n| n.is_finite());
            a.all_decimal &= num.is_some();
            if let Some(n) = num {
                a.min_num = Some(a.min_num.map_or(n, |m| m.min(n)));
                a.max_num = Some(a.max_num.map_or(n, |m| m.max(n)));
            }
            if a.min.as_deref().is_none_or(|m| v < m) {
                a.min = Some(v.to_string());
            }
            if a.max.as_deref().is_none_or(|m| v > m) {
                a.max = Some(v.to_string());
            }
            if let Some(seen) = &mut a.unique {
                use std::hash::{BuildHasher, BuildHasherDefault};
                let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                    .hash_one(v);
                if !seen.insert(h) {
                    a.unique = None;
                }
            }
            let room = a.counts.len() < DISTINCT_LIMIT;
            match a.counts.get_mut(v) {
                Some(n) => *n += 1,
                None if room => {
                    a.counts.insert(v.to_string(), 1);
                }
                None => a.capped = true,
            }
        }
        if max_rows.is_some_and(|m| rows >= m) {
            break;
        }
    }
    // Rows shorter than others: their missing cells are empty.
    for a in &mut accs {
        a.empty = rows - a.filled;
    }
    while headers.len() < accs.len() {
        headers.push(format!("column_{}", headers.len() + 1));
    }
    let columns = accs
        .into_iter()
        .enumerate()
        .map(|(i, a)| column(i + 1, headers[i].clone(), a, rows))
        .collect();
    Ok((rows, columns))
}

fn column(position: usize, name: String, a: Acc, rows: u64) -> Column {
    // A column whose values never repeated has as many distinct values as filled cells.
    let unique = a.unique.is_some() && a.filled > 0;
    let distinct = if unique {
        a.filled as usize
    } else {
        a.counts.len()
    };
    let mut top: Vec<(String, u64)> = a.counts.into_iter().collect();
    top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    top.truncate(5);
    let lower: Vec<String> = top.iter().map(|(v, _)| v.to_ascii_lowercase()).collect();
    let boolean = distinct > 0
        && distinct <= 2
        && lower
            .iter()
            .all(|v| matches!(v.as_str(), "true" | "false" | "y" | "n" | "yes" | "no"));
    let kind = if a.filled == 0 {
        Kind::Empty
    } else if a.all_compact_date {
        Kind::DateCompact
    } else if a.all_iso_date {
        Kind::DateIso
    } else if a.all_month {
        Kind::Month
    } else if boolean {
        Kind::Boolean
    } else if a.all_integer && distinct > 20 {
        Kind::Integer
    } else if a.all_decimal && distinct > 20 {
        Kind::Decimal
    } else if unique && a.longest <= 16 && a.filled * 10 >= rows * 9 {
        Kind::Code
    } else if !a.capped && distinct <= 30 && (distinct as u64) * 5 <= a.filled {
        Kind::Enumerated
    } else if a.all_integer {
        Kind::Integer
    } else {
        Kind::Text
    };
    let range = match kind {
        Kind::DateCompact | Kind::DateIso | Kind::Month => a.min.zip(a.max),
        Kind::Integer | Kind::Decimal => a
            .min_num
            .zip(a.max_num)
            .map(|(x, y)| (x.to_string(), y.to_string())),
        _ => None,
    };
    Column {
        position,
        name,
        filled: a.filled,
        empty: a.empty,
        distinct,
        distinct_capped: a.capped && !unique,
        top,
        range,
        longest: a.longest,
        kind,
    }
}

/// The profile as text, one block per column.
pub fn render(rows: u64, columns: &[Column]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "column profile ({rows} rows):");
    for c in columns {
        let _ = write!(
            out,
            "  {:>2} {:<32} {:<16} empty {:>6}, distinct {}{}",
            c.position,
            format!("{:?}", c.name),
            c.kind.label(),
            c.empty,
            if c.distinct_capped { "> " } else { "" },
            c.distinct
        );
        if let Some((lo, hi)) = &c.range {
            let _ = write!(out, ", min {lo}, max {hi}");
        }
        if !c.top.is_empty() && !matches!(c.kind, Kind::Code) {
            let shown: Vec<String> = c
                .top
                .iter()
                .map(|(v, n)| format!("{:?} {n}", truncate(v, 30)))
                .collect();
            let _ = write!(out, "; most common: {}", shown.join(", "));
        }
        out.push('\n');
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_profiled_and_guessed() {
        let mut text = String::from("code,name,opened,status,flag,count\n");
        for i in 0..50 {
            text.push_str(&format!(
                "A{i:04},PRACTICE NUMBER {i},2019{:02}{:02},{},{},{}\n",
                i % 12 + 1,
                i % 28 + 1,
                ["A", "C", "D"][i % 3],
                if i % 2 == 0 { "Y" } else { "N" },
                i * 7
            ));
        }
        text.push_str("A9999,,20200101,A,Y,1\n");
        let (rows, cols) = profile(text.as_bytes(), b',', true, &[], None).expect("profiles");
        assert_eq!(rows, 51);
        let kinds: Vec<Kind> = cols.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Code,
                Kind::Text,
                Kind::DateCompact,
                Kind::Enumerated,
                Kind::Boolean,
                Kind::Integer
            ]
        );
        assert_eq!(cols[1].empty, 1);
        assert_eq!(cols[3].distinct, 3);
        assert_eq!(cols[3].top[0], ("A".to_string(), 18));
        assert_eq!(
            cols[2].range,
            Some(("20190101".to_string(), "20200101".to_string()))
        );
        let text = render(rows, &cols);
        assert!(text.contains("\"opened\""), "{text}");
        assert!(text.contains("date YYYYMMDD"), "{text}");
    }
}
