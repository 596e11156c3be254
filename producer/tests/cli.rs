//! The command line: publish, unpublish, render --all, watch, and sharing a site with a
//! running server.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn ok(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn publish_markdown_with_toml_or_yaml_front_matter_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("in/camp.md"), "+++\ntitle = \"Climate camp opens\"\npublished_at = 2009-04-01T09:00:00Z\ntags = [\"climate\"]\n+++\nThe camp **opened**.\n");
    write(&d.join("in/legal.markdown"), "---\nslug: legal-observers\ntitle: Legal observers\npublished_at: 2009-04-02\nauthors: [Ana]\n---\n# Notes\n\nText.\n");
    write(
        &d.join("in/about.json"),
        r#"{"slug": "about", "title": "About us", "kind": "page", "body": "We are volunteers."}"#,
    );
    for f in ["in/camp.md", "in/legal.markdown", "in/about.json"] {
        let r = ok(&cli(d, &["publish", d.join(f).to_str().unwrap()]));
        assert!(!r["written"].as_array().unwrap().is_empty(), "{r}");
    }
    let out = d.join("out");
    let camp = std::fs::read_to_string(out.join("2009/04/camp/index.html")).unwrap();
    assert!(camp.contains("Climate camp opens") && camp.contains("<strong>opened</strong>"));
    assert!(
        std::fs::read_to_string(out.join("2009/04/legal-observers/index.html"))
            .unwrap()
            .contains("By Ana")
    );
    assert!(std::fs::read_to_string(out.join("about/index.html"))
        .unwrap()
        .contains("We are volunteers."));
    assert!(std::fs::read_to_string(out.join("sitemaps/pages.xml"))
        .unwrap()
        .contains("/about/"));
    // Pages are not listed.
    assert!(!std::fs::read_to_string(out.join("index.html"))
        .unwrap()
        .contains("About us"));

    let r = ok(&cli(d, &["unpublish", "camp"]));
    assert!(r["removed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "2009/04/camp/index.html"));
    assert!(!out.join("tags/climate").exists());
    assert!(!std::fs::read_to_string(out.join("index.html"))
        .unwrap()
        .contains("Climate camp"));
}

#[test]
fn cli_reports_bad_documents_per_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("bad.md"),
        "+++\nslug = \"../etc\"\npublished_at = \"soon\"\n+++\nx\n",
    );
    let out = cli(d, &["publish", d.join("bad.md").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["slug:", "title:", "published_at:"] {
        assert!(err.contains(field), "{field} not in {err}");
    }
    let out = cli(d, &["unpublish", "nothing-here"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no document"));
}

#[test]
fn a_broken_theme_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("theme/article.html"), "{% extends \"base.html\" %}\n{% block content %}\n{{ doc.title | nosuchfilter }}\n{% endblock %}\n");
    write(
        &d.join("doc.json"),
        r#"{"slug": "s", "title": "T", "published_at": "2009-01-01"}"#,
    );
    let theme = d.join("theme");
    let out = cli(
        d,
        &[
            "publish",
            d.join("doc.json").to_str().unwrap(),
            "--theme",
            theme.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("article.html") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn render_all_matches_incremental_output_and_applies_a_new_theme() {
    let p = Producer::start(&[]);
    for i in 0..30 {
        let tags: &[&str] = if i % 3 == 0 {
            &["three", "all"]
        } else {
            &["all"]
        };
        assert_eq!(
            p.publish(&article(
                &format!("r{i}"),
                &format!("Render {i}"),
                tags,
                &format!("2012-01-{:02}", i + 1)
            ))
            .status,
            200
        );
    }
    assert_eq!(p.unpublish("r4").status, 200);
    let dir = p.stop();
    let d = dir.path();
    let before = snapshot(&d.join("out"));
    let out = cli(d, &["render", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains(" 0 files written"),
        "a full rebuild of an up-to-date site wrote files: {said}"
    );
    assert_eq!(snapshot(&d.join("out")), before);

    write(&d.join("theme/article.html"), "{% extends \"base.html\" %}{% block content %}<h1 class=\"new-theme\">{{ doc.title }}</h1>{% endblock %}");
    let theme = d.join("theme");
    let out = cli(d, &["render", "--all", "--theme", theme.to_str().unwrap()]);
    assert!(out.status.success());
    let page = std::fs::read_to_string(d.join("out/2012/01/r7/index.html")).unwrap();
    assert!(page.contains("class=\"new-theme\""));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains(" 29 files written"), "{said}");
}

#[test]
fn cli_and_server_share_one_site() {
    let p = Producer::start(&[]);
    let d = p.dir.path().to_path_buf();
    write(&d.join("cli.md"), "+++\ntitle = \"From the command line\"\npublished_at = 2013-01-02\ntags = [\"shared\"]\n+++\nx\n");
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..10 {
                let r = p.publish(&article(
                    &format!("srv{i}"),
                    &format!("From the server {i}"),
                    &["shared"],
                    &format!("2013-01-01T00:0{i}:00Z"),
                ));
                assert_eq!(r.status, 200);
            }
        });
        s.spawn(|| ok(&cli(&d, &["publish", d.join("cli.md").to_str().unwrap()])));
    });
    let r = p.publish(&article("last", "Last one", &["shared"], "2013-01-03"));
    assert_eq!(r.status, 200);
    let tag = p.read("tags/shared/index.html");
    assert!(tag.contains("From the command line") && tag.contains("Last one"));
    assert_eq!(tag.matches(">From the server").count(), 10);
}

