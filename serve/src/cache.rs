//! The hot cache: small files' bodies and headers in memory, keyed by the request path.
//!
//! Sharded `RwLock<HashMap>`s: a hit takes one shard's read lock for a hash lookup and an
//! `Arc` clone. Each shard has a byte budget; over it, arbitrary entries are dropped (the
//! `HashMap`'s iteration order is effectively random), which is cheap and good enough for a
//! working set that mostly fits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::resource::{Encoding, Resource};

const SHARDS: usize = 16;

pub(crate) struct HotCache {
    shards: Box<[RwLock<Shard>]>,
    shard_budget: usize,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, (Arc<Resource>, usize)>,
    bytes: usize,
}

impl HotCache {
    pub(crate) fn new(total_bytes: usize) -> Self {
        HotCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            shard_budget: total_bytes / SHARDS,
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        // FNV-1a: the shard only needs a spread, not DoS resistance (the map has that).
        let mut h: u32 = 0x811c9dc5;
        for b in key.bytes() {
            h = (h ^ b as u32).wrapping_mul(0x01000193);
        }
        &self.shards[h as usize % SHARDS]
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Resource>> {
        if self.shard_budget == 0 {
            return None;
        }
        self.shard(key).read().map.get(key).map(|(r, _)| r.clone())
    }

    /// Holds `res` under `key` if it lives wholly in memory and fits the budget.
    pub(crate) fn insert(&self, key: &str, res: &Arc<Resource>) {
        let Some(weight) = res.memory_weight() else {
            return;
        };
        let weight = weight + key.len();
        if weight > self.shard_budget {
            return;
        }
        let mut shard = self.shard(key).write();
        if let Some((_, old)) = shard.map.insert(key.into(), (res.clone(), weight)) {
            shard.bytes -= old;
        }
        shard.bytes += weight;
        while shard.bytes > self.shard_budget {
            let victim = shard
                .map
                .keys()
                .find(|k| &***k != key)
                .cloned()
                .expect("over budget with only the new entry, which fits");
            if let Some((_, w)) = shard.map.remove(&victim) {
                shard.bytes -= w;
            }
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        if self.shard_budget == 0 {
            return;
        }
        let mut shard = self.shard(key).write();
        if let Some((_, w)) = shard.map.remove(key) {
            shard.bytes -= w;
        }
    }

    /// Drops every entry a change to `changed` (root-relative paths; a directory stands for
    /// everything under it) could affect, including the directory keys whose `index.html`
    /// changed and the plain files whose precompressed variants changed.
    pub(crate) fn invalidate(&self, changed: &HashSet<String>) {
        if changed.is_empty() {
            return;
        }
        if changed.contains("") {
            for s in self.shards.iter() {
                let mut s = s.write();
                s.map.clear();
                s.bytes = 0;
            }
            return;
        }
        let mut file = String::new();
        for s in self.shards.iter() {
            let mut guard = s.write();
            let shard = &mut *guard;
            let mut freed = 0;
            shard.map.retain(|key, (_, w)| {
                file.clear();
                file.push_str(key);
                if file.is_empty() || file.ends_with('/') {
                    file.push_str("index.html");
                }
                let hit = affected(&file, changed);
                if hit {
                    freed += *w;
                }
                !hit
            });
            shard.bytes -= freed;
        }
    }
}

/// Normalises a changed path as given by the mirror: no leading or trailing `/`, and a
/// precompressed variant stands for its plain file (whose entry holds the variant).
pub(crate) fn normalize_changed(changed: &[String]) -> HashSet<String> {
    let mut set = HashSet::with_capacity(changed.len() * 2);
    for c in changed {
        let c = c.trim_matches('/');
        let c = if c == "." { "" } else { c };
        set.insert(c.to_owned());
        for enc in Encoding::PRECOMPRESSED {
            if let Some(base) = c.strip_suffix(enc.suffix()) {
                set.insert(base.to_owned());
            }
        }
    }
    set
}

/// Whether the file at `file` is `changed` itself or lies under a changed directory.
pub(crate) fn affected(file: &str, changed: &HashSet<String>) -> bool {
    if changed.contains(file) {
        return true;
    }
    file.match_indices('/')
        .any(|(i, _)| changed.contains(&file[..i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affected_paths() {
        let set = normalize_changed(&[
            "/news/page.html.gz".into(),
            "media/".into(),
            "a/b/index.html".into(),
        ]);
        assert!(affected("news/page.html", &set));
        assert!(affected("news/page.html.gz", &set));
        assert!(affected("media/x/y.jpg", &set));
        assert!(affected("a/b/index.html", &set));
        assert!(!affected("news/other.html", &set));
        assert!(!affected("mediax/y.jpg", &set));
        assert!(!affected("a/index.html", &set));
    }
}
