//! Atomic writes into the output tree.
//!
//! Every file is written as `.tmp-<name><random>` in its own directory (the distributor
//! ignores `.tmp-*`), fsynced, then renamed over the old one, so a reader or a crash only ever
//! sees the old or the new version. A file whose bytes are already on disk is not touched, so
//! its mtime and inode stay and the distributor has nothing to send.
//!
//! Text files also get `.br`, `.zst` and `.gz` variants. The rule that keeps them honest: **a
//! variant on disk was made from the plain file beside it.** Whoever renames a new plain file
//! in removes that file's variants first (same directory, just before the rename), and a
//! variant is only renamed in while the plain file holds the bytes it was made from. During a
//! publish the variants are made afterwards ([`crate::variants`]); a server that serves a
//! variant only when it exists serves the new page uncompressed until they follow, never an
//! old page's variant.

use rand::Rng;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Extensions that get precompressed variants.
const COMPRESSIBLE: &[&str] = &["html", "css", "js", "xml", "atom", "svg", "json", "txt"];
pub(crate) const VARIANTS: &[&str] = &["br", "zst", "gz"];
// Levels chosen with `examples/compress_cost.rs` on a 54 KB feed: brotli 5 took 2.6 ms
// (8.2 KB) where 9 took 44 ms (7.3 KB); zstd 3 0.4 ms (8.9 KB); gzip 6 2.6 ms (7.7 KB).
// A publish's variants are made after it answers (`variants.rs`); `render --all` makes them
// for every page, and there they are most of its CPU.
// On 3,000 pages of the 100k site (7.9 KB each): brotli 5 178 µs a page, zstd 3 23 µs with
// a reused context, gzip 6 70 µs with zlib-rs (95 µs, 1.2 % smaller, with miniz_oxide).
// Brotli 4 would take 120 µs but make the `.br` files 10 % bigger, and brotli 5 with a
// window under 18 bits is 20 times slower (3.5 ms a page).
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW_BITS: u32 = 20;
const ZSTD_LEVEL: i32 = 3;
const GZIP_LEVEL: u32 = 6;

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// The output tree.
#[derive(Debug, Clone)]
pub struct Output {
    root: PathBuf,
    precompress: bool,
}

/// Directories whose entries changed, to fsync once at the end of a publish.
///
/// In batch mode (full rebuilds) files are not fsynced one by one; `finish` calls
/// `syncfs(2)` once on the output filesystem instead, which costs one flush for the whole
/// rebuild rather than four per page.
///
/// It also holds open the files a publish replaced or removed. Freeing an unlinked inode
/// costs ext4 about 0.1 ms (measured here: 16 renames over old files plus the removal of
/// their 48 variants took 6.5 ms, 0.6 ms with the old files held open); the last close
/// frees them on another thread after the publish has returned.
#[derive(Debug, Default)]
pub struct DirSync {
    dirs: BTreeSet<PathBuf>,
    batch_root: Option<PathBuf>,
    held: Vec<File>,
}

impl DirSync {
    /// A batch for a full rebuild of the tree at `root`.
    pub fn batch(root: &Path) -> Self {
        DirSync {
            batch_root: Some(root.to_path_buf()),
            ..DirSync::default()
        }
    }

    fn fsync_each(&self) -> bool {
        self.batch_root.is_none()
    }

    /// Keeps `path`'s inode alive until [`DirSync::finish`], if it exists.
    fn hold(&mut self, path: &Path) {
        if self.batch_root.is_none() {
            if let Ok(f) = File::open(path) {
                self.held.push(f);
            }
        }
    }

    /// Makes the renames durable.
    pub fn finish(self) -> io::Result<()> {
        if !self.held.is_empty() {
            let held = self.held;
            std::thread::spawn(move || drop(held));
        }
        if let Some(root) = self.batch_root {
            let f = File::open(root)?;
            return rustix::fs::syncfs(&f).map_err(io::Error::from);
        }
        let dirs: Vec<&Path> = self
            .dirs
            .iter()
            .filter(|d| d.exists())
            .map(PathBuf::as_path)
            .collect();
        make_durable(&dirs)
    }
}

impl Output {
    pub fn new(root: PathBuf, precompress: bool) -> Self {
        Output { root, precompress }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `rel` gets `.br`, `.zst` and `.gz` variants.
    pub fn has_variants(&self, rel: &str) -> bool {
        self.precompress
            && Path::new(rel)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| COMPRESSIBLE.contains(&e))
    }

