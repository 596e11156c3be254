//! `tamizdat-distributor promote`: make a mirror's copy of the site the tree of a new origin,
//! for when the newsroom's machine (and its state) is lost or seized.
//!
//! Copies every file of the mirror's root into a new, empty root, leaving out the mirror's own
//! top-level `.tamizdat*` entries (staging, temp files) and refusing symlinks (a mirror never
//! creates any), then creates a new, empty state. `serve` on that root and state indexes the
//! copy as the new site: a new site id, sequence numbers from 1. The other mirrors are enrolled
//! again (`mirror add`, a new join token each); on connecting they are told to resync and, as
//! their trees already hold the same files, fetch only what differs.
//!
//! The mirror being copied should be stopped (or at least not applying a changeset), so the
//! copy is one published version of the site.

use crate::index::Index;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What `promote` copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
}

/// Is this top-level name the mirror's own (never part of the site)?
fn mirror_own(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with(".tamizdat")
}

fn is_empty_or_missing(p: &Path) -> Result<bool> {
    match std::fs::read_dir(p) {
        Ok(mut d) => Ok(d.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("Failed to read {}", p.display())),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("Failed to resolve {}", p.display()))
}

/// Copies `from` (a mirror's root) to `root` and creates a fresh index in `state`.
pub fn promote(from: &Path, root: &Path, state: &Path) -> Result<Copied> {
    let from = std::fs::canonicalize(from)
        .with_context(|| format!("Failed to open the mirror's root {}", from.display()))?;
    let (root, state) = (absolute(root)?, absolute(state)?);
    if root.starts_with(&from) || from.starts_with(&root) {
        bail!("--root and --from-mirror-root must not contain each other");
    }
    if state.starts_with(&root) || state.starts_with(&from) {
        bail!("--state must be outside both roots: it would be served");
    }
    if !is_empty_or_missing(&root)? {
        bail!(
            "--root {} is not empty: promote copies into a new directory",
            root.display()
        );
    }
    if !is_empty_or_missing(&state)? {
        bail!(
            "--state {} is not empty: promote starts a new origin with a new state",
            state.display()
        );
    }
    std::fs::create_dir_all(&root)
        .with_context(|| format!("Failed to create {}", root.display()))?;
    let mut copied = Copied::default();
    let walk = walkdir::WalkDir::new(&from)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && mirror_own(e.file_name())));
    for entry in walk {
        let entry = entry.with_context(|| format!("Failed to walk {}", from.display()))?;
        let rel = entry.path().strip_prefix(&from).expect("under the root");
        let dest = root.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest)
                .with_context(|| format!("Failed to create {}", dest.display()))?;
        } else if ft.is_file() {
            copied.bytes += std::fs::copy(entry.path(), &dest).with_context(|| {
                format!(
                    "Failed to copy {} to {}",
                    entry.path().display(),
                    dest.display()
                )
            })?;
            copied.files += 1;
        } else {
            bail!(
                "{} is not a regular file or directory (a mirror never makes one): refusing to copy it",
                entry.path().display()
            );
        }
    }
    // A new index: a new site id; `serve` fills it from the tree.
    Index::open(&state).context("Failed to create the new state")?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_site_but_not_the_mirrors_own_files() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m");
        std::fs::create_dir_all(m.join("a/.tamizdat")).unwrap();
        std::fs::create_dir_all(m.join(".tamizdat/stage")).unwrap();
        std::fs::write(m.join(".tamizdat/stage/x"), b"staged").unwrap();
        std::fs::write(m.join(".tamizdat-tmp1"), b"tmp").unwrap();
        std::fs::write(m.join("index.html"), b"hello").unwrap();
        std::fs::write(m.join("a/.tamizdat/page"), b"a site file, deeper down").unwrap();
        let (root, state) = (t.path().join("r"), t.path().join("s"));
        let c = promote(&m, &root, &state).unwrap();
        assert_eq!(c.files, 2);
        assert!(root.join("a/.tamizdat/page").exists());
        assert!(!root.join(".tamizdat").exists() && !root.join(".tamizdat-tmp1").exists());
        // Never over an existing tree or state.
        assert!(promote(&m, &root, &t.path().join("s2")).is_err());
        assert!(promote(&m, &t.path().join("r2"), &state).is_err());
        assert!(promote(&m, &m.join("inside"), &t.path().join("s3")).is_err());
    }
}
