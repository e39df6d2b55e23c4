//! Roles and what each may do: one table, [`Role::allows`].
//!
//! Self-service routes (logout, the user's own password and language) need a session but no
//! permission: every role may use them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A console user's role. Serialized lowercase (`"admin"`, `"operator"`, `"auditor"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users and alerting settings.
    Admin,
    /// Day-to-day security work: everything but users and alerting settings.
    Operator,
    /// Read-only oversight: viewing, audit-log verification and report downloads.
    Auditor,
}

/// Something a console route does that not every role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Every `GET` of security data: overview, agents, detections, events, logs, quarantine,
    /// backups, checklist, audit log, alerting settings (without passwords).
    View,
    /// Detection triage: acknowledge, close, false positive; deleting suppressions.
    Triage,
    /// Actions on endpoints: isolate, release, scan, quarantine restore/delete, backup
    /// restore requests.
    Respond,
    /// Downloading reports.
    Reports,
    /// Mailing the monthly report to the configured recipients.
    SendReports,
    /// Running the audit-log verification.
    VerifyAudit,
    /// Creating and changing users: roles, disabling, passwords, TOTP reset, unlock.
    ManageUsers,
    /// Changing alerting settings and sending test messages.
    ManageAlerting,
}

impl Permission {
    /// Every permission, for listing and for tests.
    pub const ALL: [Permission; 8] = [
        Permission::View,
        Permission::Triage,
        Permission::Respond,
        Permission::Reports,
        Permission::SendReports,
        Permission::VerifyAudit,
        Permission::ManageUsers,
        Permission::ManageAlerting,
    ];
}

/// Which roles hold a permission, as `[admin, operator, auditor]`. An exhaustive match, so a
/// new permission does not compile until someone has decided each role's cell.
const fn holders(permission: Permission) -> [bool; 3] {
    //                                    admin  operator auditor
    match permission {
        Permission::View =>
        /*           */
        {
            [true, true, true]
        }
        Permission::Triage =>
        /*         */
        {
            [true, true, false]
        }
        Permission::Respond =>
        /*        */
        {
            [true, true, false]
        }
        Permission::Reports =>
        /*        */
        {
            [true, true, true]
        }
        Permission::SendReports =>
        /*    */
        {
            [true, true, false]
        }
        Permission::VerifyAudit =>
        /*    */
        {
            [true, true, true]
        }
        Permission::ManageUsers =>
        /*    */
        {
            [true, false, false]
        }
        Permission::ManageAlerting =>
        /* */
        {
            [true, false, false]
        }
    }
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Auditor];

    /// May this role do that?
    pub fn allows(self, permission: Permission) -> bool {
        let [admin, operator, auditor] = holders(permission);
        match self {
            Role::Admin => admin,
            Role::Operator => operator,
            Role::Auditor => auditor,
        }
    }

    /// The lowercase name, as stored and as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `admin`, `operator` or `auditor`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected admin, operator or auditor)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    /// Fails to compile when a permission is added, so `Permission::ALL` and the expectations
    /// below are revisited.
    fn _every_permission_is_listed(permission: Permission) {
        match permission {
            View | Triage | Respond | Reports | SendReports | VerifyAudit | ManageUsers | ManageAlerting => {}
        }
    }

    #[test]
    fn all_lists_each_permission_once() {
        let mut seen = std::collections::HashSet::new();
        for permission in Permission::ALL {
            assert!(seen.insert(permission), "{permission:?} listed twice");
        }
        assert_eq!(seen.len(), 8);
    }

    // The brief's words, cell by cell: admin everything; operator everything but users and
    // alerting settings; auditor only viewing, audit verification and report downloads.
    #[test]
    fn admin_may_do_everything() {
        for permission in Permission::ALL {
            assert!(Role::Admin.allows(permission), "admin denied {permission:?}");
        }
    }

    #[test]
    fn operator_may_do_everything_but_users_and_alerting() {
        for permission in Permission::ALL {
            let expected = !matches!(permission, ManageUsers | ManageAlerting);
            assert_eq!(Role::Operator.allows(permission), expected, "operator {permission:?}");
        }
    }

    #[test]
    fn auditor_may_only_view_verify_and_download_reports() {
        for permission in Permission::ALL {
            let expected = matches!(permission, View | VerifyAudit | Reports);
            assert_eq!(Role::Auditor.allows(permission), expected, "auditor {permission:?}");
        }
    }

    #[test]
    fn roles_serialize_lowercase_and_parse_back() {
        for role in Role::ALL {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert_eq!(serde_json::to_string(&Role::Auditor).unwrap(), "\"auditor\"");
        assert!("Admin".parse::<Role>().is_err());
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
        assert_eq!(serde_json::to_string(&ManageUsers).unwrap(), "\"manage_users\"");
    }
}
