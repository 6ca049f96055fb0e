//! Recoverable keys (SPEC §1): a secret sealed with AES-256-GCM under the deployment's
//! vault key (`KEYGATE_VAULT_KEY`), so an admin can be shown it again.
//!
//! The stored text is `v1:<hex of nonce ‖ ciphertext ‖ tag>`: a fresh random 96-bit nonce
//! per seal (at well under 2^32 seals per vault key, a random nonce never repeats in
//! practice), and the key id as associated data, so a sealed secret copied onto another
//! key's record does not open. Neither the vault key nor a sealed secret ever prints
//! itself: both redact their `Debug`.

use super::{hex_val, ApiKey, HEX};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};
use std::fmt;

/// The environment variable that holds the vault key: 32 bytes as 64 hex characters.
pub const VAULT_KEY_ENV: &str = "KEYGATE_VAULT_KEY";

/// Tag of the stored format, so a later format (or vault key rotation) can tell them apart.
const FORMAT_V1: &str = "v1:";
/// AES-256-GCM's tag.
const TAG_LEN: usize = 16;
/// The largest sealed secret accepted: a key of the longest prefix is 55 bytes; anything
/// far beyond that is not one of ours.
const MAX_PLAINTEXT: usize = 256;

/// Why a secret could not be sealed or opened. No variant holds a secret, a sealed
/// value or the vault key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("{VAULT_KEY_ENV} must be 64 hex characters (32 bytes)")]
    BadVaultKey,
    #[error("the stored secret is not in the sealed format (`v1:` and hex of nonce, ciphertext and tag)")]
    Malformed,
    #[error("the stored secret does not decrypt: {VAULT_KEY_ENV} is not the vault key that sealed it (or the record was altered)")]
    WrongVaultKey,
    #[error("the secret could not be sealed (the OS random source failed)")]
    Seal,
}

/// The vault key: AES-256-GCM, ready to seal and open. `Debug`/`Display` are redacted;
/// equality compares a fingerprint (so a reload can tell whether the key changed) and no
/// copy of the raw bytes is kept.
#[derive(Clone)]
pub struct VaultKey {
    key: LessSafeKey,
    fingerprint: [u8; 32],
}

impl VaultKey {
    /// 64 hex characters (either case). The error never repeats the value.
    pub fn from_hex(s: &str) -> Result<VaultKey, VaultError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(VaultError::BadVaultKey);
        }
        let mut raw = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let (Some(hi), Some(lo)) = (hex_val(pair[0]), hex_val(pair[1])) else {
                return Err(VaultError::BadVaultKey);
            };
            raw[i] = (hi << 4) | lo;
        }
        let unbound = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| VaultError::BadVaultKey)?;
        let fingerprint = Sha256::new()
            .chain_update(b"keygate vault key fingerprint\0")
            .chain_update(raw)
            .finalize()
            .into();
        raw.fill(0);
        Ok(VaultKey {
            key: LessSafeKey::new(unbound),
            fingerprint,
        })
    }

    /// Seals `secret` for the key `id`.
    pub fn seal(&self, id: &str, secret: &ApiKey) -> Result<SealedSecret, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| VaultError::Seal)?;
        let mut buf = secret.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| VaultError::Seal)?;
        let mut out = String::with_capacity(FORMAT_V1.len() + 2 * (NONCE_LEN + buf.len()));
        out.push_str(FORMAT_V1);
        push_hex(&mut out, &nonce);
        push_hex(&mut out, &buf);
        Ok(SealedSecret(out))
    }

    /// The secret sealed for the key `id`. A wrong vault key, another key's sealed secret
    /// or an altered record is an error, never a panic.
    pub fn open(&self, id: &str, sealed: &SealedSecret) -> Result<ApiKey, VaultError> {
        let mut bytes = sealed.decode()?;
        let (nonce, body) = bytes.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Malformed)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), body)
            .map_err(|_| VaultError::WrongVaultKey)?;
        // Authenticated, so this is what was sealed: a secret, which is ASCII.
        let secret = std::str::from_utf8(plain).map_err(|_| VaultError::Malformed)?;
        Ok(ApiKey(secret.to_owned()))
    }
}

impl PartialEq for VaultKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for VaultKey {}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey(<redacted>)")
    }
}

impl fmt::Display for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret as the store keeps it, sealed (`v1:<hex>`). Encrypted, but still kept out of
/// logs: `Debug` shows only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(String);

impl SealedSecret {
    /// A value read from the store, as it is: a damaged one fails when opened, and must
    /// not make the rest of its key record unreadable.
    pub fn from_stored(s: String) -> SealedSecret {
        SealedSecret(s)
    }

    /// A value from outside (an import): refused unless it has the sealed format.
    pub fn parse(s: &str) -> Result<SealedSecret, VaultError> {
        let sealed = SealedSecret(s.to_owned());
        sealed.decode()?;
        Ok(sealed)
    }

