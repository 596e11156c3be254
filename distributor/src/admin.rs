//! The admin API: `GET /v1/status` (JSON), `GET /metrics` (Prometheus text), and `GET /`, a
//! status page for people. Bind it to loopback or a management network only.

use crate::history::{self, History};
use crate::hub::Hub;
use crate::index::Index;
use crate::status::{collect, MirrorStatus, Status};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Seconds of lag (or of silence) after which the status page calls a mirror stale, unless
/// `?max_lag=` says otherwise.
pub const STALE_AFTER_SECS: f64 = 60.0;

#[derive(Clone)]
struct Admin {
    hub: Arc<Hub>,
    index: Arc<Index>,
    history: Arc<History>,
}

/// The admin routes; also starts the lag sampler behind the status page's sparklines.
pub fn router(hub: Arc<Hub>, index: Arc<Index>) -> Router {
    let history = Arc::new(History::default());
    history::spawn_sampler(&hub, index.clone(), history.clone());
    Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .with_state(Admin {
            hub,
            index,
            history,
        })
}

async fn snapshot(a: &Admin) -> Result<Status, Response> {
    let (hub, index) = (a.hub.clone(), a.index.clone());
    tokio::task::spawn_blocking(move || collect(&hub, &index))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response())
}

async fn status(State(a): State<Admin>) -> Response {
    match snapshot(&a).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    let s = match snapshot(&a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &registry(&a.hub, &s)) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

type Labels = Vec<(&'static str, String)>;
type F64Gauge = Gauge<f64, AtomicU64>;

/// A registry for one scrape: the hub's counters (shared) and gauges filled from `s`.
fn registry(hub: &Hub, s: &Status) -> Registry {
    let mut reg = Registry::with_prefix("tamizdat");
    hub.metrics.register(&mut reg);
    let head = Gauge::<i64>::default();
    head.set(s.head_seq as i64);
    reg.register("head_seq", "Sequence of the newest changeset.", head);
    let depth = Gauge::<i64>::default();
    depth.set(hub.queue_depth() as i64);
    reg.register(
        "live_queue_depth",
        "Changesets in the live fan-out queue not yet taken by the slowest mirror session.",
        depth,
    );
    let per_mirror = |reg: &mut Registry, name: &str, help: &str, f: fn(&MirrorStatus) -> f64| {
        let fam = Family::<Labels, F64Gauge>::default();
        for m in &s.mirrors {
            fam.get_or_create(&vec![("mirror", m.name.clone())])
                .set(f(m));
        }
        reg.register(name, help, fam);
    };
    per_mirror(
        &mut reg,
        "mirror_acked_seq",
        "Newest sequence the mirror has applied and acknowledged.",
        |m| m.acked_seq as f64,
    );
    per_mirror(
        &mut reg,
        "mirror_lag_changes",
        "Changes a mirror has not acknowledged.",
        |m| m.lag_changes as f64,
    );
    per_mirror(
        &mut reg,
        "mirror_lag_seconds",
        "Age of the oldest change a mirror has not acknowledged.",
        |m| m.lag_seconds,
    );
    per_mirror(
        &mut reg,
        "mirror_connected",
        "1 while the mirror is connected.",
        |m| m.connected as u8 as f64,
    );
    per_mirror(
        &mut reg,
        "mirror_last_seen_timestamp_seconds",
        "When the mirror was last heard from (Unix time; 0: never).",
        |m| m.last_seen_ms as f64 / 1000.0,
    );
    let sent = Family::<Labels, Counter>::default();
    let conns = Family::<Labels, Counter>::default();
    let opened = hub.connections();
    for m in &s.mirrors {
        let l = vec![("mirror", m.name.clone())];
        sent.get_or_create(&l).inc_by(m.bytes_sent);
        conns
            .get_or_create(&l)
            .inc_by(opened.get(&m.name).copied().unwrap_or(0));
    }
    reg.register(
        "mirror_bytes_sent",
        "Bytes of frames sent to the mirror (kept across restarts).",
        sent,
    );
    reg.register(
        "mirror_connections",
        "Sessions the mirror opened since the distributor started (1 + reconnects).",
        conns,
    );
    reg
}

#[derive(serde::Deserialize)]
struct PageQuery {
    max_lag: Option<f64>,
}

async fn page(State(a): State<Admin>, Query(q): Query<PageQuery>) -> Response {
    let max_lag = q.max_lag.unwrap_or(STALE_AFTER_SECS);
    if !(max_lag.is_finite() && max_lag >= 0.0) {
        return (
            StatusCode::BAD_REQUEST,
            "max_lag: a number of seconds ≥ 0\n",
        )
            .into_response();
    }
    let s = match snapshot(&a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    Html(render_page(&s, &a.history, max_lag)).into_response()
}

/// The status page: a table of mirrors with a sparkline of the last hour's lag. Refreshes
/// itself every 5 s with a meta refresh: no JavaScript.
fn render_page(s: &Status, history: &History, max_lag: f64) -> String {
    let mut rows = String::new();
    let (mut fresh, mut stale) = (0, 0);
    for m in &s.mirrors {
        let lag = history::effective_lag(s, m);
        let ok = m.state != "revoked" && m.connected && lag <= max_lag;
        let verdict = if m.state == "revoked" {
            "revoked"
        } else if ok {
            fresh += 1;
            "fresh"
        } else {
            stale += 1;
            "stale"
        };
        let seen = if m.last_seen_ms == 0 {
            "never".to_owned()
        } else {
            ago(s.now_ms.saturating_sub(m.last_seen_ms))
        };
        let mut samples = history.get(&m.name);
        samples.push((s.now_ms, lag));
        let _ = writeln!(
            rows,
            "<tr class={verdict} data-mirror=\"{name}\"><td>{name}</td><td class=verdict>{verdict}</td>\
             <td>{state}</td><td>{addr}</td><td class=num>{acked}/{head}</td><td class=num>{lc}</td>\
             <td class=num>{ls:.1}</td><td>{spark}</td><td>{seen}</td><td>{ver}</td><td>{err}</td></tr>",
            // Mirror names are restricted to [A-Za-z0-9._-]: nothing to escape.
            name = m.name,
            state = m.state,
            addr = m.remote_addr.as_deref().unwrap_or("-"),
            acked = m.acked_seq,
            head = s.head_seq,
            lc = m.lag_changes,
            ls = m.lag_seconds,
            spark = sparkline(&samples, s.now_ms),
            ver = escape(m.version.as_deref().unwrap_or("-")),
            err = escape(m.last_error.as_deref().unwrap_or("")),
        );
    }
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta http-equiv=refresh content=5><title>tamizdat: {fresh} fresh, {stale} stale</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:.35em .9em;text-align:left;border-bottom:1px solid #ddd;white-space:nowrap}}\
         .num{{text-align:right;font-variant-numeric:tabular-nums}}\
         tr.stale td.verdict{{color:#fff;background:#c0392b;font-weight:bold}}\
         tr.fresh td.verdict{{color:#1e7d32;font-weight:bold}}tr.revoked{{color:#999}}\
         svg{{vertical-align:middle}}</style></head><body>\
         <h1>tamizdat distributor</h1>\
         <p>site <code>{site}</code> &middot; head {head} &middot; {fresh} fresh, {stale} stale \
         (stale: offline, or more than {max_lag} s behind) &middot; distributor {version}</p>\
         <table><thead><tr><th>mirror</th><th>freshness</th><th>state</th><th>address</th>\
         <th>acked/head</th><th>lag (changes)</th><th>lag (s)</th><th>lag, last hour</th>\
         <th>last seen</th><th>version</th><th>last error</th></tr></thead><tbody>\n{rows}</tbody></table>\
         <p><a href=/v1/status>JSON</a> &middot; <a href=/metrics>metrics</a></p></body></html>\n",
        site = s.site,
        head = s.head_seq,
        version = env!("CARGO_PKG_VERSION"),
    )
}

fn ago(ms: u64) -> String {
    match ms / 1000 {
        0..=119 => format!("{:.1} s ago", ms as f64 / 1000.0),
        s @ 120..=7199 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

/// An inline SVG line of lag over the hour before `now_ms`, scaled to its own maximum (shown in
/// the tooltip).
fn sparkline(samples: &[history::Sample], now_ms: u64) -> String {
    const W: f64 = 180.0;
    const H: f64 = 24.0;
    let hour = 3_600_000f64;
    let recent: Vec<_> = samples
        .iter()
        .map(|&(t, lag)| (now_ms.saturating_sub(t) as f64, lag))
        .filter(|&(age, _)| age <= hour)
        .collect();
    let max = recent.iter().map(|s| s.1).fold(1.0f64, f64::max);
    let mut points = String::new();
    let mut last = (W, H - 1.0);
    for (age, lag) in recent {
        let x = W * (1.0 - age / hour);
        let y = H - 1.0 - (H - 2.0) * (lag / max);
        let _ = write!(points, "{x:.1},{y:.1} ");
        last = (x, y);
    }
    format!(
        "<svg width={W} height={H} viewBox=\"0 0 {W} {H}\" role=img>\
         <title>lag over the last hour; top = {max:.1} s</title>\
         <rect width={W} height={H} fill=#f4f4f4 />\
         <polyline points=\"{}\" fill=none stroke=#c0392b stroke-width=1.5 />\
         <circle cx={:.1} cy={:.1} r=2.5 fill=#c0392b /></svg>",
        points.trim_end(),
        last.0 - 2.5,
        last.1.clamp(2.5, H - 2.5),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn sparkline_drops_samples_older_than_an_hour() {
        let now = 10_000_000;
        let svg = sparkline(
            &[(now - 4_000_000, 5.0), (now - 1_800_000, 2.0), (now, 4.0)],
            now,
        );
        assert!(svg.contains("points=\"90.0,"), "{svg}");
        assert!(svg.contains("top = 4.0 s"), "{svg}");
    }
}
