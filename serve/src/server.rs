//! The accept loop, one task per connection, limits and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::health::Health;
use crate::respond::Ctx;
use crate::site::Site;
use crate::zero_copy::{self, Sends};

/// Longest pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `site` on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight responses finish (up to [`ServeOptions::shutdown_grace`](crate::ServeOptions)),
/// closes idle keep-alive connections, and returns.
///
/// Runs on whatever runtime it is spawned on. For the most requests per second on small files,
/// see [`spawn_threads`].
///
/// Fails only when the access log cannot be opened.
pub async fn run(
    listener: TcpListener,
    site: Arc<Site>,
    health: Arc<dyn Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let log = AccessLog::open(&site.opts.access_log)?;
    let limit = connection_limit(site.opts.max_connections);
    let ctx = Arc::new(Ctx { site, health, log });
    serve(listener, ctx, shutdown, limit, Place::Alone).await;
    Ok(())
}

/// Serves `site` on `threads` dedicated OS threads, each with its own single-threaded tokio
/// runtime accepting from the same listening socket, as nginx's worker processes do. A
/// connection's task never moves between threads once it runs, which on small files answered
/// markedly more requests per second than [`run`] on one work-stealing runtime (see the
/// README's figures).
///
/// Whichever thread wakes first accepts, so left alone one thread ends up holding most
/// keep-alive connections (measured: 2.6x the CPU of the other under `wrk -c64`), and its
/// clients wait on it while the other core idles. A [`Balancer`] therefore hands each accepted
/// connection to the thread serving the fewest, before its first byte is read.
///
/// `max_connections` holds for all threads together. Setting `shutdown` to `true` (or dropping
/// its sender) shuts every thread down as [`run`] does; [`Threads::join`] waits for them.
pub fn spawn_threads(
    listener: std::net::TcpListener,
    site: Arc<Site>,
    health: Arc<dyn Health>,
    threads: usize,
    shutdown: watch::Receiver<bool>,
) -> io::Result<Threads> {
    let threads = threads.max(1);
    listener.set_nonblocking(true)?;
    let log = AccessLog::open(&site.opts.access_log)?;
    let limit = connection_limit(site.opts.max_connections);
    let (balancer, inboxes) = Balancer::new(threads);
    let mut handles = Vec::with_capacity(threads);
    for (i, inbox) in inboxes.into_iter().enumerate() {
        let listener = listener.try_clone()?;
        let ctx = Arc::new(Ctx {
            site: site.clone(),
            health: health.clone(),
            log: log.clone(),
        });
        let mut shutdown = shutdown.clone();
        let (limit, place) = (limit.clone(), Place::Shared(balancer.clone(), i, inbox));
        let handle = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || -> io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let stop = async move {
                        let _ = shutdown.wait_for(|stop| *stop).await;
                    };
                    serve(listener, ctx, stop, limit, place).await;
                    Ok(())
                })
            })?;
        handles.push(handle);
    }
    Ok(Threads { handles, balancer })
}

/// The threads started by [`spawn_threads`].
#[must_use = "join the threads to know when shutdown has finished"]
pub struct Threads {
    handles: Vec<std::thread::JoinHandle<io::Result<()>>>,
    balancer: Arc<Balancer>,
}

impl Threads {
    /// Connections each thread is serving now (counted from the moment one is accepted).
    pub fn connections(&self) -> Vec<usize> {
        let live = &self.balancer.live;
        live.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }

    /// Blocks until every thread has stopped; the first error any of them met.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for h in self.handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("an HTTP thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

fn connection_limit(max_connections: usize) -> Arc<Semaphore> {
    let max = max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    Arc::new(Semaphore::new(max))
}

/// Where a [`serve`] loop runs: alone on its runtime, or as thread `.1` of [`spawn_threads`],
/// with the inbox through which the other threads hand it connections.
enum Place {
    Alone,
    Shared(Arc<Balancer>, usize, mpsc::UnboundedReceiver<Handoff>),
}

/// An accepted connection on its way to another thread, with the permit it holds.
type Handoff = (std::net::TcpStream, SocketAddr, Held);

/// What a connection holds until it ends: its place under the connection limit and, on a
/// shared listener, its count on its thread.
struct Held {
    _permit: OwnedSemaphorePermit,
    _load: Option<Load>,
}

/// Spreads the connections of [`spawn_threads`] evenly over its threads: the thread that
/// accepts one gives it to the thread serving the fewest (itself on a tie).
struct Balancer {
    live: Vec<AtomicUsize>,
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
}

impl Balancer {
    fn new(threads: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, rxs) = (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
        let live = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        (Arc::new(Balancer { live, inboxes }), rxs)
    }

