//! The request path as the admin API reads it: path parameters percent-decoded, and the
//! path as it may be logged, any API key in it redacted.

use super::routes::Params;
use crate::auth::percent_decode;
use crate::error::AdminError;

/// Path parameters by name (empty when the route has none).
pub struct ParamValues {
    pub id: String,
    pub org: String,
    pub user: String,
}

impl ParamValues {
    /// The matched route's parameters, decoded. Segments arrive percent-encoded
    /// (`bob%40example.com`, as browsers and most clients encode `@`); the store knows the
    /// decoded names.
    pub(super) fn decode(params: &Params<'_>) -> Result<Self, AdminError> {
        let param = |name: &str| -> Result<String, AdminError> {
            let raw = params
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, v)| *v);
            decode_path_segment(raw).ok_or_else(|| {
                AdminError::invalid(
                    "path",
                    format!("`{name}` is not valid percent-encoded UTF-8"),
                )
            })
        };
        Ok(ParamValues {
            id: param("id")?,
            org: param("org")?,
            user: param("user")?,
        })
    }
}

/// The request path for a log line, any segment that may hold an API key replaced:
/// someone may paste a secret where a key id goes (`/v1/keys/kg_…`). A key is `<prefix>_`
/// and 38 letters and digits; a segment holds one when, percent-decoded, it has
/// `<prefix>_` (any case) followed by at least 30 of them. Key ids, names and orgs stay
/// readable.
pub(super) fn loggable_path(prefix: &str, path: &str) -> String {
    let marker = format!("{}_", prefix.to_ascii_lowercase());
    let holds_key = |seg: &str| {
        let seg = decode_path_segment(seg)
            .map_or_else(|| seg.to_ascii_lowercase(), |s| s.to_ascii_lowercase());
        seg.match_indices(&marker).any(|(i, m)| {
            seg.as_bytes()[i + m.len()..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .count()
                >= 30
        })
    };
    path.split('/')
        .map(|seg| if holds_key(seg) { "<redacted>" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// A path segment percent-decoded, as the admin API reads it: `+` is a literal in a path,
/// not a space as in a query.
fn decode_path_segment(raw: &str) -> Option<String> {
    percent_decode(&raw.replace('+', "%2B")).map(|v| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyFormat;

    #[test]
    fn a_key_in_the_path_is_not_logged() {
        let key = KeyFormat::new("kg").generate();
        let key = key.expose();
        assert_eq!(
            loggable_path("kg", &format!("/v1/keys/{key}/rotate")),
            "/v1/keys/<redacted>/rotate"
        );
        // Inside a segment, with `_` or the whole key percent-encoded, any case.
        let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        for seg in [
            format!("x.{key}.json"),
            key.replacen('_', "%5f", 1),
            encoded,
            key.to_ascii_uppercase(),
        ] {
            assert_eq!(
                loggable_path("kg", &format!("/v1/keys/{seg}")),
                "/v1/keys/<redacted>"
            );
        }
        // Ids, names and orgs stay, even with a prefix that is also a word's end.
        assert_eq!(loggable_path("kg", "/v1/keys/key_abc"), "/v1/keys/key_abc");
        assert_eq!(
            loggable_path("kg", "/v1/orgs/pkg_x/keys"),
            "/v1/orgs/pkg_x/keys"
        );
        let id = crate::key::new_key_id();
        assert_eq!(
            loggable_path("y", &format!("/v1/keys/{id}")),
            format!("/v1/keys/{id}")
        );
    }
}
