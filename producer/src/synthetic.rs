//! A deterministic synthetic newsroom for benchmarks: the producer's own bench
//! (`benches/publish.rs`) and the project's harness (`tamizdat-bench`, scenario 8) seed,
//! publish and compare with Hugo through these same functions.
//!
//! - [`seed`]: `articles` Markdown articles of about 2 KB, 3 tags each out of `tags`, dates
//!   spread over 25 years, stored in one transaction straight through the store API.
//! - [`publishes`]: new articles and edits of random old ones through [`Site::publish`] (the
//!   code behind the HTTP hook), each timed from the call until its files are durable, and
//!   then until its precompressed variants are in place.
//! - [`write_hugo_site`]: the same articles as a Hugo content tree with minimal layouts.
//! - [`timed`]: wall time and peak RSS of a child process.

use crate::cms::{self, Format, Kind, Limits, Tag};
use crate::markup;
use crate::site::{PublishError, Site, Timings};
use crate::store::{self, DocRow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const WORDS: &[&str] = &[
    "the",
    "police",
    "kettled",
    "protesters",
    "near",
    "bank",
    "station",
    "while",
    "journalists",
    "documented",
    "arrests",
    "community",
    "radio",
    "mirror",
    "volunteers",
    "published",
    "report",
    "climate",
    "camp",
    "legal",
    "observers",
    "council",
    "housing",
    "strike",
    "workers",
    "march",
];

const EPOCH_2000: i64 = 946_684_800;
const SPAN_SECONDS: i64 = 25 * 365 * 86_400;

/// The size of a synthetic site.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub articles: usize,
    pub tags: usize,
    pub seed: u64,
}

/// A seeded article, as the publish loop and the Hugo copy need it.
#[derive(Debug, Clone)]
pub struct SeedDoc {
    pub slug: String,
    pub published_at: i64,
    /// Tag names.
    pub tags: Vec<String>,
    /// Markdown (empty from [`seeded_keys`]).
    pub body: String,
}

