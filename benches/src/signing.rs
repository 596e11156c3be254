//! The cost of trust: signing a changeset on the origin and verifying it on a mirror, in
//! process, with the code both binaries use (`tamizdat_protocol::sign`). The end-to-end
//! latency tables already include it (the binaries sign and verify every changeset); this
//! table says how much of that it is.

use std::time::Instant;

use tamizdat_protocol::{
    sign, ContentHash, Mode, Op, OpsDigest, SiteId, SitePath, SiteSigner, Statement, GENESIS,
};

use crate::report::f;
use crate::{table, Run};

fn ops(n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| Op::Put {
            path: SitePath::new(format!("news/2026/11/article-{i:06}/index.html")).unwrap(),
            hash: ContentHash::of(&i.to_le_bytes()),
            size: 20_000,
            mode: 0o644,
            mtime: 1_790_000_000,
        })
        .collect()
}

/// Median of `reps` timings of `f`, in microseconds.
fn median_us(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

pub fn measure(run: &mut Run) {
    let signer = SiteSigner::generate();
    let key = signer.key();
    let site = SiteId([1; 16]);
    let cases: [(&str, usize, Mode); 4] = [
        ("live edit, 1 file", 1, Mode::Live),
        ("burst, 200 files", 200, Mode::Live),
        ("catch-up, 1,000 files", 1000, Mode::CatchUp),
        ("full resync, 100,000 files", 100_000, Mode::Full),
    ];
    for (label, n, kind) in cases {
        let ops = ops(n);
        let reps = if n >= 100_000 { 7 } else { 201 };
        let statement = |ops: &[Op]| {
            let ops_digest = OpsDigest::of(ops);
            Statement {
                site,
                seq: 2,
                base_seq: 1,
                kind,
                prev: GENESIS,
                ops_digest,
                next: sign::link(site, 2, &GENESIS, &ops_digest),
            }
        };
        let signed = signer.sign(&statement(&ops));
        let sign_us = median_us(reps, || {
            std::hint::black_box(signer.sign(&statement(&ops)));
        });
        let verify_us = median_us(reps, || {
            sign::verify(&key, &statement(&ops), &signed).expect("verifies");
        });
        table(
            run,
            "signing",
            "The cost of signed changesets (in process, median; included in every latency above)",
            &[
                "changeset",
                "ops",
                "origin: digest + sign (µs)",
                "mirror: digest + verify (µs)",
            ],
        )
        .row(vec![label.into(), n.to_string(), f(sign_us), f(verify_us)]);
    }
}
