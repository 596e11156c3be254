//! Publishes into a site a benchmark run kept (`tamizdat-bench ... --keep`), to profile one
//! publish without re-seeding and re-rendering 100k articles:
//! `cargo run --release --example publish_loop -- STATE OUT N` (N new articles, each followed
//! by an edit). Prints the median and p99 of each kind and the phases' medians. With
//! `NO_VARIANTS=1` in the environment no precompressed variants are made (a quieter profile).
use std::path::PathBuf;
use tamizdat_producer::site::{Site, SiteOptions};
use tamizdat_producer::synthetic::{self, Spec};

/// As in the producer binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tamizdat_producer::keep_freed_memory();
    let mut args = std::env::args().skip(1);
    let usage = "usage: publish_loop STATE OUT N";
    let state = PathBuf::from(args.next().expect(usage));
    let out = PathBuf::from(args.next().expect(usage));
    let n: usize = args.next().expect(usage).parse()?;
    let docs = synthetic::seeded_keys(&state)?;
    let spec = Spec {
        articles: docs.len(),
        tags: (docs.len() / 100).clamp(10, 1000),
        seed: 1,
    };
    let mut opts = SiteOptions::new(out, state);
    opts.precompress = std::env::var_os("NO_VARIANTS").is_none();
    let mut site = Site::open(opts)?;
    let samples = synthetic::publishes(&mut site, &docs, &spec, n)?;
    for new in [true, false] {
        let s: Vec<_> = samples.iter().filter(|s| s.new == new).collect();
        let pick = |f: &dyn Fn(&synthetic::Sample) -> f64, q: f64| {
            let mut v: Vec<f64> = s.iter().map(|x| f(x)).collect();
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q) as usize]
        };
        println!(
            "{}: p50 {:.2} ms p99 {:.2} ms (flushed p50 {:.2}); store {:.2} render {:.2} stage {:.2} commit {:.2}",
            if new { "new " } else { "edit" },
            pick(&|x| x.ms, 0.5),
            pick(&|x| x.ms, 0.99),
            pick(&|x| x.flushed_ms, 0.5),
            pick(&|x| x.timings.store_ms, 0.5),
            pick(&|x| x.timings.render_ms, 0.5),
            pick(&|x| x.timings.stage_ms, 0.5),
            pick(&|x| x.timings.commit_ms, 0.5),
        );
    }
    Ok(())
}
