//! The pages of a site and where they live.
//!
//! # Pagination, numbered from the oldest
//! A listing (the archive, or one tag) sorts its articles by `(published_at, slug)`. The
//! article of rank `r` (0 = oldest) sits on page `r / PER_PAGE + 1`, and page numbers never
//! move: page 1 always holds the 20 oldest articles. A new article therefore lands on the
//! last page (or opens a new one) and leaves every older page byte for byte as it was, so a
//! publish rewrites a bounded set of files however large the site is. The listing's
//! `index.html` shows the newest `PER_PAGE` articles and links to the numbered pages.
//! A back-dated article, an edit that changes a date, or an unpublish shifts the ranks after
//! it, so those rewrite the pages from that position to the end.

use crate::store::{DocRow, Listing};

/// Articles per listing page.
pub const PER_PAGE: u64 = 20;
/// Articles on the home page.
pub const HOME_ITEMS: u64 = 15;
/// Entries in an Atom feed.
pub const FEED_ITEMS: u64 = 20;
/// URLs per sitemap chunk (`sitemaps/articles-{n}.xml`), numbered from the oldest too.
pub const SITEMAP_CHUNK: u64 = 500;

/// One file of the site, named by what it shows. Encoded as text in the store's `pending`
/// table so a crashed render can be finished.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageKey {
    /// An article or page, by slug.
    Doc(String),
    /// A file to delete (an unpublished or moved article).
    Remove(String),
    Home,
    Feed,
    ListingIndex(Listing),
    ListingPage(Listing, u64),
    TagFeed(String),
    SitemapIndex,
    SitemapPages,
    SitemapChunk(u64),
    NotFound,
    Stylesheet,
}

impl PageKey {
    pub fn encode(&self) -> String {
        let l = |l: &Listing| match l {
            Listing::All => String::new(),
            Listing::Tag(t) => t.clone(),
        };
        match self {
            PageKey::Doc(s) => format!("doc:{s}"),
            PageKey::Remove(p) => format!("remove:{p}"),
            PageKey::Home => "home".into(),
            PageKey::Feed => "feed".into(),
            PageKey::ListingIndex(li) => format!("listidx:{}", l(li)),
            PageKey::ListingPage(li, n) => format!("listpage:{n}:{}", l(li)),
            PageKey::TagFeed(t) => format!("tagfeed:{t}"),
            PageKey::SitemapIndex => "sitemap".into(),
            PageKey::SitemapPages => "sitemap-pages".into(),
            PageKey::SitemapChunk(n) => format!("sitemap-chunk:{n}"),
            PageKey::NotFound => "404".into(),
            PageKey::Stylesheet => "css".into(),
        }
    }

    pub fn decode(s: &str) -> Option<PageKey> {
        let listing = |t: &str| {
            if t.is_empty() {
                Listing::All
            } else {
                Listing::Tag(t.to_string())
            }
        };
        let (head, rest) = s.split_once(':').unwrap_or((s, ""));
        Some(match head {
            "doc" => PageKey::Doc(rest.into()),
            "remove" => PageKey::Remove(rest.into()),
            "home" => PageKey::Home,
            "feed" => PageKey::Feed,
            "listidx" => PageKey::ListingIndex(listing(rest)),
            "listpage" => {
                let (n, t) = rest.split_once(':')?;
                PageKey::ListingPage(listing(t), n.parse().ok()?)
            }
            "tagfeed" => PageKey::TagFeed(rest.into()),
            "sitemap" => PageKey::SitemapIndex,
            "sitemap-pages" => PageKey::SitemapPages,
            "sitemap-chunk" => PageKey::SitemapChunk(rest.parse().ok()?),
            "404" => PageKey::NotFound,
            "css" => PageKey::Stylesheet,
            _ => return None,
        })
    }
}

/// Number of pages a listing of `n` articles has (the archive always has page 1).
pub fn page_count(listing: &Listing, n: u64, per: u64) -> u64 {
    let pages = n.div_ceil(per);
    match listing {
        Listing::All => pages.max(1),
        Listing::Tag(_) => pages,
    }
}

