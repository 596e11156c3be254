//! `tamizdat-distributor`: parse the command line, set up logging, then call the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tamizdat_distributor::index::Index;
use tamizdat_distributor::server::{self, ServeOptions};
use tamizdat_distributor::session::{ResyncCompression, SessionOptions};
use tamizdat_distributor::tls::Tls;
use tamizdat_distributor::{keys, lag, mirrors, promote};
use tamizdat_protocol::JoinToken;
use tamizdat_serve::daemon::shutdown_signal;

#[derive(Parser)]
#[command(
    version,
    about = "Watches a site tree and pushes its changes to tamizdat mirrors"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Index and watch the tree, stream changes to mirrors, serve the admin API.
    Serve(Box<Serve>),
    /// Enrol, list and revoke mirrors (works while `serve` runs).
    Mirror {
        #[command(subcommand)]
        cmd: MirrorCmd,
    },
    /// Start a new origin from a mirror's copy of the site (when the origin is lost): copy its
    /// root without the mirror's own .tamizdat* files into a new root, create a new state.
    Promote {
        /// The root of a mirror (stopped) that holds the site.
        #[arg(long)]
        from_mirror_root: PathBuf,
        /// The new origin's tree (must be new or empty).
        #[arg(long)]
        root: PathBuf,
        /// The new origin's state (must be new or empty).
        #[arg(long)]
        state: PathBuf,
    },
    /// Show every mirror's lag; exit 1 when one is over --max-lag, 2 when the distributor
    /// cannot be asked.
    Lag {
        #[arg(long, env = "TAMIZDAT_ADMIN", default_value = "http://127.0.0.1:7301")]
        admin: String,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds of lag (or of silence, for a disconnected mirror) over which to exit 1.
        #[arg(long)]
        max_lag: Option<f64>,
        /// Redraw every --interval seconds until Ctrl-C, like `top` (with --json: one JSON
        /// document per line); exits with the code of the last look.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with --watch.
        #[arg(long, default_value_t = 2.0, value_parser = parse_interval)]
        interval: f64,
    },
    /// Make the site's signing key (`serve` makes one on first start too); prints its
    /// fingerprint. Refuses when the state already holds a key.
    Keygen {
        #[arg(long, env = "TAMIZDAT_STATE")]
        state: PathBuf,
    },
    /// Replace the site key with a new one signed by the old; mirrors follow on their next
    /// connection, without re-enrolment. Run it while `serve` is stopped, then start `serve`.
    RotateKey {
        #[arg(long, env = "TAMIZDAT_STATE")]
        state: PathBuf,
    },
}

