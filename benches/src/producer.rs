//! Scenario 8: the producer. Publish latency on a generated newsroom (100,000 articles and
//! 1,000 tags unless `--producer-articles` says otherwise), and a full `render --all` against
//! Hugo on the same articles, in the same run. The site, the publishes and the Hugo copy come
//! from `tamizdat_producer::synthetic`, the same code as the producer's own bench.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use tamizdat_producer::synthetic::{self, Sample, Spec, Timed};
use tamizdat_producer::{Site, SiteOptions};

use crate::report::{f, ratio, summary};
use crate::{missing, table, Run};

/// Tags for a site of `articles`: 1,000 at 100,000 articles, as issue 4 asks.
fn tags_for(articles: usize) -> usize {
    (articles / 100).clamp(10, 1000)
}

pub fn scenario(run: &mut Run, dir: &Path, articles: usize, publishes: usize) -> Result<()> {
    let spec = Spec {
        articles,
        tags: tags_for(articles),
        seed: run.cfg.seed,
    };
    let label = format!("{articles} articles, {} tags", spec.tags);
    let (state, out) = (dir.join("state"), dir.join("out"));
    std::fs::create_dir_all(&state)?;
    let t0 = Instant::now();
    let docs = synthetic::seed(&state, &spec).context("seeding the producer's store")?;
    eprintln!(
        "    producer: seeded {label} in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let bin = run.cfg.bin.join("tamizdat-producer");

    // The full rebuild a newsroom runs (pages and their .br/.zst/.gz) and Hugo's, turn about
    // for RENDER_ROUNDS rounds, each into an empty tree and after a `sync` (`synthetic::timed`):
    // one of each, one after the other, had either pay for the other's writeback, and this
    // VM's disk moves a rebuild by a third from one minute to the next. The first round's tree
    // is the one the publishes below land in.
    let hugo_bin = run.anchors["hugo"].clone();
    let hugo_root = dir.join("hugo");
    if hugo_bin.is_some() {
        synthetic::write_hugo_site(&hugo_root, &docs)?;
    }
    // The rebuilds' and Hugo's trees are removed after the publishes are timed, not before:
    // on ext4 file creation is slow for minutes after a big tree's removal (inode allocation
    // scans the recently freed inodes; benches/README.md), and every publish creates files.
    let mut leftovers = Vec::new();
    let (mut ours, mut hugos) = (Vec::new(), Vec::new());
    for r in 0..RENDER_ROUNDS {
        let dest = if r == 0 {
            out.clone()
        } else {
            let d = dir.join(format!("out-{r}"));
            leftovers.push(d.clone());
            d
        };
        let mut full = Command::new(&bin);
        full.args(["render", "--all", "--out"]).arg(&dest);
        full.arg("--state").arg(&state);
        let t = synthetic::timed(&full)?;
        eprintln!(
            "    producer: render --all, round {}: {:.1} s",
            r + 1,
            t.secs
        );
        if !t.ok {
            anyhow::bail!("render --all failed: {}", t.stderr_tail);
        }
        ours.push(t);
        if let Some(h) = &hugo_bin {
            let public = format!("public-{r}");
            let mut cmd = Command::new(h);
            cmd.current_dir(&hugo_root).args(["--quiet", "-d", &public]);
            let t = synthetic::timed(&cmd)?;
            eprintln!("    producer: hugo, round {}: {:.1} s", r + 1, t.secs);
            hugos.push((t, synthetic::count_files(&hugo_root.join(&public))));
        }
    }
    if hugo_bin.is_some() {
        // Removing 230,000 files a round takes minutes on a busy disk: not timed, but slow.
        leftovers.push(hugo_root);
    }
    let files_full = synthetic::count_files(&out);
    let plain_out = dir.join("out-plain");
    let mut plain = Command::new(&bin);
    plain.args(["render", "--all", "--no-precompress", "--out"]);
    plain.arg(&plain_out).arg("--state").arg(&state);
    let without = synthetic::timed(&plain)?;
    let files_plain = synthetic::count_files(&plain_out);
    leftovers.push(plain_out);
    eprintln!(
        "    producer: render --all --no-precompress {:.1} s",
        without.secs
    );
    // The raw CSV's last column is milliseconds.
    let theirs = hugos.iter().map(|(t, _)| t);
    for (system, runs) in [
        ("tamizdat", ours.iter().collect::<Vec<_>>()),
        ("hugo", theirs.collect()),
    ] {
        for (i, t) in runs.into_iter().enumerate() {
            run.raw.push(format!(
                "producer_render_all,{articles},0,{system},{i},{:.3}",
                t.secs * 1000.0
            ));
        }
    }
    let hugo = (!hugos.is_empty()).then(|| Rounds::of(hugos.iter().map(|(t, _)| t)));
    let hugo_files = hugos.first().map_or(0, |(_, n)| *n);
    render_table(
        run,
        &label,
        [
            (&Rounds::of(ours.iter()), files_full),
            (&Rounds::of(std::iter::once(&without)), files_plain),
        ],
        hugo.as_ref().map(|h| (h, hugo_files)),
    );

    // Publishes into the fully rendered tree, in this process (the code behind the hook).
    // The rebuilds above left hundreds of MB for the kernel to write back: let that finish,
    // so the publishes run on a settled disk as a newsroom's do, not behind this harness's
    // own writeback.
    let _ = Command::new("sync").status();
    // The publishes need no bodies: drop the seeded ones (Hugo's copy is written) and load
    // the keys alone, so this process's heap is not 100k bodies in fragments that every
    // allocation of a publish would walk (see `synthetic::seeded_keys`).
    drop(docs);
    let docs = synthetic::seeded_keys(&state).context("reading the seeded articles")?;
    // As the producer binary does (see there).
    tamizdat_producer::keep_freed_memory();
    let mut site = Site::open(SiteOptions::new(out, state)).context("opening the site")?;
    let samples = synthetic::publishes(&mut site, &docs, &spec, publishes)?;
    drop(site);
    let probe = synthetic::fsync_probe(&dir.join("fsync-probe"), 50)?;
    for (i, s) in samples.iter().enumerate() {
        let kind = if s.new { "new" } else { "edit" };
        run.raw.push(format!(
            "producer_publish_{kind},{articles},0,tamizdat,{i},{:.3}",
            s.ms
        ));
        run.raw.push(format!(
            "producer_publish_{kind}_variants,{articles},0,tamizdat,{i},{:.3}",
            s.variants_ms
        ));
        run.raw.push(format!(
            "producer_publish_{kind}_flushed,{articles},0,tamizdat,{i},{:.3}",
            s.flushed_ms
        ));
    }
    publish_table(run, &label, &samples, summary(&probe)[0]);
    for d in leftovers {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

/// Rounds of the full rebuild, ours and Hugo's, turn about.
const RENDER_ROUNDS: usize = 3;

/// Timed runs of one command: the median wall time, the largest peak RSS, every time.
struct Rounds {
    secs: Vec<f64>,
    median: f64,
    peak_rss_mib: f64,
    ok: bool,
}

impl Rounds {
    fn of<'a>(runs: impl Iterator<Item = &'a Timed>) -> Rounds {
        let runs: Vec<&Timed> = runs.collect();
        let secs: Vec<f64> = runs.iter().map(|t| t.secs).collect();
        Rounds {
            median: summary(&secs)[0],
            peak_rss_mib: runs.iter().map(|t| rss(t)).fold(f64::NAN, f64::max),
            ok: runs.iter().all(|t| t.ok),
            secs,
        }
    }

    fn each(&self) -> String {
        self.secs
            .iter()
            .map(|s| f(*s))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn rss(t: &Timed) -> f64 {
    t.peak_rss_kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

fn render_table(
    run: &mut Run,
    label: &str,
    ours: [(&Rounds, usize); 2],
    hugo: Option<(&Rounds, usize)>,
) {
    let miss = missing(run, "hugo");
    let t = table(
        run,
        "8-producer-render",
        "Producer: full rebuild (`render --all`) vs Hugo on the same articles",
        &[
            "site",
            "system",
            "files written",
            "wall (s), median",
            "each round (s)",
            "peak RSS (MiB), largest",
            "ratio hugo/tamizdat wall",
            "ratio hugo/tamizdat RSS",
        ],
    );
    let names = [
        "tamizdat `render --all` (pages + .br/.zst/.gz)",
        "tamizdat `render --all --no-precompress`",
    ];
    let (hw, hr) = hugo.map_or((f64::NAN, f64::NAN), |(h, _)| (h.median, h.peak_rss_mib));
    for (name, (r, files)) in names.into_iter().zip(ours) {
        t.row(vec![
            label.to_owned(),
            if r.ok {
                name.to_owned()
            } else {
                format!("{name} (FAILED)")
            },
            files.to_string(),
            f(r.median),
            r.each(),
            f(r.peak_rss_mib),
            ratio(hw, r.median),
            ratio(hr, r.peak_rss_mib),
        ]);
    }
    match hugo {
        Some((h, files)) => t.row(vec![
            label.to_owned(),
            if h.ok { "hugo" } else { "hugo (FAILED)" }.to_owned(),
            files.to_string(),
            f(h.median),
            h.each(),
            f(h.peak_rss_mib),
            String::new(),
            String::new(),
        ]),
        None => t.row(vec![
            label.to_owned(),
            "hugo".into(),
            miss.unwrap_or_default(),
            "–".into(),
            "–".into(),
            "–".into(),
            "–".into(),
            "–".into(),
        ]),
    }
    t.notes = vec![format!(
        "From the same seeded store, {RENDER_ROUNDS} rounds turn about, each run into an empty tree after a \
         `sync` (untimed): `tamizdat-producer render --all` (the first round's tree is the one the publishes \
         below land in), then `hugo --quiet` on the same articles written as a Hugo content tree with minimal \
         layouts (article, list and tag pages, 20 per page); then `render --all --no-precompress` once (the \
         work Hugo does: no .br/.zst/.gz). Wall time and peak RSS from GNU time; ratios above 1 mean \
         tamizdat is faster or smaller."
    )];
}

fn publish_table(run: &mut Run, label: &str, samples: &[Sample], fsync_p50: f64) {
    let t = table(
        run,
        "8-producer-publish",
        "Producer: publish latency (publish call until the article and every page that lists it are in place, their bytes durable on disk)",
        &[
            "site",
            "publish",
            "samples",
            "p50 ms",
            "p99 ms",
            "max ms",
            "directories flushed p50 / p99 ms",
            "with variants in place p50 / p99 ms",
            "files written (median / max)",
            "phases p50 ms (store / render / stage / commit)",
        ],
    );
    type Filter = fn(&Sample) -> bool;
    let kinds: [(&str, Filter); 3] = [
        ("new article", |s| s.new),
        ("edit of a random old article", |s| !s.new),
        ("all", |_| true),
    ];
    for (name, keep) in kinds {
        let chosen: Vec<&Sample> = samples.iter().filter(|s| keep(s)).collect();
        let of = |g: fn(&Sample) -> f64| summary(&chosen.iter().map(|s| g(s)).collect::<Vec<_>>());
        let lat = of(|s| s.ms);
        let flushed = of(|s| s.flushed_ms);
        let var = of(|s| s.variants_ms);
        let files = of(|s| s.written as f64);
        t.row(vec![
            label.to_owned(),
            name.to_owned(),
            chosen.len().to_string(),
            f(lat[0]),
            f(lat[2]),
            f(lat[3]),
            format!("{} / {}", f(flushed[0]), f(flushed[2])),
            format!("{} / {}", f(var[0]), f(var[2])),
            format!("{} / {}", files[0], files[3]),
            format!(
                "{} / {} / {} / {}",
                f(of(|s| s.timings.store_ms)[0]),
                f(of(|s| s.timings.render_ms)[0]),
                f(of(|s| s.timings.stage_ms)[0]),
                f(of(|s| s.timings.commit_ms)[0])
            ),
        ]);
    }
    t.notes = vec![format!(
        "Through `Site::publish`, the code behind `POST /v1/publish`, in the harness's process, on the tree \
         `render --all` wrote, after a `sync` (the rebuilds' writeback done). Each new article (3 random \
         existing tags) is followed by an edit of a random seeded article (new title); each publish starts \
         once the previous one's variants are in place. The clock stops when the call returns: the plain \
         files' bytes and the store's log are durable (one barrier: a `syncfs` while little else waits for \
         writeback, else an fsync per path) and the files renamed in, their old .br/.zst/.gz removed. The \
         directories those renames changed are flushed after the answer (a second barrier; a crash before \
         it leaves the pages pending, rendered again at the next start): \"directories flushed\" is the \
         time until that is done. The \
         variants are then made by a worker thread; \"with variants in place\" is the time until they are \
         durable too. Files written: plain files whose bytes changed (each also gets 3 variants). Target \
         (issue 4): p50 ≤ 5 ms, p99 ≤ 20 ms. This disk's own 20 KB write + fsync + rename + directory fsync \
         took p50 {} ms during this run.",
        f(fsync_p50)
    )];
}
