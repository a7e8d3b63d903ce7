//! Organizations, users, keys, memberships, usage figures and the token secret.

use super::{bump_generation, from_row, to_i64, to_json, to_u64, PgStore};
use crate::model::account::{ApiKey, Membership, Organization, User};
use crate::storage::{Accounts, DayStats, OrgUsage, Result, StorageError};
use tokio_postgres::Row;

fn day_stats_of(row: &Row, first: usize) -> Result<DayStats> {
    let col = |i: usize| -> Result<u64> { Ok(to_u64(row.try_get::<_, i64>(first + i)?)) };
    Ok(DayStats {
        space_in_bytes: col(0)?,
        number_of_files: col(1)?,
        renders: col(2)?,
        render_bytes: col(3)?,
        bytes_downloaded: col(4)?,
    })
}

fn usage_of(row: &Row, first: usize) -> Result<OrgUsage> {
    let col = |i: usize| -> Result<u64> { Ok(to_u64(row.try_get::<_, i64>(first + i)?)) };
    Ok(OrgUsage {
        space_in_bytes: col(0)?,
        number_of_files: col(1)?,
        renders: col(2)?,
        render_bytes: col(3)?,
        mezzanines: col(4)?,
        mezzanine_bytes: col(5)?,
    })
}

fn fresh_secret() -> Result<Vec<u8>> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh)
        .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?;
    Ok(fresh.to_vec())
}

impl PgStore {
    /// Writes an organization record; with `create`, only when the name is free. Moves the
    /// change generation in the same transaction.
    fn write_org(&self, org: &Organization, create: bool) -> Result<bool> {
        let name = org.name.clone();
        let record = to_json(org)?;
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let sql = if create {
                "INSERT INTO orgs (name, record) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
            } else {
                "INSERT INTO orgs (name, record) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record"
            };
            let written = tx.execute(sql, &[&name, &record]).await? == 1;
            if written {
                bump_generation(&tx).await?;
            }
            tx.commit().await?;
            Ok(written)
        })
    }
}

impl Accounts for PgStore {
    fn create_org(&self, org: &Organization) -> Result<bool> {
        self.write_org(org, true)
    }

    fn get_org(&self, name: &str) -> Result<Option<Organization>> {
        // Taken before the read: an entry is tagged with a generation it was true at.
        let trusted = self.watch.trusted();
        if let Some(org) = trusted.and_then(|g| self.records.org(name, g)) {
            return Ok(Some(org));
        }
        let rows = self.query(
            "SELECT record FROM orgs WHERE name = $1",
            vec![Box::new(name.to_string())],
        )?;
        let found: Option<Organization> =
            rows.first().map(|r| from_row("orgs", r, 0)).transpose()?;
        if let (Some(g), Some(org)) = (trusted, &found) {
            self.records.put_org(g, org);
        }
        Ok(found)
    }

    fn put_org(&self, org: &Organization) -> Result<()> {
        self.write_org(org, false).map(|_| ())
    }

    fn list_orgs(&self) -> Result<Vec<Organization>> {
        self.query("SELECT record FROM orgs ORDER BY name", Vec::new())?
            .iter()
            .map(|r| from_row("orgs", r, 0))
            .collect()
    }

    /// One statement: a day's row starts from the organization's usage and the bytes add up
    /// whichever node served them.
    fn add_downloaded(&self, org: &str, day: &str, bytes: u64) -> Result<()> {
        self.execute(
            "INSERT INTO day_stats (org, day, space_in_bytes, number_of_files, renders, \
                 render_bytes, bytes_downloaded) \
             SELECT $1, $2, coalesce(u.space_in_bytes, 0), coalesce(u.number_of_files, 0), \
                 coalesce(u.renders, 0), coalesce(u.render_bytes, 0), $3 \
             FROM (SELECT 1) AS one LEFT JOIN org_usage u ON u.org = $1 \
             ON CONFLICT (org, day) DO UPDATE \
                 SET bytes_downloaded = day_stats.bytes_downloaded + EXCLUDED.bytes_downloaded",
            vec![
                Box::new(org.to_string()),
                Box::new(day.to_string()),
                Box::new(to_i64(bytes)),
            ],
        )?;
        Ok(())
    }

