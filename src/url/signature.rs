//! Signed render URLs (rokka API spec §6.7).
//!
//! A signature is the first 16 hex characters of SHA-256 over `path_and_query + ":" + key`,
//! where the query is the one sent minus its `sig` parameter. Clients disagree on what the
//! path is: rokka.js drops the SEO slug before signing and the PHP utilities do not, and a
//! client whose render host is `http://host:8081/{organization}` signs the organization
//! segment too. Verification therefore accepts any of those spellings of the same URL; none of
//! them lets a signature be moved to a different stack, image, option or query value.

use super::encoding;
use super::{Layout, MAX_PATH_BYTES};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Number of hex characters of the SHA-256 digest that make a signature.
const SIGNATURE_HEX_CHARS: usize = 16;

/// Why a signed URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The URL carries no `sig` parameter (or an empty one).
    #[error("this URL must be signed")]
    Missing,
    /// The signature does not match, or its `sigopts` cannot be read.
    #[error("invalid signature: {0}")]
    Invalid(String),
    /// The signature was valid but its `sigopts.until` lies in the past.
    #[error("signature expired")]
    Expired,
}

/// Signs a path and query (`/stack/hash.jpg?v=…`, no scheme or host): 16 lowercase hex chars.
pub fn sign(path_and_query: &str, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(path_and_query.as_bytes())
        .chain_update(b":")
        .chain_update(key.as_bytes())
        .finalize();
    let mut signature = hex::encode(digest);
    signature.truncate(SIGNATURE_HEX_CHARS);
    signature
}

