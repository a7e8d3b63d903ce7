//! Authentication and accounts: who is calling (`Principal`), what they may do on an
//! organization, and the use cases behind `/organizations`, memberships and `/user`.
//! Keys are generated here, shown once, and stored only as BLAKE3 digests.

use crate::error::{Error, Result};
use crate::model::account::{ApiKey, Membership, OrgOptions, Organization, Right, Role, User};
use crate::model::ids::OrgName;
use crate::model::time;
use crate::storage::Records;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

/// The caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The configured `auth.root_key`: every right on every organization.
    Root,
    /// A user authenticated by one of their keys.
    User { user_id: String, key_id: String },
}

/// Keys the service mints for `darkroom admin` commands that go through its own API (over
/// the control socket): each works as the root key until revoked, and none outlives the
/// process.
#[derive(Default)]
pub struct OperatorKeys(std::sync::Mutex<Vec<String>>);

impl OperatorKeys {
    /// A new key, valid until [`OperatorKeys::revoke`].
    pub fn mint(&self) -> Result<String> {
        let key = generate_api_key()?;
        self.0
            .lock()
            .map_err(|_| Error::internal("operator keys poisoned"))?
            .push(key.clone());
        Ok(key)
    }

    pub fn revoke(&self, key: &str) {
        if let Ok(mut keys) = self.0.lock() {
            keys.retain(|k| k != key);
        }
    }

    /// Whether `key` is a live operator key (compared in constant time).
    pub fn holds(&self, key: &str) -> bool {
        self.0.lock().is_ok_and(|keys| {
            keys.iter()
                .any(|k| bool::from(k.as_bytes().ct_eq(key.as_bytes())))
        })
    }
}

/// Most keys a user may hold (as rokka).
pub const MAX_KEYS_PER_USER: usize = 5;

const BAD_CREDENTIALS: &str = "Api credentials are not supplied or not a valid format.";
/// A key of a valid shape that no user holds: rokka's one message would send the operator
/// looking for a formatting mistake.
const UNKNOWN_KEY: &str =
    "This API key is not valid here: it was deleted, belongs to another appliance, or is mistyped.";

/// Random characters from `alphabet`, without modulo bias.
fn random_chars(n: usize, alphabet: &[u8]) -> Result<String> {
    let mut out = String::with_capacity(n);
    let limit = 256 - (256 % alphabet.len());
    while out.len() < n {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).map_err(Error::internal)?;
        for b in buf {
            if (b as usize) < limit && out.len() < n {
                if let Some(c) = alphabet.get(b as usize % alphabet.len()) {
                    out.push(*c as char);
                }
            }
        }
    }
    Ok(out)
}

const LOWER_ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A new API key in rokka's current format: 32 lowercase characters and a 32-character secret.
pub fn generate_api_key() -> Result<String> {
    Ok(format!(
        "{}{}",
        random_chars(32, LOWER_ALNUM)?,
        random_chars(32, ALNUM)?
    ))
}

/// A random UUID-shaped identifier (version 4 layout).
pub fn generate_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(Error::internal)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or(""),
        h.get(8..12).unwrap_or(""),
        h.get(12..16).unwrap_or(""),
        h.get(16..20).unwrap_or(""),
        h.get(20..32).unwrap_or("")
    ))
}

