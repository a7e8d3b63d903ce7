//! Values the storage tests of every backend build their records from.

use super::renders::{RenderMeta, StackRevision};
use super::ServedPath;
use crate::model::account::Organization;
use crate::model::image::ImageRecord;

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

/// A live 1×1 JPEG of organization `acme` under `hash`, stored in the blob `blob`.
pub fn image(hash: &str, blob: &str) -> ImageRecord {
    ImageRecord {
        organization: "acme".into(),
        hash: hash.into(),
        binary_hash: "b".repeat(40),
        blob: blob.into(),
        name: "a.jpg".into(),
        format: "jpg".into(),
        mimetype: "image/jpeg".into(),
        size: 1,
        width: 1,
        height: 1,
        created: String::new(),
        created_ns: 0,
        user_metadata: Default::default(),
        dynamic_metadata: Default::default(),
        static_metadata: Default::default(),
        deleted: false,
        deleted_at: None,
        protected: false,
        locked: false,
        opaque: true,
        animated: false,
        frames: 1,
    }
}
