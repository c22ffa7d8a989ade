//! Persisting releases in the data directory: `releases/{feed}/{version}.release`, written
//! atomically (temporary file, fsync, rename), so a half-written import is never read.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::concept::Release;

const MAGIC: &[u8; 8] = b"FHIRREG1";

/// Why a release file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// File-system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a release written by this version of the server.
    #[error("{path}: not a readable release file ({message})")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Characters safe in a file name for a version string.
fn file_stem(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a release of `feed` at `version` lives.
pub fn release_path(data_dir: &Path, feed: &str, version: &str) -> PathBuf {
    data_dir
        .join("releases")
        .join(feed)
        .join(format!("{}.release", file_stem(version)))
}

/// Writes a release atomically and returns its path.
pub fn save_release(data_dir: &Path, release: &Release) -> Result<PathBuf, PersistError> {
    let path = release_path(data_dir, &release.info.feed, &release.info.version);
    let dir = path.parent().unwrap_or(data_dir);
    fs::create_dir_all(dir).map_err(io(dir))?;
    let bytes = postcard::to_stdvec(release).map_err(|e| PersistError::Corrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(MAGIC).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// Reads one release file.
pub fn load_release(path: &Path) -> Result<Release, PersistError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let corrupt = |message: String| PersistError::Corrupt {
        path: path.display().to_string(),
        message,
    };
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| corrupt("missing header".into()))?;
    postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))
}

/// Every release file under the data directory (not read).
pub fn release_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(feeds) = fs::read_dir(data_dir.join("releases")) else {
        return out;
    };
    for feed in feeds.flatten() {
        let Ok(files) = fs::read_dir(feed.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "release") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::super::concept::{Concept, ReleaseInfo, Value};
    use super::*;

    #[test]
    fn releases_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Concept::new("A81001");
        c.display = Some("THE DENSHAM SURGERY".into());
        c.properties
            .push(("opStartDate".into(), Value::DateTime("1974-04-01".into())));
        let release = Release {
            info: ReleaseInfo {
                feed: "ods-epraccur".into(),
                version: "2020-01-01".into(),
                source: "x.csv".into(),
                rows_read: 1,
                concepts: 1,
                mapping_hash: "m".into(),
                source_hash: "s".into(),
                imported_at: "2026-01-01T00:00:00Z".into(),
            },
            concepts: vec![c],
        };
        let path = save_release(dir.path(), &release).expect("saves");
        assert_eq!(release_files(dir.path()), vec![path.clone()]);
        let back = load_release(&path).expect("loads");
        assert_eq!(back.concepts, release.concepts);
        assert_eq!(back.info, release.info);
        fs::write(&path, b"garbage").expect("write");
        let err = load_release(&path).expect_err("corrupt");
        assert!(
            err.to_string().contains("not a readable release file"),
            "{err}"
        );
    }
}
