//! Precompressed variants (`.br`, `.zst`, `.gz`), made on a worker thread after a publish
//! has returned, so compressing is off the publish's critical path.
//!
//! The publish removed each changed file's old variants as it renamed the file in
//! ([`crate::output::Batch::commit`]), so until the worker is done a reader gets the new page
//! uncompressed. The worker:
//! 1. compresses every file of a job and writes the variants to temporary files in
//!    `.tmp-variants/` under the root (ignored by the distributor), then fsyncs them; no lock
//!    is held, so the next publish can run meanwhile;
//! 2. takes the writer lock (its own `flock`, so it queues behind a publish of this process
//!    or another one), and renames a file's variants in only if the plain file still holds
//!    the bytes they were made from; a newer version's job makes the newer variants;
//! 3. fsyncs the directories, then deletes the job's rows from the store's `variants_due`.
//!
//! A crash at any point leaves at worst a page without some variants, and its row in
//! `variants_due`; the next start makes them ([`recover`]).

use crate::lock::WriterLock;
use crate::output::{self, Output, VARIANTS};
use crate::store;
use rusqlite::Connection;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// One file whose variants are due: its path, the bytes to compress, and the generation of
/// its row in `variants_due`.
#[derive(Debug, Clone)]
pub struct Job {
    pub rel: String,
    pub bytes: Vec<u8>,
    pub generation: i64,
}

/// The worker thread and its queue. Dropping it finishes the queued jobs first.
pub struct Precompressor {
    tx: Option<mpsc::Sender<Vec<Job>>>,
    handle: Option<JoinHandle<()>>,
    queued: Arc<(Mutex<usize>, Condvar)>,
}

impl Precompressor {
    /// Starts the worker for the tree of `output`, with the store and lock of `state`.
    pub fn start(output: Output, state: &Path) -> anyhow::Result<Precompressor> {
        let lock = WriterLock::new(state)?;
        let conn = store::open(state)?;
        // The site's checkpointer copies the log into the database, not this worker's commits.
        tamizdat_sqlite::hand_over(&conn)?;
        let (tx, rx) = mpsc::channel::<Vec<Job>>();
        let queued = Arc::new((Mutex::new(0usize), Condvar::new()));
        let q = queued.clone();
        let handle = std::thread::Builder::new()
            .name("precompress".into())
            .spawn(move || run(rx, &output, &lock, &conn, &q))?;
        Ok(Precompressor {
            tx: Some(tx),
            handle: Some(handle),
            queued,
        })
    }

    /// Queues jobs; returns at once.
    pub fn submit(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        *self.queued.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if let Some(tx) = &self.tx {
            if tx.send(jobs).is_err() {
                self.done(1);
            }
        }
    }

    /// Blocks until every queued job is done. Never call it holding the writer lock.
    pub fn wait_idle(&self) {
        let (m, cv) = &*self.queued;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn done(&self, n: usize) {
        done(&self.queued, n);
    }
}

impl Drop for Precompressor {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn done(queued: &(Mutex<usize>, Condvar), n: usize) {
    let mut q = queued.0.lock().unwrap_or_else(|e| e.into_inner());
    *q = q.saturating_sub(n);
    queued.1.notify_all();
}

fn run(
    rx: mpsc::Receiver<Vec<Job>>,
    output: &Output,
    lock: &WriterLock,
    conn: &Connection,
    queued: &(Mutex<usize>, Condvar),
) {
    while let Ok(first) = rx.recv() {
        // Take everything queued meanwhile; of several versions of a file only the newest
        // matters.
        let mut jobs = first;
        let mut n = 1;
        while let Ok(more) = rx.try_recv() {
            jobs.extend(more);
            n += 1;
        }
        let mut newest: HashMap<String, usize> = HashMap::new();
        for (i, j) in jobs.iter().enumerate() {
            newest.insert(j.rel.clone(), i);
        }
        let jobs: Vec<Job> = jobs
            .into_iter()
            .enumerate()
            .filter(|(i, j)| newest[&j.rel] == *i)
            .map(|(_, j)| j)
            .collect();
        if let Err(e) = make(output, lock, conn, &jobs) {
            tracing::error!(cause = %e, files = jobs.len(), "precompressing failed; the next start retries");
        }
        done(queued, n);
    }
}

/// Temporary files deleted on drop unless renamed.
struct Temps(Vec<(PathBuf, PathBuf)>);

impl Temps {
    fn discard(&mut self) {
        for (t, _) in self.0.drain(..) {
            let _ = fs::remove_file(t);
        }
    }
}

impl Drop for Temps {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Makes and installs the variants of `jobs`; returns how many files got them.
pub(crate) fn make(
    output: &Output,
    lock: &WriterLock,
    conn: &Connection,
    jobs: &[Job],
) -> anyhow::Result<usize> {
    let staging = output.root().join(output::STAGING_DIR);
    fs::create_dir_all(&staging)?;
    let mut staged: Vec<Temps> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let path = output.root().join(&job.rel);
        let mut temps = Temps(Vec::with_capacity(VARIANTS.len()));
        for v in VARIANTS {
            let packed = output::compress(v, &job.bytes)?;
            let dest = output::variant_path(&path, v);
            temps
                .0
                .push(output::write_temp_in(&staging, &dest, &packed)?);
        }
        staged.push(temps);
    }
    let all: Vec<&Path> = staged
        .iter()
        .flat_map(|t| t.0.iter().map(|(tmp, _)| tmp.as_path()))
        .collect();
    output::make_durable(&all)?;

