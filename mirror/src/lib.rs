//! # tamizdat-mirror
//!
//! A volunteer's mirror: connects out to a distributor, applies each changeset atomically
//! (stage, verify, fsync, rename, record, ack), and serves the tree over HTTP with
//! `tamizdat-serve`. Catches up after downtime with only what changed.
//!
//! # Layout
//! - [`client`]: the connection upstream, reconnecting with backoff and jitter.
//! - [`tls`]: reaching upstream over ws:// or wss:// (rustls, ring; pinned CA or web roots).
//! - [`apply`]: the engine: assemble changesets, fetch missing bytes, publish atomically.
//! - [`stage`]: the staging area on the served file system; verification of received bytes.
//! - [`fsops`]: file-system steps that refuse to pass through symlinks.
//! - [`store`]: durable state (what is served, the applied sequence, the pending changeset).
//! - [`status`]: freshness, for the health endpoint.
//! - [`metrics`]: `GET /metrics` on its own listener.

pub mod apply;
pub mod client;
pub mod fsops;
pub mod metrics;
pub mod stage;
pub mod status;
pub mod store;
pub mod tls;

use anyhow::{Context, Result};
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use tamizdat_protocol::JoinToken;
use tamizdat_serve::{ServeOptions, Site};

pub struct MirrorOptions {
    pub token: JoinToken,
    /// Overrides the URL in the token.
    pub upstream: Option<String>,
    pub root: PathBuf,
    pub state: PathBuf,
    pub serve: ServeOptions,
    /// HTTP server threads, each with its own single-threaded runtime.
    pub http_threads: usize,
    pub client: client::ClientOptions,
    pub limits: apply::Limits,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics: Option<TcpListener>,
}

/// Runs the mirror: engine thread, upstream client, HTTP server, until `shutdown`.
pub async fn run(
    opts: MirrorOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let http_threads = opts.http_threads;
    std::fs::create_dir_all(&opts.root)
        .with_context(|| format!("Failed to create the root {}", opts.root.display()))?;
    let root = std::fs::canonicalize(&opts.root)?;
    let state = opts.state.clone();
    if std::fs::canonicalize(&state).is_ok_and(|s| s.starts_with(&root)) {
        anyhow::bail!("--state must not be inside --root: it would be served");
    }
    let store = store::Store::open(&state)?;
    let status = Arc::new(status::Status::default());
    let site = Site::new(root.clone(), opts.serve);
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(64);
    let engine = {
        let (root, site, status) = (root.clone(), site.clone(), status.clone());
        let rt = tokio::runtime::Handle::current();
        let policy = apply::Policy {
            anchor: opts.token.key,
            limits: opts.limits,
        };
        tokio::task::spawn_blocking(move || {
            apply::Engine::new(root, store, site, status, rt, out_tx, policy)
        })
        .await??
    };
    std::thread::Builder::new()
        .name("apply".into())
        .spawn(move || engine.run(in_rx))?;
    let upstream = opts.upstream.unwrap_or_else(|| opts.token.url.clone());
    tokio::spawn(client::run(
        opts.token,
        upstream,
        opts.client,
        status.clone(),
        in_tx,
        out_rx,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if let Some(l) = opts.metrics {
        let registry = metrics::registry(status.clone(), site.clone());
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(l, registry, stop).await {
                tracing::error!(cause = %format!("{e:#}"), "metrics server failed");
            }
        });
    }
    let threads = tamizdat_serve::spawn_threads(listener, site, status, http_threads, stop_rx)
        .context("Failed to start the HTTP server")?;
    tokio::task::spawn_blocking(move || threads.join())
        .await?
        .context("HTTP server failed")?;
    Ok(())
}
