//! Deterministic synthetic news site: article pages of 4–40 KB of HTML under
//! `YYYY/MM/slug/index.html`, a front page, year and month indexes, tag pages, a stylesheet
//! and media files. The same seed and sizes always give the same bytes.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const WORDS: &[&str] = &[
    "government",
    "court",
    "journalist",
    "election",
    "protest",
    "minister",
    "river",
    "city",
    "council",
    "report",
    "evidence",
    "police",
    "witness",
    "budget",
    "union",
    "strike",
    "school",
    "hospital",
    "border",
    "village",
    "mayor",
    "prosecutor",
    "statement",
    "archive",
    "document",
    "investigation",
    "contract",
    "company",
    "energy",
    "water",
    "the",
    "a",
    "of",
    "and",
    "in",
    "to",
    "was",
    "that",
    "said",
    "on",
    "for",
    "with",
    "by",
    "from",
    "after",
    "before",
    "while",
    "which",
    "reporters",
    "confirmed",
    "denied",
    "published",
    "leaked",
    "questioned",
    "arrested",
    "released",
    "according",
    "officials",
    "residents",
    "sources",
    "last",
    "week",
    "year",
    "month",
    "night",
    "morning",
    "independent",
    "local",
    "regional",
    "national",
    "new",
    "old",
    "public",
    "private",
];

const TAGS: usize = 200;

/// What the generator made.
pub struct Site {
    pub root: PathBuf,
    /// Relative paths of the article pages (`YYYY/MM/slug/index.html`).
    pub articles: Vec<String>,
    /// Relative paths of the index and tag pages.
    pub listings: Vec<String>,
    /// Relative paths of the media files.
    pub media: Vec<String>,
    pub files: usize,
    pub bytes: u64,
}

/// Sizes of a generated site.
#[derive(Clone, Copy)]
pub struct Spec {
    pub articles: usize,
    pub media: usize,
    pub media_max: u64,
    pub seed: u64,
}

fn slug(rng: &mut StdRng, i: usize) -> String {
    let mut s = String::new();
    for _ in 0..rng.gen_range(2..5) {
        s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
        s.push('-');
    }
    write!(s, "{i}").unwrap();
    s
}

fn sentence(rng: &mut StdRng, out: &mut String) {
    let n = rng.gen_range(8..24);
    for k in 0..n {
        let w = WORDS[rng.gen_range(0..WORDS.len())];
        if k == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.extend(f.to_uppercase());
                out.push_str(c.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(w);
        }
    }
    out.push_str(". ");
}

fn tag_name(t: usize) -> String {
    format!("{}-{t}", WORDS[t % WORDS.len()])
}

/// Article `i` of the site: its relative path.
pub fn article_path(spec: &Spec, i: usize) -> String {
    let mut rng = StdRng::seed_from_u64(spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (y, m) = year_month(spec, i);
    format!("{y}/{m:02}/{}/index.html", slug(&mut rng, i))
}

fn year_month(spec: &Spec, i: usize) -> (usize, usize) {
    let months = 12 * 12; // 2015..=2026
    let k = i * months / spec.articles.max(1);
    (2015 + k / 12, 1 + k % 12)
}

/// The HTML of article `i`, `version` 0 being the generated one; a later version has a
/// different body and carries `marker` in a comment. Size log-uniform in 4–40 KB.
pub fn article_html(spec: &Spec, i: usize, version: u64, marker: &str) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(
        spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.rotate_left(32),
    );
    let target = (4096.0 * 10f64.powf(rng.gen::<f64>())) as usize; // 4 KB .. 40 KB
    let (y, m) = year_month(spec, i);
    let mut title = String::new();
    sentence(&mut rng, &mut title);
    let title = title.trim_end_matches(". ").to_string();
    let mut s = String::with_capacity(target + 2048);
    write!(
        s,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} | Independent News</title>\n\
         <link rel=\"stylesheet\" href=\"/css/site.css\">\n\
         <meta property=\"og:title\" content=\"{title}\">\n\
         <meta property=\"article:published_time\" content=\"{y}-{m:02}-{:02}T{:02}:{:02}:00Z\">\n\
         </head>\n<body>\n<header><nav><a href=\"/\">Home</a> <a href=\"/{y}/\">{y}</a> \
         <a href=\"/{y}/{m:02}/\">{y}-{m:02}</a></nav></header>\n<!-- {marker} -->\n\
         <main><article>\n<h1>{title}</h1>\n<p class=\"byline\">By staff reporter {}</p>\n",
        rng.gen_range(1..29),
        rng.gen_range(0..24),
        rng.gen_range(0..60),
        rng.gen_range(1..400)
    )
    .unwrap();
    while s.len() < target {
        if rng.gen_ratio(1, 8) {
            s.push_str("<h2>");
            sentence(&mut rng, &mut s);
            s.push_str("</h2>\n");
        }
        s.push_str("<p>");
        for _ in 0..rng.gen_range(2..7) {
            sentence(&mut rng, &mut s);
        }
        if rng.gen_ratio(1, 4) {
            let j = rng.gen_range(0..spec.articles.max(1));
            write!(
                s,
                "<a href=\"/{}\">related</a>",
                article_path(spec, j).trim_end_matches("index.html")
            )
            .unwrap();
        }
        s.push_str("</p>\n");
    }
    s.push_str("</article></main>\n<footer><ul class=\"tags\">");
    for t in article_tags(spec, i) {
        let t = tag_name(t);
        write!(s, "<li><a href=\"/tag/{t}/\">{t}</a></li>").unwrap();
    }
    s.push_str("</ul></footer>\n</body>\n</html>\n");
    s.into_bytes()
}

