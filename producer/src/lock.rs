//! The single-writer rule between processes: `serve`, `publish`, `unpublish`, `render` and
//! `watch` may all run against the same `--state` and `--out`, and each change holds an
//! exclusive `flock` on `STATE/writer.lock` from reading the store to the last rename. Changes
//! from different processes therefore queue instead of interleaving their page writes.

use fs4::fs_std::FileExt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// The lock file of one state directory.
#[derive(Debug)]
pub struct WriterLock {
    file: Arc<File>,
}

/// Held while a change is written; unlocks on drop.
#[derive(Debug)]
pub struct WriterGuard {
    file: Arc<File>,
}

impl WriterLock {
    pub fn new(state: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(state.join("writer.lock"))?;
        Ok(WriterLock {
            file: Arc::new(file),
        })
    }

    /// Blocks until no other process writes this site.
    pub fn acquire(&self) -> io::Result<WriterGuard> {
        self.file.lock_exclusive()?;
        Ok(WriterGuard {
            file: self.file.clone(),
        })
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&*self.file);
    }
}
