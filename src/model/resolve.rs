//! Resolution: a stack (with its basestacks) plus the overrides of a render URL becomes the
//! [`ResolvedPipeline`] that the renderer runs and whose canonical bytes go into the render key.
//!
//! Precedence follows rokka: the stack definition loses to URL operation and option overrides;
//! stack variables lose to URL variables; an operation's `expressions` win over its `options`.
//! Expressions (spec §5.5, [`crate::model::expr`]) are evaluated here, so their values are in
//! the pipeline and the render key follows them: stack variables in order (a URL value replaces
//! the stack's before evaluation, and is an expression only when bracketed), then the stack
//! expressions in order (every truthy one applies its overrides; later ones win per key) under
//! the URL's options, then each operation's expressions and bracketed URL values. Every default
//! is filled in, so two URLs that mean the same render produce the same
//! [`ResolvedPipeline::canonical_bytes`].
//!
//! Output-format negotiation (`autoformat`, rokka's §6.6) lives here too, in
//! [`negotiate_format`], because it reads the resolved options.

use serde_json::{Map, Value};

use crate::model::expr::{truthy, Expr, CONTEXT_NAMES};
use crate::model::raw::RawOperation;
use crate::model::resolved::{ResolvedOp, ResolvedPipeline};
use crate::model::schema::{self, OperationSpec, SchemaError};
use crate::model::stack::{is_expression_text, variable_reference, StackDefinition};

/// What rokka-render writes for a falsy option value (`0`, `false`); treated as "not set".
const UNDEFINED: &str = "__undefined__";

/// How much lower the default JPEG and WebP quality is on high-density screens.
const HIGH_DPR_QUALITY_DROP: i64 = 10;
/// Above this dpr the quality defaults drop (rokka §5.3).
const HIGH_DPR: f64 = 1.5;

/// Stack options a render URL may not set: `basestack` would need another stack loaded, and
/// `protected` decides whether a signature is required, so a URL must not be able to lift it.
const NOT_IN_URL: &[&str] = &["basestack", "protected"];

/// Everything resolution needs from a parsed render URL and the stored stacks.
pub struct ResolveInput<'a> {
    /// Definitions from the outermost basestack to the requested stack (basestack ops run first;
    /// options merge, later wins). For the `dynamic` stack: empty.
    pub chain: &'a [&'a StackDefinition],
    /// Dynamic stack: the operations; named stack: overrides of same-named operations' options.
    pub url_operations: &'a [RawOperation],
    /// `options-…`/`o-…` pairs of the URL.
    pub url_options: &'a [(String, String)],
    /// `variables-…`/`v-…` pairs and `?v=` of the URL, already merged.
    pub url_variables: &'a Map<String, Value>,
    /// Whether the URL names the `dynamic` stack.
    pub dynamic: bool,
    /// What expressions may read besides variables and options.
    pub context: &'a ExprContext,
}

/// The evaluation context of a render's expressions (spec §5.5) besides variables and options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExprContext {
    /// `image.*`: `width`, `height`, `format`, `hash`, `isAnimated`, `hasSubjectArea`,
    /// `subject_area`, `hasDetectionFace`, `meta_user`, …; `null` when unknown.
    pub image: Value,
    /// The request carried `Save-Data: on` (`request.headers.save_data`).
    pub save_data: bool,
}

/// Why a render URL cannot be resolved; every variant is a client error (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    /// An operation, option or value does not match the schema.
    #[error("{0}")]
    Schema(#[from] SchemaError),
    /// An expression that does not parse or fails to evaluate (wrong type, division by zero,
    /// unknown field).
    #[error("{what}: the expression \"{text}\" failed: {message}")]
    Expression {
        /// Where it is: `resize.width`, ``variable `$w` ``, `stack expression 2`.
        what: String,
        text: String,
        message: String,
    },
    /// A `"$name"` reference names no stack or URL variable.
    #[error("{field}: unknown variable `${name}`")]
    UnknownVariable {
        /// The variable name, without `$`.
        name: String,
        /// Where it was referenced (`resize.width`, `jpg.quality`).
        field: String,
    },
    /// The URL overrides an operation the stack does not have.
    #[error("the stack has no `{0}` operation for the URL to override")]
    NoSuchOperation(String),
    /// The URL sets a stack option that only a stack definition may set.
    #[error("{0} cannot be set in a render URL")]
    OptionNotInUrl(String),
    /// `dpr` above 1 without a `resize` in the requested stack.
    #[error("dpr {0} needs a resize operation in the stack")]
    DprNeedsResize(String),
    /// The output format is not one Darkroom produces.
    #[error("unsupported output format `{0}`")]
    UnsupportedFormat(String),
    /// The input is inconsistent (a named stack without definition, a dynamic one with one).
    #[error("{0}")]
    InvalidInput(String),
}

impl ResolveError {
    /// The public message, suitable for the body of a 400 response.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// An operation on its way through resolution: values still as given (JSON or URL strings).
struct Working {
    spec: &'static OperationSpec,
    options: Map<String, Value>,
    expressions: Map<String, Value>,
    /// Belongs to the requested stack (or the dynamic URL), not to a basestack.
    main: bool,
}

/// Resolves a stack chain and URL overrides into the pipeline to render.
pub fn resolve(input: &ResolveInput) -> Result<ResolvedPipeline, ResolveError> {
    let mut ev = Evaluator {
        image: &input.context.image,
        save_data: input.context.save_data,
        reads_request: false,
    };
    let mut variables = evaluated_variables(input, &mut ev)?;
    let stack_options = stack_options(input, &mut variables, &mut ev)?;
    // Operation expressions see the effective options, defaults included.
    let visible_options = in_schema_order(schema::STACK_OPTIONS.iter(), &stack_options);
    let mut ops = working_operations(input)?;

    let mut operations = Vec::with_capacity(ops.len());
    let mut main_has_resize = false;
    for op in &mut ops {
        let given = substituted_options(op, &variables, &visible_options, &mut ev)?;
        let mut coerced = schema::coerce_operation_options(op.spec, &given)?;
        let enabled = coerced.remove("enabled") != Some(Value::Bool(false));
        // `noop` is rokka's deprecated spelling of "no operations".
        if !enabled || op.spec.name == "noop" {
            continue;
        }
        schema::check_requirement(op.spec, |n| coerced.contains_key(n))?;
        main_has_resize |= op.main && op.spec.name == "resize";
        operations.push(ResolvedOp {
            name: op.spec.name.to_owned(),
            options: in_schema_order(op.spec.options.iter(), &coerced),
        });
    }

    let explicit_options: Vec<String> = stack_options.keys().cloned().collect();
    let options = finished_options(stack_options, !operations.is_empty(), main_has_resize)?;
    Ok(ResolvedPipeline {
        operations,
        options,
        reads_request: ev.reads_request,
        explicit_options,
    })
}

fn working_operations(input: &ResolveInput) -> Result<Vec<Working>, ResolveError> {
    let mut ops = Vec::new();
    if input.dynamic {
        if !input.chain.is_empty() {
            return Err(ResolveError::InvalidInput(
                "the dynamic stack has no stored definition".into(),
            ));
        }
        for raw in input.url_operations {
            let spec = operation_spec(&raw.name)?;
            let mut op = Working {
                spec,
                options: Map::new(),
                expressions: Map::new(),
                main: true,
            };
            apply_url_values(&mut op, &url_operation_values(spec, raw)?);
            ops.push(op);
        }
        return Ok(ops);
    }

    let last = input
        .chain
        .len()
        .checked_sub(1)
        .ok_or_else(|| ResolveError::InvalidInput("no stack definition to resolve".into()))?;
    for (i, def) in input.chain.iter().enumerate() {
        for op in &def.operations {
            ops.push(Working {
                spec: operation_spec(&op.name)?,
                options: op.options.clone(),
                expressions: op.expressions.clone(),
                main: i == last,
            });
        }
    }
    for raw in input.url_operations {
        let spec = operation_spec(&raw.name)?;
        let values = url_operation_values(spec, raw)?;
        // rokka applies an override to every operation of that name, basestack ones included.
        let mut matched = false;
        for op in ops.iter_mut().filter(|o| o.spec.name == spec.name) {
            matched = true;
            apply_url_values(op, &values);
        }
        if !matched {
            return Err(ResolveError::NoSuchOperation(raw.name.clone()));
        }
    }
    Ok(ops)
}

fn operation_spec(name: &str) -> Result<&'static OperationSpec, ResolveError> {
    schema::operation(name).ok_or_else(|| SchemaError::UnknownOperation(name.to_owned()).into())
}