    let mut installed = Vec::new();
    let mut dirs = BTreeSet::new();
    {
        let _guard = lock.acquire()?;
        for (job, temps) in jobs.iter().zip(&mut staged) {
            let path = output.root().join(&job.rel);
            let dir = path.parent().expect("output paths have a parent");
            if !output::same_bytes(&path, &job.bytes)? {
                temps.discard(); // superseded or unpublished
                continue;
            }
            for (tmp, dest) in &temps.0 {
                fs::rename(tmp, dest)?;
            }
            temps.0.clear();
            dirs.insert(dir.to_owned());
            installed.push((job.rel.as_str(), job.generation));
        }
    }
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    output::make_durable(&dirs)?;
    store::variants_done(conn, &installed)?;
    Ok(installed.len())
}

/// The jobs a crash or failure left undone: every row of `variants_due` whose file still
/// exists and lacks a variant. Rows for files that are gone or complete are dropped. Call it
/// holding the writer lock.
pub(crate) fn recover(output: &Output, conn: &Connection) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut finished = Vec::new();
    for (rel, generation) in store::variants_due(conn)? {
        let path = output.root().join(&rel);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                finished.push((rel, generation));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if output.has_variants(&rel) && output::variants_missing(&path) {
            jobs.push(Job {
                rel,
                bytes,
                generation,
            });
        } else {
            finished.push((rel, generation));
        }
    }
    let finished: Vec<(&str, i64)> = finished.iter().map(|(r, g)| (r.as_str(), *g)).collect();
    store::variants_done(conn, &finished)?;
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{variant_path, Batch, DirSync};

    fn site() -> (tempfile::TempDir, Output, WriterLock, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::new(dir.path().join("out"), true);
        fs::create_dir_all(dir.path().join("out")).unwrap();
        let lock = WriterLock::new(dir.path()).unwrap();
        let conn = store::open(dir.path()).unwrap();
        (dir, out, lock, conn)
    }

    fn publish(out: &Output, conn: &Connection, rel: &str, bytes: &[u8], generation: i64) -> Job {
        let mut batch = Batch::default();
        let mut dirs = DirSync::default();
        out.stage(rel, bytes, &mut batch).unwrap();
        let due = batch.commit(&mut dirs, &[]).unwrap();
        dirs.finish().unwrap();
        store::record_due(conn, &due, generation).unwrap();
        Job {
            rel: rel.into(),
            bytes: bytes.to_vec(),
            generation,
        }
    }

    #[test]
    fn variants_of_a_superseded_version_are_never_installed() {
        let (_dir, out, lock, conn) = site();
        let page = |v: &str| format!("<p>{}</p>", v.repeat(200)).into_bytes();
        let old = publish(&out, &conn, "a/index.html", &page("old"), 1);
        // A second publish lands before the first one's variants are made.
        let new = publish(&out, &conn, "a/index.html", &page("new"), 2);
        assert_eq!(make(&out, &lock, &conn, &[old]).unwrap(), 0);
        let p = out.root().join("a/index.html");
        assert!(VARIANTS.iter().all(|v| !variant_path(&p, v).exists()));
        assert_eq!(store::variants_due(&conn).unwrap().len(), 1, "still due");
        assert_eq!(make(&out, &lock, &conn, &[new]).unwrap(), 1);
        let zst = zstd::decode_all(&fs::read(variant_path(&p, "zst")).unwrap()[..]).unwrap();
        assert_eq!(zst, page("new"));
        assert!(store::variants_due(&conn).unwrap().is_empty());
        let names: Vec<_> = fs::read_dir(out.root().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        let staging = out.root().join(output::STAGING_DIR);
        assert_eq!(
            fs::read_dir(staging).unwrap().count(),
            0,
            "no temporary files left"
        );
    }

    #[test]
    fn recovery_finds_the_variants_a_crash_left_undone() {
        let (_dir, out, lock, conn) = site();
        publish(&out, &conn, "x.html", b"<p>x</p>", 7);
        publish(&out, &conn, "gone.html", b"<p>g</p>", 8);
        fs::remove_file(out.root().join("gone.html")).unwrap();
        // As if the process died before its worker ran.
        let jobs = recover(&out, &conn).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].rel.as_str(), jobs[0].generation), ("x.html", 7));
        assert_eq!(make(&out, &lock, &conn, &jobs).unwrap(), 1);
        assert!(recover(&out, &conn).unwrap().is_empty());
        assert!(store::variants_due(&conn).unwrap().is_empty());
    }

    #[test]
    fn an_unpublished_page_gets_no_variants_and_leaves_no_directory() {
        let (_dir, out, lock, conn) = site();
        let job = publish(&out, &conn, "2009/04/go/index.html", b"<p>go</p>", 4);
        let mut dirs = DirSync::default();
        out.remove("2009/04/go/index.html", &mut dirs).unwrap();
        assert_eq!(make(&out, &lock, &conn, &[job]).unwrap(), 0);
        assert!(!out.root().join("2009").exists());
    }

    #[test]
    fn the_worker_finishes_its_queue_before_it_stops() {
        let (dir, out, _lock, conn) = site();
        let job = publish(&out, &conn, "b.html", b"<p>b</p>", 3);
        let w = Precompressor::start(out.clone(), dir.path()).unwrap();
        w.submit(vec![job.clone(), job]);
        drop(w);
        let p = out.root().join("b.html");
        assert!(VARIANTS.iter().all(|v| variant_path(&p, v).exists()));
    }
}
