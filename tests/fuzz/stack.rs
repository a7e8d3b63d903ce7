//! Stack definitions and the pipeline they resolve to: the body of `PUT /stacks` goes through
//! `darkroom::model::stack::parse_stack_body` (as `service::stacks::put` does), an accepted
//! definition is resolved with the overrides of a few render URLs
//! (`darkroom::model::resolve::resolve`, `negotiate_format`), and the pipeline is rendered on a
//! tiny image under small limits, planned first as the render service does
//! (`darkroom::render::pipeline::plan`, `Plan::check`, then `render`). The second harness does
//! the same for `dynamic` render URLs, whose operations come from the URL itself.
//!
//! Properties: no panic; a definition as served back by `GET /stacks` parses to itself; resolving
//! twice gives the same canonical bytes (they are the render key); planning and rendering
//! answer no `Internal` error (a 500); a render the planner let through holds no more than
//! twice `max_render_memory`.

use crate::engine::{fuzz, Harness, Outcome, Rng};
use darkroom::model::resolve::{negotiate_format, resolve, ExprContext, ResolveInput};
use darkroom::model::schema::{Kind, OPERATIONS, STACK_OPTIONS};
use darkroom::model::stack::{parse_stack_body, stack_json, StackDefinition};
use darkroom::render::cancel::Cancel;
use darkroom::render::codecs::OutputFormat;
use darkroom::render::error::RenderError;
use darkroom::render::limits::Limits;
use darkroom::render::pipeline::{plan, render, RenderInput};
use darkroom::render::plan::SourceShape;
use darkroom::url::{parse_render_path, StackRef};
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use serde_json::{json, Map, Value};
use std::io::Cursor;
use std::sync::OnceLock;

/// Small limits: a render may not exceed a megapixel, so no input can make one expensive.
const LIMITS: Limits = Limits {
    max_dimension: 2048,
    max_pixels: 1 << 20,
    max_output_pixels: 1 << 20,
    max_avif_output_pixels: 1 << 16,
    max_render_memory: 64 << 20,
    max_frames: 64,
    max_animation_pixels: 1 << 22,
};

/// A render that the planner let through holds at most its estimate, `max_render_memory`;
/// twice that is allowed for the estimate's rounding, more is a finding.
const RENDER_ALLOC_CAP: u64 = 2 * LIMITS.max_render_memory;

/// Render URLs tried against each accepted stack (organization stripped).
const STACK_URLS: &[&str] = &[
    "/s/c421f4.jpg",
    "/s/c421f4.png",
    "/s/resize-width-30--crop-width-10-height-10/c421f4.webp",
    "/s/options-dpr-3--v-w-20/c421f4.gif",
    "/s/c421f4.blur",
];

fn source() -> &'static (Vec<u8>, DynamicImage) {
    static SOURCE: OnceLock<(Vec<u8>, DynamicImage)> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(12, 8, |x, y| {
            Rgba([
                (x * 20) as u8,
                (y * 30) as u8,
                77,
                if x > 6 { 128 } else { 255 },
            ])
        }));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png)
            .expect("the source encodes");
        (out.into_inner(), img)
    })
}

fn value_for(rng: &mut Rng, kind: Kind) -> Value {
    let wild = [
        json!(null),
        json!(-1),
        json!(0),
        json!(1e300),
        json!("$w"),
        json!("[$w * 2]"),
        json!({"a": 1}),
        json!([1, "x"]),
        json!("__undefined__"),
        json!(""),
    ];
    if rng.chance(5) {
        return rng.pick(&wild).clone();
    }
    match kind {
        Kind::Integer { min, max } => {
            let picks = [
                min,
                max,
                min.saturating_sub(1),
                max.saturating_add(1),
                1,
                10,
                300,
            ];
            json!(*rng.pick(&picks))
        }
        Kind::Number { min, max } => {
            let picks = [
                min,
                max,
                (min + max) / 2.0,
                0.5,
                2.0,
                f64::from(rng.u32() % 5000),
            ];
            json!(*rng.pick(&picks))
        }
        Kind::Boolean => json!(rng.chance(2)),
        Kind::Text(_) => {
            json!(*rng.pick(&["abc", "c421f4", "10,20,30,40", "x".repeat(3).as_str()]))
        }
        Kind::Color => json!(*rng.pick(&["FFF", "00ff00", "12345", "GGGGGG"])),
        Kind::Choice(words) | Kind::ChoiceList(words) => {
            json!(words
                .get(rng.below(words.len() + 1))
                .copied()
                .unwrap_or("nonsense"))
        }
        Kind::TextList => json!(["a", "b"]),
    }
}

