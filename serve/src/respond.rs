//! One request in, one response out: health, path checks, the site's files with validators,
//! ranges and precompressed variants.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, LOCATION, RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::access_log::AccessLog;
use crate::body::Body;
use crate::health::{Health, HEALTH_PATH};
use crate::resource::{Encoding, Rep, Resource, Source};
use crate::site::{Lookup, Site};
use crate::target::{self, Refusal};

/// Characters left alone when a path goes back into a `Location` header.
const PATH_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");

/// Whether this thread should give up its core now: true on every `every`-th call on a
/// thread (never for 0). A thread that always has a request ready runs until the scheduler's
/// tick preempts it, and whatever waited for its core (wrk's threads beside the mirror in the
/// benchmark) waits a whole tick: on vm7 two HTTP threads had a small-page p99 of 3.3-6.6 ms,
/// against 1.2-3.3 ms yielding every 32 responses, at the same or a higher rate
/// (`benches/runs/2026-12-07-vm7/ab-yield.txt`, `ab-yield-patch.txt`).
fn yield_due(every: u32) -> bool {
    thread_local!(static SERVED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    every > 0
        && SERVED.with(|n| {
            let next = n.get() + 1;
            n.set(if next >= every { 0 } else { next });
            next >= every
        })
}

/// Shared by every connection of one [`run`](crate::run).
pub(crate) struct Ctx {
    pub site: Arc<Site>,
    pub health: Arc<dyn Health>,
    pub log: Option<AccessLog>,
}

impl Ctx {
    pub(crate) async fn serve<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Body> {
        if yield_due(self.site.opts.yield_every) {
            std::thread::yield_now();
        }
        let resp = self.respond(&req).await;
        let body = if req.method() == Method::HEAD {
            0
        } else {
            hyper::body::Body::size_hint(resp.body())
                .exact()
                .unwrap_or(0)
        };
        self.site.stats.response(resp.status().as_u16(), body);
        if let Some(log) = &self.log {
            log.record(&req, &resp, peer, &self.site.opts.trusted_proxies);
        }
        resp
    }

    async fn respond<B>(&self, req: &Request<B>) -> Response<Body> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                return r;
            }
        };
        let path = req.uri().path();
        if path == HEALTH_PATH {
            return self.health(head);
        }
        let rel = match target::parse(path) {
            Ok(rel) => rel,
            Err(Refusal::BadRequest) => {
                return plain(StatusCode::BAD_REQUEST, "400 Bad Request\n");
            }
            Err(Refusal::NotFound) => return not_found(self.site.not_found_page().await, head),
        };
        match self.site.lookup(&rel).await {
            Lookup::Found(res) => serve_resource(req.headers(), &res, head),
            Lookup::Redirect => redirect(&rel, req.uri().query()),
            Lookup::NotFound(page) => not_found(page, head),
        }
    }

    fn health(&self, head: bool) -> Response<Body> {
        let report = self.health.health();
        let fresh = report.is_fresh(self.site.opts.lag_threshold.as_secs_f64());
        let mut json = serde_json::to_vec(&report).unwrap_or_default();
        json.push(b'\n');
        let len = json.len();
        let mut r = Response::new(if head {
            Body::empty()
        } else {
            Body::bytes(Bytes::from(json))
        });
        *r.status_mut() = if fresh {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        r
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::bytes(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, TEXT_PLAIN);
    h.insert(CACHE_CONTROL, NO_CACHE);
    h.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    r
}

fn not_found(page: Option<Arc<Resource>>, head: bool) -> Response<Body> {
    let Some(page) = page else {
        let mut r = plain(StatusCode::NOT_FOUND, "404 Not Found\n");
        if head {
            *r.body_mut() = Body::empty();
        }
        return r;
    };
    let rep = &page.reps[0];
    let mut r = Response::new(if head {
        Body::empty()
    } else {
        body(rep, 0, rep.len)
    });
    *r.status_mut() = StatusCode::NOT_FOUND;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, page.content_type.clone());
    h.insert(CACHE_CONTROL, NO_CACHE);
    h.insert(CONTENT_LENGTH, HeaderValue::from(rep.len));
    r
}

