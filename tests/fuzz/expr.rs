//! The expression language of stacks (`darkroom::model::expr::Expr`): parse, then evaluate
//! over a context like the one a render gives (`image`, `options`, `request`) and a few stack
//! variables. Inputs come from the grammar's tokens or are mutated from documented examples.
//! Properties: no panic; parsing and evaluation are deterministic (the value goes into the
//! render key); a parse that succeeds names only variables that are written in the text; no
//! input makes one evaluation hold more than the engine's allocation cap, whatever nesting of
//! ranges, arrays and concatenations it builds.

use crate::alloc::THREAD_CAP;
use crate::engine::{fuzz, Harness, Outcome, Rng};
use darkroom::model::expr::{Expr, MAX_LEN};
use serde_json::{json, Map, Value};

const NAMES: &[&str] = &["image", "options", "request"];

const SEEDS: &[&str] = &[
    "image.width > 1000 ? 500 : image.width / 2",
    "$w * 2 + 1",
    "options.dpr ?? 1",
    "request.headers['accept'] matches '/webp/'",
    "'a' ~ $name ~ 'b'",
    "image.height in 1..10",
    "not ($flag and image.width < 10) || false",
    "[1, 2, 3][1] ** 2 % 7",
    "{'a': 1, 'b': [true, null]}.b[0] ?: 'x'",
    "image?.exif?.Orientation === 6",
    "'abc' starts with 'a' and 'abc' ends with 'c' and 'abc' contains 'b'",
    "-1.5e3 | 3 ^ 4 & 5",
    "1..10000",
    "\"\\u0041\\n\" ~ 'it''s'",
];

fn dictionary() -> Vec<Vec<u8>> {
    [
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "?",
        "?:",
        "??",
        "?.",
        ".",
        "..",
        "+",
        "-",
        "*",
        "/",
        "%",
        "**",
        "~",
        "|",
        "^",
        "&",
        "||",
        "&&",
        "!",
        "not ",
        " and ",
        " or ",
        "==",
        "===",
        "!=",
        "!==",
        "<",
        ">",
        "<=",
        ">=",
        " in ",
        " not in ",
        " matches ",
        " contains ",
        " starts with ",
        " ends with ",
        "'",
        "\"",
        "\\",
        "$w",
        "$name",
        "$flag",
        "$missing",
        "image",
        "options",
        "request",
        "width",
        "height",
        "true",
        "false",
        "null",
        "0",
        "1e308",
        "9223372036854775807",
        "-9223372036854775808",
        "0x1F",
        "1_000",
        "'/(a+)+$/'",
        "1..10000",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect()
}

/// An expression built from the grammar, nested a few levels, often ill-typed.
fn generate(rng: &mut Rng) -> Vec<u8> {
    fn term(rng: &mut Rng, depth: usize) -> String {
        let atoms = [
            "1",
            "0",
            "-7",
            "2.5",
            "'s'",
            "\"x\"",
            "true",
            "null",
            "$w",
            "$name",
            "$flag",
            "image.width",
            "image.height",
            "options.dpr",
            "request.headers['accept']",
            "[1, 'a', [2]]",
            "{'k': 3}",
            "1..100",
        ];
        if depth == 0 || rng.chance(3) {
            return atoms[rng.below(atoms.len())].to_owned();
        }
        let ops = [
            "+",
            "-",
            "*",
            "/",
            "%",
            "**",
            "~",
            "==",
            "===",
            "<",
            ">=",
            "and",
            "or",
            "in",
            "not in",
            "..",
            "??",
            "?:",
            "matches",
            "contains",
            "starts with",
            "|",
            "&",
        ];
        match rng.below(5) {
            0 => format!("({})", term(rng, depth - 1)),
            1 => format!(
                "{} ? {} : {}",
                term(rng, depth - 1),
                term(rng, depth - 1),
                term(rng, depth - 1)
            ),
            2 => format!("not {}", term(rng, depth - 1)),
            3 => format!("[{}, {}][0]", term(rng, depth - 1), term(rng, depth - 1)),
            _ => format!(
                "{} {} {}",
                term(rng, depth - 1),
                ops[rng.below(ops.len())],
                term(rng, depth - 1)
            ),
        }
    }
    let depth = 1 + rng.below(5);
    term(rng, depth).into_bytes()
}

fn context() -> Map<String, Value> {
    let value = json!({
        "image": {"width": 4000, "height": 3000, "format": "jpg", "exif": {"Orientation": 6}},
        "options": {"dpr": 2, "autoformat": true},
        "request": {"headers": {"accept": "image/webp,*/*"}},
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn variable(name: &str) -> Option<Value> {
    match name {
        "w" => Some(json!(300)),
        "name" => Some(json!("photo")),
        "flag" => Some(json!(true)),
        _ => None,
    }
}

fn expr_one(input: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(input);
    let parsed = Expr::parse(&text, NAMES);
    if parsed != Expr::parse(&text, NAMES) {
        return Err("parsing twice differs".into());
    }
    let expr = match parsed {
        Ok(expr) => expr,
        Err(e) => {
            let kind: String = e.message.chars().take(24).collect();
            return Ok(format!("syntax: {kind}"));
        }
    };
    for name in expr.variables() {
        if !text.contains(&format!("${name}")) {
            return Err(format!(
                "parsed a variable `${name}` that the text does not name"
            ));
        }
    }
    let ctx = context();
    let value = expr.eval(&ctx, &variable);
    if value != expr.eval(&ctx, &variable) {
        return Err("evaluating twice differs".into());
    }
    Ok(match value {
        Ok(v) => format!("value {}", kind_of(&v)),
        Err(e) => format!("eval: {}", e.0.chars().take(24).collect::<String>()),
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[test]
fn stack_expressions_parse_and_evaluate_without_panicking() {
    fuzz(
        Harness {
            name: "expr",
            seeds: SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
            dictionary: dictionary(),
            max_len: MAX_LEN + 64,
            fixup: None,
            generate: Some(generate),
            alloc_cap: THREAD_CAP,
        },
        &mut expr_one,
    );
}
