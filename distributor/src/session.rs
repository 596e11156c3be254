//! One task per mirror connection.
//!
//! After `Hello`, the session subscribes to the hub *before* it reads the head, so no live
//! changeset can fall between the catch-up snapshot and the live stream; live changesets at or
//! below the snapshot's sequence are skipped. Then it `select!`s, in priority order, on: a kick
//! (revocation, or a newer session of the same mirror), frames from the mirror, live
//! changesets, the ping timer, and bulk frames (blobs and chunks) from the session's blob task.
//! Taking one bulk frame per turn lets changesets overtake a large file's chunks.

use crate::blobs::{read_small, ChunkReader};
use crate::hub::{changeset_frames, Hub};
use crate::index::{now_ms, Index};
use crate::keys::Signing;
use crate::metrics::add;
use crate::mirrors;
use crate::tls::Conn;
use anyhow::{anyhow, Result};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tamizdat_protocol::{
    decode, encode, Chunk, ContentHash, ErrorCode, Hello, Link, Message, Mode, OpsDigest, SiteId,
    Welcome, GENESIS, INLINE_LIMIT, OPS_PER_FRAME,
};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message as Ws};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

/// Settings every session shares.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub max_frame: usize,
    pub ping_interval: Duration,
    /// A client that has not said `Hello` by then is dropped.
    pub hello_timeout: Duration,
    pub resync_compression: ResyncCompression,
}

/// Whether the bytes a mirror asks for (a catch-up, a full resync) are compressed. Live
/// changes' bytes always are, when that makes them smaller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ResyncCompression {
    /// While content goes out slower than zstd packs it ([`Pace`]).
    #[default]
    Auto,
    /// Always: a link billed by the byte, however fast.
    Always,
    /// Never: a distributor short of CPU, on a fast network.
    Never,
}

pub struct Ctx {
    pub root: std::path::PathBuf,
    pub hub: Arc<Hub>,
    pub index: Arc<Index>,
    pub site: SiteId,
    pub signing: Arc<Signing>,
    pub opts: SessionOptions,
}

type Sink = futures_util::stream::SplitSink<WebSocketStream<Conn>, Ws>;
type Stream = futures_util::stream::SplitStream<WebSocketStream<Conn>>;

/// How much of a mirror's stream is read at a time. tungstenite zeroes this much of its buffer
/// before every read, also one that finds nothing, and each turn of the session's loop polls
/// one: with the 128 KiB default, `memset` was 8.5 % of the distributor's samples in a
/// 100k-file resync (`perf`); at this size, with tungstenite 0.30, the distributor spent
/// 2.68-2.85 s of CPU per resync against 3.05-3.18 s (`benches/ab-resync.py`, 2026-12-07).
/// What a mirror sends is small: acks, and `Need` lists of up to 4,096 hashes (128 KiB,
/// eight reads at this size).
const READ_BUFFER: usize = 16 << 10;

/// Bulk bytes (the answers to `Need`s) written before one flush, at most: a live changeset or
/// a ping waits behind no more than that, as behind one chunk of a large file.
const BULK_FLUSH: usize = 256 << 10;

/// A closing reason: what to tell the mirror, and the log.
struct Close(ErrorCode, String);