/// A stack body from the schema: random operations with random (often out-of-range) options.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut operations = Vec::new();
    for _ in 0..rng.below(5) {
        let op = rng.pick(OPERATIONS);
        let mut options = Map::new();
        for _ in 0..rng.below(4) {
            if let Some(spec) = op.options.get(rng.below(op.options.len() + 1)) {
                options.insert(spec.name.to_owned(), value_for(rng, spec.kind));
            } else {
                options.insert("enabled".to_owned(), json!(rng.chance(4)));
            }
        }
        let mut entry = json!({"name": op.name, "options": options});
        if rng.chance(6) {
            entry["expressions"] = json!({"width": "image.width / 2"});
        }
        operations.push(entry);
    }
    let mut stack_options = Map::new();
    for _ in 0..rng.below(3) {
        let spec = rng.pick(STACK_OPTIONS);
        stack_options.insert(spec.name.to_owned(), value_for(rng, spec.kind));
    }
    let body = match rng.below(4) {
        0 => Value::Array(operations),
        _ => json!({
            "operations": operations,
            "options": stack_options,
            "variables": {"w": 40, "flag": true},
        }),
    };
    body.to_string().into_bytes()
}

const SEEDS: &[&str] = &[
    r#"[{"name":"resize","options":{"width":20}}]"#,
    r#"{"operations":[{"name":"resize","options":{"width":"$w","height":10,"mode":"fill"}},{"name":"crop","options":{"width":8,"height":8,"anchor":"center"}}],"options":{"jpg.quality":50,"autoformat":true},"variables":{"w":16}}"#,
    r#"{"stack_operations":[{"name":"rotate","options":{"angle":45,"background_color":"FF0000"}},{"name":"blur","options":{"sigma":2}}],"stack_options":{"dpr":2}}"#,
    r#"[{"name":"dropshadow","options":{"blur_radius":3}},{"name":"trim"},{"name":"grayscale"},{"name":"sepia"}]"#,
    r#"[{"name":"composition","options":{"mode":"foreground","secondary_color":"00FF00","width":5,"height":5}}]"#,
    r#"[{"name":"alpha","options":{"mode":"mask"}},{"name":"circlemask"},{"name":"modulate","options":{"brightness":150}}]"#,
    r#"[{"name":"sharpen","options":{"sigma":1}},{"name":"multiply","options":{"color":"808080"}},{"name":"autorotate"}]"#,
    r#"{"operations":[],"options":{"source_file":true}}"#,
    r#"null"#,
    r#"{"operations":[{"name":"resize","options":{"width":10000,"height":10000,"mode":"absolute","upscale":true}}]}"#,
];

fn dictionary() -> Vec<Vec<u8>> {
    let mut tokens: Vec<String> = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "null",
        "true",
        "false",
        "-0",
        "1e999",
        "1.5",
        "\"$w\"",
        "\"[$w]\"",
        "\"options\"",
        "\"operations\"",
        "\"variables\"",
        "\"expressions\"",
        "\"basestack\"",
        "\"name\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for op in OPERATIONS {
        tokens.push(format!("\"{}\"", op.name));
        tokens.extend(op.options.iter().map(|o| format!("\"{}\"", o.name)));
    }
    tokens.extend(STACK_OPTIONS.iter().map(|o| format!("\"{}\"", o.name)));
    tokens.into_iter().map(String::into_bytes).collect()
}

/// Renders one resolved URL; `Err` for a broken property, `Ok(label)` otherwise.
fn render_url(chain: &[&StackDefinition], url: &str) -> Outcome {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let req = match parse_render_path(path, query) {
        Ok(req) => req,
        Err(e) => return Ok(format!("url: {}", short(&e.to_string()))),
    };
    let dynamic = matches!(req.stack, StackRef::Dynamic);
    let chain = if dynamic { &[][..] } else { chain };
    let (_, img) = source();
    // What stack expressions read as `image.*`: the tiny source below.
    let context = ExprContext {
        image: json!({
            "width": img.width(),
            "height": img.height(),
            "format": "png",
            "hash": "c421f4e8d8c8",
            "isAnimated": false,
            "hasSubjectArea": false,
        }),
        save_data: false,
    };
    let input = ResolveInput {
        chain,
        url_operations: &req.operations,
        url_options: &req.options,
        url_variables: &req.variables,
        dynamic,
        context: &context,
    };
    let pipeline = match resolve(&input) {
        Ok(p) => p,
        Err(e) => return Ok(format!("resolve: {}", short(&e.message()))),
    };
    let again = resolve(&input).map_err(|e| format!("resolving again fails: {e}"))?;
    if pipeline.canonical_bytes() != again.canonical_bytes() {
        return Err("resolving twice gives different canonical bytes".into());
    }
    let negotiated = match negotiate_format(&req.format, &pipeline.options, Some("image/webp")) {
        Ok(n) => n,
        Err(e) => return Ok(format!("format: {}", short(&e.message()))),
    };
    let Some(format) = OutputFormat::from_ext(negotiated.format) else {
        return Ok("format unknown".into());
    };
    if format == OutputFormat::Avif {
        // AVIF encoding takes about a second even for tiny images; its encoder is not what
        // this harness is after.
        return Ok("avif skipped".into());
    }
    let (bytes, _) = source();
    let shape = SourceShape {
        oriented: (img.width(), img.height()),
        jpeg: false,
        bytes: bytes.len() as u64,
        frames: 1,
    };
    let size = |_: &str| Some((img.width(), img.height()));
    let planned =
        plan(&pipeline, format, shape, &size).and_then(|p| p.check(&LIMITS, format).map(|()| p));
    match planned {
        Ok(_) => {}
        Err(RenderError::Internal(m)) => return Err(format!("planning answers a 500: {m}")),
        Err(e) => return Ok(format!("plan: {}", short(&e.to_string()))),
    }
    let secondary = |_: &str| -> darkroom::render::error::Result<DynamicImage> { Ok(img.clone()) };
    let font = |_: &str| -> darkroom::render::error::Result<Vec<u8>> {
        Ok(include_bytes!("../fixtures/fonts/dejavu-sans-latin.ttf").to_vec())
    };
    let metadata = Map::new();
    let cancel = Cancel::new();
    let rendered = render(
        bytes,
        &RenderInput {
            pipeline: &pipeline,
            format,
            lossless: negotiated.lossless,
            alpha_format: None,
            limits: LIMITS,
            oriented_size: (img.width(), img.height()),
            dynamic_metadata: &metadata,
            secondary: &secondary,
            font: &font,
            cancel: &cancel,
            shared_decode: None,
        },
    );
    match rendered {
        Ok(out) => {
            let ops: Vec<&str> = pipeline
                .operations
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            Ok(format!("rendered {} {}", ops.join("+"), out.is_empty()))
        }
        Err(RenderError::Internal(m)) => Err(format!("the render answers a 500: {m}")),
        Err(e) => Ok(format!("render: {}", short(&e.to_string()))),
    }
}

