//! `watch DIR`: for newsrooms whose CMS is a text editor. Every Markdown file in the
//! directory (and below) is published at start, republished when saved, and unpublished when
//! deleted. Editors save in bursts (swap files, rename over), so events are gathered for a
//! short settle time and each file is handled once per burst.

use crate::cms::{self, Limits};
use crate::frontmatter;
use crate::site::Site;
use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// How long events for one save are gathered before acting on them.
const SETTLE_TIME: Duration = Duration::from_millis(100);

fn is_markdown(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n.starts_with('#') || n.ends_with('~'));
    !hidden && p.extension().is_some_and(|e| e == "md" || e == "markdown")
}

/// Publishes one file; returns its slug. Problems are logged, never fatal.
fn publish_file(site: &mut Site, path: &Path, limits: &Limits) -> Option<String> {
    let value = match frontmatter::read_document_file(path, limits) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(file = %path.display(), cause = format!("{e:#}"), "cannot read document");
            return None;
        }
    };
    let doc = match cms::parse_document(value, limits) {
        Ok(d) => d,
        Err(errors) => {
            for e in errors {
                tracing::error!(file = %path.display(), field = %e.field, "{}", e.message);
            }
            return None;
        }
    };
    let slug = doc.slug.clone();
    match site.publish(doc) {
        Ok(r) => {
            tracing::info!(file = %path.display(), slug, written = r.written.len(), elapsed_ms = r.elapsed_ms, "published");
            println!(
                "published {} ({} written, {:.1} ms)",
                slug,
                r.written.len(),
                r.elapsed_ms
            );
            Some(slug)
        }
        Err(e) => {
            tracing::error!(file = %path.display(), cause = %e, "publish failed");
            None
        }
    }
}

/// Watches `dir` until `stop` yields or the watcher fails.
pub fn run(
    site: &mut Site,
    dir: &Path,
    limits: Limits,
    stop: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("Failed to open {}", dir.display()))?;
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let _ = tx.send(ev);
    })
    .context("Failed to start the file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("Failed to watch {}", dir.display()))?;

    let mut slugs: HashMap<PathBuf, String> = HashMap::new();
    for entry in walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_type().is_file() && is_markdown(entry.path()) {
            if let Some(slug) = publish_file(site, entry.path(), &limits) {
                slugs.insert(entry.path().to_path_buf(), slug);
            }
        }
    }
    println!("watching {}", dir.display());
    loop {
        if stop.try_recv().is_ok() {
            return Ok(());
        }
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(ev) => ev,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("file watcher stopped"),
        };
        let mut touched = BTreeSet::new();
        let mut rescan = false;
        let mut take = |ev: notify::Result<notify::Event>| match ev {
            Ok(ev) => {
                rescan |= ev.need_rescan();
                touched.extend(ev.paths.into_iter().filter(|p| is_markdown(p)));
            }
            Err(e) => tracing::warn!(cause = %e, "watch error"),
        };
        take(first);
        while let Ok(ev) = rx.recv_timeout(SETTLE_TIME) {
            take(ev);
        }
        if rescan {
            tracing::warn!("watch queue overflowed; rescanning the directory");
            for entry in walkdir::WalkDir::new(&dir)
                .into_iter()
                .filter_map(Result::ok)
            {
                if entry.file_type().is_file() && is_markdown(entry.path()) {
                    touched.insert(entry.path().to_path_buf());
                }
            }
            touched.extend(slugs.keys().cloned());
        }
        for path in touched {
            if path.is_file() {
                if let Some(slug) = publish_file(site, &path, &limits) {
                    slugs.insert(path, slug);
                }
            } else if let Some(slug) = slugs.remove(&path) {
                // Another file may have taken over the slug; only unpublish an orphan.
                if slugs.values().any(|s| s == &slug) {
                    continue;
                }
                match site.unpublish(&slug) {
                    Ok(r) => {
                        tracing::info!(slug, removed = r.removed.len(), "unpublished");
                        println!("unpublished {slug}");
                    }
                    Err(e) => tracing::error!(slug, cause = %e, "unpublish failed"),
                }
            }
        }
    }
}