/// The digest under which a key is stored.
pub fn key_digest(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn role_list() -> String {
    Role::ALL.map(Role::as_str).join(", ")
}

/// Identifies the caller from the `Api-Key` and `Authorization` headers; a token is checked
/// against the caller's address.
pub fn authenticate(
    store: &dyn Records,
    root_key: &str,
    api_key: Option<&str>,
    authorization: Option<&str>,
    caller: Option<std::net::IpAddr>,
) -> Result<Principal> {
    // An API key wins when both are sent, as in rokka's PHP client.
    if let Some(auth) = authorization.filter(|_| api_key.is_none()) {
        let Some(token) = bearer(auth) else {
            return Err(Error::Unauthenticated(
                "malformed Authorization header: expected 'Bearer <token>'".into(),
            ));
        };
        let claims = super::tokens::verify(store, token, caller, crate::model::time::now_unix())?;
        return Ok(Principal::User {
            user_id: claims.id,
            key_id: claims.kid,
        });
    }
    let Some(key) = api_key.map(str::trim).filter(|k| !k.is_empty()) else {
        return Err(Error::BadCredentials(BAD_CREDENTIALS.into()));
    };
    if !root_key.is_empty() && bool::from(key.as_bytes().ct_eq(root_key.as_bytes())) {
        return Ok(Principal::Root);
    }
    let digest = key_digest(key);
    match store.get_key(&digest)? {
        // The lookup is by digest, so timing reveals nothing about the secret; the digest
        // comparison below is constant-time for good measure.
        Some(k) if bool::from(key_digest(key).as_bytes().ct_eq(digest.as_bytes())) => {
            Ok(Principal::User {
                user_id: k.user_id,
                key_id: k.id,
            })
        }
        _ if well_formed_key(key) => Err(Error::BadCredentials(UNKNOWN_KEY.into())),
        _ => Err(Error::BadCredentials(BAD_CREDENTIALS.into())),
    }
}

/// Whether `key` has the shape of a rokka key: 32 alphanumerics (before December 2021) or 64.
fn well_formed_key(key: &str) -> bool {
    matches!(key.len(), 32 | 64) && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks that the caller has `right` on `org`. The answer for an organization that does not
/// exist is the same as for one the caller may not see.
pub fn authorize(store: &dyn Records, who: &Principal, org: &OrgName, right: Right) -> Result<()> {
    match who {
        Principal::Root => Ok(()),
        Principal::User { user_id, .. } => match store.get_membership(org.as_str(), user_id)? {
            Some(m) if m.active && right.granted_by(&m.roles) => Ok(()),
            _ => Err(Error::Forbidden(format!(
                "this key is not allowed to {} organization '{org}'",
                right.describe()
            ))),
        },
    }
}

/// Whether the caller may see signing keys and other secrets of an organization.
fn may_see_secrets(store: &dyn Records, who: &Principal, org: &OrgName) -> Result<bool> {
    Ok(authorize(store, who, org, Right::Write).is_ok())
}

/// The organization object of the API.
pub fn org_json(org: &Organization, with_secrets: bool) -> Value {
    let keys: Vec<Value> = if with_secrets {
        org.signing_keys
            .iter()
            .map(|k| json!({ "key": k }))
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "id": org.id,
        "name": org.name,
        "display_name": org.display_name,
        "billing_email": org.billing_email,
        "created": org.created,
        "master_organization": org.master_organization,
        "options": org.options,
        "signing_keys": keys,
    })
}

/// Creates an organization (root only through the API; the CLI calls it directly).
pub fn create_org(
    store: &dyn Records,
    name: &OrgName,
    billing_email: &str,
    display_name: &str,
) -> Result<Organization> {
    let org = Organization {
        id: generate_id()?,
        name: name.to_string(),
        display_name: if display_name.is_empty() {
            name.to_string()
        } else {
            display_name.to_string()
        },
        billing_email: billing_email.to_string(),
        created: time::format_unix(time::now_unix()),
        master_organization: name.to_string(),
        options: OrgOptions::default(),
        signing_keys: vec![random_chars(32, ALNUM)?],
    };
    if store.create_org(&org)? {
        Ok(org)
    } else {
        Err(Error::Conflict(format!(
            "organization '{name}' already exists"
        )))
    }
}

/// Loads an organization that the caller is allowed to read.
pub fn get_org(store: &dyn Records, who: &Principal, name: &OrgName) -> Result<Value> {
    authorize(store, who, name, Right::Read)?;
    let org = require_org(store, name)?;
    Ok(org_json(&org, may_see_secrets(store, who, name)?))
}

/// The organization, or 404.
pub fn require_org(store: &dyn Records, name: &OrgName) -> Result<Organization> {
    store
        .get_org(name.as_str())?
        .ok_or_else(|| Error::NotFound(format!("organization '{name}' not found")))
}

/// `POST /utils/{org}/sign_url`: signs a render URL of the organization with its first
/// signing key, optionally until a time (rounded up to `round_secs`, 300 by default, as
/// rokka.js does so that URLs signed within one window are identical). The URL may be a path
/// or absolute; scheme and host are kept as given.
pub fn sign_url(
    store: &dyn Records,
    who: &Principal,
    name: &OrgName,
    url: &str,
    until: Option<i64>,
    round_secs: Option<i64>,
) -> Result<Value> {
    // The answer reveals what the signing key can do, so it takes what seeing the key takes.
    authorize(store, who, name, Right::Write)?;
    let org = require_org(store, name)?;
    let key = org
        .signing_keys
        .first()
        .ok_or_else(|| Error::Conflict("the organization has no signing key".into()))?;
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(Error::Invalid("url is required".into()));
    }
    // `https://host/path?query` → (`https://host`, `/path`, `query`).
    let (origin, rest) = match trimmed.split_once("://") {
        Some((scheme, after)) => {
            let cut = after.find('/').unwrap_or(after.len());
            (format!("{scheme}://{}", &after[..cut]), &after[cut..])
        }
        None => (String::new(), trimmed),
    };
    let rest = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest.as_str(), None),
    };
    let until = match until {
        None => None,
        Some(secs) => {
            let at = ::time::OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|_| Error::Invalid("until is out of range".into()))?;
            Some(crate::url::round_until_up(at, round_secs.unwrap_or(300)))
        }
    };
    let signed = crate::url::sign_path_and_query(path, query, key, until)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut body = json!({
        "signed_url": format!("{origin}{signed}"),
        "original_url": url,
    });
    if let (Some(u), Value::Object(m)) = (until, &mut body) {
        m.insert(
            "until".into(),
            Value::from(crate::model::time::format_unix(u.unix_timestamp())),
        );
    }
    Ok(body)
}