    /// Writes `bytes` at `rel` (a path relative to the root with `/` separators, already
    /// checked to be safe) unless the file already holds exactly those bytes, then its
    /// variants: the full rebuild's path, where nothing waits on the variants.
    pub fn put(&self, rel: &str, bytes: &[u8], dirs: &mut DirSync) -> io::Result<Outcome> {
        let path = self.root.join(rel);
        let dir = path.parent().expect("output paths have a parent");
        let outcome = if same_bytes(&path, bytes)? {
            if !self.has_variants(rel) || !variants_missing(&path) {
                return Ok(Outcome::Unchanged);
            }
            Outcome::Unchanged
        } else {
            fs::create_dir_all(dir)?;
            remove_variants(&path)?;
            write_atomic(&path, bytes, dirs.fsync_each())?;
            Outcome::Written
        };
        if self.has_variants(rel) {
            for v in VARIANTS {
                let packed = compress(v, bytes)?;
                write_atomic(&variant_path(&path, v), &packed, dirs.fsync_each())?;
            }
        }
        dirs.dirs.insert(dir.to_path_buf());
        Ok(outcome)
    }

    /// Like [`Output::put`] for the plain file only, leaving the new bytes in a temporary file
    /// that [`Batch::commit`] makes durable and renames into place with the rest of the
    /// batch. A file that gets variants and is written, or whose variants are missing, is
    /// listed in [`Batch::commit`]'s answer: its variants are due.
    pub fn stage(&self, rel: &str, bytes: &[u8], batch: &mut Batch) -> io::Result<Outcome> {
        let path = self.root.join(rel);
        if same_bytes(&path, bytes)? {
            if self.has_variants(rel) && variants_missing(&path) {
                batch.due.push(rel.to_owned());
            }
            return Ok(Outcome::Unchanged);
        }
        let dir = path.parent().expect("output paths have a parent");
        fs::create_dir_all(dir)?;
        batch.staged.push(write_temp(&path, bytes)?);
        if self.has_variants(rel) {
            batch.due.push(rel.to_owned());
        }
        batch.dirs.insert(dir.to_path_buf());
        Ok(Outcome::Written)
    }

    /// Removes `rel` and its variants (variants first), then any directories left empty up
    /// to the root. Returns whether the plain file existed.
    pub fn remove(&self, rel: &str, dirs: &mut DirSync) -> io::Result<bool> {
        let path = self.root.join(rel);
        for v in VARIANTS {
            let vp = variant_path(&path, v);
            dirs.hold(&vp);
            remove_if_exists(&vp)?;
        }
        dirs.hold(&path);
        let existed = remove_if_exists(&path)?;
        if let Some(d) = path.parent() {
            dirs.dirs.insert(self.prune(d));
        }
        Ok(existed)
    }

    /// Removes `dir` and its parents up to the root while they are empty; returns the first
    /// one it kept (whose entries changed). Call it holding the writer lock.
    fn prune(&self, dir: &Path) -> PathBuf {
        let mut d = dir.to_path_buf();
        while d != self.root && d.starts_with(&self.root) && fs::remove_dir(&d).is_ok() {
            match d.parent() {
                Some(p) => d = p.to_path_buf(),
                None => break,
            }
        }
        d
    }
}

/// Plain files written to temporary names, waiting to be renamed into place together.
///
/// Committing is one durability barrier for the whole publish. Each temporary file's
/// writeback was started as it was written (`sync_file_range`), so by the time of the barrier
/// the data is on its way and its blocks are allocated; then every temporary file and the
/// store's write-ahead log (so the document is as durable as its pages) are made durable
/// together ([`make_durable`]: one `syncfs` while the disk is otherwise quiet, else one fsync
/// after the other, where the first commits the journal with all of them in it and the rest
/// find little left to do; measured for 16 files: 1.5 ms that way, 4.8 ms from 16 threads at
/// once, 5.9 ms without starting writeback early). Then, in the order they were staged (an
/// article before the listings that link to it), each file's old variants are removed and the
/// file is renamed into place; the caller flushes the directories ([`DirSync::finish`], after
/// answering for a publish: see [`crate::site`]). A
/// batch dropped without committing deletes its temporary files, so a failed publish leaves
/// every file as it was.
#[derive(Debug, Default)]
pub struct Batch {
    staged: Vec<(PathBuf, PathBuf)>,
    dirs: BTreeSet<PathBuf>,
    due: Vec<String>,
}

