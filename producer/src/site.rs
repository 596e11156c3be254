//! The publisher: one site, its store, its theme, its output tree.
//!
//! A publish runs in four steps under the writer lock:
//! 1. read the old version and each affected listing's size and the article's rank in it;
//! 2. in one SQLite transaction, store the new version and the list of pages the change
//!    touches (`pending`);
//! 3. render those pages, write the ones whose bytes differ to temporary files, make them
//!    and the store's log durable with one barrier, rename them in (removing their old
//!    precompressed variants) ([`crate::output`]);
//! 4. record which files' variants are due, hand those to the worker that makes them
//!    ([`crate::variants`]), and answer;
//! 5. after the answer, still holding the writer lock, flush the directories the renames
//!    changed, then clear `pending`. The next change in this process waits for that first.
//!
//! The answer comes once every new file's bytes and the document are durable and every file
//! is in place; only the directory entries of the renames are still on their way to the
//! disk (a second barrier, 0.7-0.8 ms on this project's test machine, that the writer used to
//! wait for). A crash before they are flushed leaves `pending` set, so the next start renders
//! those pages again, and as the files' bytes were flushed before any rename, each file is
//! at its old or new version meanwhile. A crash during 3 leaves every file at its old or new
//! version too; the next start finds the pending pages and renders them, and makes the
//! variants still due.

use crate::cms::{Document, Kind};
use crate::lock::{WriterGuard, WriterLock};
use crate::output::{Batch, DirSync, Outcome, Output};
use crate::pages::{self, PageKey};
use crate::render::{DocView, SiteInfo, TemplateError, Theme};
use crate::store::{self, DocRow, Listing};
use crate::variants::{self, Job, Precompressor};
use crate::{feeds, markup};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tamizdat_sqlite::{hand_over, Checkpointer};

/// How a site is set up; the same for `serve` and every CLI command.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    pub out: PathBuf,
    pub state: PathBuf,
    pub theme: Option<PathBuf>,
    pub site_url: String,
    pub site_title: String,
    pub site_description: String,
    pub lang: String,
    pub sanitize: bool,
    pub precompress: bool,
}

