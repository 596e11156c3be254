//! The hot cache: small files' bodies and headers in memory, keyed by the request path.
//!
//! Sharded `RwLock<HashMap>`s: a hit takes one shard's read lock for a hash lookup and an
//! `Arc` clone. Each shard has a byte budget; over it, arbitrary entries are dropped (the
//! `HashMap`'s iteration order is effectively random), which is cheap and good enough for a
//! working set that mostly fits.
//!
//! A path is admitted on its second miss, not its first (a doorkeeper, as in TinyLFU): a
//! crawler walking the archive, or a page asked for once after a publish, costs a miss but
//! neither memory nor the eviction of a page readers keep asking for. The doorkeeper is a
//! 32 KiB bitset of paths missed recently, emptied when a quarter of it is set.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::resource::{Encoding, Resource};

const SHARDS: usize = 16;
/// Bits in the doorkeeper: 32 KiB.
const DOOR_BITS: usize = 1 << 18;

pub(crate) struct HotCache {
    shards: Box<[RwLock<Shard>]>,
    shard_budget: usize,
    door: Doorkeeper,
}

/// Paths missed recently, as bits of a hash. A false "seen" (two paths on one bit) only
/// admits a path one miss early.
struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    set: AtomicUsize,
}

impl Doorkeeper {
    fn new() -> Self {
        Doorkeeper {
            bits: (0..DOOR_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            set: AtomicUsize::new(0),
        }
    }

    /// Whether `key` was missed since the bits were last emptied; marks it missed.
    fn seen_before(&self, key: &str) -> bool {
        let bit = (fnv64(key) % DOOR_BITS as u64) as usize;
        let mask = 1u64 << (bit % 64);
        if self.bits[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0 {
            return true;
        }
        // Age: once a quarter of the bits are set, start again, so that "seen" stays
        // "seen recently" and the false-positive rate stays under a quarter.
        if self.set.fetch_add(1, Ordering::Relaxed) + 1 >= DOOR_BITS / 4 {
            self.set.store(0, Ordering::Relaxed);
            for w in self.bits.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        false
    }
}

/// FNV-1a, 64 bits: a spread for the shard index and the doorkeeper, not DoS resistance (the
/// maps have that).
fn fnv64(key: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h
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
            door: Doorkeeper::new(),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        // The high half: the doorkeeper's bit comes from the low one.
        &self.shards[(fnv64(key) >> 32) as usize % SHARDS]
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Resource>> {
        if self.shard_budget == 0 {
            return None;
        }
        self.shard(key).read().map.get(key).map(|(r, _)| r.clone())
    }

    /// Holds `res` under `key` if it lives wholly in memory, fits the budget, and `key` was
    /// missed before (see the module docs).
    pub(crate) fn insert(&self, key: &str, res: &Arc<Resource>) {
        let Some(weight) = res.memory_weight() else {
            return;
        };
        let weight = weight + key.len();
        if weight > self.shard_budget || !self.door.seen_before(key) {
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
    fn doorkeeper_admits_on_the_second_miss_and_ages() {
        let d = Doorkeeper::new();
        assert!(!d.seen_before("a/b.html"));
        assert!(d.seen_before("a/b.html"));
        let keys: Vec<String> = (0..1000).map(|i| format!("k/{i}.html")).collect();
        let first = keys.iter().filter(|k| d.seen_before(k)).count();
        assert!(first < 10, "{first} of 1,000 new paths taken as seen");
        assert!(keys.iter().all(|k| d.seen_before(k)));
        // Other paths until a quarter of the bits are set and the doorkeeper starts again:
        // then they are forgotten.
        let mut i = 0;
        loop {
            let before = d.set.load(Ordering::Relaxed);
            d.seen_before(&format!("p/{i}"));
            i += 1;
            if d.set.load(Ordering::Relaxed) < before {
                break;
            }
            assert!(i <= DOOR_BITS, "the doorkeeper never aged");
        }
        let still = keys.iter().filter(|k| d.seen_before(k)).count();
        assert!(still < 10, "{still} of 1,000 paths still seen after ageing");
    }

    #[test]
    fn a_path_is_cached_from_its_second_miss() {
        let cache = HotCache::new(1 << 20);
        let v = http::HeaderValue::from_static("x");
        let res = Arc::new(Resource {
            content_type: v.clone(),
            cache_control: v.clone(),
            reps: vec![crate::resource::Rep {
                encoding: Encoding::Identity,
                len: 4,
                etag: v.clone(),
                last_modified: v,
                mtime_secs: 0,
                source: crate::resource::Source::Memory(bytes::Bytes::from_static(b"page")),
            }],
            loaded_at: std::time::Instant::now(),
        });
        cache.insert("a.html", &res);
        assert!(cache.get("a.html").is_none());
        cache.insert("a.html", &res);
        assert!(cache.get("a.html").is_some());
    }

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
