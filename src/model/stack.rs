//! A stack as data: its definition, how any of the body shapes clients send becomes one, how it is
//! validated at creation, and how it is shown back in the recorded rokka response shape.
//!
//! rokka clients send stacks in several shapes (a bare array of operations; an object with
//! `operations`/`options`/`expressions`/`variables`; the same with `stack_` prefixed keys; PHP's
//! `[]` for empty objects). They all become one [`StackDefinition`], validated against the
//! schema of `schema.rs` and normalised (integers as integers, colours upper-case), which is what
//! storage keeps and `resolve.rs` turns into a render pipeline. Expressions are stored as given:
//! they are checked for shape here and evaluated (or refused) at resolution.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::schema::{self, SchemaError};

/// Longest accepted stack name.
pub const MAX_STACK_NAME_LEN: usize = 100;

/// Why a stack body or name was refused; every variant is a client error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StackError {
    /// The body is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The body is JSON but not one of the accepted stack shapes.
    #[error("invalid stack body: {0}")]
    Shape(String),
    /// An operation, option or variable does not match the schema.
    #[error("{0}")]
    Schema(#[from] SchemaError),
    /// The stack name is not allowed.
    #[error("invalid stack name: {0}")]
    InvalidName(String),
}

impl StackError {
    /// The public message, suitable for the `error.message` of a 400 response.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// One operation of a stack, as stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StackOperation {
    /// The operation name (a key of [`schema::OPERATIONS`]).
    pub name: String,
    /// Literal option values, or `"$variable"` references.
    #[serde(default)]
    pub options: Map<String, Value>,
    /// Option name → expression; wins over the same key in `options`.
    #[serde(default)]
    pub expressions: Map<String, Value>,
}

/// A stack definition, whatever body shape it arrived in.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StackDefinition {
    /// Free text shown back to clients.
    #[serde(default)]
    pub description: Option<String>,
    /// The operations in the order they run.
    #[serde(default)]
    pub operations: Vec<StackOperation>,
    /// Stack options (quality, dpr, basestack, …).
    #[serde(default)]
    pub options: Map<String, Value>,
    /// Stack expressions: `{expression, overrides:{options?, variables?}}`, in order.
    #[serde(default)]
    pub expressions: Vec<Value>,
    /// Stack variables and their default values.
    #[serde(default)]
    pub variables: Map<String, Value>,
}

impl StackDefinition {
    /// The name of the stack whose operations run before this one's, if any.
    pub fn basestack(&self) -> Option<&str> {
        self.options.get("basestack").and_then(Value::as_str)
    }

    /// Checks the definition against the schema and returns it normalised: option values
    /// coerced to their types, aliases replaced by full option names, `null` options dropped.
    /// Errors name the field (`resize.width`, `jpg.quality`, `variables.w`).
    pub fn validated(&self) -> Result<StackDefinition, StackError> {
        for (name, value) in &self.variables {
            check_variable(name, value)?;
            if let (true, Some(text)) = (is_expression_text(value), value.as_str()) {
                check_expression(&format!("variables.{name}"), text)?;
            }
        }
        let mut operations = Vec::with_capacity(self.operations.len());
        for op in &self.operations {
            operations.push(self.validated_operation(op)?);
        }
        let options = self.validated_stack_options(&self.options, "")?;
        schema::check_source_file(!operations.is_empty(), &options)?;
        let mut expressions = Vec::with_capacity(self.expressions.len());
        for (i, e) in self.expressions.iter().enumerate() {
            expressions.push(self.validated_stack_expression(i, e)?);
        }
        Ok(StackDefinition {
            description: self.description.clone(),
            operations,
            options,
            expressions,
            variables: self.variables.clone(),
        })
    }

