//! Unpacking a download: a zip (the member the mapping names), a gzip file, or a plain file,
//! never past a size limit (zip bombs), with the zip's CRC checked as the member is read.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The register file, unpacked (removed when dropped unless it is the download itself).
#[derive(Debug)]
pub struct Unpacked {
    /// Where the plain bytes are.
    pub path: PathBuf,
    /// The member's name (the download's own name for gzip and plain files, without `.gz`).
    pub member: String,
    owned: bool,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Unpacks `download` (named `name`) beside it, by its first bytes: zip, gzip, or as it is.
/// `member` picks a zip member (exact name, name without folders, or a regex matching the
/// whole name); without it a zip must hold one file. More than `limit` unpacked bytes is an
/// error.
pub fn unpack(
    download: &Path,
    name: &str,
    member: Option<&str>,
    limit: u64,
) -> Result<Unpacked, String> {
    let mut magic = [0u8; 4];
    let n = File::open(download)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| format!("{name}: {e}"))?;
    let magic = &magic[..n];
    let out_path = download.with_extension("unpacked");
    if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        let file = File::open(download).map_err(|e| format!("{name}: {e}"))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
            format!("{name}: not a readable zip (truncated or damaged download?): {e}")
        })?;
        let names: Vec<String> = zip
            .file_names()
            .flatten()
            .filter(|n| !n.ends_with('/'))
            .map(|n| n.into_owned())
            .collect();
        let chosen = choose_member(&names, member).map_err(|e| format!("{name}: {e}"))?;
        let mut entry = zip
            .by_name(&chosen)
            .map_err(|e| format!("{name}: member {chosen}: {e}"))?;
        let unpacked = Unpacked {
            path: out_path,
            member: chosen.clone(),
            owned: true,
        };
        copy_limited(&mut entry, &unpacked.path, limit)
            .map_err(|e| format!("{name}: member {chosen}: {e}"))?;
        Ok(unpacked)
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        let file = File::open(download).map_err(|e| format!("{name}: {e}"))?;
        let mut gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
        let member = name
            .strip_suffix(".gz")
            .or_else(|| name.strip_suffix(".gzip"))
            .unwrap_or(name)
            .to_string();
        let unpacked = Unpacked {
            path: out_path,
            member,
            owned: true,
        };
        copy_limited(&mut gz, &unpacked.path, limit)
            .map_err(|e| format!("{name}: not a readable gzip file: {e}"))?;
        Ok(unpacked)
    } else {
        let size = std::fs::metadata(download)
            .map(|m| m.len())
            .map_err(|e| format!("{name}: {e}"))?;
        if size > limit {
            return Err(format!(
                "{name}: {size} bytes is more than the unpacked-size limit of {limit} bytes (--sync-max-unpacked-mib)"
            ));
        }
        Ok(Unpacked {
            path: download.to_path_buf(),
            member: name.to_string(),
            owned: false,
        })
    }
}

/// The member to read: the named one (exact, or by its name without folders, or the one a regex
/// matches whole), or the only file.
fn choose_member(names: &[String], member: Option<&str>) -> Result<String, String> {
    let listed = || {
        let mut shown: Vec<&str> = names.iter().map(String::as_str).take(10).collect();
        if names.len() > 10 {
            shown.push("…");
        }
        shown.join(", ")
    };
    let Some(wanted) = member else {
        return match names {
            [only] => Ok(only.clone()),
            [] => Err("the zip holds no file".into()),
            _ => Err(format!(
                "the zip holds several files ({}); name the register file with `member` in [sync]",
                listed()
            )),
        };
    };
    if let Some(exact) = names.iter().find(|n| *n == wanted) {
        return Ok(exact.clone());
    }
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_string();
    let by_base: Vec<&String> = names.iter().filter(|n| base(n) == wanted).collect();
    if let [one] = by_base.as_slice() {
        return Ok((*one).clone());
    }
    let matched: Vec<&String> = match regex::Regex::new(&format!("^(?:{wanted})$")) {
        Ok(re) => names
            .iter()
            .filter(|n| re.is_match(n) || re.is_match(&base(n)))
            .collect(),
        Err(_) => Vec::new(),
    };
    match matched.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "the zip has no member {wanted:?} (it holds: {})",
            listed()
        )),
        several => Err(format!(
            "member {wanted:?} matches {} files of the zip ({}); make it match one",
            several.len(),
            several
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Copies at most `limit` bytes; more is an error naming the limit.
fn copy_limited(reader: &mut dyn Read, to: &Path, limit: u64) -> Result<u64, String> {
    let file = File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(format!(
                "unpacks to more than the limit of {limit} bytes (--sync-max-unpacked-mib): refused as a possible zip bomb"
            ));
        }
        out.write_all(&buf[..n])
            .map_err(|e| format!("{}: {e}", to.display()))?;
    }
    out.flush().map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn members_are_chosen_by_name_base_name_or_regex() {
        let zip = names(&["Docs/readme.txt", "Data/epraccur.csv", "Data/epraccur.pdf"]);
        assert_eq!(
            choose_member(&zip, Some("Data/epraccur.csv")).as_deref(),
            Ok("Data/epraccur.csv")
        );
        assert_eq!(
            choose_member(&zip, Some("epraccur.csv")).as_deref(),
            Ok("Data/epraccur.csv")
        );
        assert_eq!(
            choose_member(&zip, Some(r"Data/.*\.csv")).as_deref(),
            Ok("Data/epraccur.csv")
        );
        let missing = choose_member(&zip, Some("etr.csv")).expect_err("an error");
        assert!(
            missing.contains("no member \"etr.csv\"") && missing.contains("Data/epraccur.pdf"),
            "{missing}"
        );
        let several = choose_member(&zip, Some(r"Data/.*")).expect_err("an error");
        assert!(several.contains("matches 2 files"), "{several}");
        assert!(
            choose_member(&zip, None)
                .expect_err("an error")
                .contains("several files")
        );
        assert_eq!(
            choose_member(&names(&["x.csv"]), None).as_deref(),
            Ok("x.csv")
        );
    }
}
