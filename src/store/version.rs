//! Version strings and dates: ordering versions, the day a dated version comes into force, and
//! versions in resource ids.

/// The day a dated version comes into force (`2019-10-01`; `2019-10` → `2019-10-01`,
/// `2019` → `2019-01-01`), or `None` for a version that is not a date.
pub fn version_start(version: &str) -> Option<String> {
    let b = version.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    match b.len() {
        4 if digits(0..4) => Some(format!("{version}-01-01")),
        7 if digits(0..4) && b[4] == b'-' && digits(5..7) => Some(format!("{version}-01")),
        10 if digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10) => {
            Some(version.to_string())
        }
        _ => None,
    }
}

/// A FHIR `date`/`dateTime` parameter as the day it names (`2020-02-14T10:00:00Z` →
/// `2020-02-14`; `2020-02` → `2020-02-01`), or `None` when it is not one.
pub fn date_param(value: &str) -> Option<String> {
    let day = value.get(..10).unwrap_or(value);
    let rest = value.get(10..).unwrap_or("");
    if !(rest.is_empty() || rest.starts_with('T')) {
        return None;
    }
    let d = version_start(day)?;
    let (m, dd): (u32, u32) = (d[5..7].parse().ok()?, d[8..10].parse().ok()?);
    ((1..=12).contains(&m) && (1..=31).contains(&dd)).then_some(d)
}

/// Splits `{id}--{version}` into its parts.
pub fn split_versioned_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once("--") {
        Some((b, v)) => (b, Some(v)),
        None => (id, None),
    }
}

/// A version string in a form allowed in a resource id (`[A-Za-z0-9.-]`).
pub fn version_id(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect()
}

/// Orders versions: dates and dotted numbers compare numerically piece by piece, otherwise as
/// text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let split =
        |s: &str| -> Vec<String> { s.split(['.', '-']).map(|p| format!("{p:0>12}")).collect() };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("2020-01-01", "2019-10-01"), Greater);
        assert_eq!(compare_versions("1.10.0", "1.9.0"), Greater);
        assert_eq!(compare_versions("2019", "2019"), Equal);
        assert_eq!(split_versioned_id("icd-10--2019"), ("icd-10", Some("2019")));
        assert_eq!(version_id("2020-01-01"), "2020-01-01");
        assert_eq!(version_start("2019").as_deref(), Some("2019-01-01"));
        assert_eq!(version_start("2019-10").as_deref(), Some("2019-10-01"));
        assert_eq!(version_start("4.0.1"), None);
        assert_eq!(
            date_param("2020-02-14T10:00:00Z").as_deref(),
            Some("2020-02-14")
        );
        assert_eq!(date_param("2020-13-01"), None);
        assert_eq!(date_param("yesterday"), None);
    }
}
