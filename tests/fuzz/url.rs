//! The render-URL grammar (`darkroom::url::parse_render_path`) and signed URLs
//! (`sign`/`verify_signature`). Inputs are `path[?query]` text, made from the URL grammar's
//! tokens or mutated from real render URLs. Besides "no panic", the properties are: parsing is
//! deterministic, and a URL signed with a key verifies with that key and no other.

use crate::engine::{fuzz, Harness, Outcome, Rng};
use darkroom::model::schema::OPERATIONS;
use darkroom::url::{parse_render_path, sign, verify_signature, UrlError, MAX_PATH_BYTES};

/// Render URLs as clients write them (rokka API spec §6), organization already stripped.
pub const SEEDS: &[&str] = &[
    "/dynamic/resize-width-200/c421f4e8d8c8a0ef3a7b1f9e4b5c6d7e8f9a0b1c.jpg",
    "/thumb/c421f4.png",
    "/thumb/c421f4e8/my-photo-v2.webp",
    "/dynamic/resize-width-10000-height-10000-mode-absolute/c421f4e8d8c8a0ef3a7b1f9e4b5c6d7e8f9a0b1c.avif",
    "/dynamic/resize-width-100--crop-width-50-height-50--options-dpr-2/c421f4.jpg",
    "/dynamic/composition-secondary_image-abcdef0123-mode-foreground/c421f4.png",
    "/thumb/v-w-300--o-autoformat-true/-_my_alias_-.jpg",
    "/thumb/-https%3A%2F%2Fblog.example%2Fx%2Fy.jpg-.jpg",
    "/thumb/-https://blog.example/x/y.jpg-/slug.jpg",
    "/thumb/c421f4.jpg?sig=0123456789abcdef&sigopts=%7B%22until%22%3A%222030-01-01T00%3A00%3A00Z%22%7D",
    "/thumb/c421f4.jpg?v=%7B%22w%22%3A300%7D",
    "/thumb/resize-width-[$w]/c421f4.jpg?v={\"w\":100}",
    "/dynamic/noop/c421f4.gif",
    "/dynamic/resize-width-__undefined__/c421f4.jpg",
];

pub fn dictionary() -> Vec<Vec<u8>> {
    let mut tokens: Vec<String> = [
        "/",
        "-",
        "--",
        ".",
        "?",
        "&",
        "=",
        "%",
        "%2F",
        "%00",
        "%ff",
        "%e2%82",
        "[",
        "]",
        "$",
        "-_",
        "_-",
        "v1",
        "v18446744073709551616",
        "dynamic",
        "options",
        "o",
        "variables",
        "v",
        "sig=",
        "sigopts=",
        "v=",
        "{}",
        "{\"a\":[",
        "jpg",
        "png",
        "webp",
        "avif",
        "gif",
        "blur",
        "__undefined__",
        "c421f4e8d8c8a0ef3a7b1f9e4b5c6d7e8f9a0b1c",
        "C421F4",
        "https://",
        "dpr-",
        "autoformat-true",
        "width",
        "height",
        "mode",
        "absolute",
        "1e308",
        "-1",
        "NaN",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for op in OPERATIONS {
        tokens.push(op.name.to_owned());
        tokens.extend(op.options.iter().map(|o| o.name.to_owned()));
    }
    tokens.into_iter().map(String::into_bytes).collect()
}

/// A render URL from the grammar, with every part chosen at random (often wrongly).
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let formats = [
        "jpg", "png", "webp", "avif", "gif", "JPG", "x", "toolong", "",
    ];
    let values = [
        "0",
        "1",
        "200",
        "10000",
        "-5",
        "1.5",
        "true",
        "abc",
        "[$w]",
        "%20",
        "__undefined__",
        "99999999999999999999",
    ];
    let mut path = String::from("/");
    path.push_str(one(rng, &["dynamic", "thumb", "a_b-c", "", "%41"]));
    for _ in 0..rng.below(4) {
        path.push('/');
        let parts = 1 + rng.below(4);
        for p in 0..parts {
            if p > 0 {
                path.push_str("--");
            }
            let op = rng.pick(OPERATIONS);
            let name = match rng.below(6) {
                0 => "options",
                1 => "v",
                2 => "o",
                _ => op.name,
            };
            path.push_str(name);
            for _ in 0..rng.below(4) {
                path.push('-');
                match op.options.get(rng.below(op.options.len() + 1)) {
                    Some(o) => path.push_str(o.name),
                    None => path.push_str("dpr"),
                }
                path.push('-');
                path.push_str(one(rng, &values));
            }
        }
    }
    path.push('/');
    let hex = "c421f4e8d8c8a0ef3a7b1f9e4b5c6d7e8f9a0b1c";
    match rng.below(4) {
        0 => path.push_str(&format!("-_alias{}_-", rng.below(10))),
        1 => path.push_str("-https://blog.example/a/b.jpg-"),
        _ => path.push_str(&hex[..6 + rng.below(35)]),
    }
    if rng.chance(3) {
        path.push_str(one(rng, &["/photo", "/photo-v3", "/v99", "/%ff"]));
    }
    path.push('.');
    path.push_str(one(rng, &formats));
    if rng.chance(3) {
        path.push('?');
        path.push_str(one(
            rng,
            &[
                "v=%7B%22w%22%3A1%7D",
                "v={",
                "sig=abc",
                "sigopts=%7B%7D",
                "a=b&&c",
            ],
        ));
    }
    path.into_bytes()
}