    fn validated_operation(&self, op: &StackOperation) -> Result<StackOperation, StackError> {
        let spec = schema::operation(&op.name)
            .ok_or_else(|| SchemaError::UnknownOperation(op.name.clone()))?;
        let mut options = Map::new();
        for (name, value) in &op.options {
            let field = format!("{}.{name}", op.name);
            let opt = spec
                .option(name)
                .ok_or_else(|| SchemaError::UnknownOption {
                    field: field.clone(),
                })?;
            if let Some(var) = variable_reference(value) {
                self.check_reference(opt, &field, var)?;
                options.insert(name.clone(), value.clone());
            } else if let Some(v) = schema::coerce(opt, &field, value)? {
                options.insert(name.clone(), v);
            }
        }
        let mut expressions = Map::new();
        for (name, value) in &op.expressions {
            let field = format!("{}.{name}", op.name);
            let opt = spec
                .option(name)
                .ok_or_else(|| SchemaError::UnknownOption {
                    field: field.clone(),
                })?;
            match value {
                Value::String(s) => {
                    if let Some(var) = variable_reference(value) {
                        self.check_reference(opt, &field, var)?;
                    } else if s.trim().is_empty() {
                        return Err(shape(format!("{field}: an expression must not be empty")));
                    } else {
                        check_expression(&field, s)?;
                    }
                }
                // composition passes a map of expressions to its secondary stack.
                Value::Object(_) if name == "secondary_stack_variables" => {}
                Value::Null => continue,
                _ => return Err(shape(format!("{field}: an expression must be a string"))),
            }
            expressions.insert(name.clone(), value.clone());
        }
        schema::check_requirement(spec, |n| {
            options.contains_key(n) || expressions.contains_key(n)
        })?;
        Ok(StackOperation {
            name: op.name.clone(),
            options,
            expressions,
        })
    }

    fn validated_stack_options(
        &self,
        given: &Map<String, Value>,
        context: &str,
    ) -> Result<Map<String, Value>, StackError> {
        let mut out = Map::new();
        for (name, value) in given {
            let field = format!("{context}{name}");
            let opt = schema::stack_option(name).ok_or_else(|| SchemaError::UnknownOption {
                field: field.clone(),
            })?;
            if let Some(var) = variable_reference(value) {
                self.check_reference(opt, &field, var)?;
                out.insert(opt.name.to_owned(), value.clone());
            } else if let Some(v) = schema::coerce(opt, &field, value)? {
                out.insert(opt.name.to_owned(), v);
            }
        }
        Ok(out)
    }

    fn validated_stack_expression(&self, index: usize, e: &Value) -> Result<Value, StackError> {
        let at = format!("expressions[{index}]");
        let Value::Object(entry) = e else {
            return Err(shape(format!("{at} must be an object")));
        };
        if let Some(key) = entry
            .keys()
            .find(|k| !matches!(k.as_str(), "expression" | "overrides"))
        {
            return Err(shape(format!("{at}: unknown key `{key}`")));
        }
        match entry.get("expression") {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                check_expression(&format!("{at}.expression"), s)?;
            }
            _ => return Err(shape(format!("{at}.expression must be a non-empty string"))),
        }
        let overrides = match entry.get("overrides") {
            Some(Value::Object(o)) => o.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(Value::Array(a)) if a.is_empty() => Map::new(),
            Some(_) => return Err(shape(format!("{at}.overrides must be an object"))),
        };
        let mut normalised = Map::new();
        for (key, value) in &overrides {
            match key.as_str() {
                "options" => {
                    let options = object_or_empty(value, &format!("{at}.overrides.options"))?;
                    let options = self
                        .validated_stack_options(&options, &format!("{at}.overrides.options."))?;
                    normalised.insert(key.clone(), Value::Object(options));
                }
                "variables" => {
                    let variables = object_or_empty(value, &format!("{at}.overrides.variables"))?;
                    for (name, v) in &variables {
                        check_variable(name, v)?;
                    }
                    normalised.insert(key.clone(), Value::Object(variables));
                }
                other => {
                    return Err(shape(format!("{at}.overrides: unknown key `{other}`")));
                }
            }
        }
        let mut out = entry.clone();
        out.insert("overrides".into(), Value::Object(normalised));
        Ok(Value::Object(out))
    }

    /// A `"$name"` reference must name a variable of this stack, and a literal default must
    /// suit the option it feeds, so that a typo fails at creation rather than on every render.
    fn check_reference(
        &self,
        opt: &schema::OptionSpec,
        field: &str,
        var: &str,
    ) -> Result<(), StackError> {
        let Some(value) = self.variables.get(var) else {
            return Err(SchemaError::InvalidValue {
                field: field.to_owned(),
                reason: format!("variable `${var}` is not defined in the stack's variables"),
            }
            .into());
        };
        if !is_expression_text(value) {
            schema::coerce(opt, &format!("{field} (from ${var})"), value)?;
        }
        Ok(())
    }
}

