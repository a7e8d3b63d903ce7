//! The expression language of stacks (rokka, spec §5.5): the syntax of Symfony's
//! ExpressionLanguage, parsed into a tree and evaluated over JSON values. Pure: no I/O, no
//! clock, no randomness, so an expression's value is a function of its context, and the
//! render key that includes it stays a function of the URL.
//!
//! Grammar and precedence follow Symfony's parser (precedence climbing): unary `not`/`!` (50)
//! and `-`/`+` (500); binary `or ||` (10), `and &&` (15), `| ^ &` (16–18), comparisons `==
//! === != !== < > <= >= in not in contains starts with ends with matches` (20), `..` (25),
//! `+ -` (30), `~` (40), `* / %` (60) and right-associative `**` (200); then `??` and the
//! conditionals `a ? b : c`, `a ?: b`, `a ? b` at the lowest level; `.`, `?.` and `[]` access
//! bind tightest. Stack variables are written `$name`; the other names an expression may use
//! are given by the caller (`image`, `options`, `request`). Values behave as in PHP where a
//! stack author would notice: integer arithmetic stays integral, `/` of two integers that do
//! not divide is a float, `~` concatenates PHP's string forms, `==` compares loosely and `===`
//! strictly, and `0`, `""`, `"0"`, `[]`, `null` and `false` are falsy.
//!
//! Hostile input is bounded: expressions are at most [`MAX_LEN`] bytes and [`MAX_DEPTH`]
//! levels deep, ranges at most [`MAX_RANGE`] elements, strings at most [`MAX_STRING`] bytes,
//! and `matches` compiles with a size limit into a linear-time engine.

use serde_json::{Map, Number, Value};

/// The names a stack's expressions may use besides `$variables`.
pub const CONTEXT_NAMES: &[&str] = &["image", "options", "request"];

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting accepted (parentheses, operators, literals).
pub const MAX_DEPTH: usize = 64;
/// Most binary operators in one expression (a left-associative chain nests as deep).
pub const MAX_OPERATORS: usize = 256;
/// Most elements a range `a..b` may produce.
pub const MAX_RANGE: i64 = 10_000;
/// Longest string an expression may build, in bytes.
pub const MAX_STRING: usize = 64 * 1024;
/// Compiled size limit of a `matches` pattern.
const REGEX_SIZE: usize = 1 << 20;

/// A syntax error, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} around position {position}")]
pub struct SyntaxError {
    pub message: String,
    pub position: usize,
}

