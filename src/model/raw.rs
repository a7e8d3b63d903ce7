//! Untyped operations as they arrive from a render URL, before any schema is applied.

/// One `name-key-value-key-value` part of a render URL, values still strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOperation {
    pub name: String,
    pub options: Vec<(String, String)>,
}
