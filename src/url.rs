//! The render-URL grammar: turns a render path and its query into a typed [`RenderRequest`].
//!
//! The HTTP layer strips the organization before calling in, so a path here looks like
//! `/{stack}[/{override-seg}]*/{image}[/{slug}].{format}` (rokka API spec §6.2). This module is
//! pure: it knows nothing of stacks, images or formats that exist, only of syntax. It answers
//! [`UrlError::NotFound`] when the path cannot be a render URL at all (no image token, no
//! format) and [`UrlError::Invalid`] when it is one but a part is malformed; the HTTP layer maps
//! those to 404 and 400. Values stay strings ([`RawOperation`]); typing them against the
//! operation and option schemas is the job of the stack resolver.
//!
//! Signed URLs (§6.7) live in the `signature` submodule and are re-exported here, so that
//! `crate::url` stays the one entry point for everything a render URL carries.

mod encoding;
mod signature;

pub use signature::{round_until_up, sign, sign_path_and_query, verify_signature, SignatureError};

use crate::model::raw::RawOperation;
use serde_json::{Map, Value};

/// Longest accepted path (and, separately, query), in bytes. Real render URLs stay far below;
/// the bound keeps hostile input from costing more than a few microseconds.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Most `/`-separated segments in a path (remote image paths included).
pub const MAX_SEGMENTS: usize = 64;

/// Most `--`-separated parts across all override segments.
pub const MAX_PARTS: usize = 64;

/// Value rokka-render writes for falsy option values; it means "leave this option unset".
const UNDEFINED_VALUE: &str = "__undefined__";

/// Longest slice of user input quoted back in an error message.
const EXCERPT_CHARS: usize = 60;

/// Why a path is not a usable render request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The path is not a render URL (no stack, image token or format): answer 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// The path is a render URL but a part of it is malformed: answer 400.
    #[error("invalid render URL: {0}")]
    Invalid(String),
}

/// Which stack a render URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackRef {
    /// `dynamic`: the operations come from the URL itself.
    Dynamic,
    /// A stored stack, by name (`[A-Za-z0-9_-]+`).
    Named(String),
}

/// Which source image a render URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A full or short hash: 6 to 40 lowercase hex characters.
    Hash(String),
    /// An alias, written `-_name_-` in the URL; holds the bare name (`[A-Za-z0-9_]+`).
    Alias(String),
    /// A remote image, written `-…-`; holds the percent-decoded path or URL between the dashes,
    /// which may contain slashes (`https://blog.example/x/y.jpg`).
    Remote(String),
}

/// A render path parsed into its parts, values still untyped.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderRequest {
    /// The stack named by the first segment.
    pub stack: StackRef,
    /// For `dynamic`: the pipeline, in order. For a named stack: option overrides of that
    /// stack's operations, in order (later wins). `noop` parts are dropped.
    pub operations: Vec<RawOperation>,
    /// `o-`/`options-` pairs, in order (later wins).
    pub options: Vec<(String, String)>,
    /// `v-`/`variables-` path pairs (as JSON strings) merged with the `?v=` JSON object, which
    /// wins on conflicts.
    pub variables: Map<String, Value>,
    /// The source image.
    pub image: ImageRef,
    /// The decoded SEO filename segment after the image, if any; ignored for rendering.
    pub slug: Option<String>,
    /// Cache-busting token from a trailing `v{N}` at the end of the slug (`v1`, `name-v2`).
    pub version: Option<u64>,
    /// Output extension, lowercased; only its syntax (`[a-z0-9]{2,5}`) is checked here.
    pub format: String,
    /// Decoded `sig` query value, if present and not empty.
    pub sig: Option<String>,
    /// Decoded `sigopts` query value (JSON text, unvalidated), if present and not empty.
    pub sigopts: Option<String>,
}

/// Parses a render path (organization already stripped, still percent-encoded as received) and
/// its raw query string (without `?`; empty means none).
///
/// Unknown query parameters are ignored; several `v` parameters: the last one wins.
///
/// [`UrlError::NotFound`]: no leading `/`, no stack, no `.format` of 2–5 letters or digits, or no
/// image token (uppercase or over-long hex is not a hash, so it lands here too), an alias name
/// outside `[A-Za-z0-9_]`, a stack name outside `[A-Za-z0-9_-]`. [`UrlError::Invalid`]: bounds
/// exceeded, bad percent-encoding, empty segments or tokens, an odd key/value count, unbalanced
/// brackets, an overflowing version, a `?v=` that is not a JSON object.
pub fn parse_render_path(path: &str, query: Option<&str>) -> Result<RenderRequest, UrlError> {
    let layout = Layout::of(path)?;

    let stack = parse_stack(layout.stack)?;
    let mut parsed = Overrides::default();
    for segment in layout.override_segments() {
        parsed.add_segment(segment)?;
    }
    let image = layout.image()?;
    let slug = match layout.slug {
        Some(raw) => Some(decode_path_part(raw, "filename")?),
        None => None,
    };
    let version = match &slug {
        Some(slug) => version_of(slug)?,
        None => None,
    };
    let query = parse_query(query)?;

    let mut variables = parsed.variables;
    if let Some(json) = query.variables {
        variables.extend(json);
    }
    Ok(RenderRequest {
        stack,
        operations: parsed.operations,
        options: parsed.options,
        variables,
        image,
        slug,
        version,
        format: layout.format.to_ascii_lowercase(),
        sig: query.sig,
        sigopts: query.sigopts,
    })
}

