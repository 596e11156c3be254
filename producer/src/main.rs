//! The `tamizdat-producer` command: parse the CLI, set up logging, hand over to the library.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tamizdat_producer::cms::{self, Limits, DEFAULT_MAX_BODY_BYTES};
use tamizdat_producer::http::{self, HookOptions};
use tamizdat_producer::{frontmatter, watch, Report, Site, SiteOptions};

/// mimalloc instead of glibc's malloc: malloc and free were 28% of the CPU time of rendering
/// a publish's pages at 100k articles (`perf`), and a publish renders about 16 pages.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tamizdat-producer",
    version,
    about = "Renders a news site to static files at save time"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "TAMIZDAT_LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP hook (POST/DELETE /v1/publish, POST /v1/media).
    Serve {
        #[command(flatten)]
        site: SiteArgs,
        /// Address to listen on (port 0 picks a free port; the address is printed).
        #[arg(
            long,
            env = "TAMIZDAT_PRODUCER_LISTEN",
            default_value = "127.0.0.1:7400"
        )]
        listen: SocketAddr,
        /// File holding the bearer token. Without it (and without TAMIZDAT_PRODUCER_TOKEN),
        /// a random token is created in STATE/token.
        #[arg(long, env = "TAMIZDAT_PRODUCER_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Largest upload on /v1/media, in bytes (default: no limit).
        #[arg(long, env = "TAMIZDAT_MAX_MEDIA_BYTES")]
        max_media_bytes: Option<u64>,
        /// Largest request body on /v1/publish, in bytes; larger ones get 413 unread
        /// [default: 2 × --max-body-bytes + 256 KiB].
        #[arg(long, env = "TAMIZDAT_MAX_REQUEST_BYTES")]
        max_request_bytes: Option<usize>,
        /// Publishes and unpublishes per second per token, sustained; past it, 429 with
        /// Retry-After. Fractions allowed (0.5 = one every 2 s).
        #[arg(long, env = "TAMIZDAT_MAX_PUBLISHES_PER_SEC", default_value_t = http::DEFAULT_MAX_PUBLISHES_PER_SEC, value_parser = parse_rate)]
        max_publishes_per_sec: f64,
        /// Publishes per token accepted at once before the rate applies
        /// [default: the rate, rounded up].
        #[arg(long, env = "TAMIZDAT_PUBLISH_BURST", value_parser = clap::value_parser!(u32).range(1..))]
        publish_burst: Option<u32>,
    },
    /// Publish a document: a .json file, or Markdown with TOML (+++) or YAML (---) front matter.
    Publish {
        file: PathBuf,
        #[command(flatten)]
        site: SiteArgs,
    },
    /// Unpublish a document and remove it from every listing.
    Unpublish {
        slug: String,
        #[command(flatten)]
        site: SiteArgs,
    },
    /// Rebuild pages from the store (after a theme or option change).
    Render {
        /// Rebuild every page.
        #[arg(long, required = true)]
        all: bool,
        #[command(flatten)]
        site: SiteArgs,
    },
    /// Publish every Markdown file in DIR, then republish each one when it is saved.
    Watch {
        dir: PathBuf,
        #[command(flatten)]
        site: SiteArgs,
    },
}

#[derive(Args)]
struct SiteArgs {
    /// Output tree (the directory the distributor watches).
    #[arg(long, env = "TAMIZDAT_OUT")]
    out: PathBuf,
    /// State directory (SQLite store, writer lock, generated token).
    #[arg(long, env = "TAMIZDAT_STATE")]
    state: PathBuf,
    /// Theme directory; files it lacks come from the built-in theme.
    #[arg(long, env = "TAMIZDAT_THEME")]
    theme: Option<PathBuf>,
    /// Public base URL of the site, for feeds, sitemaps and canonical links.
    #[arg(long, env = "TAMIZDAT_SITE_URL", default_value = "http://localhost")]
    site_url: String,
    /// Site name shown in the masthead and feeds.
    #[arg(long, env = "TAMIZDAT_SITE_TITLE", default_value = "tamizdat news")]
    site_title: String,
    /// One-line description for the home page's meta tags.
    #[arg(
        long,
        env = "TAMIZDAT_SITE_DESCRIPTION",
        default_value = "Independent news, mirrored."
    )]
    site_description: String,
    /// Language of the site (the html lang attribute).
    #[arg(long, env = "TAMIZDAT_LANG", default_value = "en")]
    lang: String,
    /// Trust document bodies: do not sanitise their HTML (fields are still escaped).
    #[arg(long, env = "TAMIZDAT_NO_SANITIZE")]
    no_sanitize: bool,
    /// Do not write .br, .zst and .gz variants beside text files.
    #[arg(long, env = "TAMIZDAT_NO_PRECOMPRESS")]
    no_precompress: bool,
    /// Largest document body accepted, in bytes.
    #[arg(long, env = "TAMIZDAT_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

