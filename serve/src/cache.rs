//! The hot cache: small files' bodies and headers in memory, keyed by the request path.
//!
//! A `quick_cache` cache, bounded by bytes: a hit takes one shard's read lock for a hash
//! lookup, marks the entry used and clones its `Arc`. Over budget it evicts by S3-FIFO (a
//! clock over a small probation queue and a main one): entries asked for again stay, entries
//! nobody asks for again go first. (The cache this replaced dropped whichever entry its
//! `HashMap` iterated first: pages a poll or a crawl had brought in stayed for good while the
//! pages readers kept asking for were evicted and read again, so a 1,000-page mix ran at 0.58x
//! its throughput once 2,500 other pages had been fetched three times: `benches/README.md`.)
//!
//! A path is admitted on its second miss, not its first (a doorkeeper, as in TinyLFU): a
//! crawler walking the archive, or a page asked for once after a publish, costs a miss but
//! neither memory nor the eviction of a page readers keep asking for. The doorkeeper is a
//! 32 KiB bitset of paths missed recently, emptied when a quarter of it is set.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::resource::{Encoding, Resource};

/// Bits in the doorkeeper: 32 KiB.
const DOOR_BITS: usize = 1 << 18;
/// Shards of the cache: each has a sixteenth of the budget.
const SHARDS: usize = 16;
/// The largest entry, as a share of the budget: a twentieth, within what one shard takes in
/// (quick_cache holds an entry up to 97 % of its shard's budget).
const MAX_SHARE: usize = 20;

pub(crate) struct HotCache {
    /// `None` with a budget of 0: no cache at all.
    map: Option<quick_cache::sync::Cache<Box<str>, Entry, ByWeight>>,
    max_entry: usize,
    door: Doorkeeper,
}

/// A resource and its weight in bytes (body, headers and key), fixed when it goes in.
#[derive(Clone)]
struct Entry(Arc<Resource>, u64);

#[derive(Clone)]
struct ByWeight;

