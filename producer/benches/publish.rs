//! Publish latency on a large generated site, and a full rebuild of it.
//!
//! ```text
//! cargo bench -p tamizdat-producer --bench publish -- [--articles 100000] [--tags 1000] \
//!     [--publishes 300] [--dir DIR] [--hugo]
//! ```
//!
//! 1. Seeds a store with `--articles` Markdown articles (about 2 KB each, 3 tags each out of
//!    `--tags`, dates over 25 years) in one transaction, straight through the store API.
//! 2. Runs the real binary's `render --all` on it and reports wall time and peak RSS.
//! 3. Publishes `--publishes` new articles (each with 3 random existing tags) and as many
//!    edits of random old articles through the library's `Site::publish` (the code behind
//!    the HTTP hook), timing each from call to files renamed and directories fsynced, and
//!    reporting p50/p99/max and the number of files each wrote.
//! 4. With `--hugo`, writes the same articles as a Hugo content tree and times `hugo` on it
//!    (needs Debian's `hugo` package).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tamizdat_producer::cms::{self, Format, Kind, Limits, Tag};
use tamizdat_producer::store::{self, DocRow};
use tamizdat_producer::{markup, Site, SiteOptions};

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

struct Args {
    articles: usize,
    tags: usize,
    publishes: usize,
    dir: Option<PathBuf>,
    hugo: bool,
    reuse: bool,
}

fn args() -> Args {
    let mut a = Args {
        articles: 100_000,
        tags: 1000,
        publishes: 300,
        dir: None,
        hugo: false,
        reuse: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--articles" => a.articles = it.next().unwrap().parse().unwrap(),
            "--tags" => a.tags = it.next().unwrap().parse().unwrap(),
            "--publishes" => a.publishes = it.next().unwrap().parse().unwrap(),
            "--dir" => a.dir = Some(it.next().unwrap().into()),
            "--hugo" => a.hugo = true,
            "--reuse" => a.reuse = true,
            _ => {} // cargo bench passes --bench
        }
    }
    a
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

const EPOCH_2000: i64 = 946_684_800;
const SPAN_SECONDS: i64 = 25 * 365 * 86_400;