    /// The thread that should serve the next connection accepted on thread `me`, counted as
    /// serving it from now on.
    fn assign(self: &Arc<Self>, me: usize) -> Load {
        let mut best = me;
        for (i, n) in self.live.iter().enumerate() {
            if n.load(Ordering::Relaxed) < self.live[best].load(Ordering::Relaxed) {
                best = i;
            }
        }
        self.live[best].fetch_add(1, Ordering::Relaxed);
        Load(self.clone(), best)
    }
}

/// One connection counted on thread `.1` of the [`Balancer`] until dropped.
struct Load(Arc<Balancer>, usize);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.live[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The next connection another thread handed over; never, when there are no other threads.
async fn handed_over(place: &mut Place) -> Option<Handoff> {
    match place {
        Place::Shared(_, _, inbox) => inbox.recv().await,
        Place::Alone => std::future::pending().await,
    }
}

async fn serve(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()>,
    limit: Arc<Semaphore>,
    mut place: Place,
) {
    let grace = ctx.site.opts.shutdown_grace;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    // Accept only while holding a permit, so that past the limit connections wait in the
    // kernel's backlog.
    let mut permit = None;

    loop {
        let (stream, peer, held) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next() => continue,
            Some((std, peer, held)) = handed_over(&mut place) => match TcpStream::from_std(std) {
                Ok(stream) => (stream, peer, held),
                Err(e) => {
                    tracing::warn!(%peer, cause = %e, "cannot take over a connection; dropped");
                    continue;
                }
            },
            p = limit.clone().acquire_owned(), if permit.is_none() => {
                permit = Some(p.expect("the semaphore is never closed"));
                continue;
            }
            r = listener.accept(), if permit.is_some() => match r {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let permit = permit.take().expect("accepting only with a permit");
                    match &place {
                        Place::Alone => (stream, peer, Held { _permit: permit, _load: None }),
                        Place::Shared(balancer, me, _) => {
                            let load = balancer.assign(*me);
                            let to = load.1;
                            let held = Held { _permit: permit, _load: Some(load) };
                            if to == *me {
                                (stream, peer, held)
                            } else {
                                // Dropping the handoff (its thread has stopped) closes it.
                                if let Ok(std) = stream.into_std() {
                                    let _ = balancer.inboxes[to].send((std, peer, held));
                                }
                                continue;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(cause = %e, "failed to accept");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        tasks.spawn(connection_task(
            ctx.clone(),
            stream,
            peer,
            stop_rx.clone(),
            held,
        ));
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "shutdown grace period over; dropping connections still busy"
        );
        tasks.shutdown().await;
    }
}

async fn connection_task(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    _held: Held,
) {
    let _ = stream.set_nodelay(true);
    let opts = &ctx.site.opts;
    let idle = opts.idle_timeout;
    let activity = Arc::new(Activity::default());
    activity.touch();
    let sends = opts.zero_copy.then(Sends::default);
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
        zero_copy: sends.clone().map(|s| (s, ctx.site.clone())),
    });
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        let sends = sends.clone();
        async move {
            let mut resp = ctx.serve(req, peer).await;
            if let Some(sends) = &sends {
                resp.body_mut().send_files_with(sends, &ctx.site);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut conn = pin!(http1::Builder::new()
        .timer(TokioTimer::new())
        // Body chunks reach `Tracked` as the very `Bytes` the body yielded, never copied into
        // a buffer of hyper's: `zero_copy.rs` depends on it.
        .writev(true)
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, svc));
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let mut idle_strikes = 0;
    loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, cause = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                if activity.last() + idle > Instant::now() {
                    continue;
                }
                idle_strikes += 1;
                if idle_strikes > 1 {
                    tracing::debug!(%peer, "connection idle too long; dropped");
                    return;
                }
                // First close politely (finishes a response in flight), then for good.
                closing = true;
                conn.as_mut().graceful_shutdown();
                activity.touch();
            }
        }
    }
}

/// When bytes last moved on a connection, in milliseconds since [`epoch`].
#[derive(Default)]
struct Activity(AtomicU64);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Activity {
    fn touch(&self) {
        let ms = epoch().elapsed().as_millis() as u64;
        self.0.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        epoch() + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// A TCP stream that records when bytes last moved, for the idle timeout, and sends the
/// stand-ins of `zero_copy.rs` with sendfile (counted in the site's stats).
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    zero_copy: Option<(Sends, Arc<Site>)>,
}

impl Tracked {
    fn poll_send_file(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let Some((sends, site)) = &self.zero_copy else {
            // Only a connection with `Sends` gets stand-ins.
            return Poll::Ready(Err(io::Error::other("a stand-in on a copying connection")));
        };
        let r = zero_copy::poll_send(&self.inner, sends, cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            site.stats.sent_by_sendfile(n as u64);
        }
        r
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = if zero_copy::is_stand_in(buf) {
            self.poll_send_file(cx, buf)
        } else {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Bytes up to the first stand-in are written as they are, with `MSG_MORE` since the
        // file's bytes follow; a stand-in at the front is sent with sendfile. Either way the
        // caller comes back for the rest.
        let r = match bufs.iter().position(|b| zero_copy::is_stand_in(b)) {
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            Some(0) => self.poll_send_file(cx, &bufs[0]),
            Some(i) => poll_write_more(&self.inner, cx, &bufs[..i]),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Writes `bufs` (a response's headers, say) with `MSG_MORE`, for bytes that sendfile sends
/// right after: the kernel holds a short last segment back for them instead of pushing it
/// alone. Without it a 5 MB response left as a ~300-byte segment of headers, then the body:
/// the mirror answered 631 requests/s against 772 with it (`wrk -t2 -c64`, medians of 3
/// rounds, `benches/runs/2026-12-07-vm7/ab-msg-more.txt`). A held segment goes out with the
/// next write, or as soon as ACKs come back if that write waits for room.
fn poll_write_more(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        let r = stream.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::net::sendmsg(
                stream,
                bufs,
                &mut rustix::net::SendAncillaryBuffer::default(),
                rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL,
            )
            .map_err(Into::into)
        });
        match r {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if zero_copy::try_again(&e) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
