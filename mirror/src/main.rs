//! `tamizdat-mirror run`: parse the command line, set up logging, then call the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tamizdat_mirror::{client::ClientOptions, tls::Tls, MirrorOptions};
use tamizdat_protocol::JoinToken;
use tamizdat_serve::daemon::shutdown_signal;
use tamizdat_serve::{AccessLogTarget, CacheControlRules, IpNet, ServeOptions};

#[derive(Parser)]
#[command(
    version,
    about = "A tamizdat mirror: follows the newsroom, serves the site"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Follow a distributor and serve the site.
    Run(Run),
}

#[derive(clap::Args)]
struct Run {
    /// The join token from `tamizdat-distributor mirror add` (or @FILE to read it from a file).
    #[arg(long, env = "TAMIZDAT_JOIN")]
    join: String,
    /// Where the site is kept and served from.
    #[arg(long, env = "TAMIZDAT_ROOT")]
    root: PathBuf,
    /// Where the mirror keeps its state (outside the root).
    #[arg(long, env = "TAMIZDAT_STATE")]
    state: PathBuf,
    /// HTTP address to serve the site on.
    #[arg(long, env = "TAMIZDAT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Connect here instead of the URL in the join token (a relay, or a tunnel).
    #[arg(long, env = "TAMIZDAT_UPSTREAM")]
    upstream: Option<String>,
    /// Seconds of lag after which the health endpoint answers 503.
    #[arg(long, env = "TAMIZDAT_MAX_LAG", default_value_t = 60.0)]
    max_lag: f64,
    /// Access log: a file path, or '-' for standard output. Off when not given.
    #[arg(long, env = "TAMIZDAT_ACCESS_LOG")]
    access_log: Option<String>,
    /// A proxy (address or CIDR) whose X-Forwarded-For is believed; repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "TAMIZDAT_TRUSTED_PROXY",
        value_delimiter = ',',
        value_parser = tamizdat_serve::parse_ip_net
    )]
    trusted_proxy: Vec<IpNet>,
    /// Cache-Control by glob on the site path, GLOB=VALUE, tried before the defaults;
    /// repeatable (e.g. 'media/*=public, max-age=86400').
    #[arg(long = "cache-control")]
    cache_control: Vec<String>,
    /// Most HTTP connections served at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// HTTP server threads (default: one per core; see the README).
    #[arg(long, env = "TAMIZDAT_HTTP_THREADS")]
    http_threads: Option<usize>,
    /// Seconds a client has to send a request's headers (slow clients are dropped).
    #[arg(long, default_value_t = 10.0)]
    header_read_timeout: f64,
    /// Seconds after which a connection where nothing moved is closed.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Memory for small hot files, in MiB (0 turns the cache off).
    #[arg(long, env = "TAMIZDAT_HOT_CACHE_MB", default_value_t = 32)]
    hot_cache_mb: usize,
    /// Copy file bodies through a buffer instead of sending them from the page cache with
    /// sendfile (for comparing the two; sendfile is used only for chunks the cache holds).
    #[arg(long)]
    no_sendfile: bool,
    /// An HTTP thread gives up its core after every this many responses, so that whatever
    /// waits for the core runs sooner (0: never; for comparing).
    #[arg(long, default_value_t = 32)]
    yield_every: u32,
    /// Trust only the CA certificate(s) in this PEM file for a wss:// upstream (a pinned CA).
    /// Default: the public web's roots (Mozilla's, built in; the host's store is not used).
    #[arg(long, env = "TAMIZDAT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Largest frame accepted from upstream, in bytes (at most the default, 16 MiB); a larger
    /// one is refused with a TooLarge error and the connection closed.
    #[arg(long, default_value_t = tamizdat_protocol::MAX_FRAME_SIZE)]
    max_frame: usize,
    /// Most files one changeset may carry (a full resync lists every file of the site).
    #[arg(long, default_value_t = tamizdat_mirror::apply::Limits::default().max_ops)]
    max_changeset_files: usize,
    /// Longest path accepted from upstream, in bytes (at most the protocol's 4096).
    #[arg(long, default_value_t = tamizdat_protocol::path::MAX_PATH_LEN as u16,
          value_parser = clap::value_parser!(u16).range(1..=tamizdat_protocol::path::MAX_PATH_LEN as i64))]
    max_path_len: u16,
    /// Deepest path accepted from upstream, in components (at most the protocol's 64).
    #[arg(long, default_value_t = tamizdat_protocol::path::MAX_DEPTH as u16,
          value_parser = clap::value_parser!(u16).range(1..=tamizdat_protocol::path::MAX_DEPTH as i64))]
    max_path_depth: u16,
    /// Longest wait between reconnection attempts, in seconds.
    #[arg(long, default_value_t = 5.0)]
    max_backoff: f64,
    /// Log format: human (coloured on a terminal) or json (one object per line).
    #[arg(long, env = "TAMIZDAT_LOG_FORMAT", default_value = "human", value_parser = ["human", "pretty", "json"])]
    log_format: String,
    /// A TOML file of flags (keys are the long flag names, e.g. `max-lag = 30`); flags given
    /// on the command line win. See deploy/mirror.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address; off when not given. Keep it
    /// on loopback or a management network: the --listen port is public, this one need not be.
    #[arg(long, env = "TAMIZDAT_METRICS")]
    metrics: Option<SocketAddr>,
}