fn shape(message: String) -> StackError {
    StackError::Shape(message)
}

/// The variable name of a value that is exactly `"$name"`, if it is one.
pub fn variable_reference(value: &Value) -> Option<&str> {
    let name = value.as_str()?.strip_prefix('$')?;
    is_identifier(name).then_some(name)
}

/// Whether a stack variable's value is an expression to evaluate rather than a literal:
/// it refers to another variable or to the evaluation context (`image.`, `request.`, `options.`).
/// Plain words such as `"ff00ff"` or `"Some example text"` are literals.
pub fn is_expression_text(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.contains('$')
            || ["image.", "request.", "options."]
                .iter()
                .any(|p| s.contains(p))
    })
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Refuses an expression that does not parse, naming the field and the position.
fn check_expression(field: &str, text: &str) -> Result<(), StackError> {
    crate::model::expr::Expr::parse(text, crate::model::expr::CONTEXT_NAMES)
        .map(|_| ())
        .map_err(|e| {
            shape(format!(
                "{field}: the expression \"{text}\" has a syntax error: {e}"
            ))
        })
}

fn check_variable(name: &str, value: &Value) -> Result<(), StackError> {
    if !is_identifier(name) {
        return Err(SchemaError::InvalidValue {
            field: format!("variables.{name}"),
            reason: "a variable name has letters, digits and underscores and does not start with a digit".into(),
        }
        .into());
    }
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => Ok(()),
        _ => Err(SchemaError::InvalidValue {
            field: format!("variables.{name}"),
            reason: "must be a string, a number or a boolean".into(),
        }
        .into()),
    }
}

/// Parses a stack body in any accepted shape and validates it. Bad JSON yields serde's message.
pub fn parse_stack_body(bytes: &[u8]) -> Result<StackDefinition, StackError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| StackError::Json(e.to_string()))?;
    definition_from_value(&value)?.validated()
}

/// Reads a stack body that is already JSON into a definition, without schema validation.
/// Accepted: a bare array of operations, or an object with `operations`/`stack_operations`,
/// `options`/`stack_options`, `expressions`/`stack_expressions`, `variables`/`stack_variables`
/// and `description`. `[]` and `null` stand for an empty object. The keys a stack response
/// carries (`name`, `organization`, `created`, `link`) are ignored so that a fetched stack can
/// be sent back as is; any other key is refused, so that a typo does not silently drop a part.
pub fn definition_from_value(value: &Value) -> Result<StackDefinition, StackError> {
    let object = match value {
        Value::Array(ops) => {
            return Ok(StackDefinition {
                operations: operations_from(ops)?,
                ..StackDefinition::default()
            })
        }
        Value::Object(o) => o,
        _ => {
            return Err(shape(
                "expected a JSON object or an array of operations".into(),
            ))
        }
    };
    let mut def = StackDefinition::default();
    let mut seen: Vec<&'static str> = Vec::new();
    for (key, v) in object {
        let part = match key.as_str() {
            "operations" | "stack_operations" => "operations",
            "options" | "stack_options" => "options",
            "expressions" | "stack_expressions" => "expressions",
            "variables" | "stack_variables" => "variables",
            "description" => "description",
            "name" | "organization" | "created" | "link" => continue,
            other => return Err(shape(format!("unknown key `{other}`"))),
        };
        if seen.contains(&part) {
            return Err(shape(format!(
                "`{part}` is given twice (with and without the stack_ prefix)"
            )));
        }
        seen.push(part);
        match part {
            "operations" => {
                def.operations = match v {
                    Value::Array(ops) => operations_from(ops)?,
                    Value::Null => Vec::new(),
                    Value::Object(o) if o.is_empty() => Vec::new(),
                    _ => return Err(shape(format!("`{key}` must be an array"))),
                }
            }
            "options" => def.options = object_or_empty(v, key)?,
            "variables" => def.variables = object_or_empty(v, key)?,
            "expressions" => {
                def.expressions = match v {
                    Value::Array(list) => list.clone(),
                    Value::Null => Vec::new(),
                    Value::Object(o) if o.is_empty() => Vec::new(),
                    _ => return Err(shape(format!("`{key}` must be an array"))),
                }
            }
            _ => {
                def.description = match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    _ => return Err(shape("`description` must be a string".into())),
                }
            }
        }
    }
    Ok(def)
}