impl quick_cache::Weighter<Box<str>, Entry> for ByWeight {
    fn weight(&self, _key: &Box<str>, e: &Entry) -> u64 {
        e.1
    }
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

/// FNV-1a, 64 bits: a spread for the doorkeeper's bits, not DoS resistance (a collision
/// only admits a path one miss early).
fn fnv64(key: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h
}

/// A guess at the average entry (a page and its headers) for sizing the cache's tables.
const TYPICAL_ENTRY: usize = 16 << 10;

impl HotCache {
    pub(crate) fn new(total_bytes: usize) -> Self {
        // Sixteen shards at most (quick_cache takes fewer for a small budget, so that each
        // holds some 32 entries), not its default of four per core: a shard's budget must
        // hold the largest entry, a twentieth of the whole, on a machine of any size.
        let map = (total_bytes > 0).then(|| {
            let opts = quick_cache::OptionsBuilder::new()
                .shards(SHARDS)
                .estimated_items_capacity((total_bytes / TYPICAL_ENTRY).max(SHARDS))
                .weight_capacity(total_bytes as u64)
                .build()
                .expect("capacities are set");
            quick_cache::sync::Cache::with_options(
                opts,
                ByWeight,
                Default::default(),
                Default::default(),
            )
        });
        HotCache {
            map,
            max_entry: total_bytes / MAX_SHARE,
            door: Doorkeeper::new(),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Resource>> {
        self.map.as_ref()?.get(key).map(|e| e.0)
    }

    /// Holds `res` under `key` if it lives wholly in memory, is no more than a twentieth of
    /// the budget, and `key` was missed before (see the module docs).
    pub(crate) fn insert(&self, key: &str, res: &Arc<Resource>) {
        let Some(map) = &self.map else {
            return;
        };
        let Some(weight) = res.memory_weight() else {
            return;
        };
        let weight = weight + key.len();
        if weight > self.max_entry || !self.door.seen_before(key) {
            return;
        }
        map.insert(key.into(), Entry(res.clone(), weight as u64));
    }

    pub(crate) fn remove(&self, key: &str) {
        if let Some(map) = &self.map {
            map.remove(key);
        }
    }

    /// Drops every entry a change to `changed` (root-relative paths; a directory stands for
    /// everything under it) could affect, including the directory keys whose `index.html`
    /// changed and the plain files whose precompressed variants changed.
    pub(crate) fn invalidate(&self, changed: &HashSet<String>) {
        let Some(map) = &self.map else {
            return;
        };
        if changed.is_empty() {
            return;
        }
        if changed.contains("") {
            map.clear();
            return;
        }
        // `retain` takes an `Fn`: the buffer is reused through a `RefCell`.
        let file = std::cell::RefCell::new(String::new());
        map.retain(|key, _| {
            let mut file = file.borrow_mut();
            file.clear();
            file.push_str(key);
            if file.is_empty() || file.ends_with('/') {
                file.push_str("index.html");
            }
            !affected(&file, changed)
        });
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

    /// A resource of `len` bytes held in memory.
    fn page(len: usize) -> Arc<Resource> {
        let v = http::HeaderValue::from_static("x");
        Arc::new(Resource {
            content_type: v.clone(),
            cache_control: v.clone(),
            reps: vec![crate::resource::Rep {
                encoding: Encoding::Identity,
                len: len as u64,
                etag: v.clone(),
                last_modified: v,
                mtime_secs: 0,
                source: crate::resource::Source::Memory(bytes::Bytes::from(vec![b'x'; len])),
            }],
            loaded_at: std::time::Instant::now(),
        })
    }

    #[test]
    fn a_path_is_cached_from_its_second_miss() {
        let cache = HotCache::new(1 << 20);
        let res = page(4);
        cache.insert("a.html", &res);
        assert!(cache.get("a.html").is_none());
        cache.insert("a.html", &res);
        assert!(cache.get("a.html").is_some());
    }

    /// The pages readers keep asking for stay while many more pages, each fetched a few times
    /// and then never again, pass through a cache too small for all of them: as a mirror's
    /// cache fares while a crawler or the freshness checks of a publish go by.
    #[test]
    fn pages_asked_for_again_outlive_pages_that_are_not() {
        let cache = HotCache::new(1 << 20);
        let res = page(10 << 10);
        let hot: Vec<String> = (0..40).map(|i| format!("hot/{i}.html")).collect();
        // Admitted (second miss) and read, as a page in steady demand is.
        for _ in 0..2 {
            for k in &hot {
                cache.insert(k, &res);
            }
        }
        for k in &hot {
            assert!(cache.get(k).is_some(), "{k} was not admitted");
        }
        // 1,000 other pages, 10 MB against a 1 MiB budget, each missed twice (admitted) and
        // read once more; the hot pages are read between them.
        for i in 0..1000 {
            let k = format!("cold/{i}.html");
            cache.insert(&k, &res);
            cache.insert(&k, &res);
            cache.get(&k);
            if i % 10 == 0 {
                for k in &hot {
                    cache.get(k);
                }
            }
        }
        let kept = hot.iter().filter(|k| cache.get(k).is_some()).count();
        assert!(kept >= 36, "only {kept} of 40 hot pages still cached");
        let cold = (900..1000)
            .filter(|i| cache.get(&format!("cold/{i}.html")).is_some())
            .count();
        assert!(cold > 0, "the cache holds none of the latest pages");
    }

    #[test]
    fn a_change_drops_the_changed_file_and_everything_under_a_changed_directory() {
        let cache = HotCache::new(1 << 20);
        let res = page(100);
        let keys = ["news/a.html", "news/", "media/x/y.jpg", "about.html"];
        for k in keys.iter().chain(&keys) {
            cache.insert(k, &res);
        }
        cache.invalidate(&normalize_changed(&[
            "news/a.html.br".into(),
            "news/index.html".into(),
            "media".into(),
        ]));
        assert!(cache.get("news/a.html").is_none());
        assert!(cache.get("news/").is_none());
        assert!(cache.get("media/x/y.jpg").is_none());
        assert!(cache.get("about.html").is_some());
        cache.invalidate(&normalize_changed(&["/".into()]));
        assert!(cache.get("about.html").is_none());
    }

    #[test]
    fn an_entry_of_a_twentieth_of_the_budget_is_held_and_a_larger_one_is_not() {
        let cache = HotCache::new(32 << 20);
        let big = page((32 << 20) / 20 - 1024);
        let bigger = page((32 << 20) / 20 + 1);
        for _ in 0..2 {
            cache.insert("big.html", &big);
            cache.insert("bigger.html", &bigger);
        }
        assert!(cache.get("big.html").is_some());
        assert!(cache.get("bigger.html").is_none());
    }

    #[test]
    fn a_budget_of_zero_caches_nothing() {
        let cache = HotCache::new(0);
        let res = page(10);
        cache.insert("a.html", &res);
        cache.insert("a.html", &res);
        assert!(cache.get("a.html").is_none());
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
