//! A mirror SIGKILLed again and again while it applies a 200-file changeset never serves a
//! torn file, and converges.

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tamizdat_tests::*;

#[test]
fn repeated_sigkill_mid_apply_never_tears_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    let n = 200u64;
    let old = |i: u64| page(i, 20_000 + i as usize * 131);
    let new = |i: u64| page(100_000 + i, 30_000 + i as usize * 57);
    for i in 0..n {
        write_atomic(&src.join(format!("p/{i}.html")), &old(i));
    }
    let d = Distributor::start(tmp.path(), &src, &[]);
    let t = d.add_mirror("m1");
    let mut m = Mirror::start(tmp.path(), "m1", &t, &[]);
    converge(&src, &[&m], Duration::from_secs(60));

    // The whole new version arrives as one burst, so it travels as one or a few changesets.
    let staging = tmp.path().join("staging");
    for i in 0..n {
        let p = staging.join(format!("{i}.html"));
        fs::create_dir_all(&staging).unwrap();
        fs::write(&p, new(i)).unwrap();
    }
    for i in 0..n {
        fs::rename(
            staging.join(format!("{i}.html")),
            src.join(format!("p/{i}.html")),
        )
        .unwrap();
    }

    // Readers check every file they read, from disk directly, is a complete old or new version.
    let valid: Arc<Vec<HashSet<Vec<u8>>>> = Arc::new(
        (0..n)
            .map(|i| [old(i), new(i)].into_iter().collect())
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let torn = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (valid, stop, torn, root) = (valid.clone(), stop.clone(), torn.clone(), m.root.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..n {
                    if let Ok(b) = fs::read(root.join(format!("p/{i}.html"))) {
                        reads += 1;
                        if !valid[i as usize].contains(&b) {
                            torn.lock().unwrap().push((i, b.len()));
                        }
                    }
                }
            }
            reads
        })
    };

    // Kill it at varied moments while it fetches and applies.
    let mut kills = 0;
    let start = Instant::now();
    while kills < 8 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5 + kills * 17));
        m.proc.kill();
        kills += 1;
        m.restart();
    }
    converge(&src, &[&m], Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    let torn = torn.lock().unwrap();
    assert!(
        torn.is_empty(),
        "torn files seen: {:?}",
        &torn[..torn.len().min(5)]
    );
    // Served over HTTP too, with the new bytes.
    let (code, _, body) = m.get("p/7.html");
    assert_eq!((code, body), (200, new(7)));
}
