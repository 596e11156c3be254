//! The admin API: `GET /v1/status` (JSON), `GET /metrics` (Prometheus text), and `GET /`, a
//! status page for people. Bind it to loopback or a management network only.

use crate::hub::Hub;
use crate::index::Index;
use crate::status::{collect, Status};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

#[derive(Clone)]
struct Admin {
    hub: Arc<Hub>,
    index: Arc<Index>,
}

pub fn router(hub: Arc<Hub>, index: Arc<Index>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .with_state(Admin { hub, index })
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
    let mut out = String::new();
    a.hub.metrics.render(&mut out);
    if let Ok(s) = snapshot(&a).await {
        gauge(
            &mut out,
            "head_seq",
            "Sequence of the newest changeset.",
            [(None, s.head_seq as f64)],
        );
        let per_mirror = |f: fn(&crate::status::MirrorStatus) -> f64| {
            s.mirrors
                .iter()
                .map(move |m| (Some(m.name.as_str()), f(m)))
                .collect::<Vec<_>>()
        };
        gauge(
            &mut out,
            "mirror_lag_changes",
            "Changes a mirror has not acknowledged.",
            per_mirror(|m| m.lag_changes as f64),
        );
        gauge(
            &mut out,
            "mirror_lag_seconds",
            "Age of the oldest change a mirror has not acknowledged.",
            per_mirror(|m| m.lag_seconds),
        );
        gauge(
            &mut out,
            "mirror_connected",
            "1 while the mirror is connected.",
            per_mirror(|m| m.connected as u8 as f64),
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// One Prometheus gauge: help, type, and a sample per (mirror label, value).
fn gauge<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Option<&'a str>, f64)>,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP tamizdat_{name} {help}");
    let _ = writeln!(out, "# TYPE tamizdat_{name} gauge");
    for (mirror, v) in samples {
        // Mirror names are restricted to [A-Za-z0-9._-]: nothing to escape in the label.
        match mirror {
            Some(m) => writeln!(out, "tamizdat_{name}{{mirror=\"{m}\"}} {v}"),
            None => writeln!(out, "tamizdat_{name} {v}"),
        }
        .ok();
    }
}

async fn page(State(a): State<Admin>) -> Response {
    let s = match snapshot(&a).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut rows = String::new();
    for m in &s.mirrors {
        // Mirror names are restricted to [A-Za-z0-9._-]: nothing to escape.
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{:.1}</td></tr>\n",
            m.name,
            m.state,
            m.remote_addr.as_deref().unwrap_or("-"),
            m.acked_seq,
            s.head_seq,
            m.lag_changes,
            m.lag_seconds
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
         <title>tamizdat distributor</title><style>body{{font-family:sans-serif;margin:2em}}\
         td,th{{padding:.3em 1em;text-align:left}}</style></head><body>\
         <h1>tamizdat distributor</h1><p>site {} &middot; head {}</p>\
         <table><tr><th>mirror</th><th>state</th><th>address</th><th>acked/head</th>\
         <th>lag (changes)</th><th>lag (s)</th></tr>\n{rows}</table></body></html>",
        s.site, s.head_seq
    ))
    .into_response()
}
