//! The embedded document store (SQLite, WAL, one file under `--state`).
//!
//! Tables:
//! - `docs`: one row per published document, with its rendered (sanitised) body.
//! - `doc_tags`: which listing each article belongs to, keyed `(tag, published_at, slug)`, so
//!   a tag page's rows and an article's rank in a tag come from one index range.
//! - `counts`: articles per listing (`''` = the whole archive, else a tag slug), kept in the
//!   same transaction as the documents so pagination never needs a full count.
//! - `rank_buckets`: articles per listing per 30-day bucket of `published_at`, kept the same
//!   way. An article's rank is the sum of the buckets before its own plus a count inside its
//!   bucket, and the article at a rank is found the same way, so neither walks the listing:
//!   a publish costs the same on an old article of a 100,000-article archive as on a new one.
//! - `pending`: the pages a committed change still has to render; emptied once they are on
//!   disk, replayed at start-up after a crash.
//! - `variants_due`: files whose precompressed variants are still to be made, with the
//!   generation of the publish that wrote them; emptied by the worker
//!   ([`crate::variants`]), replayed at start-up.
//!
//! Together these are what each rendered page depends on: an article page on its row, a
//! listing page on the rows whose rank falls in its range, feeds on the newest rows.

use crate::cms::{Format, Kind, Tag};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// 2 added `rank_buckets` (an older producer would not keep it up to date) and
/// `variants_due`.
const SCHEMA_VERSION: i64 = 2;
/// The width of a rank bucket.
const BUCKET_SECONDS: i64 = 30 * 86_400;
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
-- Every column a listing, a feed's entry list or a sitemap reads (LIST_COLS, KEY_COLS), in
-- the two orders they are looked up in: such a query reads the index alone, no row.
CREATE INDEX IF NOT EXISTS docs_list ON docs(kind, published_at, slug, title, format, summary, tags, authors, updated_at, extra);
CREATE INDEX IF NOT EXISTS docs_slug_list ON docs(slug, kind, title, format, summary, tags, authors, published_at, updated_at, extra);
-- And the keys alone, narrow: finding the article at a rank walks up to a bucket's worth of
-- entries (key_at), a few pages here against dozens in docs_list.
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
CREATE TABLE IF NOT EXISTS rank_buckets(
    listing TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(listing, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending(key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS variants_due(path TEXT PRIMARY KEY, generation INTEGER NOT NULL) WITHOUT ROWID;
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

const FILE: &str = "producer.sqlite3";

/// The store's database file.
pub fn db_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join(FILE)
}

/// The store's write-ahead log. A commit is written there (`synchronous = NORMAL`, no fsync
/// of its own); a publish makes it durable in the same barrier as its pages.
pub fn wal_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join(format!("{FILE}-wal"))
}

/// Opens (and creates or migrates) the store in `state_dir`.
pub fn open(state_dir: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(db_path(state_dir))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // 32 MiB of page cache instead of 2 MiB: a publish reads the same listing pages and
    // overflow pages (bodies) again and again.
    conn.pragma_update(None, "cache_size", -32_768)?;
    // A publish runs a few dozen distinct statements (each listing query comes in ascending
    // and descending, archive and tag forms): keep them all prepared, not the default 16.
    conn.set_prepared_statement_cache_capacity(64);
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "store schema version {version} is newer than this producer ({SCHEMA_VERSION})"
        )));
    }
    conn.execute_batch(SCHEMA)?;
    if version < 2 {
        // Buckets for the articles a version-1 store already holds.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             DELETE FROM rank_buckets;
             INSERT INTO rank_buckets SELECT '', {b}, COUNT(*) FROM docs WHERE kind = 'article' GROUP BY 2;
             INSERT INTO rank_buckets SELECT tag, {b}, COUNT(*) FROM doc_tags GROUP BY 1, 2;
             COMMIT;",
            b = BUCKET_SQL
        ))?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(conn)
}

