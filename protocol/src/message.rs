//! The messages. bincode encodes an enum variant by its position, so variants are
//! append-only: never reorder or remove one; new ones go at the end.

use crate::sign::{Link, Proof, Rotation, SiteKey};
use crate::{ContentHash, SitePath};
use serde::{Deserialize, Serialize};

/// A site's identity: 16 random bytes made when the distributor's state is created. A mirror
/// that was fed by another site (or by a distributor whose state was reset) gets a full resync.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct SiteId(pub [u8; 16]);

impl SiteId {
    pub fn to_hex(&self) -> String {
        crate::sign::hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        crate::sign::unhex(s).map(Self)
    }
}

/// Every message either end sends. Positions are the wire encoding: append only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// mirror → distributor, first frame.
    Hello(Hello),
    /// distributor → mirror, answer to `Hello`.
    Welcome(Welcome),
    /// distributor → mirror: one frame of a changeset.
    Changeset(Changeset),
    /// mirror → distributor: the bytes of these hashes, please.
    Need { hashes: Vec<ContentHash> },
    /// distributor → mirror: a whole small file.
    Blob(Blob),
    /// distributor → mirror: one piece of a large file, in order.
    Chunk(Chunk),
    /// distributor → mirror: these bytes no longer exist on the origin (the file changed again;
    /// a later changeset carries its new version).
    Gone { hash: ContentHash },
    /// mirror → distributor: every changeset up to `seq` is durably applied.
    Ack { seq: u64 },
    /// distributor → mirror: keep-alive, with the head as the distributor knows it.
    Ping { nonce: u64, head_seq: u64 },
    /// mirror → distributor: answer to `Ping`.
    Pong { nonce: u64 },
    /// either way, then the sender closes.
    Error { code: ErrorCode, message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The site the mirror last applied changes of, if any.
    pub site: Option<SiteId>,
    /// The mirror's enrolled name.
    pub mirror: String,
    /// The secret from the join token (the distributor stores only its hash).
    pub secret: String,
    /// The last sequence the mirror applied durably (0: nothing yet).
    pub last_seq: u64,
    /// The hash-chain link of that changeset ([`crate::sign`]).
    pub link: Link,
    /// The mirror's software and version (`tamizdat-mirror/0.1.0`), shown to operators.
    pub agent: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub site: SiteId,
    pub head_seq: u64,
    pub mode: Mode,
    /// The site's current signing key.
    pub key: SiteKey,
    /// Every key rotation since the site's first key, oldest first.
    pub rotations: Vec<Rotation>,
}

/// How the distributor will bring the mirror up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The mirror is at the head: live changesets follow.
    Live,
    /// One changeset of everything changed since the mirror's `last_seq`, then live.
    CatchUp,
    /// The whole manifest, then live.
    Full,
}

/// One frame of a changeset. A changeset spans frames with the same `seq`; the one with
/// `last` set completes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Changeset {
    pub seq: u64,
    /// For `CatchUp`, the sequence the ops are relative to (the mirror's applied sequence).
    pub base_seq: u64,
    /// When the newest change in it was seen on the origin, in milliseconds since the epoch.
    pub produced_at_ms: u64,
    pub kind: Mode,
    pub ops: Vec<Op>,
    pub last: bool,
    /// On the frame with `last` set: the signature over the whole changeset
    /// ([`crate::sign`]). Absent on the others.
    pub proof: Option<Proof>,
}

/// One change to the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `path` now holds the file with this hash.
    Put {
        path: SitePath,
        hash: ContentHash,
        size: u64,
        /// Permission bits (`0o644`); the mirror keeps owner read/write whatever this says.
        mode: u32,
        /// Modification time on the origin, seconds since the epoch (the mirror's
        /// Last-Modified, the same on every mirror).
        mtime: i64,
    },
    /// `path` (a file, or a directory and all under it) is gone.
    Delete { path: SitePath },
    /// `from` (a file or a whole directory) was renamed to `to`: no bytes travel.
    Move { from: SitePath, to: SitePath },
}

impl Op {
    /// The path this op leaves changed (its destination).
    pub fn path(&self) -> &SitePath {
        match self {
            Op::Put { path, .. } | Op::Delete { path } => path,
            Op::Move { to, .. } => to,
        }
    }
}

/// How a blob's or chunk's bytes are encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    Raw,
    /// zstd with its content checksum on.
    Zstd,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Blob {
    pub hash: ContentHash,
    pub encoding: Encoding,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Blob({:?}, {:?}, {} bytes)",
            self.hash,
            self.encoding,
            self.data.len()
        )
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub hash: ContentHash,
    /// Offset of this piece in the uncompressed file.
    pub offset: u64,
    pub encoding: Encoding,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The file is complete after this piece.
    pub last: bool,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Chunk({:?} @{}, {} bytes, last={})",
            self.hash,
            self.offset,
            self.data.len(),
            self.last
        )
    }
}

/// Why a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Undecodable frame.
    Malformed,
    /// Protocol version not spoken here.
    Version,
    /// Frame over the size limit.
    TooLarge,
    /// Unknown mirror, wrong secret, or revoked.
    Unauthorized,
    /// A message that makes no sense now (wrong order, sequence going backwards, bad path).
    Protocol,
    /// Bytes that do not match their hash.
    HashMismatch,
    /// The sender failed on its side (disk full, database error).
    Internal,
    /// A changeset or key that does not verify against the site key the mirror trusts.
    Signature,
}
