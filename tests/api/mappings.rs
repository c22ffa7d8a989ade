//! The promised errors for broken mappings and broken rows, and how mappings combine. (What each
//! shipped mapping makes of its fixture is snapshot by its own `[[test]]` cases: see
//! `mapping_tests.rs`.)

use std::path::Path;

use fhir_registers::mapping::{self, ImportError, Mapping, MappingSet};

use super::support::*;

#[test]
fn several_mappings_feed_one_code_system() {
    let set = shipped();
    let ods = &set.code_systems["https://fhir.nhs.uk/Id/ods-organization-code"];
    assert_eq!(
        ods.feeds,
        vec!["ods-eccg", "ods-epraccur", "ods-etr"],
        "ods-epraccur-dse continues the ods-epraccur feed"
    );
    assert_eq!(ods.title.as_deref(), Some("ODS Organisation Code"));
    assert!(
        ods.properties.iter().any(|p| p.code == "GOR"),
        "etr's own declaration is merged"
    );
}

#[test]
fn gzip_and_plain_files_give_the_same_concepts() {
    let set = shipped();
    let m = set.mapping("postcodes-codepoint").expect("postcodes");
    let gz = mapping::read_release(
        m,
        &local("postcodes/codepoint_TS18_slice.csv.gz"),
        "1",
        &mut |_| {},
    )
    .expect("gz");
    let plain = mapping::read_release(
        m,
        &local("postcodes/codepoint_TS18_slice.csv"),
        "1",
        &mut |_| {},
    )
    .expect("plain");
    assert_eq!(gz.concepts, plain.concepts);
    assert_eq!(gz.concepts.len(), 300);
    assert_eq!(
        gz.info.source_hash, plain.info.source_hash,
        "the hash is of the decompressed rows"
    );
}

#[test]
fn unknown_key_names_the_file_and_the_key() {
    let err = Mapping::load(&fixture("broken/broken-unknown-key.toml")).expect_err("broken");
    let text = err
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("broken-unknown-key.toml"), "{text}");
    assert!(text.contains("display_name"), "{text}");
    assert!(text.contains("unknown field"), "{text}");
    assert!(
        text.contains("line"),
        "the TOML error gives the line: {text}"
    );
}

#[test]
fn missing_column_names_the_column_the_key_and_the_file() {
    let m = Mapping::load(&fixture("broken/broken-missing-column.toml"))
        .expect("mapping itself is fine");
    let err = mapping::read_release(
        &m,
        &local("ods/ods_organisation_roles.csv"),
        "1",
        &mut |_| {},
    )
    .expect_err("column missing");
    let ImportError::Mapping(errors) = &err else {
        panic!("{err}")
    };
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(errors[0].key, "concept.display");
    let text = err.to_string();
    assert!(
        text.contains("column \"display_name\" does not exist"),
        "{text}"
    );
    assert!(text.contains("ods_organisation_roles.csv"), "{text}");
    assert!(
        text.contains("displayName"),
        "lists the columns there are: {text}"
    );
}

#[test]
fn bad_date_names_row_column_property_and_value() {
    let set = shipped();
    let m = set.mapping("ods-epraccur").expect("epraccur");
    let err = mapping::read_release(
        m,
        &local("broken/epraccur_bad_date.csv"),
        "2020-01-01",
        &mut |_| {},
    )
    .expect_err("bad date");
    let ImportError::Rows { errors, total, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*total, 1);
    let e = &errors[0];
    assert_eq!(e.row, 3);
    assert_eq!(e.column, Some((11, "open_date".into())));
    assert_eq!(e.value.as_deref(), Some("2019131"));
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}: concept.property[", m.display_path())),
        "{text}"
    );
    assert!(text.contains("(opStartDate)"), "{text}");
    assert!(
        text.contains("is not a date (expected YYYYMMDD), row 3 of"),
        "{text}"
    );
}

fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write");
    (dir, p.display().to_string())
}

const SMALL: &str = r#"
[register]
id = "small"
[source]
header = true
[code_system]
url = "http://example.org/cs"
[[code_system.property]]
code = "size"
type = "integer"
[concept]
code = { column = "code", normalise = ["trim", "upper"] }
display = { template = "{name|title} ({code})" }
[concept.status]
column = "state"
[concept.status.values]
A = { status = "active" }
X = { status = "retired", inactive = true }
[concept.parent]
regex = '(.+)\.[^.]+'
replace = "$1"
[[concept.property]]
code = "size"
column = "size"
"#;

