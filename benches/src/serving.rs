//! Scenario 7, serving: wrk against mirror m1 and nginx (2 workers, sendfile) on the same bytes,
//! with requests/s, latency percentiles and the mirror's memory under load.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::gen::Site;
use crate::procs::{cpu_secs, status_kb};
use crate::report::{f, mb, ratio};
use crate::tz::{Mirror, Nginx};
use crate::{missing, table, Run};

/// wrk's threads and connections, as in issue 3's reference figures (`wrk -t2 -c64`).
const WRK_THREADS: u32 = 2;
const WRK_CONNECTIONS: u32 = 64;
/// Unmeasured wrk run before each server's first measured one, so neither is measured cold.
const WARMUP_SECS: u32 = 1;
/// Measured runs per server and request, the two servers alternating, so that a drift of this
/// shared VM's speed (up to 3x within the hour) falls on both; the table gives their medians.
/// (With one run each, the ratio of one request moved by 10-25 % between harness runs of the
/// same build: BENCHMARKS.md, runs 17, 18 and 20.)
const ROUNDS: usize = 3;
/// The size of the single page served (the nearest article page is taken).
const SMALL_PAGE_BYTES: u64 = 10 << 10;
/// How often the mirror's VmRSS is read while wrk runs.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// What one wrk run printed.
#[derive(Debug, Default, PartialEq)]
pub struct Wrk {
    /// Requests completed (every one of them is in wrk's latency histogram).
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// wrk's "Non-2xx or 3xx responses" and "Socket errors" lines, if any.
    pub errors: Vec<String>,
}

impl Wrk {
    /// Parses the output of `wrk --latency`; figures it did not print are NaN.
    pub fn parse(text: &str) -> Wrk {
        let mut w = Wrk {
            rps: f64::NAN,
            p50_ms: f64::NAN,
            p75_ms: f64::NAN,
            p90_ms: f64::NAN,
            p99_ms: f64::NAN,
            ..Wrk::default()
        };
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("Requests/sec:") {
                w.rps = v.trim().parse().unwrap_or(f64::NAN);
            } else if line.contains(" requests in ") {
                w.requests = line
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
                w.errors.push(line.to_owned());
            } else if let Some((p, t)) = line.split_once('%') {
                let slot = match p {
                    "50" => &mut w.p50_ms,
                    "75" => &mut w.p75_ms,
                    "90" => &mut w.p90_ms,
                    "99" => &mut w.p99_ms,
                    _ => continue,
                };
                *slot = duration_ms(t.trim());
            }
        }
        w
    }
}

/// wrk's rendering of a duration ("812.00us", "1.23ms", "2.01s", "1.50m") in milliseconds.
fn duration_ms(s: &str) -> f64 {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let Ok(n) = n.parse::<f64>() else {
        return f64::NAN;
    };
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => f64::NAN,
    }
}

/// The mirror's resident memory while one wrk run loaded it.
#[derive(Clone, Copy)]
struct Rss {
    /// Largest VmRSS read, in KB, and how many reads.
    max_kb: u64,
    samples: usize,
    /// VmHWM after the run, in KB: the peak since the reset before the run when `reset` is set,
    /// else since the process started.
    hwm_kb: u64,
    reset: bool,
}

/// One measured wrk run against one server, or the medians of several.
struct Measured {
    wrk: Wrk,
    /// The server's CPU time (user + system, all threads of `cpu_pids`) during the run.
    cpu_secs: f64,
    rss: Option<Rss>,
}

