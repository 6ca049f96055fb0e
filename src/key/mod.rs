//! API keys: the secret format of SPEC §1, its offline checks, and the public id.
//!
//! A secret is `<prefix>_<random><checksum>`: 32 base62 characters from the OS CSPRNG and
//! 6 base62 characters of CRC32 over `<prefix>_<random>`. The checksum lets the gateway
//! throw out typos and garbage before it hashes anything or asks the store.

mod base62;
pub mod vault;

use sha2::{Digest, Sha256};
use std::fmt;

pub use base62::{decode_u32, encode_u32_padded, is_base62};
pub use vault::{SealedSecret, VaultError, VaultKey, VAULT_KEY_ENV};

/// Length of the random part of a key.
pub const RANDOM_LEN: usize = 32;
/// Length of the checksum part of a key.
pub const CHECKSUM_LEN: usize = 6;
/// Length of the random part of a public key id (`key_` + this many base62 characters).
pub const ID_RANDOM_LEN: usize = 16;

/// Why a presented credential is not a well-formed key. All of these become 401
/// `malformed_key`; the variants exist for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key does not start with the configured prefix")]
    Prefix,
    #[error("key has the wrong length")]
    Length,
    #[error("key holds characters outside base62")]
    Charset,
    #[error("key checksum does not match")]
    Checksum,
}

/// A secret API key. It never prints itself: `Debug` and `Display` are redacted, so a
/// stray `{:?}` in a log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The secret itself, for the one place that must show it (create / rotate answers).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.0.as_bytes())
    }

    /// The prefix and the last 4 characters (`kg_…a1B2`): enough to tell keys apart,
    /// nothing to guess the rest from (the last 4 are checksum characters, derived from
    /// the random part, never more of it).
    pub fn hint(&self) -> String {
        let (prefix, rest) = self.0.rsplit_once('_').unwrap_or(("", &self.0));
        let tail = rest.len().saturating_sub(HINT_CHARS);
        format!("{prefix}_…{}", rest.get(tail..).unwrap_or_default())
    }
}

/// How many of a secret's last characters its hint shows.
pub const HINT_CHARS: usize = 4;

/// Whether `s` has the shape of a hint: `<prefix>_…` and 4 letters or digits.
pub fn is_hint(s: &str) -> bool {
    s.rsplit_once("_…").is_some_and(|(prefix, tail)| {
        !prefix.is_empty()
            && prefix.len() <= 16
            && prefix.bytes().all(|c| c.is_ascii_alphanumeric())
            && tail.len() == HINT_CHARS
            && tail.bytes().all(|c| c.is_ascii_alphanumeric())
    })
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `sha256(key)`: the only form of a key that is stored or moves between components.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

/// Feeds a hasher the first 8 bytes only: a sha256 is already uniform, and equality still
/// compares all 32. Maps keyed by it use a keyed hasher, so no one can aim keys at one
/// bucket.
impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

impl KeyHash {
    pub fn of(secret: &[u8]) -> Self {
        KeyHash(Sha256::digest(secret).into())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[(b >> 4) as usize]));
            s.push(char::from(HEX[(b & 0xf) as usize]));
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0])?;
            let lo = hex_val(pair[1])?;
            out[i] = (hi << 4) | lo;
        }
        Some(KeyHash(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but a short form keeps logs readable.
        write!(f, "KeyHash({}…)", &self.to_hex()[..12])
    }
}

/// The key format of one deployment: its prefix, and what that fixes about lengths.
#[derive(Debug, Clone)]
pub struct KeyFormat {
    prefix: String,
}

impl KeyFormat {
    /// `prefix` must already be validated by config (non-empty, `[A-Za-z0-9]`).
    pub fn new(prefix: &str) -> Self {
        KeyFormat {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Total length of a well-formed key.
    pub fn key_len(&self) -> usize {
        self.prefix.len() + 1 + RANDOM_LEN + CHECKSUM_LEN
    }

    /// A new key from the OS CSPRNG.
    pub fn generate(&self) -> ApiKey {
        let mut s = String::with_capacity(self.key_len());
        s.push_str(&self.prefix);
        s.push('_');
        base62::push_random(&mut s, RANDOM_LEN);
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&encode_u32_padded(crc));
        ApiKey(s)
    }

    /// Checks prefix, length, charset and checksum, with no allocation and no store
    /// lookup. On success the presented string is returned, to be hashed.
    pub fn check<'a>(&self, presented: &'a str) -> Result<&'a str, KeyFormatError> {
        self.check_shape(presented)?;
        self.check_checksum(presented)?;
        Ok(presented)
    }

    /// Prefix, length and charset: everything but the checksum.
    pub fn check_shape<'a>(&self, presented: &'a str) -> Result<&'a str, KeyFormatError> {
        let bytes = presented.as_bytes();
        let p = self.prefix.as_bytes();
        // Length first: a 10 KB "key" costs nothing more than a short one.
        if bytes.len() != self.key_len() {
            return if bytes.starts_with(p) || bytes.len() < p.len() {
                Err(KeyFormatError::Length)
            } else {
                Err(KeyFormatError::Prefix)
            };
        }
        if !bytes.starts_with(p) || bytes[p.len()] != b'_' {
            return Err(KeyFormatError::Prefix);
        }
        let body = &bytes[p.len() + 1..];
        if !body.iter().all(|&c| is_base62(c)) {
            return Err(KeyFormatError::Charset);
        }
        Ok(presented)
    }

    /// The CRC32 at the end of a key that passed `check_shape`.
    pub fn check_checksum(&self, shaped: &str) -> Result<(), KeyFormatError> {
        let bytes = shaped.as_bytes();
        let Some(split) = bytes.len().checked_sub(CHECKSUM_LEN) else {
            return Err(KeyFormatError::Length);
        };
        let expected = crc32fast::hash(&bytes[..split]);
        match decode_u32(&bytes[split..]) {
            Some(got) if got == expected => Ok(()),
            _ => Err(KeyFormatError::Checksum),
        }
    }

    /// `check` then hash: a presented string on its way to a store lookup.
    pub fn check_and_hash(&self, presented: &str) -> Result<KeyHash, KeyFormatError> {
        self.check(presented).map(|k| KeyHash::of(k.as_bytes()))
    }
}

