//! Stack definitions ([`StoredStack`]). Each overwrite bumps the stack's revision, which
//! renders record so that renders of an old definition can be told apart. The embedded
//! records keep them in `sled/stacks.rs`, PostgreSQL in `postgres/stacks.rs`.

use crate::model::stack::StackDefinition;
use serde::{Deserialize, Serialize};

/// A stored stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredStack {
    pub organization: String,
    pub name: String,
    pub created: String,
    /// 1 for a new stack, incremented by every overwrite.
    pub revision: u64,
    pub definition: StackDefinition,
}
