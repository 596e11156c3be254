//! # tamizdat-distributor
//!
//! Watches a site tree, turns settled changes into numbered changesets kept durably in an
//! index that doubles as the journal, and streams them to every connected mirror over
//! WebSocket. See `docs/design.md` and the `tamizdat-protocol` crate docs for the protocol.
//!
//! # Layout
//! - [`server`]: start-up (index the tree, watch it) and the accept loop.
//! - [`dirwatch`]: a recursive inotify watch holding one small record per directory.
//! - [`watch`]: its changes into settled batches.
//! - [`journal`]: a batch into one changeset: stat, hash, compare, commit, publish.
//! - [`index`]: the SQLite index (per-path state, tombstones, changesets, mirrors).
//! - [`hashing`]: blake3 over files that may be changing, on every core.
//! - [`hub`]: fan-out of committed changesets to sessions, bounded.
//! - [`tls`]: the stream's optional TLS (rustls, ring), accepted before the WebSocket.
//! - [`session`]: one task per mirror: catch-up, live stream, blobs, pings.
//! - [`blobs`]: bytes for a hash (cache, small reads, chunked large reads).
//! - [`mirrors`]: enrolment, tokens, revocation.
//! - [`promote`]: a mirror's copy of the site made the tree of a new origin.
//! - [`status`], [`admin`], [`lag`], [`metrics`], [`history`]: what operators see.
//! - [`ignore`]: temp-file patterns that are never sent.

pub mod admin;
pub mod blobs;
pub mod dirwatch;
pub mod hashing;
pub mod history;
pub mod hub;
pub mod ignore;
pub mod index;
pub mod journal;
pub mod keys;
pub mod lag;
pub mod metrics;
pub mod mirrors;
pub mod promote;
pub mod server;
pub mod session;
pub mod status;
pub mod tls;
pub mod watch;
