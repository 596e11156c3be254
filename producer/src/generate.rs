//! Rendering pages from the store: one [`PageKey`] at a time for a publish, or everything at
//! once for `render --all`. Both paths go through the same functions, so a full rebuild
//! produces exactly the bytes a sequence of publishes would, and a later publish rewrites
//! nothing it did not change.

use crate::cms::Kind;
use crate::output::{DirSync, Outcome, Output};
use crate::pages::{self, PageKey, FEED_ITEMS, HOME_ITEMS, PER_PAGE, SITEMAP_CHUNK};
use crate::render::{DocView, SiteInfo, Theme};
use crate::site::{feed_for, view, Action, PublishError, Report, Site};
use crate::store::{self, DocRow, Listing};
use crate::{feeds, markup};
use minijinja::context;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The newest [`PER_PAGE`] rows of each listing one publish renders, read once and shared by
/// the pages that show them: a tag's index page, its feed and its last numbered page show the
/// same newest articles, and so do the home page, the archive's index and its last page. A
/// new article's publish read a listing's newest rows 13 times, 5 now. Both render threads
/// use it; a listing asked for by both at once is read twice, which costs time, not
/// correctness (the writer lock keeps the store still meanwhile).
#[derive(Default)]
pub(crate) struct Newest(Mutex<HashMap<Listing, Arc<Vec<DocRow>>>>);

impl Newest {
    /// Up to [`PER_PAGE`] of the newest articles of `listing`, newest first, without bodies.
    fn rows(&self, conn: &Connection, listing: &Listing) -> rusqlite::Result<Arc<Vec<DocRow>>> {
        let cached = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(listing)
            .cloned();
        if let Some(rows) = cached {
            return Ok(rows);
        }
        let rows = Arc::new(store::newest(conn, listing, 0, PER_PAGE, false)?);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(listing.clone(), rows.clone());
        Ok(rows)
    }

    /// The `n` newest, `n` at most [`PER_PAGE`].
    fn first(&self, conn: &Connection, listing: &Listing, n: u64) -> rusqlite::Result<Vec<DocRow>> {
        debug_assert!(n <= PER_PAGE);
        let rows = self.rows(conn, listing)?;
        Ok(rows[..rows.len().min(n as usize)].to_vec())
    }
}

const _: () = assert!(HOME_ITEMS <= PER_PAGE && FEED_ITEMS <= PER_PAGE);

#[derive(Serialize)]
struct ListingView {
    title: String,
    tag: Option<TagInfo>,
    url: String,
    feed_url: String,
}

#[derive(Serialize)]
struct TagInfo {
    name: String,
    slug: String,
}

#[derive(Serialize, Default)]
struct PageInfo {
    number: Option<u64>,
    newer_url: Option<String>,
    older_url: Option<String>,
}

fn listing_view(conn: &Connection, listing: &Listing) -> rusqlite::Result<ListingView> {
    Ok(match listing {
        Listing::All => ListingView {
            title: "Archive".into(),
            tag: None,
            url: pages::listing_url(listing),
            feed_url: "/feed.atom".into(),
        },
        Listing::Tag(t) => {
            let name = store::tag_name(conn, t)?.unwrap_or_else(|| t.clone());
            ListingView {
                title: name.clone(),
                tag: Some(TagInfo {
                    name,
                    slug: t.clone(),
                }),
                url: pages::listing_url(listing),
                feed_url: format!("/tags/{t}/feed.atom"),
            }
        }
    })
}

fn listing_html(
    theme: &Theme,
    info: &SiteInfo,
    listing: &ListingView,
    items: &[DocRow],
    page: PageInfo,
) -> Result<Vec<u8>, PublishError> {
    let items: Vec<DocView> = items.iter().map(view).collect();
    let html = theme.render(
        "tag.html",
        context! { site => info, listing => listing, items => items, page => page },
    )?;
    Ok(html.into_bytes())
}

/// A numbered listing page from its items (newest first).
fn numbered_page(
    theme: &Theme,
    info: &SiteInfo,
    listing: &Listing,
    lv: &ListingView,
    p: u64,
    count: u64,
    items: &[DocRow],
) -> Result<Action, PublishError> {
    let total = pages::page_count(listing, count, PER_PAGE);
    let page = PageInfo {
        number: Some(p),
        newer_url: (p < total).then(|| pages::listing_page_url(listing, p + 1)),
        older_url: (p > 1).then(|| pages::listing_page_url(listing, p - 1)),
    };
    let path = pages::index_file(&pages::listing_page_url(listing, p));
    Ok(Action::Put(
        path,
        listing_html(theme, info, lv, items, page)?,
    ))
}

