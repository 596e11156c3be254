//! The embedded document store (SQLite, WAL, one file under `--state`).
//!
//! Tables:
//! - `docs`: one row per published document, with its rendered (sanitised) body.
//! - `doc_tags`: which listing each article belongs to, keyed `(tag, published_at, slug)`, so
//!   a tag page's rows and an article's rank in a tag come from one index range.
//! - `counts`: articles per listing (`''` = the whole archive, else a tag slug), kept in the
//!   same transaction as the documents so pagination never needs a full count.
//! - `pending`: the pages a committed change still has to render; emptied once they are on
//!   disk, replayed at start-up after a crash.
//!
//! Together these are what each rendered page depends on: an article page on its row, a
//! listing page on the rows whose rank falls in its range, feeds on the newest rows.

use crate::cms::{Format, Kind, Tag};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

const SCHEMA_VERSION: i64 = 1;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS docs(
    slug TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    format TEXT NOT NULL,
    body_html TEXT NOT NULL,
    summary TEXT NOT NULL,
    tags TEXT NOT NULL,
    authors TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_order ON docs(kind, published_at, slug);
CREATE TABLE IF NOT EXISTS doc_tags(
    tag TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY(tag, published_at, slug)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_tags_slug ON doc_tags(slug);
CREATE TABLE IF NOT EXISTS counts(listing TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending(key TEXT PRIMARY KEY) WITHOUT ROWID;
";

/// A list of articles with its own pages: the archive, or one tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listing {
    All,
    Tag(String),
}

impl Listing {
    fn key(&self) -> &str {
        match self {
            Listing::All => "",
            Listing::Tag(t) => t,
        }
    }
}

/// A stored document. Listing queries leave `body` and `body_html` empty.
#[derive(Debug, Clone, PartialEq)]
pub struct DocRow {
    pub slug: String,
    pub kind: Kind,
    pub title: String,
    pub body: String,
    pub format: Format,
    pub body_html: String,
    pub summary: String,
    pub tags: Vec<Tag>,
    pub authors: Vec<String>,
    /// Unix seconds, UTC.
    pub published_at: i64,
    pub updated_at: i64,
    pub extra: Map<String, Value>,
}

/// Opens (and creates or migrates) the store in `state_dir`.
pub fn open(state_dir: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(state_dir.join("producer.sqlite3"))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "store schema version {version} is newer than this producer ({SCHEMA_VERSION})"
        )));
    }
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(conn)
}