/// The page (1-based) of the article with rank `rank` (0 = oldest).
pub fn page_of(rank: u64, per: u64) -> u64 {
    rank / per + 1
}

/// Which of a listing's numbered pages a change rewrites, from the listing's size and the
/// changed article's rank before and after (`None` where it was not, or is no longer, in it).
pub fn pages_to_rewrite(
    listing: &Listing,
    per: u64,
    (n0, r0): (u64, Option<u64>),
    (n1, r1): (u64, Option<u64>),
) -> std::ops::RangeInclusive<u64> {
    let p0 = r0.map(|r| page_of(r, per));
    let p1 = r1.map(|r| page_of(r, per));
    let Some(first) = p0.into_iter().chain(p1).min() else {
        #[allow(clippy::reversed_empty_ranges)] // deliberately empty: nothing to rewrite
        return 1..=0;
    };
    let (c0, c1) = (page_count(listing, n0, per), page_count(listing, n1, per));
    let last = if n0 != n1 {
        c0.max(c1)
    } else {
        p0.into_iter().chain(p1).max().unwrap_or(first)
    };
    // A page appearing or disappearing changes the "newer" link of the page before it.
    let first = if c0 != c1 {
        first.saturating_sub(1).max(1)
    } else {
        first
    };
    first..=last
}

/// Where an article or page lives, relative to the root.
pub fn doc_path(doc: &DocRow) -> String {
    format!("{}index.html", doc_url(doc).trim_start_matches('/'))
}

/// The URL path of an article (`/2009/04/slug/`) or page (`/slug/`).
pub fn doc_url(doc: &DocRow) -> String {
    match doc.kind {
        crate::cms::Kind::Article => {
            use chrono::Datelike;
            // Not `format("%Y/%m")`, which parses its pattern on every call: a sitemap chunk
            // makes 500 of these.
            let t = crate::render::to_utc(doc.published_at);
            format!("/{:04}/{:02}/{}/", t.year(), t.month(), doc.slug)
        }
        crate::cms::Kind::Page => format!("/{}/", doc.slug),
    }
}

/// URL path of a listing's directory.
pub fn listing_url(listing: &Listing) -> String {
    match listing {
        Listing::All => "/archive/".into(),
        Listing::Tag(t) => format!("/tags/{t}/"),
    }
}

/// URL path of a numbered listing page.
pub fn listing_page_url(listing: &Listing, page: u64) -> String {
    format!("{}page/{page}/", listing_url(listing))
}

/// Relative file path of a URL path that ends in `/`.
pub fn index_file(url: &str) -> String {
    format!("{}index.html", url.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for k in [
            PageKey::Doc("a".into()),
            PageKey::Remove("2009/04/a/index.html".into()),
            PageKey::ListingPage(Listing::All, 3),
            PageKey::ListingPage(Listing::Tag("g20".into()), 7),
            PageKey::ListingIndex(Listing::Tag("x".into())),
            PageKey::SitemapChunk(2),
            PageKey::Home,
        ] {
            assert_eq!(PageKey::decode(&k.encode()), Some(k));
        }
    }

    #[test]
    fn a_new_newest_article_rewrites_only_the_last_page() {
        let l = Listing::All;
        // 100 articles (5 full pages), a 101st opens page 6 and relinks page 5.
        assert_eq!(
            pages_to_rewrite(&l, 20, (100, None), (101, Some(100))),
            5..=6
        );
        // 101 -> 102: only page 6.
        assert_eq!(
            pages_to_rewrite(&l, 20, (101, None), (102, Some(101))),
            6..=6
        );
        // An edit in place: only its page.
        assert_eq!(
            pages_to_rewrite(&l, 20, (102, Some(30)), (102, Some(30))),
            2..=2
        );
        // Unpublishing rank 30 shifts everything after it.
        assert_eq!(
            pages_to_rewrite(&l, 20, (102, Some(30)), (101, None)),
            2..=6
        );
        // A tag losing its only article: page 1 goes away.
        let t = Listing::Tag("x".into());
        assert_eq!(pages_to_rewrite(&t, 20, (1, Some(0)), (0, None)), 1..=1);
    }
}