fn sitemap_chunk(info: &SiteInfo, items_oldest_first: &[DocRow]) -> Vec<u8> {
    feeds::urlset(items_oldest_first.iter().map(|d| {
        (
            format!("{}{}", info.url, pages::doc_url(d)),
            Some(d.updated_at),
        )
    }))
    .into_bytes()
}

fn sitemap_chunk_path(c: u64) -> String {
    format!("sitemaps/articles-{c}.xml")
}

/// Renders one page from the store; `newest` shares listings' newest rows between the pages
/// of one publish.
pub(crate) fn render_key(
    conn: &Connection,
    theme: &Theme,
    info: &SiteInfo,
    key: &PageKey,
    newest: &Newest,
) -> Result<Action, PublishError> {
    Ok(match key {
        PageKey::Doc(slug) => match store::get(conn, slug)? {
            None => Action::Nothing,
            Some(doc) => Action::Put(pages::doc_path(&doc), doc_html(theme, info, &doc)?),
        },
        PageKey::Remove(path) => Action::Remove(path.clone()),
        PageKey::Home => {
            let items: Vec<DocView> = newest
                .first(conn, &Listing::All, HOME_ITEMS)?
                .iter()
                .map(view)
                .collect();
            let html = theme.render("index.html", context! { site => info, items => items })?;
            Action::Put("index.html".into(), html.into_bytes())
        }
        PageKey::Feed => {
            let docs = store::newest(conn, &Listing::All, 0, FEED_ITEMS, true)?;
            let xml = feed_for(info, &info.title, "/feed.atom", "/", &docs);
            Action::Put("feed.atom".into(), xml.into_bytes())
        }
        PageKey::ListingIndex(listing) => {
            let n = store::count(conn, listing)?;
            let path = pages::index_file(&pages::listing_url(listing));
            if n == 0 && matches!(listing, Listing::Tag(_)) {
                return Ok(Action::Remove(path));
            }
            let items = newest.first(conn, listing, PER_PAGE)?;
            let page = PageInfo {
                number: None,
                newer_url: None,
                older_url: (n > PER_PAGE).then(|| {
                    pages::listing_page_url(listing, pages::page_of(n - PER_PAGE - 1, PER_PAGE))
                }),
            };
            let lv = listing_view(conn, listing)?;
            Action::Put(path, listing_html(theme, info, &lv, &items, page)?)
        }
        PageKey::ListingPage(listing, p) => {
            let n = store::count(conn, listing)?;
            if *p == 0 || *p > pages::page_count(listing, n, PER_PAGE) {
                return Ok(Action::Remove(pages::index_file(&pages::listing_page_url(
                    listing, *p,
                ))));
            }
            let lo = (p - 1) * PER_PAGE;
            let hi = (p * PER_PAGE).min(n);
            // The last page holds the newest `hi - lo` (pages are numbered from the oldest).
            let items = if hi == n {
                newest.first(conn, listing, hi - lo)?
            } else {
                store::rank_range(conn, listing, n, (lo, hi), store::Cols::Listing)?
            };
            let lv = listing_view(conn, listing)?;
            numbered_page(theme, info, listing, &lv, *p, n, &items)?
        }
        PageKey::TagFeed(t) => {
            let listing = Listing::Tag(t.clone());
            let path = format!("tags/{t}/feed.atom");
            if store::count(conn, &listing)? == 0 {
                return Ok(Action::Remove(path));
            }
            // Tag feeds carry summaries; the site feed carries full articles. This keeps
            // the feeds a publish rewrites (one per tag) small to render and compress.
            let docs = newest.first(conn, &listing, FEED_ITEMS)?;
            let name = store::tag_name(conn, t)?.unwrap_or_else(|| t.clone());
            let title = format!("{}: {name}", info.title);
            let xml = feed_for(
                info,
                &title,
                &format!("/{path}"),
                &format!("/tags/{t}/"),
                &docs,
            );
            Action::Put(path, xml.into_bytes())
        }
        PageKey::SitemapIndex => {
            let chunks = store::count(conn, &Listing::All)?.div_ceil(SITEMAP_CHUNK);
            let locs = std::iter::once(format!("{}/sitemaps/pages.xml", info.url))
                .chain((1..=chunks).map(|c| format!("{}/{}", info.url, sitemap_chunk_path(c))));
            Action::Put(
                "sitemap.xml".into(),
                feeds::sitemap_index(locs).into_bytes(),
            )
        }
        PageKey::SitemapPages => {
            let fixed = ["/", "/archive/"].map(|u| (format!("{}{u}", info.url), None));
            let docs = store::all_of_kind(conn, Kind::Page, false)?;
            let docs = docs.iter().map(|d| {
                (
                    format!("{}{}", info.url, pages::doc_url(d)),
                    Some(d.updated_at),
                )
            });
            let tags = store::all_tags(conn)?;
            let tags = tags
                .iter()
                .map(|t| (format!("{}/tags/{t}/", info.url), None));
            let xml = feeds::urlset(fixed.into_iter().chain(docs).chain(tags));
            Action::Put("sitemaps/pages.xml".into(), xml.into_bytes())
        }
        PageKey::SitemapChunk(c) => {
            let n = store::count(conn, &Listing::All)?;
            if *c == 0 || *c > n.div_ceil(SITEMAP_CHUNK) {
                return Ok(Action::Remove(sitemap_chunk_path(*c)));
            }
            let lo = (c - 1) * SITEMAP_CHUNK;
            let hi = (c * SITEMAP_CHUNK).min(n);
            let mut items = store::rank_range(conn, &Listing::All, n, (lo, hi), store::Cols::Keys)?;
            items.reverse();
            Action::Put(sitemap_chunk_path(*c), sitemap_chunk(info, &items))
        }
        PageKey::NotFound => {
            let doc = DocRow {
                slug: "404".into(),
                kind: Kind::Page,
                title: "Page not found".into(),
                body: String::new(),
                format: crate::cms::Format::Html,
                body_html: "<p>This page is not here. It may have moved or been unpublished. \
                            Try the <a href=\"/\">front page</a> or the <a href=\"/archive/\">archive</a>.</p>"
                    .into(),
                summary: String::new(),
                tags: Vec::new(),
                authors: Vec::new(),
                published_at: 0,
                updated_at: 0,
                extra: Default::default(),
            };
            Action::Put("404.html".into(), doc_html(theme, info, &doc)?)
        }
        PageKey::Stylesheet => {
            Action::Put("assets/style.css".into(), theme.css().as_bytes().to_vec())
        }
    })
}