/// Starts a write transaction that takes the database lock at once.
pub fn begin(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

const LIST_COLS: &str = "d.slug, d.kind, d.title, '', d.format, '', d.summary, d.tags, d.authors, d.published_at, d.updated_at, d.extra";
const FULL_COLS: &str = "d.slug, d.kind, d.title, d.body, d.format, d.body_html, d.summary, d.tags, d.authors, d.published_at, d.updated_at, d.extra";

fn cols(with_body: bool) -> &'static str {
    if with_body {
        FULL_COLS
    } else {
        LIST_COLS
    }
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<DocRow> {
    let json = |i: usize| -> rusqlite::Result<Value> {
        let s: String = r.get(i)?;
        serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
    };
    let kind: String = r.get(1)?;
    let format: String = r.get(4)?;
    Ok(DocRow {
        slug: r.get(0)?,
        kind: if kind == "page" {
            Kind::Page
        } else {
            Kind::Article
        },
        title: r.get(2)?,
        body: r.get(3)?,
        format: if format == "html" {
            Format::Html
        } else {
            Format::Markdown
        },
        body_html: r.get(5)?,
        summary: r.get(6)?,
        tags: serde_json::from_value(json(7)?).unwrap_or_default(),
        authors: serde_json::from_value(json(8)?).unwrap_or_default(),
        published_at: r.get(9)?,
        updated_at: r.get(10)?,
        extra: match json(11)? {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    })
}

/// The full document with this slug.
pub fn get(conn: &Connection, slug: &str) -> rusqlite::Result<Option<DocRow>> {
    conn.query_row(
        &format!("SELECT {FULL_COLS} FROM docs d WHERE d.slug = ?1"),
        [slug],
        from_row,
    )
    .optional()
}

/// Inserts or replaces a document, keeping `doc_tags` and `counts` in step.
pub fn put(conn: &Connection, doc: &DocRow) -> rusqlite::Result<()> {
    delete(conn, &doc.slug)?;
    conn.prepare_cached(
        "INSERT INTO docs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        doc.slug,
        doc.kind.as_str(),
        doc.title,
        doc.body,
        match doc.format {
            Format::Html => "html",
            Format::Markdown => "markdown",
        },
        doc.body_html,
        doc.summary,
        serde_json::to_string(&doc.tags).expect("tags serialise"),
        serde_json::to_string(&doc.authors).expect("authors serialise"),
        doc.published_at,
        doc.updated_at,
        Value::Object(doc.extra.clone()).to_string(),
    ])?;
    if doc.kind == Kind::Article {
        bump(conn, &Listing::All, 1)?;
        let mut ins = conn.prepare_cached("INSERT INTO doc_tags VALUES (?1, ?2, ?3, ?4)")?;
        for t in &doc.tags {
            ins.execute(params![t.slug, doc.published_at, doc.slug, t.name])?;
            bump(conn, &Listing::Tag(t.slug.clone()), 1)?;
        }
    }
    Ok(())
}

/// Removes a document; returns whether it existed.
pub fn delete(conn: &Connection, slug: &str) -> rusqlite::Result<bool> {
    let Some(old) = get_kind_tags(conn, slug)? else {
        return Ok(false);
    };
    conn.prepare_cached("DELETE FROM docs WHERE slug = ?1")?
        .execute([slug])?;
    if old.0 == Kind::Article {
        bump(conn, &Listing::All, -1)?;
        conn.prepare_cached("DELETE FROM doc_tags WHERE slug = ?1")?
            .execute([slug])?;
        for t in old.1 {
            bump(conn, &Listing::Tag(t.slug), -1)?;
        }
    }
    Ok(true)
}

fn get_kind_tags(conn: &Connection, slug: &str) -> rusqlite::Result<Option<(Kind, Vec<Tag>)>> {
    conn.prepare_cached("SELECT kind, tags FROM docs WHERE slug = ?1")?
        .query_row([slug], |r| {
            let kind: String = r.get(0)?;
            let tags: String = r.get(1)?;
            Ok((
                if kind == "page" {
                    Kind::Page
                } else {
                    Kind::Article
                },
                serde_json::from_str(&tags).unwrap_or_default(),
            ))
        })
        .optional()
}

fn bump(conn: &Connection, listing: &Listing, by: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO counts VALUES (?1, max(?2, 0)) ON CONFLICT(listing) DO UPDATE SET n = max(n + ?2, 0)",
    )?
    .execute(params![listing.key(), by])?;
    conn.prepare_cached("DELETE FROM counts WHERE n = 0 AND listing <> ''")?
        .execute([])?;
    Ok(())
}

