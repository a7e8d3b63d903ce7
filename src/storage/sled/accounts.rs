//! [`Accounts`] of the embedded records: organizations, their usage counters and daily
//! figures, users, API keys, memberships and the token secret, each in its sled tree.

use super::{decode, prefix, tx_result, SledStore, TxError};
use crate::model::account::{ApiKey, Membership, Organization, User};
use crate::storage::{encode, key2, Accounts, DayStats, OrgUsage, Result, StorageError};
use sled::Transactional;

impl Accounts for SledStore {
    // ---- organizations ----

    /// Creates an organization; `false` when the name is taken.
    fn create_org(&self, org: &Organization) -> Result<bool> {
        self.space.check()?;
        let swapped = self.orgs.compare_and_swap(
            org.name.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(org)),
        )?;
        self.changed();
        Ok(swapped.is_ok())
    }

    fn get_org(&self, name: &str) -> Result<Option<Organization>> {
        self.orgs
            .get(name.as_bytes())?
            .map(|v| decode("orgs", &v))
            .transpose()
    }

    fn put_org(&self, org: &Organization) -> Result<()> {
        self.space.check()?;
        self.orgs.insert(org.name.as_bytes(), encode(org))?;
        self.changed();
        Ok(())
    }

    fn list_orgs(&self) -> Result<Vec<Organization>> {
        self.orgs
            .iter()
            .values()
            .map(|v| decode("orgs", &v?))
            .collect()
    }

    /// Adds bytes served for an organization to a day's figures.
    fn add_downloaded(&self, org: &str, day: &str, bytes: u64) -> Result<()> {
        let usage = self.org_usage(org)?;
        let day_key = key2(org, day);
        let mut failure = None;
        self.org_usage.update_and_fetch(&day_key, |old| {
            let current = match old.map(serde_json::from_slice::<DayStats>) {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    failure = Some(e.to_string());
                    return old.map(<[u8]>::to_vec);
                }
                None => DayStats::default().with_usage(&usage),
            };
            let next = DayStats {
                bytes_downloaded: current.bytes_downloaded + bytes,
                ..current
            };
            Some(encode(&next))
        })?;
        match failure {
            Some(message) => Err(StorageError::Corrupt {
                tree: "org_usage",
                message,
            }),
            None => Ok(()),
        }
    }

    /// The daily figures of an organization, oldest first.
    fn day_stats(&self, org: &str) -> Result<Vec<(String, DayStats)>> {
        let p = prefix(org);
        let mut out = Vec::new();
        for item in self.org_usage.scan_prefix(&p) {
            let (k, v) = item?;
            let day = String::from_utf8_lossy(k.get(p.len()..).unwrap_or_default()).to_string();
            out.push((day, decode("org_usage", &v)?));
        }
        Ok(out)
    }

    /// The usage counters of every organization, by name.
    fn usage_by_org(&self) -> Result<Vec<(String, OrgUsage)>> {
        let mut out = Vec::new();
        for item in self.org_usage.iter() {
            let (k, v) = item?;
            // Day figures live under `org \0 day`; the counters under the bare name.
            if !k.contains(&0) {
                out.push((
                    String::from_utf8_lossy(&k).to_string(),
                    decode("org_usage", &v)?,
                ));
            }
        }
        Ok(out)
    }

    /// Billable usage counters of an organization.
    fn org_usage(&self, org: &str) -> Result<OrgUsage> {
        Ok(self
            .org_usage
            .get(org.as_bytes())?
            .map(|v| decode("org_usage", &v))
            .transpose()?
            .unwrap_or_default())
    }

    // ---- users, keys, memberships ----

    fn put_user(&self, user: &User) -> Result<()> {
        self.space.check()?;
        self.users.insert(user.id.as_bytes(), encode(user))?;
        Ok(())
    }

    fn list_users(&self) -> Result<Vec<User>> {
        self.users
            .iter()
            .values()
            .map(|v| decode("users", &v?))
            .collect()
    }

    fn list_keys(&self) -> Result<Vec<(String, ApiKey)>> {
        let mut out = Vec::new();
        for item in self.keys.iter() {
            let (digest, v) = item?;
            out.push((
                String::from_utf8_lossy(&digest).to_string(),
                decode("keys", &v)?,
            ));
        }
        Ok(out)
    }

    fn list_memberships(&self) -> Result<Vec<Membership>> {
        self.members
            .iter()
            .values()
            .map(|v| decode("members", &v?))
            .collect()
    }

    fn put_day_stats(&self, org: &str, day: &str, stats: &DayStats) -> Result<()> {
        self.space.check()?;
        self.org_usage.insert(key2(org, day), encode(stats))?;
        Ok(())
    }

    fn get_user(&self, id: &str) -> Result<Option<User>> {
        self.users
            .get(id.as_bytes())?
            .map(|v| decode("users", &v))
            .transpose()
    }

    /// Stores a key under the digest of its secret.
    fn put_key(&self, digest: &str, key: &ApiKey) -> Result<()> {
        self.space.check()?;
        tx_result(
            (&self.keys, &self.user_keys).transaction(|(keys, user_keys)| {
                keys.insert(digest.as_bytes(), encode(key))?;
                user_keys.insert(key2(&key.user_id, &key.id), digest.as_bytes())?;
                Ok::<_, TxError>(())
            }),
        )
    }

    /// Looks a key up by the digest of its secret.
    fn get_key(&self, digest: &str) -> Result<Option<ApiKey>> {
        self.keys
            .get(digest.as_bytes())?
            .map(|v| decode("keys", &v))
            .transpose()
    }

    /// Keys of a user, oldest first.
    fn user_keys(&self, user_id: &str) -> Result<Vec<(String, ApiKey)>> {
        let mut out = Vec::new();
        for item in self.user_keys.scan_prefix(prefix(user_id)) {
            let (_, digest) = item?;
            let digest = String::from_utf8_lossy(&digest).to_string();
            if let Some(key) = self.get_key(&digest)? {
                out.push((digest, key));
            }
        }
        out.sort_by(|a, b| a.1.created.cmp(&b.1.created));
        Ok(out)
    }

    /// Deletes a key of a user; `false` if there is no such key.
    fn delete_key(&self, user_id: &str, key_id: &str) -> Result<bool> {
        let Some(digest) = self.user_keys.get(key2(user_id, key_id))? else {
            return Ok(false);
        };
        tx_result(
            (&self.keys, &self.user_keys).transaction(|(keys, user_keys)| {
                keys.remove(digest.as_ref())?;
                user_keys.remove(key2(user_id, key_id))?;
                Ok::<_, TxError>(())
            }),
        )?;
        Ok(true)
    }

    fn put_membership(&self, m: &Membership) -> Result<()> {
        self.space.check()?;
        self.members
            .insert(key2(&m.organization, &m.user_id), encode(m))?;
        Ok(())
    }

    fn get_membership(&self, org: &str, user_id: &str) -> Result<Option<Membership>> {
        self.members
            .get(key2(org, user_id))?
            .map(|v| decode("members", &v))
            .transpose()
    }

    fn delete_membership(&self, org: &str, user_id: &str) -> Result<bool> {
        Ok(self.members.remove(key2(org, user_id))?.is_some())
    }

    fn org_memberships(&self, org: &str) -> Result<Vec<Membership>> {
        self.members
            .scan_prefix(prefix(org))
            .values()
            .map(|v| decode("members", &v?))
            .collect()
    }

    fn user_memberships(&self, user_id: &str) -> Result<Vec<Membership>> {
        let mut out = Vec::new();
        for v in self.members.iter().values() {
            let m: Membership = decode("members", &v?)?;
            if m.user_id == user_id {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The secret that signs API tokens, made on first use and kept in the store so that
    /// every process over it (and every restart) agrees on it.
    fn token_secret(&self) -> Result<Vec<u8>> {
        if let Some(v) = self.meta.get("token_secret")? {
            return Ok(v.to_vec());
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?;
        // Two first uses at once agree on whichever secret was stored first.
        match self
            .meta
            .compare_and_swap("token_secret", None as Option<&[u8]>, Some(&fresh[..]))?
        {
            Ok(()) => Ok(fresh.to_vec()),
            Err(current) => Ok(current
                .current
                .map(|v| v.to_vec())
                .unwrap_or(fresh.to_vec())),
        }
    }

    /// Replaces the token secret: every token issued so far stops working.
    fn rotate_token_secret(&self) -> Result<()> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?;
        self.meta.insert("token_secret", &fresh[..])?;
        self.db.flush()?;
        Ok(())
    }
}