fn short(message: &str) -> String {
    message
        .split('`')
        .step_by(2)
        .collect::<String>()
        .chars()
        .take(40)
        .collect()
}

fn stack_one(input: &[u8]) -> Outcome {
    let def = match parse_stack_body(input) {
        Ok(def) => def,
        Err(e) => return Ok(format!("refused: {}", short(&e.message()))),
    };
    let served = stack_json("acme", "s", "2026-01-01T00:00:00Z", &def);
    match parse_stack_body(served.to_string().as_bytes()) {
        Ok(back) if back == def => {}
        Ok(back) => {
            return Err(format!(
                "a served stack parses to something else: {def:?} became {back:?}"
            ))
        }
        Err(e) => return Err(format!("a served stack is refused: {}", e.message())),
    }
    let mut labels = Vec::new();
    for url in STACK_URLS {
        labels.push(render_url(&[&def], url)?);
    }
    Ok(labels.join(" | "))
}

fn dynamic_one(input: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(input);
    let url = match text.strip_prefix("/dynamic") {
        Some(_) => text.into_owned(),
        None => format!("/dynamic{text}"),
    };
    render_url(&[], &url)
}

/// A `dynamic` render URL of real operations and options with random values, so that most
/// inputs get as far as the renderer; the URL grammar's own generator adds broken ones.
fn generate_dynamic(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(4) {
        let url = String::from_utf8_lossy(&crate::url::generate(rng)).into_owned();
        let rest = url.splitn(3, '/').nth(2).unwrap_or_default();
        return format!("/dynamic/{rest}").into_bytes();
    }
    let mut parts = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let op = rng.pick(OPERATIONS);
        let mut part = op.name.to_owned();
        for _ in 0..rng.below(4) {
            if op.options.is_empty() {
                break;
            }
            let spec = rng.pick(op.options);
            let value = match value_for(rng, spec.kind) {
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => "x".to_owned(),
            };
            part.push_str(&format!("-{}-{value}", spec.name));
        }
        parts.push(part);
    }
    if rng.chance(3) {
        let spec = rng.pick(STACK_OPTIONS);
        if let Value::Number(n) = value_for(rng, spec.kind) {
            parts.push(format!("options-{}-{n}", spec.name));
        }
    }
    let format = *rng.pick(&["jpg", "png", "webp", "gif", "blur"]);
    format!("/dynamic/{}/c421f4e8d8c8.{format}", parts.join("--")).into_bytes()
}

#[test]
fn stack_definitions_parse_resolve_and_render_without_panicking() {
    fuzz(
        Harness {
            name: "stack",
            seeds: SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
            dictionary: dictionary(),
            max_len: 4096,
            fixup: None,
            generate: Some(generate),
            alloc_cap: RENDER_ALLOC_CAP,
        },
        &mut stack_one,
    );
}

#[test]
fn dynamic_render_urls_resolve_and_render_without_panicking() {
    let seeds = crate::url::SEEDS
        .iter()
        .filter(|s| s.starts_with("/dynamic"))
        .map(|s| s.as_bytes().to_vec())
        .collect();
    fuzz(
        Harness {
            name: "dynamic",
            seeds,
            dictionary: crate::url::dictionary(),
            max_len: 2048,
            fixup: None,
            generate: Some(generate_dynamic),
            alloc_cap: RENDER_ALLOC_CAP,
        },
        &mut dynamic_one,
    );
}