fn redirect(rel: &str, query: Option<&str>) -> Response<Body> {
    let mut loc = String::with_capacity(rel.len() + 8);
    loc.push('/');
    loc.extend(utf8_percent_encode(rel, PATH_SAFE));
    loc.push('/');
    if let Some(q) = query {
        loc.push('?');
        loc.push_str(q);
    }
    let mut r = plain(StatusCode::MOVED_PERMANENTLY, "301 Moved Permanently\n");
    let h = r.headers_mut();
    match HeaderValue::from_str(&loc) {
        Ok(v) => h.insert(LOCATION, v),
        Err(_) => return plain(StatusCode::BAD_REQUEST, "400 Bad Request\n"),
    };
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

fn body(rep: &Rep, start: u64, len: u64) -> Body {
    match &rep.source {
        Source::Memory(b) => Body::bytes(b.slice(start as usize..(start + len) as usize)),
        Source::File(f) => Body::file(f.clone(), start, len),
    }
}

fn serve_resource(h: &HeaderMap, res: &Resource, head: bool) -> Response<Body> {
    let vary = res.reps.len() > 1;
    let rep = if vary {
        &res.reps[negotiate(h.get(ACCEPT_ENCODING), &res.reps)]
    } else {
        &res.reps[0]
    };
    let mut r = Response::new(Body::empty());
    let out = r.headers_mut();
    out.insert(ETAG, rep.etag.clone());
    out.insert(LAST_MODIFIED, rep.last_modified.clone());
    out.insert(CACHE_CONTROL, res.cache_control.clone());
    if vary {
        out.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }

    // Preconditions, in RFC 9110 §13.2.2 order.
    if let Some(v) = h.get(IF_MATCH) {
        if !etag_listed(v, &rep.etag, true) {
            return status_only(r, StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(t) = h.get(IF_UNMODIFIED_SINCE).and_then(date_secs) {
        if rep.mtime_secs > t {
            return status_only(r, StatusCode::PRECONDITION_FAILED);
        }
    }
    if let Some(v) = h.get(IF_NONE_MATCH) {
        if etag_listed(v, &rep.etag, false) {
            return status_only(r, StatusCode::NOT_MODIFIED);
        }
    } else if let Some(t) = h.get(IF_MODIFIED_SINCE).and_then(date_secs) {
        if rep.mtime_secs <= t {
            return status_only(r, StatusCode::NOT_MODIFIED);
        }
    }

    out_content_headers(r.headers_mut(), res, rep);
    let (start, len) = match requested_range(h, rep) {
        Ranged::Whole => (0, rep.len),
        Ranged::Part(start, len) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let v = format!("bytes {}-{}/{}", start, start + len - 1, rep.len);
            r.headers_mut()
                .insert(CONTENT_RANGE, HeaderValue::from_str(&v).expect("ascii"));
            (start, len)
        }
        Ranged::Unsatisfiable => {
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let v = format!("bytes */{}", rep.len);
            let out = r.headers_mut();
            out.insert(CONTENT_RANGE, HeaderValue::from_str(&v).expect("ascii"));
            out.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
            return r;
        }
    };
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    if !head {
        *r.body_mut() = body(rep, start, len);
    }
    r
}

fn out_content_headers(out: &mut HeaderMap, res: &Resource, rep: &Rep) {
    out.insert(CONTENT_TYPE, res.content_type.clone());
    out.insert(ACCEPT_RANGES, BYTES);
    if rep.encoding != Encoding::Identity {
        out.insert(
            CONTENT_ENCODING,
            HeaderValue::from_static(rep.encoding.token()),
        );
    }
}

fn status_only(mut r: Response<Body>, status: StatusCode) -> Response<Body> {
    *r.status_mut() = status;
    r
}

/// Index into `reps` of the best representation the client accepts: the highest `q`, ties
/// going to the earlier (preferred) coding; the plain file when no variant is acceptable.
fn negotiate(accept: Option<&HeaderValue>, reps: &[Rep]) -> usize {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return 0;
    };
    let mut best = 0;
    let mut best_q = 0.0f32;
    for (i, rep) in reps.iter().enumerate().skip(1) {
        let q = qvalue(accept, rep.encoding);
        if q > best_q {
            best = i;
            best_q = q;
        }
    }
    best
}

fn qvalue(accept: &str, enc: Encoding) -> f32 {
    let token = enc.token();
    let mut star = 0.0;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .map(|v| v.trim().parse::<f32>().unwrap_or(0.0))
            })
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(token)
            || (enc == Encoding::Gzip && name.eq_ignore_ascii_case("x-gzip"))
        {
            return q;
        }
        if name == "*" {
            star = q;
        }
    }
    star
}