#[test]
fn templates_normalisers_status_tables_and_derived_parents() {
    let m = Mapping::from_text(Path::new("small.toml"), SMALL).expect("valid");
    let (_d, path) = temp_file(
        "f.csv",
        "code,name,state,size\n j45 ,ASTHMA,A,3\nj45.9,ASTHMA UNSPECIFIED,X,\n",
    );
    let file = fhir_registers::source::local_file(&path).expect("file");
    let r = mapping::read_release(&m, &file, "1", &mut |_| {}).expect("reads");
    assert_eq!(r.concepts.len(), 2);
    let j45 = &r.concepts.get(0);
    assert_eq!(&*j45.code, "J45");
    assert_eq!(j45.display.as_deref(), Some("Asthma (j45)"));
    assert_eq!(j45.status.as_deref(), Some("active"));
    assert!(!j45.inactive);
    let j459 = &r.concepts.get(1);
    assert_eq!(j459.parents, vec!["J45".into()]);
    assert!(j459.inactive);
    assert!(j459.properties.is_empty(), "empty values are omitted");
}

#[test]
fn row_errors_are_all_reported_with_their_rows() {
    let m = Mapping::from_text(Path::new("small.toml"), SMALL).expect("valid");
    let (_d, path) = temp_file(
        "f.csv",
        "code,name,state,size\nA,a,A,1\nB,b,Q,2\nC,c,A,many\nA,again,A,1\n,empty,A,1\n",
    );
    let file = fhir_registers::source::local_file(&path).expect("file");
    let err = mapping::read_release(&m, &file, "1", &mut |_| {}).expect_err("rows are wrong");
    let ImportError::Rows { errors, total, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*total, 4, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("\"Q\" is not a known status (expected one of A, X), row 2"),
        "{text}"
    );
    assert!(text.contains("\"many\" is not an integer, row 3"), "{text}");
    assert!(
        text.contains("is a duplicate code (first seen at row 1)"),
        "{text}"
    );
    assert!(
        text.contains("is empty (every row needs a code), row 5"),
        "{text}"
    );
    assert_eq!(
        errors.iter().map(|e| e.row).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
}

#[test]
fn invalid_mappings_report_every_problem_with_its_key() {
    let bad = SMALL
        .replace(
            "type = \"integer\"",
            "type = \"integer\"\n[[code_system.property]]\ncode = \"when\"\ntype = \"dateTime\"",
        )
        .replace(
            "normalise = [\"trim\", \"upper\"]",
            "normalise = [\"shout\"]",
        )
        .replace("{name|title}", "{name|title")
        + "\n[[concept.property]]\ncode = \"colour\"\ncolumn = \"c\"\n[[concept.property]]\ncode = \"when\"\ncolumn = \"w\"\ndate_format = \"MM-YY\"\n";
    let errs = Mapping::from_text(Path::new("bad.toml"), &bad).expect_err("invalid");
    let text = errs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("bad.toml: concept.code.normalise: unknown normaliser `shout`"),
        "{text}"
    );
    assert!(
        text.contains("bad.toml: concept.display.template: unclosed"),
        "{text}"
    );
    assert!(
        text.contains("concept.property[1] (colour): property `colour` is not declared"),
        "{text}"
    );
    assert!(
        text.contains("concept.property[2] (when).date_format: unknown date format `MM-YY`"),
        "{text}"
    );
    assert_eq!(errs.len(), 4, "{text}");
}

#[test]
fn a_folder_with_broken_mappings_reports_each_file() {
    let err = MappingSet::load_dir(&fixture("broken")).expect_err("broken folder");
    let text = err
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("broken-unknown-key.toml"), "{text}");
}

#[test]
fn a_mapping_value_set_uses_only_r4_filter_operators() {
    let with = |op: &str| {
        format!(
            "{SMALL}\n[[value_set]]\nid = \"children\"\nurl = \"http://example.org/vs/children\"\n[[value_set.include]]\n[[value_set.include.filter]]\nproperty = \"concept\"\nop = \"{op}\"\nvalue = \"J45\"\n"
        )
    };
    Mapping::from_text(Path::new("r4.toml"), &with("is-a")).expect("an R4 operator");
    let errs = Mapping::from_text(Path::new("r5.toml"), &with("child-of"))
        .expect_err("the ValueSet is served as R4: child-of is R5");
    let text = errs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("value_set[0] (children).include[0].filter[0]: unknown operator `child-of` (expected one of R4's =, is-a,"),
        "{text}"
    );
}
