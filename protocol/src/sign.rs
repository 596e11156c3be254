//! Trust in the newsroom's key: what is signed, and how both ends check it.
//!
//! A site has one ed25519 signing key at a time, held by the distributor. Its public half is a
//! [`SiteKey`]; the join token carries its [`Fingerprint`], and a mirror pins the key on first
//! contact. Nothing a mirror applies is taken on the connection's word.
//!
//! ## The hash chain
//! Every changeset the distributor commits gets a *link*, a 32-byte digest of the link before
//! it and of what the changeset did:
//!
//! ```text
//! link(seq) = blake3("tamizdat/link/v1\0" ‖ site ‖ seq ‖ link(seq-1) ‖ ops_digest)
//! link(0)   = 32 zero bytes
//! ```
//!
//! A mirror keeps the link of the last changeset it applied (and says it in `Hello`).
//!
//! ## What is signed
//! The frame that completes a changeset (`last: true`) carries a [`Proof`]: the link the
//! changeset builds on (`prev`), the link the mirror holds once it is applied (`next`), and an
//! ed25519 signature over the [`Statement`]:
//!
//! ```text
//! "tamizdat/changeset/v1\0" ‖ site (16) ‖ seq (u64 le) ‖ base_seq (u64 le) ‖ kind (u8:
//! 0 live, 1 catch-up, 2 full) ‖ prev (32) ‖ ops_digest (32) ‖ next (32)
//! ```
//!
//! `ops_digest` is blake3 over every op of the changeset, across all its frames, in order,
//! each encoded as (lengths are u32 le, integers little-endian):
//!
//! ```text
//! Put:    0x01 ‖ len ‖ path ‖ hash (32) ‖ size (u64) ‖ mode (u32) ‖ mtime (i64)
//! Delete: 0x02 ‖ len ‖ path
//! Move:   0x03 ‖ len ‖ from ‖ len ‖ to
//! ```
//!
//! - A live changeset has `next = link(seq)`, `prev = link(seq-1)`.
//! - A catch-up is signed when it is sent: `prev` is the link the mirror said it holds,
//!   `next = link(head)`, and the ops are the final state of every path changed since. The
//!   mirror refuses it unless `prev` is its own link.
//! - A full resync is signed the same way with `base_seq = 0` and `prev` the zero link: it
//!   replaces everything, so it builds on nothing; the mirror refuses one older than what it
//!   has applied (a replay would roll the site back).
//!
//! So a mirror refuses a changeset that is unsigned, signed by another key, altered (any op,
//! the sequence, the kind), replayed or reordered (its `prev` is not the mirror's link, or its
//! sequence does not follow), or one that skips a changeset in between. File bytes are named by
//! their blake3 hash inside the signed ops, and a mirror verifies every byte against that hash
//! before it is served; so every served byte was published under the site key.
//!
//! ## Key rotation
//! `Welcome` carries the site's current key and the chain of [`Rotation`]s since the first
//! key: each one is the new key signed by the old one
//! (`"tamizdat/rotate/v1\0" ‖ site ‖ old ‖ new`). A mirror that trusts an older key follows
//! the chain link by link, checking each signature, and then trusts the new key; no
//! re-enrolment. A key reached by no valid chain is refused.

use crate::{message::Mode, Op, SiteId};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A link of the hash chain.
pub type Link = [u8; 32];

/// The link before the first changeset.
pub const GENESIS: Link = [0; 32];

/// Lower-case hex of `bytes` (keys, signatures, site ids in files and logs).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from `2N` hex digits.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The public half of a site key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SiteKey(pub [u8; 32]);

impl SiteKey {
    /// What join tokens carry and logs show: 16 bytes of blake3 over the key.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = blake3::Hasher::new();
        h.update(b"tamizdat/key/v1\0");
        h.update(&self.0);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Fingerprint(out)
    }

    fn verifying(&self) -> Result<VerifyingKey, SignError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| SignError::InvalidKey(self.fingerprint()))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        unhex(s).map(Self)
    }
}

impl fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteKey({})", self.fingerprint())
    }
}

/// A site key's fingerprint, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        unhex(s).map(Self)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// An ed25519 signature (64 bytes on the wire, no length prefix).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        unhex(s).map(Self)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(64)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = a
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        d.deserialize_tuple(64, V)
    }
}

/// Carried by the frame that completes a changeset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The link the changeset builds on.
    pub prev: Link,
    /// The link the mirror holds once the changeset is applied.
    pub next: Link,
    pub sig: Signature,
}

/// A new site key, signed by the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub old: SiteKey,
    pub new: SiteKey,
    pub sig: Signature,
}

/// What a changeset's signature covers (see the module docs for the byte layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement {
    pub site: SiteId,
    pub seq: u64,
    pub base_seq: u64,
    pub kind: Mode,
    pub prev: Link,
    pub ops_digest: [u8; 32],
    pub next: Link,
}

