//! tamizdat-bench: runs the real release binaries of tamizdat on a generated news site, on
//! loopback, next to the anchors (rsync daemon + `rsync -a`, lsyncd, nginx) in the same run,
//! and writes `BENCHMARKS.md` plus the raw samples.
//!
//! ```text
//! benches/install-anchors.sh                                  # rsync lsyncd nginx wrk hugo
//! cargo run --release -p tamizdat-bench -- --quick            # < 2 minutes, 2k pages
//! cargo run --release -p tamizdat-bench                       # full: 10k and 100k pages
//! cargo run --release -p tamizdat-bench -- gen DIR --articles 1000   # just the site
//! ```

mod gen;
mod procs;
mod producer;
mod report;
mod serving;
mod signing;
mod tz;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use gen::{Site, Spec};
use procs::{cpu_secs, http_get, status_kb};
use report::{f, mb, ratio, summary, Table};
use serving::median;
use tz::{find_tool, hardlink_copy, rsync_run, Dist, Lsyncd, Mirror, RsyncD, RsyncRun};

/// The producer binary's allocator (mimalloc), so the publishes this process times run as
/// they do there. In the producer: malloc and free were 28% of the CPU time of rendering
/// a publish's pages at 100k articles (`perf`), and a publish renders about 16 pages.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "tamizdat benchmark harness: tamizdat vs rsync, lsyncd and nginx in one run")]
struct Cli {
    /// Small and fast (2k pages, 1 and 2 mirrors, 40 edits): under two minutes.
    #[arg(long)]
    quick: bool,
    /// Article counts to run at (default 10000,100000; --quick 2000).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Mirror (and lsyncd target) counts (default 1,5; --quick 1,2).
    #[arg(long, value_delimiter = ',')]
    mirrors: Option<Vec<usize>>,
    /// Measured edits per latency figure (default 200; --quick 40), after 10 warm-ups.
    #[arg(long)]
    edits: Option<usize>,
    /// Changes made while a mirror is offline (default 1000; --quick 200).
    #[arg(long)]
    catchup: Option<usize>,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Directory for raw.csv (default benches/runs/DATE-HOST).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Work directory (default a temp dir, removed at the end).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Do not run `cargo build --release` for the distributor and mirror first.
    #[arg(long)]
    no_build: bool,
    /// Leave the work directory in place.
    #[arg(long)]
    keep: bool,
    /// Skip these scenarios: lsyncd, serving, producer.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Articles of the producer's site (scenario 8; default 100000, --quick 2000).
    #[arg(long)]
    producer_articles: Option<usize>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate the synthetic site only.
    Gen {
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        articles: usize,
        #[arg(long, default_value_t = 10)]
        media: usize,
        #[arg(long, default_value_t = 5 << 20)]
        media_max: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Everything measured in a run.
struct Run {
    cfg: Config,
    tables: BTreeMap<String, Table>,
    raw: Vec<String>,
    notes: Vec<String>,
    /// (when, compiler processes seen, load average) samples of the machine's other work.
    busy: Vec<(String, usize, String)>,
    anchors: BTreeMap<&'static str, Option<PathBuf>>,
    /// The checkout's commit when the run started (it may move while a long run goes on).
    source: String,
}

struct Config {
    quick: bool,
    sizes: Vec<usize>,
    mirrors: Vec<usize>,
    edits: usize,
    warmup: usize,
    bursts: usize,
    catchup: usize,
    wrk_secs: u32,
    /// Wall-time budget of one latency figure; it stops early (and says so) past it.
    budget: Duration,
    seed: u64,
    media: usize,
    media_max: u64,
    skip: Vec<String>,
    bin: PathBuf,
}

/// A place that is checked for a file's new bytes: a mirror over HTTP (ETag and body), or an
/// lsyncd target on disk (its bytes).
enum Target {
    Http(std::net::SocketAddr),
    Disk(PathBuf),
}

impl Target {
    fn serves(&self, rel: &str, hash: &blake3::Hash) -> bool {
        match self {
            Target::Http(a) => match http_get(*a, &format!("/{rel}")) {
                Ok(r) => {
                    r.status == 200
                        && r.header("etag") == Some(&format!("\"{}\"", hash.to_hex()))
                        && blake3::hash(&r.body) == *hash
                }
                Err(_) => false,
            },
            Target::Disk(root) => {
                std::fs::read(root.join(rel)).is_ok_and(|b| blake3::hash(&b) == *hash)
            }
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::Gen {
        dir,
        articles,
        media,
        media_max,
        seed,
    }) = cli.cmd
    {
        std::fs::create_dir_all(&dir)?;
        let s = gen::generate(
            &dir,
            &Spec {
                articles,
                media,
                media_max,
                seed,
            },
        )?;
        println!(
            "{} files ({} articles, {} listings, {} media), {} MB in {}",
            s.files,
            s.articles.len(),
            s.listings.len(),
            s.media.len(),
            mb(s.bytes as f64),
            dir.display()
        );
        return Ok(());
    }
    procs::install_cleanup();
    let quick = cli.quick;
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.to_path_buf();
    let cfg = Config {
        quick,
        sizes: cli.sizes.unwrap_or(if quick {
            vec![2000]
        } else {
            vec![10_000, 100_000]
        }),
        mirrors: cli
            .mirrors
            .unwrap_or(if quick { vec![1, 2] } else { vec![1, 5] }),
        edits: cli.edits.unwrap_or(if quick { 40 } else { 200 }),
        warmup: if quick { 5 } else { 10 },
        bursts: if quick { 2 } else { 5 },
        catchup: cli.catchup.unwrap_or(if quick { 200 } else { 1000 }),
        wrk_secs: if quick { 2 } else { 5 },
        budget: Duration::from_secs(if quick { 30 } else { 240 }),
        seed: cli.seed,
        media: if quick { 4 } else { 12 },
        media_max: if quick { 2 << 20 } else { 50 << 20 },
        skip: cli.skip,
        bin: bin.clone(),
    };
    let mut build_note = None;
    if !cli.no_build {
        eprintln!("==> cargo build --release -p tamizdat-distributor -p tamizdat-mirror");
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "tamizdat-distributor",
                "-p",
                "tamizdat-mirror",
                "-p",
                "tamizdat-producer",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()?;
        if !st.success() {
            // the work tree is shared: another session's half-done edit can break the build
            if bin.join("tamizdat-distributor").is_file() && bin.join("tamizdat-mirror").is_file() {
                eprintln!("!! building the current work tree failed; measuring the binaries already in {}", bin.display());
                build_note = Some(format!(
                    "`cargo build --release` of the work tree failed at the start of this run (another \
                     session's edit in progress); the binaries already in `{}` were measured instead.",
                    bin.display()
                ));
            } else {
                bail!("building the release binaries failed");
            }
        }
    }
    for b in ["tamizdat-distributor", "tamizdat-mirror"] {
        if !bin.join(b).is_file() {
            bail!(
                "no {b} next to {} (build with --release into the same target dir)",
                exe.display()
            );
        }
    }
    let mut anchors = BTreeMap::new();
    for a in ["rsync", "lsyncd", "nginx", "wrk", "hugo"] {
        let p = find_tool(a);
        match &p {
            Some(p) => eprintln!("anchor {a}: {}", p.display()),
            None => eprintln!(
                "anchor {a}: NOT FOUND — run benches/install-anchors.sh; its figures will say so"
            ),
        }
        anchors.insert(a, p);
    }
    let work = match &cli.work {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            tempfile::Builder::new()
                .prefix("tamizdat-bench.")
                .tempdir_in(w)?
        }
        None => tempfile::Builder::new()
            .prefix("tamizdat-bench.")
            .tempdir()?,
    };
    let started = now_utc();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut run = Run {
        cfg,
        tables: BTreeMap::new(),
        raw: Vec::new(),
        notes: Vec::new(),
        busy: Vec::new(),
        anchors,
        source: git_state(),
    };
    run.notes.extend(build_note);
    signing::measure(&mut run);
    let t_all = Instant::now();
    run.busy.push(sample_machine("start", work.path()));
    let sizes = run.cfg.sizes.clone();
    let mut failed = None;
    // Every size's trees are deleted at the end of the run, not after the size: ext4 on this
    // VM made files and directories 5-50x slower for minutes after a large delete (it passes
    // over recently freed inodes), and the next size's initial sync and the producer's
    // publishes paid for it (run 22: "making a directory with a file in it" 28 µs at the
    // start, 283 µs after the 10k trees went, 1,449 µs after the 100k ones). It takes the
    // disk space of all sizes at once: about 20 GB at 10k + 100k with the producer.
    let mut to_delete = Vec::new();
    for &n in &sizes {
        let dir = work.path().join(format!("n{n}"));
        std::fs::create_dir_all(&dir)?;
        eprintln!("==> {n} articles in {}", dir.display());
        if let Err(e) = run_size(&mut run, n, &dir) {
            eprintln!("!! scenario set at {n} articles failed: {e:#}");
            run.notes
                .push(format!("The run at {n} articles stopped early: {e:#}"));
            failed = Some(e);
        }
        procs::kill_all();
        run.busy
            .push(sample_machine(&format!("after {n} articles"), work.path()));
        write_report(
            &run,
            &cli.out,
            &cli.runs,
            &started,
            &load,
            &command,
            t_all.elapsed(),
        )?;
        eprintln!("    report written to {}", cli.out.display());
        to_delete.push(dir);
    }
    // The producer runs last: deleting its 740k-file trees keeps this disk (online discard)
    // busy for minutes, which slowed every spine figure measured after it (run 8).
    if run.cfg.skip.iter().any(|s| s == "producer") {
        run.notes
            .push("Producer (scenario 8) skipped (--skip producer).".into());
    } else {
        let n = cli
            .producer_articles
            .unwrap_or(if quick { 2000 } else { 100_000 });
        let dir = work.path().join("producer");
        eprintln!("==> producer: {n} articles in {}", dir.display());
        let publishes = run.cfg.edits;
        if let Err(e) = producer::scenario(&mut run, &dir, n, publishes) {
            eprintln!("!! producer scenario failed: {e:#}");
            run.notes
                .push(format!("The producer scenario (8) stopped early: {e:#}"));
        }
        to_delete.push(dir);
        run.busy
            .push(sample_machine("after the producer", work.path()));
        write_report(
            &run,
            &cli.out,
            &cli.runs,
            &started,
            &load,
            &command,
            t_all.elapsed(),
        )?;
    }
    if !cli.keep {
        for dir in to_delete {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if cli.keep {
        let p = work.keep();
        eprintln!("work directory kept: {}", p.display());
    }
    eprintln!(
        "==> wrote {} in {:.0} s",
        cli.out.display(),
        t_all.elapsed().as_secs_f64()
    );
    print!("{}", std::fs::read_to_string(&cli.out)?);
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(())
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn table<'a>(run: &'a mut Run, key: &str, title: &str, header: &[&str]) -> &'a mut Table {
    run.tables
        .entry(key.to_owned())
        .or_insert_with(|| Table::new(title, header))
}

fn missing(run: &Run, a: &str) -> Option<String> {
    if run.anchors.get(a).is_some_and(|p| p.is_some()) {
        None
    } else {
        Some(format!(
            "not run: `{a}` not found (install it with benches/install-anchors.sh)"
        ))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Everything at one site size.
fn run_size(run: &mut Run, n: usize, dir: &Path) -> Result<()> {
    let spec = Spec {
        articles: n,
        media: run.cfg.media,
        media_max: run.cfg.media_max,
        seed: run.cfg.seed,
    };
    let src = dir.join("site");
    let t0 = Instant::now();
    let mut site = gen::generate(&src, &spec)?;
    // the serving scenario's 5 MB file
    let mut rng = StdRng::seed_from_u64(run.cfg.seed ^ 5);
    let big: Vec<u8> = (0..5 << 20).map(|_| rng.gen()).collect();
    std::fs::write(src.join("media/bench-5mb.bin"), &big)?;
    site.files += 1;
    site.bytes += big.len() as u64;
    let files = site.files;
    flush_disk();
    eprintln!(
        "    generated {files} files, {} MB in {:.1} s",
        mb(site.bytes as f64),
        t0.elapsed().as_secs_f64()
    );
    let label = format!("{files} files ({} MB)", mb(site.bytes as f64));
    let bin = run.cfg.bin.clone();
    let mut rng = StdRng::seed_from_u64(run.cfg.seed.wrapping_mul(31) ^ n as u64);
    let mut version = 1u64;

    // --- 3. initial sync: INITIAL_ROUNDS rounds, turn about: rsync into an empty module, then
    // a new tamizdat mirror into an empty root. m1 is the first round's mirror; the others
    // stop (revoked) after their round. No target is deleted before the size ends: ext4 here
    // made files several times slower for minutes after a large delete (run 21).
    let rsync = run.anchors["rsync"].clone();
    let rsync_dir = dir.join("rsync");
    let rsync_target = |round: usize| match round {
        0 => dir.join("rsync-target"),
        r => dir.join(format!("rsync-target-{}", r + 1)),
    };
    let module = |round: usize| match round {
        0 => "t".to_owned(),
        r => format!("t{}", r + 1),
    };
    let rsyncd = match &rsync {
        Some(r) => Some(RsyncD::start(
            r,
            &rsync_dir,
            &(0..INITIAL_ROUNDS + COLD_ROUNDS)
                .map(|i| (module(i), rsync_target(i)))
                .collect::<Vec<_>>(),
        )?),
        None => None,
    };
    let dist = Dist::start(&bin, dir, &src)?;
    let index_time = dist.ready;
    eprintln!(
        "    distributor indexed and ready in {:.2} s",
        index_time.as_secs_f64()
    );
    let mut mirrors: Vec<Mirror> = Vec::new();
    let mut rs_inits = Vec::new();
    let mut tz_inits = Vec::new();
    let mut init_bytes = 0;
    let (mut sync_dist_hwm, mut sync_m1_hwm) = (0, 0);
    // The last COLD_ROUNDS rounds read the site from the disk: its pages are dropped from the
    // page cache before each side starts, as on an origin whose site does not fit in memory.
    let (mut rs_colds, mut tz_colds) = (Vec::new(), Vec::new());
    for round in 0..INITIAL_ROUNDS + COLD_ROUNDS {
        let cold = round >= INITIAL_ROUNDS;
        // What the distributor's index or the last round left dirty is neither side's to
        // write back: flushed before rsync, whose own writeback (timed apart, in `rsync_run`)
        // then leaves the disk clean for the mirror too.
        flush_disk();
        if let (Some(r), Some(d)) = (&rsync, &rsyncd) {
            if cold {
                evict(&src);
            }
            let rs = rsync_run(r, &src, &d.url(&module(round)))?;
            eprintln!(
                "    rsync initial sync{}: {:?}",
                if cold { " (cold)" } else { "" },
                rs.wall
            );
            if cold {
                rs_colds.push(rs)
            } else {
                rs_inits.push(rs)
            }
        }
        let name = match round {
            0 => "m1".to_owned(),
            r => format!("s{}", r + 1),
        };
        let tok = dist.add_mirror(&name)?;
        if cold {
            evict(&src);
        }
        let t0 = Instant::now();
        let mut m = Mirror::start(&bin, dir, &name, &tok, &dir.join(format!("{name}-root")))?;
        dist.wait_synced(std::slice::from_ref(&name), Duration::from_secs(1800))?;
        let took = t0.elapsed();
        let got = count_files(&m.root);
        if got != files {
            bail!("{name} holds {got} files after its initial sync, the site has {files}");
        }
        eprintln!(
            "    tamizdat initial sync{}: {:.2} s",
            if cold { " (cold)" } else { "" },
            took.as_secs_f64()
        );
        if cold {
            tz_colds.push(took)
        } else {
            tz_inits.push(took)
        }
        if round == 0 {
            // Peaks through the start-up index and the initial sync alone: before the edits,
            // whose repeated polls put pages in the mirror's hot cache (32 MiB by default).
            sync_dist_hwm = status_kb(dist.proc.pid(), "VmHWM");
            sync_m1_hwm = status_kb(m.proc.pid(), "VmHWM");
            init_bytes = dist.mirror("m1")?["bytes_sent"].as_u64().unwrap_or(0);
            mirrors.push(m);
        } else {
            m.stop();
            dist.revoke_mirror(&name)?;
        }
    }
    let median_rsync = |runs: &[RsyncRun]| {
        (!runs.is_empty()).then(|| RsyncRun {
            wall: Duration::from_secs_f64(median(
                runs.iter().map(|r| r.wall.as_secs_f64()).collect(),
            )),
            writeback: Duration::from_secs_f64(median(
                runs.iter().map(|r| r.writeback.as_secs_f64()).collect(),
            )),
            bytes: runs[0].bytes,
            transferred: runs[0].transferred,
        })
    };
    {
        let miss = missing(run, "rsync").unwrap_or_default();
        let t = table(
            run,
            "3-initial",
            "Full initial sync of an empty mirror vs `rsync -a` to an rsync daemon",
            &[
                "site",
                "tamizdat (s)",
                "tamizdat bytes sent",
                "rsync -a (s)",
                "its writeback: `sync` after it (s)",
                "rsync bytes",
                "ratio (rsync/tamizdat time)",
                "ratio (rsync + writeback / tamizdat)",
            ],
        );
        let rows = [
            (label.clone(), &tz_inits, &rs_inits),
            (format!("{label}, read from the disk"), &tz_colds, &rs_colds),
        ];
        for (site, tz, rs) in rows {
            let tz = median(tz.iter().map(|d| d.as_secs_f64()).collect());
            let rs = median_rsync(rs);
            let (rw, wb) = match &rs {
                Some(r) => (r.wall.as_secs_f64(), r.writeback.as_secs_f64()),
                None => (f64::NAN, f64::NAN),
            };
            t.row(vec![
                site,
                f(tz),
                format!("{} MB", mb(init_bytes as f64)),
                rs.as_ref().map_or(miss.clone(), |_| f(rw)),
                rs.as_ref().map_or("–".into(), |_| f(wb)),
                rs.as_ref()
                    .map_or("–".into(), |r| format!("{} MB", mb(r.bytes as f64))),
                ratio(rw, tz),
                ratio(rw + wb, tz),
            ]);
        }
        t.notes = vec![format!(
            "Medians of {INITIAL_ROUNDS} rounds, turn about: rsync into an empty module, `sync`, then a new \
             tamizdat mirror (every sample is in the raw CSV); the bytes are the first round's. \
             tamizdat: from starting `tamizdat-mirror run` with an empty root until the \
             distributor's status shows it connected with acked_seq = head_seq (the file count is checked \
             afterwards); it does not include the distributor's own start-up index, which is reported in the \
             no-change table. rsync: `rsync -a --delete --stats --sockopts=TCP_NODELAY SRC/ rsync://127.0.0.1:PORT/t/` \
             (daemon with TCP_NODELAY too) into an empty module, wall time, bytes = total sent + received. \
             tamizdat's mirror makes every file durable before it acks; rsync never fsyncs, so the `sync` \
             right after it (timed apart) is when its files reach the disk. Without that `sync` the mirror, \
             which flushes with `syncfs`, would pay for rsync's dirty pages: at 10k pages the initial sync \
             took 3.1-4.2 s that way in runs 16-18, and 1.8-2.2 s with nothing dirty left \
             (`benches/ab-resync.py`). Both sides create every file and directory, so both slow down \
             when the file system does: \"making a directory with a file in it\" in the machine sample \
             above is several times its usual 20-40 µs for minutes after a large tree was deleted \
             nearby (ext4 without a journal passes over recently freed inodes; BENCHMARKS.md, run 21). \
             \"Read from the disk\": {COLD_ROUNDS} more rounds the same way, each side started right after \
             the site's files were dropped from the page cache (`POSIX_FADV_DONTNEED` on each), as on an \
             origin whose site does not fit in memory."
        )];
    }
    if rs_inits.is_empty() {
        run.notes.push(missing(run, "rsync").unwrap());
    }
    for (kind, tz, rs) in [
        ("initial_sync", &tz_inits, &rs_inits),
        ("initial_sync_cold", &tz_colds, &rs_colds),
    ] {
        for (round, took) in tz.iter().enumerate() {
            run.raw.push(format!(
                "{kind},{files},1,tamizdat,{round},{:.3}",
                ms(*took)
            ));
        }
        for (round, r) in rs.iter().enumerate() {
            run.raw
                .push(format!("{kind},{files},1,rsync,{round},{:.3}", ms(r.wall)));
            run.raw.push(format!(
                "{kind},{files},1,rsync_writeback,{round},{:.3}",
                ms(r.writeback)
            ));
        }
    }

    // --- 1 and 1b with tamizdat at each mirror count
    let counts = run.cfg.mirrors.clone();
    for &k in &counts {
        while mirrors.len() < k {
            let name = format!("m{}", mirrors.len() + 1);
            let tok = dist.add_mirror(&name)?;
            let root = dir.join(format!("{name}-root"));
            // seeded with hard links to the source: the mirror's full resync by manifest
            // comparison keeps what it already holds
            hardlink_copy(&src, &root)?;
            mirrors.push(Mirror::start(&bin, dir, &name, &tok, &root)?);
        }
        let names: Vec<String> = mirrors.iter().map(|m| m.name.clone()).collect();
        let t0 = Instant::now();
        dist.wait_synced(&names, Duration::from_secs(1800))?;
        eprintln!(
            "    {k} mirrors in sync ({:.1} s)",
            t0.elapsed().as_secs_f64()
        );
        flush_disk();
        let targets: Vec<Target> = mirrors.iter().map(|m| Target::Http(m.http)).collect();
        let mut pids: Vec<i32> = vec![dist.proc.pid()];
        pids.extend(mirrors.iter().map(|m| m.proc.pid()));
        let lat = edit_latency(
            run,
            &spec,
            &mut site,
            &targets,
            &pids,
            false,
            &mut rng,
            &mut version,
        )?;
        eprintln!(
            "    tamizdat edit latency, {k} mirrors: p50 {:.2} ms",
            summary(&lat.samples)[0]
        );
        for (i, s) in lat.samples.iter().enumerate() {
            run.raw
                .push(format!("edit_latency,{files},{k},tamizdat,{i},{s:.3}"));
        }
        run_latency_row(run, &label, k, "tamizdat", &lat);
        let b = burst(
            run,
            &spec,
            &mut site,
            &targets,
            Some(&dist),
            &mut rng,
            &mut version,
        )?;
        for (i, s) in b.samples.iter().enumerate() {
            run.raw
                .push(format!("burst200,{files},{k},tamizdat,{i},{s:.3}"));
        }
        burst_row(run, &label, k, "tamizdat", &b);
    }

    // --- 6. peak RSS
    let dist_hwm = status_kb(dist.proc.pid(), "VmHWM");
    let mirror_hwm: Vec<u64> = mirrors
        .iter()
        .map(|m| status_kb(m.proc.pid(), "VmHWM"))
        .collect();
    let dist_rss = status_kb(dist.proc.pid(), "VmRSS");
    let watches = inotify_watches(dist.proc.pid());

    // --- 4. catch-up after the first mirror was offline for N changes
    if let (Some(r), Some(d)) = (&rsync, &rsyncd) {
        rsync_run(r, &src, &d.url("t"))?; // bring the rsync target up to date, not measured
    }
    let catchup_row = {
        let names: Vec<String> = mirrors.iter().map(|m| m.name.clone()).collect();
        dist.wait_synced(&names, Duration::from_secs(600))?;
        let before = dist.mirror("m1")?;
        mirrors[0].stop();
        let changes = run.cfg.catchup;
        let deletes = changes * 3 / 100;
        let adds = changes * 3 / 100;
        let edits = changes - adds - deletes - 1;
        version += 1;
        let made = gen::mutate(
            &mut site, &spec, &mut rng, edits, adds, deletes, true, version,
        )?;
        // let the distributor settle every change: head stable and the other mirrors acked
        let end = Instant::now() + Duration::from_secs(600);
        let mut last = (dist.head()?, Instant::now());
        while last.1.elapsed() < Duration::from_millis(1000) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
            let h = dist.head()?;
            if h != last.0 {
                last = (h, Instant::now());
            }
        }
        if mirrors.len() > 1 {
            let others: Vec<String> = names[1..].to_vec();
            dist.wait_synced(&others, Duration::from_secs(600))?;
        }
        let head_before_restart = dist.head()?;
        let t0 = Instant::now();
        mirrors[0].restart()?;
        dist.wait_synced(&["m1".into()], Duration::from_secs(1800))?;
        let tz_catch = t0.elapsed();
        let after = dist.mirror("m1")?;
        let b0 = before["bytes_sent"].as_u64().unwrap_or(0);
        let b1 = after["bytes_sent"].as_u64().unwrap_or(0);
        let blob0 = before["blob_bytes_sent"].as_u64().unwrap_or(0);
        let blob1 = after["blob_bytes_sent"].as_u64().unwrap_or(0);
        // a counter that restarted with the connection counts from zero
        let bytes = if b1 >= b0 { b1 - b0 } else { b1 };
        let blob = if blob1 >= blob0 { blob1 - blob0 } else { blob1 };
        let conv = compare_trees(&src, &mirrors[0].root)?;
        let rs = match (&rsync, &rsyncd) {
            (Some(r), Some(d)) => Some(rsync_run(r, &src, &d.url("t"))?),
            _ => None,
        };
        eprintln!(
            "    catch-up after {made} changes: tamizdat {:.2} s {} B; rsync {:?}",
            tz_catch.as_secs_f64(),
            bytes,
            rs.as_ref().map(|r| r.wall)
        );
        Some((made, head_before_restart, tz_catch, bytes, blob, conv, rs))
    };
    if let Some((made, _head, tz_catch, bytes, blob, conv, rs)) = catchup_row {
        let miss = missing(run, "rsync");
        let t = table(
            run,
            "4-catchup",
            "Catch-up after a mirror was offline for a batch of changes vs an `rsync` re-sync",
            &[
                "site",
                "changes",
                "tamizdat (s)",
                "tamizdat bytes on the wire",
                "rsync (s)",
                "rsync bytes",
                "ratio time",
                "ratio bytes",
            ],
        );
        let (rw, rb) = rs.as_ref().map_or((f64::NAN, f64::NAN), |r| {
            (r.wall.as_secs_f64(), r.bytes as f64)
        });
        t.row(vec![
            label.clone(),
            made.to_string(),
            f(tz_catch.as_secs_f64()),
            format!("{} MB ({} MB blobs)", mb(bytes as f64), mb(blob as f64)),
            rs.as_ref()
                .map_or(miss.clone().unwrap_or_default(), |_| f(rw)),
            rs.as_ref().map_or("–".into(), |r| {
                format!("{} MB ({})", mb(rb), r.transferred)
            }),
            ratio(rw, tz_catch.as_secs_f64()),
            ratio(rb, bytes as f64),
        ]);
        t.notes = vec![format!(
            "One sample each. Changes: {}% page edits (each an atomic temp-file-then-rename write), 3% new \
             articles, 3% deletions, one article directory renamed; made while mirror m1 was stopped \
             (SIGTERM). tamizdat: from restarting m1 until it acked the head; bytes = growth of m1's \
             `bytes_sent` in the distributor's status (distributor→mirror only). rsync: `rsync -a --delete --stats` of the \
             same tree into a daemon module that was in sync before the changes; bytes = sent + received. \
             Ratios are rsync / tamizdat. After catch-up the mirror's tree was compared with the source by hash: {}.",
            94, if conv.is_empty() { "identical".to_string() } else { format!("DIFFERENT ({conv})") }
        )];
        run.raw
            .push(format!("catchup,{files},1,tamizdat,0,{:.3}", ms(tz_catch)));
        if let Some(r) = &rs {
            run.raw
                .push(format!("catchup,{files},1,rsync,0,{:.3}", ms(r.wall)));
        }
    }

    // --- 5. no-change cost: distributor restart over an unchanged tree vs rsync's no-op scan
    let mut dist = dist;
    let old_dist_hwm = dist_hwm.max(status_kb(dist.proc.pid(), "VmHWM"));
    {
        let names: Vec<String> = mirrors.iter().map(|m| m.name.clone()).collect();
        dist.wait_synced(&names, Duration::from_secs(600))?;
        dist.restart()?;
        let restart = dist.ready;
        let cpu = cpu_secs(dist.proc.pid(), false);
        let t0 = Instant::now();
        dist.wait_synced(&names, Duration::from_secs(600))?;
        let reconnect = t0.elapsed();
        let mut noop = Vec::new();
        let mut one = None;
        if let (Some(r), Some(d)) = (&rsync, &rsyncd) {
            for _ in 0..3 {
                noop.push(rsync_run(r, &src, &d.url("t"))?);
            }
            version += 1;
            let i = rng.gen_range(0..site.articles.len());
            gen::write_atomic(
                &src,
                &site.articles[i],
                &gen::article_html(&spec, i, version, "one"),
            )?;
            one = Some(rsync_run(r, &src, &d.url("t"))?);
        }
        let miss = missing(run, "rsync");
        let mut walls: Vec<f64> = noop.iter().map(|r| r.wall.as_secs_f64()).collect();
        walls.sort_by(|a, b| a.total_cmp(b));
        let med = if walls.is_empty() {
            f64::NAN
        } else {
            walls[walls.len() / 2]
        };
        let t = table(
            run,
            "5-nochange",
            "No-change cost: distributor restart over an unchanged tree vs rsync's no-op scan",
            &[
                "site",
                "tamizdat restart to ready (s)",
                "its CPU (s)",
                "mirrors re-synced after (s)",
                "rsync no-op (s, median of 3)",
                "rsync bytes",
                "rsync one change (s)",
                "ratio (rsync no-op / tamizdat restart)",
            ],
        );
        t.row(vec![
            label.clone(),
            f(restart.as_secs_f64()),
            f(cpu),
            f(reconnect.as_secs_f64()),
            if noop.is_empty() {
                miss.unwrap_or_default()
            } else {
                f(med)
            },
            noop.first().map_or("–".into(), |r| {
                format!("{} KB", f(r.bytes as f64 / 1024.0))
            }),
            one.as_ref().map_or("–".into(), |r| f(r.wall.as_secs_f64())),
            ratio(med, restart.as_secs_f64()),
        ]);
        t.notes = vec![format!(
            "tamizdat: SIGTERM the distributor, start it again on the same state and tree; time from spawn \
             until its admin API answers (start-up index that trusts size+mtime), and the CPU it used until \
             then (one sample); then the time until every mirror has reconnected (their backoff) and acked. \
             The first start, over the fresh tree, took {} s (it hashes everything). rsync: `rsync -a --delete --stats` \
             with nothing to do, 3 runs; then one page edited and the same command again (one run). A running \
             distributor does no work at all when nothing changes (it is event-driven): the \
             restart is the only time it looks at the whole tree.",
            f(index_time.as_secs_f64())
        )];
        for (i, r) in noop.iter().enumerate() {
            run.raw
                .push(format!("rsync_noop,{files},1,rsync,{i},{:.3}", ms(r.wall)));
        }
        run.raw.push(format!(
            "restart_ready,{files},1,tamizdat,0,{:.3}",
            ms(restart)
        ));
    }

    // --- 6 (report)
    {
        let mirror_peak = mirror_hwm
            .iter()
            .copied()
            .chain(mirrors.iter().map(|m| status_kb(m.proc.pid(), "VmHWM")))
            .max()
            .unwrap_or(0);
        let m1_hwm = mirror_hwm[0];
        let t = table(
            run,
            "6-rss",
            "Peak RSS (VmHWM) of distributor and mirror",
            &[
                "site",
                "distributor peak (MB)",
                "per file (bytes)",
                "distributor RSS now (MB)",
                "mirror m1 peak (MB)",
                "largest mirror peak (MB)",
                "per file (bytes)",
                "through the initial sync: distributor / m1 (MB)",
                "distributor inotify watches",
            ],
        );
        t.row(vec![
            label.clone(),
            mb(old_dist_hwm as f64 * 1024.0),
            f(old_dist_hwm as f64 * 1024.0 / files as f64),
            mb(dist_rss as f64 * 1024.0),
            mb(m1_hwm as f64 * 1024.0),
            mb(mirror_peak as f64 * 1024.0),
            f(mirror_peak as f64 * 1024.0 / files as f64),
            format!(
                "{} / {}",
                mb(sync_dist_hwm as f64 * 1024.0),
                mb(sync_m1_hwm as f64 * 1024.0)
            ),
            watches.map_or("–".into(), |w| w.to_string()),
        ]);
        t.notes = vec!["VmHWM from /proc/PID/status of the first distributor process (through initial index, \
            initial sync, all edits and the catch-up) and of the mirrors (m1 did the initial sync over the wire; \
            the others were seeded with hard links and did a manifest-comparison resync). One reading each. \
            The mirrors' peaks include serving the harness's polls of every edit and burst; a page asked for \
            more than once goes into the mirror's hot cache (up to 32 MiB of small files by default, \
            `--hot-cache-mb`); the \
            column \"through the initial sync\" is read before the first edit: the start-up index and the \
            full resync alone. \
            No anchor in this table: rsync's processes live for one run only (see the rsync figures above)."
            .into()];
    }

    // --- 7. serving: wrk against mirror m1 and nginx on the same bytes
    if !run.cfg.skip.iter().any(|s| s == "serving") {
        serving::serving(run, dir, &label, &src, &site, &mirrors[0])?;
    }

    // stop tamizdat (inotify watches are per user; lsyncd needs its own)
    for m in &mut mirrors {
        m.stop();
    }
    dist.proc.stop();
    drop(rsyncd);

    // --- 2. lsyncd anchor: the same edits and bursts
    if run.cfg.skip.iter().any(|s| s == "lsyncd") {
        run.notes
            .push("lsyncd scenarios skipped (--skip lsyncd).".into());
    } else if let (Some(ls), Some(r)) = (run.anchors["lsyncd"].clone(), rsync.clone()) {
        for &k in &counts {
            let ldir = dir.join(format!("lsyncd-{k}"));
            std::fs::create_dir_all(&ldir)?;
            let mut modules = Vec::new();
            for j in 0..k {
                let p = ldir.join(format!("target{j}"));
                hardlink_copy(&src, &p)?;
                modules.push((format!("l{j}"), p));
            }
            let d = RsyncD::start(&r, &ldir.join("rsyncd"), &modules)?;
            let urls: Vec<String> = modules.iter().map(|(m, _)| d.url(m)).collect();
            flush_disk();
            let t0 = Instant::now();
            let l = Lsyncd::start(&ls, &ldir, &src, &urls)?;
            eprintln!(
                "    lsyncd with {k} targets started in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            let targets: Vec<Target> = modules
                .iter()
                .map(|(_, p)| Target::Disk(p.clone()))
                .collect();
            let pids = vec![l.proc.pid(), d.proc.pid()];
            let lat = edit_latency(
                run,
                &spec,
                &mut site,
                &targets,
                &pids,
                true,
                &mut rng,
                &mut version,
            )?;
            eprintln!(
                "    lsyncd edit latency, {k} targets: p50 {:.2} ms",
                summary(&lat.samples)[0]
            );
            for (i, s) in lat.samples.iter().enumerate() {
                run.raw
                    .push(format!("edit_latency,{files},{k},lsyncd,{i},{s:.3}"));
            }
            run_latency_row(run, &label, k, "lsyncd", &lat);
            let b = burst(
                run,
                &spec,
                &mut site,
                &targets,
                None,
                &mut rng,
                &mut version,
            )?;
            for (i, s) in b.samples.iter().enumerate() {
                run.raw
                    .push(format!("burst200,{files},{k},lsyncd,{i},{s:.3}"));
            }
            burst_row(run, &label, k, "lsyncd", &b);
            drop(l);
            drop(d);
            let _ = std::fs::remove_dir_all(&ldir);
        }
    } else {
        let why = missing(run, "lsyncd")
            .or_else(|| missing(run, "rsync"))
            .unwrap_or_default();
        run.notes
            .push(format!("lsyncd edit latency and burst: {why}"));
    }
    Ok(())
}

struct Latency {
    samples: Vec<f64>,
    timeouts: usize,
    cpu_ms_per_edit: f64,
    poll_interval_us: u64,
}

/// `edits` measured atomic page edits (after warm-ups), each timed from the rename until every
/// target serves the new bytes. CPU: utime+stime deltas of `pids` over the measured edits
/// (with their reaped children when `children`).
#[allow(clippy::too_many_arguments)]
fn edit_latency(
    run: &Run,
    spec: &Spec,
    site: &mut Site,
    targets: &[Target],
    pids: &[i32],
    children: bool,
    rng: &mut StdRng,
    version: &mut u64,
) -> Result<Latency> {
    let poll = Duration::from_micros(200);
    let total = run.cfg.warmup + run.cfg.edits;
    let mut samples = Vec::with_capacity(run.cfg.edits);
    let mut timeouts = 0;
    let mut cpu0 = 0.0;
    let cpu = |pids: &[i32]| -> f64 { pids.iter().map(|&p| cpu_secs(p, children)).sum() };
    let started = Instant::now();
    let mut measured = 0usize;
    for e in 0..total {
        if e > run.cfg.warmup && started.elapsed() > run.cfg.budget {
            eprintln!(
                "    !! stopping after {measured} measured edits: over the {:?} budget",
                run.cfg.budget
            );
            break;
        }
        if e >= run.cfg.warmup {
            measured += 1;
        }
        if e == run.cfg.warmup {
            cpu0 = cpu(pids);
        }
        *version += 1;
        let i = rng.gen_range(0..site.articles.len());
        let rel = site.articles[i].clone();
        let html = gen::article_html(spec, i, *version, &format!("edit {}", *version));
        let hash = blake3::hash(&html);
        let tmp = gen::stage(&site.root, &rel, &html)?;
        let t0 = Instant::now();
        std::fs::rename(&tmp, site.root.join(&rel))?;
        let mut pending: Vec<usize> = (0..targets.len()).collect();
        let deadline = t0 + Duration::from_secs(30);
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|&k| !targets[k].serves(&rel, &hash));
            if !pending.is_empty() {
                std::thread::sleep(poll);
            }
        }
        let dt = t0.elapsed();
        if !pending.is_empty() {
            timeouts += 1;
            eprintln!(
                "    !! edit {e} of {rel} not served by {} target(s) after 30 s",
                pending.len()
            );
        } else if e >= run.cfg.warmup {
            samples.push(ms(dt));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu1 = cpu(pids);
    Ok(Latency {
        cpu_ms_per_edit: (cpu1 - cpu0) * 1000.0 / measured.max(1) as f64,
        samples,
        timeouts,
        poll_interval_us: poll.as_micros() as u64,
    })
}

fn run_latency_row(run: &mut Run, label: &str, k: usize, system: &str, lat: &Latency) {
    let warmup = run.cfg.warmup;
    let [p50, p95, p99, max] = summary(&lat.samples);
    let t = table(
        run,
        "1-edit",
        "Edit-to-served on every mirror (one page, atomic write), tamizdat vs lsyncd (`delay = 0`)",
        &[
            "site",
            "mirrors / targets",
            "system",
            "samples",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "CPU ms per edit",
            "timeouts",
        ],
    );
    t.row(vec![
        label.to_owned(),
        k.to_string(),
        system.to_owned(),
        lat.samples.len().to_string(),
        f(p50),
        f(p95),
        f(p99),
        f(max),
        f(lat.cpu_ms_per_edit),
        lat.timeouts.to_string(),
    ]);
    if system == "lsyncd" {
        // a ratio row against the tamizdat row with the same site and mirror count
        let tz = t
            .rows
            .iter()
            .find(|r| r[0] == label && r[1] == k.to_string() && r[2] == "tamizdat")
            .cloned();
        if let Some(tz) = tz {
            let g = |r: &Vec<String>, i: usize| r[i].parse::<f64>().unwrap_or(f64::NAN);
            let lr = t.rows.last().unwrap().clone();
            t.row(vec![
                label.to_owned(),
                k.to_string(),
                "**ratio lsyncd/tamizdat**".into(),
                "".into(),
                ratio(g(&lr, 4), g(&tz, 4)),
                ratio(g(&lr, 5), g(&tz, 5)),
                ratio(g(&lr, 6), g(&tz, 6)),
                ratio(g(&lr, 7), g(&tz, 7)),
                ratio(g(&lr, 8), g(&tz, 8)),
                "".into(),
            ]);
        }
    }
    t.notes = vec![format!(
        "Each sample: a new version of a random article page is written to `.tmp-index.html.N` in its \
         directory and renamed over the page; the clock runs from the rename until every mirror serves \
         the new bytes. tamizdat mirrors are polled over HTTP (GET, checked: status 200, `ETag` = the new \
         blake3, and the body's blake3); lsyncd targets are checked by reading the file from the target \
         directory (no HTTP server in front: this favours the anchor slightly). Polling every {} µs; the \
         first {} edits are warm-ups and not counted; 5 ms pause between edits. CPU per edit: utime+stime \
         deltas from /proc/PID/stat over the measured edits: for tamizdat the distributor plus every mirror \
         (the mirrors' figure includes serving the harness's polling requests); for lsyncd, lsyncd plus the \
         rsync daemon, each with its reaped children (the rsync client and server processes). lsyncd is \
         Debian's package, one `sync {{ default.rsync, delay = 0 }}` block per target, each target an rsync \
         daemon module on loopback, TCP_NODELAY on both ends (daemon `socket options`, client \
         `--sockopts=TCP_NODELAY` via `_extra`: without it each rsync run stalls about 4 x 40 ms on \
         delayed ACKs, which we saw while writing this harness), targets pre-seeded by `cp -al` so its start-up rsync is a \
         no-op scan. Ratios are lsyncd / tamizdat (above 1: tamizdat is faster or cheaper).",
        lat.poll_interval_us, warmup
    )];
}

/// Bursts of 200 files (100 pages and their `.zst` variants: a new article, the front page,
/// listing and tag pages, related articles) renamed into place back to back; time until every
/// target serves all 200. One unmeasured warm-up burst.
fn burst(
    run: &Run,
    spec: &Spec,
    site: &mut Site,
    targets: &[Target],
    dist: Option<&Dist>,
    rng: &mut StdRng,
    version: &mut u64,
) -> Result<Burst> {
    let mut renames = Vec::new();
    let mut changesets = Vec::new();
    let mut out = Vec::new();
    for r in 0..=run.cfg.bursts {
        *version += 1;
        let v = *version;
        let mut rels = vec![format!("2026/12/burst-{v}/index.html")];
        for l in site
            .listings
            .iter()
            .filter(|l| l.ends_with(".html"))
            .take(60)
        {
            rels.push(l.clone());
        }
        while rels.len() < 100 {
            let i = rng.gen_range(0..site.articles.len());
            if !rels.contains(&site.articles[i]) {
                rels.push(site.articles[i].clone());
            }
        }
        let mut staged = Vec::new();
        for (j, rel) in rels.iter().enumerate() {
            let html = gen::article_html(spec, j * 7919 + 13, v, &format!("burst {v}"));
            let zst = zstd::encode_all(&html[..], 3)?;
            let zrel = format!("{rel}.zst");
            for (rel, data) in [(rel.clone(), html), (zrel, zst)] {
                let h = blake3::hash(&data);
                let tmp = gen::stage(&site.root, &rel, &data)?;
                staged.push((tmp, rel, h));
            }
        }
        site.articles.push(rels[0].clone());
        let head0 = match dist {
            Some(d) => d.head()?,
            None => 0,
        };
        let t0 = Instant::now();
        for (tmp, rel, _) in &staged {
            std::fs::rename(tmp, site.root.join(rel))?;
        }
        let renamed = t0.elapsed();
        let last = staged.len() - 1;
        let mut pending: Vec<Vec<usize>> = targets
            .iter()
            .map(|_| (0..staged.len()).collect())
            .collect();
        let deadline = t0 + Duration::from_secs(120);
        while pending.iter().any(|p| !p.is_empty()) && Instant::now() < deadline {
            for (k, p) in pending.iter_mut().enumerate() {
                // the last file renamed first: until it is served, do not sweep the rest
                if p.contains(&last) {
                    let (_, rel, h) = &staged[last];
                    if !targets[k].serves(rel, h) {
                        continue;
                    }
                    p.retain(|&x| x != last);
                }
                p.retain(|&x| {
                    let (_, rel, h) = &staged[x];
                    !targets[k].serves(rel, h)
                });
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let dt = t0.elapsed();
        let left: usize = pending.iter().map(|p| p.len()).sum();
        if left > 0 {
            bail!("burst {r}: {left} file copies not served after 120 s");
        }
        if r > 0 {
            out.push(ms(dt));
            renames.push(ms(renamed));
            if let Some(d) = dist {
                changesets.push(d.head()?.saturating_sub(head0) as f64);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Burst {
        samples: out,
        renames,
        changesets,
    })
}

struct Burst {
    samples: Vec<f64>,
    /// How long the rename loop took, per burst.
    renames: Vec<f64>,
    /// tamizdat only: changesets the distributor made of each burst.
    changesets: Vec<f64>,
}

fn burst_row(run: &mut Run, label: &str, k: usize, system: &str, burst: &Burst) {
    let b = &burst.samples;
    let [p50, _, _, max] = summary(b);
    let min = b.iter().copied().fold(f64::NAN, f64::min);
    let ren = summary(&burst.renames)[0];
    let cs = if burst.changesets.is_empty() {
        "–".to_string()
    } else {
        f(summary(&burst.changesets)[0])
    };
    let t = table(run, "1b-burst", "Burst publish: 200 files renamed into place back to back, until every mirror serves all 200", &[
        "site", "mirrors / targets", "system", "samples", "min ms", "median ms", "max ms", "rename loop ms (median)", "changesets per burst (median)",
    ]);
    t.row(vec![
        label.to_owned(),
        k.to_string(),
        system.to_owned(),
        b.len().to_string(),
        f(min),
        f(p50),
        f(max),
        f(ren),
        cs,
    ]);
    if system == "lsyncd" {
        let tz = t
            .rows
            .iter()
            .find(|r| r[0] == label && r[1] == k.to_string() && r[2] == "tamizdat")
            .cloned();
        if let Some(tz) = tz {
            let g = |r: &Vec<String>, i: usize| r[i].parse::<f64>().unwrap_or(f64::NAN);
            let lr = t.rows.last().unwrap().clone();
            t.row(vec![
                label.to_owned(),
                k.to_string(),
                "**ratio lsyncd/tamizdat**".into(),
                "".into(),
                ratio(g(&lr, 4), g(&tz, 4)),
                ratio(g(&lr, 5), g(&tz, 5)),
                ratio(g(&lr, 6), g(&tz, 6)),
                "".into(),
                "".into(),
            ]);
        }
    }
    t.notes = vec![format!(
        "Each burst: 100 pages (a new article, {} listing and tag pages, random articles) and a `.zst` \
         variant of each, all written to temp files first, then renamed into place in a tight loop (that loop took 100-300 ms \
         on this VM's ext4 disk, not a few ms: its median is in the table); \
         the clock runs from the first rename until every target serves all 200 new versions (checked \
         as in the edit table; the last-renamed file is polled until served, then every file is checked). \
         One warm-up burst not counted; 200 ms between bursts.",
        60
    )];
}

/// sync(2): writes back every dirty page (the generator's, the hard-link copies') so that a
/// scenario does not pay for the previous one's writes (the mirror flushes with syncfs).
fn flush_disk() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// What else the machine is doing at `label`: other builders' compilers, the load, the busiest
/// other processes, and how fast the disk answers a small durable write.
fn sample_machine(label: &str, work: &Path) -> (String, usize, String) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    (
        label.to_owned(),
        other_builds(),
        format!(
            "{}; busiest other processes: {}; disk: {}",
            load.trim(),
            busy_processes(),
            disk_probe(work)
        ),
    )
}

/// The median and worst of 20 durable 4 KiB writes (write + fdatasync) in `dir`, and the
/// kernel's I/O pressure. tamizdat's mirrors apply durably and lsyncd and rsync do not, so a
/// slow disk moves their ratios: a reader comparing two runs needs to see it.
fn disk_probe(dir: &Path) -> String {
    use std::io::Write as _;
    const N: usize = 20;
    let path = dir.join(".disk-probe");
    let mut ms = Vec::with_capacity(N);
    let probe = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..N {
            let t = Instant::now();
            f.write_all(&[0x5a; 4096])?;
            f.sync_data()?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    let pressure = std::fs::read_to_string("/proc/pressure/io")
        .ok()
        .and_then(|s| {
            let avg = s
                .lines()
                .next()?
                .split_whitespace()
                .find_map(|w| w.strip_prefix("avg60="))?;
            Some(format!("{avg}%"))
        })
        .unwrap_or_else(|| "n/a".into());
    let create = match create_probe(dir) {
        Ok(us) => format!("{} µs", f(us)),
        Err(e) => format!("probe failed ({e})"),
    };
    let fsync = match probe {
        Err(e) => format!("probe failed ({e})"),
        Ok(()) => {
            ms.sort_by(f64::total_cmp);
            format!(
                "4 KB write + fdatasync p50 {} ms, max {} ms ({N} samples)",
                f(ms[N / 2]),
                f(ms[N - 1])
            )
        }
    };
    format!(
        "{fsync}; making a directory with a file in it {create} (mean of {CREATE_PAIRS}); I/O \
         pressure (some, avg60) {pressure}"
    )
}

/// Directories (each with one empty file) [`create_probe`] makes.
const CREATE_PAIRS: usize = 100;

/// Rounds of the initial sync, each side turn about: one sample moved by up to 2x with the
/// VM's mood (runs 21, 21c-e).
const INITIAL_ROUNDS: usize = 3;

/// Rounds of the initial sync after those, with the site's files dropped from the page cache
/// before each side starts ([`evict`]).
const COLD_ROUNDS: usize = 3;

/// Drops every file under `dir` from the page cache (`POSIX_FADV_DONTNEED`): the next reader
/// gets them from the disk, as from an origin whose site does not fit in memory. Dirty pages
/// stay; the harness flushes before it calls this.
fn evict(dir: &Path) {
    use std::os::fd::AsRawFd;
    for e in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if !e.file_type().is_file() {
            continue;
        }
        if let Ok(f) = std::fs::File::open(e.path()) {
            // SAFETY: posix_fadvise takes a valid open descriptor and touches no memory of
            // ours; it is only advice.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

/// Mean microseconds to make a directory and an empty file in it under `dir`, as a mirror
/// does for each new page. On this project's VM (ext4 without a journal) it is 20-40 µs
/// normally and several times that for minutes after a large tree was deleted nearby: ext4
/// then passes over the freed inodes when it allocates (`recently_deleted`), which slows
/// rsync and the mirror alike and moves the initial sync's figures (BENCHMARKS.md, run 21).
fn create_probe(dir: &Path) -> std::io::Result<f64> {
    let base = dir.join(".create-probe");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir(&base)?;
    let t = Instant::now();
    let made = (|| -> std::io::Result<()> {
        for i in 0..CREATE_PAIRS {
            let d = base.join(format!("d{i}"));
            std::fs::create_dir(&d)?;
            std::fs::File::create(d.join("index.html"))?;
        }
        Ok(())
    })();
    let us = t.elapsed().as_secs_f64() * 1e6 / CREATE_PAIRS as f64;
    let _ = std::fs::remove_dir_all(&base);
    made.map(|()| us)
}

/// Processes (other than this harness's) that used more than 10% of a core over one second:
/// "name 55%, ...".
fn busy_processes() -> String {
    let snap = || -> BTreeMap<i32, (String, f64)> {
        let mut m = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                m.insert(pid, (name.trim().to_owned(), cpu_secs(pid, false)));
            }
        }
        m
    };
    let a = snap();
    std::thread::sleep(Duration::from_secs(1));
    let b = snap();
    let me = std::process::id() as i32;
    let mut busy: Vec<(f64, String)> = b
        .iter()
        .filter(|(p, _)| **p != me)
        .filter_map(|(p, (name, c))| {
            let d = c - a.get(p).map_or(*c, |x| x.1);
            (d > 0.1).then(|| (d, name.clone()))
        })
        .collect();
    busy.sort_by(|x, y| y.0.total_cmp(&x.0));
    if busy.is_empty() {
        return "none above 10% of a core".into();
    }
    busy.iter()
        .take(6)
        .map(|(d, n)| format!("{n} {:.0}%", d * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Other compilers running on the machine now (rustc, cc1, ld processes not started by us).
fn other_builds() -> usize {
    let mut n = 0;
    let parent = std::os::unix::process::parent_id().to_string();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy() == parent {
                continue;
            }
            if let Ok(c) = std::fs::read_to_string(e.path().join("comm")) {
                let c = c.trim();
                if c == "rustc"
                    || c == "cc1"
                    || c == "cc1plus"
                    || c.starts_with("ld")
                    || c == "cargo"
                {
                    n += 1;
                }
            }
        }
    }
    n
}

fn count_files(root: &Path) -> usize {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() == 1 && e.file_name().to_string_lossy().starts_with(".tamizdat"))
        })
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .count()
}

/// Empty when both trees hold the same files with the same bytes; else a short description.
fn compare_trees(a: &Path, b: &Path) -> Result<String> {
    let digest = |root: &Path| -> BTreeMap<String, blake3::Hash> {
        walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| {
                !(e.depth() == 1 && e.file_name().to_string_lossy().starts_with(".tamizdat"))
            })
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let h = blake3::hash(&std::fs::read(e.path()).unwrap_or_default());
                (rel, h)
            })
            .collect()
    };
    let (da, db) = (digest(a), digest(b));
    let diff: Vec<&String> = da
        .iter()
        .filter(|(k, v)| db.get(*k) != Some(v))
        .map(|(k, _)| k)
        .chain(db.keys().filter(|k| !da.contains_key(*k)))
        .collect();
    Ok(if diff.is_empty() {
        String::new()
    } else {
        format!(
            "{} paths differ, e.g. {:?}",
            diff.len(),
            &diff[..diff.len().min(3)]
        )
    })
}

/// Number of inotify watches held by `pid` (from /proc/PID/fdinfo).
fn inotify_watches(pid: i32) -> Option<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(e.path()) {
            n += s.lines().filter(|l| l.starts_with("inotify wd:")).count();
        }
    }
    Some(n)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem} memory, Linux {}, host `{}`",
        kernel.trim(),
        host.trim()
    )
}