impl SiteOptions {
    /// Options with defaults, for tests and embedding.
    pub fn new(out: PathBuf, state: PathBuf) -> Self {
        SiteOptions {
            out,
            state,
            theme: None,
            site_url: "http://localhost".into(),
            site_title: "tamizdat news".into(),
            site_description: "Independent news, mirrored.".into(),
            lang: "en".into(),
            sanitize: true,
            precompress: true,
        }
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no document with slug {0:?}")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("output tree: {0}")]
    Io(#[from] std::io::Error),
    #[error("writer lock: {0}")]
    Lock(std::io::Error),
}

/// What a publish did: the answer of the HTTP hook and the CLI.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Report {
    pub slug: Option<String>,
    pub url: Option<String>,
    /// Files whose bytes changed (precompressed variants not listed).
    pub written: Vec<String>,
    /// Files whose `.br`, `.zst` and `.gz` variants are being made after this answer (until
    /// they are, a reader gets the new file uncompressed, never an old file's variant).
    pub precompressing: usize,
    /// Files rendered to the bytes already on disk.
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    pub elapsed_ms: f64,
    /// Where the time went.
    pub timings: Timings,
}

/// The phases of a publish, in milliseconds. Rendering and staging run together, page by
/// page on two threads; their wall time is split between the two in proportion to the time
/// the threads spent in each.
#[derive(Debug, Default, Serialize, PartialEq, Clone, Copy)]
pub struct Timings {
    /// Before any page is rendered: reading the old document, rendering and sanitising the
    /// body, and committing the new row with its listings' counts, ranks and pending pages.
    pub store_ms: f64,
    /// Reading the store and rendering templates and XML.
    pub render_ms: f64,
    /// Comparing with the files on disk and writing temporary files.
    pub stage_ms: f64,
    /// The barrier that makes the new files and the document durable, renames, removals.
    /// (The directories are flushed after the answer: see the module docs.)
    pub commit_ms: f64,
}

/// One page rendered and, if it is a put, staged, with its place among the keys.
struct Done {
    index: usize,
    page: Page,
    batch: Batch,
    rendered: std::time::Duration,
    staged: std::time::Duration,
}

/// What rendering a key came to, with a put's staging outcome beside its bytes.
enum Page {
    Put(String, Vec<u8>, Outcome),
    Remove(String),
    Nothing,
}

/// One site.
pub struct Site {
    opts: SiteOptions,
    info: SiteInfo,
    conn: Connection,
    /// A second connection, so a publish renders its pages on two threads; after the
    /// answer, the directory flush clears `pending` with it.
    reader: Arc<Mutex<Connection>>,
    theme: Theme,
    output: Output,
    lock: WriterLock,
    /// Makes precompressed variants after a publish returns; `None` with `--no-precompress`.
    variants: Option<Precompressor>,
    /// The last change's directory flush, which finishes after its answer (step 5).
    flushing: Option<std::thread::JoinHandle<()>>,
    /// Copies the store's log into the database after publishes. Declared last: dropped
    /// after the variants worker, whose last rows it takes with it.
    checkpointer: Checkpointer,
}

impl Site {
    /// Opens the store and theme, finishes any interrupted render, and makes sure the
    /// site-wide files (home, feed, archive, sitemap, 404, stylesheet) exist.
    pub fn open(opts: SiteOptions) -> anyhow::Result<Site> {
        use anyhow::Context;
        std::fs::create_dir_all(&opts.out)
            .with_context(|| format!("Failed to create output dir {}", opts.out.display()))?;
        std::fs::create_dir_all(&opts.state)
            .with_context(|| format!("Failed to create state dir {}", opts.state.display()))?;
        let conn = store::open(&opts.state)
            .with_context(|| format!("Failed to open the store in {}", opts.state.display()))?;
        let reader = Arc::new(Mutex::new(store::open(&opts.state).with_context(|| {
            format!("Failed to open the store in {}", opts.state.display())
        })?));
        // The store's log is copied into it off the publish path (tamizdat-sqlite): with
        // SQLite's own checkpoints, one publish in thirty waited 14-24 ms for one.
        hand_over(&conn)?;
        hand_over(&reader.lock().unwrap_or_else(|e| e.into_inner()))?;
        let checkpointer = Checkpointer::start(&store::db_path(&opts.state))
            .context("Failed to start the store's checkpointing thread")?;
        let theme = Theme::load(opts.theme.as_deref())?;
        let lock = WriterLock::new(&opts.state).with_context(|| {
            format!(
                "Failed to create the writer lock in {}",
                opts.state.display()
            )
        })?;
        let info = SiteInfo {
            title: opts.site_title.clone(),
            url: opts.site_url.trim_end_matches('/').to_string(),
            description: opts.site_description.clone(),
            lang: opts.lang.clone(),
        };
        let output = Output::new(opts.out.clone(), opts.precompress);
        let variants = if opts.precompress {
            Some(
                Precompressor::start(output.clone(), &opts.state)
                    .context("Failed to start the precompressing worker")?,
            )
        } else {
            None
        };
        let mut site = Site {
            opts,
            info,
            conn,
            reader,
            theme,
            output,
            lock,
            variants,
            flushing: None,
            checkpointer,
        };
        site.prepare()
            .context("Failed to prepare the output tree")?;
        Ok(site)
    }

    pub fn options(&self) -> &SiteOptions {
        &self.opts
    }

    fn prepare(&mut self) -> Result<Report, PublishError> {
        let guard = self.lock.acquire().map_err(PublishError::Lock)?;
        let mut keys: BTreeSet<PageKey> = store::pending(&self.conn)?
            .iter()
            .filter_map(|k| PageKey::decode(k))
            .collect();
        if !keys.is_empty() {
            tracing::warn!(
                pages = keys.len(),
                "finishing a render that was interrupted"
            );
        }
        keys.extend([
            PageKey::Stylesheet,
            PageKey::NotFound,
            PageKey::Home,
            PageKey::Feed,
            PageKey::ListingIndex(Listing::All),
            PageKey::ListingPage(Listing::All, 1),
            PageKey::SitemapIndex,
            PageKey::SitemapPages,
        ]);
        let (report, dirs) = self.render_keys(&keys, Instant::now(), None)?;
        self.flush_later(dirs, guard);
        // Variants a crash left undone.
        let jobs = variants::recover(&self.output, &self.conn).map_err(|e| {
            PublishError::Io(std::io::Error::other(format!(
                "finding the precompressed variants still due: {e:#}"
            )))
        })?;
        if let Some(v) = &self.variants {
            v.submit(jobs);
        }
        Ok(report)
    }

