//! Alias use cases (spec §4.11): create, re-point, read and delete an alias of an image, purge
//! the URLs it was served under at the edge, and resolve one for a render URL (`-_name_-`).
//!
//! An alias is the one mutable render URL (design §4): the records move the change
//! generation and queue the alias's served paths for the edge with every re-pointing or
//! deletion, and renders through an alias answer with a short max-age, never `immutable`.
//! Renders themselves follow the image, so the stored render is shared with the hash URL.

use super::accounts::{authorize, require_org, Principal};
use super::Services;
use crate::error::{Error, Result};
use crate::model::account::Right;
use crate::model::ids::OrgName;
use crate::model::time;
use crate::storage::{AliasPut, Purged, Records, ServedPath, StoredAlias};
use serde_json::{json, Value};

/// Longest alias name accepted.
pub const MAX_ALIAS_LEN: usize = 128;

/// An alias name: `[a-zA-Z0-9_]{1,128}`. Anything else is not found, as at rokka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasName(String);

impl AliasName {
    pub fn parse(raw: &str) -> Result<AliasName> {
        let valid = !raw.is_empty()
            && raw.len() <= MAX_ALIAS_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if valid {
            Ok(AliasName(raw.to_string()))
        } else {
            Err(Error::NotFound(format!(
                "alias '{}' not found",
                crate::model::ids::truncate(raw, 48)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a `PUT` did.
pub enum AliasSaved {
    Created(Value),
    Replaced(Value),
}

fn alias_json(a: &StoredAlias) -> Value {
    json!({ "organization": a.organization, "alias": a.alias, "hash": a.hash })
}

fn not_found(name: &AliasName) -> Error {
    Error::NotFound(format!("alias '{}' not found", name.as_str()))
}

/// The `hash` of a `PUT` body.
fn body_hash(body: &Value) -> Result<&str> {
    body.get("hash")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Invalid("the body must be {\"hash\": \"…\"}".into()))
}

/// `PUT /sourceimages/{org}/alias/{alias}` (`?overwrite=true` to re-point it). The image is
/// named by full or short hash and must exist and not be deleted.
pub async fn put(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    name: &AliasName,
    body: &Value,
    overwrite: bool,
) -> Result<AliasSaved> {
    authorize(&*svc.store, who, org, Right::ImagesWrite)?;
    require_org(&*svc.store, org)?;
    let image = super::images::find(&*svc.store, org, body_hash(body)?, false)?;
    let alias = StoredAlias {
        organization: org.to_string(),
        alias: name.as_str().to_string(),
        hash: image.hash.clone(),
        created: time::format_unix(time::now_unix()),
    };
    let saved = match svc.store.put_alias(&alias, overwrite)? {
        AliasPut::Created => AliasSaved::Created(alias_json(&alias)),
        AliasPut::Replaced { .. } => AliasSaved::Replaced(alias_json(&alias)),
        AliasPut::Exists(_) => {
            return Err(Error::Conflict(format!(
                "alias '{}' already exists; use ?overwrite=true to re-point it",
                name.as_str()
            )))
        }
        AliasPut::NoImage => {
            return Err(Error::NotFound(format!(
                "source image '{}' not found",
                image.hash
            )))
        }
    };
    svc.store.flush().await?;
    Ok(saved)
}

/// `GET /sourceimages/{org}/alias`: every alias of the organization, by name. rokka has no
/// such listing; an import from another Darkroom uses it to find the aliases to copy.
pub fn list(svc: &Services, who: &Principal, org: &OrgName) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    require_org(&*svc.store, org)?;
    let mut aliases = svc.store.list_aliases(org.as_str())?;
    aliases.sort_by(|a, b| a.alias.cmp(&b.alias));
    let items: Vec<Value> = aliases.iter().map(alias_json).collect();
    Ok(json!({ "total": items.len(), "items": items }))
}

/// `GET /sourceimages/{org}/alias/{alias}`.
pub fn get(svc: &Services, who: &Principal, org: &OrgName, name: &AliasName) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::ImagesRead)?;
    let alias = svc
        .store
        .get_alias(org.as_str(), name.as_str())?
        .ok_or_else(|| not_found(name))?;
    Ok(alias_json(&alias))
}

/// `DELETE /sourceimages/{org}/alias/{alias}`: its URLs answer 404 from now on, at the edge
/// too once the queued refreshes went out.
pub async fn delete(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    name: &AliasName,
) -> Result<()> {
    authorize(&*svc.store, who, org, Right::ImagesWrite)?;
    svc.store
        .delete_alias(org.as_str(), name.as_str())?
        .ok_or_else(|| not_found(name))?;
    svc.store.flush().await?;
    Ok(())
}

/// `DELETE /sourceimages/{org}/alias/{alias}/cache`: refreshes every URL the alias was
/// served under at the edge (or, in a dry run, lists them). Stored renders stay: they belong
/// to the image and are still right.
pub async fn purge(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    name: &AliasName,
    dry_run: bool,
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::ImagesWrite)?;
    svc.store
        .get_alias(org.as_str(), name.as_str())?
        .ok_or_else(|| not_found(name))?;
    let paths = svc.store.alias_paths(org.as_str(), name.as_str())?;
    if !dry_run {
        svc.store.enqueue_edge(&paths)?;
        svc.store.flush().await?;
    }
    let purged = Purged {
        paths,
        ..Purged::default()
    };
    Ok(super::purged_json(&purged, dry_run))
}

/// The full hash an alias of a render URL points to; an alias that does not exist (or a name
/// no alias can have) is not found.
pub(crate) fn resolve(store: &dyn Records, org: &OrgName, raw: &str) -> Result<String> {
    let name = AliasName::parse(raw)?;
    store
        .get_alias(org.as_str(), name.as_str())?
        .map(|a| a.hash)
        .ok_or_else(|| not_found(&name))
}

/// Remembers that an alias was served under this URL, so that re-pointing or deleting it
/// refreshes the URL at the edge.
pub(crate) fn note_served(
    store: &dyn Records,
    org: &OrgName,
    alias: &str,
    served: &ServedPath,
) -> Result<()> {
    Ok(store.note_alias_path(org.as_str(), alias, served)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_are_letters_digits_and_underscores_up_to_128() {
        assert!(AliasName::parse("hero_Image_2").is_ok());
        assert!(AliasName::parse(&"a".repeat(MAX_ALIAS_LEN)).is_ok());
        for bad in ["", "with-dash", "dot.ted", "sp ace", "ümlaut"] {
            assert_eq!(
                AliasName::parse(bad).map_err(|e| e.status()).err(),
                Some(404),
                "{bad:?}"
            );
        }
        assert!(AliasName::parse(&"a".repeat(MAX_ALIAS_LEN + 1)).is_err());
    }
}
