//! The HTTP hook a CMS calls.
//!
//! - `POST /v1/publish`: a JSON document ([`crate::cms`]); answers with a [`Report`].
//! - `DELETE /v1/publish/{slug}`: unpublishes.
//! - `POST /v1/media?path=photos/x.jpg`: streams the request body to `media/photos/x.jpg`.
//!
//! Every route needs `Authorization: Bearer <token>`. Bad documents get 400 and
//! `{"errors": [{"field": "...", "message": "..."}]}` with one entry per bad field.
//!
//! Limits, each a flag of `serve`: a publish request's body is at most
//! [`HookOptions::max_request_bytes`] (413 past it, before the JSON is parsed); publishes and
//! unpublishes are rate-limited per token ([`crate::ratelimit`], 429 with `Retry-After`);
//! uploads are capped by [`HookOptions::max_media_bytes`] (413).
//!
//! The token is compared as a blake3 hash (in constant time) and never logged: nothing here
//! keeps or prints it, only its hash, and only to compare and to key the rate limit.

use crate::cms::{self, FieldError, Limits};
use crate::media;
use crate::ratelimit::RateLimiter;
use crate::site::{PublishError, Report, Site};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Default for [`HookOptions::max_publishes_per_sec`].
pub const DEFAULT_MAX_PUBLISHES_PER_SEC: f64 = 50.0;

/// Settings of the hook itself.
#[derive(Clone)]
pub struct HookOptions {
    pub token: String,
    pub limits: Limits,
    /// Largest request body accepted on `/v1/publish`, in bytes; usually
    /// [`Limits::max_document_bytes`].
    pub max_request_bytes: usize,
    /// Publishes and unpublishes per second per token, sustained (positive, finite).
    pub max_publishes_per_sec: f64,
    /// Publishes per token accepted at once before the rate applies (at least 1).
    pub publish_burst: u32,
    /// Largest upload accepted on `/v1/media`, if limited.
    pub max_media_bytes: Option<u64>,
}

/// Never shows the token, so `?opts` in a log line cannot leak it.
impl std::fmt::Debug for HookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookOptions")
            .field("token", &"<redacted>")
            .field("limits", &self.limits)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_publishes_per_sec", &self.max_publishes_per_sec)
            .field("publish_burst", &self.publish_burst)
            .field("max_media_bytes", &self.max_media_bytes)
            .finish()
    }
}

#[derive(Clone)]
struct AppState {
    site: Arc<Mutex<Site>>,
    token: blake3::Hash,
    limits: Limits,
    out: PathBuf,
    max_request_bytes: usize,
    max_media_bytes: Option<u64>,
    rate: Arc<RateLimiter>,
}

/// Which token authenticated a request: its hash, put in the request's extensions by
/// [`auth`] for [`rate_limit`].
#[derive(Clone, Copy)]
struct TokenHash(blake3::Hash);

/// The routes, for [`run`] and for embedding.
pub fn router(site: Site, opts: HookOptions) -> Router {
    let out = site.options().out.clone();
    let state = AppState {
        site: Arc::new(Mutex::new(site)),
        token: blake3::hash(opts.token.as_bytes()),
        limits: opts.limits,
        out,
        max_request_bytes: opts.max_request_bytes,
        max_media_bytes: opts.max_media_bytes,
        rate: Arc::new(RateLimiter::new(
            opts.max_publishes_per_sec,
            opts.publish_burst,
        )),
    };
    // `publish` reads its body itself, against `max_request_bytes`, to answer 413 in our
    // error format; uploads are streamed and capped by `max_media_bytes`.
    let publishing = Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/publish/{slug}", delete(unpublish))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    Router::new()
        .merge(publishing)
        .route("/v1/media", post(upload))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Serves the hook on `listener` until `shutdown` completes, then drains open requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    site: Site,
    opts: HookOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(site, opts))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn auth(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| blake3::hash(t.trim().as_bytes()));
    // blake3::Hash compares in constant time.
    if given != Some(s.token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response();
    }
    req.extensions_mut().insert(TokenHash(s.token));
    next.run(req).await
}