fn is_bracketed(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('[') && s.ends_with(']')
}

/// The options of one URL part as JSON strings, checked against the operation's option names.
fn url_operation_values(
    spec: &OperationSpec,
    raw: &RawOperation,
) -> Result<Map<String, Value>, ResolveError> {
    let mut out = Map::new();
    for (key, value) in &raw.options {
        let field = format!("{}.{key}", spec.name);
        if spec.option(key).is_none() {
            return Err(SchemaError::UnknownOption { field }.into());
        }
        if value == UNDEFINED {
            continue;
        }
        // A bracketed value is an expression; `apply_url_values` puts it with the
        // operation's expressions.
        out.insert(key.clone(), Value::from(value.as_str()));
    }
    Ok(out)
}

/// Puts URL values into an operation: literals into its options (replacing a stack
/// expression for the same option), bracketed ones into its expressions.
fn apply_url_values(op: &mut Working, values: &Map<String, Value>) {
    for (k, v) in values {
        match bracketed(v) {
            Some(inner) => {
                op.options.remove(k);
                op.expressions.insert(k.clone(), Value::from(inner));
            }
            None => {
                op.options.insert(k.clone(), v.clone());
                // The URL beats the stack, expressions included.
                op.expressions.remove(k);
            }
        }
    }
}

/// Evaluates the expressions of one resolution against its context, and notes whether any
/// of them read the request (the answer then varies on `Save-Data`).
struct Evaluator<'a> {
    image: &'a Value,
    save_data: bool,
    reads_request: bool,
}

/// The variables of a resolution, in definition order, already evaluated.
type Variables = Vec<(String, Value)>;

fn variable<'v>(variables: &'v Variables, name: &str) -> Option<&'v Value> {
    variables.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn set_variable(variables: &mut Variables, name: &str, value: Value) {
    match variables.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => variables.push((name.to_owned(), value)),
    }
}

impl Evaluator<'_> {
    /// Evaluates `text`, found at `what`, with the variables and stack options so far.
    fn eval(
        &mut self,
        what: &str,
        text: &str,
        variables: &Variables,
        options: &Map<String, Value>,
    ) -> Result<Value, ResolveError> {
        let failed = |message: String| ResolveError::Expression {
            what: what.to_owned(),
            text: text.to_owned(),
            message,
        };
        let expr = Expr::parse(text, CONTEXT_NAMES).map_err(|e| failed(e.to_string()))?;
        self.reads_request |= expr.uses_name("request");
        let mut context = Map::new();
        context.insert("image".into(), self.image.clone());
        context.insert("options".into(), Value::Object(options.clone()));
        let save_data = if self.save_data {
            Value::from("on")
        } else {
            Value::Null
        };
        context.insert(
            "request".into(),
            serde_json::json!({"headers": {"save_data": save_data}}),
        );
        let lookup = |name: &str| variable(variables, name).cloned();
        expr.eval(&context, &lookup)
            .map_err(|e| failed(e.to_string()))
    }
}

/// The inside of a bracketed URL value (`[image.width*2]`), which is an expression.
fn bracketed(value: &Value) -> Option<&str> {
    let s = value.as_str()?;
    is_bracketed(s).then(|| &s[1..s.len() - 1])
}

/// Stack variables (basestacks first, in definition order) with URL values in place of the
/// stack's before evaluation; each expression may use the variables before it.
fn evaluated_variables(
    input: &ResolveInput,
    ev: &mut Evaluator,
) -> Result<Variables, ResolveError> {
    let mut raw: Vec<(String, Value, bool)> = Vec::new();
    let mut put = |name: &str, value: &Value, from_url: bool| match raw
        .iter_mut()
        .find(|(k, _, _)| k == name)
    {
        Some(slot) => {
            slot.1 = value.clone();
            slot.2 = from_url;
        }
        None => raw.push((name.to_owned(), value.clone(), from_url)),
    };
    for def in input.chain {
        for (k, v) in &def.variables {
            put(k, v, false);
        }
    }
    for (k, v) in input.url_variables {
        put(k, v, true);
    }
    let mut out: Variables = Vec::with_capacity(raw.len());
    let no_options = Map::new();
    for (name, value, from_url) in raw {
        let what = format!("variable `${name}`");
        let evaluated = match (from_url, bracketed(&value)) {
            (true, Some(inner)) => ev.eval(&what, inner, &out, &no_options)?,
            (true, None) => value,
            (false, _) if is_expression_text(&value) => {
                let text = value.as_str().unwrap_or_default().to_owned();
                ev.eval(&what, &text, &out, &no_options)?
            }
            (false, _) => value,
        };
        out.push((name, evaluated));
    }
    Ok(out)
}

fn lookup(variables: &Variables, name: &str, field: &str) -> Result<Value, ResolveError> {
    variable(variables, name)
        .cloned()
        .ok_or_else(|| ResolveError::UnknownVariable {
            name: name.to_owned(),
            field: field.to_owned(),
        })
}

