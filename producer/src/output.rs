//! Atomic writes into the output tree.
//!
//! Every file is written as `.tmp-<name><random>` in its own directory (the distributor
//! ignores `.tmp-*`), fsynced, then renamed over the old one, so a reader or a crash only ever
//! sees the old or the new version. A file whose bytes are already on disk is not touched, so
//! its mtime and inode stay and the distributor has nothing to send. Text files also get
//! `.br`, `.zst` and `.gz` variants; they are written before the plain file, so a plain file
//! that matches proves its variants were made from the same bytes.

use rand::Rng;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Extensions that get precompressed variants.
const COMPRESSIBLE: &[&str] = &["html", "css", "js", "xml", "atom", "svg", "json", "txt"];
const VARIANTS: &[&str] = &["br", "zst", "gz"];
// Levels chosen with `examples/compress_cost.rs` on a 54 KB feed: brotli 5 took 2.6 ms
// (8.2 KB) where 9 took 44 ms (7.3 KB); zstd 3 0.4 ms (8.9 KB); gzip 6 2.6 ms (7.7 KB).
// A publish compresses every page it rewrites, so it pays for these on its critical path.
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
#[derive(Debug, Default)]
pub struct DirSync(BTreeSet<PathBuf>, Option<PathBuf>);

impl DirSync {
    /// A batch for a full rebuild of the tree at `root`.
    pub fn batch(root: &Path) -> Self {
        DirSync(BTreeSet::new(), Some(root.to_path_buf()))
    }

    fn fsync_each(&self) -> bool {
        self.1.is_none()
    }

    /// Makes the renames durable.
    pub fn finish(self) -> io::Result<()> {
        if let Some(root) = self.1 {
            let f = File::open(root)?;
            return rustix::fs::syncfs(&f).map_err(io::Error::from);
        }
        let dirs: Vec<&Path> = self
            .0
            .iter()
            .filter(|d| d.exists())
            .map(PathBuf::as_path)
            .collect();
        sync_all_parallel(&dirs)
    }
}

impl Output {
    pub fn new(root: PathBuf, precompress: bool) -> Self {
        Output { root, precompress }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn compressible(rel: &str) -> bool {
        Path::new(rel)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| COMPRESSIBLE.contains(&e))
    }

    /// Writes `bytes` at `rel` (a path relative to the root with `/` separators, already
    /// checked to be safe) unless the file already holds exactly those bytes.
    pub fn put(&self, rel: &str, bytes: &[u8], dirs: &mut DirSync) -> io::Result<Outcome> {
        let path = self.root.join(rel);
        let variants = self.precompress && Self::compressible(rel);
        if same_bytes(&path, bytes)?
            && (!variants || VARIANTS.iter().all(|v| variant_path(&path, v).exists()))
        {
            return Ok(Outcome::Unchanged);
        }
        let dir = path.parent().expect("output paths have a parent");
        fs::create_dir_all(dir)?;
        if variants {
            for v in VARIANTS {
                let packed = compress(v, bytes)?;
                let vp = variant_path(&path, v);
                if !same_bytes(&vp, &packed)? {
                    write_atomic(&vp, &packed, dirs.fsync_each())?;
                }
            }
        }
        write_atomic(&path, bytes, dirs.fsync_each())?;
        dirs.0.insert(dir.to_path_buf());
        Ok(Outcome::Written)
    }

    /// Like [`Output::put`], but leaves the new bytes in temporary files that
    /// [`Batch::commit`] makes durable and renames into place together.
    pub fn stage(&self, rel: &str, bytes: &[u8], batch: &mut Batch) -> io::Result<Outcome> {
        let path = self.root.join(rel);
        let variants = self.precompress && Self::compressible(rel);
        if same_bytes(&path, bytes)?
            && (!variants || VARIANTS.iter().all(|v| variant_path(&path, v).exists()))
        {
            return Ok(Outcome::Unchanged);
        }
        let dir = path.parent().expect("output paths have a parent");
        fs::create_dir_all(dir)?;
        if variants {
            for v in VARIANTS {
                let packed = compress(v, bytes)?;
                let vp = variant_path(&path, v);
                if !same_bytes(&vp, &packed)? {
                    batch.staged.push(write_temp(&vp, &packed)?);
                }
            }
        }
        batch.staged.push(write_temp(&path, bytes)?);
        batch.dirs.insert(dir.to_path_buf());
        Ok(Outcome::Written)
    }

