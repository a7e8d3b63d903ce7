//! Stack use cases (spec §5): create, overwrite, read, list and delete named stacks, and the
//! basestack chain a render resolves through. Definitions are validated against the one
//! schema in `model::schema` before they are stored.

use super::accounts::{authorize, require_org, Principal};
use super::Services;
use crate::error::{Error, Result};
use crate::model::account::Right;
use crate::model::ids::OrgName;
use crate::model::stack::{self, StackDefinition};
use crate::model::time;
use crate::storage::{Records, StoredStack};
use serde_json::{json, Value};

/// Longest basestack chain followed (a longer one is treated as a cycle).
pub const MAX_CHAIN: usize = 8;

fn stack_json(s: &StoredStack) -> Value {
    stack::stack_json(&s.organization, &s.name, &s.created, &s.definition)
}

fn check_name(name: &str) -> Result<()> {
    stack::validate_stack_name(name).map_err(|e| Error::Invalid(e.message()))
}

/// One stack of a render's chain.
pub struct ChainLink {
    pub name: String,
    pub revision: u64,
    pub definition: StackDefinition,
}

/// The stacks from the outermost basestack down to `def` itself (which is last, with
/// `revision`), loading each basestack from the store. A missing basestack or a cycle is an
/// error naming it.
pub fn chain(
    store: &dyn Records,
    org: &str,
    name: &str,
    revision: u64,
    def: &StackDefinition,
) -> Result<Vec<ChainLink>> {
    let mut out = vec![ChainLink {
        name: name.to_string(),
        revision,
        definition: def.clone(),
    }];
    let mut next = def.basestack().map(str::to_string);
    while let Some(base) = next {
        if out.iter().any(|l| l.name == base) || out.len() > MAX_CHAIN {
            let names: Vec<&str> = out.iter().map(|l| l.name.as_str()).collect();
            return Err(Error::Invalid(format!(
                "basestack '{base}' forms a cycle (stacks: {})",
                names.join(" → ")
            )));
        }
        let stored = store
            .get_stack(org, &base)?
            .ok_or_else(|| Error::Invalid(format!("basestack '{base}' does not exist")))?;
        next = stored.definition.basestack().map(str::to_string);
        out.push(ChainLink {
            name: base,
            revision: stored.revision,
            definition: stored.definition,
        });
    }
    out.reverse();
    Ok(out)
}

/// The stacks a chain's compositions name as `secondary_stack` (literal names only: one from
/// a variable or an expression is checked when it renders).
fn layer_stacks(links: &[ChainLink]) -> Vec<String> {
    links
        .iter()
        .flat_map(|l| &l.definition.operations)
        .filter(|op| op.name == "composition")
        .filter_map(|op| op.options.get("secondary_stack").and_then(Value::as_str))
        .filter(|s| !s.starts_with('$'))
        .map(str::to_string)
        .collect()
}

/// Refuses, when a stack is saved, a `composition.secondary_stack` that names a missing stack
/// or leads back to a stack on the way (`visiting`, which starts with the stack saved).
fn check_layer_stacks(
    store: &dyn Records,
    org: &str,
    links: &[ChainLink],
    visiting: &mut Vec<String>,
) -> Result<()> {
    for layer in layer_stacks(links) {
        if visiting.contains(&layer) {
            return Err(Error::Invalid(format!(
                "composition.secondary_stack '{layer}' forms a cycle (stacks: {} → {layer})",
                visiting.join(" → ")
            )));
        }
        if visiting.len() > MAX_CHAIN {
            return Err(Error::Invalid(format!(
                "composition.secondary_stack nests deeper than {MAX_CHAIN} stacks"
            )));
        }
        let stored = store.get_stack(org, &layer)?.ok_or_else(|| {
            Error::Invalid(format!(
                "composition.secondary_stack: stack '{layer}' does not exist"
            ))
        })?;
        let inner = chain(store, org, &layer, stored.revision, &stored.definition)?;
        visiting.push(layer);
        check_layer_stacks(store, org, &inner, visiting)?;
        visiting.pop();
    }
    Ok(())
}

/// Refuses a pipeline of more than `max` operations (`limits.max_operations`): every
/// operation costs at least one pass over the pixels, and render URLs are public.
pub fn check_operation_count(count: usize, max: usize) -> Result<()> {
    if count > max {
        return Err(Error::Invalid(format!(
            "the render has {count} operations (with its basestacks and URL), more than the limit of {max}"
        )));
    }
    Ok(())
}

