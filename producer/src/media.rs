//! Uploads (photos, audio, video) streamed to `media/` in the output tree.
//!
//! The body goes straight to a `.tmp-*` file beside its destination, is hashed on the way,
//! fsynced and renamed into place, so memory stays flat whatever the size and a broken upload
//! never replaces a good file.

use crate::output::temp_path;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use std::path::Path;
use tokio::io::AsyncWriteExt;

const MAX_MEDIA_PATH_BYTES: usize = 1024;
/// Longest file or directory name, in bytes: file systems allow 255, and the temporary file
/// beside it (`.tmp-{name}{16 hex}`, here and on mirrors) needs room too.
pub const MAX_MEDIA_NAME_BYTES: usize = 200;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("upload is over the limit of {0} bytes")]
    TooLarge(u64),
    #[error("reading the upload: {0}")]
    Body(String),
    #[error("writing the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// What was stored.
#[derive(Debug, Serialize)]
pub struct Stored {
    pub path: String,
    pub url: String,
    pub bytes: u64,
    pub blake3: String,
}

/// Checks a media path (`photos/2009/x.jpg`): relative, `/`-separated, no empty, `.` or `..`
/// components, no hidden names, no backslashes or control characters. Returns it normalised.
pub fn check_path(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.len() > MAX_MEDIA_PATH_BYTES {
        return Err(format!("must be at most {MAX_MEDIA_PATH_BYTES} bytes"));
    }
    if p.starts_with('/') {
        return Err("must be relative (no leading '/')".into());
    }
    if p.chars().any(|c| c.is_control() || c == '\\') {
        return Err("must not contain control characters or backslashes".into());
    }
    for part in p.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("has an empty, '.' or '..' component in {p:?}"));
        }
        if part.starts_with('.') {
            return Err(format!("component {part:?} must not start with '.'"));
        }
        if part.len() > MAX_MEDIA_NAME_BYTES {
            return Err(format!("has a component over {MAX_MEDIA_NAME_BYTES} bytes"));
        }
    }
    Ok(p.to_string())
}

/// Streams `body` to `out/media/rel`.
pub async fn store<S, E>(
    out: &Path,
    rel: &str,
    mut body: S,
    limit: Option<u64>,
) -> Result<Stored, MediaError>
where
    S: Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let dest = out.join("media").join(rel);
    let dir = dest.parent().expect("media paths have a parent");
    tokio::fs::create_dir_all(dir).await?;
    let tmp = temp_path(&dest);
    let result = async {
        let mut f = tokio::fs::File::create(&tmp).await?;
        let mut hasher = blake3::Hasher::new();
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| MediaError::Body(e.to_string()))?;
            bytes += chunk.len() as u64;
            if limit.is_some_and(|l| bytes > l) {
                return Err(MediaError::TooLarge(limit.unwrap_or_default()));
            }
            hasher.update(&chunk);
            f.write_all(&chunk).await?;
        }
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, &dest).await?;
        if let Ok(d) = tokio::fs::File::open(dir).await {
            d.sync_all().await?;
        }
        Ok(Stored {
            path: format!("media/{rel}"),
            url: format!("/media/{rel}"),
            bytes,
            blake3: hasher.finalize().to_hex().to_string(),
        })
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_media_paths_are_refused() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            ".hidden",
            "a\\b",
            "a\0b",
        ] {
            assert!(check_path(p).is_err(), "{p:?}");
        }
        assert_eq!(
            check_path("photos/2009/kettle.jpg").unwrap(),
            "photos/2009/kettle.jpg"
        );
    }
}