/// `published_at.div_euclid(BUCKET_SECONDS)` in SQL (which divides towards zero).
const BUCKET_SQL: &str =
    "(CASE WHEN published_at >= 0 THEN published_at / 2592000 ELSE (published_at - 2591999) / 2592000 END)";

fn bucket(published_at: i64) -> i64 {
    published_at.div_euclid(BUCKET_SECONDS)
}

/// Starts a write transaction that takes the database lock at once.
pub fn begin(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// A tag listing's join onto `docs` by slug, through the index that holds every column of
/// [`LIST_COLS`] and [`KEY_COLS`], so it reads no row (SQLite would pick the primary key's
/// index, which does not). Rows hold their bodies before those columns: reading `summary`
/// from a row walks the bodies' overflow pages first.
const LIST_INDEX: &str = "INDEXED BY docs_slug_list";
const LIST_COLS: &str = "d.slug, d.kind, d.title, '', d.format, '', d.summary, d.tags, d.authors, d.published_at, d.updated_at, d.extra";
/// What a sitemap needs (URL and last change): no text, no JSON to parse.
const KEY_COLS: &str =
    "d.slug, d.kind, '', '', d.format, '', '', '[]', '[]', d.published_at, d.updated_at, '{}'";

/// Which columns a listing query fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cols {
    /// Everything a listing page shows (no bodies).
    Listing,
    /// Slug, kind, dates only.
    Keys,
}
const FULL_COLS: &str = "d.slug, d.kind, d.title, d.body, d.format, d.body_html, d.summary, d.tags, d.authors, d.published_at, d.updated_at, d.extra";

fn cols(with_body: bool) -> &'static str {
    if with_body {
        FULL_COLS
    } else {
        LIST_COLS
    }
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<DocRow> {
    // Straight from the row's text into the type, with no `Value` tree in between (that was
    // a third of this function's time in a publish's listings). Well-formed JSON of another
    // shape reads as empty; malformed JSON is an error.
    fn json<T: serde::de::DeserializeOwned + Default>(
        r: &Row<'_>,
        i: usize,
    ) -> rusqlite::Result<T> {
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
        };
        let s = r.get_ref(i)?.as_str().map_err(|e| fail(e.into()))?;
        // Most rows' authors, extra or tags are empty, and every sitemap row's are: the
        // empty value of any of these types, as parsing gives.
        if s == "[]" || s == "{}" {
            return Ok(T::default());
        }
        match serde_json::from_str(s) {
            Ok(v) => Ok(v),
            Err(e) if e.is_data() => Ok(T::default()),
            Err(e) => Err(fail(e.into())),
        }
    }
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
        tags: json(r, 7)?,
        authors: json(r, 8)?,
        published_at: r.get(9)?,
        updated_at: r.get(10)?,
        extra: json(r, 11)?,
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
        bump(conn, &Listing::All, doc.published_at, 1)?;
        let mut ins = conn.prepare_cached("INSERT INTO doc_tags VALUES (?1, ?2, ?3, ?4)")?;
        for t in &doc.tags {
            ins.execute(params![t.slug, doc.published_at, doc.slug, t.name])?;
            bump(conn, &Listing::Tag(t.slug.clone()), doc.published_at, 1)?;
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
        bump(conn, &Listing::All, old.2, -1)?;
        conn.prepare_cached("DELETE FROM doc_tags WHERE slug = ?1")?
            .execute([slug])?;
        for t in old.1 {
            bump(conn, &Listing::Tag(t.slug), old.2, -1)?;
        }
    }
    Ok(true)
}

fn get_kind_tags(conn: &Connection, slug: &str) -> rusqlite::Result<Option<(Kind, Vec<Tag>, i64)>> {
    conn.prepare_cached("SELECT kind, tags, published_at FROM docs WHERE slug = ?1")?
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
                r.get(2)?,
            ))
        })
        .optional()
}

