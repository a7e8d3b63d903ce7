//! Stack definitions in the embedded records ([`StackRecords`] of [`SledStore`]), keyed
//! `org \0 name` in the `stacks` tree.

use super::{decode, prefix, SledStore};
use crate::storage::{encode, key2, Result, StackRecords, StoredStack};

impl StackRecords for SledStore {
    fn get_stack(&self, org: &str, name: &str) -> Result<Option<StoredStack>> {
        self.stacks
            .get(key2(org, name))?
            .map(|v| decode("stacks", &v))
            .transpose()
    }

    /// Creates a stack; `false` when the name is taken.
    fn create_stack(&self, stack: &StoredStack) -> Result<bool> {
        self.space.check()?;
        let k = key2(&stack.organization, &stack.name);
        let swapped =
            self.stacks
                .compare_and_swap(k, None as Option<&[u8]>, Some(encode(stack)))?;
        self.changed();
        Ok(swapped.is_ok())
    }

    /// Replaces a stack.
    fn put_stack(&self, stack: &StoredStack) -> Result<()> {
        self.space.check()?;
        self.stacks
            .insert(key2(&stack.organization, &stack.name), encode(stack))?;
        self.changed();
        Ok(())
    }

    fn delete_stack(&self, org: &str, name: &str) -> Result<Option<StoredStack>> {
        let removed = self.stacks.remove(key2(org, name))?;
        self.changed();
        removed.map(|v| decode("stacks", &v)).transpose()
    }

    /// Stacks of an organization, by name.
    fn list_stacks(&self, org: &str) -> Result<Vec<StoredStack>> {
        self.stacks
            .scan_prefix(prefix(org))
            .values()
            .map(|v| decode("stacks", &v?))
            .collect()
    }
}