/// Where the image token sits among the raw path segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageShape {
    Hash,
    Alias,
    Remote,
}

/// The raw structure of a render path: which segments are stack, overrides, image and slug.
///
/// Kept separate from value parsing so that signature checking can rebuild the slug-less path
/// from the exact bytes that were sent.
#[derive(Debug)]
struct Layout<'a> {
    /// Raw segments after the leading `/`, the last one cut before its format dot.
    segments: Vec<&'a str>,
    stack: &'a str,
    /// Index of the first and last segment of the image token.
    image_start: usize,
    image_end: usize,
    shape: ImageShape,
    slug: Option<&'a str>,
    format: &'a str,
}

impl<'a> Layout<'a> {
    fn of(path: &'a str) -> Result<Self, UrlError> {
        if path.len() > MAX_PATH_BYTES {
            return Err(UrlError::Invalid(format!(
                "path is longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| not_found("path does not start with '/'"))?;
        if rest.split('/').count() > MAX_SEGMENTS {
            return Err(UrlError::Invalid(format!(
                "path has more than {MAX_SEGMENTS} segments"
            )));
        }
        let mut segments: Vec<&str> = rest.split('/').collect();

        let last = segments.pop().unwrap_or_default();
        let (stem, format) = last
            .rsplit_once('.')
            .ok_or_else(|| not_found("path has no format extension"))?;
        if !is_format(format) {
            return Err(not_found(&format!(
                "`{}` is not a format extension",
                excerpt(format)
            )));
        }
        if stem.is_empty() {
            return Err(not_found("path has no image before the format extension"));
        }
        segments.push(stem);

        let stack = segments.first().copied().unwrap_or_default();
        if stack.is_empty() {
            return Err(not_found("path names no stack"));
        }
        if segments.len() < 2 {
            return Err(not_found("path names no image"));
        }
        let (image_start, image_end, shape) = locate_image(&segments)?;
        let slug = if image_end + 1 < segments.len() {
            Some(stem)
        } else {
            None
        };
        Ok(Layout {
            segments,
            stack,
            image_start,
            image_end,
            shape,
            slug,
            format,
        })
    }

    /// Segments between the stack and the image.
    fn override_segments(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.segments.iter().copied().take(self.image_start).skip(1)
    }

    /// The raw image token, segments rejoined with `/`.
    fn raw_image(&self) -> String {
        self.segments
            .iter()
            .copied()
            .take(self.image_end + 1)
            .skip(self.image_start)
            .collect::<Vec<_>>()
            .join("/")
    }

    fn image(&self) -> Result<ImageRef, UrlError> {
        let raw = self.raw_image();
        match self.shape {
            ImageShape::Hash => Ok(ImageRef::Hash(raw)),
            ImageShape::Alias => {
                let name = alias_name(&raw).ok_or_else(|| {
                    not_found(&format!("`{}` is not a valid alias", excerpt(&raw)))
                })?;
                Ok(ImageRef::Alias(name.to_owned()))
            }
            ImageShape::Remote => {
                let inner = remote_inner(&raw).ok_or_else(|| not_found("empty remote image"))?;
                Ok(ImageRef::Remote(decode_path_part(inner, "remote image")?))
            }
        }
    }

    /// The path as it would read without the slug (`/stack/hash/name.jpg` → `/stack/hash.jpg`),
    /// or `None` when there is no slug.
    fn without_slug(&self) -> Option<String> {
        self.slug?;
        let kept: Vec<&str> = self
            .segments
            .iter()
            .copied()
            .take(self.image_end + 1)
            .collect();
        Some(format!("/{}.{}", kept.join("/"), self.format))
    }
}

/// Finds the image token scanning from the right, allowing one slug segment after it.
///
/// Override parts never start with `-`, so any such segment after the stack must open an alias
/// or remote image; otherwise a hash followed by a slug is preferred over a hash alone, as the
/// rokka clients' URL patterns do (`/stack/c1b110/deadbeef.jpg` is image `c1b110`, slug
/// `deadbeef`). Returns (first segment, last segment, shape).
fn locate_image(segments: &[&str]) -> Result<(usize, usize, ImageShape), UrlError> {
    let last = segments.len().saturating_sub(1);
    let before_last = last.saturating_sub(1);
    let segment = |index: usize| segments.get(index).copied().unwrap_or_default();

    let dashed = (1..last).find(|&index| segment(index).starts_with('-'));
    if let Some(start) = dashed {
        if start == before_last && is_alias_shaped(segment(start)) {
            return Ok((start, start, ImageShape::Alias));
        }
        for end in [before_last, last] {
            if end >= start {
                let raw = segments
                    .get(start..=end)
                    .map(|parts| parts.join("/"))
                    .unwrap_or_default();
                if remote_inner(&raw).is_some() {
                    return Ok((start, end, ImageShape::Remote));
                }
            }
        }
        return Err(not_found(&format!(
            "remote image starting at `{}` has no closing '-'",
            excerpt(segment(start))
        )));
    }

    if before_last >= 1 && is_hash(segment(before_last)) {
        return Ok((before_last, before_last, ImageShape::Hash));
    }
    let stem = segment(last);
    if is_alias_shaped(stem) {
        return Ok((last, last, ImageShape::Alias));
    }
    if remote_inner(stem).is_some() {
        return Ok((last, last, ImageShape::Remote));
    }
    if is_hash(stem) {
        return Ok((last, last, ImageShape::Hash));
    }
    Err(not_found(&format!(
        "no image hash, alias or remote image in `{}`",
        excerpt(stem)
    )))
}

/// A full or short hash. Uppercase hex is deliberately not a hash: hashes are always written
/// lowercase, and accepting both would give one image two URLs (and two cache entries).
fn is_hash(token: &str) -> bool {
    (6..=40).contains(&token.len())
        && token
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

fn is_alias_shaped(token: &str) -> bool {
    token.len() >= 4 && token.starts_with("-_") && token.ends_with("_-")
}

/// The alias name inside `-_name_-`, if it is a valid name.
fn alias_name(token: &str) -> Option<&str> {
    let name = token.strip_prefix("-_")?.strip_suffix("_-")?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    valid.then_some(name)
}

/// The text between the dashes of a `-…-` remote token, if it is one. Any real path or URL
/// has a letter or digit in it; requiring one keeps runs of dashes (`---`) from being images.
fn remote_inner(token: &str) -> Option<&str> {
    let inner = token.strip_prefix('-')?.strip_suffix('-')?;
    inner
        .bytes()
        .any(|byte| byte.is_ascii_alphanumeric())
        .then_some(inner)
}

fn is_format(token: &str) -> bool {
    (2..=5).contains(&token.len()) && token.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

fn parse_stack(raw: &str) -> Result<StackRef, UrlError> {
    let name = decode_path_part(raw, "stack name")?;
    if name == "dynamic" {
        return Ok(StackRef::Dynamic);
    }
    let valid = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if !valid {
        return Err(not_found(&format!(
            "`{}` is not a stack name",
            excerpt(&name)
        )));
    }
    Ok(StackRef::Named(name))
}

/// Operations, options and variables collected from the override segments.
#[derive(Debug, Default)]
struct Overrides {
    operations: Vec<RawOperation>,
    options: Vec<(String, String)>,
    variables: Map<String, Value>,
    parts_seen: usize,
}

impl Overrides {
    fn add_segment(&mut self, raw: &str) -> Result<(), UrlError> {
        if raw.is_empty() {
            return Err(UrlError::Invalid("empty path segment".to_owned()));
        }
        for tokens in split_parts(raw)? {
            self.parts_seen += 1;
            if self.parts_seen > MAX_PARTS {
                return Err(UrlError::Invalid(format!(
                    "more than {MAX_PARTS} operation/option parts"
                )));
            }
            self.add_part(raw, &tokens)?;
        }
        Ok(())
    }

    fn add_part(&mut self, segment: &str, tokens: &[&str]) -> Result<(), UrlError> {
        let (raw_name, raw_pairs) = tokens
            .split_first()
            .ok_or_else(|| invalid_part("empty part", segment))?;
        let name = decode_path_part(raw_name, "operation name")?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid_part("bad or empty operation name", segment));
        }
        if raw_pairs.len() % 2 != 0 {
            return Err(invalid_part(
                &format!("`{name}` has a key without a value"),
                segment,
            ));
        }
        let mut pairs = Vec::with_capacity(raw_pairs.len() / 2);
        for pair in raw_pairs.chunks_exact(2) {
            let (raw_key, raw_value) = match pair {
                [key, value] => (*key, *value),
                _ => continue,
            };
            let key = decode_path_part(raw_key, "option name")?;
            let valid_key = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
            if !valid_key {
                return Err(invalid_part(
                    &format!("bad or empty option name in `{name}`"),
                    segment,
                ));
            }
            let value = decode_path_part(raw_value, "option value")?;
            if value.is_empty() {
                return Err(invalid_part(
                    &format!("`{name}` option `{key}` has an empty value"),
                    segment,
                ));
            }
            if value != UNDEFINED_VALUE {
                pairs.push((key, value));
            }
        }

        match name.as_str() {
            "o" | "options" => self.options.extend(pairs),
            "v" | "variables" => {
                for (key, value) in pairs {
                    self.variables.insert(key, Value::String(value));
                }
            }
            "noop" => {}
            _ => self.operations.push(RawOperation {
                name,
                options: pairs,
            }),
        }
        Ok(())
    }
}

/// Splits one override segment into parts (`--`) and each part into tokens (`-`), still raw.
///
/// A square-bracketed expression (`[image.width-10]`, also written `%5B…%5D`) is kept whole,
/// brackets included, so that a `-` inside it does not split the value and later code can
/// recognise the expression. Empty tokens are kept here and rejected by the caller, which is
/// how `a---b` and a trailing `--` end up invalid.
fn split_parts(segment: &str) -> Result<Vec<Vec<&str>>, UrlError> {
    let bytes = segment.as_bytes();
    let mut parts = Vec::new();
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        let rest = bytes.get(index..).unwrap_or_default();
        if rest.starts_with(b"[") || starts_with_escape(rest, b"%5B") {
            depth += 1;
            index += if rest.starts_with(b"[") { 1 } else { 3 };
        } else if rest.starts_with(b"]") || starts_with_escape(rest, b"%5D") {
            depth = depth
                .checked_sub(1)
                .ok_or_else(|| invalid_part("']' without '['", segment))?;
            index += if rest.starts_with(b"]") { 1 } else { 3 };
        } else if depth == 0 && rest.starts_with(b"-") {
            tokens.push(segment.get(start..index).unwrap_or_default());
            if rest.starts_with(b"--") {
                parts.push(std::mem::take(&mut tokens));
                index += 2;
            } else {
                index += 1;
            }
            start = index;
        } else {
            index += 1;
        }
    }
    if depth != 0 {
        return Err(invalid_part("'[' without ']'", segment));
    }
    tokens.push(segment.get(start..).unwrap_or_default());
    parts.push(tokens);
    Ok(parts)
}

fn starts_with_escape(rest: &[u8], escape: &[u8; 3]) -> bool {
    rest.get(..3)
        .is_some_and(|head| head.eq_ignore_ascii_case(escape))
}

/// The version from a trailing `v{digits}`: the whole slug, or after a `-`/`_` in it.
fn version_of(slug: &str) -> Result<Option<u64>, UrlError> {
    let Some(v_index) = slug.rfind('v') else {
        return Ok(None);
    };
    let (head, tail) = slug.split_at(v_index);
    let digits = tail.get(1..).unwrap_or_default();
    let separated = head.is_empty() || head.ends_with('-') || head.ends_with('_');
    if !separated || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    digits.parse().map(Some).map_err(|_| {
        UrlError::Invalid(format!(
            "version in filename `{}` is too large",
            excerpt(slug)
        ))
    })
}

/// The query parameters a render request cares about.
#[derive(Debug, Default)]
struct RenderQuery {
    variables: Option<Map<String, Value>>,
    sig: Option<String>,
    sigopts: Option<String>,
}

fn parse_query(query: Option<&str>) -> Result<RenderQuery, UrlError> {
    let raw = query
        .map(|q| q.strip_prefix('?').unwrap_or(q))
        .unwrap_or("");
    if raw.len() > MAX_PATH_BYTES {
        return Err(UrlError::Invalid(format!(
            "query is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    let mut parsed = RenderQuery::default();
    for (raw_key, raw_value) in encoding::query_pairs(raw) {
        // Unknown or undecodable keys are not ours to judge.
        let Some(key) = encoding::decode_query(raw_key) else {
            continue;
        };
        let slot = match key.as_str() {
            "v" | "sig" | "sigopts" => key,
            _ => continue,
        };
        let value = encoding::decode_query(raw_value).ok_or_else(|| {
            UrlError::Invalid(format!(
                "query parameter `{slot}` is not valid percent-encoded UTF-8"
            ))
        })?;
        let value = (!value.is_empty()).then_some(value);
        match slot.as_str() {
            "v" => parsed.variables = value.map(|json| variables_json(&json)).transpose()?,
            "sig" => parsed.sig = value,
            _ => parsed.sigopts = value,
        }
    }
    Ok(parsed)
}

fn variables_json(json: &str) -> Result<Map<String, Value>, UrlError> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(UrlError::Invalid(
            "query parameter `v` must be a JSON object".to_owned(),
        )),
        Err(error) => Err(UrlError::Invalid(format!(
            "query parameter `v` is not valid JSON: {error}"
        ))),
    }
}

fn decode_path_part(raw: &str, what: &str) -> Result<String, UrlError> {
    encoding::decode_path(raw).ok_or_else(|| {
        UrlError::Invalid(format!(
            "{what} `{}` is not valid percent-encoded UTF-8",
            excerpt(raw)
        ))
    })
}

fn not_found(message: &str) -> UrlError {
    UrlError::NotFound(message.to_owned())
}

fn invalid_part(problem: &str, segment: &str) -> UrlError {
    UrlError::Invalid(format!("{problem} in `{}`", excerpt(segment)))
}

/// At most [`EXCERPT_CHARS`] characters of user input, so messages stay short.
fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HASH: &str = "c421f4e8cefe0fd3aab22832f51e85bacda0a47a";

    fn parse(path: &str) -> RenderRequest {
        parse_render_path(path, None).expect("path should parse")
    }

    fn op(name: &str, options: &[(&str, &str)]) -> RawOperation {
        RawOperation {
            name: name.to_owned(),
            options: pairs(options),
        }
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn is_invalid(result: Result<RenderRequest, UrlError>) -> bool {
        matches!(result, Err(UrlError::Invalid(_)))
    }

    fn is_not_found(result: Result<RenderRequest, UrlError>) -> bool {
        matches!(result, Err(UrlError::NotFound(_)))
    }

    #[test]
    fn dynamic_operations_are_a_pipeline_in_url_order() {
        let request = parse(&format!(
            "/dynamic/resize-width-200-height-150--rotate-angle-90/{HASH}.jpg"
        ));

        assert_eq!(request.stack, StackRef::Dynamic);
        assert_eq!(
            request.operations,
            vec![
                op("resize", &[("width", "200"), ("height", "150")]),
                op("rotate", &[("angle", "90")]),
            ]
        );
        assert_eq!(request.image, ImageRef::Hash(HASH.to_owned()));
        assert_eq!(request.format, "jpg");
        assert_eq!(request.slug, None);
        assert_eq!(request.version, None);
    }

    #[test]
    fn named_stack_overrides_and_options_can_share_a_segment() {
        let request = parse(&format!(
            "/mystack/resize-width-200--options-dpr-2-autoformat-true/{HASH}.jpg"
        ));

        assert_eq!(request.stack, StackRef::Named("mystack".to_owned()));
        assert_eq!(request.operations, vec![op("resize", &[("width", "200")])]);
        assert_eq!(
            request.options,
            pairs(&[("dpr", "2"), ("autoformat", "true")])
        );
    }

    #[test]
    fn a_short_options_segment_sets_stack_options() {
        let request = parse(&format!("/small/o-dpr-2/{HASH}.jpg"));

        assert!(request.operations.is_empty());
        assert_eq!(request.options, pairs(&[("dpr", "2")]));
    }

    #[test]
    fn a_variables_segment_sets_string_variables() {
        let request = parse(&format!("/stack/v-w-1200-h-800/{HASH}.jpg"));

        assert_eq!(
            Value::Object(request.variables),
            json!({"w": "1200", "h": "800"})
        );
    }

    #[test]
    fn long_names_for_options_and_variables_work_as_segments_of_their_own() {
        let request = parse(&format!(
            "/stack/options-jpg.quality-60/variables-name-x/o-jpg.quality-70/{HASH}.png"
        ));

        assert_eq!(
            request.options,
            pairs(&[("jpg.quality", "60"), ("jpg.quality", "70")])
        );
        assert_eq!(Value::Object(request.variables), json!({"name": "x"}));
    }

    #[test]
    fn options_may_follow_dynamic_operations_in_the_same_segment() {
        let request = parse(&format!(
            "/dynamic/crop-width-300-height-200--options-dpr-2/{HASH}.webp"
        ));

        assert_eq!(
            request.operations,
            vec![op("crop", &[("width", "300"), ("height", "200")])]
        );
        assert_eq!(request.options, pairs(&[("dpr", "2")]));
        assert_eq!(request.format, "webp");
    }

    #[test]
    fn a_bracketed_expression_is_one_token_with_its_brackets() {
        let request = parse(&format!(
            "/dynamic/crop-anchor-face-width-[image.detection_face.height*1.5]-height-[image.height-10]/{HASH}.jpg"
        ));

        assert_eq!(
            request.operations,
            vec![op(
                "crop",
                &[
                    ("anchor", "face"),
                    ("width", "[image.detection_face.height*1.5]"),
                    ("height", "[image.height-10]"),
                ]
            )]
        );
    }

    #[test]
    fn an_encoded_bracketed_expression_is_decoded_and_kept_whole() {
        let request = parse(&format!(
            "/dynamic/resize-width-%5Bimage.width-2%2A10%5D--rotate-angle-90/{HASH}.jpg"
        ));

        assert_eq!(
            request.operations,
            vec![
                op("resize", &[("width", "[image.width-2*10]")]),
                op("rotate", &[("angle", "90")]),
            ]
        );
    }

    #[test]
    fn an_encoded_dash_does_not_split_a_value() {
        let request = parse(&format!("/stack/v-text-a%2Db/{HASH}.jpg"));

        assert_eq!(Value::Object(request.variables), json!({"text": "a-b"}));
    }

    #[test]
    fn encoded_values_are_decoded_and_plus_stays_a_plus() {
        let request = parse(&format!("/stack/v-name-gr%C3%BCn+blau/{HASH}.jpg"));

        assert_eq!(
            Value::Object(request.variables),
            json!({"name": "grün+blau"})
        );
    }

    #[test]
    fn undefined_values_leave_the_option_unset() {
        let request = parse(&format!(
            "/dynamic/resize-width-100-upscale-__undefined__--o-dpr-__undefined__/{HASH}.jpg"
        ));

        assert_eq!(request.operations, vec![op("resize", &[("width", "100")])]);
        assert!(request.options.is_empty());
    }

    #[test]
    fn noop_and_no_operations_both_mean_an_empty_pipeline() {
        let with_noop = parse(&format!("/dynamic/noop/{HASH}.jpg"));
        let without = parse(&format!("/dynamic/{HASH}.jpg"));
        let mixed = parse(&format!("/dynamic/noop--o-dpr-2/{HASH}.jpg"));

        assert!(with_noop.operations.is_empty());
        assert!(without.operations.is_empty());
        assert!(mixed.operations.is_empty());
        assert_eq!(mixed.options, pairs(&[("dpr", "2")]));
    }

    #[test]
    fn an_operation_without_options_is_kept() {
        let request = parse(&format!("/dynamic/grayscale--blur-sigma-2/{HASH}.jpg"));

        assert_eq!(
            request.operations,
            vec![op("grayscale", &[]), op("blur", &[("sigma", "2")])]
        );
    }

    #[test]
    fn a_video_timestamp_option_keeps_its_colons() {
        let request = parse(&format!("/dynamic/o-timestamp-00:00:40/{HASH}.jpg"));

        assert_eq!(request.options, pairs(&[("timestamp", "00:00:40")]));
    }

    #[test]
    fn query_variables_are_merged_over_path_variables() {
        let request = parse_render_path(
            &format!("/stack/v-text-path-w-100/{HASH}.jpg"),
            Some("v=%7B%22text%22%3A%22Hello+-+World%22%2C%22n%22%3A3%7D"),
        )
        .expect("path should parse");

        assert_eq!(
            Value::Object(request.variables),
            json!({"text": "Hello - World", "w": "100", "n": 3})
        );
    }

    #[test]
    fn unencoded_query_json_is_accepted() {
        let request = parse_render_path(
            &format!("/stack/{HASH}.jpg"),
            Some(r#"v={"text":"Hello%20-%20World"}"#),
        )
        .expect("path should parse");

        assert_eq!(
            Value::Object(request.variables),
            json!({"text": "Hello - World"})
        );
    }

    #[test]
    fn query_variables_that_are_not_an_object_are_invalid() {
        let path = format!("/stack/{HASH}.jpg");

        assert!(is_invalid(parse_render_path(&path, Some("v=%5B1%5D"))));
        assert!(is_invalid(parse_render_path(&path, Some("v=%7Bbroken"))));
        assert!(is_invalid(parse_render_path(&path, Some("v=%zz"))));
    }

    #[test]
    fn empty_query_values_are_absent_and_unknown_parameters_ignored() {
        let request = parse_render_path(
            &format!("/stack/{HASH}.jpg"),
            Some("v=&sig=&sigopts&utm_source=%zz&x"),
        )
        .expect("path should parse");

        assert!(request.variables.is_empty());
        assert_eq!(request.sig, None);
        assert_eq!(request.sigopts, None);
    }

    #[test]
    fn signature_parameters_are_captured() {
        let request = parse_render_path(
            &format!("/stack/{HASH}.jpg"),
            Some("?sigopts=%7B%22until%22%3A%222050-02-08T07%3A05%3A00.000Z%22%7D&sig=0f6370995020ce81"),
        )
        .expect("path should parse");

        assert_eq!(request.sig.as_deref(), Some("0f6370995020ce81"));
        assert_eq!(
            request.sigopts.as_deref(),
            Some(r#"{"until":"2050-02-08T07:05:00.000Z"}"#)
        );
    }

    #[test]
    fn an_alias_stands_in_for_the_hash() {
        let request = parse("/resize/-_myalias_-.jpg");

        assert_eq!(request.stack, StackRef::Named("resize".to_owned()));
        assert_eq!(request.image, ImageRef::Alias("myalias".to_owned()));
        assert_eq!(request.slug, None);
    }

    #[test]
    fn an_alias_may_be_followed_by_a_slug() {
        let request = parse("/resize/o-dpr-2/-_my_alias_-/nice-name.png");

        assert_eq!(request.image, ImageRef::Alias("my_alias".to_owned()));
        assert_eq!(request.slug.as_deref(), Some("nice-name"));
        assert_eq!(request.options, pairs(&[("dpr", "2")]));
    }

    #[test]
    fn an_alias_with_forbidden_characters_is_not_found() {
        assert!(is_not_found(parse_render_path(
            "/resize/-_my.alias_-.jpg",
            None
        )));
        assert!(is_not_found(parse_render_path("/resize/-__-.jpg", None)));
    }

    #[test]
    fn a_remote_url_spans_segments_and_may_have_a_slug() {
        let request = parse("/somestack/-https://blog.example/x/y.jpg-/seo.jpg");

        assert_eq!(
            request.image,
            ImageRef::Remote("https://blog.example/x/y.jpg".to_owned())
        );
        assert_eq!(request.slug.as_deref(), Some("seo"));
        assert_eq!(request.format, "jpg");
    }

    #[test]
    fn a_remote_basepath_image_without_slug_keeps_its_own_extension() {
        let request = parse("/somestack/resize-width-100/-2017/06/Relax.jpg-.webp");

        assert_eq!(
            request.image,
            ImageRef::Remote("2017/06/Relax.jpg".to_owned())
        );
        assert_eq!(request.operations, vec![op("resize", &[("width", "100")])]);
        assert_eq!(request.slug, None);
        assert_eq!(request.format, "webp");
    }

    #[test]
    fn a_remote_video_frame_keeps_its_timestamp() {
        let request = parse("/somestack/-videos/c97fc8.mp4@00:00:22-/frame.jpg");

        assert_eq!(
            request.image,
            ImageRef::Remote("videos/c97fc8.mp4@00:00:22".to_owned())
        );
    }

    #[test]
    fn an_unterminated_remote_image_is_not_found() {
        assert!(is_not_found(parse_render_path(
            "/stack/-2017/06/Relax.jpg",
            None
        )));
        assert!(is_not_found(parse_render_path("/stack/--.jpg", None)));
    }

    #[test]
    fn short_and_full_hashes_are_accepted() {
        let short = parse("/dynamic/c1b110.jpg");
        let full = parse(&format!("/dynamic/{HASH}.jpg"));

        assert_eq!(short.image, ImageRef::Hash("c1b110".to_owned()));
        assert_eq!(full.image, ImageRef::Hash(HASH.to_owned()));
    }

    #[test]
    fn hashes_of_the_wrong_length_or_case_are_not_found() {
        assert!(is_not_found(parse_render_path("/dynamic/c1b11.jpg", None)));
        assert!(is_not_found(parse_render_path(
            &format!("/dynamic/{HASH}0.jpg"),
            None
        )));
        assert!(is_not_found(parse_render_path("/dynamic/C1B110.jpg", None)));
        assert!(is_not_found(parse_render_path("/dynamic/c1b11g.jpg", None)));
    }

    #[test]
    fn a_slug_after_the_hash_is_kept_apart() {
        let request = parse(&format!("/stack/{HASH}/my%20holiday.jpg"));

        assert_eq!(request.image, ImageRef::Hash(HASH.to_owned()));
        assert_eq!(request.slug.as_deref(), Some("my holiday"));
        assert_eq!(request.version, None);
    }

    #[test]
    fn a_hex_looking_slug_after_a_hash_is_a_slug() {
        let request = parse("/stack/c1b110/deadbeef.jpg");

        assert_eq!(request.image, ImageRef::Hash("c1b110".to_owned()));
        assert_eq!(request.slug.as_deref(), Some("deadbeef"));
        assert!(request.operations.is_empty());
    }

    #[test]
    fn a_slug_of_just_a_version_sets_the_version() {
        let request = parse(&format!("/stack/{HASH}/v1.jpg"));

        assert_eq!(request.slug.as_deref(), Some("v1"));
        assert_eq!(request.version, Some(1));
    }

    #[test]
    fn a_version_after_a_separator_in_the_slug_is_found() {
        let dashed = parse(&format!("/stack/{HASH}/some_name-v1.jpg"));
        let underscored = parse(&format!("/stack/{HASH}/name_v23.jpg"));

        assert_eq!(dashed.version, Some(1));
        assert_eq!(underscored.version, Some(23));
    }

    #[test]
    fn words_ending_in_v_and_digits_are_not_versions() {
        assert_eq!(parse(&format!("/stack/{HASH}/nav2.jpg")).version, None);
        assert_eq!(parse(&format!("/stack/{HASH}/name-v.jpg")).version, None);
        assert_eq!(parse(&format!("/stack/{HASH}/v1-final.jpg")).version, None);
    }

    #[test]
    fn without_a_slug_there_is_no_version() {
        let request = parse("/stack/v-a-1/c1b110.jpg");

        assert_eq!(request.version, None);
    }

    #[test]
    fn an_overflowing_version_is_invalid() {
        let path = format!("/stack/{HASH}/name-v99999999999999999999999.jpg");

        assert!(is_invalid(parse_render_path(&path, None)));
    }

    #[test]
    fn the_format_is_lowercased_and_special_extensions_pass() {
        assert_eq!(parse("/stack/c1b110.JPG").format, "jpg");
        assert_eq!(parse("/stack/c1b110.blur").format, "blur");
        assert_eq!(parse("/stack/c1b110.m3u8").format, "m3u8");
        assert_eq!(parse("/dynamic/c1b110/segment.ts").format, "ts");
    }

    #[test]
    fn a_missing_or_malformed_format_is_not_found() {
        assert!(is_not_found(parse_render_path("/stack/c1b110", None)));
        assert!(is_not_found(parse_render_path("/stack/c1b110.", None)));
        assert!(is_not_found(parse_render_path("/stack/c1b110.j", None)));
        assert!(is_not_found(parse_render_path(
            "/stack/c1b110.jpegxl",
            None
        )));
        assert!(is_not_found(parse_render_path("/stack/c1b110.jp-g", None)));
    }

    #[test]
    fn an_odd_number_of_tokens_is_invalid() {
        let result = parse_render_path(
            &format!("/dynamic/resize-width-200-height/{HASH}.jpg"),
            None,
        );

        assert!(is_invalid(result));
    }

    #[test]
    fn empty_tokens_parts_and_segments_are_invalid() {
        for overrides in [
            "resize-width-200--",
            "resize---rotate-angle-9",
            "resize-width-",
            "o-dpr--2",
        ] {
            let result = parse_render_path(&format!("/dynamic/{overrides}/{HASH}.jpg"), None);

            assert!(is_invalid(result), "{overrides}");
        }
        assert!(is_invalid(parse_render_path(
            &format!("/stack//{HASH}.jpg"),
            None
        )));
    }

    #[test]
    fn a_segment_starting_with_a_dash_must_open_an_image() {
        // Parts never start with `-`, so such a segment can only begin a remote image; when
        // none closes, there is no image at all.
        for overrides in ["--resize-width-1", "-", "---"] {
            let result = parse_render_path(&format!("/dynamic/{overrides}/{HASH}.jpg"), None);

            assert!(is_not_found(result), "{overrides}");
        }
    }

    #[test]
    fn unbalanced_brackets_are_invalid() {
        for overrides in [
            "crop-width-[image.width",
            "crop-width-image.width]",
            "crop-w-%5Bx-1",
        ] {
            let result = parse_render_path(&format!("/dynamic/{overrides}/{HASH}.jpg"), None);

            assert!(is_invalid(result), "{overrides}");
        }
    }

    #[test]
    fn bad_names_and_keys_are_invalid() {
        for overrides in ["res!ze-width-1", "resize-wi%20dth-1", "resize-w/h-1"] {
            let result = parse_render_path(&format!("/dynamic/{overrides}/{HASH}.jpg"), None);

            assert!(is_invalid(result), "{overrides}");
        }
    }

    #[test]
    fn malformed_percent_encoding_in_a_part_is_invalid() {
        let result = parse_render_path(&format!("/dynamic/resize-width-%zz/{HASH}.jpg"), None);

        assert!(is_invalid(result));
    }

    #[test]
    fn a_stack_name_that_cannot_exist_is_not_found() {
        assert!(is_not_found(parse_render_path(
            "/st%20ack/c1b110.jpg",
            None
        )));
        assert!(is_not_found(parse_render_path("/stäck/c1b110.jpg", None)));
        assert!(is_invalid(parse_render_path("/%zz/c1b110.jpg", None)));
    }

    #[test]
    fn stack_names_with_dashes_and_underscores_are_kept() {
        let request = parse("/_preview-my_stack/c1b110.jpg");

        assert_eq!(
            request.stack,
            StackRef::Named("_preview-my_stack".to_owned())
        );
    }

    #[test]
    fn degenerate_paths_are_errors() {
        for path in [
            "",
            "/",
            "//",
            "///",
            ".jpg",
            "/.jpg",
            "/stack/.jpg",
            "/c1b110.jpg",
            "//c1b110.jpg",
            "stack/c1b110.jpg",
            "/stack/c1b110.jpg/",
            "/stack/c1b110/.jpg",
            "/💥/💥.💥",
            "/stack/%zz.jpg",
            "/stack/---.jpg",
        ] {
            assert!(parse_render_path(path, None).is_err(), "{path:?}");
        }
    }

    #[test]
    fn overlong_paths_and_queries_are_invalid() {
        let long_value = "9".repeat(MAX_PATH_BYTES);
        let path = format!("/dynamic/resize-width-{long_value}/{HASH}.jpg");
        let query = format!("v={long_value}");

        assert!(is_invalid(parse_render_path(&path, None)));
        assert!(is_invalid(parse_render_path(
            "/dynamic/c1b110.jpg",
            Some(&query)
        )));
    }

    #[test]
    fn too_many_segments_are_invalid() {
        let path = format!("/dynamic{}/{HASH}.jpg", "/grayscale".repeat(MAX_SEGMENTS));

        assert!(is_invalid(parse_render_path(&path, None)));
    }

    #[test]
    fn too_many_parts_are_invalid() {
        let segment = vec!["grayscale"; MAX_PARTS + 1].join("--");
        let path = format!("/dynamic/{segment}/{HASH}.jpg");

        assert!(is_invalid(parse_render_path(&path, None)));
    }

    #[test]
    fn the_part_limit_itself_is_accepted() {
        let segment = vec!["grayscale"; MAX_PARTS].join("--");

        let request = parse(&format!("/dynamic/{segment}/{HASH}.jpg"));

        assert_eq!(request.operations.len(), MAX_PARTS);
    }

    #[test]
    fn error_messages_name_the_offending_part() {
        let result = parse_render_path(&format!("/dynamic/resize-width/{HASH}.jpg"), None);

        let message = result
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("resize-width"), "{message}");
    }

    #[test]
    fn odd_inputs_never_panic() {
        // A fixed linear congruential sequence over an alphabet rich in grammar characters
        // stands in for a fuzzer: deterministic, and no extra dependency.
        let alphabet: Vec<char> = "/-_.%[]5BDabcfv019?&=:+~ü💥".chars().collect();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3000 {
            let mut path = String::from("/");
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 58) as usize;
            for _ in 0..len {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let index = (state >> 33) as usize % alphabet.len();
                path.push(alphabet[index]);
            }
            let _ = parse_render_path(&path, Some(&path));
            let _ = parse_render_path(&format!("{path}/c1b110.jpg"), None);
            let _ = verify_signature(&path, Some(&path), Some("org"), &["k"], 0);
        }
    }
}