/// An error while evaluating: a wrong type, a division by zero, an unknown field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A parsed expression, ready to be evaluated any number of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    node: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Const(Value),
    /// `$name`.
    Variable(String),
    /// A context name (`image`, `options`, `request`).
    Name(String),
    Array(Vec<Node>),
    Hash(Vec<(Node, Node)>),
    /// `.name` / `?.name` (null-safe) / `[index]`.
    Get {
        target: Box<Node>,
        key: Box<Node>,
        null_safe: bool,
    },
    Unary(UnOp, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    /// `a ? b : c` (and `a ?: b` as `a ? a : b`, `a ? b` as `a ? b : null`).
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    /// `a ?: b`: `a` when truthy, else `b` (evaluates `a` once).
    Elvis(Box<Node>, Box<Node>),
    /// `a ?? b`: `a` unless it is null or missing.
    Coalesce(Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnOp {
    Not,
    Neg,
    Plus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    BitOr,
    BitXor,
    BitAnd,
    Eq,
    Identical,
    NotEq,
    NotIdentical,
    Lt,
    Gt,
    Ge,
    Le,
    NotIn,
    In,
    Contains,
    StartsWith,
    EndsWith,
    Matches,
    Range,
    Add,
    Sub,
    Concat,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinOp {
    /// Symfony's precedence and whether the operator is right-associative.
    fn of(text: &str) -> Option<(BinOp, u16, bool)> {
        use BinOp::*;
        Some(match text {
            "or" | "||" => (Or, 10, false),
            "and" | "&&" => (And, 15, false),
            "|" => (BitOr, 16, false),
            "^" => (BitXor, 17, false),
            "&" => (BitAnd, 18, false),
            "==" => (Eq, 20, false),
            "===" => (Identical, 20, false),
            "!=" => (NotEq, 20, false),
            "!==" => (NotIdentical, 20, false),
            "<" => (Lt, 20, false),
            ">" => (Gt, 20, false),
            ">=" => (Ge, 20, false),
            "<=" => (Le, 20, false),
            "not in" => (NotIn, 20, false),
            "in" => (In, 20, false),
            "contains" => (Contains, 20, false),
            "starts with" => (StartsWith, 20, false),
            "ends with" => (EndsWith, 20, false),
            "matches" => (Matches, 20, false),
            ".." => (Range, 25, false),
            "+" => (Add, 30, false),
            "-" => (Sub, 30, false),
            "~" => (Concat, 40, false),
            "*" => (Mul, 60, false),
            "/" => (Div, 60, false),
            "%" => (Mod, 60, false),
            "**" => (Pow, 200, true),
            _ => return None,
        })
    }
}

// ---- lexing ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Number(Value),
    Str(String),
    Name(String),
    Variable(String),
    Op(&'static str),
    Punct(&'static str),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    at: usize,
}

/// Operators, longest first so that `!==` is not read as `!=` `=`. Word operators are
/// matched only as whole words.
const OPERATORS: &[&str] = &[
    "starts with",
    "ends with",
    "contains",
    "matches",
    "not in",
    "===",
    "!==",
    "and",
    "not",
    "**",
    "==",
    "!=",
    ">=",
    "<=",
    "||",
    "&&",
    "..",
    "or",
    "in",
    "<",
    ">",
    "+",
    "-",
    "~",
    "*",
    "/",
    "%",
    "!",
    "|",
    "^",
    "&",
];

const PUNCTUATION: &[&str] = &["?.", "??", "?", ":", ".", ",", "(", ")", "[", "]", "{", "}"];

fn syntax(message: impl Into<String>, position: usize) -> SyntaxError {
    SyntaxError {
        message: message.into(),
        position,
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()
}

fn lex(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let at = i;
        if c.is_ascii_digit()
            || (c == '.'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !rest.starts_with(".."))
        {
            let (tok, len) = lex_number(rest).ok_or_else(|| syntax("malformed number", at))?;
            out.push(Token { tok, at });
            i += len;
            continue;
        }
        if c == '\'' || c == '"' {
            let (s, len) = lex_string(rest, c).ok_or_else(|| syntax("unclosed string", at))?;
            out.push(Token {
                tok: Tok::Str(s),
                at,
            });
            i += len;
            continue;
        }
        if c == '$' {
            let name: String = rest[1..].chars().take_while(|&c| is_name_char(c)).collect();
            if name.is_empty() || !name.chars().next().is_some_and(is_name_start) {
                return Err(syntax("`$` must be followed by a variable name", at));
            }
            i += 1 + name.len();
            out.push(Token {
                tok: Tok::Variable(name),
                at,
            });
            continue;
        }
        // Operators before names, so that `not`, `and`, `in` … are operators; a word operator
        // must end at a word boundary (`index` is a name, not `in` + `dex`).
        let op = OPERATORS.iter().find(|op| {
            rest.starts_with(**op)
                && (!op.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
                    || !rest[op.len()..].chars().next().is_some_and(is_name_char))
        });
        // `..` followed by a digit after a number is a range, handled above; `.` alone is
        // punctuation.
        if let Some(op) = op {
            // A `.` starting `..`: range operator; other punctuation comes next.
            out.push(Token {
                tok: Tok::Op(op),
                at,
            });
            i += op.len();
            continue;
        }
        if let Some(p) = PUNCTUATION.iter().find(|p| rest.starts_with(**p)) {
            out.push(Token {
                tok: Tok::Punct(p),
                at,
            });
            i += p.len();
            continue;
        }
        if is_name_start(c) {
            let name: String = rest.chars().take_while(|&c| is_name_char(c)).collect();
            i += name.len();
            out.push(Token {
                tok: Tok::Name(name),
                at,
            });
            continue;
        }
        return Err(syntax(format!("unexpected character `{c}`"), at));
    }
    out.push(Token {
        tok: Tok::End,
        at: text.len(),
    });
    Ok(out)
}

/// A number literal: digits, an optional fraction, an optional exponent; `_` separators.
fn lex_number(s: &str) -> Option<(Tok, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && (b[*i].is_ascii_digit() || (b[*i] == b'_' && *i > start)) {
            *i += 1;
        }
        *i > start
    };
    let int_part = digits(&mut i);
    let mut float = false;
    // A fraction needs a digit after the dot, so that `1..5` stays a range.
    if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i += 1;
        digits(&mut i);
        float = true;
    } else if !int_part {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            i = j;
            digits(&mut i);
            float = true;
        }
    }
    let text: String = s[..i].chars().filter(|&c| c != '_').collect();
    let value = if float {
        Number::from_f64(text.parse::<f64>().ok()?).map(Value::Number)?
    } else {
        match text.parse::<i64>() {
            Ok(n) => Value::from(n),
            // PHP reads integers past i64 as floats.
            Err(_) => Number::from_f64(text.parse::<f64>().ok()?).map(Value::Number)?,
        }
    };
    Some((Tok::Number(value), i))
}

/// A quoted string with backslash escapes (`\n`, `\t`, `\\`, `\'`, `\"`, …).
fn lex_string(s: &str, quote: char) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Some((out, i + 1));
        }
        if c == '\\' {
            let (_, e) = chars.next()?;
            out.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                other => other,
            });
        } else {
            out.push(c);
        }
    }
    None
}

// ---- parsing ----

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    names: &'a [&'a str],
    depth: usize,
    operators: usize,
}

impl Expr {
    /// Parses `text`. `names` are the context names it may use besides `$variables`.
    pub fn parse(text: &str, names: &[&str]) -> Result<Expr, SyntaxError> {
        if text.len() > MAX_LEN {
            return Err(syntax(
                format!("the expression is longer than {MAX_LEN} bytes"),
                MAX_LEN,
            ));
        }
        let mut p = Parser {
            tokens: lex(text)?,
            pos: 0,
            names,
            depth: 0,
            operators: 0,
        };
        let node = p.expression(0)?;
        let t = p.peek();
        if t.tok != Tok::End {
            return Err(syntax(format!("unexpected {}", describe(&t.tok)), t.at));
        }
        Ok(Expr { node })
    }

    /// The `$variables` the expression reads, in order of appearance.
    pub fn variables(&self) -> Vec<&str> {
        let mut out = Vec::new();
        walk(&self.node, &mut |n| {
            if let Node::Variable(v) = n {
                if !out.contains(&v.as_str()) {
                    out.push(v.as_str());
                }
            }
        });
        out
    }

    /// Whether the expression reads the context name `name` (`request`, `image`, …).
    pub fn uses_name(&self, name: &str) -> bool {
        let mut found = false;
        walk(&self.node, &mut |n| {
            if matches!(n, Node::Name(x) if x == name) {
                found = true;
            }
        });
        found
    }

