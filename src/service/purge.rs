//! Invalidation (design §4): what a purge removed, in the shape the API answers with, and the
//! purge use cases behind rokka's `DELETE …/cache` endpoints and our organization-wide one.
//! Purges are free, unlimited and synchronous for the render store.

use super::accounts::{authorize, require_org, Principal};
use super::Services;
use crate::error::Result;
use crate::model::account::Right;
use crate::model::ids::OrgName;
use crate::storage::Purged;
use serde_json::{json, Value};

/// The answer to a purge: rokka's `{"items": [paths]}`, plus the counts; a dry run says so and
/// changes nothing.
pub fn purged_json(p: &Purged, dry_run: bool) -> Value {
    // One item per path, in the order they were found (a path served under several hosts
    // appears once).
    let mut seen = std::collections::HashSet::with_capacity(p.paths.len());
    let items: Vec<&str> = p
        .paths
        .iter()
        .map(|s| s.path.as_str())
        .filter(|path| seen.insert(*path))
        .collect();
    let mut v = json!({ "status": "ok", "items": items, "renders": p.renders, "bytes": p.bytes, "paths": items.len() });
    if dry_run {
        if let Value::Object(m) = &mut v {
            m.insert("dry_run".into(), Value::Bool(true));
        }
    }
    v
}

/// `DELETE /sourceimages/{org}/{hash}/cache`.
pub async fn image_cache(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    dry_run: bool,
) -> Result<Value> {
    authorize(&svc.store, who, org, Right::Write)?;
    let rec = super::images::find(&svc.store, org, hash, false)?;
    let purged = svc
        .store
        .purge_image_renders(org.as_str(), &rec.hash, dry_run)?;
    svc.store.flush().await?;
    Ok(purged_json(&purged, dry_run))
}

/// `DELETE /stacks/{org}/{name}/cache`.
pub async fn stack_cache(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    name: &str,
    dry_run: bool,
) -> Result<Value> {
    authorize(&svc.store, who, org, Right::Write)?;
    super::stacks::require(&svc.store, org, name)?;
    let purged = svc
        .store
        .purge_stack_renders(org.as_str(), name, None, dry_run)?;
    svc.store.flush().await?;
    Ok(purged_json(&purged, dry_run))
}

/// `DELETE /organizations/{org}/cache`: every render of the organization.
pub async fn org_cache(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    dry_run: bool,
) -> Result<Value> {
    authorize(&svc.store, who, org, Right::Admin)?;
    require_org(&svc.store, org)?;
    let purged = svc.store.purge_org_renders(org.as_str(), dry_run)?;
    svc.store.flush().await?;
    Ok(purged_json(&purged, dry_run))
}
