//! Which names in the tree are never sent: atomic-write and editor temp files.
//!
//! A pattern matches one path component (a file or directory name), so a temp directory and
//! everything in it is skipped too. A temp file renamed to its final name within the settle
//! window travels once, under the final name.

use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::Path;

/// Temp files written by atomic-publish code, rsync, and editors.
pub const DEFAULT_PATTERNS: &[&str] = &[
    ".tmp-*",    // our producer and many CMSes: temp file, then rename
    "*.tmp",     // generic
    ".*.sw?",    // vim swap files
    "*.swp",     // vim
    "*~",        // emacs, gedit backups
    ".#*",       // emacs lock files
    "#*#",       // emacs autosave
    "4913",      // vim's write test
    ".~tmp~",    // rsync --delay-updates
    ".*.??????", // rsync's own temp names: .name.XXXXXX
];

#[derive(Clone)]
pub struct Ignore {
    set: GlobSet,
}

impl Ignore {
    /// `defaults` adds [`DEFAULT_PATTERNS`] to `extra`.
    pub fn new(defaults: bool, extra: &[String]) -> Result<Self, globset::Error> {
        let mut b = GlobSetBuilder::new();
        if defaults {
            for p in DEFAULT_PATTERNS {
                b.add(Glob::new(p)?);
            }
        }
        for p in extra {
            b.add(Glob::new(p)?);
        }
        Ok(Self { set: b.build()? })
    }

    /// True when this one name (no separators) is ignored.
    pub fn name(&self, name: &std::ffi::OsStr) -> bool {
        self.set.is_match(Path::new(name))
    }

    /// True when any component of `rel` (relative to the root) is ignored.
    pub fn path(&self, rel: &Path) -> bool {
        rel.components().any(|c| self.name(c.as_os_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_ignored_and_pages_are_not() {
        let i = Ignore::new(true, &["*.part".to_owned()]).unwrap();
        for p in [
            ".tmp-index.html123456",
            "a/.index.html.swp",
            "a/index.html~",
            ".#index.html",
            "b/.index.html.Ab12Cd",
            "video.part",
            ".tmp-dir/inside.html",
        ] {
            assert!(i.path(Path::new(p)), "{p}");
        }
        for p in [
            "index.html",
            "2024/05/story/index.html",
            ".well-known/security.txt",
            "tags/ünïcode tag/index.html",
            "feed.atom",
        ] {
            assert!(!i.path(Path::new(p)), "{p}");
        }
        let none = Ignore::new(false, &[]).unwrap();
        assert!(!none.path(Path::new(".tmp-x")));
    }
}
