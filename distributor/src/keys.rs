//! The site's signing key and its rotations, kept in the state directory.
//!
//! - `site.key`: the current secret key, 64 hex digits, owner-only (0600). Back it up with the
//!   rest of the state; whoever holds it can publish as the site.
//! - `site-key.rotations`: one line per rotation, `old-key new-key signature` in hex, oldest
//!   first: each new key signed by the one before it, so mirrors that pinned an older key follow
//!   without re-enrolment. Public, but kept owner-only like everything else here.
//!
//! Rotation replaces `site.key` (the old secret is gone afterwards) and appends to the log;
//! a running distributor keeps signing with the key it started with until it is restarted.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use tamizdat_protocol::sign::{hex, unhex, Signature};
use tamizdat_protocol::{Rotation, SiteId, SiteKey, SiteSigner};

pub const KEY_FILE: &str = "site.key";
pub const ROTATIONS_FILE: &str = "site-key.rotations";

/// What a running distributor signs with.
pub struct Signing {
    pub site: SiteId,
    pub signer: SiteSigner,
    pub rotations: Vec<Rotation>,
}

impl Signing {
    pub fn new(site: SiteId, keys: Keys) -> Self {
        Self {
            site,
            signer: keys.signer,
            rotations: keys.rotations,
        }
    }

    /// Signs a changeset built at send time (a catch-up or a full resync).
    pub fn proof(
        &self,
        seq: u64,
        base_seq: u64,
        kind: tamizdat_protocol::Mode,
        prev: tamizdat_protocol::Link,
        ops_digest: [u8; 32],
        next: tamizdat_protocol::Link,
    ) -> tamizdat_protocol::Proof {
        let sig = self.signer.sign(&tamizdat_protocol::Statement {
            site: self.site,
            seq,
            base_seq,
            kind,
            prev,
            ops_digest,
            next,
        });
        tamizdat_protocol::Proof { prev, next, sig }
    }
}

pub struct Keys {
    pub signer: SiteSigner,
    /// Oldest first; the last one's `new` is `signer`'s key.
    pub rotations: Vec<Rotation>,
}

impl Keys {
    pub fn key(&self) -> SiteKey {
        self.signer.key()
    }
}

/// Writes `data` to `dir/name` with mode 0600, durably and atomically. With `replace` false,
/// an existing file wins (two processes making the first key at once agree on one).
fn write_private(dir: &Path, name: &str, data: &[u8], replace: bool) -> Result<bool> {
    let tmp = dir.join(format!(
        ".{name}.{}.{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("Failed to create {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    let dst = dir.join(name);
    let placed = if replace {
        std::fs::rename(&tmp, &dst).map(|_| true)
    } else {
        let r = match std::fs::hard_link(&tmp, &dst) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&tmp);
        r
    };
    let placed = placed.with_context(|| format!("Failed to write {}", dst.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(placed)
}

fn parse_secret(text: &str, path: &Path) -> Result<SiteSigner> {
    let t = text.trim();
    let secret = unhex::<32>(t)
        .with_context(|| format!("{} is damaged: expected 64 hex digits", path.display()))?;
    Ok(SiteSigner::from_secret(&secret))
}

fn parse_rotations(text: &str, path: &Path) -> Result<Vec<Rotation>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || format!("{} line {} is damaged", path.display(), n + 1);
        let mut it = line.split_whitespace();
        let (Some(old), Some(new), Some(sig), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            bail!(bad());
        };
        let old = SiteKey::from_hex(old).with_context(bad)?;
        let new = SiteKey::from_hex(new).with_context(bad)?;
        let sig = Signature::from_hex(sig).with_context(bad)?;
        out.push(Rotation { old, new, sig });
    }
    Ok(out)
}

fn rotation_line(r: &Rotation) -> String {
    format!("{} {} {}\n", r.old.to_hex(), r.new.to_hex(), r.sig.to_hex())
}

/// The keys in `state`, if a key was made there.
pub fn load(state: &Path) -> Result<Option<Keys>> {
    let path = state.join(KEY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("Failed to read {}", path.display())),
    };
    let signer = parse_secret(&text, &path)?;
    let rpath = state.join(ROTATIONS_FILE);
    let rotations = match std::fs::read_to_string(&rpath) {
        Ok(t) => parse_rotations(&t, &rpath)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("Failed to read {}", rpath.display())),
    };
    if let Some(last) = rotations.last() {
        if last.new != signer.key() {
            bail!(
                "{} ends with key {}, but {} holds key {}: restore both from the same backup",
                rpath.display(),
                last.new.fingerprint(),
                path.display(),
                signer.key().fingerprint()
            );
        }
    }
    Ok(Some(Keys { signer, rotations }))
}

