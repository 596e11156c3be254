//! Serves a directory with tamizdat-serve, for benchmarks and trying it out by hand:
//!
//! ```text
//! cargo run --release -p tamizdat-serve --example serve-dir -- DIR [ADDR] [THREADS]
//! ```
//!
//! ADDR defaults to 127.0.0.1:8080 and THREADS to the number of cores. By default it uses
//! [`tamizdat_serve::spawn_threads`] (one single-threaded runtime per thread, nginx's worker
//! model); with `TZ_RUNTIME=shared` it runs [`tamizdat_serve::run`] on one multi-threaded
//! runtime with THREADS workers instead. The health endpoint always reports a connected mirror
//! with no lag. Stops on SIGINT or SIGTERM.

use std::sync::Arc;

use tamizdat_serve::{Health, HealthReport, ServeOptions, Site};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args.next().expect("usage: serve-dir DIR [ADDR] [THREADS]");
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let threads = args
        .next()
        .map(|t| t.parse().expect("THREADS is a number"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let shared = std::env::var("TZ_RUNTIME").as_deref() == Ok("shared");
    let site = Site::new(root.clone().into(), ServeOptions::default());
    let health: Arc<dyn Health> = Arc::new(|| HealthReport {
        applied_seq: 0,
        head_seq: 0,
        lag_seconds: 0.0,
        connected: true,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if shared { threads } else { 1 })
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let stopped = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        if shared {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            eprintln!(
                "serving {root} on http://{} (shared runtime)",
                listener.local_addr()?
            );
            return tamizdat_serve::run(listener, site, health, stopped).await;
        }
        let listener = std::net::TcpListener::bind(&addr)?;
        eprintln!(
            "serving {root} on http://{} ({threads} threads)",
            listener.local_addr()?
        );
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let threads = tamizdat_serve::spawn_threads(listener, site, health, threads, stop_rx)?;
        stopped.await;
        let _ = stop.send(true);
        tokio::task::spawn_blocking(move || threads.join())
            .await
            .expect("join")
    })
}