impl SiteArgs {
    fn options(&self) -> SiteOptions {
        SiteOptions {
            out: self.out.clone(),
            state: self.state.clone(),
            theme: self.theme.clone(),
            site_url: self.site_url.clone(),
            site_title: self.site_title.clone(),
            site_description: self.site_description.clone(),
            lang: self.lang.clone(),
            sanitize: !self.no_sanitize,
            precompress: !self.no_precompress,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn print_report(r: &Report) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(r)?);
    Ok(())
}

fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Serve {
            site,
            listen,
            token_file,
            max_media_bytes,
            max_request_bytes,
            max_publishes_per_sec,
            publish_burst,
        } => {
            let token = read_token(token_file.as_deref(), &site.state)?;
            let limits = site.limits();
            let opts = HookOptions {
                token,
                limits,
                max_request_bytes: max_request_bytes.unwrap_or(limits.max_document_bytes()),
                max_publishes_per_sec,
                publish_burst: publish_burst
                    .unwrap_or_else(|| max_publishes_per_sec.ceil().clamp(1.0, 1e6) as u32),
                max_media_bytes,
            };
            // Long-running and idle between publishes (a one-shot command is not).
            tamizdat_producer::keep_freed_memory();
            let site = Site::open(site.options())?;
            let rt = tokio::runtime::Runtime::new().context("Failed to start the runtime")?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("Failed to listen on {listen}"))?;
                let addr = listener.local_addr()?;
                println!("listening on http://{addr}");
                tracing::info!(%addr, "producer hook listening");
                http::run(listener, site, opts, shutdown_signal())
                    .await
                    .context("HTTP server failed")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Publish { file, site } => {
            let value = frontmatter::read_document_file(&file, &site.limits())?;
            let doc = match cms::parse_document(value, &site.limits()) {
                Ok(d) => d,
                Err(errors) => {
                    for e in errors {
                        eprintln!("{}: {e}", file.display());
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            let report = Site::open(site.options())?.publish(doc)?;
            print_report(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Unpublish { slug, site } => {
            if let Err(m) = cms::check_slug(&slug) {
                bail!("slug {slug:?}: {m}");
            }
            let report = Site::open(site.options())?.unpublish(&slug)?;
            print_report(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Render { all: _, site } => {
            let mut site = Site::open(site.options())?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} pages ({per_sec}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            let report = site.render_all(&|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            println!(
                "rendered the site: {} files written, {} unchanged, {} removed in {:.0} ms",
                report.written.len(),
                report.unchanged.len(),
                report.removed.len(),
                report.elapsed_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Watch { dir, site } => {
            let limits = site.limits();
            tamizdat_producer::keep_freed_memory();
            let mut site = Site::open(site.options())?;
            let (_keep, stop) = std::sync::mpsc::channel();
            watch::run(&mut site, &dir, limits, stop)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn read_token(file: Option<&std::path::Path>, state: &std::path::Path) -> anyhow::Result<String> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("Failed to read the token file {}", f.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            bail!("token file {} is empty", f.display());
        }
        return Ok(t);
    }
    if let Ok(t) = std::env::var("TAMIZDAT_PRODUCER_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let path = state.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    std::fs::create_dir_all(state)
        .with_context(|| format!("Failed to create state dir {}", state.display()))?;
    let token: String = {
        use rand::Rng;
        let bytes: [u8; 24] = rand::thread_rng().gen();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    write_private(&path, &token)?;
    tracing::warn!(file = %path.display(), "no token given; generated one");
    eprintln!("generated a bearer token in {}", path.display());
    Ok(token)
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("Failed to create {}", path.display()))?;
    writeln!(f, "{contents}")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