fn seed(state: &Path, a: &Args, rng: &mut StdRng) -> Vec<(String, i64, Vec<String>, String)> {
    let mut conn = store::open(state).unwrap();
    let tx = store::begin(&mut conn).unwrap();
    let mut docs = Vec::with_capacity(a.articles);
    for i in 0..a.articles {
        let text = body(rng);
        let html = markup::body_html(&text, Format::Markdown, true);
        let tags = pick_tags(rng, a.tags);
        let published_at = EPOCH_2000 + (i as i64 * SPAN_SECONDS / a.articles as i64);
        let row = DocRow {
            slug: format!("story-{i}"),
            kind: Kind::Article,
            title: format!(
                "Story {i}: {}",
                paragraph(rng)
                    .split(' ')
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
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
        store::put(&tx, &row).unwrap();
        docs.push((row.slug, published_at, tags, text));
    }
    tx.commit().unwrap();
    docs
}

fn peak_rss_of(cmd: &mut Command) -> (f64, u64, bool) {
    // GNU time reports the child's peak RSS; fall back to wall time only.
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("PEAK_RSS_KB=%M")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(cmd.get_current_dir().unwrap_or(Path::new(".")))
        .output()
        .expect("run /usr/bin/time");
    let secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let kb = err
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_RSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if !out.status.success() {
        eprintln!("{}", err);
    }
    (secs, kb, out.status.success())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn write_hugo_site(root: &Path, docs: &[(String, i64, Vec<String>, String)]) {
    std::fs::create_dir_all(root.join("content/posts")).unwrap();
    std::fs::write(
        root.join("hugo.toml"),
        "baseURL = 'http://news.example/'\ntitle = 'bench'\npaginate = 20\n",
    )
    .unwrap();
    // A minimal theme so Hugo renders every page, list and tag page (like ours).
    let layouts = root.join("layouts/_default");
    std::fs::create_dir_all(&layouts).unwrap();
    std::fs::write(layouts.join("baseof.html"), "<!doctype html><html><head><title>{{ .Title }}</title></head><body>{{ block \"main\" . }}{{ end }}</body></html>").unwrap();
    std::fs::write(
        layouts.join("single.html"),
        "{{ define \"main\" }}<h1>{{ .Title }}</h1>{{ .Content }}{{ end }}",
    )
    .unwrap();
    std::fs::write(layouts.join("list.html"), "{{ define \"main\" }}<h1>{{ .Title }}</h1>{{ range .Paginator.Pages }}<h2><a href=\"{{ .RelPermalink }}\">{{ .Title }}</a></h2><p>{{ .Summary }}</p>{{ end }}{{ end }}").unwrap();
    for (slug, ts, tags, text) in docs {
        let date = chrono::DateTime::from_timestamp(*ts, 0)
            .unwrap()
            .to_rfc3339();
        let tags = tags
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            root.join(format!("content/posts/{slug}.md")),
            format!("+++\ntitle = \"{slug}\"\ndate = {date}\ntags = [{tags}]\n+++\n{text}\n"),
        )
        .unwrap();
    }
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let (out, state) = (root.join("out"), root.join("state"));
    std::fs::create_dir_all(&state).unwrap();
    let mut rng = StdRng::seed_from_u64(4);

    let docs = if a.reuse {
        // A site seeded and rendered by an earlier run with --dir: measure publishes only.
        let conn = store::open(&state).unwrap();
        let docs: Vec<_> = store::all_of_kind(&conn, Kind::Article, true)
            .unwrap()
            .into_iter()
            .filter(|d| d.slug.starts_with("story-"))
            .map(|d| {
                (
                    d.slug,
                    d.published_at,
                    d.tags.into_iter().map(|t| t.name).collect(),
                    d.body,
                )
            })
            .collect();
        println!(
            "reusing {} seeded articles in {}",
            docs.len(),
            root.display()
        );
        docs
    } else {
        let t = Instant::now();
        let docs = seed(&state, &a, &mut rng);
        println!(
            "seeded {} articles with {} tags in {:.1} s",
            a.articles,
            a.tags,
            t.elapsed().as_secs_f64()
        );
        let bin = env!("CARGO_BIN_EXE_tamizdat-producer");
        let mut render = Command::new(bin);
        render
            .args(["render", "--all", "--out"])
            .arg(&out)
            .arg("--state")
            .arg(&state);
        let (secs, kb, ok) = peak_rss_of(&mut render);
        let files = walk_count(&out);
        println!(
            "render --all: {secs:.1} s wall, peak RSS {:.0} MiB, {files} files in the tree (ok: {ok})",
            kb as f64 / 1024.0
        );
        docs
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let mut site = Site::open(SiteOptions::new(out.clone(), state.clone())).unwrap();
    let limits = Limits::default();
    let mut lat_new = Vec::new();
    let mut lat_edit = Vec::new();
    let mut written = Vec::new();
    let mut phases: [Vec<f64>; 3] = Default::default();
    let now = EPOCH_2000 + SPAN_SECONDS + (run % 100_000) as i64 * 100_000;
    for i in 0..a.publishes {
        let tags = pick_tags(&mut rng, a.tags);
        let doc = serde_json::json!({
            "slug": format!("new-{run}-{i}"), "title": format!("Breaking {i}"), "body": body(&mut rng),
            "tags": tags, "published_at": chrono::DateTime::from_timestamp(now + i as i64 * 60, 0).unwrap().to_rfc3339(),
        });
        let doc = cms::parse_document(doc, &limits).unwrap();
        let t = Instant::now();
        let r = site.publish(doc).unwrap();
        lat_new.push(t.elapsed().as_secs_f64() * 1000.0);
        written.push(r.written.len());
        phases[0].push(r.timings.render_ms);
        phases[1].push(r.timings.stage_ms);
        phases[2].push(r.timings.commit_ms);

        let (slug, ts, tags, text) = &docs[rng.gen_range(0..docs.len())];
        let doc = serde_json::json!({
            "slug": slug, "title": format!("Corrected story {i}"), "body": text, "tags": tags,
            "published_at": chrono::DateTime::from_timestamp(*ts, 0).unwrap().to_rfc3339(),
        });
        let doc = cms::parse_document(doc, &limits).unwrap();
        let t = Instant::now();
        let r = site.publish(doc).unwrap();
        lat_edit.push(t.elapsed().as_secs_f64() * 1000.0);
        written.push(r.written.len());
        phases[0].push(r.timings.render_ms);
        phases[1].push(r.timings.stage_ms);
        phases[2].push(r.timings.commit_ms);
    }
    let mut both: Vec<f64> = lat_new.iter().chain(&lat_edit).copied().collect();
    for (name, v) in [
        ("new article", &mut lat_new),
        ("edit of an old article", &mut lat_edit),
        ("all", &mut both),
    ] {
        let (p50, p99) = (pct(v, 50.0), pct(v, 99.0));
        println!(
            "publish latency, {name}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms (n={})",
            v.last().unwrap(),
            v.len()
        );
    }
    for (name, v) in ["render", "compress+stage", "fsync+rename"]
        .iter()
        .zip(phases.iter_mut())
    {
        println!(
            "  phase {name}: p50 {:.2} ms, p99 {:.2} ms",
            pct(v, 50.0),
            pct(v, 99.0)
        );
    }
    // What the durability step costs on this machine right now (DESIGN.md measured 0.68 ms
    // on a quiet one): the same write + fsync + rename + directory fsync, 50 times.
    let probe = root.join("fsync-probe");
    std::fs::create_dir_all(&probe).unwrap();
    let mut f_lat = Vec::new();
    for i in 0..50 {
        use std::io::Write;
        let t = Instant::now();
        let tmp = probe.join(format!(".tmp-{i}"));
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(&[7u8; 20_000]).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, probe.join(format!("f{i}"))).unwrap();
        std::fs::File::open(&probe).unwrap().sync_all().unwrap();
        f_lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "machine: one 20 KB write+fsync+rename+dir fsync p50 {:.2} ms, p99 {:.2} ms; load average {}",
        pct(&mut f_lat, 50.0),
        pct(&mut f_lat, 99.0),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    written.sort();
    println!(
        "files written per publish (plain files; each also has .br/.zst/.gz): min {}, median {}, max {}",
        written[0],
        written[written.len() / 2],
        written[written.len() - 1]
    );

    if a.hugo {
        // Hugo writes no precompressed variants: time our full rebuild without them too.
        let bin = env!("CARGO_BIN_EXE_tamizdat-producer");
        let mut render = Command::new(bin);
        render
            .args(["render", "--all", "--no-precompress", "--out"])
            .arg(root.join("out-plain"))
            .arg("--state")
            .arg(&state);
        let (secs, kb, ok) = peak_rss_of(&mut render);
        println!(
            "render --all --no-precompress: {secs:.1} s wall, peak RSS {:.0} MiB (ok: {ok})",
            kb as f64 / 1024.0
        );
        let hroot = root.join("hugo");
        write_hugo_site(&hroot, &docs);
        let mut hugo = Command::new("hugo");
        hugo.current_dir(&hroot).args(["--quiet", "-d", "public"]);
        let (secs, kb, ok) = peak_rss_of(&mut hugo);
        println!(
            "hugo (same articles and tags): {secs:.1} s wall, peak RSS {:.0} MiB (ok: {ok})",
            kb as f64 / 1024.0
        );
    }
}

fn walk_count(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}