fn one<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

fn split(input: &[u8]) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(input);
    match text.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (text.into_owned(), None),
    }
}

fn parse_one(input: &[u8]) -> Outcome {
    let (path, query) = split(input);
    let first = parse_render_path(&path, query.as_deref());
    let again = parse_render_path(&path, query.as_deref());
    if first != again {
        return Err(format!("parsing twice differs: {first:?} then {again:?}"));
    }
    Ok(match first {
        Ok(req) => format!(
            "ok {} ops {} options {} vars {:?}",
            req.operations.len().min(4),
            req.options.len().min(4),
            req.variables.len().min(4),
            std::mem::discriminant(&req.image)
        ),
        Err(UrlError::NotFound(m)) => format!("404 {}", kind_of(&m)),
        Err(UrlError::Invalid(m)) => format!("400 {}", kind_of(&m)),
    })
}

/// The fixed words of an error message, without the quoted input, so that outcomes stay few.
fn kind_of(message: &str) -> String {
    let fixed = message.split('`').step_by(2).collect::<Vec<_>>().join("_");
    fixed.chars().take(30).collect()
}

/// A query whose pieces the verifier keeps exactly as sent (nothing empty, no `sig`) and that
/// carries no `sigopts`, whose JSON may rightly be refused.
fn plain_query(query: &str) -> bool {
    query.split('&').all(|piece| {
        !piece.is_empty()
            && piece
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_')
            && !matches!(piece.split('=').next(), Some("sig" | "sigopts"))
    })
}

fn sign_one(input: &[u8]) -> Outcome {
    let (path, query) = split(input);
    let key = "signing-key-0123";
    let now = 1_700_000_000;
    // Whatever is sent, verification answers without panicking.
    let checked = verify_signature(&path, query.as_deref(), Some("acme"), &[key], now);
    let query = query.unwrap_or_default();
    if path.len() + query.len() + 32 > MAX_PATH_BYTES || !plain_query(&query) && !query.is_empty() {
        return Ok(format!("sent {:?}", checked.err()));
    }
    let signed_text = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let sig = sign(&signed_text, key);
    let with_sig = if query.is_empty() {
        format!("sig={sig}")
    } else {
        format!("{query}&sig={sig}")
    };
    if let Err(e) = verify_signature(&path, Some(&with_sig), Some("acme"), &[key], now) {
        return Err(format!("a URL signed with the key is refused: {e}"));
    }
    if verify_signature(&path, Some(&with_sig), Some("acme"), &["other-key"], now).is_ok() {
        return Err("a URL signed with one key verifies with another".into());
    }
    let prefixed = format!("/acme{signed_text}");
    let org_sig = sign(&prefixed, key);
    let with_org_sig = if query.is_empty() {
        format!("sig={org_sig}")
    } else {
        format!("{query}&sig={org_sig}")
    };
    if let Err(e) = verify_signature(&path, Some(&with_org_sig), Some("acme"), &[key], now) {
        return Err(format!(
            "a URL signed with its organization prefix is refused: {e}"
        ));
    }
    Ok("signed".into())
}

fn seeds() -> Vec<Vec<u8>> {
    SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn render_urls_parse_without_panicking() {
    fuzz(
        Harness {
            name: "url",
            seeds: seeds(),
            dictionary: dictionary(),
            max_len: 2 * MAX_PATH_BYTES,
            fixup: None,
            generate: Some(generate),
            alloc_cap: crate::alloc::THREAD_CAP,
        },
        &mut parse_one,
    );
}

#[test]
fn signed_urls_verify_with_their_key_only() {
    fuzz(
        Harness {
            name: "signature",
            seeds: seeds(),
            dictionary: dictionary(),
            max_len: 2 * MAX_PATH_BYTES,
            fixup: None,
            generate: Some(generate),
            alloc_cap: crate::alloc::THREAD_CAP,
        },
        &mut sign_one,
    );
}