fn doc_html(theme: &Theme, info: &SiteInfo, doc: &DocRow) -> Result<Vec<u8>, PublishError> {
    let template = match doc.kind {
        Kind::Article => "article.html",
        Kind::Page => "page.html",
    };
    let html = theme.render(template, context! { site => info, doc => view(doc) })?;
    Ok(html.into_bytes())
}

/// Documents rendered per batch by [`render_all`]: enough to keep every core busy, few enough
/// that their bodies are a small part of the rebuild's memory.
const RENDER_BATCH: usize = 2048;

/// Rebuilds the whole site. Listings are streamed in one ordered pass each instead of one
/// query per page, and pages are rendered, compressed and written on every core.
pub(crate) fn render_all(
    site: &mut Site,
    started: Instant,
    progress: &dyn Fn(u64, u64),
) -> Result<Report, PublishError> {
    // Bodies first: a sanitiser or Markdown option change applies to every stored document.
    let sanitize = site.options().sanitize;
    {
        let tx = store::begin(site.conn_mut())?;
        for slug in store::all_slugs(&tx)? {
            if let Some(doc) = store::get(&tx, &slug)? {
                let html = markup::body_html(&doc.body, doc.format, sanitize);
                if html != doc.body_html {
                    store::set_body_html(&tx, &slug, &html)?;
                }
            }
        }
        tx.commit()?;
    }
    let (conn, theme, info, output, _) = site.parts();
    let mut report = Report::default();

    let n = store::count_of_kind(conn, Kind::Article)?;
    let archive_pages = n.div_ceil(PER_PAGE).max(1);
    let mut total = n + store::count_of_kind(conn, Kind::Page)? + archive_pages;
    progress(0, total);
    // Documents a batch at a time with their bodies; listings need only the rest of each row.
    let mut rows: Vec<DocRow> = Vec::with_capacity(n as usize);
    let mut done = 0;
    for kind in [Kind::Article, Kind::Page] {
        store::in_batches(conn, kind, RENDER_BATCH, |batch| {
            par_emit(output, &batch, &mut report, |doc| {
                Ok(Action::Put(
                    pages::doc_path(doc),
                    doc_html(theme, info, doc)?,
                ))
            })?;
            done += batch.len() as u64;
            progress(done, total);
            if kind == Kind::Article {
                rows.extend(batch.into_iter().map(|d| DocRow {
                    body: String::new(),
                    body_html: String::new(),
                    ..d
                }));
            }
            Ok::<_, PublishError>(())
        })?;
    }
    // Counted before the documents were read; the listings below go by what was read.
    let n = rows.len() as u64;
    let all = Listing::All;
    let all_view = listing_view(conn, &all)?;
    let chunks: Vec<(u64, &[DocRow])> = if rows.is_empty() {
        vec![(1, &rows[..])]
    } else {
        (1..).zip(rows.chunks(PER_PAGE as usize)).collect()
    };
    par_emit(output, &chunks, &mut report, |(p, chunk)| {
        let items: Vec<DocRow> = chunk.iter().rev().cloned().collect();
        numbered_page(theme, info, &all, &all_view, *p, n, &items)
    })?;
    let sitemaps: Vec<(u64, &[DocRow])> = (1..).zip(rows.chunks(SITEMAP_CHUNK as usize)).collect();
    par_emit(output, &sitemaps, &mut report, |(c, chunk)| {
        Ok(Action::Put(
            sitemap_chunk_path(*c),
            sitemap_chunk(info, chunk),
        ))
    })?;
    done += chunks.len() as u64;
    progress(done, total);

    // Tags: every page of every tag, from one pass over the rows.
    let mut by_tag: std::collections::BTreeMap<&str, Vec<&DocRow>> = Default::default();
    for d in &rows {
        for t in &d.tags {
            by_tag.entry(t.slug.as_str()).or_default().push(d);
        }
    }
    let mut tag_lists = Vec::with_capacity(by_tag.len());
    for (tag, members) in by_tag {
        let listing = Listing::Tag(tag.to_string());
        let view = listing_view(conn, &listing)?;
        tag_lists.push((listing, view, members));
    }
    let work: Vec<(usize, u64)> = tag_lists
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, m))| (1..=(m.len() as u64).div_ceil(PER_PAGE)).map(move |p| (i, p)))
        .collect();
    total += work.len() as u64;
    progress(done, total);
    par_emit(output, &work, &mut report, |(i, p)| {
        let (listing, view, members) = &tag_lists[*i];
        let lo = ((p - 1) * PER_PAGE) as usize;
        let hi = (lo + PER_PAGE as usize).min(members.len());
        let items: Vec<DocRow> = members[lo..hi].iter().rev().map(|d| (*d).clone()).collect();
        numbered_page(theme, info, listing, view, *p, members.len() as u64, &items)
    })?;
    done += work.len() as u64;
    progress(done, total);
    let mut keys: Vec<PageKey> = Vec::new();
    for (listing, _, _) in &tag_lists {
        if let Listing::Tag(t) = listing {
            keys.push(PageKey::ListingIndex(listing.clone()));
            keys.push(PageKey::TagFeed(t.clone()));
        }
    }
    keys.extend([
        PageKey::ListingIndex(Listing::All),
        PageKey::Home,
        PageKey::Feed,
        PageKey::SitemapIndex,
        PageKey::SitemapPages,
        PageKey::NotFound,
        PageKey::Stylesheet,
    ]);
    // These read the store, whose connection stays on this thread.
    let mut dirs = DirSync::batch(output.root());
    for key in &keys {
        // Fresh for each key: shared across a thousand tags it would hold all their rows.
        let action = render_key(conn, theme, info, key, &Newest::default())?;
        apply(output, action, &mut report, &mut dirs)?;
    }
    dirs.finish()?;
    progress(total, total);
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

