//! The accept loop, one task per connection, limits and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::health::Health;
use crate::respond::Ctx;
use crate::site::Site;

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
    let max = site.opts.max_connections;
    serve(listener, Arc::new(Ctx { site, health, log }), shutdown, max).await;
    Ok(())
}

/// Serves `site` on `threads` dedicated OS threads, each with its own single-threaded tokio
/// runtime accepting from the same listening socket, as nginx's worker processes do. No task
/// ever moves between threads, which on small files answered markedly more requests per second
/// than [`run`] on one work-stealing runtime (see the README's figures).
///
/// Each thread serves up to `max_connections / threads` (rounded up) connections. Setting
/// `shutdown` to `true` (or dropping its sender) shuts every thread down as [`run`] does;
/// [`Threads::join`] waits for them.
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
    let max = site.opts.max_connections.div_ceil(threads);
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let listener = listener.try_clone()?;
        let ctx = Arc::new(Ctx {
            site: site.clone(),
            health: health.clone(),
            log: log.clone(),
        });
        let mut shutdown = shutdown.clone();
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
                    serve(listener, ctx, stop, max).await;
                    Ok(())
                })
            })?;
        handles.push(handle);
    }
    Ok(Threads(handles))
}

/// The threads started by [`spawn_threads`].
#[must_use = "join the threads to know when shutdown has finished"]
pub struct Threads(Vec<std::thread::JoinHandle<io::Result<()>>>);

impl Threads {
    /// Blocks until every thread has stopped; the first error any of them met.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for h in self.0 {
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

async fn serve(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()>,
    max_connections: usize,
) {
    let grace = ctx.site.opts.shutdown_grace;
    let max = max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let limit = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = Duration::from_millis(5);

    'accept: loop {
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break 'accept,
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'accept,
                Some(_) = tasks.join_next() => continue,
                r = listener.accept() => match r {
                    Ok(conn) => {
                        backoff = Duration::from_millis(5);
                        break conn;
                    }
                    Err(e) => {
                        tracing::error!(cause = %e, "failed to accept");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                },
            }
        };
        tasks.spawn(connection_task(
            ctx.clone(),
            stream,
            peer,
            stop_rx.clone(),
            permit,
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
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let opts = &ctx.site.opts;
    let idle = opts.idle_timeout;
    let activity = Arc::new(Activity::default());
    activity.touch();
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move { Ok::<_, Infallible>(ctx.serve(req, peer).await) }
    });
    let mut conn = pin!(http1::Builder::new()
        .timer(TokioTimer::new())
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

/// A TCP stream that records when bytes last moved, for the idle timeout.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
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
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
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
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
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
