//! File-system steps of applying a changeset, each refusing to pass through a symlink, so a
//! hostile upstream (or a hostile file in the root) can never make the mirror write, rename or
//! delete anything outside its root.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use tamizdat_protocol::SitePath;

/// Why an op could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("'{0}' passes through a symlink; refused")]
    Symlink(SitePath),
    #[error("'{0}' does not exist on this mirror (out of step with upstream)")]
    Missing(SitePath),
    #[error("{what} '{path}': {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
}

impl FsError {
    pub fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        FsError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }

    /// The underlying I/O error, if this is one (to tell a full disk from a bad peer).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            FsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Checks every existing ancestor of `path` is a real directory. A regular file standing where
/// a directory is needed is removed (upstream replaced it; its delete may have been compacted).
/// Returns the full path.
pub fn prepare_parent(root: &Path, path: &SitePath) -> Result<PathBuf, FsError> {
    walk_ancestors(root, path, true)?;
    Ok(root.join(path.as_str()))
}

/// Like [`prepare_parent`] but creates nothing: `Ok(None)` when an ancestor is missing.
pub fn existing(root: &Path, path: &SitePath) -> Result<Option<PathBuf>, FsError> {
    Ok(walk_ancestors(root, path, false)?.then(|| root.join(path.as_str())))
}

/// Walks `path`'s ancestors under `root`, refusing symlinks. With `create`, makes missing
/// directories (replacing a file in the way); without, returns false at the first missing one.
fn walk_ancestors(root: &Path, path: &SitePath, create: bool) -> Result<bool, FsError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = path.components().collect();
    for c in &comps[..comps.len() - 1] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Err(FsError::Symlink(path.clone())),
            Ok(m) if m.is_dir() => continue,
            Ok(_) if !create => return Ok(false),
            Ok(_) => fs::remove_file(&cur).map_err(|e| FsError::io("remove", &cur, e))?,
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(FsError::io("stat", &cur, e))
            }
            Err(_) if !create => return Ok(false),
            Err(_) => {}
        }
        fs::create_dir(&cur).map_err(|e| FsError::io("create directory", &cur, e))?;
    }
    Ok(true)
}

/// Removes whatever stands at `full` (file, symlink itself, or directory tree).
pub fn remove_any(full: &Path) -> Result<bool, FsError> {
    match fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(full)
            .map(|_| true)
            .map_err(|e| FsError::io("remove directory", full, e)),
        Ok(_) => fs::remove_file(full)
            .map(|_| true)
            .map_err(|e| FsError::io("remove", full, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FsError::io("stat", full, e)),
    }
}

/// Removes empty directories from `full`'s parent up to (not including) `root`.
pub fn prune_empty_parents(root: &Path, full: &Path) {
    let mut cur = full.parent();
    while let Some(d) = cur {
        if d == root || !d.starts_with(root) || fs::remove_dir(d).is_err() {
            break;
        }
        cur = d.parent();
    }
}

/// fsyncs a directory, so the renames in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| FsError::io("sync directory", dir, e))
}

/// Flushes the whole file system holding `path` in one call (cheaper than an fsync per file
/// when many files were staged together).
pub fn sync_fs(path: &Path) -> Result<(), FsError> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).map_err(|e| FsError::io("open", path, e))?;
    // SAFETY: syncfs takes a valid open descriptor and touches no memory of ours.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(FsError::io("syncfs", path, io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_symlinked_ancestors_and_replaces_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let p = SitePath::new("link/x.html").unwrap();
        assert!(matches!(
            prepare_parent(&root, &p),
            Err(FsError::Symlink(_))
        ));
        assert!(matches!(existing(&root, &p), Err(FsError::Symlink(_))));
        fs::write(root.join("f"), b"x").unwrap();
        let p = SitePath::new("f/g/h.html").unwrap();
        assert_eq!(prepare_parent(&root, &p).unwrap(), root.join("f/g/h.html"));
        assert!(root.join("f/g").is_dir());
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        prune_empty_parents(&root, &root.join("f/g/h.html"));
        assert!(!root.join("f").exists());
        assert!(root.exists());
    }
}