async fn rate_limit(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(TokenHash(key)) = req.extensions().get::<TokenHash>().copied() else {
        // Only reachable if the routes were assembled without `auth`.
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if let Err(wait) = s.rate.check(&key, Instant::now()) {
        let secs = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0))
            .max(1);
        tracing::warn!(retry_after_s = secs, "publish rate limit reached");
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "error": format!("too many publishes for this token; retry after {secs} s")
            })),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    next.run(req).await
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    use axum::body::HttpBody;
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({ "errors": [FieldError::new(
                "request",
                format!("body is over the limit of {limit} bytes"),
            )] })),
        )
            .into_response()
    };
    // A Content-Length over the limit is refused before reading a byte.
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(bad_request(vec![FieldError::new(
            "request",
            format!("could not read the body: {e}"),
        )])),
    }
}

fn bad_request(errors: Vec<FieldError>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "errors": errors }))).into_response()
}

fn answer(result: Result<Result<Report, PublishError>, tokio::task::JoinError>) -> Response {
    match result {
        Ok(Ok(report)) => (StatusCode::OK, Json(report)).into_response(),
        Ok(Err(PublishError::NotFound(slug))) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no document with slug {slug:?}") })),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(cause = %e, "publish failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": e.to_string() })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(cause = %e, "publish task failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": "internal error" })),
            )
                .into_response()
        }
    }
}

async fn publish(State(s): State<AppState>, body: Body) -> Response {
    let body = match read_body(body, s.max_request_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(vec![FieldError::new(
                "document",
                format!("is not valid JSON: {e}"),
            )])
        }
    };
    let doc = match cms::parse_document(value, &s.limits) {
        Ok(d) => d,
        Err(errors) => return bad_request(errors),
    };
    let site = s.site.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut site = site.lock().unwrap_or_else(|e| e.into_inner());
        let r = site.publish(doc);
        // The answer means the output is settled: a caller that lists the tree next, or
        // publishes the same document again, sees no file still changing.
        site.wait_for_variants();
        r
    })
    .await;
    if let Ok(Ok(r)) = &result {
        tracing::info!(slug = ?r.slug, written = r.written.len(), unchanged = r.unchanged.len(), elapsed_ms = r.elapsed_ms, "published");
    }
    answer(result)
}

async fn unpublish(State(s): State<AppState>, Path(slug): Path<String>) -> Response {
    if let Err(m) = cms::check_slug(&slug) {
        return bad_request(vec![FieldError::new("slug", m)]);
    }
    let site = s.site.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut site = site.lock().unwrap_or_else(|e| e.into_inner());
        let r = site.unpublish(&slug);
        site.wait_for_variants();
        r
    })
    .await;
    if let Ok(Ok(r)) = &result {
        tracing::info!(slug = ?r.slug, removed = r.removed.len(), written = r.written.len(), "unpublished");
    }
    answer(result)
}

#[derive(serde::Deserialize)]
struct MediaQuery {
    path: Option<String>,
}

async fn upload(State(s): State<AppState>, Query(q): Query<MediaQuery>, body: Body) -> Response {
    let rel = match q.path.as_deref().map(media::check_path) {
        Some(Ok(rel)) => rel,
        Some(Err(m)) => return bad_request(vec![FieldError::new("path", m)]),
        None => {
            return bad_request(vec![FieldError::new(
                "path",
                "is required (?path=photos/x.jpg)",
            )])
        }
    };
    match media::store(&s.out, &rel, body.into_data_stream(), s.max_media_bytes).await {
        Ok(stored) => (StatusCode::CREATED, Json(stored)).into_response(),
        Err(media::MediaError::TooLarge(limit)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({ "errors": [FieldError::new("body", format!("is over the limit of {limit} bytes"))] })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(cause = %e, path = %rel, "upload failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": e.to_string() })),
            )
                .into_response()
        }
    }
}
