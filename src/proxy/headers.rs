//! Header work on the way to the upstream and back: hop-by-hop removal, identity
//! redaction and injection, forwarding headers and the request id. Header names are
//! consts here, in one place.

use crate::auth::Principal;
use crate::identity::IdentityNames;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The request a forward-auth check asks about (SPEC §8): Traefik's names, then nginx's
/// (as its `auth_request` examples set them).
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// RFC 9110 §7.6.1 connection-specific fields, plus the legacy `proxy-connection`. A
/// static, not a const: a const array of names would be built and dropped at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// One of `HOP_BY_HOP` (a match on the name: cheaper than comparing it to each).
fn is_hop_by_hop(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Which of the headers the rewrite acts on a request carries, from one pass over its
/// names (`Seen::of`, on the headers as the client sent them). A lookup or removal hashes
/// the name; most requests carry none of these, and an absent one then costs nothing.
/// A flag may be stale-true after a removal (a lookup that finds nothing), never
/// stale-false: keygate adds none of these names before they are read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    pub request_id: bool,
    /// `Connection` (an upgrade, or names to remove as hop-by-hop).
    pub connection: bool,
    pub hop_by_hop: bool,
    /// A name under the identity prefix (a spoof to strip).
    pub identity: bool,
    /// `Forwarded` or `X-Real-IP`.
    pub forwarded: bool,
    pub forwarded_for: bool,
    /// The configured key header (`keys.header`), or a spelling of it with `_` for `-`.
    pub key_header: bool,
}

impl Seen {
    pub fn of(
        headers: &HeaderMap,
        identity: &IdentityNames,
        key_header: Option<&HeaderName>,
    ) -> Self {
        let mut seen = Seen::default();
        for n in headers.keys() {
            // Not else-if: a configured prefix or key header may overlap the fixed names.
            match n.as_str() {
                "x-request-id" => seen.request_id = true,
                "connection" => seen.connection = true,
                "forwarded" | "x-real-ip" => seen.forwarded = true,
                "x-forwarded-for" => seen.forwarded_for = true,
                _ => {}
            }
            seen.hop_by_hop |= is_hop_by_hop(n);
            seen.identity |= identity.is_identity_header(n);
            seen.key_header |= key_header.is_some_and(|k| crate::auth::same_header_name(n, k));
        }
        seen
    }
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
/// One pass over the names present: most messages carry none, and then nothing is looked
/// up or removed.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in listed {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Removes every client header under the identity prefix (any case, `_` as `-`), so a
/// client can never speak for keygate. Allocates only when there is something to remove.
pub fn strip_identity(headers: &mut HeaderMap, names: &IdentityNames) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| names.is_identity_header(n))
        .cloned()
        .collect();
    for n in spoofed {
        headers.remove(n);
    }
}

/// Adds the identity of an admitted request.
pub fn add_identity(headers: &mut HeaderMap, names: &IdentityNames, p: &Principal) {
    let id = &p.key.identity;
    headers.insert(names.key_id.clone(), id.key_id.clone());
    headers.insert(names.key_name.clone(), id.key_name.clone());
    headers.insert(names.org.clone(), id.org.clone());
    if let Some(ws) = &p.workspace {
        headers.insert(names.workspace.clone(), ws.clone());
    }
    // A static value: no copy, nothing stored per key.
    headers.insert(
        names.key_type.clone(),
        HeaderValue::from_static(p.key.facts.key_type.as_str()),
    );
    headers.insert(names.actor.clone(), id.actor.clone());
    headers.insert(names.permissions.clone(), id.permissions.clone());
}

