//! Handlers for `/`, `/organizations` and `/user`: parse, call `service::accounts`, answer.

use super::{json_body, json_response, no_content, org_name, principal};
use crate::error::{Error, Result};
use crate::service::accounts::{self as acc, MemberChange, Principal};
use crate::service::Services;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

type Svc = web::Data<Services>;

fn string_field(body: &Value, key: &str) -> Result<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::Invalid(format!("{key} must be a string"))),
    }
}

/// `GET /`: the resource list (rokka-go validates keys with it).
pub async fn root(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    principal(&req, &svc)?;
    Ok(json_response(
        200,
        &json!({
            "resources": ["/operations", "/organizations", "/sourceimages", "/stacks", "/stackoptions", "/users", "/stats"],
            "environment": "production"
        }),
    ))
}

/// `PUT /organizations/{org}` (root key only).
pub async fn create_org(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    if who != Principal::Root {
        return Err(Error::Forbidden(
            "only the root key can create organizations".into(),
        ));
    }
    let name = org_name(&path)?;
    let body = json_body(payload).await?;
    let email = string_field(&body, "billing_email")?.unwrap_or_default();
    let display = string_field(&body, "display_name")?.unwrap_or_default();
    let org = acc::create_org(&*svc.store, &name, &email, &display)?;
    svc.flush().await?;
    // rokka answers 200 here (recorded client fixture), not 201.
    Ok(json_response(200, &acc::org_json(&org, true)))
}

/// `GET /organizations/{org}`.
pub async fn get_org(req: HttpRequest, svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    Ok(json_response(
        200,
        &acc::get_org(&*svc.store, &who, &org_name(&path)?)?,
    ))
}

/// `PUT /organizations/{org}/options`.
pub async fn set_options(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let body = json_body(payload).await?;
    let Value::Object(changes) = body else {
        return Err(Error::Invalid(
            "the body must be a JSON object of options".into(),
        ));
    };
    let org = acc::set_org_options(&*svc.store, &who, &org_name(&path)?, &changes)?;
    svc.flush().await?;
    Ok(json_response(200, &org))
}

/// `PUT /organizations/{org}/options/{name}`.
pub async fn set_option(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, option) = path.into_inner();
    let mut changes = Map::new();
    changes.insert(option, json_body(payload).await?);
    let org = acc::set_org_options(&*svc.store, &who, &org_name(&org)?, &changes)?;
    svc.flush().await?;
    Ok(json_response(200, &org))
}

fn roles_from(body: &Value) -> Result<Vec<crate::model::account::Role>> {
    let raw: Vec<String> = match (body.get("roles"), body.get("role")) {
        (Some(Value::Array(a)), _) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        (_, Some(Value::String(r))) => vec![r.clone()],
        _ => Vec::new(),
    };
    acc::parse_roles(&raw)
}

/// `POST /organizations/{org}/memberships`: a new user and key with these roles.
pub async fn create_member(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let org = org_name(&path)?;
    // Refused before the body is read; the service checks again.
    acc::authorize(&*svc.store, &who, &org, crate::model::account::Right::Admin)?;
    let body = json_body(payload).await?;
    let roles = roles_from(&body)?;
    let comment = string_field(&body, "comment")?;
    let member = acc::create_member(&*svc.store, &who, &org, roles, comment)?;
    svc.flush().await?;
    Ok(json_response(201, &member.json))
}

/// `GET /organizations/{org}/memberships`.
pub async fn list_members(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    Ok(json_response(
        200,
        &acc::list_members(&*svc.store, &who, &org_name(&path)?)?,
    ))
}

/// `GET /organizations/{org}/memberships/{user}`.
pub async fn get_member(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, user) = path.into_inner();
    Ok(json_response(
        200,
        &acc::get_member(&*svc.store, &who, &org_name(&org)?, &user)?,
    ))
}

/// `PUT /organizations/{org}/memberships/{user}`.
pub async fn put_member(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, user) = path.into_inner();
    let org = org_name(&org)?;
    // Refused before the body is read; the service checks again.
    acc::authorize(&*svc.store, &who, &org, crate::model::account::Right::Admin)?;
    let body = json_body(payload).await?;
    let change = acc::put_member(
        &*svc.store,
        &who,
        &org,
        &user,
        roles_from(&body)?,
        string_field(&body, "comment")?,
    )?;
    svc.flush().await?;
    Ok(match change {
        MemberChange::Created(v) => json_response(201, &v),
        MemberChange::Updated(v) => json_response(200, &v),
        MemberChange::Unchanged => no_content(),
    })
}

/// `DELETE /organizations/{org}/memberships/{user}`.
pub async fn delete_member(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, user) = path.into_inner();
    acc::delete_member(&*svc.store, &who, &org_name(&org)?, &user)?;
    svc.flush().await?;
    Ok(no_content())
}

/// `GET /user`.
pub async fn get_user(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    Ok(json_response(200, &acc::get_user(&*svc.store, &who)?))
}

/// `GET /user/apikeys`.
pub async fn list_keys(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    Ok(json_response(200, &acc::list_user_keys(&*svc.store, &who)?))
}