#[derive(clap::Args)]
struct Serve {
    /// The site tree to watch.
    #[arg(long, env = "TAMIZDAT_ROOT")]
    root: PathBuf,
    /// Where the index and enrolments live (keep it outside the root).
    #[arg(long, env = "TAMIZDAT_STATE")]
    state: PathBuf,
    /// Where mirrors connect.
    #[arg(long, env = "TAMIZDAT_LISTEN", default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Admin API (status, metrics): keep it on loopback or a management network.
    #[arg(long, env = "TAMIZDAT_ADMIN_LISTEN", default_value = "127.0.0.1:7301")]
    admin: SocketAddr,
    /// The URL mirrors use to reach --listen, put into join tokens (saved in the state).
    /// Default: ws://LISTEN, or wss://LISTEN with --tls-cert.
    #[arg(long, env = "TAMIZDAT_PUBLIC_URL")]
    public_url: Option<String>,
    /// PEM certificate chain (leaf first) for TLS on --listen: mirrors then connect with
    /// wss://. Needs --tls-key. Without both, the stream is plain ws:// (loopback, or behind a
    /// TLS-terminating proxy).
    #[arg(long, env = "TAMIZDAT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TAMIZDAT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Settle window in milliseconds: files arriving within it share a changeset.
    #[arg(long, env = "TAMIZDAT_SETTLE_MS", default_value_t = 1.0)]
    settle_ms: f64,
    /// Extra ignore pattern for a file or directory name (glob; repeatable).
    #[arg(long = "ignore", env = "TAMIZDAT_IGNORE", value_delimiter = ',')]
    ignore: Vec<String>,
    /// Do not ignore the default temp-file patterns (.tmp-*, *.swp, *~, .#*, ...).
    #[arg(long)]
    no_default_ignores: bool,
    /// Largest frame accepted from a mirror, in bytes (at most the default, 16 MiB); a larger
    /// one is refused with a TooLarge error and the connection closed.
    #[arg(long, default_value_t = tamizdat_protocol::MAX_FRAME_SIZE)]
    max_frame: usize,
    /// Seconds between pings; a mirror silent for three is dropped.
    #[arg(long, default_value_t = 5.0)]
    ping_secs: f64,
    /// Seconds a new connection has for each step before `Hello` (TLS handshake, WebSocket
    /// handshake, the `Hello` itself); one that stalls is dropped and frees its slot.
    #[arg(long, default_value_t = 10.0)]
    hello_timeout_secs: f64,
    /// Changesets queued per mirror before it is switched to catch-up.
    #[arg(long, default_value_t = 256)]
    live_queue: usize,
    /// Most stream connections at once, counting those not yet authenticated; more are
    /// refused (closed at once).
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Changes of tombstones kept; a mirror away longer gets a full resync.
    #[arg(long, default_value_t = 1_000_000)]
    retention: u64,
    /// Changesets with more ops than this are not streamed inline; mirrors catch up to them
    /// from the index, in frames, so memory stays flat when a whole tree is copied in.
    #[arg(long, default_value_t = tamizdat_distributor::journal::MAX_INLINE_OPS)]
    max_inline_ops: usize,
    /// Compress the bytes of catch-ups and full resyncs: auto (while content goes out slower
    /// than about 64-128 MB/s, as over a link abroad; raw on a LAN or loopback, where zstd
    /// would be the slowest stage), always (a link billed by the byte), or never.
    #[arg(long, value_enum, default_value_t = ResyncCompression::Auto)]
    resync_compression: ResyncCompression,
    /// Log format: human (coloured on a terminal) or json (one object per line).
    #[arg(long, env = "TAMIZDAT_LOG_FORMAT", default_value = "human", value_parser = ["human", "pretty", "json"])]
    log_format: String,
    /// A TOML file of flags (keys are the long flag names, e.g. `max-lag = 30`); flags given
    /// on the command line win. See deploy/distributor.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum MirrorCmd {
    /// Enrol a mirror and print its join token.
    Add {
        name: String,
        #[arg(long, env = "TAMIZDAT_STATE")]
        state: PathBuf,
        /// Overrides the public URL saved by `serve`.
        #[arg(long)]
        public_url: Option<String>,
    },
    /// List enrolled mirrors.
    List {
        #[arg(long, env = "TAMIZDAT_STATE")]
        state: PathBuf,
    },
    /// Revoke a mirror: a connected one is dropped at once and refused afterwards.
    Revoke {
        name: String,
        #[arg(long, env = "TAMIZDAT_STATE")]
        state: PathBuf,
    },
}

/// Packed bytes of recently changed small files kept for the sessions to push. A live edit
/// needs them for the few milliseconds until every session has sent its changeset; a
/// 200-file burst is about 1.6 MB packed, so part of a burst is read again from the page
/// cache. At 8 MiB the cache filled through the harness's edits and bursts and the
/// distributor peaked at 48.8-50.7 MB at 100k files; at 2 MiB, 33.9-35.7 MB; at 1 MiB (with
/// the journal's SQLite cache at 512 KiB), 27.0-27.6 MB, the bursts' median within the
/// spread of the runs before (BENCHMARKS.md runs 12 and 16).
const BLOB_CACHE_BYTES: usize = 1 << 20;

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err("a number of seconds from 0.1 to 3600".into()),
    }
}

