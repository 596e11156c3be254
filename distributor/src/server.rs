//! Start-up and the accept loop: index the tree, watch it, serve mirrors and the admin API.

use crate::hub::Hub;
use crate::ignore::Ignore;
use crate::index::Index;
use crate::journal::{Batch, Journal};
use crate::session::{self, Ctx, SessionOptions};
use crate::tls::{self, Tls};
use crate::watch::{watch, Batcher};
use crate::{admin, mirrors};
use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

/// Everything `serve` needs; every field is a flag of the binary.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub root: PathBuf,
    pub state: PathBuf,
    pub settle: Duration,
    pub default_ignores: bool,
    pub ignore: Vec<String>,
    pub session: SessionOptions,
    pub live_queue: usize,
    pub max_connections: usize,
    /// Tombstones kept, in changes.
    pub retention: u64,
    pub cache_bytes: usize,
    /// Changesets with more ops are announced, and mirrors catch up from the index.
    pub max_inline_ops: usize,
    /// TLS on the stream (wss://); plain ws:// when `None`.
    pub tls: Option<Tls>,
}

/// Indexes the tree, then serves mirrors on `stream` and the admin API on `admin` until
/// `shutdown` resolves.
pub async fn run(
    opts: ServeOptions,
    stream: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let root = std::fs::canonicalize(&opts.root)
        .with_context(|| format!("Failed to open the site root {}", opts.root.display()))?;
    let index = Arc::new(Index::open(&opts.state)?);
    let site = index.site()?;
    let (keys, made) = crate::keys::load_or_generate(&opts.state)?;
    if made {
        info!(fingerprint = %keys.key().fingerprint(), "made the site's signing key (back up the state directory)");
    } else {
        info!(fingerprint = %keys.key().fingerprint(), "signing with the site key");
    }
    let signing = Arc::new(crate::keys::Signing::new(site, keys));
    let ignore = Ignore::new(opts.default_ignores, &opts.ignore).context("Bad --ignore pattern")?;

    // Watch before indexing: whatever changes during the walk is queued, not lost.
    let (watcher, events) = watch(&root)?;
    let (head, _) = index.head()?;
    let head_at = index.produced_after(head.saturating_sub(1))?.unwrap_or(0);
    let hub = Hub::new((head, head_at), opts.live_queue, opts.cache_bytes);
    let mut journal = Journal::new(
        root.clone(),
        index.writer()?,
        ignore,
        hub.clone(),
        opts.retention,
        opts.max_inline_ops,
        signing.clone(),
    );
    let t = Instant::now();
    let hashed_before = hub.metrics.hashed_bytes_total.get();
    let seq = tokio::task::block_in_place(|| {
        journal.apply(Batch {
            rescan: true,
            ..Batch::default()
        })
    })
    .context("Failed to index the tree")?;
    let hashed = hub.metrics.hashed_bytes_total.get() - hashed_before;
    info!(
        root = %root.display(),
        head = seq.unwrap_or(head),
        hashed_bytes = hashed,
        ms = t.elapsed().as_millis() as u64,
        "indexed the tree"
    );

    std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || {
            let _watcher = watcher;
            let mut batcher = Batcher::new(events, opts.settle);
            let mut retry = false;
            while let Some(mut batch) = batcher.next_batch() {
                batch.rescan |= retry;
                if batch.is_empty() {
                    continue;
                }
                match journal.apply(batch) {
                    Ok(_) => retry = false,
                    Err(e) => {
                        error!(cause = %format!("{e:#}"), "failed to record a changeset; will reconcile");
                        retry = true;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })?;

    let ctx = Arc::new(Ctx {
        root,
        hub: hub.clone(),
        index: index.clone(),
        site,
        signing,
        opts: opts.session.clone(),
    });
    let admin_app = admin::router(hub.clone(), index.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, admin_app).await {
            error!(cause = %e, "admin server failed");
        }
    });
    tokio::spawn(bookkeeping(hub.clone(), index.clone()));

    let limit = Arc::new(Semaphore::new(opts.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (sock, addr) = tokio::select! {
            _ = &mut shutdown => break,
            r = stream.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(%addr, "connection limit reached; refusing");
            crate::metrics::add(&hub.metrics.connections_refused_total, 1);
            continue;
        };
        let ctx = ctx.clone();
        let tls = opts.tls.clone();
        // One deadline for everything before Hello: TLS, the WebSocket upgrade, Hello.
        let deadline = tokio::time::Instant::now() + ctx.opts.hello_timeout;
        tokio::spawn(async move {
            match tls::accept(sock, tls.as_ref(), ctx.opts.hello_timeout).await {
                Ok(conn) => session::handle(conn, addr, ctx, deadline).await,
                Err(e) => {
                    crate::metrics::add(&ctx.hub.metrics.connections_refused_total, 1);
                    debug!(%addr, cause = %e, "TLS handshake failed");
                }
            }
            drop(permit);
        });
    }
    info!("shutting down");
    persist(&hub, &index);
    Ok(())
}

/// Every second: record what sessions reached; four times a second: drop revoked mirrors.
async fn bookkeeping(hub: Arc<Hub>, index: Arc<Index>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        let (hub, index) = (hub.clone(), index.clone());
        let save = n % 4 == 0;
        let _ = tokio::task::spawn_blocking(move || {
            if save {
                persist(&hub, &index);
            }
            let Ok(enrolled) = index.with(mirrors::list) else {
                return;
            };
            for (name, _) in hub.sessions() {
                let ok = enrolled.iter().any(|m| m.name == name && !m.revoked);
                if !ok && hub.kick(&name) {
                    info!(mirror = %name, "revoked: connection dropped");
                }
            }
        })
        .await;
    }
}

fn persist(hub: &Hub, index: &Index) {
    for (name, live) in hub.sessions() {
        let r = index.with(|c| mirrors::record(c, &name, live.acked, live.last_seen_ms, 0));
        if let Err(e) = r {
            warn!(cause = %format!("{e:#}"), "failed to record mirror progress");
        }
    }
}

/// Binds a listener, with a clear error naming the address.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("Failed to listen for {what} on {addr}"))
}