fn article_tags(spec: &Spec, i: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(i as u64) ^ 0x7A65);
    (0..3).map(|_| rng.gen_range(0..TAGS)).collect()
}

fn listing(title: &str, links: &[(String, String)], marker: &str) -> Vec<u8> {
    let mut s = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"stylesheet\" href=\"/css/site.css\"></head>\n<body><h1>{title}</h1>\n<!-- {marker} -->\n<ul>\n"
    );
    for (href, text) in links {
        writeln!(s, "<li><a href=\"/{href}\">{text}</a></li>").unwrap();
    }
    s.push_str("</ul></body></html>\n");
    s.into_bytes()
}

/// Writes `data` to `root/rel` atomically: a temp file `.tmp-NAME.N` in the same directory,
/// then a rename. Creates parent directories.
pub fn write_atomic(root: &Path, rel: &str, data: &[u8]) -> Result<()> {
    let tmp = stage(root, rel, data)?;
    fs::rename(&tmp, root.join(rel)).with_context(|| format!("rename into {rel}"))
}

/// Writes the temp file for an atomic write and returns its path (rename it to publish).
pub fn stage(root: &Path, rel: &str, data: &[u8]) -> Result<PathBuf> {
    let dst = root.join(rel);
    let dir = dst.parent().context("no parent")?;
    fs::create_dir_all(dir)?;
    let name = dst.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".tmp-{name}.{}", rand::random::<u32>()));
    let mut f = fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(data)?;
    drop(f);
    Ok(tmp)
}

fn write_plain(root: &Path, rel: &str, data: &[u8]) -> Result<()> {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().context("no parent")?)?;
    fs::write(&p, data).with_context(|| format!("write {}", p.display()))
}

/// Generates the whole site under `root` (which should be empty).
pub fn generate(root: &Path, spec: &Spec) -> Result<Site> {
    let mut bytes = 0u64;
    let mut articles = Vec::with_capacity(spec.articles);
    let mut listings = Vec::new();
    let mut media = Vec::new();
    let mut by_month: std::collections::BTreeMap<(usize, usize), Vec<usize>> = Default::default();
    let mut by_tag: Vec<Vec<usize>> = vec![Vec::new(); TAGS];
    for i in 0..spec.articles {
        let rel = article_path(spec, i);
        let html = article_html(spec, i, 0, "v0");
        bytes += html.len() as u64;
        write_plain(root, &rel, &html)?;
        articles.push(rel);
        by_month.entry(year_month(spec, i)).or_default().push(i);
        for t in article_tags(spec, i) {
            if by_tag[t].len() < 100 {
                by_tag[t].push(i);
            }
        }
    }
    let link = |i: usize| {
        (
            articles[i].trim_end_matches("index.html").to_string(),
            format!("Article {i}"),
        )
    };
    let mut put = |rel: String, data: Vec<u8>, list: &mut Vec<String>| -> Result<()> {
        bytes += data.len() as u64;
        write_plain(root, &rel, &data)?;
        list.push(rel);
        Ok(())
    };
    let latest: Vec<_> = (spec.articles.saturating_sub(50)..spec.articles)
        .rev()
        .map(link)
        .collect();
    put(
        "index.html".into(),
        listing("Independent News", &latest, "v0"),
        &mut listings,
    )?;
    let mut years: std::collections::BTreeMap<usize, Vec<(String, String)>> = Default::default();
    for ((y, m), ids) in &by_month {
        let links: Vec<_> = ids.iter().map(|&i| link(i)).collect();
        put(
            format!("{y}/{m:02}/index.html"),
            listing(&format!("{y}-{m:02}"), &links, "v0"),
            &mut listings,
        )?;
        years
            .entry(*y)
            .or_default()
            .push((format!("{y}/{m:02}/"), format!("{y}-{m:02}")));
    }
    for (y, links) in &years {
        put(
            format!("{y}/index.html"),
            listing(&y.to_string(), links, "v0"),
            &mut listings,
        )?;
    }
    for (t, ids) in by_tag.iter().enumerate() {
        let links: Vec<_> = ids.iter().map(|&i| link(i)).collect();
        let name = tag_name(t);
        put(
            format!("tag/{name}/index.html"),
            listing(&name, &links, "v0"),
            &mut listings,
        )?;
    }
    let css = b"body{font-family:Georgia,serif;max-width:42em;margin:2em auto;line-height:1.5}\nh1,h2{font-family:sans-serif}\n".to_vec();
    put("css/site.css".into(), css, &mut listings)?;
    let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x006D_6564_6961);
    for k in 0..spec.media {
        // log-uniform from 100 KB to media_max
        let lo = 100.0 * 1024.0f64;
        let hi = (spec.media_max as f64).max(lo);
        let size = (lo * (hi / lo).powf(rng.gen::<f64>())) as usize;
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        let rel = format!("media/{}/photo-{k}.jpg", 2015 + k % 12);
        put(rel, data, &mut media)?;
    }
    let files = articles.len() + listings.len() + media.len();
    Ok(Site {
        root: root.to_owned(),
        articles,
        listings,
        media,
        files,
        bytes,
    })
}

