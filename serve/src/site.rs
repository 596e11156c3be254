//! The served tree: the publish gate, the hot cache, the hash cache, and resolving a request
//! path to an open file without ever leaving the root.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use parking_lot::Mutex;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use tokio::sync::{RwLock, RwLockWriteGuard};

use crate::cache::{affected, normalize_changed, HotCache};
use crate::options::ServeOptions;
use crate::resource::{Encoding, Rep, Resource, Source};
use crate::target;

/// Entries in the hash cache and in the hint table before they are emptied and refilled
/// (about 2 MB each at most, inside the 64 MB the issue allows the whole mirror).
const HASH_CACHE_ENTRIES: usize = 16_384;
/// How often a file that keeps changing while it is hashed is hashed again.
const HASH_ATTEMPTS: usize = 3;

/// Shared handle on the served tree. Create with [`Site::new`], hand a clone to [`run`](crate::run),
/// and take [`Site::publish`] around each changeset's rename phase.
pub struct Site {
    root: PathBuf,
    pub(crate) opts: ServeOptions,
    gate: RwLock<()>,
    dir: OnceLock<RootDir>,
    no_openat2: AtomicBool,
    /// Set once `openat2(RESOLVE_CACHED)` turned out unsupported (Linux before 5.12): every
    /// miss then goes to a blocking thread.
    no_resolve_cached: AtomicBool,
    hot: HotCache,
    pub(crate) stats: crate::stats::ServeStats,
    hashes: Mutex<Hashes>,
}

struct RootDir {
    fd: File,
    /// Canonical path, to check where an opened file really is.
    real: PathBuf,
}

#[derive(Default)]
struct Hashes {
    /// (path) → stat identity and the blake3 of the bytes seen with it.
    known: HashMap<Box<str>, (FileId, [u8; 32])>,
    /// Hashes the mirror told us about, not yet matched to a stat.
    hints: HashMap<Box<str>, [u8; 32]>,
}

impl Hashes {
    /// Keeps `hash` for `rel` as long as its stat stays `id` (all forgotten when full).
    fn remember(&mut self, rel: &str, id: FileId, hash: [u8; 32]) {
        if self.known.len() >= HASH_CACHE_ENTRIES {
            self.known.clear();
        }
        self.known.insert(rel.into(), (id, hash));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileId {
    len: u64,
    mtime_ns: i128,
    ino: u64,
    dev: u64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> Self {
        FileId {
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// Held by the mirror around the rename phase of one changeset. See [`Site::publish`].
#[must_use = "the publish gate closes as soon as the guard is dropped"]
pub struct PublishGuard<'a> {
    site: &'a Site,
    changed: Vec<String>,
    _gate: RwLockWriteGuard<'a, ()>,
}

impl Drop for PublishGuard<'_> {
    fn drop(&mut self) {
        // Runs before the write lock is released (fields drop after this body), so no request
        // can see a stale cache entry once the gate reopens.
        self.site.invalidate(&self.changed);
    }
}

impl PublishGuard<'_> {
    /// Adds paths to invalidate when the guard is dropped.
    pub fn changed(&mut self, path: impl Into<String>) {
        self.changed.push(path.into());
    }
}

/// An invalid hash given to [`Site::set_hash`].
#[derive(Debug, thiserror::Error)]
#[error("not a blake3 hash in hex: {0:?}")]
pub struct InvalidHash(pub String);

/// What a request path resolved to.
pub(crate) enum Lookup {
    Found(Arc<Resource>),
    /// A directory asked for without its trailing `/`.
    Redirect,
    /// Nothing servable; carries the site's `404.html` when it has one.
    NotFound(Option<Arc<Resource>>),
}

enum Opened {
    File(Rep),
    Dir,
    Missing,
}

/// A lookup tried on the runtime thread would have waited for the disk (or this kernel cannot
/// promise it would not): it goes to a blocking thread instead.
struct WouldBlock;

/// How a lookup may wait: on the runtime thread it must not ([`Wait::Never`]: only what the
/// kernel's dentry and page caches already hold), on a blocking thread it may.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Never,
    Allowed,
}

impl Site {
    /// A site serving `root`. Cheap; the root is opened on first use, so it may be created
    /// after this call.
    pub fn new(root: PathBuf, opts: ServeOptions) -> Arc<Site> {
        Arc::new(Site {
            hot: HotCache::new(opts.hot_cache_bytes),
            stats: Default::default(),
            root,
            opts,
            gate: RwLock::new(()),
            dir: OnceLock::new(),
            no_openat2: AtomicBool::new(false),
            no_resolve_cached: AtomicBool::new(false),
            hashes: Mutex::new(Hashes::default()),
        })
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Requests answered, bytes served, hot-cache hits: for metrics.
    pub fn stats(&self) -> &crate::stats::ServeStats {
        &self.stats
    }

    /// The options in force.
    pub fn options(&self) -> &ServeOptions {
        &self.opts
    }

    /// Closes the publish gate for the rename phase of one changeset. While the guard is held,
    /// new requests wait (resolving a path and opening its file happen under the gate's read
    /// side; streaming a file that is already open does not hold it). Waits for requests
    /// already resolving to finish opening. Dropping the guard invalidates the hot cache and the
    /// hash cache for `changed` (paths relative to the root, `/`-separated; a directory stands
    /// for everything under it; `""` for the whole tree) and reopens the gate.
    pub async fn publish(&self, changed: Vec<String>) -> PublishGuard<'_> {
        let gate = self.gate.write().await;
        PublishGuard {
            site: self,
            changed,
            _gate: gate,
        }
    }