/// One HTTP thread per core, as nginx's `worker_processes auto`. Sessions before kept a core
/// for the engine, but on 2 cores that idles half the serving capacity for little. Under a
/// saturating `wrk` load an edit was served in p50 9.64 ms with two threads against 8.93 with
/// one, while two threads answered 14 % more requests (`benches/edit-under-load.py`). On vm7,
/// one thread trailed nginx's rate on the mix (0.85-0.96x) and two beat it (1.02-1.26x). On
/// small pages, one thread's p99 is the better of the two; two threads' one-page p99 was level
/// with nginx's (BENCHMARKS.md, runs 28 and 29).
fn default_http_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> ExitCode {
    // Two malloc arenas, not eight per core: see the distributor's main. glibc only: musl's
    // allocator (the static build) has no per-thread arenas and no mallopt.
    // SAFETY: mallopt only adjusts the allocator's tuning; called before any other thread.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = match tamizdat_serve::daemon::args_with_config(std::env::args_os()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Cmd::Run(r) = Cli::parse_from(args).cmd;
    tamizdat_serve::daemon::init_logging(&r.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(r)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(r: Run) -> Result<()> {
    let raw = match r.join.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("Failed to read the join token from {file}"))?,
        None => r.join.clone(),
    };
    let token = JoinToken::decode(&raw).context("Bad --join token")?;
    let tls = match &r.ca_file {
        Some(f) => Tls::pinned(f)?,
        None => Tls::web_roots(),
    };
    let access_log = match r.access_log.as_deref() {
        None => AccessLogTarget::Off,
        Some("-") => AccessLogTarget::Stdout,
        Some(p) => AccessLogTarget::File(p.into()),
    };
    let rules = r
        .cache_control
        .iter()
        .map(|rule| {
            rule.split_once('=')
                .with_context(|| format!("--cache-control wants GLOB=VALUE, got {rule:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let serve = ServeOptions {
        lag_threshold: Duration::from_secs_f64(r.max_lag),
        cache_control: CacheControlRules::new(rules)?,
        access_log,
        trusted_proxies: r.trusted_proxy,
        max_connections: r.max_connections,
        header_read_timeout: Duration::from_secs_f64(r.header_read_timeout),
        idle_timeout: Duration::from_secs_f64(r.idle_timeout),
        hot_cache_bytes: r.hot_cache_mb << 20,
        zero_copy: !r.no_sendfile,
        yield_every: r.yield_every,
        ..ServeOptions::default()
    };
    let listener = std::net::TcpListener::bind(r.listen)
        .with_context(|| format!("Failed to listen on {}", r.listen))?;
    println!("http listening on {}", listener.local_addr()?);
    let metrics = match r.metrics {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("Failed to listen on {addr} for metrics"))?;
            println!("metrics listening on {}", l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    let opts = MirrorOptions {
        token,
        upstream: r.upstream,
        root: r.root,
        state: r.state,
        serve,
        http_threads: r.http_threads.unwrap_or_else(default_http_threads),
        client: ClientOptions {
            max_frame: r.max_frame,
            backoff_max: Duration::from_secs_f64(r.max_backoff),
            tls,
            ..ClientOptions::default()
        },
        limits: tamizdat_mirror::apply::Limits {
            max_ops: r.max_changeset_files,
            max_path_len: r.max_path_len.into(),
            max_path_depth: r.max_path_depth.into(),
        },
        metrics,
    };
    tamizdat_mirror::run(opts, listener, shutdown_signal()).await
}
