//! Invalidation (design §4): what a purge removed, in the shape the API answers with, and the
//! purge use cases behind rokka's `DELETE …/cache` endpoints and our organization-wide one.
//! Purges are free, unlimited and synchronous for the render store.

use super::accounts::{authorize, require_org, Principal};
use super::purged_json;
use super::Services;
use crate::error::Result;
use crate::model::account::Right;
use crate::model::ids::OrgName;
use serde_json::Value;

/// `DELETE /sourceimages/{org}/{hash}/cache`.
pub async fn image_cache(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    hash: &str,
    dry_run: bool,
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::Write)?;
    let rec = super::images::find(&*svc.store, org, hash, false)?;
    let purged = svc
        .store
        .purge_image_renders(org.as_str(), &rec.hash, dry_run)?;
    if !dry_run {
        super::mezzanine::forget_image(&svc.renders, &rec);
    }
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
    authorize(&*svc.store, who, org, Right::Write)?;
    super::stacks::require(&*svc.store, org, name)?;
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
    authorize(&*svc.store, who, org, Right::Admin)?;
    require_org(&*svc.store, org)?;
    let purged = svc.store.purge_org_renders(org.as_str(), dry_run)?;
    if !dry_run {
        super::mezzanine::forget_all(&svc.renders);
    }
    svc.store.flush().await?;
    Ok(purged_json(&purged, dry_run))
}
