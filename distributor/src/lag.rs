//! `tamizdat-distributor lag`: the mirrors' lag as a table or JSON, and a monitoring check.
//!
//! Exit codes: 0 all mirrors within `--max-lag`; 1 at least one is not (its data lag is over
//! the limit, or it has not been heard from for longer than the limit); 2 the distributor
//! could not be asked.

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
