//! Aliases (spec §4.11): a name of an organization that points to one of its images, with the
//! URL paths each alias was served under (bounded like the paths of a render). Here the
//! interface ([`AliasRecords`]) and what it passes; the embedded records keep them in
//! `sled/aliases.rs`, PostgreSQL in `postgres/aliases.rs`.
//!
//! An alias is the one mutable part of a render URL, so every change to one moves the change
//! generation (the remembered-URL shortcut must not serve the old resolution), and re-pointing
//! or deleting one queues its served paths for the edge and forgets them in the same
//! transaction as the change: neither a crash nor an edge outage leaves a stale alias answer
//! cached in front of the appliance for longer than its short max-age.

use super::{Result, ServedPath};
use serde::{Deserialize, Serialize};

/// Most URL paths remembered per alias (for edge refreshes).
pub const MAX_PATHS_PER_ALIAS: usize = 64;

/// A stored alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAlias {
    pub organization: String,
    pub alias: String,
    /// The full hash of the image it points to.
    pub hash: String,
    pub created: String,
}

/// What [`AliasRecords::put_alias`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasPut {
    Created,
    /// The alias existed and now points to the new image; the paths it was served under were
    /// queued for the edge (when it is on) and forgotten. An overwrite to the image it already
    /// pointed to changes nothing and refreshes nothing.
    Replaced {
        previous: StoredAlias,
        refreshed: Vec<ServedPath>,
    },
    /// The alias exists and no overwrite was asked for (an expected race, not an error).
    Exists(StoredAlias),
    /// The image is not (or no longer) in the records.
    NoImage,
}

/// Aliases and the URL paths they were served under.
pub trait AliasRecords {
    fn get_alias(&self, org: &str, alias: &str) -> Result<Option<StoredAlias>>;
    /// Creates an alias, or with `overwrite` re-points it, to an image that exists in the same
    /// transaction (deleted or not: the caller decides whether a deleted one may be named).
    fn put_alias(&self, alias: &StoredAlias, overwrite: bool) -> Result<AliasPut>;
    /// Deletes an alias; returns what it was and the served paths that were queued for the
    /// edge and forgotten with it.
    fn delete_alias(
        &self,
        org: &str,
        alias: &str,
    ) -> Result<Option<(StoredAlias, Vec<ServedPath>)>>;
    /// Deletes every alias of an organization that points to `hash` (the image was removed for
    /// good); returns how many.
    fn delete_aliases_of(&self, org: &str, hash: &str) -> Result<usize>;
    /// Aliases of an organization, by name (backups, verify).
    fn list_aliases(&self, org: &str) -> Result<Vec<StoredAlias>>;
    /// Remembers a URL an alias was served under (bounded per alias); a no-op for a path
    /// already known or an alias that is gone.
    fn note_alias_path(&self, org: &str, alias: &str, served: &ServedPath) -> Result<()>;
    /// The URLs an alias was served under.
    fn alias_paths(&self, org: &str, alias: &str) -> Result<Vec<ServedPath>>;
}
