//! Publish latency on a large generated site, and a full rebuild of it.
//!
//! ```text
//! cargo bench -p tamizdat-producer --bench publish -- [--articles 100000] [--tags 1000] \
//!     [--publishes 300] [--dir DIR] [--reuse] [--hugo]
//! ```
//!
//! 1. Seeds a store with `--articles` generated articles ([`synthetic::seed`]).
//! 2. Runs the real binary's `render --all` on it and reports wall time and peak RSS.
//! 3. Publishes `--publishes` new articles and as many edits of random old ones through
//!    `Site::publish` ([`synthetic::publishes`]), reporting p50/p99/max of the time until the
//!    files are durable, of the time until their precompressed variants are in place too, the
//!    phases, and the number of files each wrote.
//! 4. With `--hugo`, times `render --all --no-precompress` and Hugo on the same articles
//!    (needs Debian's `hugo` package).
//!
//! The project's harness runs the same functions as its scenario 8 (`tamizdat-bench`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tamizdat_producer::synthetic::{self, Spec, Timed};
use tamizdat_producer::{Site, SiteOptions};

/// As in the producer binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    spec: Spec,
    publishes: usize,
    dir: Option<PathBuf>,
    hugo: bool,
    reuse: bool,
}

fn args() -> Args {
    let mut a = Args {
        spec: Spec {
            articles: 100_000,
            tags: 1000,
            seed: 4,
        },
        publishes: 300,
        dir: None,
        hugo: false,
        reuse: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse().ok()).expect("a number");
        match arg.as_str() {
            "--articles" => a.spec.articles = num(),
            "--tags" => a.spec.tags = num(),
            "--publishes" => a.publishes = num(),
            "--dir" => a.dir = Some(it.next().expect("a directory").into()),
            "--hugo" => a.hugo = true,
            "--reuse" => a.reuse = true,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn show(what: &str, t: &Timed) {
    let rss = t.peak_rss_kib.map_or("unknown".into(), |k| {
        format!("{:.0} MiB", k as f64 / 1024.0)
    });
    println!(
        "{what}: {:.1} s wall, peak RSS {rss} (ok: {})",
        t.secs, t.ok
    );
    if !t.ok {
        eprintln!("{}", t.stderr_tail);
    }
}

fn main() {
    tamizdat_producer::keep_freed_memory();
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let (out, state) = (root.join("out"), root.join("state"));
    std::fs::create_dir_all(&state).unwrap();
    let bin = env!("CARGO_BIN_EXE_tamizdat-producer");

    let docs = if a.reuse {
        let docs = synthetic::seeded(&state).unwrap();
        println!(
            "reusing {} seeded articles in {}",
            docs.len(),
            root.display()
        );
        docs
    } else {
        let t = Instant::now();
        let docs = synthetic::seed(&state, &a.spec).unwrap();
        println!(
            "seeded {} articles with {} tags in {:.1} s",
            a.spec.articles,
            a.spec.tags,
            t.elapsed().as_secs_f64()
        );
        let mut render = Command::new(bin);
        render.args(["render", "--all", "--out"]).arg(&out);
        render.arg("--state").arg(&state);
        show("render --all", &synthetic::timed(&render).unwrap());
        println!("{} files in the tree", synthetic::count_files(&out));
        docs
    };

    let mut site = Site::open(SiteOptions::new(out.clone(), state.clone())).unwrap();
    let samples = synthetic::publishes(&mut site, &docs, &a.spec, a.publishes).unwrap();
    drop(site);
    let pick = |f: &dyn Fn(&synthetic::Sample) -> bool, g: &dyn Fn(&synthetic::Sample) -> f64| {
        samples.iter().filter(|s| f(s)).map(g).collect::<Vec<f64>>()
    };
    for (name, filter) in [
        (
            "new article",
            &(|s: &synthetic::Sample| s.new) as &dyn Fn(&_) -> bool,
        ),
        ("edit of an old article", &|s: &synthetic::Sample| !s.new),
        ("all", &|_: &synthetic::Sample| true),
    ] {
        let mut v = pick(filter, &|s| s.ms);
        let mut w = pick(filter, &|s| s.variants_ms);
        println!(
            "publish latency, {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={}); \
             with variants in place: p50 {:.2} ms, p99 {:.2} ms",
            pct(&mut v, 50.0),
            pct(&mut v, 99.0),
            v.last().unwrap(),
            v.len(),
            pct(&mut w, 50.0),
            pct(&mut w, 99.0),
        );
    }
    for (name, g) in [
        (
            "store",
            &(|s: &synthetic::Sample| s.timings.store_ms) as &dyn Fn(&_) -> f64,
        ),
        (
            "render",
            &(|s: &synthetic::Sample| s.timings.render_ms) as &dyn Fn(&_) -> f64,
        ),
        ("stage", &|s: &synthetic::Sample| s.timings.stage_ms),
        ("commit", &|s: &synthetic::Sample| s.timings.commit_ms),
    ] {
        let mut v = pick(&|_| true, g);
        println!(
            "  phase {name}: p50 {:.2} ms, p99 {:.2} ms",
            pct(&mut v, 50.0),
            pct(&mut v, 99.0)
        );
    }
    let mut probe = synthetic::fsync_probe(&root.join("fsync-probe"), 50).unwrap();
    println!(
        "machine: one 20 KB write+fsync+rename+dir fsync p50 {:.2} ms, p99 {:.2} ms; load average {}",
        pct(&mut probe, 50.0),
        pct(&mut probe, 99.0),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let mut written: Vec<usize> = samples.iter().map(|s| s.written).collect();
    written.sort();
    println!(
        "files written per publish (plain files; each also has .br/.zst/.gz): min {}, median {}, max {}",
        written[0],
        written[written.len() / 2],
        written[written.len() - 1]
    );

    if a.hugo {
        // Hugo writes no precompressed variants: time our full rebuild without them too.
        let mut render = Command::new(bin);
        render.args(["render", "--all", "--no-precompress", "--out"]);
        render
            .arg(root.join("out-plain"))
            .arg("--state")
            .arg(&state);
        show(
            "render --all --no-precompress",
            &synthetic::timed(&render).unwrap(),
        );
        let hroot = root.join("hugo");
        synthetic::write_hugo_site(&hroot, &docs).unwrap();
        let mut hugo = Command::new("hugo");
        hugo.current_dir(&hroot).args(["--quiet", "-d", "public"]);
        show(
            "hugo (same articles and tags)",
            &synthetic::timed(&hugo).unwrap(),
        );
    }
}
