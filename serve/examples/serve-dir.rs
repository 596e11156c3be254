//! Serves a directory with tamizdat-serve, for benchmarks and trying it out by hand:
//!
//! ```text
//! cargo run --release -p tamizdat-serve --example serve-dir -- DIR [ADDR] [THREADS]
//! ```
//!
//! ADDR defaults to 127.0.0.1:8080 and THREADS (runtime workers) to the number of cores. The
//! health endpoint always reports a connected mirror with no lag. Stops on SIGINT or SIGTERM.

use std::sync::Arc;

use tamizdat_serve::{HealthReport, ServeOptions, Site};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args.next().expect("usage: serve-dir DIR [ADDR] [THREADS]");
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let threads = args
        .next()
        .map(|t| t.parse().expect("THREADS is a number"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("serving {root} on http://{}", listener.local_addr()?);
        let site = Site::new(root.into(), ServeOptions::default());
        let health = Arc::new(|| HealthReport {
            applied_seq: 0,
            head_seq: 0,
            lag_seconds: 0.0,
            connected: true,
        });
        let mut term = signal(SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        tamizdat_serve::run(listener, site, health, shutdown).await
    })
}