/// Appends `len` random base62 characters from the OS CSPRNG (admin tokens of the demo).
pub fn push_random_base62(out: &mut String, len: usize) {
    base62::push_random(out, len);
}

/// A new public key id, `key_<16 base62>`.
pub fn new_key_id() -> String {
    let mut s = String::with_capacity(4 + ID_RANDOM_LEN);
    s.push_str("key_");
    base62::push_random(&mut s, ID_RANDOM_LEN);
    s
}

/// Whether `s` has the shape of a key id (used to answer "unknown id" without a lookup).
pub fn is_key_id(s: &str) -> bool {
    s.strip_prefix("key_")
        .is_some_and(|r| !r.is_empty() && r.len() <= 64 && r.bytes().all(is_base62))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_the_prefix_and_the_last_four() {
        let key = KeyFormat::new("kg").generate();
        let hint = key.hint();
        let secret = key.expose();
        assert_eq!(hint, format!("kg_…{}", &secret[secret.len() - 4..]));
        assert!(is_hint(&hint));
        for bad in [
            "kg_…abc",
            "kg_…abcde",
            "kg…abcd",
            "_…abcd",
            "kg_…ab<d",
            "k g_…abcd",
        ] {
            assert!(!is_hint(bad), "{bad}");
        }
    }

    #[test]
    fn generated_keys_pass_the_check() {
        let f = KeyFormat::new("kg");
        for _ in 0..200 {
            let k = f.generate();
            assert_eq!(k.expose().len(), f.key_len());
            assert!(k.expose().starts_with("kg_"));
            assert_eq!(f.check(k.expose()), Ok(k.expose()));
        }
    }

    #[test]
    fn keys_are_distinct() {
        let f = KeyFormat::new("kg");
        let a = f.generate();
        let b = f.generate();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let f = KeyFormat::new("kg");
        let k = f.generate();
        let s = k.expose().to_string();
        for i in 3..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(b).expect("ascii");
            assert!(f.check(&typo).is_err(), "typo at {i} accepted");
        }
    }

    #[test]
    fn malformed_inputs() {
        let f = KeyFormat::new("kg");
        let k = f.generate();
        let s = k.expose();
        assert_eq!(f.check(""), Err(KeyFormatError::Length));
        assert_eq!(f.check(&"x".repeat(10_000)), Err(KeyFormatError::Prefix));
        assert_eq!(f.check(&format!("{s}a")), Err(KeyFormatError::Length));
        assert_eq!(
            f.check(&s.replacen("kg_", "zz_", 1)),
            Err(KeyFormatError::Prefix)
        );
        assert_eq!(
            f.check(&s.replacen("kg_", "kg-", 1)),
            Err(KeyFormatError::Prefix)
        );
        let mut bad = s.to_string();
        bad.replace_range(5..6, "!");
        assert_eq!(f.check(&bad), Err(KeyFormatError::Charset));
        // Non-ASCII of the right byte length.
        let mut na = s.to_string();
        na.replace_range(5..7, "é");
        assert_eq!(f.check(&na), Err(KeyFormatError::Charset));
    }

    #[test]
    fn secrets_do_not_print() {
        let k = KeyFormat::new("kg").generate();
        assert!(!format!("{k:?}").contains(k.expose()));
        assert!(!format!("{k}").contains(k.expose()));
    }

    #[test]
    fn hash_hex_round_trip() {
        let h = KeyHash::of(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(KeyHash::from_hex("zz"), None);
    }

    #[test]
    fn key_ids() {
        let id = new_key_id();
        assert!(is_key_id(&id));
        assert!(!is_key_id("key_"));
        assert!(!is_key_id("kg_abc"));
        assert!(!is_key_id("key_ab-c"));
    }
}
