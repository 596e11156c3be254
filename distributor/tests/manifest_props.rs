//! Property: the manifest diff the journal answers catch-ups with is exact. For any history
//! of puts, deletes (of files and directories) and directory moves, and any sequence S the
//! journal still covers, applying `snapshot(Some(S))` (deletes, then puts) to the manifest the
//! site had at S gives the manifest at the head; `snapshot(None)` is the head's manifest; and
//! a catch-up lists only paths written after S, each once.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use tamizdat_distributor::index::{Entry, Index, RowChange};
use tamizdat_protocol::{ContentHash, Op, SitePath, GENESIS};

type Manifest = BTreeMap<String, ContentHash>;

const FILES: [&str; 8] = ["a/x", "a/y", "a/b/z", "b/x", "b/y", "c", "d/a/x", "e"];
const DIRS: [&str; 4] = ["a", "b", "d", "a/b"];

#[derive(Clone, Debug)]
enum Action {
    Put(usize, u8),
    Delete(usize),
    DeleteDir(usize),
    MoveDir(usize, usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..FILES.len(), any::<u8>()).prop_map(|(p, c)| Action::Put(p, c)),
        1 => (0..FILES.len()).prop_map(Action::Delete),
        1 => (0..DIRS.len()).prop_map(Action::DeleteDir),
        1 => (0..DIRS.len(), 0..DIRS.len()).prop_map(|(a, b)| Action::MoveDir(a, b)),
    ]
}

fn p(s: &str) -> SitePath {
    SitePath::new(s).unwrap()
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{dir}/"))
}

/// The model of one action; the row change the journal would write for it (None: a no-op the
/// journal would not record).
fn step(m: &mut Manifest, a: &Action, touched: &mut BTreeSet<String>) -> Option<RowChange> {
    match *a {
        Action::Put(i, c) => {
            let path = FILES[i];
            // A file cannot sit where a directory is, nor under a file.
            if m.keys().any(|k| k.starts_with(&format!("{path}/")))
                || m.keys().any(|k| path.starts_with(&format!("{k}/")))
            {
                return None;
            }
            let hash = ContentHash::of(&[c]);
            // The journal compares with the index: the same bytes again are no change.
            if m.insert(path.into(), hash) == Some(hash) {
                return None;
            }
            touched.insert(path.into());
            Some(RowChange::Live(
                p(path),
                Entry {
                    hash,
                    size: 1,
                    mode: 0o644,
                    mtime_ns: 0,
                    ino: 0,
                },
            ))
        }
        Action::Delete(i) => {
            m.remove(FILES[i])?;
            touched.insert(FILES[i].into());
            Some(RowChange::Gone {
                path: p(FILES[i]),
                dir: false,
            })
        }
        Action::DeleteDir(i) => {
            let dir = DIRS[i];
            let before = m.len();
            touched.extend(m.keys().filter(|k| under(k, dir)).cloned());
            m.retain(|k, _| !under(k, dir));
            (m.len() != before).then(|| RowChange::Gone {
                path: p(dir),
                dir: true,
            })
        }
        Action::MoveDir(a, b) => {
            let (from, to) = (DIRS[a], DIRS[b]);
            if under(to, from) || under(from, to) || !m.keys().any(|k| under(k, from)) {
                return None;
            }
            if m.keys().any(|k| to.starts_with(&format!("{k}/"))) {
                return None;
            }
            let moved: Vec<(String, ContentHash)> = m
                .iter()
                .filter(|(k, _)| under(k, from))
                .map(|(k, h)| (format!("{to}{}", &k[from.len()..]), *h))
                .collect();
            touched.extend(m.keys().filter(|k| under(k, from) || under(k, to)).cloned());
            touched.extend(moved.iter().map(|(k, _)| k.clone()));
            m.retain(|k, _| !under(k, from) && !under(k, to));
            m.extend(moved);
            Some(RowChange::Moved {
                from: p(from),
                to: p(to),
            })
        }
    }
}

/// What a mirror at `m` holds after applying a catch-up's ops, in order.
fn apply(mut m: Manifest, ops: &[Op]) -> Manifest {
    for op in ops {
        match op {
            Op::Delete { path } => m.retain(|k, _| !under(k, path.as_str())),
            Op::Put { path, hash, .. } => {
                m.insert(path.to_string(), *hash);
            }
            Op::Move { .. } => panic!("a snapshot never moves"),
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn a_catch_up_takes_any_covered_state_to_the_head(
        history in prop::collection::vec(prop::collection::vec(action(), 1..5), 1..10)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let mut writer = index.writer().unwrap();
        let mut model = Manifest::new();
        let mut states = vec![model.clone()];
        // Paths whose rows each recorded changeset rewrote.
        let mut touched_at: Vec<BTreeSet<String>> = vec![BTreeSet::new()];
        for changeset in &history {
            let seq = states.len() as u64;
            let tx = writer.begin().unwrap();
            let mut n = 0;
            let mut touched = BTreeSet::new();
            for a in changeset {
                if let Some(change) = step(&mut model, a, &mut touched) {
                    tx.apply(&change, seq).unwrap();
                    n += 1;
                }
            }
            if n == 0 {
                tx.commit(None, 0, 0).unwrap();
                continue;
            }
            tx.commit(Some((seq, GENESIS)), 0, n).unwrap();
            states.push(model.clone());
            touched_at.push(touched);
        }
        let collect = |since| {
            let mut ops = Vec::new();
            let (head, _) = index
                .snapshot(since, 3, |_, batch| {
                    ops.extend(batch);
                    Ok(())
                })
                .unwrap();
            (head, ops)
        };
        let (head, full) = collect(None);
        prop_assert_eq!(head as usize, states.len() - 1);
        prop_assert_eq!(apply(Manifest::new(), &full), model.clone());
        for (s, at) in states.iter().enumerate() {
            let (_, ops) = collect(Some(s as u64));
            prop_assert_eq!(apply(at.clone(), &ops), model.clone(), "catch-up from {}", s);
            // Cost grows with what changed: at most one op per path written after s.
            let touched: BTreeSet<&String> = touched_at[s + 1..].iter().flatten().collect();
            prop_assert!(ops.len() <= touched.len(), "{} ops for {} paths", ops.len(), touched.len());
            for op in &ops {
                let path = match op {
                    Op::Put { path, .. } | Op::Delete { path } => path.to_string(),
                    Op::Move { .. } => unreachable!(),
                };
                prop_assert!(touched.contains(&path), "{} was not written after {}", path, s);
            }
            if s == states.len() - 1 {
                prop_assert!(ops.is_empty(), "a mirror at the head is sent {:?}", ops);
            }
        }
    }
}