/// `GET /user/apikeys/token?expires_in=&renewable=&no_ip_protection=&ips=`: a JWT standing
/// in for the key (or renewing the token) the request was made with.
pub async fn token(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let caller = super::client_ip(&req, &svc);
    let now = crate::model::time::now_unix();
    // A request authenticated by a token renews it: its rules come from the token.
    let presented = match (
        super::header(&req, "api-key"),
        super::header(&req, "authorization"),
    ) {
        (None, Some(auth)) => match acc::bearer(auth) {
            Some(t) => Some(crate::service::tokens::verify(&*svc.store, t, caller, now)?),
            None => None,
        },
        _ => None,
    };
    let pairs = super::query_pairs(&req);
    let flag = |name: &str| -> Result<Option<bool>> {
        match super::query_value(&pairs, name).as_deref() {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(other) => Err(Error::Invalid(format!(
                "{name} must be true or false, not '{other}'"
            ))),
        }
    };
    let expires_in = match super::query_value(&pairs, "expires_in") {
        None => None,
        Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
            Error::Invalid(format!("expires_in must be a number of seconds, not '{v}'"))
        })?),
    };
    let request = crate::service::tokens::TokenRequest {
        expires_in,
        renewable: flag("renewable")?,
        no_ip_protection: flag("no_ip_protection")?.unwrap_or(false),
        ips: super::query_value(&pairs, "ips")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let body = crate::service::tokens::issue(
        &*svc.store,
        &who,
        presented.as_ref(),
        &request,
        caller,
        now,
    )?;
    Ok(json_response(200, &body))
}

/// `POST /utils/{org}/sign_url`: `url` and optional `until` (ISO-8601) and
/// `round_date_up_to` (seconds) from a JSON body (rokka.js), a form body, or the query
/// (`roundDateUpTo`, the PHP client).
pub async fn sign_url(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let org = org_name(&path)?;
    let raw = super::read_body(payload, super::MAX_JSON_BODY).await?;
    let mut fields: Map<String, Value> = Map::new();
    for (k, v) in super::query_pairs(&req) {
        fields.insert(k, Value::String(v));
    }
    let text = String::from_utf8_lossy(&raw);
    if text.trim_start().starts_with('{') {
        match super::parse_json(&raw)? {
            Value::Object(m) => fields.extend(m),
            _ => return Err(Error::Invalid("the body must be a JSON object".into())),
        }
    } else if !text.trim().is_empty() {
        for (k, v) in super::parse_query(text.trim()) {
            fields.insert(k, Value::String(v));
        }
    }
    let url = fields
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Invalid("url is required".into()))?
        .to_owned();
    let until = match fields.get("until") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(crate::model::time::parse_rfc3339(s).ok_or_else(|| {
            Error::Invalid(format!(
                "until must be an ISO-8601 date and time, not '{s}'"
            ))
        })?),
        Some(_) => return Err(Error::Invalid("until must be a string".into())),
    };
    let round = match fields
        .get("round_date_up_to")
        .or_else(|| fields.get("roundDateUpTo"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    Error::Invalid("round_date_up_to must be a number of seconds".into())
                })?,
        ),
    };
    let body = acc::sign_url(&*svc.store, &who, &org, &url, until, round)?;
    Ok(json_response(200, &body))
}

/// `GET /user/apikeys/current`.
pub async fn current_key(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    Ok(json_response(200, &acc::current_key(&*svc.store, &who)?))
}

/// `POST /user/apikeys`.
pub async fn add_key(req: HttpRequest, svc: Svc, payload: web::Payload) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let body = json_body(payload).await?;
    let key = acc::add_user_key(
        &*svc.store,
        &who,
        string_field(&body, "comment")?.unwrap_or_default(),
    )?;
    svc.flush().await?;
    Ok(json_response(200, &key))
}

/// `DELETE /user/apikeys/{id}`.
pub async fn delete_key(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    acc::delete_user_key(&*svc.store, &who, &path)?;
    svc.flush().await?;
    Ok(no_content())
}

/// `GET /user/memberships`.
pub async fn my_memberships(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    Ok(json_response(
        200,
        &acc::user_memberships(&*svc.store, &who)?,
    ))
}

/// `DELETE /organizations/{org}/cache`: removes every render of the organization.
pub async fn purge(req: HttpRequest, svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let report =
        crate::service::purge::org_cache(&svc, &who, &org_name(&path)?, super::dry_run(&req))
            .await?;
    Ok(json_response(200, &report))
}

/// `GET /healthz`: the process answers (no authentication).
pub async fn healthz() -> HttpResponse {
    json_response(200, &json!({ "status": "ok" }))
}

/// `GET /metrics`: Prometheus text format, when `metrics.enabled`; with `metrics.token` set,
/// only for `Authorization: Bearer {token}`.
pub async fn metrics(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    let config = &svc.config.metrics;
    if !config.enabled {
        return Err(Error::NotFound(
            "metrics are disabled (metrics.enabled in appliance.toml)".into(),
        ));
    }
    if !config.token.is_empty() {
        let sent = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        use subtle::ConstantTimeEq;
        if !bool::from(sent.as_bytes().ct_eq(config.token.as_bytes())) {
            return Err(Error::Unauthenticated(
                "metrics need Authorization: Bearer <metrics.token>".into(),
            ));
        }
    }
    let svc = svc.into_inner();
    let text = web::block(move || crate::metrics::render(&svc))
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}

/// `GET /status` (any valid key): readiness, version and codecs, the render queue, the
/// render store and the edge queue, as JSON (`metrics::status`).
pub async fn status(req: HttpRequest, svc: Svc) -> Result<HttpResponse> {
    principal(&req, &svc)?;
    let svc = svc.into_inner();
    let body = web::block(move || crate::metrics::status(&svc))
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
    Ok(json_response(200, &body))
}

/// `GET /readyz`: the store can be read and written and has its free-space headroom (no
/// authentication).
pub async fn readyz(svc: Svc) -> HttpResponse {
    match svc.ready() {
        Ok(()) => json_response(200, &json!({ "status": "ready" })),
        Err(e) => {
            let message = if e.is_no_space() {
                e.to_string()
            } else {
                "the store is not writable".to_string()
            };
            log::warn!("readiness check failed: {e}");
            json_response(
                503,
                &json!({ "status": "not ready", "error": { "code": 503, "message": message } }),
            )
        }
    }
}