    fn day_stats(&self, org: &str) -> Result<Vec<(String, DayStats)>> {
        self.query(
            "SELECT day, space_in_bytes, number_of_files, renders, render_bytes, \
                 bytes_downloaded FROM day_stats WHERE org = $1 ORDER BY day",
            vec![Box::new(org.to_string())],
        )?
        .iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, day_stats_of(r, 1)?)))
        .collect()
    }

    fn usage_by_org(&self) -> Result<Vec<(String, OrgUsage)>> {
        self.query(
            "SELECT org, space_in_bytes, number_of_files, renders, render_bytes, mezzanines, \
                 mezzanine_bytes FROM org_usage ORDER BY org",
            Vec::new(),
        )?
        .iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, usage_of(r, 1)?)))
        .collect()
    }

    fn org_usage(&self, org: &str) -> Result<OrgUsage> {
        let rows = self.query(
            "SELECT space_in_bytes, number_of_files, renders, render_bytes, mezzanines, \
                 mezzanine_bytes FROM org_usage WHERE org = $1",
            vec![Box::new(org.to_string())],
        )?;
        Ok(rows
            .first()
            .map(|r| usage_of(r, 0))
            .transpose()?
            .unwrap_or_default())
    }

    fn put_day_stats(&self, org: &str, day: &str, stats: &DayStats) -> Result<()> {
        self.execute(
            "INSERT INTO day_stats (org, day, space_in_bytes, number_of_files, renders, \
                 render_bytes, bytes_downloaded) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (org, day) DO UPDATE SET space_in_bytes = EXCLUDED.space_in_bytes, \
                 number_of_files = EXCLUDED.number_of_files, renders = EXCLUDED.renders, \
                 render_bytes = EXCLUDED.render_bytes, \
                 bytes_downloaded = EXCLUDED.bytes_downloaded",
            vec![
                Box::new(org.to_string()),
                Box::new(day.to_string()),
                Box::new(to_i64(stats.space_in_bytes)),
                Box::new(to_i64(stats.number_of_files)),
                Box::new(to_i64(stats.renders)),
                Box::new(to_i64(stats.render_bytes)),
                Box::new(to_i64(stats.bytes_downloaded)),
            ],
        )?;
        Ok(())
    }

    fn put_user(&self, user: &User) -> Result<()> {
        self.execute(
            "INSERT INTO users (id, record) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            vec![Box::new(user.id.clone()), Box::new(to_json(user)?)],
        )?;
        Ok(())
    }

    fn get_user(&self, id: &str) -> Result<Option<User>> {
        let rows = self.query(
            "SELECT record FROM users WHERE id = $1",
            vec![Box::new(id.to_string())],
        )?;
        rows.first().map(|r| from_row("users", r, 0)).transpose()
    }

    fn list_users(&self) -> Result<Vec<User>> {
        self.query("SELECT record FROM users ORDER BY id", Vec::new())?
            .iter()
            .map(|r| from_row("users", r, 0))
            .collect()
    }

    fn put_key(&self, digest: &str, key: &ApiKey) -> Result<()> {
        self.execute(
            "INSERT INTO api_keys (digest, user_id, key_id, created, record) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (digest) DO UPDATE SET user_id = EXCLUDED.user_id, \
                 key_id = EXCLUDED.key_id, created = EXCLUDED.created, record = EXCLUDED.record",
            vec![
                Box::new(digest.to_string()),
                Box::new(key.user_id.clone()),
                Box::new(key.id.clone()),
                Box::new(key.created.clone()),
                Box::new(to_json(key)?),
            ],
        )?;
        Ok(())
    }

    fn get_key(&self, digest: &str) -> Result<Option<ApiKey>> {
        let rows = self.query(
            "SELECT record FROM api_keys WHERE digest = $1",
            vec![Box::new(digest.to_string())],
        )?;
        rows.first().map(|r| from_row("api_keys", r, 0)).transpose()
    }

    fn user_keys(&self, user_id: &str) -> Result<Vec<(String, ApiKey)>> {
        self.query(
            "SELECT digest, record FROM api_keys WHERE user_id = $1 ORDER BY created, key_id",
            vec![Box::new(user_id.to_string())],
        )?
        .iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, from_row("api_keys", r, 1)?)))
        .collect()
    }

    fn delete_key(&self, user_id: &str, key_id: &str) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM api_keys WHERE user_id = $1 AND key_id = $2",
            vec![Box::new(user_id.to_string()), Box::new(key_id.to_string())],
        )? > 0)
    }

    fn list_keys(&self) -> Result<Vec<(String, ApiKey)>> {
        self.query(
            "SELECT digest, record FROM api_keys ORDER BY digest",
            Vec::new(),
        )?
        .iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, from_row("api_keys", r, 1)?)))
        .collect()
    }

    fn put_membership(&self, m: &Membership) -> Result<()> {
        self.execute(
            "INSERT INTO memberships (org, user_id, record) VALUES ($1, $2, $3) \
             ON CONFLICT (org, user_id) DO UPDATE SET record = EXCLUDED.record",
            vec![
                Box::new(m.organization.clone()),
                Box::new(m.user_id.clone()),
                Box::new(to_json(m)?),
            ],
        )?;
        Ok(())
    }

    fn get_membership(&self, org: &str, user_id: &str) -> Result<Option<Membership>> {
        let rows = self.query(
            "SELECT record FROM memberships WHERE org = $1 AND user_id = $2",
            vec![Box::new(org.to_string()), Box::new(user_id.to_string())],
        )?;
        rows.first()
            .map(|r| from_row("memberships", r, 0))
            .transpose()
    }

    fn delete_membership(&self, org: &str, user_id: &str) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM memberships WHERE org = $1 AND user_id = $2",
            vec![Box::new(org.to_string()), Box::new(user_id.to_string())],
        )? > 0)
    }

    fn org_memberships(&self, org: &str) -> Result<Vec<Membership>> {
        self.query(
            "SELECT record FROM memberships WHERE org = $1 ORDER BY user_id",
            vec![Box::new(org.to_string())],
        )?
        .iter()
        .map(|r| from_row("memberships", r, 0))
        .collect()
    }

    fn user_memberships(&self, user_id: &str) -> Result<Vec<Membership>> {
        self.query(
            "SELECT record FROM memberships WHERE user_id = $1 ORDER BY org",
            vec![Box::new(user_id.to_string())],
        )?
        .iter()
        .map(|r| from_row("memberships", r, 0))
        .collect()
    }

    fn list_memberships(&self) -> Result<Vec<Membership>> {
        self.query(
            "SELECT record FROM memberships ORDER BY org, user_id",
            Vec::new(),
        )?
        .iter()
        .map(|r| from_row("memberships", r, 0))
        .collect()
    }

    /// Two first uses at once (on any nodes) agree on whichever secret was stored first.
    fn token_secret(&self) -> Result<Vec<u8>> {
        let rows = self.query(
            "WITH made AS (INSERT INTO meta (key, value) VALUES ('token_secret', $1) \
                 ON CONFLICT (key) DO NOTHING RETURNING value) \
             SELECT value FROM made UNION ALL \
             SELECT value FROM meta WHERE key = 'token_secret' LIMIT 1",
            vec![Box::new(fresh_secret()?)],
        )?;
        if let Some(r) = rows.first() {
            return Ok(r.try_get(0)?);
        }
        // Another first use committed while this statement ran: its secret is the one.
        let rows = self.query(
            "SELECT value FROM meta WHERE key = 'token_secret'",
            Vec::new(),
        )?;
        match rows.first() {
            Some(r) => Ok(r.try_get(0)?),
            None => Err(StorageError::Sql("the token secret was not stored".into())),
        }
    }

    fn rotate_token_secret(&self) -> Result<()> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES ('token_secret', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            vec![Box::new(fresh_secret()?)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use crate::model::account::{ApiKey, Membership, Role, User};
    use crate::storage::fixtures::org;
    use crate::storage::{Accounts, DayStats};

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn organizations_are_created_once_and_move_the_generation() {
        let Some(store) = testing::store("orgs") else {
            return;
        };
        let before = store.generation().unwrap();
        assert!(store.create_org(&org("acme")).unwrap());
        assert!(
            !store.create_org(&org("acme")).unwrap(),
            "the name is taken"
        );
        assert_eq!(store.generation().unwrap(), before + 1);
        let mut changed = org("acme");
        changed.display_name = "Acme Inc".into();
        store.put_org(&changed).unwrap();
        assert_eq!(store.generation().unwrap(), before + 2);
        assert_eq!(store.get_org("acme").unwrap(), Some(changed));
        assert_eq!(store.get_org("nope").unwrap(), None);
        store.create_org(&org("beta")).unwrap();
        let names: Vec<_> = store
            .list_orgs()
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["acme", "beta"]);
    }

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn users_keys_and_memberships_round_trip() {
        let Some(store) = testing::store("people") else {
            return;
        };
        let user = User {
            id: "u1".into(),
            email: Some("a@example.com".into()),
            created: "2026-12-06".into(),
        };
        store.put_user(&user).unwrap();
        assert_eq!(store.get_user("u1").unwrap(), Some(user.clone()));
        assert_eq!(store.list_users().unwrap(), vec![user]);

        let key = |id: &str, created: &str| ApiKey {
            id: id.into(),
            user_id: "u1".into(),
            comment: String::new(),
            created: created.into(),
        };
        store
            .put_key("d2", &key("k2", "2026-12-06T10:00:02"))
            .unwrap();
        store
            .put_key("d1", &key("k1", "2026-12-06T10:00:01"))
            .unwrap();
        assert_eq!(
            store.get_key("d1").unwrap(),
            Some(key("k1", "2026-12-06T10:00:01"))
        );
        let digests: Vec<_> = store
            .user_keys("u1")
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(digests, ["d1", "d2"], "oldest first");
        assert!(store.delete_key("u1", "k1").unwrap());
        assert!(!store.delete_key("u1", "k1").unwrap());
        assert_eq!(store.get_key("d1").unwrap(), None);
        assert_eq!(store.list_keys().unwrap().len(), 1);

        let member = |org: &str| Membership {
            organization: org.into(),
            organization_id: format!("id-{org}"),
            user_id: "u1".into(),
            roles: vec![Role::Read, Role::Write],
            active: true,
            created: "2026-12-06".into(),
            comment: None,
        };
        store.put_membership(&member("b")).unwrap();
        store.put_membership(&member("a")).unwrap();
        assert_eq!(store.get_membership("a", "u1").unwrap(), Some(member("a")));
        assert_eq!(store.org_memberships("b").unwrap(), vec![member("b")]);
        assert_eq!(
            store.user_memberships("u1").unwrap(),
            vec![member("a"), member("b")]
        );
        assert!(store.delete_membership("a", "u1").unwrap());
        assert!(!store.delete_membership("a", "u1").unwrap());
        assert_eq!(store.list_memberships().unwrap(), vec![member("b")]);
    }

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn downloaded_bytes_add_up_from_every_caller() {
        let Some(store) = testing::store("traffic") else {
            return;
        };
        let store = std::sync::Arc::new(store);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        store.add_downloaded("acme", "2026-12-06", 10).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let days = store.day_stats("acme").unwrap();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].1.bytes_downloaded, 1000);

        let kept = DayStats {
            space_in_bytes: 5,
            number_of_files: 1,
            renders: 2,
            render_bytes: 3,
            bytes_downloaded: 4,
        };
        store.put_day_stats("acme", "2026-12-01", &kept).unwrap();
        let days = store.day_stats("acme").unwrap();
        assert_eq!(days[0], ("2026-12-01".to_string(), kept), "oldest first");
        assert_eq!(store.org_usage("acme").unwrap(), Default::default());
        assert!(store.usage_by_org().unwrap().is_empty());
    }

    #[test]
    #[ignore = "needs a PostgreSQL in DATABASE_URL (.ci/postgres)"]
    fn the_token_secret_is_made_once_and_rotates() {
        let Some(store) = testing::store("secret") else {
            return;
        };
        let first = store.token_secret().unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(store.token_secret().unwrap(), first);
        store.rotate_token_secret().unwrap();
        let second = store.token_secret().unwrap();
        assert_ne!(second, first);
        assert_eq!(store.token_secret().unwrap(), second);
    }
}
