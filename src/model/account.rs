//! Organizations, users, API keys and memberships: the plain records the store keeps and the
//! rules about roles. Keys are never stored in clear; only their BLAKE3 digest is.

use serde::{Deserialize, Serialize};

/// A role a membership grants on one organization (spec §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "write")]
    Write,
    #[serde(rename = "upload")]
    Upload,
    #[serde(rename = "admin")]
    Admin,
    /// Only the source-image endpoints, reading.
    #[serde(rename = "sourceimages:read")]
    SourceimagesRead,
    /// Only the source-image endpoints, reading and changing.
    #[serde(rename = "sourceimages:write")]
    SourceimagesWrite,
    /// With a `sourceimages:` role: may download the originals of protected images.
    #[serde(rename = "sourceimages:download:protected")]
    SourceimagesDownloadProtected,
    /// Only locking and unlocking images.
    #[serde(rename = "sourceimages:unlock")]
    SourceimagesUnlock,
    /// Only the billing figures.
    #[serde(rename = "billing:read")]
    BillingRead,
}

impl Role {
    /// Every role, in the order they are documented.
    pub const ALL: [Role; 9] = [
        Role::Read,
        Role::Write,
        Role::Upload,
        Role::Admin,
        Role::SourceimagesRead,
        Role::SourceimagesWrite,
        Role::SourceimagesDownloadProtected,
        Role::SourceimagesUnlock,
        Role::BillingRead,
    ];

    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Upload => "upload",
            Role::Admin => "admin",
            Role::SourceimagesRead => "sourceimages:read",
            Role::SourceimagesWrite => "sourceimages:write",
            Role::SourceimagesDownloadProtected => "sourceimages:download:protected",
            Role::SourceimagesUnlock => "sourceimages:unlock",
            Role::BillingRead => "billing:read",
        }
    }
}

/// What an endpoint needs. Each right is granted by a set of roles (rokka's model, spec
/// §3.3): `read` reads, `write` reads and changes, `upload` only uploads, `admin` does
/// everything; the `sourceimages:` roles reach the source-image endpoints only, and
/// `billing:read` the billing figures only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Organization, stacks, stats.
    Read,
    /// Stacks, purges, organization changes.
    Write,
    Upload,
    Admin,
    /// Source-image records, listings, metadata and originals.
    ImagesRead,
    /// Source-image changes: metadata, names, deletes, restores, copies.
    ImagesWrite,
    /// The original bytes of a protected image.
    DownloadProtected,
    /// Locking and unlocking images.
    Lock,
    /// `GET /billing/{org}`.
    BillingRead,
}

impl Right {
    /// Whether a membership with `roles` has this right.
    pub fn granted_by(self, roles: &[Role]) -> bool {
        use Role::*;
        roles.iter().any(|role| match self {
            Right::Read => matches!(role, Read | Write | Admin),
            Right::Write => matches!(role, Write | Admin),
            Right::Upload => matches!(role, Upload | Write | Admin | SourceimagesWrite),
            Right::Admin => matches!(role, Admin),
            Right::ImagesRead => {
                matches!(
                    role,
                    Read | Write | Admin | SourceimagesRead | SourceimagesWrite
                )
            }
            Right::ImagesWrite => matches!(role, Write | Admin | SourceimagesWrite),
            // The `sourceimages:` roles need the extra role; the general ones have it.
            Right::DownloadProtected => {
                matches!(role, Read | Write | Admin | SourceimagesDownloadProtected)
            }
            Right::Lock => matches!(role, Admin | SourceimagesUnlock),
            Right::BillingRead => matches!(role, Write | Admin | BillingRead),
        })
    }

    /// What the right allows, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "change",
            Right::Upload => "upload to",
            Right::Admin => "administer",
            Right::ImagesRead => "read the source images of",
            Right::ImagesWrite => "change the source images of",
            Right::DownloadProtected => "download protected originals of",
            Right::Lock => "lock or unlock images of",
            Right::BillingRead => "read the billing of",
        }
    }
}

/// Organization-level options (rokka's `PUT /organizations/{org}/options`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrgOptions {
    #[serde(default)]
    pub protect_dynamic_stack: bool,
}

/// An organization record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub billing_email: String,
    pub created: String,
    pub master_organization: String,
    #[serde(default)]
    pub options: OrgOptions,
    /// Keys for signed render URLs; the first one signs, all verify.
    pub signing_keys: Vec<String>,
}

/// A user: the owner of API keys and memberships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    pub created: String,
}

/// An API key record, stored under the digest of the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub comment: String,
    pub created: String,
}

/// Roles of one user on one organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub organization: String,
    pub organization_id: String,
    pub user_id: String,
    pub roles: Vec<Role>,
    pub active: bool,
    pub created: String,
    #[serde(default)]
    pub comment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_implies_read_and_upload_but_not_admin() {
        assert!(Right::Read.granted_by(&[Role::Write]));
        assert!(Right::Upload.granted_by(&[Role::Write]));
        assert!(!Right::Admin.granted_by(&[Role::Write]));
    }

    #[test]
    fn upload_role_only_uploads() {
        assert!(Right::Upload.granted_by(&[Role::Upload]));
        assert!(!Right::Read.granted_by(&[Role::Upload]));
        assert!(!Right::Write.granted_by(&[Role::Upload]));
    }

    #[test]
    fn admin_has_every_right() {
        for right in [Right::Read, Right::Write, Right::Upload, Right::Admin] {
            assert!(right.granted_by(&[Role::Admin]));
        }
    }
}