    /// Removes `rel` and its variants, then any directories left empty up to the root.
    /// Returns whether the plain file existed.
    pub fn remove(&self, rel: &str, dirs: &mut DirSync) -> io::Result<bool> {
        let path = self.root.join(rel);
        let existed = remove_if_exists(&path)?;
        for v in VARIANTS {
            remove_if_exists(&variant_path(&path, v))?;
        }
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) {
                dirs.0.insert(d);
                break;
            }
            match fs::remove_dir(&d) {
                Ok(()) => dir = d.parent().map(Path::to_path_buf),
                Err(_) => {
                    dirs.0.insert(d);
                    break;
                }
            }
        }
        Ok(existed)
    }
}

/// Files written to temporary names, waiting to be renamed into place together.
///
/// Committing fsyncs every temporary file at once from several threads (the file system
/// folds concurrent fsyncs into one journal commit), then renames them in the order they
/// were staged (variants before their plain file, an article before the listings that link
/// to it), then fsyncs the directories. A batch dropped without committing deletes its
/// temporary files, so a failed publish leaves every file as it was.
#[derive(Debug, Default)]
pub struct Batch {
    staged: Vec<(PathBuf, PathBuf)>,
    dirs: BTreeSet<PathBuf>,
}

/// Parallel fsyncs in flight at once.
const SYNC_THREADS: usize = 8;

impl Batch {
    /// Appends another batch, keeping the order.
    pub fn extend(&mut self, mut other: Batch) {
        self.staged.append(&mut other.staged);
        self.dirs.append(&mut other.dirs);
    }

    /// Makes the staged files durable and renames them into place.
    pub fn commit(mut self, dirs: &mut DirSync) -> io::Result<()> {
        let staged = std::mem::take(&mut self.staged);
        let tmps: Vec<&Path> = staged.iter().map(|(t, _)| t.as_path()).collect();
        let result = sync_all_parallel(&tmps).and_then(|()| {
            for (i, (tmp, dest)) in staged.iter().enumerate() {
                if let Err(e) = fs::rename(tmp, dest) {
                    for (t, _) in &staged[i..] {
                        let _ = fs::remove_file(t);
                    }
                    return Err(e);
                }
            }
            Ok(())
        });
        if result.is_err() {
            for (t, _) in &staged {
                let _ = fs::remove_file(t);
            }
        }
        dirs.0.append(&mut self.dirs);
        result
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn sync_all_parallel(paths: &[&Path]) -> io::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let per = paths.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || -> io::Result<()> {
                    for p in chunk {
                        File::open(p)?.sync_all()?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("fsync thread panicked"))
    })
}

fn write_temp(dest: &Path, bytes: &[u8]) -> io::Result<(PathBuf, PathBuf)> {
    let tmp = temp_path(dest);
    let guard = DeleteOnDrop(Some(tmp.clone()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::mem::forget(guard);
    Ok((tmp, dest.to_path_buf()))
}

fn variant_path(path: &Path, ext: &str) -> PathBuf {
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
fn same_bytes(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == bytes.len() as u64 => Ok(fs::read(path)? == bytes),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn compress(kind: &str, bytes: &[u8]) -> io::Result<Vec<u8>> {
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
        "zst" => out = zstd::bulk::compress(bytes, ZSTD_LEVEL)?,
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
        batch.commit(&mut dirs).unwrap();
        assert_eq!(fs::read(dir.path().join("a/index.html")).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 4);
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