    /// The stored text (the store's JSON, an export).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Nonce ‖ ciphertext ‖ tag, checked for shape and size.
    fn decode(&self) -> Result<Vec<u8>, VaultError> {
        let hex = self
            .0
            .strip_prefix(FORMAT_V1)
            .ok_or(VaultError::Malformed)?
            .as_bytes();
        let len = hex.len() / 2;
        if hex.len() % 2 != 0
            || len <= NONCE_LEN + TAG_LEN
            || len > NONCE_LEN + MAX_PLAINTEXT + TAG_LEN
        {
            return Err(VaultError::Malformed);
        }
        hex.chunks_exact(2)
            .map(|p| Some((hex_val(p[0])? << 4) | hex_val(p[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or(VaultError::Malformed)
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedSecret(<redacted>)")
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyFormat;

    const HEX_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const HEX_B: &str = "ffeeddccbbaa99887766554433221100FFEEDDCCBBAA99887766554433221100";

    fn vault(hex: &str) -> VaultKey {
        VaultKey::from_hex(hex).expect("a valid vault key")
    }

    #[test]
    fn round_trip() {
        let v = vault(HEX_A);
        let secret = KeyFormat::new("kg").generate();
        let sealed = v.seal("key_abc", &secret).expect("seal");
        assert!(sealed.as_str().starts_with("v1:"));
        assert!(!sealed.as_str().contains(secret.expose()));
        assert_eq!(v.open("key_abc", &sealed), Ok(secret.clone()));
        // A fresh nonce each time: sealing twice never gives the same text.
        let again = v.seal("key_abc", &secret).expect("seal");
        assert_ne!(sealed, again);
        assert_eq!(v.open("key_abc", &again), Ok(secret));
        // As read back from a store, and as an import checks it.
        let stored = SealedSecret::from_stored(sealed.as_str().to_owned());
        assert_eq!(SealedSecret::parse(sealed.as_str()), Ok(stored));
    }

    #[test]
    fn a_wrong_vault_key_is_an_error() {
        let secret = KeyFormat::new("kg").generate();
        let sealed = vault(HEX_A).seal("key_abc", &secret).expect("seal");
        assert_eq!(
            vault(HEX_B).open("key_abc", &sealed),
            Err(VaultError::WrongVaultKey)
        );
    }

    #[test]
    fn a_sealed_secret_moved_to_another_id_does_not_open() {
        let v = vault(HEX_A);
        let sealed = v
            .seal("key_abc", &KeyFormat::new("kg").generate())
            .expect("seal");
        assert_eq!(v.open("key_abd", &sealed), Err(VaultError::WrongVaultKey));
    }

    #[test]
    fn tampered_ciphertext_does_not_open() {
        let v = vault(HEX_A);
        let sealed = v
            .seal("key_abc", &KeyFormat::new("kg").generate())
            .expect("seal");
        let text = sealed.as_str();
        // Flip one hex digit in the nonce, the ciphertext and the tag in turn.
        for at in [3 + 2, 3 + 2 * NONCE_LEN + 4, text.len() - 1] {
            let mut b = text.as_bytes().to_vec();
            b[at] = if b[at] == b'0' { b'1' } else { b'0' };
            let bad = SealedSecret::from_stored(String::from_utf8(b).expect("ascii"));
            assert_eq!(v.open("key_abc", &bad), Err(VaultError::WrongVaultKey));
        }
    }

    #[test]
    fn malformed_stored_text_is_refused() {
        let v = vault(HEX_A);
        let good = v
            .seal("key_abc", &KeyFormat::new("kg").generate())
            .expect("seal");
        let short = format!("v1:{}", "00".repeat(NONCE_LEN + TAG_LEN));
        let huge = format!(
            "v1:{}",
            "00".repeat(NONCE_LEN + MAX_PLAINTEXT + TAG_LEN + 1)
        );
        for bad in [
            "",
            "v1:",
            "v2:00",
            "kg_secretinclear",
            &good.as_str()[3..],
            &good.as_str()[..good.as_str().len() - 1],
            &good.as_str().replacen('0', "g", 1),
            &short,
            &huge,
        ] {
            assert_eq!(
                SealedSecret::parse(bad),
                Err(VaultError::Malformed),
                "{bad}"
            );
            let stored = SealedSecret::from_stored(bad.to_owned());
            assert!(v.open("key_abc", &stored).is_err(), "{bad}");
        }
    }

    #[test]
    fn vault_keys_must_be_64_hex_characters() {
        assert!(VaultKey::from_hex(HEX_B).is_ok(), "either case");
        for bad in [
            "",
            "00",
            &HEX_A[..63],
            &format!("{HEX_A}0"),
            &HEX_A.replace('a', "z"),
        ] {
            assert_eq!(
                VaultKey::from_hex(bad).map(|_| ()),
                Err(VaultError::BadVaultKey)
            );
        }
        assert_eq!(vault(HEX_A), vault(HEX_A));
        assert_ne!(vault(HEX_A), vault(HEX_B));
    }

    #[test]
    fn nothing_prints_a_secret_or_the_vault_key() {
        let v = vault(HEX_A);
        let secret = KeyFormat::new("kg").generate();
        let sealed = v.seal("key_abc", &secret).expect("seal");
        for shown in [
            format!("{v:?}"),
            format!("{v}"),
            format!("{sealed:?}"),
            VaultError::WrongVaultKey.to_string(),
        ] {
            assert!(!shown.contains(HEX_A), "{shown}");
            assert!(!shown.contains(sealed.as_str()), "{shown}");
            assert!(!shown.contains(secret.expose()), "{shown}");
        }
    }
}
