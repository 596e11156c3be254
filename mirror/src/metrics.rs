//! The mirror's metrics, `GET /metrics` in the Prometheus text format (written by
//! `prometheus-client`) on its own listener (`--metrics ADDR`, off unless given).
//!
//! Kept off the site's port on purpose: that port is public, and figures such as the applied
//! sequence and request counts are for the volunteer and the newsroom, not for every reader.
//!
//! Figures: applied and head sequence and lag (from [`Status`]), bytes received from upstream,
//! a histogram of the time to apply a changeset and the files a full resync published ahead
//! of its end (counted here, by the client and the engine), and what the HTTP server
//! answered (responses by status, body bytes, hot-cache hits and misses, from
//! `tamizdat_serve::ServeStats`).

use crate::status::Status;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tamizdat_serve::{Health, Site};
use tracing::{debug, warn};

/// Counters the client and the engine bump.
pub struct Metrics {
    /// Bytes of frames received from upstream.
    pub bytes_received: Counter,
    /// Changesets applied.
    pub changesets_applied: Counter,
    /// Seconds from receiving a whole changeset to its durable publish (stage, verify,
    /// rename, fsync, record).
    pub apply_seconds: Histogram,
    /// Files a full resync into an empty mirror published before its end.
    pub published_early: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            bytes_received: Counter::default(),
            changesets_applied: Counter::default(),
            // 0.5 ms to about 16 s.
            apply_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            published_early: Counter::default(),
        }
    }
}

impl Metrics {
    /// Records one applied changeset.
    pub fn applied(&self, seconds: f64) {
        self.changesets_applied.inc();
        self.apply_seconds.observe(seconds);
    }
}

/// Figures read at scrape time from the status and the HTTP server's counters.
struct Live {
    status: Arc<Status>,
    site: Arc<Site>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let h = self.status.health();
        let gauges: [(&str, &str, f64); 4] = [
            (
                "applied_seq",
                "Newest sequence applied durably.",
                h.applied_seq as f64,
            ),
            (
                "head_seq",
                "Newest sequence upstream has announced.",
                h.head_seq as f64,
            ),
            (
                "lag_seconds",
                "Seconds since the mirror first knew of a change it has not applied (0: at the head).",
                h.lag_seconds,
            ),
            (
                "connected",
                "1 while connected upstream.",
                h.connected as u8 as f64,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let stats = self.site.stats();
        let c = ConstCounter::new(stats.body_bytes());
        c.encode(enc.encode_descriptor(
            "http_response_body_bytes",
            "Bytes of response bodies served (Content-Length; 0 for HEAD).",
            None,
            c.metric_type(),
        )?)?;
        for (name, help, v) in [
            (
                "http_hot_cache_hits",
                "Lookups answered from the hot cache.",
                stats.hot_hits(),
            ),
            (
                "http_hot_cache_misses",
                "Lookups that opened the file (not cached, or due for revalidation).",
                stats.hot_misses(),
            ),
            (
                "http_sendfile_bytes",
                "Body bytes sent from the page cache with sendfile, never copied.",
                stats.sendfile_bytes(),
            ),
            (
                "http_sendfile_copied_bytes",
                "File body bytes copied instead of sent with sendfile: the page cache did not hold them.",
                stats.copied_for_sendfile_bytes(),
            ),
        ] {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let mut fam = enc.encode_descriptor(
            "http_responses",
            "Responses sent, by status code.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (code, n) in stats.responses() {
            let labels = [("status", code.to_string())];
            ConstCounter::new(n).encode(fam.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The registry behind `/metrics`.
pub fn registry(status: Arc<Status>, site: Arc<Site>) -> Registry {
    let mut reg = Registry::with_prefix("tamizdat_mirror");
    let m = &status.metrics;
    reg.register(
        "received_bytes",
        "Bytes of frames received from upstream.",
        m.bytes_received.clone(),
    );
    reg.register(
        "changesets_applied",
        "Changesets applied.",
        m.changesets_applied.clone(),
    );
    reg.register(
        "apply_seconds",
        "Seconds to publish a received changeset durably (stage, verify, rename, fsync, record).",
        m.apply_seconds.clone(),
    );
    reg.register(
        "files_published_early",
        "Files a full resync into an empty mirror renamed into place before its end.",
        m.published_early.clone(),
    );
    reg.register_collector(Box::new(Live { status, site }));
    reg
}

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub async fn serve(
    listener: std::net::TcpListener,
    registry: Registry,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let registry = Arc::new(registry);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(cause = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let r = answer(&req, &registry);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc);
            if let Err(e) = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await {
                debug!(%peer, cause = %e, "metrics connection timed out");
            }
        });
    }
}

fn answer<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let plain = |code: StatusCode, msg: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(msg.as_bytes())));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "404 Not Found: try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
        r.headers_mut()
            .insert(hyper::header::ALLOW, "GET, HEAD".parse().unwrap());
        return r;
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
    }
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
            .parse()
            .unwrap(),
    );
    r
}