/// Outcome of `PUT /stacks/{org}/{name}`.
pub enum Saved {
    Created(Value),
    Overwritten(Value),
    /// `dry_run=true` on an overwrite: what it would invalidate.
    DryRun(Value),
}

/// `PUT /stacks/{org}/{name}[?overwrite=true]`.
pub async fn put(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    name: &str,
    body: &[u8],
    overwrite: bool,
    dry_run: bool,
) -> Result<Saved> {
    authorize(&*svc.store, who, org, Right::Write)?;
    require_org(&*svc.store, org)?;
    check_name(name)?;
    let def = stack::parse_stack_body(body).map_err(|e| Error::Invalid(e.message()))?;
    // Resolve the chain now so that a missing basestack or a cycle is refused at creation.
    let links = chain(&*svc.store, org.as_str(), name, 0, &def)?;
    check_layer_stacks(
        &*svc.store,
        org.as_str(),
        &links,
        &mut vec![name.to_string()],
    )?;
    check_operation_count(
        links.iter().map(|l| l.definition.operations.len()).sum(),
        svc.config.limits.max_operations,
    )?;
    let existing = svc.store.get_stack(org.as_str(), name)?;
    let saved = match existing {
        Some(_) if !overwrite => {
            return Err(Error::Conflict(format!(
                "stack '{name}' already exists; use ?overwrite=true to replace it"
            )))
        }
        Some(old) => {
            let protected =
                |d: &StackDefinition| d.options.get("protected") == Some(&Value::Bool(true));
            if protected(&def) && !protected(&old.definition) {
                return Err(Error::Invalid(
                    "an unprotected stack cannot be made protected by overwriting it; create a new stack".into(),
                ));
            }
            if dry_run {
                let next = old.revision + 1;
                let would = svc
                    .store
                    .purge_stack_renders(org.as_str(), name, Some(next), true)?;
                return Ok(Saved::DryRun(super::purged_json(&would, true)));
            }
            let stored = StoredStack {
                revision: old.revision + 1,
                definition: def,
                ..old
            };
            svc.store.put_stack(&stored)?;
            // Renders of earlier definitions (of this stack, or of stacks built on it) are
            // garbage now: new requests resolve to new keys.
            svc.store
                .purge_stack_renders(org.as_str(), name, Some(stored.revision), false)?;
            Saved::Overwritten(stack_json(&stored))
        }
        None => {
            let stored = StoredStack {
                organization: org.to_string(),
                name: name.to_string(),
                created: time::format_unix(time::now_unix()),
                revision: 1,
                definition: def,
            };
            if !svc.store.create_stack(&stored)? {
                return Err(Error::Conflict(format!("stack '{name}' already exists")));
            }
            Saved::Created(stack_json(&stored))
        }
    };
    svc.store.flush().await?;
    Ok(saved)
}

/// Loads a stored stack or answers 404.
pub fn require(store: &dyn Records, org: &OrgName, name: &str) -> Result<StoredStack> {
    store.get_stack(org.as_str(), name)?.ok_or_else(|| {
        Error::NotFound(format!(
            "stack '{}' not found",
            crate::model::ids::truncate(name, 100)
        ))
    })
}

/// `GET /stacks/{org}/{name}`.
pub fn get(svc: &Services, who: &Principal, org: &OrgName, name: &str) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::Read)?;
    Ok(stack_json(&require(&*svc.store, org, name)?))
}

/// `GET /stacks/{org}?limit&offset`.
pub fn list(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    limit: Option<usize>,
    offset: Option<usize>,
) -> Result<Value> {
    authorize(&*svc.store, who, org, Right::Read)?;
    let all = svc.store.list_stacks(org.as_str())?;
    let offset = offset.unwrap_or(0);
    let limit = limit.unwrap_or(usize::MAX);
    let items: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(stack_json)
        .collect();
    Ok(json!({ "items": items }))
}

/// `DELETE /stacks/{org}/{name}`.
/// Its renders are collected and its URLs answer 404. With `dry_run`, only reports what
/// would be invalidated.
pub async fn delete(
    svc: &Services,
    who: &Principal,
    org: &OrgName,
    name: &str,
    dry_run: bool,
) -> Result<Option<Value>> {
    authorize(&*svc.store, who, org, Right::Write)?;
    require(&*svc.store, org, name)?;
    if dry_run {
        let would = svc
            .store
            .purge_stack_renders(org.as_str(), name, None, true)?;
        return Ok(Some(super::purged_json(&would, true)));
    }
    svc.store.delete_stack(org.as_str(), name)?;
    svc.store
        .purge_stack_renders(org.as_str(), name, None, false)?;
    svc.store.flush().await?;
    Ok(None)
}