/// The operation's options with `"$name"` values substituted and its expressions (from the
/// stack or bracketed in the URL) evaluated; expressions win over options.
fn substituted_options(
    op: &Working,
    variables: &Variables,
    options: &Map<String, Value>,
    ev: &mut Evaluator,
) -> Result<Map<String, Value>, ResolveError> {
    let mut out = Map::new();
    for (k, v) in &op.options {
        let field = format!("{}.{k}", op.spec.name);
        let value = match variable_reference(v) {
            Some(name) => lookup(variables, name, &field)?,
            None => v.clone(),
        };
        out.insert(k.clone(), value);
    }
    for (k, e) in &op.expressions {
        let field = format!("{}.{k}", op.spec.name);
        let value = match e {
            Value::String(text) => ev.eval(&field, text, variables, options)?,
            // composition's map of expressions for its secondary stack: passed on as is.
            other => other.clone(),
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

/// The stack options of the chain with the overrides of every truthy stack expression
/// (evaluated in order, later ones winning per key), then the URL's options on top; each
/// stack expression sees the options and variables as the ones before it left them.
fn stack_options(
    input: &ResolveInput,
    variables: &mut Variables,
    ev: &mut Evaluator,
) -> Result<Map<String, Value>, ResolveError> {
    let mut chain = Map::new();
    for def in input.chain {
        for (k, v) in &def.options {
            // The basestack's content is in the chain; its name does not change the render.
            if k != "basestack" {
                chain.insert(k.clone(), v.clone());
            }
        }
    }
    let mut url = Map::new();
    let mut url_expressions = Vec::new();
    for (key, value) in input.url_options {
        let spec = schema::stack_option(key)
            .ok_or_else(|| SchemaError::UnknownOption { field: key.clone() })?;
        if NOT_IN_URL.contains(&spec.name) {
            return Err(ResolveError::OptionNotInUrl(spec.name.to_owned()));
        }
        if value == UNDEFINED {
            continue;
        }
        if is_bracketed(value) {
            url_expressions.push((spec.name, value[1..value.len() - 1].to_owned()));
            url.remove(spec.name);
        } else {
            url.insert(spec.name.to_owned(), Value::from(value.as_str()));
        }
    }
    let mut options = coerced_options(&chain, &url, variables)?;
    let mut index = 0;
    for def in input.chain {
        for entry in &def.expressions {
            index += 1;
            let text = entry
                .get("expression")
                .and_then(Value::as_str)
                .unwrap_or("");
            let what = format!("stack expression {index}");
            let visible = in_schema_order(schema::STACK_OPTIONS.iter(), &options);
            if !truthy(&ev.eval(&what, text, variables, &visible)?) {
                continue;
            }
            let overrides = entry.get("overrides");
            let pick = |key: &str| {
                overrides
                    .and_then(|o| o.get(key))
                    .and_then(Value::as_object)
            };
            if let Some(o) = pick("options") {
                for (k, v) in o {
                    chain.insert(k.clone(), v.clone());
                }
            }
            if let Some(vars) = pick("variables") {
                for (k, v) in vars {
                    set_variable(variables, k, v.clone());
                }
            }
            options = coerced_options(&chain, &url, variables)?;
        }
    }
    for (name, text) in url_expressions {
        let visible = in_schema_order(schema::STACK_OPTIONS.iter(), &options);
        let value = ev.eval(&format!("option {name}"), &text, variables, &visible)?;
        url.insert(name.to_owned(), value);
        options = coerced_options(&chain, &url, variables)?;
    }
    Ok(options)
}

/// The chain's options under the URL's, `"$name"` values substituted, coerced to the schema.
fn coerced_options(
    chain: &Map<String, Value>,
    url: &Map<String, Value>,
    variables: &Variables,
) -> Result<Map<String, Value>, ResolveError> {
    let mut given = Map::new();
    for (k, v) in chain.iter().chain(url.iter()) {
        let value = match variable_reference(v) {
            Some(name) => lookup(variables, name, k)?,
            None => v.clone(),
        };
        given.insert(k.clone(), value);
    }
    Ok(schema::coerce_stack_options(&given)?)
}

/// The effective stack options: every default filled in, and rokka's rules across options.
fn finished_options(
    mut options: Map<String, Value>,
    has_operations: bool,
    main_has_resize: bool,
) -> Result<Map<String, Value>, ResolveError> {
    schema::check_source_file(has_operations, &options)?;

    let dpr = options.get("dpr").and_then(Value::as_f64).unwrap_or(1.0);
    if dpr > 1.0 && !main_has_resize {
        return Err(ResolveError::DprNeedsResize(
            schema::number_value(dpr).to_string(),
        ));
    }
    if dpr > HIGH_DPR {
        for name in ["jpg.quality", "webp.quality"] {
            if options.contains_key(name) {
                continue;
            }
            let default = schema::stack_option(name)
                .and_then(|s| s.default.value())
                .and_then(|v| v.as_i64());
            if let Some(q) = default {
                options.insert(name.to_owned(), Value::from(q - HIGH_DPR_QUALITY_DROP));
            }
        }
    }
    let mut out = in_schema_order(schema::STACK_OPTIONS.iter(), &options);
    out.remove("basestack");
    Ok(out)
}

/// The given values plus defaults, in the order of the schema, so that the natural
/// serialisation of a pipeline is already stable.
fn in_schema_order<'a>(
    specs: impl Iterator<Item = &'a schema::OptionSpec>,
    given: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for spec in specs {
        if let Some(v) = given
            .get(spec.name)
            .cloned()
            .or_else(|| spec.default.value())
        {
            out.insert(spec.name.to_owned(), v);
        }
    }
    out
}

impl ResolvedPipeline {
    /// Deterministic bytes for the render key: JSON with keys sorted at every level and
    /// integral numbers written as integers, so equivalent URLs give identical bytes.
    /// The `basestack` name is never part of it (its operations and options are).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let operations: Vec<Value> = self
            .operations
            .iter()
            .map(|op| {
                let mut entry = Map::new();
                entry.insert("name".into(), Value::from(op.name.as_str()));
                entry.insert(
                    "options".into(),
                    canonical(&Value::Object(op.options.clone())),
                );
                Value::Object(entry)
            })
            .collect();
        let mut options = self.options.clone();
        options.remove("basestack");
        let mut root = Map::new();
        root.insert("operations".into(), Value::Array(operations));
        root.insert("options".into(), canonical(&Value::Object(options)));
        // Serialising a `Value` cannot fail (all keys are strings).
        serde_json::to_vec(&Value::Object(root)).unwrap_or_default()
    }
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(v) = m.get(k) {
                    out.insert(k.clone(), canonical(v));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => schema::number_value(f),
            _ => value.clone(),
        },
        other => other.clone(),
    }
}