impl Statement {
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160);
        b.extend_from_slice(b"tamizdat/changeset/v1\0");
        b.extend_from_slice(&self.site.0);
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.base_seq.to_le_bytes());
        b.push(match self.kind {
            Mode::Live => 0,
            Mode::CatchUp => 1,
            Mode::Full => 2,
        });
        b.extend_from_slice(&self.prev);
        b.extend_from_slice(&self.ops_digest);
        b.extend_from_slice(&self.next);
        b
    }
}

fn rotation_bytes(site: SiteId, old: &SiteKey, new: &SiteKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(100);
    b.extend_from_slice(b"tamizdat/rotate/v1\0");
    b.extend_from_slice(&site.0);
    b.extend_from_slice(&old.0);
    b.extend_from_slice(&new.0);
    b
}

/// The link of a live changeset.
pub fn link(site: SiteId, seq: u64, prev: &Link, ops_digest: &[u8; 32]) -> Link {
    let mut h = blake3::Hasher::new();
    h.update(b"tamizdat/link/v1\0");
    h.update(&site.0);
    h.update(&seq.to_le_bytes());
    h.update(prev);
    h.update(ops_digest);
    *h.finalize().as_bytes()
}

/// `ops_digest`, fed one op at a time (a changeset's ops may span many frames).
#[derive(Clone, Default)]
pub struct OpsDigest(blake3::Hasher);

impl OpsDigest {
    pub fn new() -> Self {
        Self::default()
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.update(&(b.len() as u32).to_le_bytes());
        self.0.update(b);
    }

    pub fn add(&mut self, op: &Op) {
        match op {
            Op::Put {
                path,
                hash,
                size,
                mode,
                mtime,
            } => {
                self.0.update(&[1]);
                self.bytes(path.as_str().as_bytes());
                self.0.update(&hash.0);
                self.0.update(&size.to_le_bytes());
                self.0.update(&mode.to_le_bytes());
                self.0.update(&mtime.to_le_bytes());
            }
            Op::Delete { path } => {
                self.0.update(&[2]);
                self.bytes(path.as_str().as_bytes());
            }
            Op::Move { from, to } => {
                self.0.update(&[3]);
                self.bytes(from.as_str().as_bytes());
                self.bytes(to.as_str().as_bytes());
            }
        }
    }

    /// The digest of a whole changeset's ops at once.
    pub fn of<'a>(ops: impl IntoIterator<Item = &'a Op>) -> [u8; 32] {
        let mut d = Self::new();
        d.add_all(ops);
        d.finish()
    }

    pub fn add_all<'a>(&mut self, ops: impl IntoIterator<Item = &'a Op>) {
        for op in ops {
            self.add(op);
        }
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Why a signature or key is refused. The texts are written for a volunteer reading a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the site key {0} is not a valid ed25519 key")]
    InvalidKey(Fingerprint),
    #[error("the signature does not verify against the site key {0}")]
    BadSignature(Fingerprint),
    #[error(
        "upstream presents site key {presented}, but this mirror trusts {trusted} (pinned from \
         its join token) and no signed key rotation leads from one to the other: it is not the \
         site this mirror was enrolled for, or the site re-keyed (then ask its operator for a \
         new join token)"
    )]
    Untrusted {
        presented: Fingerprint,
        trusted: Fingerprint,
    },
}

/// The distributor's side: the secret key.
pub struct SiteSigner(SigningKey);

impl SiteSigner {
    pub fn generate() -> Self {
        Self(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    /// The secret bytes, for the key file.
    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn key(&self) -> SiteKey {
        SiteKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, st: &Statement) -> Signature {
        Signature(self.0.sign(&st.bytes()).to_bytes())
    }

    /// Signs `new` as this key's successor.
    pub fn rotate_to(&self, site: SiteId, new: &SiteKey) -> Rotation {
        let old = self.key();
        Rotation {
            old,
            new: *new,
            sig: Signature(self.0.sign(&rotation_bytes(site, &old, new)).to_bytes()),
        }
    }
}

impl fmt::Debug for SiteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteSigner({})", self.key().fingerprint())
    }
}

/// Checks a changeset's signature.
pub fn verify(key: &SiteKey, st: &Statement, sig: &Signature) -> Result<(), SignError> {
    let vk = key.verifying()?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    vk.verify_strict(&st.bytes(), &sig)
        .map_err(|_| SignError::BadSignature(key.fingerprint()))
}

/// What a mirror trusts before it has seen a key: the fingerprint from its join token, or the
/// key it pinned since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    Fingerprint(Fingerprint),
    Key(SiteKey),
}