/// Articles in a listing.
pub fn count(conn: &Connection, listing: &Listing) -> rusqlite::Result<u64> {
    let n: Option<i64> = conn
        .prepare_cached("SELECT n FROM counts WHERE listing = ?1")?
        .query_row([listing.key()], |r| r.get(0))
        .optional()?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// Articles in a listing that sort after `(published_at, slug)`: cheap for recent articles,
/// which is what a newsroom publishes.
pub fn newer_than(
    conn: &Connection,
    listing: &Listing,
    published_at: i64,
    slug: &str,
) -> rusqlite::Result<u64> {
    let n: i64 = match listing {
        Listing::All => conn
            .prepare_cached(
                "SELECT COUNT(*) FROM docs WHERE kind = 'article' AND (published_at, slug) > (?1, ?2)",
            )?
            .query_row(params![published_at, slug], |r| r.get(0))?,
        Listing::Tag(t) => conn
            .prepare_cached(
                "SELECT COUNT(*) FROM doc_tags WHERE tag = ?1 AND (published_at, slug) > (?2, ?3)",
            )?
            .query_row(params![t, published_at, slug], |r| r.get(0))?,
    };
    Ok(n as u64)
}

/// The articles of a listing of `count` with ranks `lo..hi` (0 = oldest), newest first.
/// Walks the index from whichever end is nearer, so pages near either end are cheap.
pub fn rank_range(
    conn: &Connection,
    listing: &Listing,
    count: u64,
    lo: u64,
    hi: u64,
) -> rusqlite::Result<Vec<DocRow>> {
    let limit = hi.saturating_sub(lo);
    if lo <= count.saturating_sub(hi) {
        let mut rows = oldest(conn, listing, lo, limit)?;
        rows.reverse();
        Ok(rows)
    } else {
        newest(conn, listing, count.saturating_sub(hi), limit, false)
    }
}

fn oldest(
    conn: &Connection,
    listing: &Listing,
    skip: u64,
    limit: u64,
) -> rusqlite::Result<Vec<DocRow>> {
    let (sql, tag) = match listing {
        Listing::All => (
            format!("SELECT {LIST_COLS} FROM docs d WHERE d.kind = 'article' ORDER BY d.published_at, d.slug LIMIT ?1 OFFSET ?2"),
            None,
        ),
        Listing::Tag(t) => (
            format!("SELECT {LIST_COLS} FROM doc_tags t JOIN docs d ON d.slug = t.slug WHERE t.tag = ?3 ORDER BY t.published_at, t.slug LIMIT ?1 OFFSET ?2"),
            Some(t),
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let it = match tag {
        None => stmt.query_map(params![limit as i64, skip as i64], from_row)?,
        Some(t) => stmt.query_map(params![limit as i64, skip as i64, t], from_row)?,
    };
    it.collect()
}

/// Up to `limit` articles of a listing, newest first, skipping the `skip` newest.
pub fn newest(
    conn: &Connection,
    listing: &Listing,
    skip: u64,
    limit: u64,
    with_body: bool,
) -> rusqlite::Result<Vec<DocRow>> {
    let cols = cols(with_body);
    let (sql, rows) = match listing {
        Listing::All => (
            format!("SELECT {cols} FROM docs d WHERE d.kind = 'article' ORDER BY d.published_at DESC, d.slug DESC LIMIT ?1 OFFSET ?2"),
            None,
        ),
        Listing::Tag(t) => (
            format!("SELECT {cols} FROM doc_tags t JOIN docs d ON d.slug = t.slug WHERE t.tag = ?3 ORDER BY t.published_at DESC, t.slug DESC LIMIT ?1 OFFSET ?2"),
            Some(t),
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let it = match rows {
        None => stmt.query_map(params![limit as i64, skip as i64], from_row)?,
        Some(t) => stmt.query_map(params![limit as i64, skip as i64, t], from_row)?,
    };
    it.collect()
}

/// The display name of a tag, from its newest article.
pub fn tag_name(conn: &Connection, tag: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT name FROM doc_tags WHERE tag = ?1 ORDER BY published_at DESC, slug DESC LIMIT 1",
    )?
    .query_row([tag], |r| r.get(0))
    .optional()
}

/// Every tag slug in use.
pub fn all_tags(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT listing FROM counts WHERE listing <> '' ORDER BY listing")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Every document of a kind, oldest first (for full rebuilds and the sitemap of pages).
pub fn all_of_kind(
    conn: &Connection,
    kind: Kind,
    with_body: bool,
) -> rusqlite::Result<Vec<DocRow>> {
    let cols = cols(with_body);
    conn.prepare(&format!(
        "SELECT {cols} FROM docs d WHERE d.kind = ?1 ORDER BY d.published_at, d.slug"
    ))?
    .query_map([kind.as_str()], from_row)?
    .collect()
}

/// Slugs of every document, oldest first.
pub fn all_slugs(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT slug FROM docs ORDER BY kind, published_at, slug")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Replaces the rendered body of a document (full rebuilds after a sanitiser change).
pub fn set_body_html(conn: &Connection, slug: &str, html: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE docs SET body_html = ?2 WHERE slug = ?1")?
        .execute(params![slug, html])?;
    Ok(())
}

/// Records pages that must be rendered (in the same transaction as the change).
pub fn add_pending(conn: &Connection, keys: &[String]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("INSERT OR IGNORE INTO pending VALUES (?1)")?;
    for k in keys {
        stmt.execute([k])?;
    }
    Ok(())
}

/// Pages left to render by a change whose rendering did not finish.
pub fn pending(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT key FROM pending")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Forgets pending pages once they are on disk.
pub fn clear_pending(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM pending", [])?;
    Ok(())
}
