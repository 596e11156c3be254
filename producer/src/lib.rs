//! tamizdat-producer: renders a news site to static files at the moment an article is saved.
//!
//! A CMS publishes a document (HTTP hook or CLI); the producer stores it in SQLite, works out
//! which pages show it (the article, the home page, the archive and tag pages that list it,
//! the feeds, the sitemap), renders those through minijinja templates and writes only the
//! files whose bytes changed, each atomically. The distributor picks the files up like any
//! other writer's.
//!
//! # Layout
//! - [`cms`]: the document format and its validation (publish events in).
//! - [`frontmatter`]: Markdown files with TOML or YAML front matter.
//! - [`markup`]: Markdown to HTML, sanitising, summaries.
//! - [`store`]: the SQLite store.
//! - [`pages`]: page keys, paths, and the pagination scheme.
//! - [`render`]: themes and templates.
//! - [`feeds`]: Atom and sitemap XML.
//! - [`generate`]: one page, or the whole site, from the store.
//! - [`output`]: atomic, only-if-changed writes; one durability barrier per publish.
//! - [`variants`]: precompressed variants, made on a worker after a publish returns.
//! - [`site`]: the publisher that ties these together.
//! - [`lock`]: the single-writer rule between processes.
//! - [`http`], [`media`]: the HTTP hook and uploads; [`ratelimit`]: publishes per token.
//! - [`watch`]: re-render a directory of Markdown files on save.
//! - [`synthetic`]: a generated newsroom for the benchmarks.

pub mod cms;
pub mod feeds;
pub mod frontmatter;
pub mod generate;
pub mod http;
pub mod lock;
pub mod markup;
pub mod media;
pub mod output;
pub mod pages;
pub mod ratelimit;
pub mod render;
pub mod site;
pub mod store;
pub mod synthetic;
pub mod variants;
pub mod watch;

pub use site::{PublishError, Report, Site, SiteOptions};

/// Tells mimalloc, the allocator of the programs that publish (`serve` and `watch`, the
/// benchmark harness's producer scenario, the examples), to keep the memory it frees instead
/// of handing it back to the kernel 10 ms later: publishes come seconds or minutes apart, so
/// each one faulted its working memory back in, zeroed page by page (about 95 more page
/// faults a publish at 100k articles, and 0.4 ms of the p50 in three alternating runs of
/// `examples/publish_loop`). The cost is that a long-running process stays at its
/// high-water mark (16 MB higher in that example), which is why one-shot commands such as
/// `render --all` do not call it. An operator's `MIMALLOC_PURGE_DELAY` in the environment
/// wins.
pub fn keep_freed_memory() {
    /// `mi_option_purge_delay` in mimalloc.h (v2 and v3), which libmimalloc-sys does not name.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options; takes and returns no pointers.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}