impl Trust {
    fn admits(&self, key: &SiteKey) -> bool {
        match self {
            Trust::Fingerprint(f) => key.fingerprint() == *f,
            Trust::Key(k) => k == key,
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        match self {
            Trust::Fingerprint(f) => *f,
            Trust::Key(k) => k.fingerprint(),
        }
    }
}

/// The key to trust when upstream presents `presented` with `rotations`: `presented` itself
/// if `trusted` admits it, or if a chain of valid rotations leads there from a key `trusted`
/// admits.
pub fn follow(
    site: SiteId,
    trusted: Trust,
    presented: &SiteKey,
    rotations: &[Rotation],
) -> Result<SiteKey, SignError> {
    let untrusted = || SignError::Untrusted {
        presented: presented.fingerprint(),
        trusted: trusted.fingerprint(),
    };
    let mut at = trusted;
    if !at.admits(presented) {
        for r in rotations {
            if !at.admits(&r.old) {
                continue;
            }
            let vk = r.old.verifying()?;
            let sig = ed25519_dalek::Signature::from_bytes(&r.sig.0);
            vk.verify_strict(&rotation_bytes(site, &r.old, &r.new), &sig)
                .map_err(|_| SignError::BadSignature(r.old.fingerprint()))?;
            at = Trust::Key(r.new);
        }
    }
    if at.admits(presented) {
        presented.verifying()?;
        Ok(*presented)
    } else {
        Err(untrusted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContentHash, SitePath};

    fn statement(ops: &[Op]) -> Statement {
        let ops_digest = OpsDigest::of(ops);
        let site = SiteId([3; 16]);
        Statement {
            site,
            seq: 7,
            base_seq: 6,
            kind: Mode::Live,
            prev: GENESIS,
            ops_digest,
            next: link(site, 7, &GENESIS, &ops_digest),
        }
    }

    fn put(p: &str, b: &[u8]) -> Op {
        Op::Put {
            path: SitePath::new(p).unwrap(),
            hash: ContentHash::of(b),
            size: b.len() as u64,
            mode: 0o644,
            mtime: 1,
        }
    }

    #[test]
    fn a_signature_covers_every_field_and_op() {
        let signer = SiteSigner::generate();
        let ops = vec![put("a.html", b"a"), put("b.html", b"b")];
        let st = statement(&ops);
        let sig = signer.sign(&st);
        verify(&signer.key(), &st, &sig).unwrap();
        let other = SiteSigner::generate();
        assert_eq!(
            verify(&other.key(), &st, &sig),
            Err(SignError::BadSignature(other.key().fingerprint()))
        );
        let variants = [
            Statement { seq: 8, ..st },
            Statement { base_seq: 5, ..st },
            Statement {
                kind: Mode::CatchUp,
                ..st
            },
            Statement {
                prev: [1; 32],
                ..st
            },
            Statement {
                next: [1; 32],
                ..st
            },
            Statement {
                site: SiteId([4; 16]),
                ..st
            },
            statement(&[put("a.html", b"a"), put("b.html", b"B")]),
            statement(&[put("b.html", b"b"), put("a.html", b"a")]),
            statement(&ops[..1]),
        ];
        for v in variants {
            assert!(verify(&signer.key(), &v, &sig).is_err(), "{v:?}");
        }
        let mut bent = sig;
        bent.0[10] ^= 1;
        assert!(verify(&signer.key(), &st, &bent).is_err());
    }

    #[test]
    fn ops_are_framed_so_boundaries_cannot_shift() {
        let mut a = OpsDigest::new();
        a.add(&Op::Move {
            from: SitePath::new("ab").unwrap(),
            to: SitePath::new("c").unwrap(),
        });
        let mut b = OpsDigest::new();
        b.add(&Op::Move {
            from: SitePath::new("a").unwrap(),
            to: SitePath::new("bc").unwrap(),
        });
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn rotations_are_followed_link_by_link() {
        let site = SiteId([9; 16]);
        let (k1, k2, k3) = (
            SiteSigner::generate(),
            SiteSigner::generate(),
            SiteSigner::generate(),
        );
        let r12 = k1.rotate_to(site, &k2.key());
        let r23 = k2.rotate_to(site, &k3.key());
        let pin = Trust::Fingerprint(k1.key().fingerprint());
        assert_eq!(follow(site, pin, &k1.key(), &[]), Ok(k1.key()));
        assert_eq!(follow(site, pin, &k3.key(), &[r12, r23]), Ok(k3.key()));
        assert_eq!(
            follow(site, Trust::Key(k2.key()), &k3.key(), &[r12, r23]),
            Ok(k3.key())
        );
        // A gap in the chain, a forged link, another site's rotation: refused.
        assert!(follow(site, pin, &k3.key(), &[r23]).is_err());
        let evil = SiteSigner::generate();
        let forged = Rotation {
            new: evil.key(),
            ..r12
        };
        assert_eq!(
            follow(site, pin, &evil.key(), &[forged]),
            Err(SignError::BadSignature(k1.key().fingerprint()))
        );
        assert!(follow(SiteId([8; 16]), pin, &k2.key(), &[r12]).is_err());
        let self_signed = evil.rotate_to(site, &evil.key());
        assert!(matches!(
            follow(site, pin, &evil.key(), &[self_signed]),
            Err(SignError::Untrusted { .. })
        ));
    }

    #[test]
    fn signature_encoding_is_64_bytes() {
        let sig = Signature([5; 64]);
        let enc = bincode::serde::encode_to_vec(sig, bincode::config::standard()).unwrap();
        assert_eq!(enc.len(), 64);
        let (back, _): (Signature, usize) =
            bincode::serde::decode_from_slice(&enc, bincode::config::standard()).unwrap();
        assert_eq!(back, sig);
    }
}