    /// Evaluates the expression. `variables` answers `$name`; `context` holds the names.
    pub fn eval(
        &self,
        context: &Map<String, Value>,
        variables: &dyn Fn(&str) -> Option<Value>,
    ) -> Result<Value, EvalError> {
        Eval { context, variables }.node(&self.node)
    }
}

fn walk<'a>(node: &'a Node, f: &mut dyn FnMut(&'a Node)) {
    f(node);
    match node {
        Node::Const(_) | Node::Variable(_) | Node::Name(_) => {}
        Node::Array(items) => items.iter().for_each(|n| walk(n, f)),
        Node::Hash(items) => items.iter().for_each(|(k, v)| {
            walk(k, f);
            walk(v, f);
        }),
        Node::Get { target, key, .. } => {
            walk(target, f);
            walk(key, f);
        }
        Node::Unary(_, a) => walk(a, f),
        Node::Binary(_, a, b) | Node::Elvis(a, b) | Node::Coalesce(a, b) => {
            walk(a, f);
            walk(b, f);
        }
        Node::Conditional(a, b, c) => {
            walk(a, f);
            walk(b, f);
            walk(c, f);
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Number(n) => format!("number {n}"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Name(n) => format!("name `{n}`"),
        Tok::Variable(v) => format!("variable `${v}`"),
        Tok::Op(o) | Tok::Punct(o) => format!("`{o}`"),
        Tok::End => "end of expression".into(),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Token {
        self.tokens.get(self.pos).cloned().unwrap_or(Token {
            tok: Tok::End,
            at: 0,
        })
    }

    fn next(&mut self) -> Token {
        let t = self.peek();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek().tok, Tok::Punct(q) if q == p)
    }

    fn expect(&mut self, p: &str, message: &str) -> Result<(), SyntaxError> {
        let t = self.next();
        match t.tok {
            Tok::Punct(q) if q == p => Ok(()),
            other => Err(syntax(
                format!("{message} (found {})", describe(&other)),
                t.at,
            )),
        }
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(syntax(
                format!("the expression is nested deeper than {MAX_DEPTH} levels"),
                self.peek().at,
            ));
        }
        Ok(())
    }

    fn expression(&mut self, precedence: u16) -> Result<Node, SyntaxError> {
        self.enter()?;
        let mut left = self.primary()?;
        loop {
            let Tok::Op(text) = self.peek().tok else {
                break;
            };
            let Some((op, p, right)) = BinOp::of(text) else {
                break;
            };
            if p < precedence {
                break;
            }
            let at = self.next().at;
            self.operators += 1;
            if self.operators > MAX_OPERATORS {
                return Err(syntax(
                    format!("the expression has more than {MAX_OPERATORS} operators"),
                    at,
                ));
            }
            let rhs = self.expression(if right { p } else { p + 1 })?;
            left = Node::Binary(op, Box::new(left), Box::new(rhs));
        }
        if precedence == 0 {
            left = self.conditional(left)?;
        }
        self.depth -= 1;
        Ok(left)
    }

    fn conditional(&mut self, mut expr: Node) -> Result<Node, SyntaxError> {
        while self.is_punct("??") {
            self.next();
            let other = self.expression(0)?;
            expr = Node::Coalesce(Box::new(expr), Box::new(other));
        }
        while self.is_punct("?") {
            self.next();
            if self.is_punct(":") {
                self.next();
                let other = self.expression(0)?;
                expr = Node::Elvis(Box::new(expr), Box::new(other));
            } else {
                let then = self.expression(0)?;
                let otherwise = if self.is_punct(":") {
                    self.next();
                    self.expression(0)?
                } else {
                    Node::Const(Value::Null)
                };
                expr = Node::Conditional(Box::new(expr), Box::new(then), Box::new(otherwise));
            }
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        let t = self.peek();
        if let Tok::Op(op @ ("not" | "!" | "-" | "+")) = t.tok {
            self.next();
            let (un, p) = match op {
                "not" | "!" => (UnOp::Not, 50),
                "-" => (UnOp::Neg, 500),
                _ => (UnOp::Plus, 500),
            };
            let operand = self.expression(p)?;
            return self.postfix(Node::Unary(un, Box::new(operand)));
        }
        if self.is_punct("(") {
            self.next();
            let inner = self.expression(0)?;
            self.expect(")", "an opened parenthesis is not closed")?;
            return self.postfix(inner);
        }
        let t = self.next();
        let node = match t.tok {
            Tok::Number(n) => return Ok(Node::Const(n)),
            Tok::Str(s) => return Ok(Node::Const(Value::String(s))),
            Tok::Variable(v) => Node::Variable(v),
            Tok::Name(n) => match n.as_str() {
                "true" | "TRUE" => Node::Const(Value::Bool(true)),
                "false" | "FALSE" => Node::Const(Value::Bool(false)),
                "null" | "NULL" => Node::Const(Value::Null),
                _ if self.is_punct("(") => {
                    return Err(syntax(format!("the function `{n}` does not exist"), t.at))
                }
                _ if self.names.contains(&n.as_str()) => Node::Name(n),
                _ => {
                    return Err(syntax(
                        format!(
                            "unknown name `{n}` (expressions may use {} and $variables)",
                            self.names.join(", ")
                        ),
                        t.at,
                    ))
                }
            },
            Tok::Punct("[") => {
                let mut items = Vec::new();
                while !self.is_punct("]") {
                    if !items.is_empty() {
                        self.expect(",", "array elements are separated by commas")?;
                        if self.is_punct("]") {
                            break;
                        }
                    }
                    items.push(self.expression(0)?);
                }
                self.expect("]", "an opened array is not closed")?;
                Node::Array(items)
            }
            Tok::Punct("{") => {
                let mut items = Vec::new();
                while !self.is_punct("}") {
                    if !items.is_empty() {
                        self.expect(",", "hash entries are separated by commas")?;
                        if self.is_punct("}") {
                            break;
                        }
                    }
                    let k = self.peek();
                    let key = match k.tok {
                        Tok::Str(s) | Tok::Name(s) => {
                            self.next();
                            Node::Const(Value::String(s))
                        }
                        Tok::Number(n) => {
                            self.next();
                            Node::Const(n)
                        }
                        Tok::Punct("(") => self.expression(0)?,
                        other => {
                            return Err(syntax(
                                format!("a hash key must be a string, a number, a name or a parenthesised expression (found {})", describe(&other)),
                                k.at,
                            ))
                        }
                    };
                    self.expect(":", "a hash key is followed by a colon")?;
                    items.push((key, self.expression(0)?));
                }
                self.expect("}", "an opened hash is not closed")?;
                Node::Hash(items)
            }
            other => return Err(syntax(format!("unexpected {}", describe(&other)), t.at)),
        };
        self.postfix(node)
    }

    fn postfix(&mut self, mut node: Node) -> Result<Node, SyntaxError> {
        loop {
            if self.is_punct(".") || self.is_punct("?.") {
                let null_safe = self.is_punct("?.");
                self.next();
                let t = self.next();
                let name = match t.tok {
                    Tok::Name(n) => n,
                    // Word operators are valid property names (`foo.not`, `a.matches`).
                    Tok::Op(op) if op.chars().all(|c| c.is_ascii_alphabetic()) => op.to_string(),
                    other => {
                        return Err(syntax(
                            format!("a property name was expected (found {})", describe(&other)),
                            t.at,
                        ))
                    }
                };
                if self.is_punct("(") {
                    return Err(syntax(
                        format!("methods cannot be called (`{name}(…)`)"),
                        t.at,
                    ));
                }
                node = Node::Get {
                    target: Box::new(node),
                    key: Box::new(Node::Const(Value::String(name))),
                    null_safe,
                };
            } else if self.is_punct("[") {
                self.next();
                let key = self.expression(0)?;
                self.expect("]", "an opened index is not closed")?;
                node = Node::Get {
                    target: Box::new(node),
                    key: Box::new(key),
                    null_safe: false,
                };
            } else {
                return Ok(node);
            }
        }
    }
}

// ---- evaluation ----

struct Eval<'a> {
    context: &'a Map<String, Value>,
    variables: &'a dyn Fn(&str) -> Option<Value>,
}

fn err(m: impl Into<String>) -> EvalError {
    EvalError(m.into())
}

/// PHP's truthiness.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !(s.is_empty() || s == "0"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A number as arithmetic sees it.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

fn numeric_string(s: &str) -> Option<Num> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Num::Int(i));
    }
    // Rust accepts "inf" and "NaN"; PHP does not.
    if t.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Num::Float);
    }
    None
}