/// Mutation mode: `edits` pages rewritten atomically, `adds` new articles, `deletes` deleted
/// articles (taken from the end of the list), and one directory renamed (a month's article
/// moved to a new slug) when `rename_dir`. Updates `site`. Returns the number of changes.
#[allow(clippy::too_many_arguments)]
pub fn mutate(
    site: &mut Site,
    spec: &Spec,
    rng: &mut StdRng,
    edits: usize,
    adds: usize,
    deletes: usize,
    rename_dir: bool,
    version: u64,
) -> Result<usize> {
    let mut n = 0;
    for k in 0..edits {
        let i = rng.gen_range(0..site.articles.len());
        let html = article_html(
            spec,
            i,
            version * 1_000_000 + k as u64,
            &format!("edit {version}/{k}"),
        );
        write_atomic(&site.root, &site.articles[i], &html)?;
        n += 1;
    }
    for k in 0..adds {
        let i = spec.articles + (version as usize) * 10_000 + k;
        let rel = format!("2026/12/new-{version}-{k}/index.html");
        write_atomic(&site.root, &rel, &article_html(spec, i, version, "added"))?;
        site.articles.push(rel);
        n += 1;
    }
    for _ in 0..deletes {
        if let Some(rel) = site.articles.pop() {
            let p = site.root.join(&rel);
            fs::remove_file(&p)?;
            let _ = fs::remove_dir(p.parent().unwrap());
            n += 1;
        }
    }
    if rename_dir && !site.articles.is_empty() {
        let i = rng.gen_range(0..site.articles.len());
        let rel = site.articles[i].clone();
        let dir = rel.trim_end_matches("/index.html");
        let new_dir = format!("{dir}-moved-{version}");
        fs::rename(site.root.join(dir), site.root.join(&new_dir))?;
        site.articles[i] = format!("{new_dir}/index.html");
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_site_and_sizes_in_range() {
        let spec = Spec {
            articles: 40,
            media: 2,
            media_max: 200 * 1024,
            seed: 7,
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = generate(a.path(), &spec).unwrap();
        let sb = generate(b.path(), &spec).unwrap();
        assert_eq!(sa.articles, sb.articles);
        assert_eq!(sa.bytes, sb.bytes);
        for rel in &sa.articles {
            let x = fs::read(a.path().join(rel)).unwrap();
            assert_eq!(x, fs::read(b.path().join(rel)).unwrap());
            assert!(
                x.len() >= 4096 && x.len() <= 41 * 1024,
                "{rel}: {}",
                x.len()
            );
        }
        let other = Spec { seed: 8, ..spec };
        assert_ne!(
            article_html(&spec, 3, 0, "v0"),
            article_html(&other, 3, 0, "v0")
        );
        assert_ne!(
            article_html(&spec, 3, 0, "v0"),
            article_html(&spec, 3, 1, "v1")
        );
    }

    #[test]
    fn mutate_counts_changes_and_leaves_no_temp_files() {
        let spec = Spec {
            articles: 30,
            media: 0,
            media_max: 0,
            seed: 1,
        };
        let d = tempfile::tempdir().unwrap();
        let mut site = generate(d.path(), &spec).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let n = mutate(&mut site, &spec, &mut rng, 5, 2, 2, true, 1).unwrap();
        assert_eq!(n, 10);
        for rel in &site.articles {
            assert!(d.path().join(rel).is_file(), "{rel}");
        }
        let temps = walkdir::WalkDir::new(d.path())
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .count();
        assert_eq!(temps, 0);
    }
}