impl Batch {
    /// Appends another batch, keeping the order.
    pub fn extend(&mut self, mut other: Batch) {
        self.staged.append(&mut other.staged);
        self.dirs.append(&mut other.dirs);
        self.due.append(&mut other.due);
    }

    /// Makes the staged files and `also` durable, then removes each file's old variants and
    /// renames it into place. Returns the paths whose variants are due.
    pub fn commit(mut self, dirs: &mut DirSync, also: &[&Path]) -> io::Result<Vec<String>> {
        let staged = std::mem::take(&mut self.staged);
        let to_sync: Vec<&Path> = staged
            .iter()
            .map(|(t, _)| t.as_path())
            .chain(also.iter().copied())
            .collect();
        let result = make_durable(&to_sync).and_then(|()| {
            for (tmp, dest) in &staged {
                for v in VARIANTS {
                    let vp = variant_path(dest, v);
                    dirs.hold(&vp);
                    remove_if_exists(&vp)?;
                }
                dirs.hold(dest);
                fs::rename(tmp, dest)?;
            }
            Ok(())
        });
        if result.is_err() {
            for (t, _) in &staged {
                let _ = fs::remove_file(t);
            }
        }
        dirs.dirs.append(&mut self.dirs);
        result.map(|()| std::mem::take(&mut self.due))
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// The variants of `path` that exist are made from its bytes (see the module docs), so a
/// missing one is all that can be wrong.
pub(crate) fn variants_missing(path: &Path) -> bool {
    VARIANTS.iter().any(|v| !variant_path(path, v).exists())
}

/// Removes every variant of `path` (whether or not variants are on: a site that turned them
/// off must not keep serving old ones).
pub(crate) fn remove_variants(path: &Path) -> io::Result<()> {
    for v in VARIANTS {
        remove_if_exists(&variant_path(path, v))?;
    }
    Ok(())
}

/// fsyncs every path, one after the other (see [`Batch`] for why not at once).
pub(crate) fn sync_all(paths: &[&Path]) -> io::Result<()> {
    for p in paths {
        File::open(p)?.sync_all()?;
    }
    Ok(())
}

/// The most data (KiB) the kernel may hold waiting for writeback, `Dirty` plus `Writeback`
/// in `/proc/meminfo`, for [`make_durable`] to use `syncfs(2)`.
const SYNCFS_MAX_PENDING_KIB: u64 = 16 * 1024;

/// Makes `paths` (files or directories) durable, with as few device flushes as it can.
///
/// Each fsync ends in a flush of the disk's write cache, and that flush is most of its cost
/// (measured at 100k articles: a new article's 15 pages, the store's log and their
/// directories took 5.5–6 ms as one fsync each, 1.5–1.8 ms as two `syncfs`;
/// `examples/publish_loop.rs`). `syncfs` writes back everything dirty on the file system and
/// flushes once, so it is only used while little else is waiting to be written: with more
/// than [`SYNCFS_MAX_PENDING_KIB`] pending (a build, a database import, a backup on the same
/// disk) it would wait for all of it, and each path is fsynced instead. Paths on several
/// file systems get one `syncfs` each.
pub(crate) fn make_durable(paths: &[&Path]) -> io::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let quiet = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| pending_writeback_kib(&m))
        .is_some_and(|kib| kib <= SYNCFS_MAX_PENDING_KIB);
    if quiet {
        syncfs_each(paths)
    } else {
        sync_all(paths)
    }
}

/// One `syncfs` per file system that `paths` are on.
fn syncfs_each(paths: &[&Path]) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut synced = Vec::new();
    for p in paths {
        // A stat for each path (a missing one is still an error), an open per file system.
        let dev = fs::metadata(p)?.dev();
        if !synced.contains(&dev) {
            rustix::fs::syncfs(&File::open(p)?).map_err(io::Error::from)?;
            synced.push(dev);
        }
    }
    Ok(())
}

/// `Dirty` plus `Writeback` (KiB) from the text of `/proc/meminfo`; `None` if either is
/// missing.
fn pending_writeback_kib(meminfo: &str) -> Option<u64> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    Some(field("Dirty")? + field("Writeback")?)
}

/// Starts writing `f`'s dirty pages back without waiting (`sync_file_range(2)` with
/// `SYNC_FILE_RANGE_WRITE`): a hint that makes the later fsync cheap, not a guarantee.
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor `f` keeps open; no memory is passed.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Writes `bytes` to a temporary file beside `dest` and starts its writeback; returns
/// (temporary, destination).
pub(crate) fn write_temp(dest: &Path, bytes: &[u8]) -> io::Result<(PathBuf, PathBuf)> {
    write_temp_as(temp_path(dest), dest, bytes)
}

