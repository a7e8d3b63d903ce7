//! Percent-encoding as render URLs use it.
//!
//! Path segments and query values arrive percent-encoded. Decoding here is strict: a `%` not
//! followed by two hex digits, or bytes that are not UTF-8 after decoding, make the component
//! unreadable, because silently passing `%zz` through would let two different URLs mean the
//! same render. In the path `+` is a literal plus; in the query it is a space, as
//! `application/x-www-form-urlencoded` (what rokka clients produce through `URLSearchParams`)
//! defines it. The lenient decoder and the form encoder exist only to rebuild a query the way
//! a browser's `URLSearchParams` would when a URL is signed on the server side.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes `URLSearchParams` leaves unescaped: ASCII alphanumerics and `*-._` (space becomes `+`).
const FORM_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// Decodes one path segment (or part of one); `+` stays a plus. `None` if malformed.
pub(super) fn decode_path(raw: &str) -> Option<String> {
    decode_strict(raw, false)
}

/// Decodes one query key or value; `+` is a space. `None` if malformed.
pub(super) fn decode_query(raw: &str) -> Option<String> {
    decode_strict(raw, true)
}

fn decode_strict(raw: &str, plus_is_space: bool) -> Option<String> {
    let needs_work = raw.contains('%') || (plus_is_space && raw.contains('+'));
    if !needs_work {
        return Some(raw.to_owned());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'%' => {
                let high = hex_value(bytes.next()?)?;
                let low = hex_value(bytes.next()?)?;
                out.push(high << 4 | low);
            }
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes a query component the forgiving way `URLSearchParams` does: malformed escapes stay
/// as written and invalid UTF-8 becomes U+FFFD.
pub(super) fn decode_query_lenient(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Encodes a query component as `application/x-www-form-urlencoded` (`URLSearchParams`).
pub(super) fn encode_form(value: &str) -> String {
    utf8_percent_encode(value, FORM_UNRESERVED)
        .to_string()
        .replace("%20", "+")
}

/// Splits a raw query string into raw `(key, value)` pairs, in order; empty pieces (`a&&b`)
/// are skipped and a piece without `=` has an empty value.
pub(super) fn query_pairs(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    raw.split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_decoding_keeps_plus_and_decodes_brackets() {
        assert_eq!(decode_path("a+b%5Bx%5d").as_deref(), Some("a+b[x]"));
    }

    #[test]
    fn query_decoding_turns_plus_into_space() {
        assert_eq!(
            decode_query("Hello+-+World%21").as_deref(),
            Some("Hello - World!")
        );
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        assert_eq!(decode_path("%zz"), None);
        assert_eq!(decode_path("abc%4"), None);
        assert_eq!(decode_path("%"), None);
    }

    #[test]
    fn escapes_that_are_not_utf8_are_rejected() {
        assert_eq!(decode_path("%ff%fe"), None);
    }

    #[test]
    fn decoded_multibyte_text_survives() {
        assert_eq!(decode_path("gr%C3%BCn").as_deref(), Some("grün"));
        assert_eq!(decode_path("grün").as_deref(), Some("grün"));
    }

    #[test]
    fn form_encoding_matches_url_search_params() {
        let json = r#"{"until":"2050-02-08T07:05:00.000Z"}"#;

        assert_eq!(
            encode_form(json),
            "%7B%22until%22%3A%222050-02-08T07%3A05%3A00.000Z%22%7D"
        );
        assert_eq!(encode_form("a b*c~"), "a+b*c%7E");
    }

    #[test]
    fn query_pairs_skip_empty_pieces_and_allow_bare_keys() {
        let pairs: Vec<_> = query_pairs("a=1&&b&c=x=y").collect();

        assert_eq!(pairs, vec![("a", "1"), ("b", ""), ("c", "x=y")]);
    }

    #[test]
    fn lenient_decoding_keeps_malformed_escapes() {
        assert_eq!(decode_query_lenient("100%+sure%21"), "100% sure!");
    }
}