fn to_num(v: &Value, op: &str) -> Result<Num, EvalError> {
    match v {
        Value::Null => Ok(Num::Int(0)),
        Value::Bool(b) => Ok(Num::Int(i64::from(*b))),
        Value::Number(n) => Ok(match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64().unwrap_or(0.0)),
        }),
        Value::String(s) => numeric_string(s)
            .ok_or_else(|| err(format!("`{op}` needs numbers, got the string \"{s}\""))),
        Value::Array(_) | Value::Object(_) => {
            Err(err(format!("`{op}` needs numbers, got {}", type_name(v))))
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a hash",
    }
}

fn num_value(n: Num) -> Result<Value, EvalError> {
    match n {
        Num::Int(i) => Ok(Value::from(i)),
        Num::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| err("the result is not a finite number")),
    }
}

/// PHP's string form of a scalar (`true` → "1", `null`/`false` → "", 2.0 → "2").
pub fn php_string(v: &Value) -> Result<String, EvalError> {
    Ok(match v {
        Value::Null | Value::Bool(false) => String::new(),
        Value::Bool(true) => "1".into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    format!("{}", f as i64)
                } else {
                    format!("{f}")
                }
            }
        },
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => {
            return Err(err(format!("{} cannot be used as a string", type_name(v))))
        }
    })
}

/// PHP 8's loose comparison `==`.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(_) | Value::Null, _) | (_, Value::Bool(_) | Value::Null) => {
            truthy(a) == truthy(b)
        }
        (Value::Number(_), Value::Number(_)) => cmp_num(a, b) == Some(std::cmp::Ordering::Equal),
        (Value::Number(_), Value::String(s)) | (Value::String(s), Value::Number(_)) => {
            let n = if let Value::Number(_) = a { a } else { b };
            match numeric_string(s) {
                Some(m) => to_num(n, "==").is_ok_and(|k| k.f() == m.f()),
                None => php_string(n).is_ok_and(|t| &t == s),
            }
        }
        (Value::String(x), Value::String(y)) => match (numeric_string(x), numeric_string(y)) {
            (Some(p), Some(q)) => p.f() == q.f(),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| loose_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| loose_eq(v, w)))
        }
        _ => false,
    }
}

