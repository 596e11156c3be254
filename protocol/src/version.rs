//! Magic bytes, the protocol version and the limits both ends agree on.

/// Every frame starts with these four bytes, so garbage is told apart from an old version.
pub const MAGIC: [u8; 4] = *b"TZDT";

/// The version this build speaks. A frame with another version is refused with
/// [`crate::ErrorCode::Version`] before its body is decoded.
pub const PROTOCOL_VERSION: u16 = 2;

/// Frame layout, in bytes:
/// ```text
/// 0..4   MAGIC  "TZDT"
/// 4..6   version, u16 little-endian
/// 6..    bincode 2 (standard config, varint) encoding of `Message`
/// ```
pub const HEADER_LEN: usize = 6;

/// Default largest frame either end accepts (16 MiB). A flag on each binary can lower it.
pub const MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Files up to this size travel as one [`crate::Blob`]; larger ones as [`crate::Chunk`]s.
pub const INLINE_LIMIT: u64 = 256 * 1024;

/// Most uncompressed bytes in one [`crate::Chunk`] of a large file; a receiver refuses more.
/// A sender may send less (the distributor sends 256 KiB).
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// Most operations in one changeset frame; a larger changeset is split over several frames
/// with the same sequence number, the last one marked `last`.
pub const OPS_PER_FRAME: usize = 4096;

/// Most hashes in one `Need` frame.
pub const HASHES_PER_NEED: usize = 8192;

/// Most hashes a mirror has asked for and not yet received (nor heard are `Gone`); it asks
/// for more as they arrive, half a window at a time, so one `Need` is answered while the
/// next waits its turn. Asking for a whole 100,000-file manifest at once held a request per
/// file on the mirror (7.5 MB of its heap peak, heaptrack) and a queue entry per file on the
/// distributor; a window of 16,384 still held 1.9 MB of requests, 8,192 about half that,
/// with 8,192 files' bytes (about 130 MB of pages) still in flight to keep the link busy.
pub const WANT_WINDOW: usize = HASHES_PER_NEED;
