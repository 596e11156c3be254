//! # tamizdat wire protocol
//!
//! Everything the distributor and a mirror say to each other, and the rules both ends apply to
//! what they receive. No I/O: encode and decode only. Both ends depend on this crate and on
//! nothing else of each other's.
//!
//! ## Goals
//! - Cost proportional to what changed: a mirror's whole state is one number, the last sequence
//!   it applied durably; the distributor answers "what changed after S" from its index.
//! - Content addressed: every file is named on the wire by its blake3 hash; a mirror verifies
//!   bytes before they reach its served tree and never asks for bytes it already holds.
//! - Hostile input is rejected at the edge: [`codec::decode`] refuses garbage, unknown
//!   versions, oversized frames, and [`SitePath`] refuses any path that could leave the root.
//!
//! - Trust the newsroom's key, not the network: every changeset is signed with the site's
//!   ed25519 key over a hash chain ([`sign`] says exactly what is signed); a mirror pins the
//!   key from its join token and applies nothing that does not verify.
//!
//! ## Non-goals (for now)
//! Relays; freshness proofs (a path that withholds every frame can keep a mirror stale, which
//! its health check then reports, but it cannot make it serve anything unsigned).
//!
//! ## Flow
//! ```text
//! mirror                                   distributor
//!   ── Hello { site, mirror, secret, last_seq, link, agent } ──▶   auth (hashed secret), pick a mode
//!   ◀── Welcome { site, head_seq, mode, key, rotations } ──   mirror checks the key
//!   ◀── Blob { hash, .. } ──                   (live only: new small files, pushed ahead)
//!   ◀── Changeset { seq, kind, ops, last, proof } ──   (frames with the same seq; the last
//!                                                        one carries the signature)
//!   ── Need { hashes } ──▶                     only hashes the mirror holds nowhere
//!   ◀── Blob { hash, .. } | Chunk { .. } | Gone { hash } ──
//!   (mirror stages, verifies, fsyncs, renames, records seq)
//!   ── Ack { seq } ──▶
//!   ◀── Ping { nonce, head_seq } ──   ── Pong { nonce } ──▶
//!   either side: Error { code, message }, then close
//! ```
//! - `Live` changesets carry moves, deletes and puts in the order to apply them. Just before
//!   one, the distributor may push `Blob`s of small files whose bytes no live file had before
//!   (so no mirror can hold them): the mirror stages them, verified, and the changeset then
//!   needs no `Need` round trip. Pushed blobs the next changeset does not use are discarded;
//!   a mirror refuses more than 4,096 of them (or 64 MiB) ahead of one changeset, and any
//!   inside a changeset's frames.
//! - `CatchUp` (the mirror was away): one changeset, numbered with the head sequence, holding
//!   the final state of every path changed after the mirror's `last_seq`: deletes first, then
//!   puts. Renames arrive as delete + put of a hash the mirror already holds, so no bytes move.
//! - `Full` (a new mirror, another site, or one older than the tombstone horizon): the whole
//!   manifest; the mirror keeps what already matches, deletes what is not listed, and asks only
//!   for the hashes it lacks.
//!
//! ## Layout
//! - [`version`]: magic bytes, [`PROTOCOL_VERSION`], limits.
//! - [`message`]: the [`Message`] enum and its payloads.
//! - [`codec`]: the one home of the wire format (bincode 2 behind a size limit).
//! - [`hash`]: [`ContentHash`], a blake3 digest.
//! - [`path`]: [`SitePath`], a validated site-relative path.
//! - [`sign`]: the site key, the hash chain, what is signed and how it is checked.
//! - [`token`]: the join token a mirror is enrolled with.

pub mod codec;
pub mod hash;
pub mod message;
pub mod path;
pub mod sign;
pub mod token;
pub mod version;

pub use codec::{decode, encode, DecodeError};
pub use hash::ContentHash;
pub use message::*;
pub use path::{PathError, SitePath, RESERVED_PREFIX};
pub use sign::{
    Fingerprint, Link, OpsDigest, Proof, Rotation, SignError, SiteKey, SiteSigner, Statement,
    Trust, GENESIS,
};
pub use token::{JoinToken, TokenError};
pub use version::*;
