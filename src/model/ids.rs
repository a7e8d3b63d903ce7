//! Identifiers that cross the API boundary, parsed once into newtypes so that the rest of the
//! code never handles an unchecked organization name or hash.

use std::fmt;

/// An organization name: `[a-z0-9-]`, 1 to 64 characters, not starting or ending with `-`.
/// It appears in API paths and render URLs, so it must be URL-safe as is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgName(String);

impl OrgName {
    /// Parses a name from a path or request body.
    pub fn parse(raw: &str) -> Result<OrgName, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(OrgName(raw.to_string()))
        } else {
            Err(format!(
                "organization name '{}' is invalid: use 1 to 64 characters of a-z, 0-9 and '-'",
                truncate(raw, 80)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fewest characters of an image hash that name the image (URLs, `short_hash`).
pub const SHORTEST_PREFIX: usize = 6;

/// A full or short image hash as given by a client: 6 to 40 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPrefix(String);

impl HashPrefix {
    /// Parses a client-supplied hash. Uppercase hex is folded to lowercase, since hashes are
    /// case-insensitive in practice and clients sometimes upper-case them.
    pub fn parse(raw: &str) -> Option<HashPrefix> {
        let ok = (SHORTEST_PREFIX..=40).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| HashPrefix(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when this is a full 40-character hash.
    pub fn is_full(&self) -> bool {
        self.0.len() == 40
    }
}

/// A SHA-1 hex digest of uploaded bytes (40 lowercase hex characters).
pub fn parse_binary_hash(raw: &str) -> Option<String> {
    (raw.len() == 40 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| raw.to_ascii_lowercase())
}

/// Shortens user input for inclusion in an error message.
pub fn truncate(raw: &str, max: usize) -> String {
    if raw.chars().count() <= max {
        raw.to_string()
    } else {
        let mut s: String = raw.chars().take(max).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_names_accept_lowercase_digits_and_dashes() {
        assert!(OrgName::parse("acme-2").is_ok());
        assert!(OrgName::parse("Acme").is_err());
        assert!(OrgName::parse("").is_err());
        assert!(OrgName::parse("-acme").is_err());
        assert!(OrgName::parse("a/b").is_err());
        assert!(OrgName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn hash_prefixes_are_six_to_forty_hex_characters() {
        assert!(HashPrefix::parse("abc123").is_some());
        assert!(HashPrefix::parse("abc12").is_none());
        assert!(HashPrefix::parse(&"a".repeat(41)).is_none());
        assert_eq!(
            HashPrefix::parse("ABCDEF").map(|h| h.0),
            Some("abcdef".into())
        );
        assert!(HashPrefix::parse("abcdeg").is_none());
    }
}
