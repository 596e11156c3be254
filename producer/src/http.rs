//! The HTTP hook a CMS calls.
//!
//! - `POST /v1/publish`: a JSON document ([`crate::cms`]); answers with a [`Report`].
//! - `DELETE /v1/publish/{slug}`: unpublishes.
//! - `POST /v1/media?path=photos/x.jpg`: streams the request body to `media/photos/x.jpg`.
//!
//! Every route needs `Authorization: Bearer <token>`. Bad documents get 400 and
//! `{"errors": [{"field": "...", "message": "..."}]}` with one entry per bad field.

use crate::cms::{self, FieldError, Limits};
use crate::media;
use crate::site::{PublishError, Report, Site};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Room for JSON escaping around a body at the size limit.
const JSON_OVERHEAD_BYTES: usize = 256 * 1024;

/// Settings of the hook itself.
#[derive(Debug, Clone)]
pub struct HookOptions {
    pub token: String,
    pub limits: Limits,
    /// Largest upload accepted on `/v1/media`, if limited.
    pub max_media_bytes: Option<u64>,
}

#[derive(Clone)]
struct AppState {
    site: Arc<Mutex<Site>>,
    token: blake3::Hash,
    limits: Limits,
    out: PathBuf,
    max_media_bytes: Option<u64>,
}

/// The routes, for [`run`] and for embedding.
pub fn router(site: Site, opts: HookOptions) -> Router {
    let out = site.options().out.clone();
    let state = AppState {
        site: Arc::new(Mutex::new(site)),
        token: blake3::hash(opts.token.as_bytes()),
        limits: opts.limits,
        out,
        max_media_bytes: opts.max_media_bytes,
    };
    let publish_limit = opts.limits.max_body_bytes * 2 + JSON_OVERHEAD_BYTES;
    Router::new()
        .route(
            "/v1/publish",
            post(publish).layer(DefaultBodyLimit::max(publish_limit)),
        )
        .route("/v1/publish/{slug}", delete(unpublish))
        .route("/v1/media", post(upload).layer(DefaultBodyLimit::disable()))
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

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
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
    next.run(req).await
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

async fn publish(State(s): State<AppState>, body: Bytes) -> Response {
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
        site.publish(doc)
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
        site.unpublish(&slug)
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