/// Accepts the websocket and runs the session to its end, logging why it ended. The
/// WebSocket upgrade and `Hello` must both be done by `deadline`.
pub async fn handle(stream: Conn, addr: SocketAddr, ctx: Arc<Ctx>, deadline: tokio::time::Instant) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(ctx.opts.max_frame))
        .max_frame_size(Some(ctx.opts.max_frame))
        .read_buffer_size(READ_BUFFER);
    let ws = match tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::accept_async_with_config(stream, Some(config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            add(&ctx.hub.metrics.connections_refused_total, 1);
            debug!(%addr, cause = %e, "websocket handshake failed");
            return;
        }
        Err(_) => {
            add(&ctx.hub.metrics.connections_refused_total, 1);
            debug!(%addr, "websocket handshake timed out");
            return;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let hello = match read_hello(&mut stream, &ctx, deadline).await {
        Ok(h) => h,
        Err(Close(code, message)) => {
            add(&ctx.hub.metrics.connections_refused_total, 1);
            warn!(%addr, ?code, %message, "mirror refused");
            let _ = send_error(&mut sink, code, &message).await;
            return;
        }
    };
    let name = hello.mirror.clone();
    let live = ctx.hub.join(&name, addr, hello.last_seq, &hello.agent);
    add(&ctx.hub.metrics.connections_total, 1);
    info!(mirror = %name, %addr, last_seq = hello.last_seq, agent = %live.agent, "mirror connected");
    let mut s = Session {
        name: name.clone(),
        id: live.id,
        ctx: ctx.clone(),
        sink,
        sent_seq: 0,
        sent_link: GENESIS,
        acked: hello.last_seq,
    };
    let result = s.run(hello, stream, live.kick).await;
    // Record progress before leaving the hub, so the status never shows an older ack.
    let bytes = ctx
        .hub
        .sessions()
        .get(&name)
        .filter(|l| l.id == live.id)
        .map_or(0, |l| l.bytes_sent);
    let (index, n, acked) = (ctx.index.clone(), name.clone(), s.acked);
    let _ = tokio::task::spawn_blocking(move || {
        index.with(|c| mirrors::record(c, &n, acked, now_ms(), bytes))
    })
    .await;
    ctx.hub.leave(&name, live.id);
    match result {
        Ok(()) => info!(mirror = %name, "mirror disconnected"),
        Err(Close(code, message)) => {
            warn!(mirror = %name, ?code, %message, "closing mirror connection");
            let _ = send_error(&mut s.sink, code, &message).await;
        }
    }
    let _ = s.sink.close().await;
}

async fn send_error(sink: &mut Sink, code: ErrorCode, message: &str) -> Result<()> {
    let f = encode(&Message::Error {
        code,
        message: message.to_owned(),
    });
    sink.send(Ws::Binary(f.into())).await?;
    Ok(())
}

/// Reads and checks the first frame.
async fn read_hello(
    stream: &mut Stream,
    ctx: &Ctx,
    deadline: tokio::time::Instant,
) -> Result<Hello, Close> {
    let frame = tokio::time::timeout_at(deadline, next_frame(stream, ctx))
        .await
        .map_err(|_| Close(ErrorCode::Protocol, "no hello in time".into()))??
        .ok_or_else(|| Close(ErrorCode::Protocol, "closed before hello".into()))?;
    let Message::Hello(hello) = frame else {
        return Err(Close(
            ErrorCode::Protocol,
            "the first frame must be Hello".into(),
        ));
    };
    let index = ctx.index.clone();
    let (name, secret) = (hello.mirror.clone(), hello.secret.clone());
    let ok = tokio::task::spawn_blocking(move || {
        index.with(|c| mirrors::authenticate(c, &name, &secret))
    })
    .await
    .map_err(|e| Close(ErrorCode::Internal, e.to_string()))?
    .map_err(|e| Close(ErrorCode::Internal, format!("{e:#}")))?;
    if !ok {
        return Err(Close(
            ErrorCode::Unauthorized,
            format!(
                "mirror '{}' is not enrolled here, was revoked, or its secret is wrong",
                hello.mirror
            ),
        ));
    }
    Ok(hello)
}

/// The next decoded frame; `None` when the mirror closed.
async fn next_frame(stream: &mut Stream, ctx: &Ctx) -> Result<Option<Message>, Close> {
    loop {
        let Some(msg) = stream.next().await else {
            return Ok(None);
        };
        let msg = msg.map_err(|e| {
            add(&ctx.hub.metrics.frames_refused_total, 1);
            let code = match e {
                tokio_tungstenite::tungstenite::Error::Capacity(_) => ErrorCode::TooLarge,
                _ => ErrorCode::Malformed,
            };
            Close(code, format!("websocket error: {e}"))
        })?;
        match msg {
            Ws::Binary(b) => {
                return decode(&b, ctx.opts.max_frame).map(Some).map_err(|e| {
                    add(&ctx.hub.metrics.frames_refused_total, 1);
                    Close(e.code(), e.to_string())
                })
            }
            Ws::Close(_) => return Ok(None),
            Ws::Ping(_) | Ws::Pong(_) | Ws::Frame(_) => continue,
            Ws::Text(_) => {
                add(&ctx.hub.metrics.frames_refused_total, 1);
                return Err(Close(
                    ErrorCode::Malformed,
                    "text frames are not spoken here".into(),
                ));
            }
        }
    }
}

struct Session {
    name: String,
    id: u64,
    ctx: Arc<Ctx>,
    sink: Sink,
    /// Every changeset up to here has been sent.
    sent_seq: u64,
    /// The chain link the mirror holds once it applied what was sent.
    sent_link: Link,
    acked: u64,
}

impl Session {
    async fn send(&mut self, frame: Bytes, blob: bool) -> Result<(), Close> {
        self.feed(frame, blob).await?;
        self.flush().await
    }

    /// Sends `first` and the bulk frames waiting behind it, up to [`BULK_FLUSH`] bytes, then
    /// flushes once: a flush a frame was a `write` a small file.
    async fn send_bulk(
        &mut self,
        first: (Bytes, bool),
        more: &mut mpsc::Receiver<(Bytes, bool)>,
    ) -> Result<(), Close> {
        let mut sent = 0;
        let mut next = Some(first);
        while let Some((frame, blob)) = next.take() {
            sent += frame.len();
            self.feed(frame, blob).await?;
            if sent < BULK_FLUSH {
                next = more.try_recv().ok();
            }
        }
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), Close> {
        self.sink
            .flush()
            .await
            .map_err(|e| Close(ErrorCode::Internal, format!("send failed: {e}")))
    }

    /// Queues `frame` in the socket's write buffer (written out as the buffer fills); counts it.
    async fn feed(&mut self, frame: Bytes, blob: bool) -> Result<(), Close> {
        let n = frame.len() as u64;
        self.sink
            .feed(Ws::Binary(frame))
            .await
            .map_err(|e| Close(ErrorCode::Internal, format!("send failed: {e}")))?;
        let m = &self.ctx.hub.metrics;
        add(&m.bytes_sent_total, n);
        if blob {
            add(&m.blob_bytes_sent_total, n);
        }
        self.ctx.hub.update(&self.name, self.id, |l| {
            l.bytes_sent += n;
            if blob {
                l.blob_bytes_sent += n;
            }
        });
        Ok(())
    }

    fn set_mode(&self, mode: &'static str) {
        self.ctx.hub.update(&self.name, self.id, |l| l.mode = mode);
    }

    async fn run(
        &mut self,
        hello: Hello,
        mut stream: Stream,
        kick: Arc<tokio::sync::Notify>,
    ) -> Result<(), Close> {
        let mut live = self.ctx.hub.subscribe();
        let internal = |e: anyhow::Error| Close(ErrorCode::Internal, format!("{e:#}"));
        let (head, horizon) = self.ctx.index.head().map_err(internal)?;
        let same_history = if hello.site != Some(self.ctx.site)
            || hello.last_seq == 0
            || hello.last_seq > head
            || hello.last_seq < horizon
        {
            false
        } else {
            // The mirror's link must be this history's link at its sequence: a mirror of a
            // state restored from an older backup, or of another history, starts over.
            let at = self.ctx.index.link_at(hello.last_seq).map_err(internal)?;
            if at.is_some_and(|l| l != hello.link) {
                warn!(mirror = %self.name, last_seq = hello.last_seq,
                      "mirror's chain link differs from this history's: full resync");
            }
            at == Some(hello.link)
        };
        let mode = if !same_history {
            Mode::Full
        } else if hello.last_seq == head {
            Mode::Live
        } else {
            Mode::CatchUp
        };
        if hello.last_seq > head && hello.site == Some(self.ctx.site) {
            warn!(mirror = %self.name, last_seq = hello.last_seq, head,
                  "mirror is ahead of this distributor (state restored from a backup?): full resync");
        }
        self.send(
            encode(&Message::Welcome(Welcome {
                site: self.ctx.site,
                head_seq: head,
                mode,
                key: self.ctx.signing.signer.key(),
                rotations: self.ctx.signing.rotations.clone(),
            }))
            .into(),
            false,
        )
        .await?;
        self.sent_link = hello.link;
        match mode {
            Mode::Live => self.sent_seq = head,
            Mode::CatchUp => self.snapshot(Some(hello.last_seq)).await?,
            Mode::Full => self.snapshot(None).await?,
        }
        self.set_mode("live");

        let (need_tx, need_rx) = mpsc::channel::<Vec<ContentHash>>(1024);
        let (bulk_tx, mut bulk_rx) = mpsc::channel::<(Bytes, bool)>(2);
        let blob_task = tokio::spawn(blob_task(self.ctx.clone(), need_rx, bulk_tx));
        let _abort = AbortOnDrop(blob_task);

        let interval = self.ctx.opts.ping_interval;
        let mut ping = tokio::time::interval(interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        let mut nonce = 0u64;
        loop {
            tokio::select! {
                biased;
                _ = kick.notified() => {
                    return Err(Close(ErrorCode::Unauthorized,
                        "this mirror was revoked or connected again elsewhere".into()));
                }
                frame = next_frame(&mut stream, &self.ctx) => {
                    heard = Instant::now();
                    let Some(frame) = frame? else { return Ok(()) };
                    self.ctx.hub.update(&self.name, self.id, |l| l.last_seen_ms = now_ms());
                    match frame {
                        Message::Need { hashes } => {
                            if need_tx.try_send(hashes).is_err() {
                                return Err(Close(ErrorCode::Protocol, "too many outstanding Need frames".into()));
                            }
                        }
                        Message::Ack { seq } => {
                            if seq > self.sent_seq || seq < self.acked {
                                return Err(Close(ErrorCode::Protocol, format!(
                                    "ack {seq} outside the window {}..={}", self.acked, self.sent_seq)));
                            }
                            self.acked = seq;
                            self.ctx.hub.update(&self.name, self.id, |l| l.acked = seq);
                            self.ctx.hub.set_error(&self.name, None);
                        }
                        Message::Pong { .. } => {}
                        Message::Error { code, message } => {
                            warn!(mirror = %self.name, ?code, %message, "mirror reported an error");
                            let message: String = message.chars().take(500).collect();
                            self.ctx.hub.set_error(&self.name, Some(message));
                            return Ok(());
                        }
                        other => {
                            add(&self.ctx.hub.metrics.frames_refused_total, 1);
                            return Err(Close(ErrorCode::Protocol,
                                format!("unexpected frame from a mirror: {}", kind(&other))));
                        }
                    }
                }
                cs = live.recv() => match cs {
                    Ok(cs) if cs.seq <= self.sent_seq => {}
                    Ok(cs) if cs.frames.is_empty() => {
                        self.set_mode("catch-up");
                        self.snapshot(Some(self.sent_seq)).await?;
                        self.set_mode("live");
                    }
                    Ok(cs) => {
                        for h in &cs.pushed {
                            // Evicted from the cache already: the mirror will ask for it.
                            if let Some(b) = self.ctx.hub.cache.get(h) {
                                self.send(encode(&Message::Blob((*b).clone())).into(), true).await?;
                            }
                        }
                        for f in cs.frames.iter() {
                            self.send(f.clone(), false).await?;
                        }
                        self.sent_seq = cs.seq;
                        self.sent_link = cs.link;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        add(&self.ctx.hub.metrics.lagged_sessions_total, 1);
                        info!(mirror = %self.name, skipped = n, "mirror fell behind the live queue: catching up from the index");
                        self.set_mode("catch-up");
                        live = self.ctx.hub.subscribe();
                        self.snapshot(Some(self.sent_seq)).await?;
                        self.set_mode("live");
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = ping.tick() => {
                    if heard.elapsed() > interval * 3 {
                        return Err(Close(ErrorCode::Protocol, "no answer to three pings".into()));
                    }
                    nonce += 1;
                    let head_seq = self.ctx.hub.head().0;
                    self.send(encode(&Message::Ping { nonce, head_seq }).into(), false).await?;
                }
                Some(first) = bulk_rx.recv() => {
                    self.send_bulk(first, &mut bulk_rx).await?;
                }
            }
        }
    }

    /// Sends one changeset bringing the mirror from `since` (or from nothing) to the head,
    /// streamed from the index in frames.
    async fn snapshot(&mut self, since: Option<u64>) -> Result<(), Close> {
        let kind = if since.is_some() {
            Mode::CatchUp
        } else {
            Mode::Full
        };
        self.set_mode(if since.is_some() {
            "catch-up"
        } else {
            "full-resync"
        });
        let base = since.unwrap_or(0);
        let prev = if since.is_some() {
            self.sent_link
        } else {
            GENESIS
        };
        let mut digest = OpsDigest::new();
        let (tx, mut rx) = mpsc::channel::<(u64, Vec<tamizdat_protocol::Op>)>(2);
        let index = self.ctx.index.clone();
        let job = tokio::task::spawn_blocking(move || {
            index.snapshot(since, OPS_PER_FRAME, |seq, ops| {
                tx.blocking_send((seq, ops))
                    .map_err(|_| anyhow!("session closed"))
            })
        });
        // Batches are held back by one so the last frame can be marked.
        let mut pending: Option<(u64, Vec<tamizdat_protocol::Op>)> = None;
        while let Some(next) = rx.recv().await {
            if let Some((seq, ops)) = pending.replace(next) {
                digest.add_all(&ops);
                for f in changeset_frames(seq, base, now_ms(), kind, ops, None) {
                    self.send(f, false).await?;
                }
            }
        }
        let (head, next) = job
            .await
            .map_err(|e| Close(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| Close(ErrorCode::Internal, format!("{e:#}")))?;
        let (seq, ops) = pending.unwrap_or((head, Vec::new()));
        digest.add_all(&ops);
        let proof = self
            .ctx
            .signing
            .proof(head, base, kind, prev, digest.finish(), next);
        for f in changeset_frames(seq, base, now_ms(), kind, ops, Some(proof)) {
            self.send(f, false).await?;
        }
        self.sent_seq = head;
        self.sent_link = next;
        Ok(())
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Changeset(_) => "Changeset",
        Message::Need { .. } => "Need",
        Message::Blob(_) => "Blob",
        Message::Chunk(_) => "Chunk",
        Message::Gone { .. } => "Gone",
        Message::Ack { .. } => "Ack",
        Message::Ping { .. } => "Ping",
        Message::Pong { .. } => "Pong",
        Message::Error { .. } => "Error",
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Small files packed on a blocking thread in one go, at most.
const PACK_FILES: usize = 64;
/// Uncompressed bytes packed in one go, at most (one file may pass it alone).
const PACK_BYTES: u64 = 2 << 20;

/// Answers `Need`s: small files in the order asked, large files one chunk at a time between
/// them. Every byte read from the tree is checked against its hash; a file that changed since
/// is answered with `Gone` (its new version is in a later changeset).
///
/// The hashes asked for wait as they arrived, 32 bytes each, in the `Need` frames' own
/// vectors; each is looked up in the index only when its turn comes. A fresh mirror asks for
/// every file at once, and holding a path and size per hash from the start (130 bytes each
/// with the queue's doubling) was 16 MB of the distributor's heap at 100,000 files.
///
/// Small files are looked up, read, checked and compressed in batches on a blocking thread,
/// and the next batch is packed while the previous one is being sent: a full resync of many
/// small files is bound by the slower of packing and the wire, not by their sum plus a thread
/// hop per file. A large file found in a batch waits in `large` for the chunk reader.
async fn blob_task(
    ctx: Arc<Ctx>,
    mut need_rx: mpsc::Receiver<Vec<ContentHash>>,
    bulk_tx: mpsc::Sender<(Bytes, bool)>,
) {
    use std::collections::VecDeque;
    type Packing = tokio::task::JoinHandle<Packed>;
    let mut pending: VecDeque<std::vec::IntoIter<ContentHash>> = VecDeque::new();
    let mut large: VecDeque<(ContentHash, std::path::PathBuf, u64)> = VecDeque::new();
    let mut current: Option<(ContentHash, u64, ChunkReader)> = None;
    let mut ahead: Option<Packing> = None;
    let mut pace = Pace::new(ctx.opts.resync_compression);
    let start_packing = |pending: &mut VecDeque<std::vec::IntoIter<ContentHash>>,
                         compress: bool| {
        let mut batch = Vec::with_capacity(PACK_FILES);
        while batch.len() < PACK_FILES {
            let Some(front) = pending.front_mut() else {
                break;
            };
            batch.extend(front.take(PACK_FILES - batch.len()));
            if front.len() == 0 {
                pending.pop_front();
            }
        }
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || pack_small(&ctx, batch, compress))
    };
    loop {
        // Take every Need that is waiting; block only when there is nothing else to do.
        loop {
            let idle =
                pending.is_empty() && large.is_empty() && current.is_none() && ahead.is_none();
            let hashes = if idle {
                match need_rx.recv().await {
                    Some(h) => h,
                    None => return,
                }
            } else {
                match need_rx.try_recv() {
                    Ok(h) => h,
                    Err(_) => break,
                }
            };
            if !hashes.is_empty() {
                pending.push_back(hashes.into_iter());
            }
        }
        if ahead.is_none() && !pending.is_empty() {
            ahead = Some(start_packing(&mut pending, pace.compress));
        }
        // The frames, and the bytes of content they carry (before compression).
        let (frames, content): (Vec<Bytes>, u64) = if let Some(job) = ahead.take() {
            let Ok(packed) = job.await else { return };
            large.extend(packed.large);
            if !packed.rest.is_empty() {
                pending.push_front(packed.rest.into_iter());
            }
            if !pending.is_empty() {
                ahead = Some(start_packing(&mut pending, pace.compress));
            }
            (packed.frames, packed.content)
        } else if let Some((h, size, mut reader)) = current.take() {
            let r = tokio::task::spawn_blocking(move || {
                let data = reader.next_chunk();
                (reader, data)
            })
            .await;
            let Ok((reader, data)) = r else { return };
            let content = data.as_ref().map_or(0, |raw| raw.len() as u64);
            let frame = match data {
                Ok(raw) => {
                    let offset = reader.offset - raw.len() as u64;
                    let last = reader.offset >= size || raw.is_empty();
                    if last && !reader.matches(&h) {
                        encode(&Message::Gone { hash: h }).into()
                    } else {
                        if !last {
                            current = Some((h, size, reader));
                        }
                        let (encoding, data) = crate::blobs::pack(raw.into(), pace.compress);
                        encode(&Message::Chunk(Chunk {
                            hash: h,
                            offset,
                            encoding,
                            data,
                            last,
                        }))
                        .into()
                    }
                }
                Err(e) => {
                    unreadable(&h, &e);
                    gone(h)
                }
            };
            (vec![frame], content)
        } else if let Some((h, path, size)) = large.pop_front() {
            match ChunkReader::open(&path) {
                Ok(Some(r)) => {
                    current = Some((h, size, r));
                    continue;
                }
                Ok(None) => (vec![gone(h)], 0),
                Err(e) => {
                    unreadable(&path.display(), &e);
                    (vec![gone(h)], 0)
                }
            }
        } else {
            continue;
        };
        let started = Instant::now();
        for frame in frames {
            if bulk_tx.send((frame, true)).await.is_err() {
                return;
            }
        }
        pace.sent(content, started.elapsed());
    }
}

/// Whether what a resync sends is worth compressing: only while content goes out slower than
/// [`Pace::PACK_FROM`]. zstd level 1 packs about 235 MB/s of HTML on one core here, at
/// 2-3.6x; over a link much slower than that, compressing multiplies what it carries. Where
/// content goes faster (a LAN, loopback) the mirror, not the link, sets the pace, and
/// compressing only spends CPU on both ends: raw, a fresh mirror's resync of 10k pages on one
/// 2-core machine took 1.42 s instead of 1.64 s, the distributor's CPU halved (measured with
/// a build that never compressed; `DIST_ARGS="--resync-compression never"` and `always` with
/// `benches/ab-resync.py` repeat it).
///
/// The rate is a batch's content (its bytes before compression: what the mirror gets out of
/// it) over the time its frames took to go into the socket: next to nothing while the socket
/// has room, meaning the packing is the slower stage (raw is the cheaper choice then), the
/// link's or the mirror's pace once it is full. A resync starts compressed, as a mirror
/// abroad would want; the first [`Pace::WARM_UP`] bytes only fill the socket's buffers and
/// decide nothing. An operator may fix the choice instead ([`ResyncCompression`]).
struct Pace {
    compress: bool,
    /// Bytes per second, smoothed over the batches; none until warmed up.
    rate: Option<f64>,
    sent: u64,
    /// Set by the operator: `compress` never changes.
    fixed: bool,
}

impl Pace {
    fn new(mode: ResyncCompression) -> Self {
        Pace {
            compress: mode != ResyncCompression::Never,
            rate: None,
            sent: 0,
            fixed: mode != ResyncCompression::Auto,
        }
    }

    /// Bytes sent before the rate counts: more than the socket buffers on both ends hold.
    const WARM_UP: u64 = 8 << 20;
    /// Compresses again when content goes out slower than this (raw, that is the link's
    /// rate: about 500 Mbit/s).
    const PACK_FROM: f64 = 64e6;
    /// Stops compressing when content goes out faster than this (at the 2x that HTML packs
    /// to, a link of about 500 Mbit/s, or a mirror that takes no more whatever the link).
    const RAW_FROM: f64 = 128e6;
    /// The fastest rate a batch counts as (its frames went into the socket at once): low
    /// enough that a link turning slow brings compression back within a few batches.
    const CEILING: f64 = 256e6;

    fn sent(&mut self, bytes: u64, took: Duration) {
        self.sent += bytes;
        if self.fixed || bytes == 0 || self.sent <= Self::WARM_UP {
            return;
        }
        let secs = took.as_secs_f64();
        let now = if secs > 0.0 {
            (bytes as f64 / secs).min(Self::CEILING)
        } else {
            Self::CEILING
        };
        let rate = match self.rate {
            Some(r) => r + (now - r) / 4.0,
            None => now,
        };
        self.rate = Some(rate);
        let compress = if self.compress {
            rate < Self::RAW_FROM
        } else {
            rate < Self::PACK_FROM
        };
        if compress != self.compress {
            debug!(
                mb_per_s = (rate / 1e6).round(),
                after_mb = self.sent >> 20,
                compress,
                "resync compression"
            );
            self.compress = compress;
        }
    }
}

/// What one packing job made of a batch of hashes.
struct Packed {
    /// A `Blob` for each small file, or `Gone` where no live file has the hash any more.
    frames: Vec<Bytes>,
    /// The large files found, for the chunk reader.
    large: Vec<(ContentHash, std::path::PathBuf, u64)>,
    /// Hashes not looked at because the batch reached [`PACK_BYTES`].
    rest: Vec<ContentHash>,
    /// Bytes of the small files packed, before compression.
    content: u64,
}

/// Looks up each hash in the index and packs the small files (from the cache, or read from
/// the tree and checked), up to [`PACK_BYTES`] of them.
fn pack_small(ctx: &Ctx, batch: Vec<ContentHash>, compress: bool) -> Packed {
    let mut out = Packed {
        frames: Vec::with_capacity(batch.len()),
        large: Vec::new(),
        rest: Vec::new(),
        content: 0,
    };
    // Looked up together; a failed lookup counts as gone, as one by one.
    let found = ctx
        .index
        .locate_all(&batch)
        .unwrap_or_else(|_| vec![None; batch.len()]);
    // First which hashes this batch packs; then its files are read in order, the next ones
    // opened and asked for ahead.
    let mut small: Vec<(ContentHash, std::path::PathBuf, u64)> = Vec::new();
    let mut hashes = batch.into_iter().zip(found);
    while let Some((h, at)) = hashes.next() {
        match at {
            None => out.frames.push(gone(h)),
            Some((p, size)) if size > INLINE_LIMIT => out.large.push((h, p.to_fs(&ctx.root), size)),
            Some((p, size)) => {
                if out.content > 0 && out.content + size > PACK_BYTES {
                    out.rest.push(h);
                    out.rest.extend(hashes.map(|(h, _)| h));
                    break;
                }
                out.content += size;
                match ctx.hub.cache.get(&h) {
                    Some(b) => out.frames.push(encode(&Message::Blob((*b).clone())).into()),
                    None => small.push((h, p.to_fs(&ctx.root), size)),
                }
            }
        }
    }
    // Up to READ_AHEAD files are open and asked for ahead of the one being read.
    let mut opened = std::collections::VecDeque::with_capacity(READ_AHEAD);
    let mut to_open = small.iter().map(|(_, path, _)| path);
    for (h, path, size) in &small {
        while opened.len() < READ_AHEAD {
            let Some(path) = to_open.next() else { break };
            opened.push_back(crate::blobs::open_ahead(path).unwrap_or_else(|e| {
                unreadable(&path.display(), &e);
                None
            }));
        }
        let file = opened.pop_front().flatten();
        let blob = file.and_then(|f| {
            read_small(f, *size, h, compress).unwrap_or_else(|e| {
                unreadable(&path.display(), &e);
                None
            })
        });
        out.frames.push(match blob {
            Some(b) => encode(&Message::Blob(b)).into(),
            None => gone(*h),
        });
    }
    out
}

/// Small files of a resync open and asked for (`POSIX_FADV_WILLNEED`) ahead of the one being
/// read, per session: their reads are in flight together, and a distributor feeding many
/// fresh mirrors at once holds this many descriptors for each, not a whole batch's.
const READ_AHEAD: usize = 16;

/// A file of the tree that is there but cannot be read (its permissions, no descriptors left,
/// the disk) is answered `Gone` like one that changed, so the mirror goes without it until it
/// changes again: said in the log, where it was silent.
/// `what`: the file's path, or the hash of a large file whose chunk failed.
fn unreadable(what: &dyn std::fmt::Display, e: &std::io::Error) {
    warn!(file = %what, "cannot read a file a mirror asked for, answered Gone: {e}");
}

fn gone(hash: ContentHash) -> Bytes {
    encode(&Message::Gone { hash }).into()
}

#[cfg(test)]
mod tests {
    use super::{Pace, ResyncCompression};
    use std::time::Duration;

    const MB: u64 = 1 << 20;

    fn auto() -> Pace {
        Pace::new(ResyncCompression::Auto)
    }

    fn feed(p: &mut Pace, batches: usize, bytes: u64, each: Duration) {
        for _ in 0..batches {
            p.sent(bytes, each);
        }
    }

    #[test]
    fn a_resync_starts_compressed_and_the_warm_up_decides_nothing() {
        let mut p = auto();
        assert!(p.compress);
        feed(&mut p, 4, 2 * MB, Duration::ZERO);
        assert!(
            p.compress,
            "the socket buffers filling at once is no measure of the link"
        );
    }

    #[test]
    fn a_socket_that_always_has_room_turns_compression_off() {
        let mut p = auto();
        feed(&mut p, 8, 2 * MB, Duration::from_micros(50));
        assert!(!p.compress);
    }

    #[test]
    fn a_slow_link_keeps_it_on_and_turns_it_back_on() {
        let mut p = auto();
        // A 100 Mbit/s link abroad: 12 MB/s, 24 MB/s of content compressed.
        feed(&mut p, 20, 2 * MB, Duration::from_millis(85));
        assert!(p.compress);
        let mut p = auto();
        feed(&mut p, 8, 2 * MB, Duration::ZERO);
        assert!(!p.compress);
        feed(&mut p, 10, 2 * MB, Duration::from_millis(170));
        assert!(
            p.compress,
            "raw bytes queued behind a slow link must turn it back on"
        );
    }

    #[test]
    fn an_operator_s_choice_stands_whatever_the_rate() {
        let mut p = Pace::new(ResyncCompression::Always);
        feed(&mut p, 20, 2 * MB, Duration::ZERO);
        assert!(p.compress);
        let mut p = Pace::new(ResyncCompression::Never);
        assert!(!p.compress);
        feed(&mut p, 20, 2 * MB, Duration::from_millis(170));
        assert!(!p.compress);
    }

    #[test]
    fn a_mirror_that_takes_content_fast_gets_it_raw() {
        // The socket full, but 2 MB of content going every 11 ms (180 MB/s, a mirror on a
        // LAN): what sets the pace is the mirror, and compressing would not help it.
        let mut p = auto();
        feed(&mut p, 12, 2 * MB, Duration::from_millis(11));
        assert!(!p.compress);
    }

    #[test]
    fn between_the_thresholds_it_keeps_what_it_had() {
        // 100 MB/s of content: neither slow enough to start compressing nor fast enough to
        // stop.
        let mut p = auto();
        feed(&mut p, 20, 10 * MB, Duration::from_millis(105));
        assert!(p.compress);
        let mut p = auto();
        feed(&mut p, 8, 2 * MB, Duration::ZERO);
        assert!(!p.compress);
        feed(&mut p, 20, 10 * MB, Duration::from_millis(105));
        assert!(!p.compress);
    }
}
