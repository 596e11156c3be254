//! `tamizdat-distributor lag`: the mirrors' lag as a table or JSON, and a monitoring check.
//!
//! Exit codes: 0 all mirrors within `--max-lag`; 1 at least one is not (its data lag is over
//! the limit, or it has not been heard from for longer than the limit); 2 the distributor
//! could not be asked. `--watch` redraws every `--interval` seconds until Ctrl-C and exits with
//! the code of its last look. The JSON is `/v1/status` as is (fields documented in
//! docs/operator.md; fields are added, never renamed or removed).

use crate::status::Status;
use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Fetches `/v1/status` from the admin URL (`http://host:port`).
pub async fn fetch(admin: &str) -> Result<Status> {
    let uri: hyper::Uri = format!("{}/v1/status", admin.trim_end_matches('/'))
        .parse()
        .context("bad --admin URL")?;
    let host = uri.host().context("--admin URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let go = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get(uri.path())
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        if !resp.status().is_success() {
            bail!("the distributor answered {}", resp.status());
        }
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .context("the distributor did not answer within 10 s")?
        .with_context(|| format!("Failed to ask the distributor at {admin}"))
}

/// Names of mirrors over the limit.
pub fn over(s: &Status, max_lag: f64) -> Vec<String> {
    s.mirrors
        .iter()
        .filter(|m| m.state != "revoked")
        .filter(|m| {
            let silent = s.now_ms.saturating_sub(m.last_seen_ms) as f64 / 1000.0;
            m.lag_seconds > max_lag || (!m.connected && silent > max_lag)
        })
        .map(|m| m.name.clone())
        .collect()
}

pub fn table(s: &Status) -> String {
    let mut out = format!(
        "{:<20} {:<12} {:>21} {:>8} {:>9} {:>10}\n",
        "MIRROR", "STATE", "ACKED/HEAD", "LAG", "LAG(s)", "SEEN(s)"
    );
    for m in &s.mirrors {
        let seen = if m.last_seen_ms == 0 {
            "never".to_owned()
        } else {
            format!(
                "{:.1}",
                s.now_ms.saturating_sub(m.last_seen_ms) as f64 / 1000.0
            )
        };
        out.push_str(&format!(
            "{:<20} {:<12} {:>21} {:>8} {:>9.1} {:>10}\n",
            m.name,
            m.state,
            format!("{}/{}", m.acked_seq, s.head_seq),
            m.lag_changes,
            m.lag_seconds,
            seen
        ));
        if let Some(e) = &m.last_error {
            out.push_str(&format!("  {}: {e}\n", m.name));
        }
    }
    out
}

/// The exit code for one look at the status: 0 fresh, 1 some mirror over `max_lag`.
pub fn verdict(s: &Status, max_lag: Option<f64>) -> (u8, Vec<String>) {
    match max_lag {
        Some(max) => {
            let bad = over(s, max);
            (u8::from(!bad.is_empty()), bad)
        }
        None => (0, Vec::new()),
    }
}

/// One look: prints the table (or one JSON document) and returns the exit code (0, 1 or 2).
pub async fn once(admin: &str, json: bool, max_lag: Option<f64>) -> u8 {
    let status = match fetch(admin).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serialises")
        );
    } else {
        print!("{}", table(&status));
    }
    let (code, bad) = verdict(&status, max_lag);
    if code != 0 {
        eprintln!("over {} s: {}", max_lag.unwrap_or(0.0), bad.join(", "));
    }
    code
}

/// `lag --watch`: redraws the table in place every `interval` (like `top`), or with `json`
/// prints one compact JSON document per line, until `stop` resolves. Returns the exit code of
/// the last look, so a script that stops the watch still learns the verdict.
pub async fn watch(
    admin: &str,
    json: bool,
    max_lag: Option<f64>,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> u8 {
    use std::io::Write;
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut code = 0;
    loop {
        tokio::select! {
            _ = &mut stop => return code,
            _ = tick.tick() => {}
        }
        let mut screen = String::new();
        match fetch(admin).await {
            Ok(s) => {
                let (c, bad) = verdict(&s, max_lag);
                code = c;
                if json {
                    screen = serde_json::to_string(&s).expect("status serialises");
                    screen.push('\n');
                } else {
                    screen.push_str(&format!(
                        "tamizdat lag: {admin}  head {}  every {:.1} s  (Ctrl-C to quit)\n\n",
                        s.head_seq,
                        interval.as_secs_f64()
                    ));
                    screen.push_str(&table(&s));
                    if c != 0 {
                        screen.push_str(&format!(
                            "\nover {} s: {}\n",
                            max_lag.unwrap_or(0.0),
                            bad.join(", ")
                        ));
                    }
                }
            }
            Err(e) => {
                code = 2;
                if json {
                    eprintln!("error: {e:#}");
                } else {
                    screen = format!("tamizdat lag: {admin}\n\nerror: {e:#}\n");
                }
            }
        }
        let mut out = std::io::stdout().lock();
        if !json {
            // Home the cursor, clear the screen: redraw in place.
            let _ = out.write_all(b"\x1b[H\x1b[2J");
        }
        let _ = out.write_all(screen.as_bytes());
        let _ = out.flush();
    }
}