/// Whether `etag` is in an `If-Match`/`If-None-Match` list (`*` matches anything).
fn etag_listed(list: &HeaderValue, etag: &HeaderValue, strong: bool) -> bool {
    let Ok(list) = list.to_str() else {
        return false;
    };
    let etag = etag.as_bytes();
    list.split(',').any(|t| {
        let t = t.trim();
        if t == "*" {
            return true;
        }
        match t.strip_prefix("W/") {
            Some(weak) => !strong && weak.as_bytes() == etag,
            None => t.as_bytes() == etag,
        }
    })
}

fn date_secs(v: &HeaderValue) -> Option<u64> {
    let t = httpdate::parse_http_date(v.to_str().ok()?).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[derive(Debug, PartialEq, Eq)]
enum Ranged {
    Whole,
    /// (start, length)
    Part(u64, u64),
    Unsatisfiable,
}

fn requested_range(h: &HeaderMap, rep: &Rep) -> Ranged {
    let Some(range) = h.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranged::Whole;
    };
    if let Some(cond) = h.get(IF_RANGE) {
        let ok = if cond.as_bytes().starts_with(b"\"") {
            cond == rep.etag
        } else {
            date_secs(cond) == Some(rep.mtime_secs)
        };
        if !ok {
            return Ranged::Whole;
        }
    }
    parse_range(range, rep.len)
}

/// A single `bytes=` range; anything else (several ranges, other units, bad syntax) is
/// ignored, which RFC 9110 allows, and answered with the whole file.
fn parse_range(range: &str, len: u64) -> Ranged {
    let Some((unit, spec)) = range.split_once('=') else {
        return Ranged::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => {
                let n = n.min(len);
                Ranged::Part(len - n, n)
            }
        },
        (s, e) => {
            let Some(s) = num(s) else {
                return Ranged::Whole;
            };
            let end = if e.is_empty() {
                None
            } else {
                match num(e) {
                    Some(e) if e >= s => Some(e),
                    _ => return Ranged::Whole,
                }
            };
            if s >= len {
                return Ranged::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            Ranged::Part(s, end - s + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_yields_once_every_n_responses_and_never_at_zero() {
        // On a thread of its own, so that the count starts at zero: with one test thread
        // libtest runs every test on the main thread, where serving tests count too.
        std::thread::spawn(|| {
            assert_eq!((1..=12).filter(|_| yield_due(4)).count(), 3);
            let at: Vec<bool> = (1..=8).map(|_| yield_due(4)).collect();
            assert_eq!(at, [false, false, false, true, false, false, false, true]);
            assert!((0..100).all(|_| !yield_due(0)));
            assert!((0..5).all(|_| yield_due(1)));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn ranges() {
        use Ranged::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 10));
        assert_eq!(parse_range("bytes=90-500", 100), Part(90, 10));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 10));
        assert_eq!(parse_range("bytes=-500", 100), Part(0, 100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=+1-2", 100), Whole);
        assert_eq!(parse_range("bytes=x", 100), Whole);
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("gzip, br;q=0.5", Encoding::Gzip), 1.0);
        assert_eq!(qvalue("gzip, br;q=0.5", Encoding::Br), 0.5);
        assert_eq!(qvalue("gzip;q=0", Encoding::Gzip), 0.0);
        assert_eq!(qvalue("*;q=0.3", Encoding::Zstd), 0.3);
        assert_eq!(qvalue("identity", Encoding::Zstd), 0.0);
        assert_eq!(qvalue("x-gzip", Encoding::Gzip), 1.0);
    }

    #[test]
    fn etag_lists() {
        let e = HeaderValue::from_static("\"abc\"");
        let l = |s: &'static str| HeaderValue::from_static(s);
        assert!(etag_listed(&l("\"x\", \"abc\""), &e, true));
        assert!(etag_listed(&l("W/\"abc\""), &e, false));
        assert!(!etag_listed(&l("W/\"abc\""), &e, true));
        assert!(etag_listed(&l("*"), &e, true));
        assert!(!etag_listed(&l("\"abcd\""), &e, false));
    }
}