fn bump(conn: &Connection, listing: &Listing, published_at: i64, by: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO counts VALUES (?1, max(?2, 0)) ON CONFLICT(listing) DO UPDATE SET n = max(n + ?2, 0)",
    )?
    .execute(params![listing.key(), by])?;
    conn.prepare_cached(
        "INSERT INTO rank_buckets VALUES (?1, ?2, max(?3, 0)) ON CONFLICT(listing, bucket) DO UPDATE SET n = max(n + ?3, 0)",
    )?
    .execute(params![listing.key(), bucket(published_at), by])?;
    if by < 0 {
        conn.prepare_cached("DELETE FROM counts WHERE listing = ?1 AND n = 0 AND listing <> ''")?
            .execute([listing.key()])?;
        conn.prepare_cached(
            "DELETE FROM rank_buckets WHERE listing = ?1 AND bucket = ?2 AND n = 0",
        )?
        .execute(params![listing.key(), bucket(published_at)])?;
    }
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

/// The rank of `(published_at, slug)` in a listing: how many of its articles sort before it
/// (0 = oldest). The buckets before the key's own are summed; only the key's bucket is
/// counted row by row.
pub fn rank(
    conn: &Connection,
    listing: &Listing,
    published_at: i64,
    slug: &str,
) -> rusqlite::Result<u64> {
    let b = bucket(published_at);
    let before: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(n), 0) FROM rank_buckets WHERE listing = ?1 AND bucket < ?2",
        )?
        .query_row(params![listing.key(), b], |r| r.get(0))?;
    let start = b * BUCKET_SECONDS;
    let inside: i64 = match listing {
        Listing::All => conn
            .prepare_cached(
                "SELECT COUNT(*) FROM docs WHERE kind = 'article' AND published_at >= ?1 AND (published_at, slug) < (?2, ?3)",
            )?
            .query_row(params![start, published_at, slug], |r| r.get(0))?,
        Listing::Tag(t) => conn
            .prepare_cached(
                "SELECT COUNT(*) FROM doc_tags WHERE tag = ?1 AND published_at >= ?2 AND (published_at, slug) < (?3, ?4)",
            )?
            .query_row(params![t, start, published_at, slug], |r| r.get(0))?,
    };
    Ok((before + inside).max(0) as u64)
}