fn object_or_empty(value: &Value, key: &str) -> Result<Map<String, Value>, StackError> {
    match value {
        Value::Object(o) => Ok(o.clone()),
        // PHP encodes an empty associative array as `[]`.
        Value::Array(a) if a.is_empty() => Ok(Map::new()),
        Value::Null => Ok(Map::new()),
        _ => Err(shape(format!("`{key}` must be an object"))),
    }
}

fn operations_from(list: &[Value]) -> Result<Vec<StackOperation>, StackError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let at = format!("operations[{i}]");
        let Value::Object(o) = entry else {
            return Err(shape(format!("{at} must be an object with a name")));
        };
        let mut op = StackOperation::default();
        let mut named = false;
        for (key, v) in o {
            match key.as_str() {
                "name" => {
                    op.name = v
                        .as_str()
                        .ok_or_else(|| shape(format!("{at}.name must be a string")))?
                        .to_owned();
                    named = true;
                }
                "options" => op.options = object_or_empty(v, &format!("{at}.options"))?,
                "expressions" => op.expressions = object_or_empty(v, &format!("{at}.expressions"))?,
                other => return Err(shape(format!("{at}: unknown key `{other}`"))),
            }
        }
        if !named {
            return Err(shape(format!("{at} has no name")));
        }
        out.push(op);
    }
    Ok(out)
}

/// Checks a stack name: 1–100 characters from `A–Z a–z 0–9 - _`; `dynamic` and names starting
/// with `_` are reserved (rokka's `_preview*` stacks are not supported).
///
/// rokka advertises `[a-z0-9\-_]+` for basestack names. Upper-case letters are accepted too:
/// names are case-sensitive path segments and never part of a host name, and refusing them would
/// block stacks migrated from accounts that use them. Dots and slashes stay out because the name
/// is a path segment and a storage key.
pub fn validate_stack_name(name: &str) -> Result<(), StackError> {
    let refuse = |why: &str| Err(StackError::InvalidName(format!("`{name}` {why}")));
    if name.is_empty() {
        return Err(StackError::InvalidName("the name is empty".into()));
    }
    if name.len() > MAX_STACK_NAME_LEN {
        return Err(StackError::InvalidName(format!(
            "longer than {MAX_STACK_NAME_LEN} characters"
        )));
    }
    if name == "dynamic" {
        return refuse("is reserved for render URLs with inline operations");
    }
    if name.starts_with('_') {
        return refuse("starts with `_`, which is reserved");
    }
    if !schema::Pattern::StackName.matches(name) {
        return refuse("may contain only letters, digits, `-` and `_`");
    }
    Ok(())
}

