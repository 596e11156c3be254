//! A file resolved for serving: its representations (plain and precompressed) with their
//! validators, and where their bytes come from.

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;

/// A content coding we serve from a precompressed file beside the plain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    /// Precompressed codings, in the order preferred when the client rates them equally.
    pub(crate) const PRECOMPRESSED: [Encoding; 3] = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];

    /// The file-name suffix of the variant.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Br => ".br",
            Encoding::Zstd => ".zst",
            Encoding::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` token.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Where a representation's bytes are.
#[derive(Debug)]
pub(crate) enum Source {
    /// Held in memory (hot cache).
    Memory(Bytes),
    /// An open file, streamed with positioned reads; never read whole.
    File(Arc<File>),
}

/// One representation of a resource: the plain file or one precompressed variant.
#[derive(Debug)]
pub(crate) struct Rep {
    pub encoding: Encoding,
    pub len: u64,
    /// `"<blake3 hex>"` of exactly these bytes.
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    /// Modification time in whole seconds since the epoch, for `If-Modified-Since`.
    pub mtime_secs: u64,
    pub source: Source,
}

/// A servable file and its precompressed variants.
#[derive(Debug)]
pub(crate) struct Resource {
    pub content_type: HeaderValue,
    pub cache_control: HeaderValue,
    /// `reps[0]` is the plain file; the rest are variants in [`Encoding::PRECOMPRESSED`] order.
    pub reps: Vec<Rep>,
    pub loaded_at: Instant,
}

impl Resource {
    /// Bytes held in memory, or `None` when any representation is streamed from disk.
    pub(crate) fn memory_weight(&self) -> Option<usize> {
        let mut total = 256;
        for r in &self.reps {
            match r.source {
                Source::Memory(ref b) => total += b.len(),
                Source::File(_) => return None,
            }
        }
        Some(total)
    }
}