/// The `(published_at, slug)` of the article of rank `r` in a listing of `count`, found from
/// whichever end is nearer, bucket by bucket.
fn key_at(
    conn: &Connection,
    listing: &Listing,
    count: u64,
    r: u64,
) -> rusqlite::Result<Option<(i64, String)>> {
    let from_newest = r >= count / 2;
    // How many articles to pass, counting from the end we walk from.
    let mut left = if from_newest {
        count.saturating_sub(r + 1)
    } else {
        r
    } as i64;
    let sql = if from_newest {
        "SELECT bucket, n FROM rank_buckets WHERE listing = ?1 ORDER BY bucket DESC"
    } else {
        "SELECT bucket, n FROM rank_buckets WHERE listing = ?1 ORDER BY bucket"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([listing.key()])?;
    let mut found = None;
    while let Some(row) = rows.next()? {
        let (b, n): (i64, i64) = (row.get(0)?, row.get(1)?);
        if left < n {
            found = Some(b);
            break;
        }
        left -= n;
    }
    let Some(b) = found else {
        return Ok(None);
    };
    let (lo, hi) = (b * BUCKET_SECONDS, (b + 1) * BUCKET_SECONDS);
    let order = if from_newest { "DESC" } else { "" };
    let (sql, tag) = match listing {
        Listing::All => (
            format!("SELECT published_at, slug FROM docs WHERE kind = 'article' AND published_at >= ?1 AND published_at < ?2 ORDER BY published_at {order}, slug {order} LIMIT 1 OFFSET ?3"),
            None,
        ),
        Listing::Tag(t) => (
            format!("SELECT published_at, slug FROM doc_tags WHERE tag = ?4 AND published_at >= ?1 AND published_at < ?2 ORDER BY published_at {order}, slug {order} LIMIT 1 OFFSET ?3"),
            Some(t),
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let key = |r: &Row<'_>| Ok((r.get(0)?, r.get(1)?));
    match tag {
        None => stmt.query_row(params![lo, hi, left], key),
        Some(t) => stmt.query_row(params![lo, hi, left, t], key),
    }
    .optional()
}

/// The articles of a listing of `count` with ranks `lo..hi` (0 = oldest), newest first:
/// the key at rank `lo`, then a walk of the index from it.
pub fn rank_range(
    conn: &Connection,
    listing: &Listing,
    count: u64,
    (lo, hi): (u64, u64),
    cols: Cols,
) -> rusqlite::Result<Vec<DocRow>> {
    let cols = match cols {
        Cols::Listing => LIST_COLS,
        Cols::Keys => KEY_COLS,
    };
    let limit = hi.saturating_sub(lo);
    let Some((at, slug)) = key_at(conn, listing, count, lo)? else {
        return Ok(Vec::new());
    };
    let (sql, tag) = match listing {
        Listing::All => (
            format!("SELECT {cols} FROM docs d WHERE d.kind = 'article' AND (d.published_at, d.slug) >= (?1, ?2) ORDER BY d.published_at, d.slug LIMIT ?3"),
            None,
        ),
        Listing::Tag(t) => (
            format!("SELECT {cols} FROM doc_tags t JOIN docs d {LIST_INDEX} ON d.slug = t.slug WHERE t.tag = ?4 AND (t.published_at, t.slug) >= (?1, ?2) ORDER BY t.published_at, t.slug LIMIT ?3"),
            Some(t),
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let it = match tag {
        None => stmt.query_map(params![at, slug, limit as i64], from_row)?,
        Some(t) => stmt.query_map(params![at, slug, limit as i64, t], from_row)?,
    };
    let mut rows = it.collect::<rusqlite::Result<Vec<DocRow>>>()?;
    rows.reverse();
    Ok(rows)
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
            format!("SELECT {cols} FROM doc_tags t JOIN docs d {index} ON d.slug = t.slug WHERE t.tag = ?3 ORDER BY t.published_at DESC, t.slug DESC LIMIT ?1 OFFSET ?2", index = if with_body { "" } else { LIST_INDEX }),
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

/// The documents of kind `?1`, oldest first.
fn of_kind_sql(cols: &str) -> String {
    format!("SELECT {cols} FROM docs d WHERE d.kind = ?1 ORDER BY d.published_at, d.slug")
}

/// Every document of a kind, oldest first (the sitemap of pages; the benchmarks' seeding).
pub fn all_of_kind(
    conn: &Connection,
    kind: Kind,
    with_body: bool,
) -> rusqlite::Result<Vec<DocRow>> {
    conn.prepare(&of_kind_sql(cols(with_body)))?
        .query_map([kind.as_str()], from_row)?
        .collect()
}

/// Every document of `kind` with its body, oldest first, handed to `each` at most `n` at a
/// time: a full rebuild then holds one batch of bodies, not all of them (at 100k articles
/// that was most of its peak memory).
pub fn in_batches<E: From<rusqlite::Error>>(
    conn: &Connection,
    kind: Kind,
    n: usize,
    mut each: impl FnMut(Vec<DocRow>) -> Result<(), E>,
) -> Result<(), E> {
    let mut stmt = conn.prepare(&of_kind_sql(FULL_COLS))?;
    let mut rows = stmt.query_map([kind.as_str()], from_row)?;
    loop {
        let batch = rows
            .by_ref()
            .take(n.max(1))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if batch.is_empty() {
            return Ok(());
        }
        each(batch)?;
    }
}

/// How many documents of `kind` the store holds.
pub fn count_of_kind(conn: &Connection, kind: Kind) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COUNT(*) FROM docs WHERE kind = ?1",
        [kind.as_str()],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
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

/// Records the files whose variants are due, with the generation of the publish that asked.
pub fn record_due(conn: &Connection, due: &[String], generation: i64) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO variants_due VALUES (?1, ?2)")?;
    for path in due {
        stmt.execute(params![path, generation])?;
    }
    drop(stmt);
    tx.commit()
}

/// Forgets the pending pages once a render has put every one of them on disk, directories
/// flushed.
pub fn clear_pending(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM pending", []).map(drop)
}

/// Files whose variants are due, with their generation.
pub fn variants_due(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    conn.prepare("SELECT path, generation FROM variants_due")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Forgets due variants once made, unless a newer publish has asked for them again.
pub fn variants_done(conn: &Connection, done: &[(&str, i64)]) -> rusqlite::Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let mut stmt =
        tx.prepare_cached("DELETE FROM variants_due WHERE path = ?1 AND generation = ?2")?;
    for (path, generation) in done {
        stmt.execute(params![path, generation])?;
    }
    drop(stmt);
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn row(slug: String, published_at: i64, tags: &[&str]) -> DocRow {
        DocRow {
            slug,
            kind: Kind::Article,
            title: "t".into(),
            body: String::new(),
            format: Format::Markdown,
            body_html: String::new(),
            summary: String::new(),
            tags: tags
                .iter()
                .map(|t| Tag {
                    slug: t.to_string(),
                    name: t.to_string(),
                })
                .collect(),
            authors: Vec::new(),
            published_at,
            updated_at: published_at,
            extra: Map::new(),
        }
    }

    #[test]
    fn json_columns_read_as_their_types_empty_when_misshapen_and_fail_when_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path()).unwrap();
        let mut doc = row("a".into(), 100, &["x", "y"]);
        doc.authors = vec!["Ann".into()];
        doc.extra.insert("k".into(), Value::from(1));
        put(&conn, &doc).unwrap();
        assert_eq!(get(&conn, "a").unwrap().unwrap(), doc);
        let set = |tags: &str, authors: &str, extra: &str| {
            conn.execute(
                "UPDATE docs SET tags = ?1, authors = ?2, extra = ?3 WHERE slug = 'a'",
                [tags, authors, extra],
            )
            .unwrap();
        };
        set(r#"{"slug": "x"}"#, "7", "[1]");
        let odd = get(&conn, "a").unwrap().unwrap();
        assert!(odd.tags.is_empty() && odd.authors.is_empty() && odd.extra.is_empty());
        set("[{", "[]", "{}");
        assert!(matches!(
            get(&conn, "a"),
            Err(rusqlite::Error::FromSqlConversionFailure(7, _, _))
        ));
    }

    #[test]
    fn batches_hold_every_document_of_the_kind_once_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path()).unwrap();
        for i in 0..7 {
            let mut d = row(format!("s{i}"), 100 - i, &[]);
            d.body = format!("body {i}");
            put(&conn, &d).unwrap();
        }
        let mut page = row("about".into(), 1, &[]);
        page.kind = Kind::Page;
        put(&conn, &page).unwrap();
        let mut seen = Vec::new();
        in_batches(&conn, Kind::Article, 3, |b| {
            seen.push(
                b.iter()
                    .map(|d| (d.slug.clone(), d.body.clone()))
                    .collect::<Vec<_>>(),
            );
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
        let want = |i: i64| (format!("s{i}"), format!("body {i}"));
        assert_eq!(
            seen,
            vec![
                vec![want(6), want(5), want(4)],
                vec![want(3), want(2), want(1)],
                vec![want(0)]
            ]
        );
        assert_eq!(count_of_kind(&conn, Kind::Article).unwrap(), 7);
        assert_eq!(count_of_kind(&conn, Kind::Page).unwrap(), 1);
    }

    #[test]
    fn listing_queries_read_the_covering_indexes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path()).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        for cols in [LIST_COLS, KEY_COLS] {
            let all = plan(&format!(
                "SELECT {cols} FROM docs d WHERE d.kind = 'article' AND (d.published_at, d.slug) >= (1, 'a') ORDER BY d.published_at, d.slug LIMIT 20"
            ));
            assert!(all.contains("COVERING INDEX docs_list"), "{all}");
            let tag = plan(&format!(
                "SELECT {cols} FROM doc_tags t JOIN docs d {LIST_INDEX} ON d.slug = t.slug WHERE t.tag = 'x' ORDER BY t.published_at DESC, t.slug DESC LIMIT 20"
            ));
            assert!(tag.contains("COVERING INDEX docs_slug_list"), "{tag}");
        }
        // Finding the key at a rank walks the narrow index, not the wide one.
        let key = plan(
            "SELECT published_at, slug FROM docs WHERE kind = 'article' AND published_at >= 1 AND published_at < 2 ORDER BY published_at, slug LIMIT 1 OFFSET 3",
        );
        assert!(key.contains("COVERING INDEX docs_order"), "{key}");
    }

    #[test]
    fn ranks_and_rank_ranges_agree_with_a_full_sort() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut all: Vec<(i64, String, bool)> = Vec::new();
        // Dates before 1970 too, several articles in one second, in many buckets.
        for i in 0..600 {
            let at = rng.gen_range(-3 * BUCKET_SECONDS..40 * BUCKET_SECONDS) / 7 * 7;
            let tagged = rng.gen_bool(0.4);
            put(
                &conn,
                &row(format!("s{i}"), at, if tagged { &["t"] } else { &[] }),
            )
            .unwrap();
            all.push((at, format!("s{i}"), tagged));
        }
        // Unpublish some and move some, as edits do.
        for i in (0..600).step_by(7) {
            delete(&conn, &format!("s{i}")).unwrap();
            all.retain(|(_, s, _)| *s != format!("s{i}"));
        }
        for i in (3..600).step_by(11) {
            let slug = format!("s{i}");
            if let Some(e) = all.iter_mut().find(|(_, s, _)| *s == slug) {
                e.0 += 5 * BUCKET_SECONDS;
                put(&conn, &row(slug, e.0, if e.2 { &["t"] } else { &[] })).unwrap();
            }
        }
        all.sort();
        for (listing, keep) in [(Listing::All, false), (Listing::Tag("t".into()), true)] {
            let sorted: Vec<&(i64, String, bool)> = all.iter().filter(|e| !keep || e.2).collect();
            let n = count(&conn, &listing).unwrap();
            assert_eq!(n as usize, sorted.len());
            for (r, (at, slug, _)) in sorted.iter().enumerate() {
                assert_eq!(
                    rank(&conn, &listing, *at, slug).unwrap(),
                    r as u64,
                    "{slug}"
                );
            }
            for lo in [0, 1, 19, 20, n / 2, n.saturating_sub(21), n - 1] {
                let hi = (lo + 20).min(n);
                let got: Vec<String> = rank_range(&conn, &listing, n, (lo, hi), Cols::Keys)
                    .unwrap()
                    .into_iter()
                    .map(|d| d.slug)
                    .collect();
                let want: Vec<String> = sorted[lo as usize..hi as usize]
                    .iter()
                    .rev()
                    .map(|e| e.1.clone())
                    .collect();
                assert_eq!(got, want, "{listing:?} ranks {lo}..{hi}");
            }
        }
        // A store of the first schema gets its buckets when it is opened.
        conn.execute_batch("DELETE FROM rank_buckets; PRAGMA user_version = 1;")
            .unwrap();
        drop(conn);
        let conn = open(dir.path()).unwrap();
        let (at, slug, _) = &all[all.len() / 2];
        assert_eq!(
            rank(&conn, &Listing::All, *at, slug).unwrap(),
            (all.len() / 2) as u64
        );
    }
}
