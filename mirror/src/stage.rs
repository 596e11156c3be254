//! The staging area, `ROOT/.tamizdat/stage/`: on the same file system as the served tree, so
//! a staged file enters the tree with one `rename`. Received bytes are named by their hash
//! once verified (`<hex>`; a large file is `<hex>.part` while its chunks arrive, a small one is
//! verified in memory and written as `<hex>` directly); files about to be renamed into place
//! are `put-<i>`, numbered by their op in the pending changeset so a restart can find them.

use crate::fsops::{self, FsError};
use anyhow::{Context, Result};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tamizdat_protocol::{
    Blob, Chunk, ContentHash, Encoding, ErrorCode, Op, SitePath, CHUNK_SIZE, RESERVED_PREFIX,
};

use crate::apply::EngineError;

/// Up to this many prepared files are fsynced one by one; more, with one syncfs.
const SYNC_ONE_BY_ONE: usize = 8;

/// The mirror's own directory under the root; the HTTP side never serves it.
pub const OWN_DIR: &str = ".tamizdat";

struct Partial {
    file: File,
    hasher: blake3::Hasher,
    offset: u64,
}

pub struct Stage {
    dir: PathBuf,
    /// The staging directory, opened (`O_PATH`): the calls of every staged file name it
    /// relative to this, so the kernel looks up one component, not the root's whole path
    /// (path walking was about a seventh of the applying thread's time in a full resync).
    fd: Arc<OwnedFd>,
    partials: HashMap<ContentHash, Partial>,
}

fn bad(code: ErrorCode, msg: impl Into<String>) -> EngineError {
    EngineError::Peer(code, msg.into())
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |e| EngineError::Fs(FsError::io(what, &path, e))
}