#[test]
fn an_interrupted_render_is_finished_at_the_next_start() {
    let p = Producer::start(&[]);
    assert_eq!(
        p.publish(&article("k", "Kept story", &["crash"], "2014-01-01"))
            .status,
        200
    );
    let dir = p.stop();
    let d = dir.path();
    // As if the process died after committing the change but before writing this page.
    std::fs::remove_file(d.join("out/tags/crash/index.html")).unwrap();
    let conn = rusqlite::Connection::open(d.join("state/producer.sqlite3")).unwrap();
    conn.execute("INSERT INTO pending VALUES ('listidx:crash')", [])
        .unwrap();
    drop(conn);
    let p = Producer::start_in(dir, &[]);
    assert!(p.read("tags/crash/index.html").contains("Kept story"));
}

#[test]
fn watch_publishes_a_saved_markdown_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let notes = d.join("notes");
    write(
        &notes.join("first.md"),
        "+++\ntitle = \"Already there\"\npublished_at = 2015-01-01\n+++\nx\n",
    );
    let mut child = Command::new(bin())
        .arg("watch")
        .arg(&notes)
        .args(site_args(d))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(TIMEOUT)
            .expect("watch never said it was watching");
        if line.starts_with("watching") {
            break;
        }
    }
    let out = d.join("out");
    assert!(out.join("2015/01/first/index.html").exists());
    // An editor saving a new file: write it elsewhere, rename into place.
    write(
        &d.join("tmp.md"),
        "---\ntitle: Saved in an editor\npublished_at: 2015-02-03\ntags: [notes]\n---\nHello.\n",
    );
    std::fs::rename(d.join("tmp.md"), notes.join("second.md")).unwrap();
    let page = out.join("2015/02/second/index.html");
    eventually("the saved file is published", || page.exists());
    // Saving again with a new title re-renders the page.
    write(
        &notes.join("second.md"),
        "---\ntitle: Corrected title\npublished_at: 2015-02-03\ntags: [notes]\n---\nHello.\n",
    );
    eventually("the edit is rendered", || {
        std::fs::read_to_string(&page).is_ok_and(|t| t.contains("Corrected title"))
    });
    // Deleting the file unpublishes it.
    std::fs::remove_file(notes.join("second.md")).unwrap();
    eventually("the deleted file is unpublished", || {
        !page.exists() && !out.join("tags/notes").exists()
    });
}