/// Where the variants worker writes its temporary files: one directory under the root (so
/// on the same file system), ignored whole by the distributor. A page's own directory never
/// holds the worker's files, so unpublishing a page removes its directory at once.
pub(crate) const STAGING_DIR: &str = ".tmp-variants";

/// Like [`write_temp`], with the temporary file in `dir`.
pub(crate) fn write_temp_in(
    dir: &Path,
    dest: &Path,
    bytes: &[u8],
) -> io::Result<(PathBuf, PathBuf)> {
    let in_place = temp_path(dest);
    let name = in_place.file_name().expect("temp_path has a file name");
    write_temp_as(dir.join(name), dest, bytes)
}

fn write_temp_as(tmp: PathBuf, dest: &Path, bytes: &[u8]) -> io::Result<(PathBuf, PathBuf)> {
    let guard = DeleteOnDrop(Some(tmp.clone()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    start_writeback(&f);
    drop(f);
    std::mem::forget(guard);
    Ok((tmp, dest.to_path_buf()))
}

pub(crate) fn variant_path(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// True when `path` is a file holding exactly `bytes`.
pub(crate) fn same_bytes(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == bytes.len() as u64 => Ok(fs::read(path)? == bytes),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn compress(kind: &str, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() / 3 + 64);
    match kind {
        "br" => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: BROTLI_QUALITY as i32,
                lgwin: BROTLI_WINDOW_BITS as i32,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &bytes[..], &mut out, &params)?;
        }
        "zst" => {
            // One context per thread: a new one each call allocated and initialised zstd's
            // tables for every file (31 against 22 µs a page, `examples/compress_cost.rs`).
            thread_local! {
                static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            out = ZSTD.with_borrow_mut(|c| {
                let c = match c {
                    Some(c) => c,
                    None => c.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
                };
                c.compress(bytes)
            })?;
        }
        _ => {
            // No file name or mtime in the header: the same input gives the same bytes.
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut out, flate2::Compression::new(GZIP_LEVEL));
            gz.write_all(bytes)?;
            gz.finish()?;
        }
    }
    Ok(out)
}

/// Removes the temporary file unless it was renamed into place.
struct DeleteOnDrop(Option<PathBuf>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Writes `bytes` to `path` through `.tmp-<name><random>` in the same directory: write,
/// fsync (unless the caller syncs the filesystem later), rename.
pub fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let tmp = temp_path(path);
    let guard = DeleteOnDrop(Some(tmp.clone()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    if fsync {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(&tmp, path)?;
    std::mem::forget(guard);
    Ok(())
}

/// A temporary name beside `path` that the distributor ignores.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: u64 = rand::thread_rng().gen();
    path.with_file_name(format!(".tmp-{name}{suffix:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_writeback_is_dirty_plus_writeback() {
        let m = "MemTotal:       24000000 kB\nDirty:              1536 kB\nWriteback:           512 kB\nWritebackTmp:          7 kB\n";
        assert_eq!(pending_writeback_kib(m), Some(2048));
        assert_eq!(pending_writeback_kib("Dirty: 12 kB\n"), None);
        assert_eq!(
            pending_writeback_kib("Dirty: x kB\nWriteback: 0 kB\n"),
            None
        );
        // This machine's own /proc/meminfo parses.
        let real = std::fs::read_to_string("/proc/meminfo").unwrap();
        assert!(pending_writeback_kib(&real).is_some());
    }

    #[test]
    fn make_durable_takes_files_and_directories_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.html");
        fs::write(&f, b"x").unwrap();
        let gone = dir.path().join("gone");
        // Whichever way this machine's pending writeback sends it, and both ways directly.
        for way in [make_durable, syncfs_each, sync_all] {
            way(&[f.as_path(), dir.path()]).unwrap();
            way(&[]).unwrap();
            assert!(way(&[f.as_path(), gone.as_path()]).is_err());
        }
    }

    #[test]
    fn same_bytes_write_nothing_and_variants_decode() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::new(dir.path().to_path_buf(), true);
        let mut dirs = DirSync::default();
        let page = b"<!doctype html><p>hello hello hello</p>".repeat(20);
        assert_eq!(
            out.put("a/b/index.html", &page, &mut dirs).unwrap(),
            Outcome::Written
        );
        let p = dir.path().join("a/b/index.html");
        let before = fs::metadata(&p).unwrap().modified().unwrap();
        assert_eq!(
            out.put("a/b/index.html", &page, &mut dirs).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), before);
        let gz = fs::read(variant_path(&p, "gz")).unwrap();
        let mut plain = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
        assert_eq!(plain, page);
        let zst = zstd::decode_all(&fs::read(variant_path(&p, "zst")).unwrap()[..]).unwrap();
        assert_eq!(zst, page);
        let mut br = Vec::new();
        brotli::BrotliDecompress(&mut &fs::read(variant_path(&p, "br")).unwrap()[..], &mut br)
            .unwrap();
        assert_eq!(br, page);
        dirs.finish().unwrap();
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".tmp-")),
            "{names:?}"
        );
    }

    #[test]
    fn a_batch_dropped_before_commit_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::new(dir.path().to_path_buf(), true);
        let mut dirs = DirSync::default();
        out.put("a/index.html", b"old", &mut dirs).unwrap();
        let mut batch = Batch::default();
        assert_eq!(
            out.stage("a/index.html", b"new", &mut batch).unwrap(),
            Outcome::Written
        );
        assert_eq!(
            out.stage("b/index.html", b"b", &mut batch).unwrap(),
            Outcome::Written
        );
        drop(batch);
        assert_eq!(fs::read(dir.path().join("a/index.html")).unwrap(), b"old");
        assert!(!dir.path().join("b/index.html").exists());
        let names: Vec<_> = fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        let mut batch = Batch::default();
        out.stage("a/index.html", b"new", &mut batch).unwrap();
        let due = batch.commit(&mut dirs, &[]).unwrap();
        assert_eq!(fs::read(dir.path().join("a/index.html")).unwrap(), b"new");
        // The old variants went with the old bytes; the new ones are due.
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
        assert_eq!(due, ["a/index.html"]);
    }

    #[test]
    fn a_new_plain_file_never_sits_beside_old_variants() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.html");
        let mut dirs = DirSync::default();
        // Variants on: a changed file loses its old variants as it is renamed in, an
        // unchanged one with a variant missing has them all made again.
        let out = Output::new(dir.path().to_path_buf(), true);
        out.put("index.html", b"one", &mut dirs).unwrap();
        let mut batch = Batch::default();
        assert_eq!(
            out.stage("index.html", b"two", &mut batch).unwrap(),
            Outcome::Written
        );
        assert!(
            variant_path(&p, "br").exists() && fs::read(&p).unwrap() == b"one",
            "nothing changes before the commit"
        );
        assert_eq!(batch.commit(&mut dirs, &[]).unwrap(), ["index.html"]);
        assert!(VARIANTS.iter().all(|v| !variant_path(&p, v).exists()));
        out.put("index.html", b"two", &mut dirs).unwrap();
        fs::remove_file(variant_path(&p, "zst")).unwrap();
        let mut batch = Batch::default();
        assert_eq!(
            out.stage("index.html", b"two", &mut batch).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(batch.commit(&mut dirs, &[]).unwrap(), ["index.html"]);
        // Variants off (`--no-precompress`): a new version still removes the old ones.
        let plain = Output::new(dir.path().to_path_buf(), false);
        out.put("index.html", b"three", &mut dirs).unwrap();
        assert_eq!(
            plain.put("index.html", b"four", &mut dirs).unwrap(),
            Outcome::Written
        );
        assert!(VARIANTS.iter().all(|v| !variant_path(&p, v).exists()));
        out.put("index.html", b"five", &mut dirs).unwrap();
        let mut batch = Batch::default();
        plain.stage("index.html", b"six", &mut batch).unwrap();
        assert!(batch.commit(&mut dirs, &[]).unwrap().is_empty());
        assert!(VARIANTS.iter().all(|v| !variant_path(&p, v).exists()));
        assert_eq!(fs::read(&p).unwrap(), b"six");
    }

    #[test]
    fn remove_prunes_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::new(dir.path().to_path_buf(), true);
        let mut dirs = DirSync::default();
        out.put("2009/04/x/index.html", b"x", &mut dirs).unwrap();
        out.put("2009/05/y/index.html", b"y", &mut dirs).unwrap();
        assert!(out.remove("2009/04/x/index.html", &mut dirs).unwrap());
        assert!(!dir.path().join("2009/04").exists());
        assert!(dir.path().join("2009/05/y/index.html").exists());
    }
}
