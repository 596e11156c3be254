//! Bytes for a hash: the recently changed small files come from memory (the journal just read
//! them to hash them), everything else from the tree, verified against the hash as it is read.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tamizdat_protocol::{Blob, ContentHash, Encoding, CHUNK_SIZE};

/// Bytes read for each `Chunk` sent, a quarter of the most a mirror takes ([`CHUNK_SIZE`]).
///
/// Each chunk in flight is held about four times over (read, packed, encoded, in the
/// socket's buffer) and up to three are in flight: 1 MiB chunks made 6 MB of the
/// distributor's heap peak while a full resync sent the site's videos (heaptrack, 100k files).
const SEND_CHUNK: usize = CHUNK_SIZE / 4;

thread_local! {
    /// One compression context per thread, reused: making one per call costs megabytes of
    /// short-lived allocations.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd level for everything sent. Level 1 packs this project's generated HTML 1.7 times as
/// fast as level 3 for 3 % more bytes (`zstd -b1 -e3` on 300 article pages, 4.9 MB: 3.62x at
/// 235 MB/s against 3.74x at 138 MB/s); a full resync is bound by packing, not by the wire.
const LEVEL: i32 = 1;

/// Compresses with zstd (checksum on) when asked to and when that makes the bytes smaller;
/// otherwise hands `raw` back as it is, copied only if it was borrowed.
pub fn pack(raw: Cow<'_, [u8]>, compress: bool) -> (Encoding, Vec<u8>) {
    match compress.then(|| compressed(&raw)).flatten() {
        Some(z) => (Encoding::Zstd, z),
        None => (Encoding::Raw, raw.into_owned()),
    }
}

/// `raw` compressed with zstd (checksum on), when that makes it smaller.
fn compressed(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < 64 {
        return None;
    }
    COMPRESSOR
        .with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                let mut enc = zstd::bulk::Compressor::new(LEVEL).ok()?;
                enc.include_checksum(true).ok()?;
                *c = Some(enc);
            }
            c.as_mut()?.compress(raw).ok()
        })
        .filter(|z| z.len() < raw.len())
}

/// A bounded first-in-first-out cache of packed small files.
pub struct BlobCache {
    limit: usize,
    inner: Mutex<Fifo>,
}

#[derive(Default)]
struct Fifo {
    map: HashMap<ContentHash, Arc<Blob>>,
    order: VecDeque<ContentHash>,
    bytes: usize,
}

impl BlobCache {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::new(Fifo::default()),
        }
    }

    pub fn insert(&self, hash: ContentHash, raw: &[u8]) {
        if raw.len() > self.limit / 4 {
            return;
        }
        let (encoding, data) = pack(raw.into(), true);
        let mut g = self.inner.lock().unwrap();
        let Fifo { map, order, bytes } = &mut *g;
        if map.contains_key(&hash) {
            return;
        }
        *bytes += data.len();
        map.insert(
            hash,
            Arc::new(Blob {
                hash,
                encoding,
                data,
            }),
        );
        order.push_back(hash);
        while *bytes > self.limit {
            let Some(old) = order.pop_front() else { break };
            if let Some(b) = map.remove(&old) {
                *bytes -= b.data.len();
            }
        }
    }

    pub fn get(&self, hash: &ContentHash) -> Option<Arc<Blob>> {
        self.inner.lock().unwrap().map.get(hash).cloned()
    }
}

/// Opens a small file that is about to be read and asks the kernel to start reading it in
/// (`POSIX_FADV_WILLNEED`), so that the files of a batch come off the disk together instead
/// of one read waiting for the one before. `None` when it is gone.
pub fn open_ahead(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    match std::fs::File::open(path) {
        Ok(f) => {
            // SAFETY: posix_fadvise takes a valid open descriptor and touches no memory of
            // ours; it is only advice, so its result does not matter.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
            Ok(Some(f))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a small file (of about `size` bytes) whole and checks it still has `hash`;
/// compresses it if asked.
pub fn read_small(
    mut file: std::fs::File,
    size: u64,
    hash: &ContentHash,
    compress: bool,
) -> std::io::Result<Option<Blob>> {
    // One more byte than expected, so a file that grew is read to its end without regrowing.
    let mut raw = Vec::with_capacity(size as usize + 1);
    file.read_to_end(&mut raw)?;
    if ContentHash::of(&raw) != *hash {
        return Ok(None);
    }
    let (encoding, data) = pack(raw.into(), compress);
    Ok(Some(Blob {
        hash: *hash,
        encoding,
        data,
    }))
}

/// Reads a large file piece by piece, hashing as it goes: `next` yields each chunk's
/// uncompressed bytes; `finish` says whether the whole file had the expected hash.
pub struct ChunkReader {
    file: std::fs::File,
    hasher: blake3::Hasher,
    pub offset: u64,
}

impl ChunkReader {
    pub fn open(path: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::File::open(path) {
            Ok(file) => Ok(Some(Self {
                file,
                hasher: blake3::Hasher::new(),
                offset: 0,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn next_chunk(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(SEND_CHUNK);
        (&mut self.file)
            .take(SEND_CHUNK as u64)
            .read_to_end(&mut buf)?;
        self.hasher.update(&buf);
        self.offset += buf.len() as u64;
        Ok(buf)
    }

    pub fn matches(&self, hash: &ContentHash) -> bool {
        ContentHash::from(self.hasher.finalize()) == *hash
    }
}