/// Runs wrk once. Meanwhile samples `rss_pid`'s VmRSS (when given), after resetting its VmHWM,
/// and counts the CPU time of `cpu_pids`.
fn wrk_run(
    wrk: &Path,
    url: &str,
    script: Option<&Path>,
    secs: u32,
    rss_pid: Option<i32>,
    cpu_pids: &[i32],
) -> Result<Measured> {
    let mut cmd = Command::new(wrk);
    cmd.arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency");
    if let Some(sc) = script {
        cmd.arg("-s").arg(sc);
    }
    cmd.arg(url);
    let cpu = || cpu_pids.iter().map(|&p| cpu_secs(p, false)).sum::<f64>();
    let cpu_before = cpu();
    let Some(pid) = rss_pid else {
        let out = cmd.output().context("running wrk")?;
        return Ok(Measured {
            wrk: Wrk::parse(&String::from_utf8_lossy(&out.stdout)),
            cpu_secs: cpu() - cpu_before,
            rss: None,
        });
    };
    // "5" resets the peak RSS (VmHWM) to the current RSS (proc(5), Linux 4.0+).
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut max_kb, mut samples) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let kb = status_kb(pid, "VmRSS");
                if kb > 0 {
                    max_kb = max_kb.max(kb);
                    samples += 1;
                }
                std::thread::sleep(RSS_SAMPLE_INTERVAL);
            }
            (max_kb, samples)
        })
    };
    let out = cmd.output().context("running wrk");
    let cpu_secs = cpu() - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let (max_kb, samples) = sampler.join().expect("the RSS sampler does not panic");
    let out = out?;
    let rss = Rss {
        max_kb,
        samples,
        hwm_kb: status_kb(pid, "VmHWM"),
        reset,
    };
    Ok(Measured {
        wrk: Wrk::parse(&String::from_utf8_lossy(&out.stdout)),
        cpu_secs,
        rss: Some(rss),
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The medians of `runs`, figure by figure (each percentile, req/s and CPU per request on its
/// own); the requests of the median run; every error; the largest RSS.
fn medians(runs: &[Measured]) -> Measured {
    let of = |g: fn(&Measured) -> f64| median(runs.iter().map(g).collect());
    let requests = of(|m| m.wrk.requests as f64).round() as u64;
    let wrk = Wrk {
        requests,
        rps: of(|m| m.wrk.rps),
        p50_ms: of(|m| m.wrk.p50_ms),
        p75_ms: of(|m| m.wrk.p75_ms),
        p90_ms: of(|m| m.wrk.p90_ms),
        p99_ms: of(|m| m.wrk.p99_ms),
        errors: runs.iter().flat_map(|m| m.wrk.errors.clone()).collect(),
    };
    let rss = runs.iter().filter_map(|m| m.rss).reduce(|a, r| Rss {
        max_kb: a.max_kb.max(r.max_kb),
        samples: a.samples + r.samples,
        hwm_kb: a.hwm_kb.max(r.hwm_kb),
        reset: a.reset && r.reset,
    });
    Measured {
        cpu_secs: of(|m| m.cpu_secs / m.wrk.requests as f64) * requests as f64,
        wrk,
        rss,
    }
}

/// Processes whose parent is `pid` (nginx's workers).
fn children(pid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                // after "pid (comm) state ", the parent's pid
                s.rfind(')')
                    .and_then(|i| s[i + 1..].split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// wrk against mirror m1 and nginx (2 workers, sendfile) on the same bytes.
pub(crate) fn serving(
    run: &mut Run,
    dir: &Path,
    label: &str,
    src: &Path,
    site: &Site,
    mirror: &Mirror,
) -> Result<()> {
    let miss = missing(run, "nginx").or_else(|| missing(run, "wrk"));
    if let Some(m) = miss {
        run.notes.push(format!("serving: {m}"));
        return Ok(());
    }
    let nginx = run.anchors["nginx"].clone().unwrap();
    let wrk = run.anchors["wrk"].clone().unwrap();
    let ng = Nginx::start(&nginx, &dir.join("nginx"), src)?;
    let lua = dir.join("mix.lua");
    let mut s = String::from("local paths = {\n");
    for a in site.articles.iter().take(1000) {
        writeln!(s, "  \"/{a}\",").unwrap();
    }
    s.push_str("}\nmath.randomseed(42)\nrequest = function() return wrk.format(nil, paths[math.random(#paths)]) end\n");
    std::fs::write(&lua, s)?;
    // issue 3's "one 10 KB page": the article page whose size is nearest to it
    let (small_len, small) = site
        .articles
        .iter()
        .filter_map(|a| Some((std::fs::metadata(src.join(a)).ok()?.len(), a)))
        .min_by_key(|(len, _)| len.abs_diff(SMALL_PAGE_BYTES))
        .context("the site has no article pages")?;
    let small = format!("/{small}");
    let cases: Vec<(String, &str, String, Option<&Path>)> = vec![
        (
            format!("one page ({} KB)", f(small_len as f64 / 1024.0)),
            "small",
            small,
            None,
        ),
        (
            "1,000-page mix".into(),
            "mix",
            "/".into(),
            Some(lua.as_path()),
        ),
        (
            "5 MB file".into(),
            "5mb",
            "/media/bench-5mb.bin".into(),
            None,
        ),
    ];
    let secs = run.cfg.wrk_secs;
    let files = label.split(' ').next().unwrap_or("0").to_owned();
    let mut hwm_reset = true;
    let servers = [
        ("tamizdat", mirror.http, Some(mirror.proc.pid())),
        ("nginx", ng.addr, None),
    ];
    for (name, key, path, script) in cases {
        let mut runs: [Vec<Measured>; 2] = Default::default();
        for round in 0..ROUNDS {
            for (i, &(system, addr, rss_pid)) in servers.iter().enumerate() {
                let url = format!("http://{addr}{path}");
                if round == 0 {
                    wrk_run(&wrk, &url, script, WARMUP_SECS, None, &[])?;
                }
                // whose CPU counts: the mirror; nginx's workers (forked: they answered the warm-up)
                let cpu_pids = match rss_pid {
                    Some(pid) => vec![pid],
                    None => children(ng.proc.pid()),
                };
                let m = wrk_run(&wrk, &url, script, secs, rss_pid, &cpu_pids)?;
                let w = &m.wrk;
                for e in &w.errors {
                    eprintln!("    wrk {name} on {system}: {e}");
                }
                eprintln!(
                    "    {name}, {system}, round {}: {} req/s, p50 {} ms, p99 {} ms",
                    round + 1,
                    f(w.rps),
                    f(w.p50_ms),
                    f(w.p99_ms)
                );
                for (p, v) in [
                    ("rps", w.rps),
                    ("p50", w.p50_ms),
                    ("p90", w.p90_ms),
                    ("p99", w.p99_ms),
                ] {
                    run.raw.push(format!(
                        "serving_{key}_{p},{files},1,{system},{round},{v:.3}"
                    ));
                }
                hwm_reset &= m.rss.as_ref().is_none_or(|r| r.reset);
                runs[i].push(m);
            }
        }
        let res: Vec<(&str, Measured)> = servers
            .iter()
            .zip(&runs)
            .map(|(&(system, ..), r)| (system, medians(r)))
            .collect();
        let t = table(
            run,
            "7-serving",
            "Serving: wrk against a tamizdat mirror vs nginx (2 workers, sendfile) on the same bytes",
            &[
                "site",
                "request",
                "server",
                "requests (median run)",
                "req/s",
                "p50 ms",
                "p99 ms",
                "server CPU µs per request",
                "RSS under load, max (MB)",
                "VmHWM (MB)",
                "errors",
            ],
        );
        for (system, m) in &res {
            let w = &m.wrk;
            let (rss_cell, hwm_cell) = match &m.rss {
                Some(r) => (
                    format!("{} ({} samples)", mb(r.max_kb as f64 * 1024.0), r.samples),
                    mb(r.hwm_kb as f64 * 1024.0),
                ),
                None => ("–".into(), "–".into()),
            };
            t.row(vec![
                label.to_owned(),
                name.clone(),
                (*system).to_owned(),
                w.requests.to_string(),
                f(w.rps),
                f(w.p50_ms),
                f(w.p99_ms),
                f(m.cpu_secs * 1e6 / w.requests as f64),
                rss_cell,
                hwm_cell,
                if w.errors.is_empty() {
                    "0".into()
                } else {
                    w.errors.join("; ")
                },
            ]);
        }
        let (tz, ngx) = (&res[0].1.wrk, &res[1].1.wrk);
        let cpu_per_req = |m: &Measured| m.cpu_secs / m.wrk.requests as f64;
        t.row(vec![
            label.to_owned(),
            name,
            "**ratio (above 1: tamizdat better)**".into(),
            String::new(),
            ratio(tz.rps, ngx.rps),
            ratio(ngx.p50_ms, tz.p50_ms),
            ratio(ngx.p99_ms, tz.p99_ms),
            ratio(cpu_per_req(&res[1].1), cpu_per_req(&res[0].1)),
            String::new(),
            String::new(),
            String::new(),
        ]);
        t.notes = vec![format!(
            "`wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{secs}s --latency` (threads and connections as in issue 3's \
             reference figures), {ROUNDS} measured runs per server and request, the two servers taking turns, \
             after a {WARMUP_SECS} s wrk run per server that is not counted; loopback; wrk shares the 2 cores with \
             the server. Each figure is the median of the {ROUNDS} runs' (req/s, each percentile and CPU per \
             request separately; every run is in the raw CSV); the \"requests\" column is the median run's count \
             (wrk records the latency of every request; it does not correct for coordinated omission). The mirror is the `tamizdat-mirror` process (its built-in \
             tamizdat-serve, default flags), nginx serves the source tree (same bytes). Ratio row: req/s is \
             tamizdat / nginx, latencies are nginx / tamizdat, so above 1 means tamizdat is better in every column. \
             RSS: the mirror's VmRSS read from /proc/PID/status every {} ms during the measured runs (the largest \
             reading of all and how many readings), and the largest of its VmHWM read after each run{}. Server CPU \
             per request: user + system time of the mirror process (all its threads) or of nginx's worker processes \
             during a measured run, from /proc/PID/stat, divided by that run's requests; on a machine shared with other work it moves less \
             than req/s does. Issue 3's targets: req/s at least \
             nginx's and p99 no worse on the small pages, at least 0.8x nginx's req/s on the 5 MB file, mirror RSS \
             under load at most 64 MB. The 1,000-page mix picks random article pages with a wrk Lua script.",
            RSS_SAMPLE_INTERVAL.as_millis(),
            if hwm_reset {
                ", after resetting it (`echo 5 > /proc/PID/clear_refs`) just before each run: the peak of the runs"
            } else {
                " (resetting it through /proc/PID/clear_refs failed, so it is the peak since the mirror started, \
                 initial sync included)"
            }
        )];
    }
    drop(ng);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 5s test @ http://127.0.0.1:8080/media/bench-5mb.bin
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   187.26ms   40.11ms 505.32ms   85.01%
    Req/Sec   170.35     40.02   250.00     70.00%
  Latency Distribution
     50%  812.00us
     75%    1.23ms
     90%    2.01s
     99%    1.50m
  1712 requests in 5.01s, 8.36GB read
  Socket errors: connect 0, read 0, write 0, timeout 3
Requests/sec:    341.72
Transfer/sec:      1.67GB
";

    #[test]
    fn parses_wrk_latency_output() {
        let w = Wrk::parse(OUT);
        assert_eq!(w.requests, 1712);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9 * b, "{a} != {b}");
        close(w.rps, 341.72);
        close(w.p50_ms, 0.812);
        close(w.p75_ms, 1.23);
        close(w.p90_ms, 2010.0);
        close(w.p99_ms, 90_000.0);
        assert_eq!(
            w.errors,
            ["Socket errors: connect 0, read 0, write 0, timeout 3"]
        );
    }

    #[test]
    fn medians_are_taken_figure_by_figure() {
        let run = |rps: f64, p99: f64, requests: u64, cpu: f64, rss_kb: u64| Measured {
            wrk: Wrk {
                requests,
                rps,
                p50_ms: rps / 1000.0,
                p75_ms: f64::NAN,
                p90_ms: 1.0,
                p99_ms: p99,
                errors: if rps < 1.0 {
                    vec!["timeout".into()]
                } else {
                    vec![]
                },
            },
            cpu_secs: cpu,
            rss: Some(Rss {
                max_kb: rss_kb,
                samples: 10,
                hwm_kb: rss_kb + 1,
                reset: true,
            }),
        };
        let m = medians(&[
            run(100.0, 9.0, 500, 1.0, 30),
            run(300.0, 1.0, 1500, 1.5, 10),
            run(200.0, 5.0, 1000, 4.0, 20),
        ]);
        assert_eq!(m.wrk.rps, 200.0);
        assert_eq!(m.wrk.p50_ms, 0.2);
        assert_eq!(m.wrk.p99_ms, 5.0);
        assert_eq!(m.wrk.requests, 1000);
        // CPU per request: 2 ms, 1 ms, 4 ms; the median, times the median run's requests
        assert!((m.cpu_secs - 0.002 * 1000.0).abs() < 1e-9, "{}", m.cpu_secs);
        let rss = m.rss.unwrap();
        assert_eq!((rss.max_kb, rss.samples, rss.hwm_kb), (30, 30, 31));
        assert!(m.wrk.errors.is_empty());
        assert!(median(vec![]).is_nan());
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }

    #[test]
    fn missing_figures_are_nan() {
        let w = Wrk::parse("unable to connect to 127.0.0.1:1 Connection refused\n");
        assert!(w.rps.is_nan() && w.p99_ms.is_nan());
        assert_eq!(w.requests, 0);
        assert!(duration_ms("12.0parsecs").is_nan());
    }
}
