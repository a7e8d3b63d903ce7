//! Values the storage tests of every backend build their records from.

use super::renders::{RenderMeta, StackRevision};
use super::ServedPath;
use crate::model::account::Organization;

/// A JPEG render of `image` of organization `acme` through `stacks` (name, revision).
pub fn meta(image: &str, stacks: &[(&str, u64)]) -> RenderMeta {
    RenderMeta {
        content_type: "image/jpeg".into(),
        etag: "\"x\"".into(),
        organization: "acme".into(),
        image: image.into(),
        stacks: stacks
            .iter()
            .map(|(n, r)| StackRevision {
                name: n.to_string(),
                revision: *r,
            })
            .collect(),
    }
}

/// `p` as served under the render host `img.example.com`.
pub fn path(p: &str) -> ServedPath {
    ServedPath {
        host: "img.example.com".into(),
        path: p.into(),
    }
}

/// An organization named `name`.
pub fn org(name: &str) -> Organization {
    Organization {
        id: format!("id-{name}"),
        name: name.to_string(),
        display_name: name.to_uppercase(),
        billing_email: format!("{name}@example.com"),
        created: "2026-12-06T10:00:00+00:00".into(),
        master_organization: name.to_string(),
        options: Default::default(),
        signing_keys: vec!["k1".into()],
    }
}