fn paragraph(rng: &mut StdRng) -> String {
    let n = rng.gen_range(40..90);
    (0..n)
        .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn body(rng: &mut StdRng) -> String {
    (0..4)
        .map(|_| paragraph(rng))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn pick_tags(rng: &mut StdRng, tags: usize) -> Vec<String> {
    let mut t: Vec<String> = Vec::new();
    while t.len() < 3.min(tags) {
        let name = format!("topic {}", rng.gen_range(0..tags));
        if !t.contains(&name) {
            t.push(name);
        }
    }
    t
}

/// Stores `spec.articles` articles in the store under `state`, in one transaction.
pub fn seed(state: &Path, spec: &Spec) -> anyhow::Result<Vec<SeedDoc>> {
    std::fs::create_dir_all(state)?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut conn = store::open(state)?;
    let tx = store::begin(&mut conn)?;
    let mut docs = Vec::with_capacity(spec.articles);
    for i in 0..spec.articles {
        let text = body(&mut rng);
        let html = markup::body_html(&text, Format::Markdown, true);
        let tags = pick_tags(&mut rng, spec.tags);
        let published_at = EPOCH_2000 + (i as i64 * SPAN_SECONDS / spec.articles as i64);
        let title = paragraph(&mut rng)
            .split(' ')
            .take(6)
            .collect::<Vec<_>>()
            .join(" ");
        let row = DocRow {
            slug: format!("story-{i}"),
            kind: Kind::Article,
            title: format!("Story {i}: {title}"),
            summary: markup::derive_summary(&html),
            body: text.clone(),
            format: Format::Markdown,
            body_html: html,
            tags: tags
                .iter()
                .map(|n| Tag {
                    slug: cms::tag_slug(n),
                    name: n.clone(),
                })
                .collect(),
            authors: vec!["Newsroom".into()],
            published_at,
            updated_at: published_at,
            extra: Default::default(),
        };
        store::put(&tx, &row)?;
        docs.push(SeedDoc {
            slug: row.slug,
            published_at,
            tags,
            body: text,
        });
    }
    tx.commit()?;
    Ok(docs)
}

/// The seeded articles of a store an earlier [`seed`] filled.
pub fn seeded(state: &Path) -> rusqlite::Result<Vec<SeedDoc>> {
    seeded_with(state, true)
}

/// Like [`seeded`] without the bodies, which is all [`publishes`] needs: 100k bodies held in
/// the process that times the publishes would leave its heap in fragments, and every
/// allocation of a publish would pay for walking them (a fifth of a publish's profile).
pub fn seeded_keys(state: &Path) -> rusqlite::Result<Vec<SeedDoc>> {
    seeded_with(state, false)
}

fn seeded_with(state: &Path, bodies: bool) -> rusqlite::Result<Vec<SeedDoc>> {
    let conn = store::open(state)?;
    Ok(store::all_of_kind(&conn, Kind::Article, bodies)?
        .into_iter()
        .filter(|d| d.slug.starts_with("story-"))
        .map(|d| SeedDoc {
            slug: d.slug,
            published_at: d.published_at,
            tags: d.tags.into_iter().map(|t| t.name).collect(),
            body: d.body,
        })
        .collect())
}

/// One timed publish.
#[derive(Debug, Clone)]
pub struct Sample {
    /// A new article, or an edit of a random old one.
    pub new: bool,
    /// From the call until it returned: its plain files renamed in, their bytes and the
    /// document durable.
    pub ms: f64,
    /// From the call until the directories of its renames were flushed too (after the
    /// answer: see [`crate::site`]).
    pub flushed_ms: f64,
    /// From the call until its precompressed variants were in place too.
    pub variants_ms: f64,
    /// Plain files it wrote (each also gets `.br`, `.zst`, `.gz`).
    pub written: usize,
    pub timings: Timings,
}

/// `n` new articles, each followed by an edit of a random seeded one (a new title), through
/// [`Site::publish`]. Each publish starts on an idle producer: the loop waits for the
/// previous one's variants first.
pub fn publishes(
    site: &mut Site,
    docs: &[SeedDoc],
    spec: &Spec,
    n: usize,
) -> Result<Vec<Sample>, PublishError> {
    let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x9e37_79b9);
    // Slugs of their own, and dates after the newest article in the store, so that each new
    // article lands at the end of every listing as a breaking story does, also in a store an
    // earlier run (`--reuse`) published into. (A date derived from the clock wrapped around
    // after a day and put new articles among older ones, shifting every later archive page.)
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let newest = store::newest(site.parts().0, &store::Listing::All, 0, 1, false)?
        .first()
        .map_or(0, |d| d.published_at);
    let now = newest.max(EPOCH_2000 + SPAN_SECONDS) + 60;
    let limits = Limits::default();
    let date = |ts: i64| {
        chrono::DateTime::from_timestamp(ts, 0)
            .unwrap_or_default()
            .to_rfc3339()
    };
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let new = serde_json::json!({
            "slug": format!("new-{run}-{i}"), "title": format!("Breaking {i}"),
            "body": body(&mut rng), "tags": pick_tags(&mut rng, spec.tags),
            "published_at": date(now + i as i64 * 60),
        });
        let old = &docs[rng.gen_range(0..docs.len())];
        let body = crate::store::get(site.parts().0, &old.slug)?
            .map(|d| d.body)
            .unwrap_or_default();
        let edit = serde_json::json!({
            "slug": old.slug, "title": format!("Corrected story {i} ({run})"), "body": body,
            "tags": old.tags, "published_at": date(old.published_at),
        });
        for (is_new, doc) in [(true, new), (false, edit)] {
            let doc = cms::parse_document(doc, &limits).expect("generated documents are valid");
            site.wait_for_variants();
            let t = Instant::now();
            let r = site.publish(doc)?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            site.wait_for_flush();
            let flushed_ms = t.elapsed().as_secs_f64() * 1000.0;
            site.wait_for_variants();
            out.push(Sample {
                new: is_new,
                ms,
                flushed_ms,
                variants_ms: t.elapsed().as_secs_f64() * 1000.0,
                written: r.written.len(),
                timings: r.timings,
            });
        }
    }
    Ok(out)
}

