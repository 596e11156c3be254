//! Enrolment: `mirror add` makes a join token, `mirror revoke` shuts a mirror out. Only a
//! hash of each secret is stored. Commands write the state database directly; a running
//! distributor reads it on every connection and polls it for revocations, so neither needs a
//! restart.

use anyhow::{bail, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// A mirror's enrolment as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolled {
    pub name: String,
    pub created_ms: u64,
    pub revoked: bool,
    pub acked_seq: u64,
    pub last_seen_ms: u64,
    pub bytes_sent: u64,
}

/// Mirror names: what an operator types and logs show; nothing that needs quoting.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// Enrols `name` and returns its new secret. Re-adding a revoked name gives it a new secret.
pub fn add(c: &Connection, name: &str) -> Result<String> {
    if !valid_name(name) {
        bail!("a mirror name is 1 to 64 letters, digits, '-', '_' or '.'");
    }
    let existing: Option<bool> = c
        .query_row("SELECT revoked FROM mirrors WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    if existing == Some(false) {
        bail!("mirror '{name}' is already enrolled (revoke it first to issue a new token)");
    }
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    c.execute(
        "INSERT INTO mirrors(name, secret_hash, created_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET secret_hash = excluded.secret_hash, revoked = 0,
           created_ms = excluded.created_ms, acked_seq = 0",
        params![
            name,
            &secret_hash(&secret)[..],
            crate::index::now_ms() as i64
        ],
    )?;
    Ok(secret)
}

/// True when `name` is enrolled, not revoked, and `secret` is its secret (compared in
/// constant time).
pub fn authenticate(c: &Connection, name: &str, secret: &str) -> Result<bool> {
    let row: Option<(Vec<u8>, bool)> = c
        .query_row(
            "SELECT secret_hash, revoked FROM mirrors WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((stored, revoked)) = row else {
        return Ok(false);
    };
    let Ok(stored) = <[u8; 32]>::try_from(stored.as_slice()) else {
        return Ok(false);
    };
    // blake3::Hash's equality is constant-time.
    Ok(!revoked && blake3::Hash::from(stored) == blake3::Hash::from(secret_hash(secret)))
}

/// Revokes `name`; false when no such mirror is enrolled.
pub fn revoke(c: &Connection, name: &str) -> Result<bool> {
    Ok(c.execute(
        "UPDATE mirrors SET revoked = 1 WHERE name = ?1 AND revoked = 0",
        [name],
    )? > 0)
}

pub fn list(c: &Connection) -> Result<Vec<Enrolled>> {
    let mut st = c.prepare(
        "SELECT name, created_ms, revoked, acked_seq, last_seen_ms, bytes_sent
         FROM mirrors ORDER BY name",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Enrolled {
            name: r.get(0)?,
            created_ms: r.get::<_, i64>(1)? as u64,
            revoked: r.get(2)?,
            acked_seq: r.get::<_, i64>(3)? as u64,
            last_seen_ms: r.get::<_, i64>(4)? as u64,
            bytes_sent: r.get::<_, i64>(5)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records what a session reached, so lag survives a restart.
pub fn record(c: &Connection, name: &str, acked: u64, last_seen_ms: u64, bytes: u64) -> Result<()> {
    c.execute(
        "UPDATE mirrors SET acked_seq = MAX(acked_seq, ?2), last_seen_ms = ?3,
           bytes_sent = bytes_sent + ?4 WHERE name = ?1",
        params![name, acked as i64, last_seen_ms as i64, bytes as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrol_authenticate_revoke() {
        let d = tempfile::tempdir().unwrap();
        let idx = crate::index::Index::open(d.path()).unwrap();
        idx.with(|c| {
            assert!(add(c, "bad name").is_err());
            let s = add(c, "m1")?;
            assert!(add(c, "m1").is_err());
            assert!(authenticate(c, "m1", &s)?);
            assert!(!authenticate(c, "m1", "wrong")?);
            assert!(!authenticate(c, "m2", &s)?);
            assert!(revoke(c, "m1")?);
            assert!(!authenticate(c, "m1", &s)?);
            let s2 = add(c, "m1")?;
            assert!(authenticate(c, "m1", &s2)?);
            assert!(!authenticate(c, "m1", &s)?);
            let l = list(c)?;
            assert_eq!(l.len(), 1);
            // Only the hash is stored.
            let raw: Vec<u8> = c.query_row("SELECT secret_hash FROM mirrors", [], |r| r.get(0))?;
            assert_ne!(raw, s2.as_bytes());
            Ok(())
        })
        .unwrap();
    }
}