/// Makes a new site key in `state`; refuses when one exists (that is `rotate`'s job).
pub fn generate(state: &Path) -> Result<Keys> {
    std::fs::create_dir_all(state)
        .with_context(|| format!("Failed to create state directory {}", state.display()))?;
    if let Some(k) = load(state)? {
        bail!(
            "{} already holds a site key ({}); use `rotate-key` to replace it",
            state.display(),
            k.key().fingerprint()
        );
    }
    let signer = SiteSigner::generate();
    let secret = format!("{}\n", hex(&signer.secret()));
    if !write_private(state, KEY_FILE, secret.as_bytes(), false)? {
        bail!("{} already holds a site key", state.display());
    }
    Ok(Keys {
        signer,
        rotations: Vec::new(),
    })
}

/// The keys in `state`, made on first use.
pub fn load_or_generate(state: &Path) -> Result<(Keys, bool)> {
    if let Some(k) = load(state)? {
        return Ok((k, false));
    }
    match generate(state) {
        Ok(k) => Ok((k, true)),
        // Made by another process in the meantime.
        Err(e) => load(state)?.map(|k| (k, false)).ok_or(e),
    }
}

/// Replaces the site key with a new one, signed by the old.
pub fn rotate(state: &Path, site: SiteId) -> Result<Keys> {
    let Some(old) = load(state)? else {
        bail!(
            "{} holds no site key to rotate; `keygen` makes the first",
            state.display()
        );
    };
    let signer = SiteSigner::generate();
    let r = old.signer.rotate_to(site, &signer.key());
    let mut rotations = old.rotations;
    rotations.push(r);
    // The log first: if the key write is lost, the log's last key mismatches and `load` says
    // so, rather than the site silently signing with a key no rotation vouches for.
    let log: String = rotations.iter().map(rotation_line).collect();
    write_private(state, ROTATIONS_FILE, log.as_bytes(), true)?;
    let secret = format!("{}\n", hex(&signer.secret()));
    write_private(state, KEY_FILE, secret.as_bytes(), true)?;
    Ok(Keys { signer, rotations })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_and_rotations_chain() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteId([1; 16]);
        assert!(load(dir.path()).unwrap().is_none());
        let k1 = generate(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key file mode {mode:o}");
        assert!(generate(dir.path()).is_err());
        let k2 = rotate(dir.path(), site).unwrap();
        let k3 = rotate(dir.path(), site).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.key(), k3.key());
        assert_eq!(back.rotations.len(), 2);
        let pin = tamizdat_protocol::Trust::Fingerprint(k1.key().fingerprint());
        assert_eq!(
            tamizdat_protocol::sign::follow(site, pin, &k3.key(), &back.rotations),
            Ok(k3.key())
        );
        assert_ne!(k2.key(), k3.key());
        // A key file and log from different backups are refused, not trusted.
        std::fs::write(
            dir.path().join(KEY_FILE),
            format!("{}\n", hex(&k1.signer.secret())),
        )
        .unwrap();
        assert!(load(dir.path()).is_err());
    }
}