/// Writes the articles as a Hugo site (content, config, a minimal theme that renders every
/// article, list and tag page, 20 per page like ours).
pub fn write_hugo_site(root: &Path, docs: &[SeedDoc]) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("content/posts"))?;
    std::fs::write(
        root.join("hugo.toml"),
        "baseURL = 'http://news.example/'\ntitle = 'bench'\npaginate = 20\n",
    )?;
    let layouts = root.join("layouts/_default");
    std::fs::create_dir_all(&layouts)?;
    std::fs::write(layouts.join("baseof.html"), "<!doctype html><html><head><title>{{ .Title }}</title></head><body>{{ block \"main\" . }}{{ end }}</body></html>")?;
    std::fs::write(
        layouts.join("single.html"),
        "{{ define \"main\" }}<h1>{{ .Title }}</h1>{{ .Content }}{{ end }}",
    )?;
    std::fs::write(layouts.join("list.html"), "{{ define \"main\" }}<h1>{{ .Title }}</h1>{{ range .Paginator.Pages }}<h2><a href=\"{{ .RelPermalink }}\">{{ .Title }}</a></h2><p>{{ .Summary }}</p>{{ end }}{{ end }}")?;
    for d in docs {
        let date = chrono::DateTime::from_timestamp(d.published_at, 0)
            .unwrap_or_default()
            .to_rfc3339();
        let tags = d
            .tags
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            root.join(format!("content/posts/{}.md", d.slug)),
            format!(
                "+++\ntitle = \"{}\"\ndate = {date}\ntags = [{tags}]\n+++\n{}\n",
                d.slug, d.body
            ),
        )?;
    }
    Ok(())
}

/// Wall time and peak RSS of a finished child process.
#[derive(Debug, Clone)]
pub struct Timed {
    pub secs: f64,
    /// From GNU time (`/usr/bin/time`); `None` where it is not installed.
    pub peak_rss_kib: Option<u64>,
    pub ok: bool,
    /// The end of its standard error, for a failure.
    pub stderr_tail: String,
}

/// Runs `cmd` to the end under `/usr/bin/time` (or bare, without it) and measures it, after
/// a `sync`.
pub fn timed(cmd: &Command) -> std::io::Result<Timed> {
    // Untimed: the run before this one left its files for the kernel to write back, and
    // this one would pay for them.
    let _ = Command::new("sync").status();
    let gnu_time = Path::new("/usr/bin/time");
    let mut run = if gnu_time.exists() {
        let mut c = Command::new(gnu_time);
        c.arg("-f").arg("PEAK_RSS_KB=%M").arg(cmd.get_program());
        c.args(cmd.get_args());
        c
    } else {
        let mut c = Command::new(cmd.get_program());
        c.args(cmd.get_args());
        c
    };
    if let Some(d) = cmd.get_current_dir() {
        run.current_dir(d);
    }
    let started = Instant::now();
    let out = run.output()?;
    let secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let peak_rss_kib = err
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_RSS_KB="))
        .and_then(|v| v.trim().parse().ok());
    let tail: Vec<&str> = err.lines().rev().take(5).collect();
    Ok(Timed {
        secs,
        peak_rss_kib,
        ok: out.status.success(),
        stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// What a durable write costs on this disk right now: 20 KB write + fsync + rename +
/// directory fsync, `n` times, in milliseconds.
pub fn fsync_probe(dir: &Path, n: usize) -> std::io::Result<Vec<f64>> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let tmp = dir.join(format!(".tmp-{i}"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&[7u8; 20_000])?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(format!("f{i}")))?;
        std::fs::File::open(dir)?.sync_all()?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// Regular files under `root`.
pub fn count_files(root: &Path) -> usize {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SiteOptions;

    #[test]
    fn a_small_synthetic_site_seeds_publishes_and_exports_to_hugo() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            articles: 30,
            tags: 5,
            seed: 1,
        };
        let docs = seed(&dir.path().join("state"), &spec).unwrap();
        assert_eq!(docs.len(), 30);
        assert_eq!(seeded(&dir.path().join("state")).unwrap().len(), 30);
        let opts = SiteOptions::new(dir.path().join("out"), dir.path().join("state"));
        let mut site = Site::open(opts).unwrap();
        let samples = publishes(&mut site, &docs, &spec, 2).unwrap();
        assert_eq!(samples.len(), 4);
        assert!(samples
            .iter()
            .all(|s| s.written > 0 && s.variants_ms >= s.ms));
        write_hugo_site(&dir.path().join("hugo"), &docs).unwrap();
        assert_eq!(
            count_files(&dir.path().join("hugo/content/posts")),
            docs.len()
        );
    }
}