    /// Blocks until the directories of the last change are flushed (step 5 of the module
    /// docs): from then on a power cut cannot undo it.
    pub fn wait_for_flush(&mut self) {
        if let Some(f) = self.flushing.take() {
            // The thread logs its own failures; a panic in it is one more of those.
            let _ = f.join();
        }
    }

    /// Flushes the directories `dirs` holds on a thread of its own, then clears `pending`
    /// and lets `guard` go: the answer does not wait for the flush, the next change does.
    fn flush_later(&mut self, dirs: DirSync, guard: WriterGuard) {
        let conn = Arc::clone(&self.reader);
        let flush = move || {
            let _guard = guard;
            match dirs.finish() {
                Ok(()) => {
                    let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = store::clear_pending(&conn) {
                        tracing::warn!(error = %e, "could not clear the rendered pages from `pending`; they are rendered again with the next change");
                    }
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "flushing the directories of a change failed; its pages stay pending and are rendered again with the next change"
                ),
            }
        };
        // A thread that cannot be had (out of threads or memory) leaves the flush to this one.
        // (`spawn` drops the closure it failed to run, so the flush goes over a channel.)
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let spawned = std::thread::Builder::new()
            .name("dir-flush".into())
            .spawn(move || rx.recv().into_iter().for_each(|f| f()));
        match spawned {
            Ok(handle) => {
                let _ = tx.send(Box::new(flush));
                self.flushing = Some(handle);
            }
            Err(_) => flush(),
        }
    }

    /// Blocks until the precompressed variants of every publish so far are in place (or
    /// their making failed and was logged).
    pub fn wait_for_variants(&self) {
        if let Some(v) = &self.variants {
            v.wait_idle();
        }
    }

    /// Publishes (creates or replaces) a document.
    pub fn publish(&mut self, doc: Document) -> Result<Report, PublishError> {
        let started = Instant::now();
        self.wait_for_flush();
        let guard = self.lock.acquire().map_err(PublishError::Lock)?;
        let old = store::get(&self.conn, &doc.slug)?;
        let new = self.to_row(doc, old.as_ref());
        self.change(guard, old, Some(new), started)
    }

    /// Unpublishes a document and removes it from every listing.
    pub fn unpublish(&mut self, slug: &str) -> Result<Report, PublishError> {
        let started = Instant::now();
        self.wait_for_flush();
        let guard = self.lock.acquire().map_err(PublishError::Lock)?;
        let Some(old) = store::get(&self.conn, slug)? else {
            return Err(PublishError::NotFound(slug.to_string()));
        };
        self.change(guard, Some(old), None, started)
    }

    fn to_row(&self, doc: Document, old: Option<&DocRow>) -> DocRow {
        let body_html = markup::body_html(&doc.body, doc.format, self.opts.sanitize);
        let summary = doc
            .summary
            .unwrap_or_else(|| markup::derive_summary(&body_html));
        let now = chrono::Utc::now().timestamp();
        let published_at = doc
            .published_at
            .map(|d| d.timestamp())
            .or(old.map(|o| o.published_at))
            .unwrap_or(now);
        let mut row = DocRow {
            slug: doc.slug,
            kind: doc.kind,
            title: doc.title,
            body: doc.body,
            format: doc.format,
            body_html,
            summary,
            tags: if doc.kind == Kind::Article {
                doc.tags
            } else {
                Vec::new()
            },
            authors: doc.authors,
            published_at,
            updated_at: 0,
            extra: doc.extra,
        };
        row.updated_at = match (doc.updated_at, old) {
            (Some(u), _) => u.timestamp(),
            // Same content again: keep the old time, so a repeat publish writes nothing.
            (None, Some(o))
                if DocRow {
                    updated_at: o.updated_at,
                    ..row.clone()
                } == *o =>
            {
                o.updated_at
            }
            (None, Some(_)) => now.max(published_at),
            (None, None) => published_at,
        };
        row
    }