/// `===`: same type and value (an integer is not identical to a float).
fn identical(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_i64() != y.is_i64() {
                false
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| identical(p, q))
        }
        _ => a == b,
    }
}

fn cmp_num(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    let (x, y) = (to_num(a, "<").ok()?, to_num(b, "<").ok()?);
    match (x, y) {
        (Num::Int(p), Num::Int(q)) => Some(p.cmp(&q)),
        _ => x.f().partial_cmp(&y.f()),
    }
}

/// `<`, `>` …: numbers (and numeric strings) numerically, other strings byte-wise.
fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, EvalError> {
    let numeric = |v: &Value| match v {
        Value::Number(_) | Value::Null | Value::Bool(_) => true,
        Value::String(s) => numeric_string(s).is_some(),
        _ => false,
    };
    match (a, b) {
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            Err(err(format!(
                "{} and {} cannot be compared",
                type_name(a),
                type_name(b)
            )))
        }
        (Value::Bool(_) | Value::Null, _) | (_, Value::Bool(_) | Value::Null) => {
            Ok(truthy(a).cmp(&truthy(b)))
        }
        _ if numeric(a) && numeric(b) => cmp_num(a, b).ok_or_else(|| err("cannot compare")),
        _ => Ok(php_string(a)?.cmp(&php_string(b)?)),
    }
}

fn int_of(v: &Value, op: &str) -> Result<i64, EvalError> {
    match to_num(v, op)? {
        Num::Int(i) => Ok(i),
        Num::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Ok(f.trunc() as i64),
        Num::Float(_) => Err(err(format!("`{op}` needs a whole number"))),
    }
}

fn check_len(s: String) -> Result<Value, EvalError> {
    if s.len() > MAX_STRING {
        return Err(err(format!("a string longer than {MAX_STRING} bytes")));
    }
    Ok(Value::String(s))
}

/// A PHP regular expression `/pattern/flags` (any non-alphanumeric delimiter) as a linear-time
/// regex, size-limited.
fn php_regex(pattern: &str) -> Result<regex::Regex, EvalError> {
    let mut chars = pattern.chars();
    let delimiter = chars
        .next()
        .filter(|c| !c.is_alphanumeric() && *c != '\\' && !c.is_whitespace())
        .ok_or_else(|| {
            err(format!(
                "`matches` needs a delimited pattern such as \"/…/\", got \"{pattern}\""
            ))
        })?;
    let closing = match delimiter {
        '(' => ')',
        '[' => ']',
        '{' => '}',
        '<' => '>',
        d => d,
    };
    let body = &pattern[delimiter.len_utf8()..];
    let end = body.rfind(closing).ok_or_else(|| {
        err(format!(
            "the pattern \"{pattern}\" has no closing delimiter"
        ))
    })?;
    let (expr, flags) = (&body[..end], &body[end + closing.len_utf8()..]);
    let mut builder = regex::RegexBuilder::new(expr);
    builder.size_limit(REGEX_SIZE).dfa_size_limit(REGEX_SIZE);
    for f in flags.chars() {
        match f {
            'i' => {
                builder.case_insensitive(true);
            }
            'm' => {
                builder.multi_line(true);
            }
            's' => {
                builder.dot_matches_new_line(true);
            }
            'x' => {
                builder.ignore_whitespace(true);
            }
            'u' | 'D' => {}
            other => return Err(err(format!("the pattern flag `{other}` is not supported"))),
        }
    }
    builder
        .build()
        .map_err(|e| err(format!("the pattern \"{pattern}\" is not valid: {e}")))
}

/// Reads `key` of `target`; `None` when it is missing.
fn get(target: &Value, key: &Value) -> Result<Option<Value>, EvalError> {
    match target {
        Value::Object(m) => Ok(m.get(&php_string(key)?).cloned()),
        Value::Array(a) => {
            let i = int_of(key, "[]")?;
            Ok(usize::try_from(i).ok().and_then(|i| a.get(i)).cloned())
        }
        Value::String(s) => {
            let i = int_of(key, "[]")?;
            Ok(usize::try_from(i)
                .ok()
                .and_then(|i| s.chars().nth(i))
                .map(|c| Value::String(c.to_string())))
        }
        other => Err(err(format!(
            "cannot read `{}` of {}",
            php_string(key).unwrap_or_default(),
            type_name(other)
        ))),
    }
}