fn apply(
    output: &Output,
    action: Action,
    report: &mut Report,
    dirs: &mut DirSync,
) -> Result<(), PublishError> {
    match action {
        Action::Put(path, bytes) => match output.put(&path, &bytes, dirs)? {
            Outcome::Written => report.written.push(path),
            Outcome::Unchanged => report.unchanged.push(path),
        },
        Action::Remove(path) => {
            if output.remove(&path, dirs)? {
                report.removed.push(path);
            }
        }
        Action::Nothing => {}
    }
    Ok(())
}

/// Renders and writes `items` on every core, in contiguous slices, merging the reports in
/// order. Files are not fsynced one by one: the caller syncs the file system at the end.
fn par_emit<T: Sync>(
    output: &Output,
    items: &[T],
    report: &mut Report,
    render: impl Fn(&T) -> Result<Action, PublishError> + Sync,
) -> Result<(), PublishError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = items.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Report, PublishError>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|slice| {
                let render = &render;
                s.spawn(move || {
                    let mut part = Report::default();
                    let mut dirs = DirSync::batch(output.root());
                    for item in slice {
                        apply(output, render(item)?, &mut part, &mut dirs)?;
                    }
                    Ok(part)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("render thread panicked"))
            .collect()
    });
    for part in parts {
        let part = part?;
        report.written.extend(part.written);
        report.unchanged.extend(part.unchanged);
        report.removed.extend(part.removed);
    }
    Ok(())
}