/// The commit the binaries were built from, and whether the product's directories had
/// uncommitted edits (the work tree is shared with other builders).
fn git_state() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let head = git(&["log", "-1", "--format=%h %s"]);
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "protocol",
        "distributor",
        "mirror",
        "serve",
    ]);
    let n = dirty.lines().count();
    if n == 0 {
        format!("commit `{head}`, protocol/distributor/mirror/serve clean")
    } else {
        format!("commit `{head}`, with {n} uncommitted changed file(s) in protocol/distributor/mirror/serve (another session's work in progress was compiled in)")
    }
}

fn tool_version(p: &Path, arg: &str) -> String {
    Command::new(p)
        .arg(arg)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn write_report(
    run: &Run,
    out: &Path,
    runs: &Option<PathBuf>,
    started: &str,
    load: &str,
    command: &str,
    took: Duration,
) -> Result<()> {
    let mut s = String::new();
    let c = &run.cfg;
    writeln!(s, "# tamizdat benchmarks\n").unwrap();
    writeln!(
        s,
        "Produced by the harness in `benches/` (`tamizdat-bench`); every figure below was measured in \
         one run, tamizdat and its anchor side by side on the same files on the same machine. Ratios are \
         anchor / tamizdat unless a table says otherwise: above 1 means tamizdat is faster, cheaper or \
         smaller. Absolute times on a shared machine are noise; ratios in one run are not.\n"
    )
    .unwrap();
    writeln!(
        s,
        "- **Date:** {started} (run took {:.0} s)",
        took.as_secs_f64()
    )
    .unwrap();
    writeln!(s, "- **Machine:** {}", machine()).unwrap();
    writeln!(s, "- **Load average at the start:** {}", load.trim()).unwrap();
    let busy: Vec<String> = run
        .busy
        .iter()
        .map(|(w, n, l)| {
            format!("{w}: {n} compiler processes (rustc/cc/ld/cargo) of other builders, load {l}")
        })
        .collect();
    writeln!(
        s,
        "- **Other work on the machine** (2 cores shared with other builders; sampled): {}",
        busy.join("; ")
    )
    .unwrap();
    writeln!(
        s,
        "- **Command:** `{command}`{}",
        if c.quick { " (quick mode)" } else { "" }
    )
    .unwrap();
    writeln!(
        s,
        "- **Site:** generated with seed {}: article pages of 4–40 KB of HTML (log-uniform) under \
         `YYYY/MM/slug/index.html`, a front page, year and month indexes, 200 tag pages, a stylesheet, {} \
         media files of 100 KB–{} MB and one 5 MB file; sizes run: {:?} articles; mirror counts {:?}; {} \
         measured edits per latency figure; catch-up after {} changes.",
        c.seed,
        c.media,
        c.media_max >> 20,
        c.sizes,
        c.mirrors,
        c.edits,
        c.catchup
    )
    .unwrap();
    let mut tools = Vec::new();
    for (a, p) in &run.anchors {
        tools.push(match p {
            Some(p) => {
                let arg = if *a == "nginx" {
                    "-v"
                } else if *a == "hugo" {
                    "version"
                } else {
                    "--version"
                };
                format!("{a}: `{}`", tool_version(p, arg))
            }
            None => format!("{a}: NOT FOUND"),
        });
    }
    writeln!(s, "- **Anchors:** {}", tools.join("; ")).unwrap();
    writeln!(s, "- **Source:** {}", run.source).unwrap();
    writeln!(
        s,
        "- **tamizdat:** release binaries `tamizdat-distributor` and `tamizdat-mirror` (default flags: \
         settle window 1 ms, durable apply with fsync), on 127.0.0.1, their state and roots in a temp dir on the \
         same ext4 disk as the source tree.\n"
    )
    .unwrap();
    writeln!(
        s,
        "Re-run: `benches/install-anchors.sh && cargo run --release -p tamizdat-bench` (full; \
        `-- --quick` for the two-minute version). Raw samples: `benches/runs/`.\n"
    )
    .unwrap();
    writeln!(s, "## Results\n").unwrap();
    for t in run.tables.values() {
        s.push_str(&t.markdown());
    }
    writeln!(s, "## Not run, and notes\n").unwrap();
    for n in &run.notes {
        writeln!(s, "- {n}").unwrap();
    }
    if c.sizes.iter().all(|&n| n < 1_000_000) {
        writeln!(s, "- 1M files: not run (disk and time on this 2-core machine; the harness takes `--sizes`).").unwrap();
    }
    if !c.mirrors.contains(&20) {
        writeln!(
            s,
            "- 20 mirrors: not run in this run (time); `--mirrors 1,5,20` runs it."
        )
        .unwrap();
    }
    std::fs::write(out, s)?;
    let dir = match runs {
        Some(d) => d.clone(),
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let date = started.split(' ').next().unwrap_or("today").to_owned();
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("runs")
                .join(format!(
                    "{date}-{}{}",
                    host.trim(),
                    if c.quick { "-quick" } else { "" }
                ))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from("scenario,files,mirrors,system,sample,ms\n");
    for r in &run.raw {
        csv.push_str(r);
        csv.push('\n');
    }
    std::fs::write(dir.join("raw.csv"), csv)?;
    Ok(())
}