/// Sets organization options (`PUT /organizations/{org}/options[/{name}]`).
pub fn set_org_options(
    store: &dyn Records,
    who: &Principal,
    name: &OrgName,
    changes: &serde_json::Map<String, Value>,
) -> Result<Value> {
    authorize(store, who, name, Right::Admin)?;
    let mut org = require_org(store, name)?;
    for (k, v) in changes {
        match k.as_str() {
            "protect_dynamic_stack" => {
                org.options.protect_dynamic_stack = match v {
                    Value::Bool(b) => *b,
                    Value::String(s) if s == "true" || s == "false" => s == "true",
                    _ => {
                        return Err(Error::Invalid(
                            "protect_dynamic_stack must be true or false".into(),
                        ))
                    }
                }
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown organization option '{other}'"
                )))
            }
        }
    }
    store.put_org(&org)?;
    Ok(org_json(&org, true))
}

/// Parses a list of role names.
pub fn parse_roles(raw: &[String]) -> Result<Vec<Role>> {
    if raw.is_empty() {
        return Err(Error::Invalid(format!(
            "roles must name at least one of {}",
            role_list()
        )));
    }
    let mut roles = Vec::new();
    for r in raw {
        let role = Role::parse(r)
            .ok_or_else(|| Error::Invalid(format!("unknown role '{r}': use {}", role_list())))?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

fn membership_json(m: &Membership, user: Option<&User>) -> Value {
    let mut v = json!({
        "user_id": m.user_id,
        "organization_id": m.organization_id,
        "organization": m.organization,
        "roles": m.roles,
        "active": m.active,
        "created": m.created,
    });
    if let Value::Object(map) = &mut v {
        if let Some(email) = user.and_then(|u| u.email.clone()) {
            map.insert("email".into(), Value::String(email));
        }
        if let Some(c) = &m.comment {
            map.insert("comment".into(), Value::String(c.clone()));
        }
    }
    v
}

/// A freshly created user with one key and one membership.
pub struct NewMember {
    pub api_key: String,
    pub json: Value,
}

/// Creates a new user with one key and a membership with `roles` on `org`
/// (`POST /organizations/{org}/memberships`, `darkroom admin key create`).
pub fn create_member(
    store: &dyn Records,
    who: &Principal,
    org: &OrgName,
    roles: Vec<Role>,
    comment: Option<String>,
) -> Result<NewMember> {
    authorize(store, who, org, Right::Admin)?;
    let organization = require_org(store, org)?;
    let now = time::format_unix(time::now_unix());
    let user = User {
        id: generate_id()?,
        email: None,
        created: now.clone(),
    };
    let api_key = generate_api_key()?;
    let key = ApiKey {
        id: generate_id()?,
        user_id: user.id.clone(),
        comment: comment.clone().unwrap_or_default(),
        created: now.clone(),
    };
    let m = Membership {
        organization: org.to_string(),
        organization_id: organization.id.clone(),
        user_id: user.id.clone(),
        roles,
        active: true,
        created: now,
        comment,
    };
    store.put_user(&user)?;
    store.put_key(&key_digest(&api_key), &key)?;
    store.put_membership(&m)?;
    let mut json = membership_json(&m, Some(&user));
    if let Value::Object(map) = &mut json {
        map.insert("api_key".into(), Value::String(api_key.clone()));
    }
    Ok(NewMember { api_key, json })
}

/// Lists the memberships of an organization.
pub fn list_members(store: &dyn Records, who: &Principal, org: &OrgName) -> Result<Value> {
    authorize(store, who, org, Right::Admin)?;
    require_org(store, org)?;
    let items: Vec<Value> = store
        .org_memberships(org.as_str())?
        .iter()
        .map(|m| Ok(membership_json(m, store.get_user(&m.user_id)?.as_ref())))
        .collect::<Result<_>>()?;
    Ok(json!({ "total": items.len(), "items": items }))
}

/// One membership.
pub fn get_member(
    store: &dyn Records,
    who: &Principal,
    org: &OrgName,
    user_id: &str,
) -> Result<Value> {
    authorize(store, who, org, Right::Admin)?;
    let m = store
        .get_membership(org.as_str(), user_id)?
        .ok_or_else(|| Error::NotFound(format!("user '{user_id}' is not a member of '{org}'")))?;
    Ok(membership_json(&m, store.get_user(user_id)?.as_ref()))
}

/// Outcome of `PUT /organizations/{org}/memberships/{user}`.
pub enum MemberChange {
    Created(Value),
    Updated(Value),
    Unchanged,
}

fn active_admins(store: &dyn Records, org: &OrgName) -> Result<usize> {
    Ok(store
        .org_memberships(org.as_str())?
        .iter()
        .filter(|m| m.active && m.roles.contains(&Role::Admin))
        .count())
}

/// Adds an existing user to an organization or changes their roles.
pub fn put_member(
    store: &dyn Records,
    who: &Principal,
    org: &OrgName,
    user_id: &str,
    roles: Vec<Role>,
    comment: Option<String>,
) -> Result<MemberChange> {
    authorize(store, who, org, Right::Admin)?;
    let organization = require_org(store, org)?;
    let user = store
        .get_user(user_id)?
        .ok_or_else(|| Error::NotFound(format!("user '{user_id}' not found")))?;
    match store.get_membership(org.as_str(), user_id)? {
        Some(mut m) => {
            let sorted = |r: &[Role]| {
                let mut v = r.to_vec();
                v.sort();
                v
            };
            if sorted(&m.roles) == sorted(&roles) && (comment.is_none() || comment == m.comment) {
                return Ok(MemberChange::Unchanged);
            }
            if m.roles.contains(&Role::Admin)
                && !roles.contains(&Role::Admin)
                && active_admins(store, org)? <= 1
            {
                return Err(Error::Conflict(
                    "this would remove the last admin of the organization".into(),
                ));
            }
            m.roles = roles;
            if comment.is_some() {
                m.comment = comment;
            }
            store.put_membership(&m)?;
            Ok(MemberChange::Updated(membership_json(&m, Some(&user))))
        }
        None => {
            let m = Membership {
                organization: org.to_string(),
                organization_id: organization.id,
                user_id: user_id.to_string(),
                roles,
                active: true,
                created: time::format_unix(time::now_unix()),
                comment,
            };
            store.put_membership(&m)?;
            Ok(MemberChange::Created(membership_json(&m, Some(&user))))
        }
    }
}

/// Removes a membership.
pub fn delete_member(
    store: &dyn Records,
    who: &Principal,
    org: &OrgName,
    user_id: &str,
) -> Result<()> {
    authorize(store, who, org, Right::Admin)?;
    let m = store
        .get_membership(org.as_str(), user_id)?
        .ok_or_else(|| Error::NotFound(format!("user '{user_id}' is not a member of '{org}'")))?;
    if m.roles.contains(&Role::Admin) && active_admins(store, org)? <= 1 {
        return Err(Error::Conflict(
            "this would remove the last admin of the organization".into(),
        ));
    }
    store.delete_membership(org.as_str(), user_id)?;
    Ok(())
}

fn key_json(k: &ApiKey) -> Value {
    json!({ "id": k.id, "comment": k.comment, "created": k.created })
}

/// Key management is refused to users with `read` or `upload` anywhere: such keys are
/// assumed to be public (spec §3.1).
fn user_for_key_management(store: &dyn Records, who: &Principal) -> Result<String> {
    match who {
        Principal::Root => Err(Error::Forbidden(
            "the root key belongs to no user; create users and keys with memberships".into(),
        )),
        Principal::User { user_id, .. } => {
            // Keys handed to less trusted code (read-only, upload-only, source images only,
            // billing) cannot make more keys.
            let limited = store.user_memberships(user_id)?.iter().any(|m| {
                m.roles
                    .iter()
                    .any(|r| matches!(r, Role::Read | Role::Upload))
                    || !m
                        .roles
                        .iter()
                        .any(|r| matches!(r, Role::Write | Role::Admin))
            });
            if limited {
                Err(Error::Forbidden(
                    "keys with the read, upload, sourceimages or billing roles cannot manage keys"
                        .into(),
                ))
            } else {
                Ok(user_id.clone())
            }
        }
    }
}

/// `GET /user`.
pub fn get_user(store: &dyn Records, who: &Principal) -> Result<Value> {
    match who {
        Principal::Root => Ok(json!({ "user_id": "root", "api_keys": [] })),
        Principal::User { user_id, .. } => {
            let user = store.get_user(user_id)?;
            let mut v = json!({ "user_id": user_id });
            if user_for_key_management(store, who).is_ok() {
                let keys: Vec<Value> = store
                    .user_keys(user_id)?
                    .iter()
                    .map(|(_, k)| key_json(k))
                    .collect();
                if let Value::Object(map) = &mut v {
                    map.insert("api_keys".into(), Value::Array(keys));
                    if let Some(email) = user.and_then(|u| u.email) {
                        map.insert("email".into(), Value::String(email));
                    }
                }
            }
            Ok(v)
        }
    }
}

/// `GET /user/apikeys`.
pub fn list_user_keys(store: &dyn Records, who: &Principal) -> Result<Value> {
    let user_id = user_for_key_management(store, who)?;
    Ok(Value::Array(
        store
            .user_keys(&user_id)?
            .iter()
            .map(|(_, k)| key_json(k))
            .collect(),
    ))
}

/// `GET /user/apikeys/current`.
pub fn current_key(store: &dyn Records, who: &Principal) -> Result<Value> {
    let user_id = user_for_key_management(store, who)?;
    let Principal::User { key_id, .. } = who else {
        return Err(Error::NotFound("no key".into()));
    };
    store
        .user_keys(&user_id)?
        .iter()
        .find(|(_, k)| &k.id == key_id)
        .map(|(_, k)| key_json(k))
        .ok_or_else(|| Error::NotFound("key not found".into()))
}

/// `POST /user/apikeys`.
pub fn add_user_key(store: &dyn Records, who: &Principal, comment: String) -> Result<Value> {
    let user_id = user_for_key_management(store, who)?;
    if store.user_keys(&user_id)?.len() >= MAX_KEYS_PER_USER {
        return Err(Error::Conflict(format!(
            "a user may hold at most {MAX_KEYS_PER_USER} keys"
        )));
    }
    let api_key = generate_api_key()?;
    let key = ApiKey {
        id: generate_id()?,
        user_id,
        comment,
        created: time::format_unix(time::now_unix()),
    };
    store.put_key(&key_digest(&api_key), &key)?;
    Ok(json!({ "id": key.id, "api_key": api_key, "comment": key.comment, "created": key.created }))
}

/// `DELETE /user/apikeys/{id}`.
pub fn delete_user_key(store: &dyn Records, who: &Principal, key_id: &str) -> Result<()> {
    let user_id = user_for_key_management(store, who)?;
    if matches!(who, Principal::User { key_id: current, .. } if current == key_id) {
        return Err(Error::Conflict(
            "the key in use cannot delete itself".into(),
        ));
    }
    if store.delete_key(&user_id, key_id)? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("key '{key_id}' not found")))
    }
}

/// `GET /user/memberships`.
pub fn user_memberships(store: &dyn Records, who: &Principal) -> Result<Value> {
    let items: Vec<Value> = match who {
        Principal::Root => store
            .list_orgs()?
            .iter()
            .map(|o| json!({"organization": o.name, "organization_id": o.id, "display_name": o.display_name, "roles": ["admin"], "active": true}))
            .collect(),
        Principal::User { user_id, .. } => store
            .user_memberships(user_id)?
            .iter()
            .map(|m| {
                let display = store.get_org(&m.organization).ok().flatten().map(|o| o.display_name).unwrap_or_default();
                json!({"organization": m.organization, "organization_id": m.organization_id, "display_name": display, "roles": m.roles, "active": m.active})
            })
            .collect(),
    };
    Ok(json!({ "items": items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_rokka_shape() {
        let key = generate_api_key().unwrap();
        assert_eq!(key.len(), 64);
        assert!(key[..32]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(key, generate_api_key().unwrap());
    }

    #[test]
    fn generated_ids_look_like_uuids() {
        let id = generate_id().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