    fn change(
        &mut self,
        guard: WriterGuard,
        old: Option<DocRow>,
        new: Option<DocRow>,
        started: Instant,
    ) -> Result<Report, PublishError> {
        let listings: BTreeSet<Listing> = [&old, &new]
            .into_iter()
            .flatten()
            .filter(|d| d.kind == Kind::Article)
            .flat_map(|d| {
                std::iter::once(Listing::All)
                    .chain(d.tags.iter().map(|t| Listing::Tag(t.slug.clone())))
            })
            .collect();
        let tx = store::begin(&mut self.conn)?;
        let before = positions(&tx, &listings, old.as_ref())?;
        match &new {
            Some(n) => store::put(&tx, n)?,
            None => {
                store::delete(&tx, &old.as_ref().expect("unpublish has an old row").slug)?;
            }
        }
        let after = positions(&tx, &listings, new.as_ref())?;

        let mut keys = BTreeSet::new();
        if let Some(n) = &new {
            keys.insert(PageKey::Doc(n.slug.clone()));
        }
        if let Some(o) = &old {
            let old_path = pages::doc_path(o);
            if new.as_ref().map(pages::doc_path) != Some(old_path.clone()) {
                keys.insert(PageKey::Remove(old_path));
            }
        }
        // Pages that show the newest articles of a listing, or its size, change only when the
        // size changes or the article is among the newest (before or after); the page of
        // pages only when a page or a tag comes or goes.
        let is_page = |d: &Option<DocRow>| d.as_ref().is_some_and(|d| d.kind == Kind::Page);
        if is_page(&old) || is_page(&new) {
            keys.insert(PageKey::SitemapPages);
        }
        for ((listing, n0, r0), (_, n1, r1)) in before.iter().zip(&after) {
            let resized = n0 != n1;
            let newest = |k: u64| {
                resized || r0.is_some_and(|r| r + k >= *n0) || r1.is_some_and(|r| r + k >= *n1)
            };
            for p in pages::pages_to_rewrite(listing, pages::PER_PAGE, (*n0, *r0), (*n1, *r1)) {
                keys.insert(PageKey::ListingPage(listing.clone(), p));
            }
            if newest(pages::PER_PAGE) {
                keys.insert(PageKey::ListingIndex(listing.clone()));
            }
            match listing {
                Listing::All => {
                    if resized {
                        keys.insert(PageKey::SitemapIndex);
                    }
                    if newest(pages::HOME_ITEMS) {
                        keys.insert(PageKey::Home);
                    }
                    if newest(pages::FEED_ITEMS) {
                        keys.insert(PageKey::Feed);
                    }
                    let chunks = pages::pages_to_rewrite(
                        listing,
                        pages::SITEMAP_CHUNK,
                        (*n0, *r0),
                        (*n1, *r1),
                    );
                    keys.extend(chunks.map(PageKey::SitemapChunk));
                }
                Listing::Tag(t) => {
                    if newest(pages::FEED_ITEMS) {
                        keys.insert(PageKey::TagFeed(t.clone()));
                    }
                    if (*n0 == 0) != (*n1 == 0) {
                        keys.insert(PageKey::SitemapPages);
                    }
                }
            }
        }
        let encoded: Vec<String> = keys.iter().map(PageKey::encode).collect();
        store::add_pending(&tx, &encoded)?;
        // Pages an earlier, failed render left behind are retried with this one's.
        keys.extend(
            store::pending(&tx)?
                .iter()
                .filter_map(|k| PageKey::decode(k)),
        );
        tx.commit()?;

        let slug = new.as_ref().or(old.as_ref()).map(|d| d.slug.clone());
        let (mut report, dirs) = self.render_keys(&keys, started, slug)?;
        self.flush_later(dirs, guard);
        if let Some(n) = &new {
            report.url = Some(format!("{}{}", self.info.url, pages::doc_url(n)));
        }
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(report)
    }