/// Checks the `sig` (and `sigopts`) of a render request against the organization's keys.
///
/// `path` is the render path without organization, as given to
/// [`parse_render_path`](super::parse_render_path), and `raw_query` the query exactly as sent
/// (without `?`). The signed query is the sent one with every `sig` parameter removed, other
/// parameters kept in their order and encoding. A signature over the path with or without its
/// slug, and with or without a leading `/{org_prefix}`, is accepted. `now_unix` is compared with
/// `sigopts.until` only once the signature itself has matched.
pub fn verify_signature(
    path: &str,
    raw_query: Option<&str>,
    org_prefix: Option<&str>,
    keys: &[&str],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let raw_query = raw_query
        .map(|query| query.strip_prefix('?').unwrap_or(query))
        .unwrap_or("");
    if path.len() > MAX_PATH_BYTES || raw_query.len() > MAX_PATH_BYTES {
        return Err(SignatureError::Invalid("URL too long".to_owned()));
    }

    let mut sig = None;
    let mut sigopts = None;
    let mut kept = Vec::new();
    for piece in raw_query.split('&').filter(|piece| !piece.is_empty()) {
        let (raw_key, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
        match encoding::decode_query(raw_key).as_deref() {
            Some("sig") => {
                sig = Some(raw_value);
                continue;
            }
            Some("sigopts") => sigopts = Some(raw_value),
            _ => {}
        }
        kept.push(piece);
    }
    let provided = sig
        .and_then(encoding::decode_query)
        .filter(|sig| !sig.is_empty())
        .ok_or(SignatureError::Missing)?
        .to_ascii_lowercase();

    let signed_query = kept.join("&");
    let mut paths = vec![path.to_owned()];
    if let Some(bare) = Layout::of(path)
        .ok()
        .and_then(|layout| layout.without_slug())
    {
        paths.push(bare);
    }
    let prefixes = [None, org_prefix.filter(|org| !org.is_empty())];
    let matched = paths.iter().any(|path| {
        prefixes.iter().any(|prefix| {
            let mut candidate = match prefix {
                Some(org) => format!("/{org}{path}"),
                None => path.clone(),
            };
            if !signed_query.is_empty() {
                candidate.push('?');
                candidate.push_str(&signed_query);
            }
            keys.iter()
                .any(|key| constant_time_eq(sign(&candidate, key).as_bytes(), provided.as_bytes()))
        })
    });
    if !matched {
        return Err(SignatureError::Invalid(
            "signature does not match".to_owned(),
        ));
    }

    match sigopts.map(encoding::decode_query) {
        None => Ok(()),
        Some(None) => Err(invalid_options("not valid percent-encoded UTF-8")),
        Some(Some(json)) if json.is_empty() => Ok(()),
        Some(Some(json)) => check_until(&json, now_unix),
    }
}

/// Applies `sigopts` = `{"until": "<ISO-8601>"}`: an `until` before `now_unix` has expired.
fn check_until(json: &str, now_unix: i64) -> Result<(), SignatureError> {
    let options: serde_json::Value =
        serde_json::from_str(json).map_err(|_| invalid_options("not valid JSON"))?;
    let object = options
        .as_object()
        .ok_or_else(|| invalid_options("not a JSON object"))?;
    let Some(until) = object.get("until") else {
        return Ok(());
    };
    let until = until
        .as_str()
        .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
        .ok_or_else(|| invalid_options("`until` is not an ISO-8601 date-time"))?;
    let now_nanos = i128::from(now_unix) * 1_000_000_000;
    if until.unix_timestamp_nanos() < now_nanos {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

fn invalid_options(problem: &str) -> SignatureError {
    SignatureError::Invalid(format!("sigopts is {problem}"))
}

/// Compares two byte strings without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Builds the signed form of a render path and query the way rokka.js does, for the
/// `sign_url` utility endpoint: the query is re-serialized as `URLSearchParams` would, `sigopts`
/// is set to `{"until": …}` (or removed when `until` is `None`), any old `sig` is removed and
/// the new one appended last. Returns `path?query&sig=…`.
pub fn sign_path_and_query(
    path: &str,
    query: Option<&str>,
    key: &str,
    until: Option<OffsetDateTime>,
) -> Result<String, SignatureError> {
    let raw_query = query
        .map(|query| query.strip_prefix('?').unwrap_or(query))
        .unwrap_or("");
    let mut params: Vec<(String, String)> = encoding::query_pairs(raw_query)
        .map(|(key, value)| {
            (
                encoding::decode_query_lenient(key),
                encoding::decode_query_lenient(value),
            )
        })
        .filter(|(name, _)| name != "sig")
        .collect();

    let sigopts = match until {
        Some(until) => Some(serde_json::json!({ "until": iso_instant(until)? }).to_string()),
        None => None,
    };
    // `URLSearchParams.set`: replace the first occurrence in place, drop the others.
    let mut seen = false;
    params.retain(|(name, _)| name != "sigopts" || !std::mem::replace(&mut seen, true));
    let existing = params.iter().position(|(name, _)| name == "sigopts");
    match (sigopts, existing) {
        (Some(json), Some(index)) => {
            if let Some(slot) = params.get_mut(index) {
                slot.1 = json;
            }
        }
        (Some(json), None) => params.push(("sigopts".to_owned(), json)),
        (None, Some(index)) => {
            params.remove(index);
        }
        (None, None) => {}
    }

    let serialized = params
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                encoding::encode_form(name),
                encoding::encode_form(value)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let unsigned = if serialized.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{serialized}")
    };
    let signature = sign(&unsigned, key);
    let separator = if serialized.is_empty() { '?' } else { '&' };
    Ok(format!("{unsigned}{separator}sig={signature}"))
}

/// Formats an instant like JavaScript's `Date.toISOString()`: UTC, milliseconds, `Z`.
pub(crate) fn iso_instant(instant: OffsetDateTime) -> Result<String, SignatureError> {
    instant
        .to_offset(UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .map_err(|_| SignatureError::Invalid("`until` cannot be formatted".to_owned()))
}

/// Rounds `until` up to the next multiple of `step_secs` seconds since the epoch, as rokka.js
/// does (default 300 s) so that signed URLs made within one window are identical and cacheable.
/// A step of 1 s or less leaves `until` unchanged.
pub fn round_until_up(until: OffsetDateTime, step_secs: i64) -> OffsetDateTime {
    if step_secs <= 1 {
        return until;
    }
    let step_ms = i128::from(step_secs) * 1000;
    let millis = until.unix_timestamp_nanos().div_euclid(1_000_000);
    let rounded = (millis + step_ms - 1).div_euclid(step_ms) * step_ms;
    OffsetDateTime::from_unix_timestamp_nanos(rounded * 1_000_000).unwrap_or(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const KEY: &str = "OCOuisGe30QyocYkQN1SPErGGKunyuhZ";
    const SIGOPTS_2050: &str = "sigopts=%7B%22until%22%3A%222050-02-08T07%3A05%3A00.000Z%22%7D";
    /// 2024-01-01T00:00:00Z.
    const NOW: i64 = 1_704_067_200;

    #[test]
    fn signing_matches_the_plain_vector() {
        assert_eq!(sign("/dynamic/c1b110.jpg", KEY), "62e7a9ccd3dea053");
    }

    #[test]
    fn signing_matches_the_sigopts_vector() {
        let signed = format!("/dynamic/c1b110.jpg?{SIGOPTS_2050}");

        assert_eq!(sign(&signed, KEY), "0f6370995020ce81");
    }

    #[test]
    fn signing_matches_the_variables_vector() {
        assert_eq!(
            sign("/dynamic/c1b110.jpg?v=%7B%22a%22%3A%22b%22%7D", KEY),
            "9259f07089f76a05"
        );
    }

    #[test]
    fn a_correct_signature_verifies() {
        let result = verify_signature(
            "/dynamic/c1b110.jpg",
            Some("sig=62e7a9ccd3dea053"),
            None,
            &[KEY],
            NOW,
        );

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_signature_without_the_slug_verifies_the_url_with_slug() {
        let result = verify_signature(
            "/dynamic/c1b110/foo.jpg",
            Some("sig=62e7a9ccd3dea053"),
            None,
            &[KEY],
            NOW,
        );

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_signature_with_the_slug_verifies_too() {
        let sig = sign("/dynamic/c1b110/foo.jpg", KEY);

        let result = verify_signature(
            "/dynamic/c1b110/foo.jpg",
            Some(&format!("sig={sig}")),
            None,
            &[KEY],
            NOW,
        );

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_signature_over_the_organization_prefix_verifies() {
        let sig = sign("/myorg/dynamic/c1b110/foo.jpg", KEY);

        let with_prefix = verify_signature(
            "/dynamic/c1b110/foo.jpg",
            Some(&format!("sig={sig}")),
            Some("myorg"),
            &[KEY],
            NOW,
        );
        let without_prefix = verify_signature(
            "/dynamic/c1b110/foo.jpg",
            Some(&format!("sig={sig}")),
            None,
            &[KEY],
            NOW,
        );

        assert_eq!(with_prefix, Ok(()));
        assert!(matches!(without_prefix, Err(SignatureError::Invalid(_))));
    }

    #[test]
    fn a_signature_over_the_prefix_without_slug_verifies() {
        let sig = sign("/myorg/dynamic/c1b110.jpg", KEY);

        let result = verify_signature(
            "/dynamic/c1b110/foo.jpg",
            Some(&format!("sig={sig}")),
            Some("myorg"),
            &[KEY],
            NOW,
        );

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_missing_or_empty_signature_is_missing() {
        let absent = verify_signature("/dynamic/c1b110.jpg", None, None, &[KEY], NOW);
        let empty = verify_signature("/dynamic/c1b110.jpg", Some("a=1&sig="), None, &[KEY], NOW);

        assert_eq!(absent, Err(SignatureError::Missing));
        assert_eq!(empty, Err(SignatureError::Missing));
    }

    #[test]
    fn a_wrong_signature_is_invalid() {
        let result = verify_signature(
            "/dynamic/c1b110.jpg",
            Some("sig=62e7a9ccd3dea054"),
            None,
            &[KEY],
            NOW,
        );

        assert!(matches!(result, Err(SignatureError::Invalid(_))));
    }

    #[test]
    fn a_signature_for_another_image_is_invalid() {
        let result = verify_signature(
            "/dynamic/c1b111.jpg",
            Some("sig=62e7a9ccd3dea053"),
            None,
            &[KEY],
            NOW,
        );

        assert!(matches!(result, Err(SignatureError::Invalid(_))));
    }

    #[test]
    fn any_of_several_keys_may_have_signed() {
        let result = verify_signature(
            "/dynamic/c1b110.jpg",
            Some("sig=62e7a9ccd3dea053"),
            None,
            &["other-key", KEY],
            NOW,
        );

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn other_query_parameters_are_signed_as_sent_and_sig_need_not_be_last() {
        let result = verify_signature(
            "/dynamic/c1b110.jpg",
            Some("sig=9259f07089f76a05&v=%7B%22a%22%3A%22b%22%7D"),
            None,
            &[KEY],
            NOW,
        );

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_changed_query_value_breaks_the_signature() {
        let result = verify_signature(
            "/dynamic/c1b110.jpg",
            Some("v=%7B%22a%22%3A%22c%22%7D&sig=9259f07089f76a05"),
            None,
            &[KEY],
            NOW,
        );

        assert!(matches!(result, Err(SignatureError::Invalid(_))));
    }

    #[test]
    fn a_future_until_verifies() {
        let query = format!("{SIGOPTS_2050}&sig=0f6370995020ce81");

        let result = verify_signature("/dynamic/c1b110.jpg", Some(&query), None, &[KEY], NOW);

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_past_until_has_expired() {
        let query = format!("{SIGOPTS_2050}&sig=0f6370995020ce81");
        let after_2050 = 2_600_000_000;

        let result = verify_signature(
            "/dynamic/c1b110.jpg",
            Some(&query),
            None,
            &[KEY],
            after_2050,
        );

        assert_eq!(result, Err(SignatureError::Expired));
    }

    #[test]
    fn unreadable_sigopts_are_invalid_even_when_signed() {
        let path = "/dynamic/c1b110.jpg";
        let query = "sigopts=%7Bnot-json";
        let sig = sign(&format!("{path}?{query}"), KEY);

        let result = verify_signature(path, Some(&format!("{query}&sig={sig}")), None, &[KEY], NOW);

        assert!(matches!(result, Err(SignatureError::Invalid(_))));
    }

    #[test]
    fn a_sigopts_until_that_is_not_a_date_is_invalid() {
        let path = "/dynamic/c1b110.jpg";
        let query = "sigopts=%7B%22until%22%3A%22tomorrow%22%7D";
        let sig = sign(&format!("{path}?{query}"), KEY);

        let result = verify_signature(path, Some(&format!("{query}&sig={sig}")), None, &[KEY], NOW);

        assert!(matches!(result, Err(SignatureError::Invalid(_))));
    }

    #[test]
    fn verification_of_garbage_paths_does_not_panic() {
        for path in ["", "/", "//", ".jpg", "/x/%zz/.jpg", "/a/-b/c"] {
            let result = verify_signature(path, Some("sig=zz&&=&sigopts"), Some(""), &[KEY], NOW);

            assert!(result.is_err(), "{path}");
        }
    }

    #[test]
    fn signing_a_path_with_until_reproduces_the_vector() {
        let until = datetime!(2050-02-08 07:05:00 UTC);

        let signed = sign_path_and_query("/dynamic/c1b110.jpg", None, KEY, Some(until));

        assert_eq!(
            signed,
            Ok(format!(
                "/dynamic/c1b110.jpg?{SIGOPTS_2050}&sig=0f6370995020ce81"
            ))
        );
    }

    #[test]
    fn signing_a_path_replaces_an_old_signature() {
        let signed = sign_path_and_query(
            "/dynamic/c1b110.jpg",
            Some("sig=0000000000000000&v={\"a\":\"b\"}"),
            KEY,
            None,
        );

        assert_eq!(
            signed,
            Ok("/dynamic/c1b110.jpg?v=%7B%22a%22%3A%22b%22%7D&sig=9259f07089f76a05".to_owned())
        );
    }

    #[test]
    fn signing_a_path_replaces_sigopts_in_place() {
        let until = datetime!(2050-02-08 07:05:00 UTC);

        let signed = sign_path_and_query(
            "/s/c1b110.jpg",
            Some("sigopts=old&a=1&sigopts=older"),
            KEY,
            Some(until),
        )
        .unwrap_or_default();

        assert!(
            signed.starts_with(&format!("/s/c1b110.jpg?{SIGOPTS_2050}&a=1&sig=")),
            "{signed}"
        );
    }

    #[test]
    fn a_signed_path_verifies() {
        let until = datetime!(2030-01-01 00:00:00 UTC);
        let signed = sign_path_and_query("/stack/c1b110/name.jpg", Some("v=x"), KEY, Some(until))
            .unwrap_or_default();
        let (path, query) = signed.split_once('?').unwrap_or_default();

        let result = verify_signature(path, Some(query), None, &[KEY], NOW);

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn until_is_rounded_up_to_the_step() {
        let until = datetime!(2050-02-08 07:01:12.345 UTC);

        assert_eq!(
            round_until_up(until, 300),
            datetime!(2050-02-08 07:05:00 UTC)
        );
        assert_eq!(
            round_until_up(datetime!(2050-02-08 07:05:00 UTC), 300),
            datetime!(2050-02-08 07:05:00 UTC)
        );
        assert_eq!(round_until_up(until, 1), until);
    }

    #[test]
    fn instants_are_formatted_like_javascript() {
        let instant = datetime!(2050-02-08 09:05:00.5 +02:00);

        assert_eq!(
            iso_instant(instant).as_deref(),
            Ok("2050-02-08T07:05:00.500Z")
        );
    }
}