    /// Whether [`Site::set_hash`] helps for a file of `size` bytes: a file small enough for
    /// the hot cache is read whole and hashed as it is read, so only larger ones (or every
    /// one, with the hot cache off) are hashed on their own, and a hint saves that. Hints for
    /// every file of a 100,000-file full resync were 2.35 MB of a fresh mirror's heap peak
    /// (heaptrack), for a few dozen files that could use them.
    pub fn wants_hash(&self, size: u64) -> bool {
        !self.read_whole(size)
    }

    /// Whether a file of `size` bytes is read whole into memory (and hashed as it is read)
    /// for the hot cache, rather than streamed from disk.
    fn read_whole(&self, size: u64) -> bool {
        self.opts.hot_cache_bytes > 0 && size <= self.opts.hot_cache_max_file
    }

    /// Tells the server the blake3 hash (64 hex digits) of the file now at `path` (relative to
    /// the root), so it need not hash it itself. Call it once the file with exactly these bytes
    /// is in place, or while holding the [`PublishGuard`] of the changeset that renames it
    /// there: the hint is used for the next version of `path` the server opens.
    pub fn set_hash(&self, path: &str, hash_hex: &str) -> Result<(), InvalidHash> {
        let hash = parse_hex(hash_hex).ok_or_else(|| InvalidHash(hash_hex.to_owned()))?;
        let path = path.trim_matches('/');
        let mut h = self.hashes.lock();
        if h.hints.len() >= HASH_CACHE_ENTRIES {
            h.hints.clear();
        }
        h.known.remove(path);
        h.hints.insert(path.into(), hash);
        Ok(())
    }

    fn invalidate(&self, changed: &[String]) {
        let set = normalize_changed(changed);
        self.hot.invalidate(&set);
        let mut h = self.hashes.lock();
        if set.contains("") {
            h.known.clear();
        } else {
            h.known.retain(|k, _| !affected(k, &set));
        }
    }

    /// Resolves `rel` (from [`target::parse`]) under the gate's read side.
    pub(crate) async fn lookup(self: &Arc<Self>, rel: &str) -> Lookup {
        let _gate = self.gate.read().await;
        match self.find(rel).await {
            Some(Ok(res)) => Lookup::Found(res),
            Some(Err(())) => Lookup::Redirect,
            None => Lookup::NotFound(self.find("404.html").await.and_then(Result::ok)),
        }
    }

    /// The site's own `404.html`, if it has one, under the gate's read side.
    pub(crate) async fn not_found_page(self: &Arc<Self>) -> Option<Arc<Resource>> {
        let _gate = self.gate.read().await;
        self.find("404.html").await.and_then(Result::ok)
    }