fn main() -> ExitCode {
    // Two malloc arenas, not eight per core: the threads here allocate briefly and glibc's
    // per-thread arenas would otherwise keep tens of megabytes resident.
    // SAFETY: mallopt only adjusts the allocator's tuning; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = match tamizdat_serve::daemon::args_with_config(std::env::args_os()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Serve(s) => {
            tamizdat_serve::daemon::init_logging(&s.log_format);
            serve(*s).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Mirror { cmd } => mirror(cmd),
        Cmd::Keygen { state } => {
            let keys = keys::generate(&state)?;
            eprintln!(
                "made the site key in {}; keep a backup of it with the rest of the state",
                state.join(keys::KEY_FILE).display()
            );
            println!("{}", keys.key().fingerprint());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::RotateKey { state } => {
            let site = Index::open(&state)?.site()?;
            let keys = keys::rotate(&state, site)?;
            eprintln!(
                "rotated the site key ({} rotations so far); restart `serve` to sign with it",
                keys.rotations.len()
            );
            println!("{}", keys.key().fingerprint());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Promote {
            from_mirror_root,
            root,
            state,
        } => {
            let c = promote::promote(&from_mirror_root, &root, &state)?;
            eprintln!(
                "copied {} files ({} bytes) from {} to {}; new state in {}\n\
                 next: tamizdat-distributor serve --root {} --state {} --public-url URL\n\
                 then, for each mirror: tamizdat-distributor mirror add NAME --state {} (a new join token)",
                c.files,
                c.bytes,
                from_mirror_root.display(),
                root.display(),
                state.display(),
                root.display(),
                state.display(),
                state.display(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lag {
            admin,
            json,
            max_lag,
            watch,
            interval,
        } => Ok(ExitCode::from(if watch {
            let every = Duration::from_secs_f64(interval);
            lag::watch(&admin, json, max_lag, every, shutdown_signal()).await
        } else {
            lag::once(&admin, json, max_lag).await
        })),
    }
}

async fn serve(s: Serve) -> Result<()> {
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
        _ => None,
    };
    let index = Index::open(&s.state)?;
    let stream = server::bind(s.listen, "mirrors").await?;
    let admin = server::bind(s.admin, "the admin API").await?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = s
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{}", stream.local_addr().unwrap_or(s.listen)));
    index.with(|c| {
        c.execute(
            "INSERT INTO meta(key, value) VALUES ('public_url', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [&url],
        )?;
        Ok(())
    })?;
    drop(index);
    // Printed on stdout so scripts and tests can find ports chosen with :0.
    println!("stream listening on {}", stream.local_addr()?);
    println!("admin listening on {}", admin.local_addr()?);
    if !stream.local_addr()?.ip().is_loopback() && tls.is_none() {
        tracing::warn!(listen = %stream.local_addr()?,
            "mirrors connect over unencrypted ws:// on a non-loopback address; use --tls-cert and --tls-key, or a TLS-terminating proxy in front");
    }
    let opts = ServeOptions {
        root: s.root,
        state: s.state,
        settle: Duration::from_secs_f64(s.settle_ms / 1000.0),
        default_ignores: !s.no_default_ignores,
        ignore: s.ignore,
        session: SessionOptions {
            max_frame: s.max_frame,
            ping_interval: Duration::from_secs_f64(s.ping_secs),
            hello_timeout: Duration::from_secs_f64(s.hello_timeout_secs),
            resync_compression: s.resync_compression,
        },
        live_queue: s.live_queue,
        max_connections: s.max_connections,
        retention: s.retention,
        cache_bytes: BLOB_CACHE_BYTES,
        max_inline_ops: s.max_inline_ops,
        tls,
    };
    server::run(opts, stream, admin, shutdown_signal()).await
}

fn mirror(cmd: MirrorCmd) -> Result<ExitCode> {
    match cmd {
        MirrorCmd::Add {
            name,
            state,
            public_url,
        } => {
            let index = Index::open(&state)?;
            let site = index.site()?;
            let (keys, _) = keys::load_or_generate(&state)?;
            let url = match public_url {
                Some(u) => u,
                None => index
                    .with(|c| {
                        Ok(c.query_row(
                            "SELECT value FROM meta WHERE key = 'public_url'",
                            [],
                            |r| r.get::<_, String>(0),
                        )?)
                    })
                    .context(
                        "no public URL known: start `serve` once with --public-url, or pass --public-url",
                    )?,
            };
            let secret = index.with(|c| mirrors::add(c, &name))?;
            let token = JoinToken {
                url,
                name: name.clone(),
                secret,
                site,
                key: keys.key().fingerprint(),
            };
            eprintln!("enrolled mirror '{name}'; give it this join token (keep it secret):");
            println!("{}", token.encode());
            Ok(ExitCode::SUCCESS)
        }
        MirrorCmd::List { state } => {
            let index = Index::open(&state)?;
            println!("{:<20} {:<8} {:>10}", "MIRROR", "STATE", "ACKED");
            for m in index.with(mirrors::list)? {
                let st = if m.revoked { "revoked" } else { "enrolled" };
                println!("{:<20} {:<8} {:>10}", m.name, st, m.acked_seq);
            }
            Ok(ExitCode::SUCCESS)
        }
        MirrorCmd::Revoke { name, state } => {
            let index = Index::open(&state)?;
            if index.with(|c| mirrors::revoke(c, &name))? {
                eprintln!("revoked mirror '{name}'");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: no enrolled mirror named '{name}'");
                Ok(ExitCode::from(1))
            }
        }
    }
}