impl Eval<'_> {
    fn node(&self, node: &Node) -> Result<Value, EvalError> {
        match node {
            Node::Const(v) => Ok(v.clone()),
            Node::Variable(name) => {
                (self.variables)(name).ok_or_else(|| err(format!("unknown variable `${name}`")))
            }
            Node::Name(name) => Ok(self.context.get(name).cloned().unwrap_or(Value::Null)),
            Node::Array(items) => Ok(Value::Array(
                items
                    .iter()
                    .map(|n| self.node(n))
                    .collect::<Result<_, _>>()?,
            )),
            Node::Hash(items) => {
                let mut m = Map::new();
                for (k, v) in items {
                    m.insert(php_string(&self.node(k)?)?, self.node(v)?);
                }
                Ok(Value::Object(m))
            }
            Node::Get { .. } => self
                .lookup(node)?
                .ok_or_else(|| err(format!("{} is not set", path_text(node)))),
            Node::Unary(op, a) => {
                let v = self.node(a)?;
                match op {
                    UnOp::Not => Ok(Value::Bool(!truthy(&v))),
                    UnOp::Plus => num_value(to_num(&v, "+")?),
                    UnOp::Neg => match to_num(&v, "-")? {
                        Num::Int(i) => {
                            num_value(i.checked_neg().map_or(Num::Float(-(i as f64)), Num::Int))
                        }
                        Num::Float(f) => num_value(Num::Float(-f)),
                    },
                }
            }
            Node::Binary(op, a, b) => self.binary(*op, a, b),
            Node::Conditional(c, t, e) => {
                if truthy(&self.node(c)?) {
                    self.node(t)
                } else {
                    self.node(e)
                }
            }
            Node::Elvis(a, b) => {
                let v = self.node(a)?;
                if truthy(&v) {
                    Ok(v)
                } else {
                    self.node(b)
                }
            }
            Node::Coalesce(a, b) => {
                let v = match &**a {
                    Node::Get { .. } => self.lookup(a)?,
                    Node::Variable(name) => (self.variables)(name),
                    other => Some(self.node(other)?),
                };
                match v {
                    Some(v) if !v.is_null() => Ok(v),
                    _ => self.node(b),
                }
            }
        }
    }

    /// Follows an access chain; `None` when a link is missing (or null, after `?.`).
    fn lookup(&self, node: &Node) -> Result<Option<Value>, EvalError> {
        match node {
            Node::Get {
                target,
                key,
                null_safe,
            } => {
                let Some(t) = self.lookup(target)? else {
                    return Ok(None);
                };
                if t.is_null() && *null_safe {
                    return Ok(None);
                }
                let k = self.node(key)?;
                get(&t, &k)
            }
            Node::Variable(name) => Ok((self.variables)(name)),
            other => self.node(other).map(Some),
        }
    }

    fn binary(&self, op: BinOp, a: &Node, b: &Node) -> Result<Value, EvalError> {
        use BinOp::*;
        // Short-circuit before evaluating the right side.
        match op {
            Or => {
                return Ok(Value::Bool(
                    truthy(&self.node(a)?) || truthy(&self.node(b)?),
                ))
            }
            And => {
                return Ok(Value::Bool(
                    truthy(&self.node(a)?) && truthy(&self.node(b)?),
                ))
            }
            _ => {}
        }
        let (l, r) = (self.node(a)?, self.node(b)?);
        let sym = op_text(op);
        Ok(match op {
            Or | And => Value::Bool(false),
            BitOr => Value::from(int_of(&l, sym)? | int_of(&r, sym)?),
            BitXor => Value::from(int_of(&l, sym)? ^ int_of(&r, sym)?),
            BitAnd => Value::from(int_of(&l, sym)? & int_of(&r, sym)?),
            Eq => Value::Bool(loose_eq(&l, &r)),
            NotEq => Value::Bool(!loose_eq(&l, &r)),
            Identical => Value::Bool(identical(&l, &r)),
            NotIdentical => Value::Bool(!identical(&l, &r)),
            Lt => Value::Bool(compare(&l, &r)?.is_lt()),
            Gt => Value::Bool(compare(&l, &r)?.is_gt()),
            Le => Value::Bool(compare(&l, &r)?.is_le()),
            Ge => Value::Bool(compare(&l, &r)?.is_ge()),
            In | NotIn => {
                let found = match &r {
                    Value::Array(items) => items.iter().any(|x| identical(x, &l)),
                    Value::Object(m) => m.values().any(|x| identical(x, &l)),
                    other => {
                        return Err(err(format!(
                            "`{sym}` needs an array on its right, got {}",
                            type_name(other)
                        )))
                    }
                };
                Value::Bool(found == (op == In))
            }
            Contains => Value::Bool(php_string(&l)?.contains(&php_string(&r)?)),
            StartsWith => Value::Bool(php_string(&l)?.starts_with(&php_string(&r)?)),
            EndsWith => Value::Bool(php_string(&l)?.ends_with(&php_string(&r)?)),
            Matches => {
                let pattern = php_string(&r)?;
                Value::Bool(php_regex(&pattern)?.is_match(&php_string(&l)?))
            }
            Range => {
                let (from, to) = (int_of(&l, sym)?, int_of(&r, sym)?);
                if (to - from).unsigned_abs() >= MAX_RANGE as u64 {
                    return Err(err(format!("a range of more than {MAX_RANGE} elements")));
                }
                let items: Vec<Value> = if from <= to {
                    (from..=to).map(Value::from).collect()
                } else {
                    (to..=from).rev().map(Value::from).collect()
                };
                Value::Array(items)
            }
            Concat => check_len(php_string(&l)? + &php_string(&r)?)?,
            Add | Sub | Mul => {
                let (x, y) = (to_num(&l, sym)?, to_num(&r, sym)?);
                let n = match (x, y) {
                    (Num::Int(p), Num::Int(q)) => {
                        let exact = match op {
                            Add => p.checked_add(q),
                            Sub => p.checked_sub(q),
                            _ => p.checked_mul(q),
                        };
                        exact
                            .map(Num::Int)
                            .unwrap_or_else(|| Num::Float(float_op(op, p as f64, q as f64)))
                    }
                    _ => Num::Float(float_op(op, x.f(), y.f())),
                };
                num_value(n)?
            }
            Div => {
                let (x, y) = (to_num(&l, sym)?, to_num(&r, sym)?);
                if y.f() == 0.0 {
                    return Err(err("division by zero"));
                }
                match (x, y) {
                    (Num::Int(p), Num::Int(q)) if q != 0 && p % q == 0 => num_value(
                        p.checked_div(q)
                            .map_or(Num::Float(p as f64 / q as f64), Num::Int),
                    )?,
                    _ => num_value(Num::Float(x.f() / y.f()))?,
                }
            }
            Mod => {
                let (p, q) = (int_of(&l, sym)?, int_of(&r, sym)?);
                if q == 0 {
                    return Err(err("modulo by zero"));
                }
                Value::from(p.checked_rem(q).unwrap_or(0))
            }
            Pow => {
                let (x, y) = (to_num(&l, sym)?, to_num(&r, sym)?);
                let n = match (x, y) {
                    (Num::Int(p), Num::Int(q)) if (0..=u32::MAX as i64).contains(&q) => p
                        .checked_pow(q as u32)
                        .map(Num::Int)
                        .unwrap_or_else(|| Num::Float((p as f64).powf(q as f64))),
                    _ => Num::Float(x.f().powf(y.f())),
                };
                num_value(n)?
            }
        })
    }
}

