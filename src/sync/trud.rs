//! The NHS TRUD API: `GET {base}/trud/api/v1/keys/{key}/items/{item}/releases` lists an item's
//! releases newest first, each with its archive's URL, size and SHA-256. Every listed release
//! that is not stored yet is imported, oldest first (the first sync backfills the history), each
//! download checked against its listed size and checksum. The key is in the URLs the API uses and
//! gives; it never leaves this module unredacted.

use std::path::Path;

use serde::Deserialize;

use super::{Failure, Pass, Plan, SyncState, Syncer, fetch, stored_versions};
use crate::mapping::Mapping;

/// The listing.
#[derive(Debug, Deserialize)]
struct Listing {
    #[serde(default)]
    releases: Vec<Release>,
}

/// An error answer (`{"httpStatus":400,"message":"Invalid API key"}`).
#[derive(Debug, Deserialize)]
struct ApiError {
    message: Option<String>,
}

/// One release of an item (the fields this uses; the API gives more).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Release {
    id: String,
    #[serde(default)]
    name: String,
    release_date: String,
    archive_file_url: String,
    archive_file_name: String,
    archive_file_size_bytes: u64,
    archive_file_sha256: String,
}

impl Release {
    fn label(&self) -> String {
        format!("TRUD release {:?} ({})", self.name, self.archive_file_name)
    }
}

pub(super) async fn sync(
    syncer: &Syncer,
    m: &Mapping,
    plan: &Plan,
    item: u32,
    st: &mut SyncState,
    dir: &Path,
) -> Pass {
    let mut pass = Pass::default();
    let settings = syncer.settings();
    let Some(key) = settings.trud_key.clone() else {
        pass.errors.push(Failure::permanent(
            "no TRUD API key: set FHIR_REGISTERS_TRUD_API_KEY to follow a TRUD item",
        ));
        return pass;
    };
    let listing_url = format!(
        "{}/trud/api/v1/keys/{}/items/{item}/releases",
        settings.trud_url.trim_end_matches('/'),
        key.expose()
    );
    let releases = match list(syncer, &listing_url).await {
        Ok(r) => r,
        Err(f) => {
            pass.errors.push(f);
            return pass;
        }
    };
    let stored = stored_versions(&settings.data_dir, m.feed());
    let mut todo: Vec<Release> = releases
        .into_iter()
        .filter(|r| !stored.contains(&r.release_date) && !st.trud_done.contains(&r.id))
        .collect();
    // Oldest first, so each release is stored as the change from the one before.
    todo.sort_by(|a, b| crate::store::compare_versions(&a.release_date, &b.release_date));
    let downloads = super::state::downloads_dir(dir);
    for release in todo {
        if crate::mapping::version_date(&release.release_date).is_none() {
            pass.errors.push(Failure::retry(format!(
                "{}: releaseDate {:?} is not a date; not imported",
                release.label(),
                release.release_date
            )));
            continue;
        }
        let fetched = fetch::get(
            &syncer.client,
            &release.archive_file_url,
            &fetch::Validators::default(),
            &downloads,
            &format!("{}-", m.id()),
            Some(release.archive_file_size_bytes),
            settings,
        )
        .await;
        let download = match fetched {
            Ok(fetch::Fetched::Body(d)) => d,
            Ok(fetch::Fetched::NotModified) => {
                pass.errors.push(Failure::retry(format!(
                    "{}: the download answered 304 to an unconditional request",
                    release.label()
                )));
                continue;
            }
            Err(f) => {
                pass.errors.push(Failure {
                    message: format!("{}: {}", release.label(), f.message),
                    permanent: f.permanent,
                });
                continue;
            }
        };
        pass.downloaded_bytes += download.bytes;
        if !download
            .sha256
            .eq_ignore_ascii_case(release.archive_file_sha256.trim())
        {
            pass.errors.push(Failure::retry(format!(
                "{}: SHA-256 mismatch: the download's is {}, TRUD lists {}; not imported",
                release.label(),
                download.sha256,
                release.archive_file_sha256
            )));
            continue;
        }
        match syncer
            .unpack_and_import(
                m,
                plan,
                &download,
                &release.archive_file_name,
                Some(release.release_date.clone()),
                None,
            )
            .await
        {
            Ok(imported) => {
                st.trud_done.push(release.id.clone());
                if let Some(v) = imported {
                    pass.imported.push(v);
                }
            }
            Err(f) => pass.errors.push(Failure {
                message: format!("{}: {}", release.label(), f.message),
                permanent: f.permanent,
            }),
        }
    }
    pass
}

/// The item's releases. A refused key is a permanent failure (retrying cannot help).
async fn list(syncer: &Syncer, url: &str) -> Result<Vec<Release>, Failure> {
    let settings = syncer.settings();
    let shown = settings.redact(url);
    let response = syncer.client.get(url).send().await.map_err(|e| {
        Failure::retry(format!("{shown}: {}", fetch::transport_error(&e, settings)))
    })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        Failure::retry(format!(
            "{shown}: the listing broke off: {}",
            fetch::transport_error(&e, settings)
        ))
    })?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ApiError>(&body)
            .ok()
            .and_then(|e| e.message)
            .map(|m| settings.redact(&m));
        if status.as_u16() == 400
            && message
                .as_deref()
                .is_some_and(|m| m.to_ascii_lowercase().contains("api key"))
        {
            return Err(Failure::permanent(format!(
                "TRUD refused the API key (FHIR_REGISTERS_TRUD_API_KEY): {}; not retried until the longest backoff",
                message.unwrap_or_default()
            )));
        }
        return Err(Failure::retry(format!(
            "{shown}: HTTP {status}{}",
            message.map(|m| format!(": {m}")).unwrap_or_default()
        )));
    }
    if fetch::looks_like_html(&body[..body.len().min(512)]) {
        return Err(Failure::retry(format!(
            "{shown}: the TRUD API answered an HTML page, not a release listing"
        )));
    }
    let listing: Listing = serde_json::from_slice(&body).map_err(|e| {
        Failure::retry(format!(
            "{shown}: not a TRUD release listing: {}",
            settings.redact(&e.to_string())
        ))
    })?;
    Ok(listing.releases)
}