/// The stack object of rokka's recorded responses: `name`, `organization`, `created`,
/// `description` (when set), `stack_operations` (every entry with `options`, `{}` if empty, and
/// `expressions` when it has some), `stack_options`, `stack_expressions`, `stack_variables`, `link`.
pub fn stack_json(org: &str, name: &str, created_rfc3339: &str, def: &StackDefinition) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), Value::from(name));
    out.insert("organization".into(), Value::from(org));
    out.insert("created".into(), Value::from(created_rfc3339));
    if let Some(d) = &def.description {
        out.insert("description".into(), Value::from(d.as_str()));
    }
    let operations: Vec<Value> = def
        .operations
        .iter()
        .map(|op| {
            let mut entry = Map::new();
            entry.insert("name".into(), Value::from(op.name.as_str()));
            entry.insert("options".into(), Value::Object(op.options.clone()));
            if !op.expressions.is_empty() {
                entry.insert("expressions".into(), Value::Object(op.expressions.clone()));
            }
            Value::Object(entry)
        })
        .collect();
    out.insert("stack_operations".into(), Value::Array(operations));
    out.insert("stack_options".into(), Value::Object(def.options.clone()));
    out.insert(
        "stack_expressions".into(),
        Value::Array(def.expressions.clone()),
    );
    out.insert(
        "stack_variables".into(),
        Value::Object(def.variables.clone()),
    );
    out.insert("link".into(), Value::from(format!("/stacks/{org}/{name}")));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<StackDefinition, StackError> {
        parse_stack_body(v.to_string().as_bytes())
    }

    #[test]
    fn a_bare_array_of_operations_is_a_stack() {
        let def = parse(json!([{"name":"resize","options":{"width":200}}])).unwrap();

        assert_eq!(def.operations.len(), 1);
        assert_eq!(def.operations[0].name, "resize");
        assert_eq!(def.operations[0].options["width"], json!(200));
        assert!(def.options.is_empty());
    }

    #[test]
    fn the_documented_object_shape_keeps_every_part() {
        let def = parse(json!({
            "description": "thumbs",
            "operations": [{"name":"resize","options":{"width":200},"expressions":{"height":"$h"}}],
            "options": {"jpg.quality": 60, "basestack": "base"},
            "expressions": [{"expression":"options.dpr >= 2","overrides":{"options":{"optim.quality":2},"variables":{}}}],
            "variables": {"w": 500, "h": 250}
        }))
        .unwrap();

        assert_eq!(def.description.as_deref(), Some("thumbs"));
        assert_eq!(def.operations[0].expressions["height"], json!("$h"));
        assert_eq!(def.options["jpg.quality"], json!(60));
        assert_eq!(def.basestack(), Some("base"));
        assert_eq!(def.expressions.len(), 1);
        assert_eq!(def.variables["w"], json!(500));
    }

    #[test]
    fn the_stack_prefixed_keys_are_accepted() {
        let def = parse(json!({
            "stack_operations": [{"name":"rotate","options":{"angle":45}}],
            "stack_options": {"jpg.quality": 77},
            "stack_expressions": [],
            "stack_variables": {}
        }))
        .unwrap();

        assert_eq!(def.operations[0].options["angle"], json!(45));
        assert_eq!(def.options["jpg.quality"], json!(77));
    }

    #[test]
    fn php_empty_arrays_stand_for_empty_objects() {
        let def = parse(json!({
            "operations": [{"name":"grayscale","options":[]}],
            "options": [], "expressions": [], "variables": []
        }))
        .unwrap();

        assert!(def.options.is_empty());
        assert!(def.variables.is_empty());
        assert!(def.expressions.is_empty());
        assert!(def.operations[0].options.is_empty());
    }

    #[test]
    fn operations_without_options_are_accepted() {
        let def = parse(json!({"operations":[{"name":"sepia"},{"name":"circlemask"}]})).unwrap();

        assert_eq!(def.operations.len(), 2);
        assert!(def.operations[1].options.is_empty());
    }

    #[test]
    fn a_fetched_stack_can_be_sent_back_as_is() {
        let original = parse(json!({"operations":[{"name":"rotate","options":{"angle":45}}],"options":{"jpg.quality":77}})).unwrap();
        let body = stack_json("org", "s", "2019-12-10T09:13:53+00:00", &original);

        let again = parse(body).unwrap();

        assert_eq!(again, original);
    }

    #[test]
    fn bad_json_carries_serdes_message() {
        let err = parse_stack_body(b"{\"operations\": [").unwrap_err();

        assert!(matches!(err, StackError::Json(_)));
        assert!(
            err.message().starts_with("invalid JSON: EOF while parsing"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_scalar_body_is_refused() {
        assert!(matches!(parse(json!(42)), Err(StackError::Shape(_))));
    }

    #[test]
    fn an_unknown_top_level_key_is_refused_by_name() {
        let err = parse(json!({"operation": []})).unwrap_err();

        assert_eq!(err.message(), "invalid stack body: unknown key `operation`");
    }

    #[test]
    fn both_spellings_of_a_part_at_once_are_refused() {
        assert!(parse(json!({"operations": [], "stack_operations": []})).is_err());
    }

    #[test]
    fn an_operation_without_a_name_is_refused() {
        let err = parse(json!([{"options":{"width":3}}])).unwrap_err();

        assert_eq!(
            err.message(),
            "invalid stack body: operations[0] has no name"
        );
    }

    #[test]
    fn an_unknown_operation_is_refused_by_name() {
        let err = parse(json!([{"name":"explode"}])).unwrap_err();

        assert_eq!(err.message(), "unknown operation `explode`");
    }

    #[test]
    fn an_unknown_option_is_refused_by_field() {
        let err = parse(json!([{"name":"resize","options":{"width":10,"depth":2}}])).unwrap_err();

        assert_eq!(err.message(), "resize.depth: unknown option");
    }

    #[test]
    fn an_out_of_range_option_is_refused_by_field() {
        let err = parse(json!([{"name":"resize","options":{"width":10001}}])).unwrap_err();

        assert_eq!(
            err.message(),
            "resize.width: 10001 is above the maximum 10000"
        );
    }

    #[test]
    fn a_wrong_type_is_refused_by_field() {
        let err = parse(json!({"operations":[],"options":{"autoformat":"maybe"}})).unwrap_err();

        assert_eq!(err.message(), "autoformat: \"maybe\" is not a boolean");
    }

    #[test]
    fn required_options_are_enforced_at_creation() {
        assert_eq!(
            parse(json!([{"name":"resize","options":{"mode":"fill"}}]))
                .unwrap_err()
                .message(),
            "resize: needs width or height"
        );
        assert_eq!(
            parse(json!([{"name":"crop","options":{"width":10}}]))
                .unwrap_err()
                .message(),
            "crop: height is required"
        );
        assert_eq!(
            parse(json!([{"name":"rotate"}])).unwrap_err().message(),
            "rotate: angle is required"
        );
    }

    #[test]
    fn an_expression_satisfies_a_requirement() {
        let def = parse(
            json!({"operations":[{"name":"resize","expressions":{"width":"$w"}}],"variables":{"w":300}}),
        );

        assert!(def.is_ok());
    }

    #[test]
    fn values_are_normalised_when_stored() {
        let def = parse(json!({"operations":[{"name":"rotate","options":{"angle":"90.0","background_color":"abc"}}],"options":{"af":"1","jpg.quality":"70"}})).unwrap();

        assert_eq!(def.operations[0].options["angle"], json!(90));
        assert_eq!(
            def.operations[0].options["background_color"],
            json!("AABBCC")
        );
        assert_eq!(def.options["autoformat"], json!(true));
        assert_eq!(def.options["jpg.quality"], json!(70));
    }

    #[test]
    fn a_reference_to_an_undefined_variable_is_refused() {
        let err =
            parse(json!({"operations":[{"name":"resize","options":{"width":"$w"}}]})).unwrap_err();

        assert_eq!(
            err.message(),
            "resize.width: variable `$w` is not defined in the stack's variables"
        );
    }

    #[test]
    fn a_variable_default_of_the_wrong_type_is_refused_where_it_is_used() {
        let err = parse(json!({"operations":[{"name":"resize","options":{"width":"$w"}}],"variables":{"w":"wide"}})).unwrap_err();

        assert_eq!(
            err.message(),
            "resize.width (from $w): \"wide\" is not an integer"
        );
    }

    #[test]
    fn expression_variables_are_stored_for_later() {
        let def = parse(
            json!({"operations":[{"name":"resize","expressions":{"width":"$w"}}],"variables":{"w":"image.width / 2"}}),
        );

        assert!(def.is_ok());
    }

    #[test]
    fn variables_must_have_identifier_names_and_scalar_values() {
        assert!(parse(json!({"operations":[],"variables":{"1x":3}})).is_err());
        assert!(parse(json!({"operations":[],"variables":{"x":[1]}})).is_err());
    }

    #[test]
    fn stack_expressions_must_have_an_expression_and_known_override_options() {
        assert!(parse(json!({"operations":[],"expressions":[{"overrides":{}}]})).is_err());
        let err = parse(json!({"operations":[],"expressions":[{"expression":"true","overrides":{"options":{"nope":1}}}]})).unwrap_err();
        assert_eq!(
            err.message(),
            "expressions[0].overrides.options.nope: unknown option"
        );
    }

    #[test]
    fn source_file_refuses_operations() {
        let err = parse(json!({"operations":[{"name":"sepia"}],"options":{"source_file":true}}))
            .unwrap_err();

        assert_eq!(
            err.message(),
            "source_file: true requires an empty list of operations"
        );
        assert!(parse(json!({"operations":[],"options":{"source_file":true}})).is_ok());
    }

    #[test]
    fn stack_names_follow_the_pattern() {
        for ok in ["mystack", "my-stack_2", "Thumbs", "a"] {
            assert!(validate_stack_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "my stack", "a/b", "a.b", "dynamic", "_preview", "_x", "é",
        ] {
            assert!(validate_stack_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stack_names_are_limited_to_one_hundred_characters() {
        assert!(validate_stack_name(&"a".repeat(100)).is_ok());
        assert!(validate_stack_name(&"a".repeat(101)).is_err());
    }

    #[test]
    fn the_response_has_the_recorded_shape() {
        let def = parse(json!({"operations":[{"name":"rotate","options":{"angle":45}},{"name":"resize","options":{"width":100,"height":100}}],"options":{"jpg.quality":77}})).unwrap();

        let body = stack_json(
            "rokka-js-tests",
            "mystack",
            "2019-12-10T09:13:53+00:00",
            &def,
        );

        assert_eq!(
            body,
            json!({"name":"mystack","organization":"rokka-js-tests","created":"2019-12-10T09:13:53+00:00",
                "stack_operations":[{"name":"rotate","options":{"angle":45}},{"name":"resize","options":{"width":100,"height":100}}],
                "stack_options":{"jpg.quality":77},"stack_expressions":[],"stack_variables":{},
                "link":"/stacks/rokka-js-tests/mystack"})
        );
    }

    #[test]
    fn the_response_always_has_options_and_shows_description_and_expressions_when_set() {
        let def = parse(json!({"description":"d","operations":[{"name":"sepia"},{"name":"resize","expressions":{"width":"$w"}}],"variables":{"w":3}})).unwrap();

        let body = stack_json("o", "s", "t", &def);

        assert_eq!(body["description"], json!("d"));
        assert_eq!(
            body["stack_operations"][0],
            json!({"name":"sepia","options":{}})
        );
        assert_eq!(
            body["stack_operations"][1]["expressions"],
            json!({"width":"$w"})
        );
    }

    #[test]
    fn definitions_survive_a_storage_round_trip() {
        let def = parse(json!({"description":"d","operations":[{"name":"dropshadow","options":{"sigma":0.5}}],"options":{"dpr":1.5},"variables":{"w":3,"t":"x"},
            "expressions":[{"expression":"options.dpr >= 2","overrides":{"options":{"jpg.quality":60}}}]})).unwrap();

        let bytes = serde_json::to_vec(&def).unwrap();
        let back: StackDefinition = serde_json::from_slice(&bytes).unwrap();

        assert_eq!(back, def);
    }
}