impl Stage {
    pub fn open(root: &Path) -> Result<Self> {
        let own = root.join(OWN_DIR);
        let dir = own.join("stage");
        fs::create_dir_all(&dir).with_context(|| format!("Failed to create {}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&own, fs::Permissions::from_mode(0o700));
        let fd =
            fsops::open_dir(&dir).with_context(|| format!("Failed to open {}", dir.display()))?;
        Ok(Self {
            dir,
            fd: Arc::new(fd),
            partials: HashMap::new(),
        })
    }

    /// Removes half-received and half-prepared files, and verified files whose bytes no
    /// longer match their name (a power cut before they were flushed).
    pub fn clean(&self) -> Result<()> {
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Kept with the bits the publisher counts on: an older version made them otherwise.
            let kept = ContentHash::from_hex(&name).is_some_and(|h| {
                use std::os::unix::fs::PermissionsExt;
                let mut hasher = blake3::Hasher::new();
                File::open(e.path()).is_ok_and(|mut f| {
                    std::io::copy(&mut f, &mut hasher).is_ok()
                        && ContentHash::from(hasher.finalize()) == h
                        && f.set_permissions(fs::Permissions::from_mode(fsops::STAGED_MODE))
                            .is_ok()
                })
            });
            if !kept {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    fn verified(&self, hash: &ContentHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn part(&self, hash: &ContentHash) -> PathBuf {
        self.dir.join(format!("{}.part", hash.to_hex()))
    }

    fn put(&self, i: usize) -> PathBuf {
        self.dir.join(put_name(i))
    }

    /// A second handle on the same staging directory, for the thread that publishes a full
    /// resync's early batches (it prepares only files the engine has finished staging).
    pub fn sibling(&self) -> Stage {
        Stage {
            dir: self.dir.clone(),
            fd: Arc::clone(&self.fd),
            partials: HashMap::new(),
        }
    }

    /// True when nothing is staged: no verified, partial or prepared file.
    pub fn is_empty(&self) -> bool {
        fs::read_dir(&self.dir).is_ok_and(|mut d| d.next().is_none())
    }

    pub fn has(&self, hash: &ContentHash) -> bool {
        rustix::fs::statat(&*self.fd, hash.to_hex(), rustix::fs::AtFlags::empty()).is_ok()
    }

    /// Stages a whole small file of exactly `size` bytes, verified against its hash.
    pub fn whole_exact(&mut self, b: &Blob, size: u64) -> Result<(), EngineError> {
        let n = self.whole(b, size)?;
        if n != size {
            self.discard(&b.hash);
            return Err(bad(
                ErrorCode::HashMismatch,
                format!("blob {} is not the size announced", b.hash),
            ));
        }
        Ok(())
    }

    /// Stages a whole small file of at most `limit` bytes, verified against its hash; returns
    /// its size.
    pub fn whole(&mut self, b: &Blob, limit: u64) -> Result<u64, EngineError> {
        let raw = unpack(b.encoding, &b.data, limit as usize)?;
        if ContentHash::of(&raw) != b.hash {
            return Err(bad(
                ErrorCode::HashMismatch,
                format!("blob {} does not match its hash", b.hash),
            ));
        }
        // Verified in memory, so written under its final name at once: no `.part` and no
        // rename in a directory that holds a whole resync (a tenth of the mirror's CPU in a
        // 100k-file one). A write cut short is removed here; one cut short by a kill is
        // found by `clean` on the next start, which re-hashes every verified file.
        let name = b.hash.to_hex();
        let written = rustix::fs::openat(
            &*self.fd,
            &name,
            rustix::fs::OFlags::WRONLY
                | rustix::fs::OFlags::CREATE
                | rustix::fs::OFlags::TRUNC
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(fsops::STAGED_MODE),
        )
        .map_err(std::io::Error::from)
        .and_then(|fd| {
            fsops::make_staged_mode(&fd)?;
            File::from(fd).write_all(&raw)
        });
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&*self.fd, &name, rustix::fs::AtFlags::empty());
            return Err(io("write", &self.dir.join(&name))(e));
        }
        Ok(raw.len() as u64)
    }

    /// Forgets a staged file nothing needs.
    pub fn discard(&self, hash: &ContentHash) {
        let _ = rustix::fs::unlinkat(&*self.fd, hash.to_hex(), rustix::fs::AtFlags::empty());
    }

    /// Stages one piece of a large file; true when the file is complete and verified.
    pub fn piece(&mut self, c: &Chunk, size: u64) -> Result<bool, EngineError> {
        let part = self.part(&c.hash);
        if c.offset == 0 {
            use std::os::unix::fs::OpenOptionsExt;
            let file = File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(fsops::STAGED_MODE)
                .open(&part)
                .and_then(|f| fsops::make_staged_mode(&f).map(|()| f))
                .map_err(io("create", &part))?;
            self.partials.insert(
                c.hash,
                Partial {
                    file,
                    hasher: blake3::Hasher::new(),
                    offset: 0,
                },
            );
        }
        let Some(p) = self.partials.get_mut(&c.hash) else {
            return Err(bad(
                ErrorCode::Protocol,
                "chunk of a file that was never started",
            ));
        };
        if c.offset != p.offset {
            return Err(bad(
                ErrorCode::Protocol,
                format!(
                    "chunk at offset {} where {} was expected",
                    c.offset, p.offset
                ),
            ));
        }
        let raw = unpack(c.encoding, &c.data, CHUNK_SIZE)?;
        if p.offset + raw.len() as u64 > size {
            self.abandon(&c.hash);
            return Err(bad(ErrorCode::HashMismatch, "file longer than announced"));
        }
        p.file.write_all(&raw).map_err(io("write", &part))?;
        p.hasher.update(&raw);
        p.offset += raw.len() as u64;
        if !c.last {
            return Ok(false);
        }
        let p = self.partials.remove(&c.hash).expect("present");
        if p.offset != size || ContentHash::from(p.hasher.finalize()) != c.hash {
            let _ = fs::remove_file(&part);
            return Err(bad(
                ErrorCode::HashMismatch,
                format!("file {} does not match its hash or size", c.hash),
            ));
        }
        drop(p.file);
        let dst = self.verified(&c.hash);
        fs::rename(&part, &dst).map_err(io("rename", &dst))?;
        Ok(true)
    }

    pub fn abandon(&mut self, hash: &ContentHash) {
        self.partials.remove(hash);
        let _ = fs::remove_file(self.part(hash));
    }

    pub fn drop_partials(&mut self) {
        let hashes: Vec<ContentHash> = self.partials.keys().copied().collect();
        for h in hashes {
            self.abandon(&h);
        }
    }

    /// True when the file at `full` has exactly `size` bytes hashing to `hash`.
    pub fn file_has(&self, full: &Path, size: u64, hash: &ContentHash) -> bool {
        match fs::symlink_metadata(full) {
            Ok(m) if m.is_file() && m.len() == size => {}
            _ => return false,
        }
        let mut hasher = blake3::Hasher::new();
        File::open(full)
            .and_then(|mut f| std::io::copy(&mut f, &mut hasher))
            .is_ok()
            && ContentHash::from(hasher.finalize()) == *hash
    }

    /// Files under `root` (outside the mirror's own directory) that `listed` does not name.
    pub fn unlisted_files(&self, root: &Path, listed: impl Fn(&SitePath) -> bool) -> Vec<SitePath> {
        walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| {
                e.depth() != 1 || !e.file_name().to_string_lossy().starts_with(RESERVED_PREFIX)
            })
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_type().is_dir())
            .filter_map(|e| SitePath::from_fs(root, e.path()).ok())
            .filter(|p| !listed(p))
            .collect()
    }

    /// Makes a file ready to rename into place for every put, with its mode and mtime, and
    /// flushes them. `local` finds a served file holding a hash.
    pub fn prepare(
        &self,
        ops: &[Op],
        local: impl Fn(&ContentHash) -> Option<PathBuf>,
    ) -> Result<Vec<Option<PathBuf>>, EngineError> {
        let later = later_uses(ops);
        let mut out = Vec::with_capacity(ops.len());
        // Few files: each is fsynced through its open handle. Many: the handles are closed as
        // they go (a full resync may prepare 100,000 files, far more than a process may hold
        // open) and one syncfs flushes them all.
        let puts = ops.iter().filter(|op| matches!(op, Op::Put { .. })).count();
        let one_by_one = puts <= SYNC_ONE_BY_ONE;
        let mut made = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let Op::Put {
                path,
                hash,
                size,
                mode,
                mtime,
            } = op
            else {
                out.push(None);
                continue;
            };
            let dst = self.put(i);
            let verified = self.verified(hash);
            if verified.exists() {
                if later[i] > 0 {
                    fs::copy(&verified, &dst).map_err(io("copy", &dst))?;
                } else {
                    fs::rename(&verified, &dst).map_err(io("rename", &dst))?;
                }
            } else if let Some(src) = local(hash) {
                let _ = fs::remove_file(&dst);
                // A large file is linked, not copied: served files are never written in place,
                // so sharing the inode is safe.
                if *size < 1 << 20 || fs::hard_link(&src, &dst).is_err() {
                    fs::copy(&src, &dst).map_err(io("copy", &dst))?;
                }
            } else {
                return Err(FsError::Missing(path.clone()).into());
            }
            let f = File::options()
                .write(true)
                .open(&dst)
                .map_err(io("open", &dst))?;
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode((mode & 0o755) | 0o644))
                .map_err(io("chmod", &dst))?;
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs((*mtime).max(0) as u64);
            f.set_modified(t).map_err(io("set mtime", &dst))?;
            if one_by_one {
                made.push(f);
            }
            out.push(Some(dst));
        }
        // The bytes must be on disk before they are renamed into the served tree. The staging
        // directory's own entries need no fsync: they only matter to a restart after a kill,
        // and a kill leaves the page cache intact.
        if one_by_one {
            for f in &made {
                f.sync_data().map_err(io("fsync", &self.dir))?;
            }
        } else {
            fsops::sync_fs(&self.dir)?;
        }
        Ok(out)
    }

    /// [`Stage::prepare`] for a batch of a fresh mirror's full resync published early: a
    /// verified file used once gets its mode and mtime where it is and is renamed into place
    /// from there, without the `put-<i>` name through which a restart finds the files of a
    /// pending changeset (a batch published early is recorded by path instead, and a file
    /// still here after a kill is kept as verified bytes). That saves a `stat`, a `rename`,
    /// an `open` and a `close` per file. The caller flushes them (one `syncfs` a batch).
    pub fn prepare_early(&self, ops: &[Op]) -> Result<Vec<Option<PathBuf>>, EngineError> {
        let later = later_uses(ops);
        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let Op::Put {
                path,
                hash,
                mode,
                mtime,
                ..
            } = op
            else {
                out.push(None);
                continue;
            };
            let verified = self.verified(hash);
            let missing = |e: std::io::Error, what, at: &Path| -> EngineError {
                if e.kind() == std::io::ErrorKind::NotFound {
                    FsError::Missing(path.clone()).into()
                } else {
                    FsError::io(what, at, e).into()
                }
            };
            let (src, name) = if later[i] > 0 {
                let name = put_name(i);
                let dst = self.dir.join(&name);
                fs::copy(&verified, &dst).map_err(|e| missing(e, "copy", &dst))?;
                (dst, name)
            } else {
                (verified, hash.to_hex())
            };
            fsops::set_mode_and_mtime(&*self.fd, name.as_str(), (mode & 0o755) | 0o644, *mtime)
                .map_err(|e| missing(e, "set mode and mtime", &src))?;
            out.push(Some(src));
        }
        Ok(out)
    }

    /// The prepared files of an interrupted changeset that have not been renamed yet.
    pub fn recovered_sources(&self, ops: &[Op]) -> Vec<Option<PathBuf>> {
        ops.iter()
            .enumerate()
            .map(|(i, op)| match op {
                Op::Put { .. } => Some(self.put(i)).filter(|p| p.exists()),
                _ => None,
            })
            .collect()
    }
}

