//! Organizations, users, API keys and memberships: the plain records the store keeps and the
//! rules about roles. Keys are never stored in clear; only their BLAKE3 digest is.

use serde::{Deserialize, Serialize};

/// A role a membership grants on one organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Upload,
    Admin,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "upload" => Some(Role::Upload),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Upload => "upload",
            Role::Admin => "admin",
        }
    }
}

/// What an endpoint needs. Each right is granted by a set of roles (rokka's model):
/// `read` reads, `write` reads and changes, `upload` only uploads, `admin` does everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    Read,
    Write,
    Upload,
    Admin,
}

impl Right {
    /// Whether a membership with `roles` has this right.
    pub fn granted_by(self, roles: &[Role]) -> bool {
        roles.iter().any(|role| match self {
            Right::Read => matches!(role, Role::Read | Role::Write | Role::Admin),
            Right::Write => matches!(role, Role::Write | Role::Admin),
            Right::Upload => matches!(role, Role::Upload | Role::Write | Role::Admin),
            Right::Admin => matches!(role, Role::Admin),
        })
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