/// Sets `X-Forwarded-For` (appended), `-Proto` and `-Host` (replaced).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    seen: &Seen,
    client: IpAddr,
    https: bool,
    host: Option<HeaderValue>,
) {
    // Other forwarding headers a client could set would contradict ours: upstreams that
    // read RFC 7239 `Forwarded` or `X-Real-IP` must not see client-chosen values.
    if seen.forwarded {
        headers.remove(header::FORWARDED);
        headers.remove(X_REAL_IP);
    }
    // The earlier hops (several XFF headers are folded into one list, in order), then the
    // client. The usual case, no earlier hop and an IPv4 client, is built on the stack:
    // the header value's copy is then its only allocation.
    let mut prev = seen
        .forwarded_for
        .then(|| headers.get_all(&X_FORWARDED_FOR).iter())
        .into_iter()
        .flatten()
        .filter_map(|v| v.to_str().ok())
        .peekable();
    let xff = match (prev.peek(), client) {
        (None, IpAddr::V4(v4)) => {
            let mut buf = [0u8; 15];
            let n = push_ipv4(&mut buf, v4);
            HeaderValue::from_bytes(&buf[..n])
        }
        _ => {
            let mut xff = String::with_capacity(48);
            for p in prev {
                xff.push_str(p);
                xff.push_str(", ");
            }
            push_ip(&mut xff, client);
            HeaderValue::from_maybe_shared(Bytes::from(xff))
        }
    };
    if let Ok(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    match host {
        Some(h) => headers.insert(X_FORWARDED_HOST, h),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// Appends `ip` as text.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let n = push_ipv4(&mut buf, v4);
            // Digits and dots only.
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Writes `ip` in dotted decimal without the formatting machinery (this runs per
/// request); returns the length (at most 15).
fn push_ipv4(out: &mut [u8; 15], ip: std::net::Ipv4Addr) -> usize {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            out[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            out[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        out[n] = b'0' + octet % 10;
        n += 1;
    }
    n
}

/// A request id unique to this process run: a random prefix and a counter, in hex. No
/// syscall, no lock and one allocation per request (the header value's own).
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<[u8; 12]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let mut b = [0u8; 6];
        // A failed CSPRNG only makes ids less unique across restarts; still unique within.
        let _ = getrandom::getrandom(&mut b);
        let mut hex = [0u8; 12];
        for (i, x) in b.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(x >> 4)];
            hex[2 * i + 1] = HEX[usize::from(x & 0xf)];
        }
        hex
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `prefix-counter`, the counter without leading zeros (at most 16 digits).
    let mut id = [0u8; 12 + 1 + 16];
    id[..12].copy_from_slice(prefix);
    id[12] = b'-';
    let digits = (16 - n.leading_zeros() as usize / 4).max(1);
    for i in 0..digits {
        id[13 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id[..13 + digits]).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The client's request id (kept when sane) or a new one.
pub fn request_id(headers: &HeaderMap, seen: &Seen) -> HeaderValue {
    if !seen.request_id {
        return new_request_id();
    }
    match headers.get(&X_REQUEST_ID) {
        Some(v) if !v.is_empty() && v.len() <= 128 && v.to_str().is_ok() => v.clone(),
        _ => new_request_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(h: &HeaderMap) -> Seen {
        Seen::of(h, &IdentityNames::new("x-keygate-"), None)
    }

    #[test]
    fn seen_flags_every_name_it_watches() {
        let s = seen(&HeaderMap::new());
        assert!(!(s.request_id || s.connection || s.hop_by_hop || s.identity));
        assert!(!(s.forwarded || s.forwarded_for || s.key_header));
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-request-id", "abc"),
            ("connection", "upgrade"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-keygate_org", "evil"),
            ("x-api-key", "k"),
        ] {
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let key_header = HeaderName::from_static("x-api-key");
        let s = Seen::of(&h, &IdentityNames::new("x-keygate-"), Some(&key_header));
        assert!(s.request_id && s.connection && s.hop_by_hop && s.forwarded);
        assert!(s.forwarded_for && s.identity && s.key_header);
        // A prefix that covers a fixed name flags both.
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        let s = Seen::of(&h, &IdentityNames::new("x-"), None);
        assert!(s.request_id && s.identity);
        let mut h = HeaderMap::new();
        h.insert(header::FORWARDED, HeaderValue::from_static("for=1.1.1.1"));
        assert!(seen(&h).forwarded && !seen(&h).forwarded_for);
    }

    #[test]
    fn hop_by_hop_and_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=6.6.6.6;host=evil"),
        );
        h.insert(X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        let s = seen(&h);
        set_forwarded(
            &mut h,
            &s,
            "127.0.0.1".parse().expect("ip"),
            false,
            Some(HeaderValue::from_static("api.example")),
        );
        assert_eq!(
            h.get(X_FORWARDED_FOR).map(|v| v.as_bytes()),
            Some(&b"1.1.1.1, 2.2.2.2, 127.0.0.1"[..])
        );
        assert_eq!(
            h.get(X_FORWARDED_PROTO).map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
        assert_eq!(
            h.get(X_FORWARDED_HOST).map(|v| v.as_bytes()),
            Some(&b"api.example"[..])
        );
        assert!(h.get(header::FORWARDED).is_none() && h.get(X_REAL_IP).is_none());
    }

    #[test]
    fn forwarded_for_without_earlier_hops() {
        for (ip, text) in [
            ("10.20.100.255", "10.20.100.255"),
            ("255.255.255.255", "255.255.255.255"),
            ("::1", "::1"),
        ] {
            let mut h = HeaderMap::new();
            set_forwarded(
                &mut h,
                &Seen::default(),
                ip.parse().expect("ip"),
                true,
                None,
            );
            assert_eq!(
                h.get(X_FORWARDED_FOR).map(|v| v.as_bytes()),
                Some(text.as_bytes())
            );
        }
    }

    #[test]
    fn ip_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "192.168.1.9",
            "::1",
            "2001:db8::7",
        ] {
            let mut s = String::new();
            push_ip(&mut s, ip.parse().expect("ip"));
            assert_eq!(s, ip);
        }
    }

    #[test]
    fn the_match_and_the_list_agree() {
        for n in &HOP_BY_HOP {
            assert!(is_hop_by_hop(n), "{n}");
        }
        for n in [
            "accept",
            "host",
            "x-te",
            "upgrade-insecure-requests",
            "connectionx",
        ] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(n)), "{n}");
        }
    }

    #[test]
    fn no_hop_by_hop_leaves_the_map_alone() {
        let mut h = HeaderMap::new();
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(!h.contains_key(header::UPGRADE));
    }

    #[test]
    fn request_ids_are_prefix_dash_counter_in_hex() {
        let a = new_request_id();
        let b = new_request_id();
        let (pa, na) = a.to_str().expect("ascii").split_once('-').expect("dash");
        let (pb, nb) = b.to_str().expect("ascii").split_once('-').expect("dash");
        assert_eq!(pa, pb);
        assert_eq!(pa.len(), 12);
        assert!(pa.bytes().all(|c| c.is_ascii_hexdigit()));
        let na = u64::from_str_radix(na, 16).expect("hex counter");
        let nb = u64::from_str_radix(nb, 16).expect("hex counter");
        assert!(nb > na, "{na} then {nb}");
    }

    #[test]
    fn request_ids_are_unique() {
        assert_ne!(new_request_id(), new_request_id());
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(request_id(&h, &seen(&h)), "abc");
        // Not seen: a new id.
        assert_ne!(request_id(&h, &Seen::default()), "abc");
    }
}

/// Numbers below this are answered from a table made once (`number`).
const SMALL_NUMBERS: usize = 1024;

/// A header value holding `n` in decimal. Below `SMALL_NUMBERS` (what rate limits, resets
/// and remaining counts mostly are) a copy from a table made once, which allocates
/// nothing; above, a new value.
pub fn number(n: u64) -> HeaderValue {
    static TABLE: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        // One string of every number's digits, made once for the process; each value is
        // a slice of it.
        let text: &'static str = Box::leak(
            (0..SMALL_NUMBERS)
                .map(|i| i.to_string())
                .collect::<String>()
                .into_boxed_str(),
        );
        let mut at = 0;
        (0..SMALL_NUMBERS)
            .map(|i| {
                let len = i.to_string().len();
                let v = HeaderValue::from_static(&text[at..at + len]);
                at += len;
                v
            })
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(test)]
mod number_tests {
    use super::number;

    #[test]
    fn numbers_are_their_decimal_digits_from_the_table_or_not() {
        for n in [0, 1, 9, 10, 99, 100, 1023, 1024, 1_000_000, u64::MAX] {
            assert_eq!(number(n).to_str().expect("ascii"), n.to_string());
        }
    }
}
