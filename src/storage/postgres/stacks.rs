//! Stack definitions, one row per (organization, name); every change moves the change
//! generation in its transaction.

use super::{bump_generation, from_row, to_json, PgStore};
use crate::storage::{Result, StackRecords, StoredStack};

impl PgStore {
    /// Writes a stack; with `create`, only when the name is free.
    fn write_stack(&self, stack: &StoredStack, create: bool) -> Result<bool> {
        let org = stack.organization.clone();
        let name = stack.name.clone();
        let record = to_json(stack)?;
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let sql = if create {
                "INSERT INTO stacks (org, name, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (org, name) DO NOTHING"
            } else {
                "INSERT INTO stacks (org, name, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (org, name) DO UPDATE SET record = EXCLUDED.record"
            };
            let written = tx.execute(sql, &[&org, &name, &record]).await? == 1;
            if written {
                bump_generation(&tx).await?;
            }
            tx.commit().await?;
            Ok(written)
        })
    }
}

impl StackRecords for PgStore {
    fn get_stack(&self, org: &str, name: &str) -> Result<Option<StoredStack>> {
        let rows = self.query(
            "SELECT record FROM stacks WHERE org = $1 AND name = $2",
            vec![Box::new(org.to_string()), Box::new(name.to_string())],
        )?;
        rows.first().map(|r| from_row("stacks", r, 0)).transpose()
    }

    fn create_stack(&self, stack: &StoredStack) -> Result<bool> {
        self.write_stack(stack, true)
    }

    fn put_stack(&self, stack: &StoredStack) -> Result<()> {
        self.write_stack(stack, false).map(|_| ())
    }

    fn delete_stack(&self, org: &str, name: &str) -> Result<Option<StoredStack>> {
        let org = org.to_string();
        let name = name.to_string();
        let removed = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let row = tx
                .query_opt(
                    "DELETE FROM stacks WHERE org = $1 AND name = $2 RETURNING record",
                    &[&org, &name],
                )
                .await?;
            if row.is_some() {
                bump_generation(&tx).await?;
            }
            tx.commit().await?;
            Ok(row)
        })?;
        removed.map(|r| from_row("stacks", &r, 0)).transpose()
    }

    fn list_stacks(&self, org: &str) -> Result<Vec<StoredStack>> {
        self.query(
            "SELECT record FROM stacks WHERE org = $1 ORDER BY name",
            vec![Box::new(org.to_string())],
        )?
        .iter()
        .map(|r| from_row("stacks", r, 0))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use crate::storage::{StackRecords, StoredStack};

    fn stack(name: &str, revision: u64) -> StoredStack {
        StoredStack {
            organization: "acme".into(),
            name: name.into(),
            created: "2026-12-06".into(),
            revision,
            definition: Default::default(),
        }
    }

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn stacks_are_created_once_replaced_and_deleted_with_the_generation() {
        let Some(store) = testing::store("stacks") else {
            return;
        };
        let g = store.generation().unwrap();
        assert!(store.create_stack(&stack("small", 1)).unwrap());
        assert!(!store.create_stack(&stack("small", 1)).unwrap());
        store.put_stack(&stack("small", 2)).unwrap();
        store.create_stack(&stack("big", 1)).unwrap();
        assert_eq!(store.generation().unwrap(), g + 3);
        assert_eq!(
            store.get_stack("acme", "small").unwrap(),
            Some(stack("small", 2))
        );
        let names: Vec<_> = store
            .list_stacks("acme")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["big", "small"]);
        assert!(store.list_stacks("other").unwrap().is_empty());
        assert_eq!(
            store.delete_stack("acme", "small").unwrap(),
            Some(stack("small", 2))
        );
        assert_eq!(store.generation().unwrap(), g + 4);
        assert_eq!(store.delete_stack("acme", "small").unwrap(), None);
        assert_eq!(store.generation().unwrap(), g + 4, "nothing changed");
    }
}