/// The output format chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// `"jpg"`, `"png"`, `"gif"`, `"webp"`, `"avif"` or `"blur"` (the BlurHash text).
    pub format: &'static str,
    /// Encode without loss (PNG and GIF always; WebP when it replaces a PNG or `webp.quality` is 100).
    pub lossless: bool,
    /// The answer depends on `Accept` (autoformat is on): send `Vary: Accept`.
    pub vary_accept: bool,
    /// What a JPEG render with visible transparency is delivered as instead: `"webp"` when
    /// `jpg.transparency.autoformat` is on and `Accept` lists WebP, else `"png"`; `"png"` with
    /// `jpg.transparency.convert`. `None` keeps JPEG (flattened onto `jpg.transparency.color`).
    pub alpha_format: Option<&'static str>,
}

/// Chooses the output format from the URL extension, the resolved options and `Accept`.
///
/// Without `autoformat` the extension wins (`jpeg` is `jpg`). With it, a JPEG or PNG request is
/// answered with WebP when `Accept` lists `image/webp` (not via `*/*` or `image/*`, which
/// browsers without WebP send too), unless `autoformat.exclude` has `webp`: a PNG becomes
/// lossless WebP, a JPEG lossy WebP. AVIF is opt-in, as rokka enables it only for some accounts:
/// it replaces a JPEG when `autoformat.include` has `avif`, `Accept` lists `image/avif` and
/// `autoformat.exclude` does not have `avif`. PNG requests never become AVIF, because lossless
/// AVIF is larger than lossless WebP and far slower to encode. GIF, WebP and AVIF requests keep
/// their format; a `blur` request (the BlurHash string) is never an image and does not vary
/// with `Accept`. `webp.quality` 100 means lossless WebP. Whether `webp.quality` was set
/// explicitly is not known here (defaults are filled), so a PNG request always becomes
/// lossless WebP.
pub fn negotiate_format(
    requested_ext: &str,
    options: &Map<String, Value>,
    accept: Option<&str>,
) -> Result<Negotiated, ResolveError> {
    let requested = match requested_ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "jpg",
        "png" => "png",
        "gif" => "gif",
        "webp" => "webp",
        "avif" => "avif",
        "blur" => "blur",
        _ => return Err(ResolveError::UnsupportedFormat(requested_ext.to_owned())),
    };
    let webp_lossless = options.get("webp.quality").and_then(Value::as_f64) == Some(100.0);
    let autoformat = options.get("autoformat") == Some(&Value::Bool(true));
    let listed = |option: &str, item: &str| {
        options
            .get(option)
            .and_then(Value::as_str)
            .is_some_and(|list| list.split(',').any(|x| x.trim() == item))
    };

    let format = if autoformat && matches!(requested, "jpg" | "png") {
        if requested == "jpg"
            && listed("autoformat.include", "avif")
            && !listed("autoformat.exclude", "avif")
            && accepts(accept, "image/avif")
        {
            "avif"
        } else if !listed("autoformat.exclude", "webp") && accepts(accept, "image/webp") {
            "webp"
        } else {
            requested
        }
    } else {
        requested
    };
    let lossless = match format {
        "png" | "gif" => true,
        "webp" => requested == "png" || webp_lossless,
        _ => false,
    };
    // rokka also offers SVG to `*/*`; Darkroom writes no SVG, so `true` and `png` agree.
    let alpha_autoformat = matches!(
        options
            .get("jpg.transparency.autoformat")
            .and_then(Value::as_str),
        Some("true" | "png" | "webp")
    );
    let alpha_convert = options.get("jpg.transparency.convert") == Some(&Value::Bool(true));
    let alpha_format = match format {
        "jpg" if alpha_autoformat && accepts(accept, "image/webp") => Some("webp"),
        "jpg" if alpha_autoformat || alpha_convert => Some("png"),
        _ => None,
    };
    Ok(Negotiated {
        format,
        lossless,
        // A BlurHash is text whatever the client accepts.
        vary_accept: (autoformat && requested != "blur") || (format == "jpg" && alpha_autoformat),
        alpha_format,
    })
}

