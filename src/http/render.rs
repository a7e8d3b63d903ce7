//! The route table of the public render listener: `/{org}/{stack}/…/{hash}.{format}`.

use super::not_found;
use actix_web::web;

/// Registers every render route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(not_found));
}
