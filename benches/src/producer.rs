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

    // The full rebuild a newsroom runs (pages and their .br/.zst/.gz), which is also the tree
    // the publishes below land in; then the same without variants, which is Hugo's work.
    let mut full = Command::new(&bin);
    full.args(["render", "--all", "--out"]).arg(&out);
    full.arg("--state").arg(&state);
    let with_variants = synthetic::timed(&full)?;
    let files_full = synthetic::count_files(&out);
    eprintln!("    producer: render --all {:.1} s", with_variants.secs);
    let plain_out = dir.join("out-plain");
    let mut plain = Command::new(&bin);
    plain.args(["render", "--all", "--no-precompress", "--out"]);
    plain.arg(&plain_out).arg("--state").arg(&state);
    let without = synthetic::timed(&plain)?;
    let files_plain = synthetic::count_files(&plain_out);
    // The rebuilds' and Hugo's trees are removed after the publishes are timed, not before:
    // on ext4 file creation is slow for minutes after a big tree's removal (inode allocation
    // scans the recently freed inodes; benches/README.md), and every publish creates files.
    let mut leftovers = vec![plain_out];
    eprintln!(
        "    producer: render --all --no-precompress {:.1} s",
        without.secs
    );
    let hugo = match run.anchors["hugo"].clone() {
        Some(h) => {
            let root = dir.join("hugo");
            synthetic::write_hugo_site(&root, &docs)?;
            let mut cmd = Command::new(h);
            cmd.current_dir(&root).args(["--quiet", "-d", "public"]);
            let t = synthetic::timed(&cmd)?;
            eprintln!("    producer: hugo {:.1} s", t.secs);
            let files = synthetic::count_files(&root.join("public"));
            // Removing 230,000 files takes minutes on a busy disk: not timed, but slow.
            leftovers.push(root);
            Some((t, files))
        }
        None => None,
    };
    render_table(
        run,
        &label,
        [(&with_variants, files_full), (&without, files_plain)],
        hugo.as_ref(),
    );

    // Publishes into the fully rendered tree, in this process (the code behind the hook).
    if !with_variants.ok {
        anyhow::bail!("render --all failed: {}", with_variants.stderr_tail);
    }
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

fn rss(t: &Timed) -> f64 {
    t.peak_rss_kib.map_or(f64::NAN, |k| k as f64 / 1024.0)
}

fn render_table(
    run: &mut Run,
    label: &str,
    ours: [(&Timed, usize); 2],
    hugo: Option<&(Timed, usize)>,
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
            "wall (s)",
            "peak RSS (MiB)",
            "ratio hugo/tamizdat wall",
            "ratio hugo/tamizdat RSS",
        ],
    );
    let names = [
        "tamizdat `render --all` (pages + .br/.zst/.gz)",
        "tamizdat `render --all --no-precompress`",
    ];
    for (name, (timed, files)) in names.into_iter().zip(ours) {
        let (hw, hr) = hugo.map_or((f64::NAN, f64::NAN), |(h, _)| (h.secs, rss(h)));
        t.row(vec![
            label.to_owned(),
            if timed.ok {
                name.to_owned()
            } else {
                format!("{name} (FAILED)")
            },
            files.to_string(),
            f(timed.secs),
            f(rss(timed)),
            ratio(hw, timed.secs),
            ratio(hr, rss(timed)),
        ]);
    }
    match hugo {
        Some((h, files)) => t.row(vec![
            label.to_owned(),
            if h.ok { "hugo" } else { "hugo (FAILED)" }.to_owned(),
            files.to_string(),
            f(h.secs),
            f(rss(h)),
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
        ]),
    }
    t.notes = vec![
        "One run each, one after the other, from the same seeded store: `tamizdat-producer render --all` into an \
         empty tree (this is the tree the publishes below land in), then `--no-precompress` into another empty \
         tree (the work Hugo does: no .br/.zst/.gz), then `hugo --quiet` on the same articles written as a Hugo \
         content tree with minimal layouts (article, list and tag pages, 20 per page). Wall time and peak RSS \
         from GNU time; ratios above 1 mean tamizdat is faster or smaller."
            .into(),
    ];
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