/// Whether an `Accept` header lists `mime` with a non-zero quality.
fn accepts(accept: Option<&str>, mime: &str) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    accept.split(',').any(|entry| {
        let mut parts = entry.split(';');
        let listed = parts
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(mime));
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        listed && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stack::parse_stack_body;
    use serde_json::json;

    fn stack(v: Value) -> StackDefinition {
        parse_stack_body(v.to_string().as_bytes()).expect("valid stack")
    }

    fn raw(name: &str, pairs: &[(&str, &str)]) -> RawOperation {
        RawOperation {
            name: name.into(),
            options: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    struct Url {
        ops: Vec<RawOperation>,
        options: Vec<(String, String)>,
        variables: Map<String, Value>,
    }

    impl Url {
        fn new() -> Url {
            Url {
                ops: vec![],
                options: vec![],
                variables: Map::new(),
            }
        }
        fn op(mut self, name: &str, p: &[(&str, &str)]) -> Url {
            self.ops.push(raw(name, p));
            self
        }
        fn opt(mut self, p: &[(&str, &str)]) -> Url {
            self.options.extend(pairs(p));
            self
        }
        fn var(mut self, k: &str, v: Value) -> Url {
            self.variables.insert(k.into(), v);
            self
        }
    }

    fn named(chain: &[&StackDefinition], url: &Url) -> Result<ResolvedPipeline, ResolveError> {
        resolve(&ResolveInput {
            chain,
            url_operations: &url.ops,
            url_options: &url.options,
            url_variables: &url.variables,
            dynamic: false,
            context: &photo_context(false),
        })
    }

    /// A 1200×800 JPEG with a subject area and user metadata.
    fn photo_context(save_data: bool) -> ExprContext {
        ExprContext {
            image: json!({"width": 1200, "height": 800, "format": "jpg", "hash": "abc",
                          "isAnimated": false, "hasSubjectArea": true,
                          "subject_area": {"x": 100, "y": 50, "width": 400, "height": 300},
                          "hasDetectionFace": false, "meta_user": {"tag": "hero"}}),
            save_data,
        }
    }

    fn named_with(
        chain: &[&StackDefinition],
        url: &Url,
        context: &ExprContext,
    ) -> Result<ResolvedPipeline, ResolveError> {
        resolve(&ResolveInput {
            chain,
            url_operations: &url.ops,
            url_options: &url.options,
            url_variables: &url.variables,
            dynamic: false,
            context,
        })
    }

    fn dynamic(url: &Url) -> Result<ResolvedPipeline, ResolveError> {
        resolve(&ResolveInput {
            chain: &[],
            url_operations: &url.ops,
            url_options: &url.options,
            url_variables: &url.variables,
            dynamic: true,
            context: &photo_context(false),
        })
    }

    #[test]
    fn a_dynamic_url_resolves_with_every_default_filled() {
        let p = dynamic(&Url::new().op("resize", &[("width", "200")])).unwrap();

        assert_eq!(p.operations.len(), 1);
        assert_eq!(
            Value::Object(p.operations[0].options.clone()),
            json!({"width":200,"mode":"box","upscale":true,"upscale_dpr":true,"sharpen":false})
        );
        assert_eq!(p.options["jpg.quality"], json!(80));
        assert_eq!(p.options["dpr"], json!(1));
        assert_eq!(p.options["autoformat"], json!(false));
        assert!(p.options.get("transparency.color").is_none());
        assert!(p.options.get("basestack").is_none());
    }

    #[test]
    fn every_stack_option_with_a_default_is_present() {
        let p = dynamic(&Url::new()).unwrap();

        for spec in schema::STACK_OPTIONS {
            assert_eq!(
                p.options.contains_key(spec.name),
                spec.default.value().is_some(),
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn dynamic_noop_means_no_operations() {
        let p = dynamic(&Url::new().op("noop", &[])).unwrap();

        assert!(p.operations.is_empty());
        assert_eq!(
            p.canonical_bytes(),
            dynamic(&Url::new()).unwrap().canonical_bytes()
        );
    }

    #[test]
    fn an_unknown_dynamic_operation_is_refused() {
        let err = dynamic(&Url::new().op("explode", &[])).unwrap_err();

        assert_eq!(err.message(), "unknown operation `explode`");
    }

    #[test]
    fn an_out_of_range_url_value_names_the_field() {
        let err = dynamic(&Url::new().op("resize", &[("width", "10001")])).unwrap_err();

        assert_eq!(
            err.message(),
            "resize.width: 10001 is above the maximum 10000"
        );
    }

    #[test]
    fn a_dynamic_resize_without_dimensions_is_refused() {
        let err = dynamic(&Url::new().op("resize", &[("mode", "fill")])).unwrap_err();

        assert_eq!(err.message(), "resize: needs width or height");
    }

    #[test]
    fn url_overrides_replace_the_stack_values_of_the_same_operation() {
        let def = stack(
            json!([{"name":"resize","options":{"width":100,"height":100}},{"name":"rotate","options":{"angle":45}}]),
        );

        let p = named(&[&def], &Url::new().op("resize", &[("width", "200")])).unwrap();

        assert_eq!(p.operations[0].options["width"], json!(200));
        assert_eq!(p.operations[0].options["height"], json!(100));
        assert_eq!(p.operations[1].options["angle"], json!(45));
    }

    #[test]
    fn overriding_an_operation_the_stack_lacks_is_an_error() {
        let def = stack(json!([{"name":"resize","options":{"width":100}}]));

        let err = named(&[&def], &Url::new().op("crop", &[("width", "20")])).unwrap_err();

        assert_eq!(
            err.message(),
            "the stack has no `crop` operation for the URL to override"
        );
    }

    #[test]
    fn a_url_override_equal_to_the_stack_value_gives_the_same_bytes() {
        let def = stack(json!([{"name":"resize","options":{"width":200}}]));

        let plain = named(&[&def], &Url::new()).unwrap();
        let same = named(&[&def], &Url::new().op("resize", &[("width", "200")])).unwrap();
        let spelled_out = named(
            &[&def],
            &Url::new()
                .op("resize", &[("mode", "box"), ("upscale", "true")])
                .opt(&[("jpg.quality", "80")]),
        )
        .unwrap();

        assert_eq!(plain.canonical_bytes(), same.canonical_bytes());
        assert_eq!(plain.canonical_bytes(), spelled_out.canonical_bytes());
    }

    #[test]
    fn a_stack_and_the_equivalent_dynamic_url_give_the_same_bytes() {
        let def = stack(
            json!({"operations":[{"name":"resize","options":{"width":200.0}}],"options":{"jpg.quality":"80"}}),
        );

        let from_stack = named(&[&def], &Url::new()).unwrap();
        let from_url = dynamic(&Url::new().op("resize", &[("width", "200")])).unwrap();

        assert_eq!(from_stack.canonical_bytes(), from_url.canonical_bytes());
    }

    #[test]
    fn different_pipelines_give_different_bytes() {
        let a = dynamic(&Url::new().op("resize", &[("width", "200")])).unwrap();
        let b = dynamic(&Url::new().op("resize", &[("width", "201")])).unwrap();
        let c = dynamic(
            &Url::new()
                .op("resize", &[("width", "200")])
                .opt(&[("jpg.quality", "81")]),
        )
        .unwrap();
        let d = dynamic(
            &Url::new()
                .op("resize", &[("width", "200")])
                .op("grayscale", &[]),
        )
        .unwrap();
        let e = dynamic(
            &Url::new()
                .op("grayscale", &[])
                .op("resize", &[("width", "200")]),
        )
        .unwrap();

        let all = [
            a.canonical_bytes(),
            b.canonical_bytes(),
            c.canonical_bytes(),
            d.canonical_bytes(),
            e.canonical_bytes(),
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "{i} vs {j}");
            }
        }
    }

    #[test]
    fn canonical_bytes_sort_keys_whatever_the_insertion_order() {
        let mut o1 = Map::new();
        o1.insert("b".into(), json!(1));
        o1.insert("a".into(), json!(2.0));
        let mut o2 = Map::new();
        o2.insert("a".into(), json!(2));
        o2.insert("b".into(), json!(1));
        let p1 = ResolvedPipeline {
            operations: vec![ResolvedOp {
                name: "x".into(),
                options: o1.clone(),
            }],
            options: o1,
            reads_request: false,
            explicit_options: Vec::new(),
        };
        let p2 = ResolvedPipeline {
            operations: vec![ResolvedOp {
                name: "x".into(),
                options: o2.clone(),
            }],
            options: o2,
            reads_request: false,
            explicit_options: Vec::new(),
        };

        assert_eq!(p1.canonical_bytes(), p2.canonical_bytes());
        assert_eq!(
            String::from_utf8(p1.canonical_bytes()).unwrap(),
            r#"{"operations":[{"name":"x","options":{"a":2,"b":1}}],"options":{"a":2,"b":1}}"#
        );
    }

    #[test]
    fn url_options_override_stack_options_and_accept_the_af_alias() {
        let def = stack(
            json!({"operations":[{"name":"resize","options":{"width":100}}],"options":{"jpg.quality":60}}),
        );

        let p = named(
            &[&def],
            &Url::new().opt(&[("jpg.quality", "90"), ("af", "1")]),
        )
        .unwrap();

        assert_eq!(p.options["jpg.quality"], json!(90));
        assert_eq!(p.options["autoformat"], json!(true));
    }

    #[test]
    fn an_unknown_url_option_is_refused_by_name() {
        let err = dynamic(&Url::new().opt(&[("jpg.qualty", "90")])).unwrap_err();

        assert_eq!(err.message(), "jpg.qualty: unknown option");
    }

    #[test]
    fn protected_and_basestack_cannot_be_set_from_a_url() {
        let def = stack(json!({"operations":[],"options":{"protected":true}}));

        let err = named(&[&def], &Url::new().opt(&[("protected", "false")])).unwrap_err();
        assert_eq!(err.message(), "protected cannot be set in a render URL");
        assert!(named(&[&def], &Url::new().opt(&[("basestack", "other")])).is_err());
    }

    #[test]
    fn rokka_render_undefined_values_are_ignored() {
        let def = stack(json!([{"name":"resize","options":{"width":100}}]));

        let p = named(
            &[&def],
            &Url::new().op("resize", &[("width", "__undefined__")]),
        )
        .unwrap();

        assert_eq!(p.operations[0].options["width"], json!(100));
    }

    #[test]
    fn disabled_operations_are_dropped_and_can_be_enabled_from_the_url() {
        let def = stack(
            json!([{"name":"grayscale","options":{"enabled":false}},{"name":"resize","options":{"width":100}}]),
        );

        let off = named(&[&def], &Url::new()).unwrap();
        let on = named(&[&def], &Url::new().op("grayscale", &[("enabled", "true")])).unwrap();

        assert_eq!(off.operations.len(), 1);
        assert_eq!(on.operations.len(), 2);
        assert!(on.operations[0].options.get("enabled").is_none());
    }

    #[test]
    fn stack_variables_fill_references_and_the_url_overrides_them() {
        let def = stack(
            json!({"operations":[{"name":"resize","options":{"width":"$w"},"expressions":{"height":"$h"}}],"variables":{"w":300,"h":200}}),
        );

        let defaults = named(&[&def], &Url::new()).unwrap();
        let overridden = named(&[&def], &Url::new().var("w", json!("500"))).unwrap();

        assert_eq!(defaults.operations[0].options["width"], json!(300));
        assert_eq!(defaults.operations[0].options["height"], json!(200));
        assert_eq!(overridden.operations[0].options["width"], json!(500));
    }

    #[test]
    fn expressions_win_over_options_and_the_url_wins_over_expressions() {
        let def = stack(
            json!({"operations":[{"name":"resize","options":{"width":100},"expressions":{"width":"$w"}}],"variables":{"w":300}}),
        );

        let p = named(&[&def], &Url::new()).unwrap();
        let q = named(&[&def], &Url::new().op("resize", &[("width", "50")])).unwrap();

        assert_eq!(p.operations[0].options["width"], json!(300));
        assert_eq!(q.operations[0].options["width"], json!(50));
    }

    #[test]
    fn a_variable_of_the_wrong_type_from_the_url_names_the_field() {
        let def = stack(
            json!({"operations":[{"name":"resize","options":{"width":"$w"}}],"variables":{"w":300}}),
        );

        let err = named(&[&def], &Url::new().var("w", json!("wide"))).unwrap_err();

        assert_eq!(err.message(), "resize.width: \"wide\" is not an integer");
    }

    #[test]
    fn a_variable_feeding_a_stack_option_is_substituted() {
        let def =
            stack(json!({"operations":[],"options":{"jpg.quality":"$q"},"variables":{"q":55}}));

        let p = named(&[&def], &Url::new().var("q", json!(65))).unwrap();

        assert_eq!(p.options["jpg.quality"], json!(65));
    }

    #[test]
    fn operation_expressions_are_evaluated_with_variables() {
        let def = stack(
            json!({"operations":[{"name":"resize","options":{"width":100},"expressions":{"height":"$w / 2"}}],"variables":{"w":300}}),
        );

        let p = named(&[&def], &Url::new()).unwrap();

        assert_eq!(p.operations[0].options["height"], json!(150));
        assert!(!p.reads_request);
    }

    #[test]
    fn variables_are_evaluated_in_order_against_the_image() {
        let def = stack(json!({
            "operations":[{"name":"resize","expressions":{"width":"$half","height":"$third"}}],
            "variables":{"half":"image.width / 2","third":"$half / 3 * 2 ** 0"}
        }));

        let p = named(&[&def], &Url::new()).unwrap();

        assert_eq!(p.operations[0].options["width"], json!(600));
        assert_eq!(p.operations[0].options["height"], json!(200));
    }

    #[test]
    fn a_url_literal_replaces_an_expression_variable() {
        let def = stack(
            json!({"operations":[{"name":"resize","expressions":{"width":"$w"}}],"variables":{"w":"image.width / 2"}}),
        );

        let p = named(&[&def], &Url::new().var("w", json!("120"))).unwrap();

        assert_eq!(p.operations[0].options["width"], json!(120));
    }

    #[test]
    fn a_url_variable_replaces_the_literal_before_later_variables_are_evaluated() {
        let def = stack(json!({
            "operations":[{"name":"resize","expressions":{"width":"$double"}}],
            "variables":{"w":100,"double":"$w * 2"}
        }));

        let p = named(&[&def], &Url::new().var("w", json!(150))).unwrap();

        assert_eq!(p.operations[0].options["width"], json!(300));
    }

    #[test]
    fn truthy_stack_expressions_apply_in_order_and_later_ones_win() {
        let def = stack(json!({
            "operations":[{"name":"resize","options":{"width":"$w"}}],
            "variables":{"w":300},
            "expressions":[
                {"expression":"options.dpr >= 2","overrides":{"options":{"jpg.quality":60}}},
                {"expression":"image.width > 5000","overrides":{"options":{"jpg.quality":10}}},
                {"expression":"options.dpr >= 3","overrides":{"options":{"jpg.quality":40},"variables":{"w":100}}}
            ]
        }));

        let one = named(&[&def], &Url::new()).unwrap();
        let two = named(&[&def], &Url::new().opt(&[("dpr", "2")])).unwrap();
        let three = named(&[&def], &Url::new().opt(&[("dpr", "3")])).unwrap();

        assert_eq!(one.options["jpg.quality"], json!(80));
        assert_eq!(two.options["jpg.quality"], json!(60));
        assert_eq!(three.options["jpg.quality"], json!(40));
        assert_eq!(three.operations[0].options["width"], json!(100));
        assert_ne!(one.canonical_bytes(), two.canonical_bytes());
    }

    #[test]
    fn an_expression_on_save_data_is_noted_for_the_answer_to_vary() {
        let def = stack(json!({
            "operations":[{"name":"resize","options":{"width":300}}],
            "expressions":[{"expression":"request.headers.save_data == 'on'","overrides":{"options":{"jpg.quality":40}}}]
        }));

        let plain = named_with(&[&def], &Url::new(), &photo_context(false)).unwrap();
        let saving = named_with(&[&def], &Url::new(), &photo_context(true)).unwrap();

        assert!(plain.reads_request && saving.reads_request);
        assert_eq!(plain.options["jpg.quality"], json!(80));
        assert_eq!(saving.options["jpg.quality"], json!(40));
    }

    #[test]
    fn bracketed_url_values_are_expressions() {
        let p = dynamic(&Url::new().op(
            "crop",
            &[
                ("anchor", "center_center"),
                ("width", "[image.subject_area.width * 1.5]"),
                ("height", "10"),
            ],
        ))
        .unwrap();
        assert_eq!(p.operations[0].options["width"], json!(600));

        let def = stack(
            json!({"operations":[{"name":"resize","expressions":{"width":"$w"}}],"variables":{"w":3}}),
        );
        let p = named(&[&def], &Url::new().var("w", json!("[image.height / 4]"))).unwrap();
        assert_eq!(p.operations[0].options["width"], json!(200));

        let p = dynamic(
            &Url::new()
                .op("resize", &[("width", "100")])
                .opt(&[("jpg.quality", "[10 * 7]")]),
        )
        .unwrap();
        assert_eq!(p.options["jpg.quality"], json!(70));
    }

    #[test]
    fn runtime_errors_name_the_expression() {
        for (expr, needle) in [
            ("1 / 0", "division by zero"),
            ("image.nothing", "image.nothing is not set"),
            ("'abc' * 2", "needs numbers"),
        ] {
            let def = stack(json!({"operations":[{"name":"resize","expressions":{"width":expr}}]}));
            let err = named(&[&def], &Url::new()).unwrap_err().message();
            assert!(err.starts_with("resize.width: the expression"), "{err}");
            assert!(err.contains(expr) && err.contains(needle), "{err}");
        }
        // A value of the wrong type for the option is the schema's error.
        let def = stack(json!({"operations":[{"name":"resize","expressions":{"width":"'wide'"}}]}));
        assert!(named(&[&def], &Url::new())
            .unwrap_err()
            .message()
            .contains("resize.width"));
    }

    #[test]
    fn an_unknown_variable_is_named() {
        let mut def = stack(json!([{"name":"resize","options":{"width":10}}]));
        // Stored definitions are validated, but a basestack edited later can still leave a dangling name.
        def.operations[0]
            .options
            .insert("height".into(), json!("$h"));

        let err = named(&[&def], &Url::new()).unwrap_err();

        assert_eq!(err.message(), "resize.height: unknown variable `$h`");
    }

    #[test]
    fn dpr_without_a_resize_is_refused() {
        let def = stack(json!([{"name":"grayscale"}]));

        let err = named(&[&def], &Url::new().opt(&[("dpr", "2")])).unwrap_err();

        assert_eq!(err.message(), "dpr 2 needs a resize operation in the stack");
    }

    #[test]
    fn dpr_needs_the_resize_in_the_requested_stack_not_the_basestack() {
        let base = stack(json!([{"name":"resize","options":{"width":100}}]));
        let main =
            stack(json!({"operations":[{"name":"grayscale"}],"options":{"basestack":"base"}}));

        assert!(named(&[&base, &main], &Url::new().opt(&[("dpr", "2")])).is_err());
    }

    #[test]
    fn dpr_one_needs_no_resize() {
        assert!(dynamic(&Url::new().op("grayscale", &[]).opt(&[("dpr", "1.0")])).is_ok());
    }

    #[test]
    fn high_dpr_lowers_the_default_qualities_by_ten() {
        let p = dynamic(
            &Url::new()
                .op("resize", &[("width", "100")])
                .opt(&[("dpr", "2")]),
        )
        .unwrap();

        assert_eq!(p.options["jpg.quality"], json!(70));
        assert_eq!(p.options["webp.quality"], json!(70));
        assert_eq!(p.options["dpr"], json!(2));
    }

    #[test]
    fn high_dpr_keeps_explicit_qualities() {
        let def = stack(
            json!({"operations":[{"name":"resize","options":{"width":100}}],"options":{"jpg.quality":80}}),
        );

        let p = named(
            &[&def],
            &Url::new().opt(&[("dpr", "3"), ("webp.quality", "90")]),
        )
        .unwrap();

        assert_eq!(p.options["jpg.quality"], json!(80));
        assert_eq!(p.options["webp.quality"], json!(90));
    }

    #[test]
    fn a_dpr_of_one_and_a_half_keeps_the_default_qualities() {
        let p = dynamic(
            &Url::new()
                .op("resize", &[("width", "100")])
                .opt(&[("dpr", "1.5")]),
        )
        .unwrap();

        assert_eq!(p.options["jpg.quality"], json!(80));
        assert_eq!(p.options["dpr"], json!(1.5));
    }

    #[test]
    fn a_basestack_runs_first_and_its_options_are_extended() {
        let base = stack(
            json!({"operations":[{"name":"rotate","options":{"angle":90}}],"options":{"jpg.quality":50,"png.compression_level":3}}),
        );
        let main = stack(
            json!({"operations":[{"name":"resize","options":{"width":100}}],"options":{"basestack":"base","jpg.quality":60}}),
        );

        let p = named(&[&base, &main], &Url::new()).unwrap();

        assert_eq!(
            p.operations
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            ["rotate", "resize"]
        );
        assert_eq!(p.options["jpg.quality"], json!(60));
        assert_eq!(p.options["png.compression_level"], json!(3));
        assert!(p.options.get("basestack").is_none());
    }

    #[test]
    fn the_basestack_name_does_not_change_the_bytes() {
        let base = stack(json!([{"name":"rotate","options":{"angle":90}}]));
        let a = stack(
            json!({"operations":[{"name":"resize","options":{"width":100}}],"options":{"basestack":"one"}}),
        );
        let b = stack(
            json!({"operations":[{"name":"resize","options":{"width":100}}],"options":{"basestack":"two"}}),
        );

        assert_eq!(
            named(&[&base, &a], &Url::new()).unwrap().canonical_bytes(),
            named(&[&base, &b], &Url::new()).unwrap().canonical_bytes()
        );
    }

    #[test]
    fn url_overrides_reach_basestack_operations() {
        let base = stack(json!([{"name":"resize","options":{"width":100}}]));
        let main =
            stack(json!({"operations":[{"name":"grayscale"}],"options":{"basestack":"base"}}));

        let p = named(
            &[&base, &main],
            &Url::new().op("resize", &[("width", "300")]),
        )
        .unwrap();

        assert_eq!(p.operations[0].options["width"], json!(300));
    }

    #[test]
    fn later_definitions_win_for_variables() {
        let base = stack(
            json!({"operations":[{"name":"resize","options":{"width":"$w"}}],"variables":{"w":100}}),
        );
        let main =
            stack(json!({"operations":[],"options":{"basestack":"base"},"variables":{"w":200}}));

        let p = named(&[&base, &main], &Url::new()).unwrap();

        assert_eq!(p.operations[0].options["width"], json!(200));
    }

    #[test]
    fn source_file_from_a_url_refuses_operations() {
        let err = dynamic(
            &Url::new()
                .op("grayscale", &[])
                .opt(&[("source_file", "true")]),
        )
        .unwrap_err();

        assert_eq!(
            err.message(),
            "source_file: true requires an empty list of operations"
        );
        assert!(dynamic(&Url::new().opt(&[("source_file", "true")])).is_ok());
    }

    #[test]
    fn an_empty_chain_for_a_named_stack_is_an_error() {
        assert!(matches!(
            named(&[], &Url::new()),
            Err(ResolveError::InvalidInput(_))
        ));
    }

    fn opts(v: Value) -> Map<String, Value> {
        let mut p = dynamic(&Url::new()).unwrap().options;
        if let Value::Object(extra) = v {
            for (k, v) in extra {
                p.insert(k, v);
            }
        }
        p
    }

    const CHROME: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";

    #[test]
    fn a_jpeg_with_transparency_switches_to_webp_or_png_when_asked() {
        let auto = opts(json!({"jpg.transparency.autoformat": "true"}));
        let convert = opts(json!({"jpg.transparency.convert": true}));
        let alpha = |o: &Map<String, Value>, accept| {
            let n = negotiate_format("jpg", o, accept).unwrap();
            (n.alpha_format, n.vary_accept)
        };

        assert_eq!(alpha(&auto, Some(CHROME)), (Some("webp"), true));
        assert_eq!(alpha(&auto, None), (Some("png"), true));
        assert_eq!(alpha(&convert, Some(CHROME)), (Some("png"), false));
        assert_eq!(alpha(&opts(json!({})), Some(CHROME)), (None, false));
        let png = negotiate_format("png", &auto, Some(CHROME)).unwrap();
        assert_eq!(png.alpha_format, None);
    }

    #[test]
    fn without_autoformat_the_extension_decides() {
        let n = negotiate_format("jpeg", &opts(json!({})), Some(CHROME)).unwrap();

        assert_eq!(
            n,
            Negotiated {
                format: "jpg",
                lossless: false,
                vary_accept: false,
                alpha_format: None,
            }
        );
    }

    #[test]
    fn autoformat_turns_jpeg_into_lossy_webp_and_png_into_lossless_webp() {
        let o = opts(json!({"autoformat": true}));

        assert_eq!(
            negotiate_format("jpg", &o, Some(CHROME)).unwrap(),
            Negotiated {
                format: "webp",
                lossless: false,
                vary_accept: true,
                alpha_format: None,
            }
        );
        assert_eq!(
            negotiate_format("png", &o, Some(CHROME)).unwrap(),
            Negotiated {
                format: "webp",
                lossless: true,
                vary_accept: true,
                alpha_format: None,
            }
        );
    }

    #[test]
    fn autoformat_without_webp_in_accept_keeps_the_format_but_varies() {
        let o = opts(json!({"autoformat": true}));

        assert_eq!(
            negotiate_format("png", &o, Some("image/*,*/*")).unwrap(),
            Negotiated {
                format: "png",
                lossless: true,
                vary_accept: true,
                alpha_format: None,
            }
        );
        assert_eq!(negotiate_format("jpg", &o, None).unwrap().format, "jpg");
        assert_eq!(
            negotiate_format("jpg", &o, Some("image/webp;q=0"))
                .unwrap()
                .format,
            "jpg"
        );
    }

    #[test]
    fn autoformat_respects_the_webp_exclusion() {
        let o = opts(json!({"autoformat": true, "autoformat.exclude": "webp"}));

        assert_eq!(
            negotiate_format("jpg", &o, Some(CHROME)).unwrap().format,
            "jpg"
        );
    }

    #[test]
    fn avif_is_chosen_only_when_included() {
        let plain = opts(json!({"autoformat": true}));
        let included = opts(json!({"autoformat": true, "autoformat.include": "avif"}));
        let excluded = opts(
            json!({"autoformat": true, "autoformat.include": "avif", "autoformat.exclude": "avif"}),
        );

        assert_eq!(
            negotiate_format("jpg", &plain, Some(CHROME))
                .unwrap()
                .format,
            "webp"
        );
        assert_eq!(
            negotiate_format("jpg", &included, Some(CHROME))
                .unwrap()
                .format,
            "avif"
        );
        assert_eq!(
            negotiate_format("png", &included, Some(CHROME))
                .unwrap()
                .format,
            "webp"
        );
        assert_eq!(
            negotiate_format("jpg", &excluded, Some(CHROME))
                .unwrap()
                .format,
            "webp"
        );
    }

    #[test]
    fn gif_requests_stay_gif_under_autoformat() {
        let o = opts(json!({"autoformat": true}));

        assert_eq!(
            negotiate_format("gif", &o, Some(CHROME)).unwrap(),
            Negotiated {
                format: "gif",
                lossless: true,
                vary_accept: true,
                alpha_format: None,
            }
        );
    }

    #[test]
    fn a_blur_request_stays_text_whatever_accept_and_autoformat_say() {
        let o = opts(json!({"autoformat": true, "autoformat.include": "avif"}));

        assert_eq!(
            negotiate_format("blur", &o, Some(CHROME)).unwrap(),
            Negotiated {
                format: "blur",
                lossless: false,
                vary_accept: false,
                alpha_format: None,
            }
        );
    }

    #[test]
    fn webp_quality_one_hundred_means_lossless() {
        let o = opts(json!({"webp.quality": 100}));

        assert!(negotiate_format("webp", &o, None).unwrap().lossless);
        assert!(
            !negotiate_format("webp", &opts(json!({})), None)
                .unwrap()
                .lossless
        );
    }

    #[test]
    fn unknown_formats_are_refused() {
        let err = negotiate_format("bmp", &opts(json!({})), None).unwrap_err();

        assert_eq!(err.message(), "unsupported output format `bmp`");
    }

    #[test]
    fn extensions_are_case_insensitive() {
        assert_eq!(
            negotiate_format("JPG", &opts(json!({})), None)
                .unwrap()
                .format,
            "jpg"
        );
    }
}