fn float_op(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        _ => a * b,
    }
}

fn op_text(op: BinOp) -> &'static str {
    use BinOp::*;
    match op {
        Or => "or",
        And => "and",
        BitOr => "|",
        BitXor => "^",
        BitAnd => "&",
        Eq => "==",
        Identical => "===",
        NotEq => "!=",
        NotIdentical => "!==",
        Lt => "<",
        Gt => ">",
        Ge => ">=",
        Le => "<=",
        NotIn => "not in",
        In => "in",
        Contains => "contains",
        StartsWith => "starts with",
        EndsWith => "ends with",
        Matches => "matches",
        Range => "..",
        Add => "+",
        Sub => "-",
        Concat => "~",
        Mul => "*",
        Div => "/",
        Mod => "%",
        Pow => "**",
    }
}

/// `image.subject_area.width` for messages.
fn path_text(node: &Node) -> String {
    match node {
        Node::Name(n) => n.clone(),
        Node::Variable(v) => format!("${v}"),
        Node::Get { target, key, .. } => match &**key {
            Node::Const(Value::String(s)) => format!("{}.{s}", path_text(target)),
            Node::Const(v) => format!("{}[{v}]", path_text(target)),
            _ => format!("{}[…]", path_text(target)),
        },
        _ => "the value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NAMES: &[&str] = &["image", "options", "request"];

    fn context() -> Map<String, Value> {
        json!({
            "image": {"width": 1200, "height": 800, "format": "jpg", "hash": "abc",
                      "isAnimated": false, "hasSubjectArea": true,
                      "subject_area": {"x": 10, "y": 20, "width": 300, "height": 200},
                      "meta_user": {"tag": "hero"}},
            "options": {"dpr": 2},
            "request": {"headers": {"save_data": "on"}}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn eval(text: &str) -> Result<Value, EvalError> {
        let vars = |name: &str| match name {
            "w" => Some(json!(300)),
            "s" => Some(json!("Hello")),
            "n" => Some(Value::Null),
            _ => None,
        };
        Expr::parse(text, NAMES)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .eval(&context(), &vars)
    }

    fn ok(text: &str) -> Value {
        eval(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn literals() {
        assert_eq!(ok("42"), json!(42));
        assert_eq!(ok("4.5"), json!(4.5));
        assert_eq!(ok("1_000"), json!(1000));
        assert_eq!(ok("1e3"), json!(1000.0));
        assert_eq!(ok("'it\\'s'"), json!("it's"));
        assert_eq!(ok("\"a\\\"b\""), json!("a\"b"));
        assert_eq!(ok("true"), json!(true));
        assert_eq!(ok("NULL"), Value::Null);
        assert_eq!(ok("[1, 'a', [2]]"), json!([1, "a", [2]]));
        assert_eq!(
            ok("{a: 1, 'b': 2, 3: 'c', (1 + 1): 'd'}"),
            json!({"a":1,"b":2,"3":"c","2":"d"})
        );
        assert_eq!(ok("[1, 2,]"), json!([1, 2]));
    }

    #[test]
    fn arithmetic_follows_symfonys_precedence() {
        assert_eq!(ok("1 + 2 * 3"), json!(7));
        assert_eq!(ok("(1 + 2) * 3"), json!(9));
        assert_eq!(ok("2 ** 3 ** 2"), json!(512));
        assert_eq!(ok("-2 ** 2"), json!(4)); // unary minus binds tighter than ** in Symfony
        assert_eq!(ok("10 - 2 - 3"), json!(5));
        assert_eq!(ok("7 % 3"), json!(1));
        assert_eq!(ok("7 / 2"), json!(3.5));
        assert_eq!(ok("6 / 2"), json!(3));
        // `~` binds tighter than `+`, as in Symfony.
        assert_eq!(ok("1 + 2 ~ 3"), json!(24));
        assert_eq!(ok("(1 + 2) ~ 3"), json!("33"));
        assert_eq!(ok("'a' ~ 1.0 ~ true ~ null"), json!("a11"));
        assert_eq!(ok("$w * 1.5"), json!(450.0));
        assert_eq!(ok("'3' + 4"), json!(7));
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(ok("1 == '1'"), json!(true));
        assert_eq!(ok("1 === '1'"), json!(false));
        assert_eq!(ok("1 !== 1.0"), json!(true));
        assert_eq!(ok("'abc' == 0"), json!(false));
        assert_eq!(ok("null == false"), json!(true));
        assert_eq!(ok("2 > 1 and 1 > 2"), json!(false));
        assert_eq!(ok("2 > 1 && not (1 > 2)"), json!(true));
        assert_eq!(ok("false or 1"), json!(true));
        assert_eq!(ok("!0"), json!(true));
        assert_eq!(ok("'10' < '9'"), json!(false));
        assert_eq!(ok("'b' > 'a'"), json!(true));
        assert_eq!(ok("not true or true"), json!(true));
    }

    #[test]
    fn membership_ranges_and_strings() {
        assert_eq!(ok("2 in [1, 2]"), json!(true));
        assert_eq!(ok("'2' in [1, 2]"), json!(false));
        assert_eq!(ok("3 not in 1..2"), json!(true));
        assert_eq!(ok("1..4"), json!([1, 2, 3, 4]));
        assert_eq!(ok("'hello' contains 'ell'"), json!(true));
        assert_eq!(ok("'hello' starts with 'he'"), json!(true));
        assert_eq!(ok("'hello' ends with 'lo'"), json!(true));
        assert_eq!(ok("'Hello' matches '/^h/i'"), json!(true));
        assert_eq!(ok("image.format matches '{^(jpe?g|png)$}'"), json!(true));
    }

    #[test]
    fn conditionals_and_coalescing() {
        assert_eq!(ok("image.width > 1000 ? 'big' : 'small'"), json!("big"));
        assert_eq!(ok("0 ?: 'fallback'"), json!("fallback"));
        assert_eq!(ok("'x' ?: 'fallback'"), json!("x"));
        assert_eq!(ok("false ? 1"), Value::Null);
        assert_eq!(ok("image.nope ?? 5"), json!(5));
        assert_eq!(ok("image.subject_area.nope.deeper ?? 'd'"), json!("d"));
        assert_eq!(ok("$n ?? 7"), json!(7));
        assert_eq!(ok("$undefined ?? 8"), json!(8));
        // The else branch takes the rest: `a ? b : (c ? d : e)`.
        assert_eq!(ok("1 ? 2 : 3 ? 4 : 5"), json!(2));
        assert_eq!(ok("0 ? 2 : 0 ? 4 : 5"), json!(5));
    }

    #[test]
    fn context_access() {
        assert_eq!(ok("image.width"), json!(1200));
        assert_eq!(ok("image['height']"), json!(800));
        assert_eq!(ok("image.subject_area.width * 2"), json!(600));
        assert_eq!(ok("image.meta_user.tag"), json!("hero"));
        assert_eq!(ok("options.dpr >= 2"), json!(true));
        assert_eq!(ok("request.headers.save_data == 'on'"), json!(true));
        assert_eq!(ok("[10, 20][1]"), json!(20));
        assert_eq!(ok("image.missing?.x ?? 1"), json!(1));
    }

    #[test]
    fn runtime_errors_name_the_problem() {
        assert!(eval("1 / 0").unwrap_err().0.contains("division by zero"));
        assert!(eval("1 % 0").unwrap_err().0.contains("modulo"));
        assert!(eval("image.nope")
            .unwrap_err()
            .0
            .contains("image.nope is not set"));
        assert!(eval("$zz + 1")
            .unwrap_err()
            .0
            .contains("unknown variable `$zz`"));
        assert!(eval("'abc' * 2").unwrap_err().0.contains("needs numbers"));
        assert!(eval("[1] ~ 'a'")
            .unwrap_err()
            .0
            .contains("cannot be used as a string"));
        assert!(eval("1 in 5").unwrap_err().0.contains("array"));
        assert!(eval("0..100000").unwrap_err().0.contains("range"));
        assert!(eval("'a' matches 'abc'")
            .unwrap_err()
            .0
            .contains("delimited"));
        assert!(eval("'a' matches '/(/'")
            .unwrap_err()
            .0
            .contains("not valid"));
    }

    #[test]
    fn syntax_errors_give_a_position() {
        for (text, at) in [
            ("1 +", 3),
            ("(1 + 2", 6),
            ("foo.bar", 0),
            ("image.", 6),
            ("1 2", 2),
            ("'open", 0),
            ("max(1, 2)", 0),
            ("[1 2]", 3),
            ("{a 1}", 3),
            ("#", 0),
        ] {
            let e = Expr::parse(text, NAMES).unwrap_err();
            assert_eq!(e.position, at, "{text}: {e}");
        }
        let deep = "(".repeat(100) + "1" + &")".repeat(100);
        assert!(Expr::parse(&deep, NAMES)
            .unwrap_err()
            .message
            .contains("deeper"));
        assert!(Expr::parse(&"1+".repeat(3000), NAMES).is_err());
    }

    #[test]
    fn the_variables_and_names_an_expression_reads_are_known() {
        let e = Expr::parse(
            "$a + $b * $a > image.width ? request.headers.save_data : 1",
            NAMES,
        )
        .unwrap();
        assert_eq!(e.variables(), vec!["a", "b"]);
        assert!(e.uses_name("request"));
        assert!(!e.uses_name("options"));
    }

    #[test]
    fn random_input_never_panics() {
        // A small deterministic generator: the sweep is the same on every run.
        let alphabet: Vec<&str> = vec![
            "1", "2.5", "'s'", "$w", "image", ".", "width", "[", "]", "(", ")", "{", "}", ":", ",",
            "?", "??", "?:", "+", "-", "*", "/", "%", "**", "~", "==", "===", "<", "and", "or",
            "not", "in", "not in", "..", "matches", "'/a+/'", "true", "null", " ", "!", "|", "&",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let vars = |_: &str| Some(json!(3));
        for _ in 0..20_000 {
            let len = (next() % 12) as usize + 1;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ");
            if let Ok(e) = Expr::parse(&text, NAMES) {
                let _ = e.eval(&context(), &vars);
            }
        }
    }
}