    /// `Some(Ok)`: found; `Some(Err)`: directory without `/`; `None`: nothing servable.
    async fn find(self: &Arc<Self>, rel: &str) -> Option<Result<Arc<Resource>, ()>> {
        if let Some(res) = self.hot.get(rel) {
            if res.loaded_at.elapsed() < self.opts.revalidate_after {
                self.stats.hot(true);
                return Some(Ok(res));
            }
        }
        self.stats.hot(false);
        // What the dentry and page caches hold is resolved here, on the runtime thread, as
        // nginx does; only a lookup that would wait for the disk pays for a blocking thread.
        let loaded = match self.load(rel, Wait::Never) {
            Ok(loaded) => loaded,
            Err(WouldBlock) => {
                let site = self.clone();
                let key = rel.to_owned();
                tokio::task::spawn_blocking(move || site.load(&key, Wait::Allowed).unwrap_or(None))
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!(cause = %e, "resolving a path panicked");
                        None
                    })
            }
        };
        match &loaded {
            Some(Ok(res)) => self.hot.insert(rel, res),
            // Gone (or now a directory) without a publish: forget the stale copy.
            _ => self.hot.remove(rel),
        }
        loaded
    }

    fn root_dir(&self, wait: Wait) -> Result<Option<&RootDir>, WouldBlock> {
        if let Some(d) = self.dir.get() {
            return Ok(Some(d));
        }
        if wait == Wait::Never {
            return Err(WouldBlock);
        }
        Ok(self.open_root())
    }

    fn open_root(&self) -> Option<&RootDir> {
        let fd = File::open(&self.root)
            .inspect_err(|e| tracing::warn!(root = %self.root.display(), cause = %e, "cannot open the served root"))
            .ok()?;
        let real = std::fs::canonicalize(&self.root).ok()?;
        let _ = self.dir.set(RootDir { fd, real });
        self.dir.get()
    }

    /// Opens `rel` (plus `index.html` for a directory path) and its variants. With
    /// [`Wait::Never`], fails with [`WouldBlock`] rather than wait for the disk.
    fn load(&self, rel: &str, wait: Wait) -> Result<Option<Result<Arc<Resource>, ()>>, WouldBlock> {
        let Some(root) = self.root_dir(wait)? else {
            return Ok(None);
        };
        let file_rel: Cow<str> = if rel.is_empty() || rel.ends_with('/') {
            Cow::Owned(format!("{rel}index.html"))
        } else {
            Cow::Borrowed(rel)
        };
        let plain = match self.open_rep(root, &file_rel, Encoding::Identity, wait)? {
            Opened::File(rep) => rep,
            Opened::Dir if matches!(file_rel, Cow::Borrowed(_)) => return Ok(Some(Err(()))),
            Opened::Dir | Opened::Missing => return Ok(None),
        };
        let mut reps = Vec::with_capacity(1);
        reps.push(plain);
        let mut name = String::with_capacity(file_rel.len() + 4);
        for enc in Encoding::PRECOMPRESSED {
            name.clear();
            name.push_str(&file_rel);
            name.push_str(enc.suffix());
            if let Opened::File(rep) = self.open_rep(root, &name, enc, wait)? {
                reps.push(rep);
            }
        }
        Ok(Some(Ok(Arc::new(Resource {
            content_type: content_type(&file_rel),
            cache_control: self.opts.cache_control.for_path(&file_rel),
            reps,
            loaded_at: Instant::now(),
        }))))
    }

    fn open_rep(
        &self,
        root: &RootDir,
        rel: &str,
        encoding: Encoding,
        wait: Wait,
    ) -> Result<Opened, WouldBlock> {
        let Some(file) = self.open_beneath(root, rel, wait)? else {
            return Ok(Opened::Missing);
        };
        // fstat of an open file never waits for the disk.
        let Ok(meta) = file.metadata() else {
            return Ok(Opened::Missing);
        };
        if meta.is_dir() {
            return Ok(Opened::Dir);
        }
        if !meta.is_file() {
            return Ok(Opened::Missing);
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let mtime_secs = mtime
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last_modified = http_date(UNIX_EPOCH + Duration::from_secs(mtime_secs));
        let (len, hash, source) = if self.read_whole(meta.len()) {
            let buf = match wait {
                Wait::Never if meta.len() == 0 => Bytes::new(),
                // Only whole and from the page cache; anything less is read where waiting is
                // allowed.
                Wait::Never => match crate::body::read_cached_at(&file, meta.len() as usize, 0) {
                    Ok(Some(b)) if b.len() as u64 == meta.len() => b,
                    _ => return Err(WouldBlock),
                },
                Wait::Allowed => {
                    let mut buf = Vec::with_capacity(meta.len() as usize + 1);
                    if (&file).read_to_end(&mut buf).is_err() {
                        return Ok(Opened::Missing);
                    }
                    Bytes::from(buf)
                }
            };
            let hash = *blake3::hash(&buf).as_bytes();
            (buf.len() as u64, hash, Source::Memory(buf))
        } else {
            let Some(hash) = self.hash_of(rel, &file, FileId::of(&meta), wait)? else {
                return Ok(Opened::Missing);
            };
            (meta.len(), hash, Source::File(Arc::new(file)))
        };
        Ok(Opened::File(Rep {
            encoding,
            len,
            etag: etag(&hash),
            last_modified,
            mtime_secs,
            source,
        }))
    }

    /// Opens `rel` for reading without leaving the root, so a symlink can lead neither out of
    /// the root nor into the mirror's `.tamizdat*` state. The common case is one
    /// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: no symlink on the way means the file
    /// is `root/rel` itself, and `rel` is checked here. A path through a symlink takes the
    /// general way: `openat2(RESOLVE_BENEATH)` where the kernel has it, and in every case a
    /// check of where the opened file really is. With [`Wait::Never`] only the fast way is
    /// tried, with `RESOLVE_CACHED` (the dentry cache only: never the disk).
    fn open_beneath(
        &self,
        root: &RootDir,
        rel: &str,
        wait: Wait,
    ) -> Result<Option<File>, WouldBlock> {
        use rustix::io::Errno;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let never = wait == Wait::Never;
        if never && self.no_resolve_cached.load(Ordering::Relaxed) {
            return Err(WouldBlock);
        }
        if !target::servable(rel) {
            return Ok(None);
        }
        if !self.no_openat2.load(Ordering::Relaxed) {
            let mut how =
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS;
            if never {
                how |= ResolveFlags::CACHED;
            }
            match rustix::fs::openat2(&root.fd, rel, flags, Mode::empty(), how) {
                Ok(fd) => return Ok(Some(File::from(fd))),
                // The dentry cache does not hold the whole path.
                Err(Errno::AGAIN) if never => return Err(WouldBlock),
                // Before Linux 5.12 RESOLVE_CACHED is an unknown flag.
                Err(Errno::INVAL) if never => {
                    self.no_resolve_cached.store(true, Ordering::Relaxed);
                    return Err(WouldBlock);
                }
                Err(Errno::NOSYS) => {
                    self.no_openat2.store(true, Ordering::Relaxed);
                    self.no_resolve_cached.store(true, Ordering::Relaxed);
                }
                // A symlink on the way: the general way below decides.
                Err(Errno::LOOP) | Err(Errno::XDEV) => {}
                Err(_) => return Ok(None),
            }
        }
        if never {
            return Err(WouldBlock);
        }
        Ok(self.open_through_links(root, rel, flags))
    }

    /// Opens `rel` following symlinks, then checks where the file really is.
    fn open_through_links(&self, root: &RootDir, rel: &str, flags: OFlags) -> Option<File> {
        let file = if !self.no_openat2.load(Ordering::Relaxed) {
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            Some(File::from(
                rustix::fs::openat2(&root.fd, rel, flags, Mode::empty(), how).ok()?,
            ))
        } else {
            None
        };
        let (file, beneath) = match file {
            Some(f) => (f, true),
            None => {
                let fd = rustix::fs::openat(&root.fd, rel, flags, Mode::empty()).ok()?;
                (File::from(fd), false)
            }
        };
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        match std::fs::read_link(link) {
            Ok(real) => {
                let inside = real
                    .strip_prefix(&root.real)
                    .ok()
                    .and_then(|p| p.to_str())
                    .is_some_and(target::servable);
                inside.then_some(file)
            }
            // Without /proc, only the kernel's RESOLVE_BENEATH vouches for the path.
            Err(_) => beneath.then_some(file),
        }
    }

    /// The blake3 of a file too big for the hot cache: from the hash cache when the stat
    /// matches, else from the mirror's hint, else hashed here (only where waiting is allowed).
    fn hash_of(
        &self,
        rel: &str,
        file: &File,
        id: FileId,
        wait: Wait,
    ) -> Result<Option<[u8; 32]>, WouldBlock> {
        {
            let mut h = self.hashes.lock();
            if let Some((known, hash)) = h.known.get(rel) {
                if *known == id {
                    return Ok(Some(*hash));
                }
            }
            if let Some(hash) = h.hints.remove(rel) {
                h.remember(rel, id, hash);
                return Ok(Some(hash));
            }
        }
        if wait == Wait::Never {
            return Err(WouldBlock);
        }
        let mut id = id;
        for _ in 0..HASH_ATTEMPTS {
            let Ok(hash) = hash_file(file) else {
                return Ok(None);
            };
            let Ok(meta) = file.metadata() else {
                return Ok(None);
            };
            let after = FileId::of(&meta);
            if after == id {
                self.hashes.lock().remember(rel, id, hash);
                return Ok(Some(hash));
            }
            id = after;
        }
        tracing::warn!(path = rel, "file keeps changing while hashed; not served");
        Ok(None)
    }
}

fn hash_file(file: &File) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut pos = 0u64;
    loop {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            return Ok(*hasher.finalize().as_bytes());
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn etag(hash: &[u8; 32]) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = Vec::with_capacity(66);
    s.push(b'"');
    for b in hash {
        s.push(HEX[(b >> 4) as usize]);
        s.push(HEX[(b & 15) as usize]);
    }
    s.push(b'"');
    HeaderValue::from_bytes(&s).expect("hex is a valid header value")
}

pub(crate) fn http_date(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).expect("an HTTP date is a header value")
}

fn content_type(rel: &str) -> HeaderValue {
    let mime = mime_guess::from_path(rel)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let textual = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
        );
    if textual {
        HeaderValue::from_str(&format!("{mime}; charset=utf-8"))
    } else {
        HeaderValue::from_str(mime)
    }
    .unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_etag() {
        let h = *blake3::hash(b"x").as_bytes();
        let hex = blake3::hash(b"x").to_hex();
        assert_eq!(parse_hex(&hex), Some(h));
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(etag(&h).to_str().unwrap(), format!("\"{hex}\""));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a/b.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a.mp4"), "video/mp4");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
