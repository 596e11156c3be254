//! The README's first command, `deploy/demo.sh --once`, on the debug binaries: a distributor
//! and two mirrors, an edit, an article published through the producer's hook, both seen on
//! both mirrors; and when it exits, nothing it started is left running.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tamizdat_tests::bin;

/// PIDs of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn the_demo_shows_an_edit_and_an_article_arrive_and_stops_everything_it_started() {
    let bins = bin("tamizdat-distributor")
        .parent()
        .expect("binaries have a directory")
        .to_path_buf();
    for b in ["tamizdat-mirror", "tamizdat-producer"] {
        bin(b);
    }
    let tmp = tempfile::tempdir().unwrap();
    let demo_dir = tmp.path().join("demo");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo.sh");
    let (log_out, log_err) = (tmp.path().join("demo.out"), tmp.path().join("demo.err"));
    let mut child = Command::new("bash")
        .arg(&script)
        .arg("--once")
        .env("DEMO_BIN", &bins)
        .env("DEMO_DIR", &demo_dir)
        .stdout(std::fs::File::create(&log_out).unwrap())
        .stderr(std::fs::File::create(&log_err).unwrap())
        .process_group(0)
        .spawn()
        .expect("bash runs the demo");
    // The demo bounds each of its waits; this bounds the whole, so a demo that hangs (its
    // cleanup waiting on children it failed to stop, say) fails instead of stalling CI.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            // SAFETY: a plain syscall on the process group the demo leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&log_out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&log_err).unwrap_or_default();
    let left = processes_mentioning(&demo_dir.to_string_lossy());
    for &pid in &left {
        // SAFETY: a plain syscall; a PID that is gone by now only makes it fail.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = status.unwrap_or_else(|| panic!("the demo hung\n{stdout}\n{stderr}"));
    assert!(status.success(), "demo failed\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("the edit is served by both mirrors"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the article and the new front page are served by both mirrors"),
        "{stdout}"
    );
    assert!(left.is_empty(), "the demo left processes running: {left:?}");
}
