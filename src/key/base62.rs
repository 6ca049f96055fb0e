//! Base62 (`0-9A-Za-z`, the GitHub token alphabet) for key bodies and checksums.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub fn is_base62(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

fn value(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'A'..=b'Z' => Some(u32::from(c - b'A') + 10),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 36),
        _ => None,
    }
}

/// `n` as exactly 6 base62 digits, most significant first (62^6 > 2^32).
pub fn encode_u32_padded(mut n: u32) -> String {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Inverse of `encode_u32_padded`; `None` on a bad digit or a value above `u32::MAX`.
pub fn decode_u32(s: &[u8]) -> Option<u32> {
    let mut n: u64 = 0;
    for &c in s {
        n = n * 62 + u64::from(value(c)?);
    }
    u32::try_from(n).ok()
}

/// Appends `len` uniformly random base62 characters from the OS CSPRNG.
/// Rejection sampling keeps the distribution uniform (256 is not a multiple of 62).
pub fn push_random(out: &mut String, len: usize) {
    let mut pushed = 0;
    let mut buf = [0u8; 64];
    while pushed < len {
        getrandom::getrandom(&mut buf).expect("the OS CSPRNG is available");
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would bias the first characters.
            if b < 248 && pushed < len {
                out.push(char::from(ALPHABET[(b % 62) as usize]));
                pushed += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for n in [0u32, 1, 61, 62, 12345, u32::MAX] {
            let s = encode_u32_padded(n);
            assert_eq!(s.len(), 6);
            assert_eq!(decode_u32(s.as_bytes()), Some(n));
        }
        assert_eq!(encode_u32_padded(0), "000000");
        assert_eq!(encode_u32_padded(61), "00000z");
        assert_eq!(decode_u32(b"zzzzzz"), None);
        assert_eq!(decode_u32(b"00-000"), None);
    }
}
