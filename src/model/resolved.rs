//! The resolved render pipeline: what a render URL means once the stack, URL overrides,
//! variables and defaults are applied. Its canonical form is part of the render key.

use serde_json::{Map, Value};

/// One operation with every option of its schema filled in (given value or default);
/// options without a default that were not given are absent.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedOp {
    pub name: String,
    pub options: Map<String, Value>,
}

/// Operations in the order they run, and the effective stack options
/// (every option of the stack-option schema present, with its default if not set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedPipeline {
    pub operations: Vec<ResolvedOp>,
    pub options: Map<String, Value>,
    /// An expression read the request (`request.headers.save_data`): the answer varies on
    /// `Save-Data`. Its effect is in the values already; not part of the canonical form.
    pub reads_request: bool,
    /// The stack options a stack, the URL or an applied expression set (the others hold
    /// their defaults), for options whose default may be used where an explicit value must
    /// be refused. Their effect is in `options`; not part of the canonical form.
    pub explicit_options: Vec<String>,
}
