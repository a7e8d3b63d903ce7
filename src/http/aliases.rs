//! Handlers for `/sourceimages/{org}/alias/{alias}` (spec §4.11): create or re-point, read,
//! delete, and purge the alias's URLs at the edge. Alias names are parsed here, at the
//! boundary; one outside `[a-zA-Z0-9_]` is a 404, as at rokka.

use super::{dry_run, json_body, json_response, no_content, org_name, principal, query_pairs};
use crate::error::Result;
use crate::service::aliases::{self, AliasName, AliasSaved};
use crate::service::Services;
use actix_web::{web, HttpRequest, HttpResponse};

type Svc = web::Data<Services>;

/// `PUT /sourceimages/{org}/alias/{alias}` with `{"hash": "…"}`: 201 when created, 200 when
/// re-pointed (`?overwrite=true`), 409 when it exists without.
pub async fn put(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, name) = path.into_inner();
    let org = org_name(&org)?;
    let name = AliasName::parse(&name)?;
    let overwrite =
        super::query_value(&query_pairs(&req), "overwrite").is_some_and(|v| v == "true");
    let body = json_body(payload).await?;
    Ok(
        match aliases::put(&svc, &who, &org, &name, &body, overwrite).await? {
            AliasSaved::Created(v) => json_response(201, &v),
            AliasSaved::Replaced(v) => json_response(200, &v),
        },
    )
}

/// `GET /sourceimages/{org}/alias`.
pub async fn list(req: HttpRequest, svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let org = org_name(&path)?;
    Ok(json_response(200, &aliases::list(&svc, &who, &org)?))
}

/// `GET /sourceimages/{org}/alias/{alias}`.
pub async fn get(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, name) = path.into_inner();
    let (org, name) = (org_name(&org)?, AliasName::parse(&name)?);
    Ok(json_response(200, &aliases::get(&svc, &who, &org, &name)?))
}

/// `DELETE /sourceimages/{org}/alias/{alias}`.
pub async fn delete(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, name) = path.into_inner();
    let (org, name) = (org_name(&org)?, AliasName::parse(&name)?);
    aliases::delete(&svc, &who, &org, &name).await?;
    Ok(no_content())
}

/// `DELETE /sourceimages/{org}/alias/{alias}/cache` (`?dry_run=true` only lists).
pub async fn purge(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, name) = path.into_inner();
    let (org, name) = (org_name(&org)?, AliasName::parse(&name)?);
    let report = aliases::purge(&svc, &who, &org, &name, dry_run(&req)).await?;
    Ok(json_response(200, &report))
}
