//! The route table of the management API listener (spec §3, §4, §9).

use super::{accounts, admin, aliases, images, not_found, stacks};
use actix_web::http::Method;
use actix_web::web;

/// A route for `GET` and `HEAD` (actix answers `HEAD` with the headers of `GET` and no body).
fn get_or_head() -> actix_web::Route {
    web::route().guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
}

/// Registers every API route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let copy = || Method::from_bytes(b"COPY").unwrap_or(Method::POST);
    cfg.route("/", web::get().to(accounts::root))
        .route("/healthz", web::get().to(accounts::healthz))
        .route("/dashboard", get_or_head().to(super::dashboard::index))
        .route("/dashboard/", get_or_head().to(super::dashboard::index))
        .route(
            "/dashboard/{file}",
            get_or_head().to(super::dashboard::file),
        )
        .route("/status", web::get().to(accounts::status))
        .route(
            "/preview/{org}/{tail:.+}",
            web::get().to(super::render::preview),
        )
        .route("/readyz", web::get().to(accounts::readyz))
        .route("/metrics", web::get().to(accounts::metrics))
        .route("/stats/{org}", web::get().to(stacks::stats))
        .route("/billing/{org}", web::get().to(stacks::billing))
        // backups (root key only)
        .route("/admin/export", web::get().to(admin::export))
        .route("/admin/verify", web::get().to(admin::verify))
        // purges (free and unlimited)
        .route(
            "/organizations/{org}/cache",
            web::delete().to(accounts::purge),
        )
        .route(
            "/sourceimages/{org}/{hash}/cache",
            web::delete().to(images::purge),
        )
        .route("/operations", web::get().to(stacks::operations))
        .route("/stackoptions", web::get().to(stacks::stack_options))
        // organizations and memberships
        .route("/organizations/{org}", web::put().to(accounts::create_org))
        .route("/organizations/{org}", web::get().to(accounts::get_org))
        .route(
            "/organizations/{org}/options",
            web::put().to(accounts::set_options),
        )
        .route(
            "/organizations/{org}/options/{name}",
            web::put().to(accounts::set_option),
        )
        .route(
            "/organizations/{org}/memberships",
            web::post().to(accounts::create_member),
        )
        .route(
            "/organizations/{org}/memberships",
            web::get().to(accounts::list_members),
        )
        .route(
            "/organizations/{org}/memberships/{user}",
            web::get().to(accounts::get_member),
        )
        .route(
            "/organizations/{org}/memberships/{user}",
            web::put().to(accounts::put_member),
        )
        .route(
            "/organizations/{org}/memberships/{user}",
            web::delete().to(accounts::delete_member),
        )
        // the calling user
        .route("/user", web::get().to(accounts::get_user))
        .route("/user/apikeys", web::get().to(accounts::list_keys))
        .route("/user/apikeys/token", web::get().to(accounts::token))
        .route("/utils/{org}/sign_url", web::post().to(accounts::sign_url))
        .route("/user/apikeys", web::post().to(accounts::add_key))
        .route(
            "/user/apikeys/current",
            web::get().to(accounts::current_key),
        )
        .route("/user/apikeys/{id}", web::delete().to(accounts::delete_key))
        .route("/user/memberships", web::get().to(accounts::my_memberships))
        // source images
        .route("/sourceimages/{org}", web::post().to(images::upload))
        .route("/sourceimages/{org}", web::get().to(images::list))
        .route(
            "/sourceimages/{org}",
            web::delete().to(images::delete_by_binary),
        )
        .route(
            "/sourceimages/{org}/copy",
            web::post().to(images::copy_many),
        )
        .route(
            "/sourceimages/{org}/binaryhash/{sha1}",
            web::get().to(images::by_binary),
        )
        // Before `{hash}`, which would take `download` for a hash (no hash is that word).
        .route(
            "/sourceimages/{org}/download",
            web::get().to(images::download_zip),
        )
        // Before `{hash}/…`, which would take `alias` for a hash (no hash is that word).
        .route("/sourceimages/{org}/alias", web::get().to(aliases::list))
        .route(
            "/sourceimages/{org}/alias/{alias}",
            web::put().to(aliases::put),
        )
        .route(
            "/sourceimages/{org}/alias/{alias}",
            web::get().to(aliases::get),
        )
        .route(
            "/sourceimages/{org}/alias/{alias}",
            web::delete().to(aliases::delete),
        )
        .route(
            "/sourceimages/{org}/alias/{alias}/cache",
            web::delete().to(aliases::purge),
        )
        .route("/sourceimages/{org}/{hash}", web::get().to(images::get))
        .route(
            "/sourceimages/{org}/{hash}",
            web::delete().to(images::delete),
        )
        .route(
            "/sourceimages/{org}/{hash}",
            web::route().method(copy()).to(images::copy),
        )
        .route(
            "/sourceimages/{org}/{hash}/copy",
            web::post().to(images::copy),
        )
        .route(
            "/sourceimages/{org}/{hash}/restore",
            web::post().to(images::restore),
        )
        .route(
            "/sourceimages/{org}/{hash}/download",
            web::get().to(images::download),
        )
        .route(
            "/sourceimages/{org}/{hash}/name",
            web::put().to(images::rename),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/user",
            web::get().to(images::get_user_meta),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/user",
            web::put().to(images::replace_user_meta),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/user",
            web::patch().to(images::merge_user_meta),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/user",
            web::delete().to(images::clear_user_meta),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/user/{field}",
            web::get().to(images::get_user_field),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/user/{field}",
            web::put().to(images::set_user_field),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/user/{field}",
            web::delete().to(images::delete_user_field),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/dynamic/{name}",
            web::put().to(images::set_dynamic),
        )
        .route(
            "/sourceimages/{org}/{hash}/meta/dynamic/{name}",
            web::delete().to(images::delete_dynamic),
        )
        .route(
            "/sourceimages/{org}/{hash}/options/protected",
            web::put().to(images::set_protected),
        )
        .route(
            "/sourceimages/{org}/{hash}/options/locked",
            web::put().to(images::set_locked),
        )
        // stacks
        .route("/stacks/{org}", web::get().to(stacks::list))
        .route("/stacks/{org}/{name}", web::put().to(stacks::put))
        .route("/stacks/{org}/{name}", web::get().to(stacks::get))
        .route("/stacks/{org}/{name}", web::delete().to(stacks::delete))
        .route(
            "/stacks/{org}/{name}/cache",
            web::delete().to(stacks::purge),
        )
        .default_service(web::to(not_found));
}