/// The name in the staging directory of the file prepared for op `i` of a pending changeset.
fn put_name(i: usize) -> String {
    format!("put-{i}")
}

thread_local! {
    /// One decompression context, reused: a new one per blob costs megabytes of allocations.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// For each op, how many puts after it in `ops` have its bytes too (0 for all but puts): the
/// last put of a hash may take the verified file itself, the others get copies.
fn later_uses(ops: &[Op]) -> Vec<usize> {
    let mut seen: HashMap<ContentHash, usize> = HashMap::new();
    let mut later = vec![0; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        if let Op::Put { hash, .. } = op {
            let n = seen.entry(*hash).or_default();
            later[i] = *n;
            *n += 1;
        }
    }
    later
}

/// Decodes a blob or chunk, never producing more than `limit` bytes (a zstd bomb is refused).
/// Raw bytes are the frame's own (a copy of each was 2 % of a 100k resync's CPU, sent raw).
fn unpack(enc: Encoding, data: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, EngineError> {
    match enc {
        Encoding::Raw => {
            if data.len() > limit {
                return Err(bad(ErrorCode::HashMismatch, "more bytes than announced"));
            }
            Ok(Cow::Borrowed(data))
        }
        Encoding::Zstd => DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| EngineError::Local(anyhow::anyhow!("zstd context: {e}")))?,
                );
            }
            // Refuses output beyond `limit` without producing it.
            d.as_mut()
                .expect("made above")
                .decompress(data, limit)
                .map(Cow::Owned)
                .map_err(|e| {
                    bad(
                        ErrorCode::HashMismatch,
                        format!("bad or oversized zstd data: {e}"),
                    )
                })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_put_of_shared_bytes_has_no_later_use() {
        let put = |path: &str, bytes: &[u8]| Op::Put {
            path: SitePath::new(path).unwrap(),
            hash: ContentHash::from(blake3::hash(bytes)),
            size: bytes.len() as u64,
            mode: 0o644,
            mtime: 0,
        };
        let ops = [
            put("a", b"same"),
            put("b", b"other"),
            Op::Delete {
                path: SitePath::new("c").unwrap(),
            },
            put("d", b"same"),
            put("e", b"same"),
        ];
        assert_eq!(later_uses(&ops), [2, 0, 0, 1, 0]);
        assert!(later_uses(&[]).is_empty());
    }
}