    /// Renders, stages and renames `keys`' pages (steps 3 and 4); returns the directories
    /// to flush (step 5).
    fn render_keys(
        &self,
        keys: &BTreeSet<PageKey>,
        started: Instant,
        slug: Option<String>,
    ) -> Result<(Report, DirSync), PublishError> {
        let mut report = Report {
            slug,
            ..Report::default()
        };
        // Render and stage every page on two threads with a connection each, each taking the
        // next key from a shared counter: a thread just spawned can take a millisecond to get
        // a core on a busy VM (over 1 ms in half the publishes of one run here, in 10 of 121
        // of another; benches/runs/2026-12-03-vm/ab-publish-barrier/render-timing.patch),
        // and the one already running does not wait for it. Then rename them all at once in key order:
        // the article first and removals last, so no listing ever links to a missing page.
        let t_render = Instant::now();
        let keys: Vec<&PageKey> = keys.iter().collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let newest = crate::generate::Newest::default();
        let (theme, info, output) = (&self.theme, &self.info, &self.output);
        let work = |conn: &Connection| -> Result<Vec<Done>, PublishError> {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(key) = keys.get(i) else {
                    return Ok(done);
                };
                let t = Instant::now();
                let action = crate::generate::render_key(conn, theme, info, key, &newest)?;
                let rendered = t.elapsed();
                let mut batch = Batch::default();
                let page = match action {
                    Action::Put(path, bytes) => {
                        let outcome = output.stage(&path, &bytes, &mut batch)?;
                        Page::Put(path, bytes, outcome)
                    }
                    Action::Remove(path) => Page::Remove(path),
                    Action::Nothing => Page::Nothing,
                };
                done.push(Done {
                    index: i,
                    page,
                    batch,
                    rendered,
                    staged: t.elapsed() - rendered,
                });
            }
        };
        let mut done = if keys.len() < 4 {
            work(&self.conn)?
        } else {
            let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            let reader: &mut Connection = &mut reader;
            let (a, b) = std::thread::scope(|s| {
                let work = &work;
                let other = s.spawn(move || work(reader));
                let a = work(&self.conn);
                (a, other.join().expect("render thread panicked"))
            });
            let mut a = a?;
            a.extend(b?);
            a
        };
        done.sort_by_key(|d| d.index);
        let mut puts = Vec::new();
        let mut removals = Vec::new();
        let mut batch = Batch::default();
        let (mut rendering, mut staging) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for d in done {
            rendering += d.rendered;
            staging += d.staged;
            batch.extend(d.batch);
            match d.page {
                Page::Put(path, bytes, outcome) => puts.push((path, bytes, outcome)),
                Page::Remove(path) => removals.push(path),
                Page::Nothing => {}
            }
        }
        // The phase's wall time, split between rendering and staging in proportion to the
        // time the threads spent in each.
        let phase = t_render.elapsed();
        let busy = (rendering + staging).as_secs_f64();
        let render_share = if busy > 0.0 {
            rendering.as_secs_f64() / busy
        } else {
            1.0
        };
        let t_staged = Instant::now();
        let mut dirs = DirSync::default();
        // The document was committed to the store's log before rendering; it becomes
        // durable in the same barrier as its pages.
        let wal = store::wal_path(&self.opts.state);
        let also: Vec<&std::path::Path> = if wal.exists() {
            vec![wal.as_path()]
        } else {
            Vec::new()
        };
        let due: BTreeSet<String> = batch.commit(&mut dirs, &also)?.into_iter().collect();
        for path in removals {
            if self.output.remove(&path, &mut dirs)? {
                report.removed.push(path);
            }
        }
        let generation: i64 = rand::random();
        let due_list: Vec<String> = due.iter().cloned().collect();
        store::record_due(&self.conn, &due_list, generation)?;
        self.checkpointer.nudge();
        let mut jobs = Vec::with_capacity(due.len());
        for (path, bytes, outcome) in puts {
            if due.contains(&path) {
                jobs.push(Job {
                    rel: path.clone(),
                    bytes,
                    generation,
                });
            }
            match outcome {
                Outcome::Written => report.written.push(path),
                Outcome::Unchanged => report.unchanged.push(path),
            }
        }
        report.precompressing = jobs.len();
        if let Some(v) = &self.variants {
            v.submit(jobs);
        }
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        report.timings = Timings {
            store_ms: ms(t_render.saturating_duration_since(started)),
            render_ms: ms(phase) * render_share,
            stage_ms: ms(phase) * (1.0 - render_share),
            commit_ms: ms(t_staged.elapsed()),
        };
        report.elapsed_ms = ms(started.elapsed());
        Ok((report, dirs))
    }

