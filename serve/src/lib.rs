//! The HTTP side of a tamizdat mirror: serves the mirrored site tree the way a production
//! web server would, and answers load balancers' health checks.
//!
//! # What is served
//! - `GET` and `HEAD` only (others get 405). Files under the root, with a `Content-Type` from
//!   the extension (`; charset=utf-8` for text), `index.html` for a path ending in `/`, a 301
//!   from `/dir` to `/dir/`, the site's own `/404.html` (with status 404) for anything missing,
//!   and never a directory listing.
//! - A strong `ETag`: the quoted blake3 hex of the bytes sent, the same on every mirror, so a
//!   reader moving between mirrors keeps getting 304s. `Last-Modified` from the file's mtime.
//!   `If-None-Match` / `If-Modified-Since` answer 304, `If-Match` / `If-Unmodified-Since` 412.
//! - One `Range: bytes=…` answered with 206 (or 416 with `Content-Range: bytes */len`),
//!   guarded by `If-Range`; several ranges are ignored and answered with the whole file.
//! - Precompressed variants: `page.html.br`, `.zst`, `.gz` beside `page.html` are sent for
//!   `page.html` to a client whose `Accept-Encoding` takes them (highest q, then br > zstd >
//!   gzip), with `Content-Encoding` and their own ETag; every response for a file that has
//!   variants carries `Vary: Accept-Encoding`. A variant is never sent as the plain file.
//! - `Cache-Control` by glob ([`CacheControlRules`]): pages and feeds 60 s `must-revalidate`,
//!   media a week, fingerprinted assets a year `immutable`, the rest 5 minutes.
//! - `GET /.well-known/tamizdat/health`: 200 while the mirror is connected and its lag is within
//!   [`ServeOptions::lag_threshold`], 503 otherwise; a JSON [`HealthReport`] body.
//!
//! # What is never served
//! Nothing outside the root, whatever the encoding (`..`, `%2e%2e`, `%2f`, `%5c`, backslashes,
//! NUL, overlong UTF-8, double encoding), and no symlink leading out of it: files are opened
//! with `openat2(RESOLVE_BENEATH)` and where an opened file really lives is checked again.
//! No path with a segment starting with `.`: that covers the mirror's state and staging
//! (`.tamizdat`, `.tamizdat-*`), `.git`, `.htaccess` and the like. The one exception is a first
//! segment `.well-known`. Malformed targets get 400, dotfiles 404.
//!
//! # Consistency with the mirror's changesets
//! [`Site::publish`] is the publish gate: the mirror holds the returned guard while it renames
//! one changeset's files into place. Requests resolve and open their file under the gate's
//! read side, so each request sees the whole old set or the whole new set, never a mix.
//! Dropping the guard invalidates the hot cache and the hash cache for the changed paths, so
//! the next request gets the new bytes and the new ETag.
//!
//! # Performance
//! Small files (≤ [`ServeOptions::hot_cache_max_file`]) are held with their ready-made header
//! values in a bounded, sharded hot cache ([`ServeOptions::hot_cache_bytes`]): a hit costs a
//! shard read lock, an `Arc` clone and a `Bytes` clone. A miss is resolved on the runtime
//! thread when the kernel's caches hold everything it needs (`openat2(RESOLVE_CACHED)`, the
//! body read with `preadv2(RWF_NOWAIT)`), as nginx opens files in its event loop; only a miss
//! that would wait for the disk, hash a large file afresh or follow a symlink goes to a
//! blocking thread. Larger files go from the page cache to
//! the socket with `sendfile(2)` when the cache holds them (`zero_copy.rs`); otherwise they are
//! streamed in 128 KiB chunks, never read whole: read on the runtime thread while the page
//! cache has them (`preadv2(RWF_NOWAIT)`, which never waits for the disk), on blocking threads
//! otherwise. Hashes of large
//! files are computed once per (path, size, mtime, inode) on a blocking thread and cached, or
//! taken from the mirror with [`Site::set_hash`].
//!
//! [`run`] serves on the caller's runtime. [`spawn_threads`] runs one single-threaded runtime
//! per thread, all accepting on one listening socket (nginx's worker model), each accepted
//! connection handed to the thread serving the fewest. On small files it
//! answered about a third more requests per second than [`run`] on a work-stealing runtime with
//! the same number of threads (figures in the README).
//!
//! # Layout
//! - [`run`], [`spawn_threads`] (`server.rs`): accept loop, connection limit, header-read and idle timeouts,
//!   graceful shutdown.
//! - `respond.rs`: one request to one response (health, validators, ranges, encodings).
//! - `site.rs`: [`Site`], the publish gate, opening files beneath the root, the hash cache.
//! - `cache.rs`: the hot cache. `target.rs`: request target rules. `body.rs`: bodies.
//!   `zero_copy.rs`: file bodies sent with sendfile through hyper.
//! - `access_log.rs`: combined-format access log. `options.rs`: [`ServeOptions`].
//! - [`daemon`]: `--config` files, logging and shutdown shared by both daemons.
//! - `stats.rs`: [`ServeStats`], responses by status, bytes served, hot-cache hits.

mod access_log;
mod body;
mod cache;
pub mod daemon;
mod health;
mod options;
mod resource;
mod respond;
mod server;
mod site;
mod stats;
mod target;
mod zero_copy;

pub use body::Body;
pub use health::{Health, HealthReport, HEALTH_PATH};
pub use ipnet::IpNet;
pub use options::{
    parse_ip_net, AccessLogTarget, CacheControlRules, RuleError, ServeOptions,
    DEFAULT_CACHE_CONTROL, DEFAULT_CACHE_RULES,
};
pub use server::{run, spawn_threads, Threads};
pub use site::{InvalidHash, PublishGuard, Site};
pub use stats::ServeStats;
