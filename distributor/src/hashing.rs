//! Hashing files that may be changing under us, and hashing many of them on every core.

use crate::index::{Entry, Stat};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use tamizdat_protocol::{ContentHash, INLINE_LIMIT};

/// A file hashed while it held still, with its bytes when it is small enough to travel inline.
pub struct Hashed {
    pub entry: Entry,
    pub small: Option<Vec<u8>>,
}

/// Hashes `path`, checking that size and mtime did not move while it was read (a file
/// rewritten in place); retries a few times. `Ok(None)`: not a regular file, or gone.
pub fn hash_file(path: &Path) -> io::Result<Option<Hashed>> {
    for _ in 0..5 {
        let before = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => Stat::of(&m),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut hasher = blake3::Hasher::new();
        let small = if before.size <= INLINE_LIMIT {
            let mut buf = Vec::with_capacity(before.size as usize + 1);
            f.read_to_end(&mut buf)?;
            hasher.update(&buf);
            Some(buf)
        } else {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            None
        };
        let after = Stat::of(&f.metadata()?);
        let read_len = small.as_ref().map(|b| b.len() as u64);
        if after == before && read_len.is_none_or(|l| l == before.size) {
            return Ok(Some(Hashed {
                entry: Entry {
                    hash: ContentHash::from(hasher.finalize()),
                    size: before.size,
                    mode: before.mode,
                    mtime_ns: before.mtime_ns,
                    ino: before.ino,
                },
                small,
            }));
        }
    }
    Err(io::Error::other("file kept changing while it was hashed"))
}

/// Hashes every path on all cores; results come back in no particular order.
pub fn hash_many(paths: Vec<(PathBuf, usize)>) -> Vec<(usize, io::Result<Option<Hashed>>)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(paths.len().max(1));
    if threads <= 1 {
        return paths
            .into_iter()
            .map(|(p, i)| (i, hash_file(&p).map(drop_large)))
            .collect();
    }
    let work = std::sync::Mutex::new(paths.into_iter());
    let out = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let next = work.lock().unwrap().next();
                let Some((p, i)) = next else { break };
                let r = hash_file(&p).map(drop_large);
                out.lock().unwrap().push((i, r));
            });
        }
    });
    out.into_inner().unwrap()
}

/// A bulk scan keeps no bytes: they would only crowd memory.
fn drop_large(h: Option<Hashed>) -> Option<Hashed> {
    h.map(|mut h| {
        h.small = None;
        h
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_small_and_large_files() {
        let d = tempfile::tempdir().unwrap();
        let small = d.path().join("s");
        let large = d.path().join("l");
        std::fs::write(&small, b"hello").unwrap();
        let big = vec![7u8; INLINE_LIMIT as usize + 10];
        std::fs::write(&large, &big).unwrap();
        let h = hash_file(&small).unwrap().unwrap();
        assert_eq!(h.entry.hash, ContentHash::of(b"hello"));
        assert_eq!(h.small.as_deref(), Some(&b"hello"[..]));
        let h = hash_file(&large).unwrap().unwrap();
        assert_eq!(h.entry.hash, ContentHash::of(&big));
        assert!(h.small.is_none());
        assert!(hash_file(&d.path().join("missing")).unwrap().is_none());
        assert!(hash_file(d.path()).unwrap().is_none());
        let many = hash_many(vec![(small, 0), (large, 1)]);
        assert_eq!(many.len(), 2);
    }
}