    /// Rebuilds every page from the store (after a theme or option change). `progress` is
    /// called with (done, total).
    pub fn render_all(&mut self, progress: &dyn Fn(u64, u64)) -> Result<Report, PublishError> {
        let started = Instant::now();
        self.wait_for_flush();
        let _guard = self.lock.acquire().map_err(PublishError::Lock)?;
        let report = crate::generate::render_all(self, started, progress);
        self.checkpointer.nudge();
        report
    }

    pub(crate) fn parts(&self) -> (&Connection, &Theme, &SiteInfo, &Output, &SiteOptions) {
        (
            &self.conn,
            &self.theme,
            &self.info,
            &self.output,
            &self.opts,
        )
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for Site {
    /// A change's directory flush outlives its answer, not the site.
    fn drop(&mut self) {
        self.wait_for_flush();
    }
}

/// What rendering a key asks of the output tree.
pub(crate) enum Action {
    Put(String, Vec<u8>),
    Remove(String),
    Nothing,
}

/// Each listing's size and `doc`'s rank in it (0 = oldest), if it is in it.
fn positions(
    conn: &Connection,
    listings: &BTreeSet<Listing>,
    doc: Option<&DocRow>,
) -> rusqlite::Result<Vec<(Listing, u64, Option<u64>)>> {
    let mut out = Vec::with_capacity(listings.len());
    for listing in listings {
        let n = store::count(conn, listing)?;
        let member = doc.filter(|d| {
            d.kind == Kind::Article
                && match listing {
                    Listing::All => true,
                    Listing::Tag(t) => d.tags.iter().any(|x| &x.slug == t),
                }
        });
        let rank = match member {
            Some(d) => Some(store::rank(conn, listing, d.published_at, &d.slug)?),
            None => None,
        };
        out.push((listing.clone(), n, rank));
    }
    Ok(out)
}

/// The view of a document for templates.
pub(crate) fn view(doc: &DocRow) -> DocView {
    DocView::new(doc, pages::doc_url(doc))
}

/// The site feed and the sitemaps use absolute URLs.
pub(crate) fn feed_for(
    info: &SiteInfo,
    title: &str,
    self_path: &str,
    page_path: &str,
    docs: &[DocRow],
) -> String {
    let self_url = format!("{}{}", info.url, self_path);
    let page_url = format!("{}{}", info.url, page_path);
    feeds::atom(
        &feeds::FeedMeta {
            title,
            site_title: &info.title,
            self_url: &self_url,
            page_url: &page_url,
        },
        docs,
        |d| format!("{}{}", info.url, pages::doc_url(d)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cms::{self, Limits};

    fn open(dir: &std::path::Path) -> Site {
        let mut opts = SiteOptions::new(dir.join("out"), dir.join("state"));
        opts.precompress = false;
        Site::open(opts).unwrap()
    }

    fn doc(slug: &str) -> Document {
        let v = serde_json::json!({
            "slug": slug, "title": slug, "body": "text", "tags": ["t"],
            "published_at": "2014-01-01T00:00:00Z",
        });
        cms::parse_document(v, &Limits::default()).unwrap()
    }

    #[test]
    fn a_site_dropped_right_after_a_publish_has_flushed_and_cleared_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut site = open(dir.path());
        site.publish(doc("a")).unwrap();
        drop(site);
        let conn = store::open(&dir.path().join("state")).unwrap();
        assert_eq!(store::pending(&conn).unwrap(), Vec::<String>::new());
    }
}
