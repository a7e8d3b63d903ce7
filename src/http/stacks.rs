//! Handlers for `/stacks`, `/operations` and `/stackoptions`.

use super::{
    dry_run, json_response, no_content, org_name, principal, query_pairs, query_value, read_body,
    MAX_JSON_BODY,
};
use crate::error::{Error, Result};
use crate::model::schema;
use crate::service::purge;
use crate::service::stacks::{self, Saved};
use crate::service::Services;
use actix_web::{web, HttpRequest, HttpResponse};

type Svc = web::Data<Services>;

/// `GET /operations` (no authentication): the schemas validation uses.
pub async fn operations() -> HttpResponse {
    json_response(200, &schema::operations_json())
}

/// `GET /stackoptions` (no authentication).
pub async fn stack_options() -> HttpResponse {
    json_response(200, &schema::stack_options_json())
}

/// `PUT /stacks/{org}/{name}`.
pub async fn put(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, name) = path.into_inner();
    let overwrite = query_value(&query_pairs(&req), "overwrite").is_some_and(|v| v == "true");
    let body = read_body(payload, MAX_JSON_BODY).await?;
    Ok(
        match stacks::put(
            &svc,
            &who,
            &org_name(&org)?,
            &name,
            &body,
            overwrite,
            dry_run(&req),
        )
        .await?
        {
            Saved::Created(v) => json_response(201, &v),
            Saved::Overwritten(v) | Saved::DryRun(v) => json_response(200, &v),
        },
    )
}

/// `GET /stacks/{org}/{name}`.
pub async fn get(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, name) = path.into_inner();
    Ok(json_response(
        200,
        &stacks::get(&svc, &who, &org_name(&org)?, &name)?,
    ))
}

/// `GET /stacks/{org}`.
pub async fn list(req: HttpRequest, svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let pairs = query_pairs(&req);
    let number = |key: &str| -> Result<Option<usize>> {
        query_value(&pairs, key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| Error::Invalid(format!("{key} must be a number")))
            })
            .transpose()
    };
    let (limit, offset) = (number("limit")?, number("offset")?);
    Ok(json_response(
        200,
        &stacks::list(&svc, &who, &org_name(&path)?, limit, offset)?,
    ))
}

/// `DELETE /stacks/{org}/{name}`.
pub async fn delete(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, name) = path.into_inner();
    Ok(
        match stacks::delete(&svc, &who, &org_name(&org)?, &name, dry_run(&req)).await? {
            Some(report) => json_response(200, &report),
            None => no_content(),
        },
    )
}

/// `DELETE /stacks/{org}/{name}/cache`: removes the stack's renders and lists their paths.
pub async fn purge(
    req: HttpRequest,
    svc: Svc,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let (org, name) = path.into_inner();
    let report = purge::stack_cache(&svc, &who, &org_name(&org)?, &name, dry_run(&req)).await?;
    Ok(json_response(200, &report))
}

/// `GET /billing/{org}?from&to`.
pub async fn billing(req: HttpRequest, svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let pairs = query_pairs(&req);
    let (from, to) = (query_value(&pairs, "from"), query_value(&pairs, "to"));
    let body = crate::service::stats::billing(&svc, &who, &org_name(&path)?, from, to)?;
    Ok(json_response(200, &body))
}

/// `GET /stats/{org}?from&to`.
pub async fn stats(req: HttpRequest, svc: Svc, path: web::Path<String>) -> Result<HttpResponse> {
    let who = principal(&req, &svc)?;
    let pairs = query_pairs(&req);
    let (from, to) = (query_value(&pairs, "from"), query_value(&pairs, "to"));
    let body = crate::service::stats::get(&svc, &who, &org_name(&path)?, from, to)?;
    Ok(json_response(200, &body))
}
