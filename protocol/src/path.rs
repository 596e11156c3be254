//! What a valid site path is.
//!
//! A [`SitePath`] names a file or directory relative to the site root, with `/` separators.
//! Both ends build every path they receive through [`SitePath::new`] (deserialising does it
//! too), so a path that could leave the root never reaches a file-system call:
//!
//! - not empty, at most [`MAX_PATH_LEN`] bytes and [`MAX_DEPTH`] components;
//! - relative: no leading `/`, no empty component (`a//b`, trailing `/`);
//! - no `.` or `..` component, no NUL, no backslash, no control character;
//! - each component at most [`MAX_COMPONENT_LEN`] bytes;
//! - the first component does not start with [`RESERVED_PREFIX`] (a mirror's own files).
//!
//! Whether a component is a symlink is a property of a file system, not of a string: the mirror
//! checks it before every write.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single component accepted, in bytes (the common file-system limit).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Top-level names starting with this are the mirror's own (staging, state) and never part of
/// the site.
pub const RESERVED_PREFIX: &str = ".tamizdat";

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path deeper than {MAX_DEPTH} components")]
    TooDeep,
    #[error("absolute path")]
    Absolute,
    #[error("empty path component")]
    EmptyComponent,
    #[error("'.' or '..' component")]
    DotComponent,
    #[error("NUL byte in path")]
    Nul,
    #[error("backslash in path")]
    Backslash,
    #[error("control character in path")]
    Control,
    #[error("path component longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong,
    #[error("path under the reserved '{RESERVED_PREFIX}' prefix")]
    Reserved,
    #[error("path is not valid UTF-8")]
    NotUtf8,
}

/// A validated, site-relative path with `/` separators.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SitePath(String);

impl SitePath {
    /// Validates `s` against the rules in the module docs.
    pub fn new(s: impl Into<String>) -> Result<Self, PathError> {
        let s = s.into();
        validate(&s)?;
        Ok(Self(s))
    }

    /// Builds the site path of `full`, which must lie under `root`.
    pub fn from_fs(root: &Path, full: &Path) -> Result<Self, PathError> {
        let rel = full.strip_prefix(root).map_err(|_| PathError::Absolute)?;
        let mut out = String::new();
        for c in rel.components() {
            match c {
                std::path::Component::Normal(n) => {
                    if !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(n.to_str().ok_or(PathError::NotUtf8)?);
                }
                _ => return Err(PathError::DotComponent),
            }
        }
        Self::new(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path under `root` on this machine.
    pub fn to_fs(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent directory, or `None` at the top level.
    pub fn parent(&self) -> Option<SitePath> {
        self.0.rsplit_once('/').map(|(p, _)| SitePath(p.to_owned()))
    }

    /// True when `self` is `dir` or lies under it.
    pub fn starts_with(&self, dir: &SitePath) -> bool {
        self.0 == dir.0
            || (self.0.len() > dir.0.len()
                && self.0.starts_with(&dir.0)
                && self.0.as_bytes()[dir.0.len()] == b'/')
    }

    /// Replaces the leading `from` of this path by `to` (for directory renames).
    pub fn rebase(&self, from: &SitePath, to: &SitePath) -> Option<SitePath> {
        if !self.starts_with(from) {
            return None;
        }
        SitePath::new(format!("{}{}", to.0, &self.0[from.0.len()..])).ok()
    }
}

fn validate(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if s.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if s.starts_with(RESERVED_PREFIX) {
        return Err(PathError::Reserved);
    }
    for (depth, c) in s.split('/').enumerate() {
        if depth >= MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        if c.is_empty() {
            return Err(PathError::EmptyComponent);
        }
        if c == "." || c == ".." {
            return Err(PathError::DotComponent);
        }
        if c.len() > MAX_COMPONENT_LEN {
            return Err(PathError::ComponentTooLong);
        }
        for ch in c.chars() {
            match ch {
                '\0' => return Err(PathError::Nul),
                '\\' => return Err(PathError::Backslash),
                c if c.is_control() => return Err(PathError::Control),
                _ => {}
            }
        }
    }
    Ok(())
}

impl TryFrom<String> for SitePath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        Self::new(s)
    }
}

impl From<SitePath> for String {
    fn from(p: SitePath) -> String {
        p.0
    }
}

impl fmt::Display for SitePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SitePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "index.html",
            "2024/05/story/index.html",
            "tags/ünïcode tag/index.html",
            ".well-known/security.txt",
            "a/.tamizdat/b",
            "file with spaces.pdf",
        ] {
            assert!(SitePath::new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("../x", PathError::DotComponent),
            ("a/../../x", PathError::DotComponent),
            ("a/./x", PathError::DotComponent),
            ("a//x", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("a\0b", PathError::Nul),
            ("a\\..\\b", PathError::Backslash),
            ("a\nb", PathError::Control),
            (".tamizdat/state.db", PathError::Reserved),
            (".tamizdat-staging", PathError::Reserved),
        ];
        for (p, want) in cases {
            assert_eq!(SitePath::new(*p).unwrap_err(), *want, "{p:?}");
        }
        assert_eq!(
            SitePath::new("a/".repeat(MAX_DEPTH) + "x").unwrap_err(),
            PathError::TooDeep
        );
        assert_eq!(
            SitePath::new("x".repeat(MAX_COMPONENT_LEN + 1)).unwrap_err(),
            PathError::ComponentTooLong
        );
        assert_eq!(
            SitePath::new("ab/".repeat(MAX_PATH_LEN / 3 + 1)).unwrap_err(),
            PathError::TooLong
        );
    }

    #[test]
    fn prefix_and_rebase() {
        let a = SitePath::new("a/b").unwrap();
        let d = SitePath::new("a").unwrap();
        let e = SitePath::new("ab").unwrap();
        assert!(a.starts_with(&d));
        assert!(!e.starts_with(&d));
        let to = SitePath::new("z/y").unwrap();
        assert_eq!(a.rebase(&d, &to).unwrap().as_str(), "z/y/b");
        assert_eq!(a.parent().unwrap(), d);
        assert_eq!(d.parent(), None);
    }

    #[test]
    fn from_fs_round_trip() {
        let root = Path::new("/srv/site");
        let p = SitePath::from_fs(root, Path::new("/srv/site/a/b.html")).unwrap();
        assert_eq!(p.as_str(), "a/b.html");
        assert_eq!(p.to_fs(root), Path::new("/srv/site/a/b.html"));
        assert!(SitePath::from_fs(root, Path::new("/etc/x")).is_err());
    }
}
