//! The result of a deploy, and its exit code.

use std::fmt;

use serde::Serialize;

use crate::event::Phase;
use crate::exit::ExitCode;
use crate::types::{ContainerId, HostId, LockInfo, Release};

/// How a deploy (or undo, or recover) ended. Each maps to one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[must_use]
#[non_exhaustive]
pub enum Outcome {
    /// Every host runs the new release, verified, and the tags moved. Exit 0.
    Deployed,
    /// Failed before anything changed on any host. Exit 1.
    Failed,
    /// Every host verified, but moving the registry tags failed. Exit 1.
    PromotionFailed,
    /// The new release failed; the previous release was restored and is healthy. Exit 3.
    RolledBack,
    /// Restoring failed or was not attempted (`halt`): a host may be without
    /// a healthy release. Exit 4.
    RollbackFailed,
    /// Another deploy holds a host's lock; nothing changed. Exit 5.
    Locked,
}

impl Outcome {
    /// The process exit code of the command line contract.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Deployed => ExitCode::Ok,
            Outcome::Failed | Outcome::PromotionFailed => ExitCode::Failed,
            Outcome::RolledBack => ExitCode::RolledBack,
            Outcome::RollbackFailed => ExitCode::RollbackFailed,
            Outcome::Locked => ExitCode::Locked,
        }
    }

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Failed => "failed",
            Outcome::PromotionFailed => "promotion_failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::RollbackFailed => "rollback_failed",
            Outcome::Locked => "locked",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened on one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    /// The host.
    pub host: HostId,
    /// The phase it ended in.
    pub phase: Phase,
    /// The release that ran before the deploy, if any.
    pub before: Option<Release>,
    /// The release that runs now, if any.
    pub after: Option<Release>,
    /// The container that runs the app now.
    pub container: Option<ContainerId>,
    /// Why this host failed, if it did.
    pub error: Option<String>,
    /// Last output lines of the failed container.
    pub logs: Vec<String>,
    /// The last probe answer seen on this host.
    pub last_probe: Option<String>,
}

impl HostReport {
    /// A report for a host nothing was done to yet.
    pub fn untouched(host: HostId) -> Self {
        Self {
            host,
            phase: Phase::Planned,
            before: None,
            after: None,
            container: None,
            error: None,
            logs: Vec::new(),
            last_probe: None,
        }
    }
}

/// The full result of a deploy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[must_use]
pub struct DeployReport {
    /// How it ended.
    pub outcome: Outcome,
    /// The release that was deployed (or attempted).
    pub target: Option<Release>,
    /// One entry per host, in config order.
    pub hosts: Vec<HostReport>,
    /// The reason of the failure, if any.
    pub reason: Option<String>,
    /// The lock that stopped us, for [`Outcome::Locked`].
    pub lock_holder: Option<LockInfo>,
    /// Whether the registry tags were moved.
    pub promoted: bool,
}

impl DeployReport {
    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        self.outcome.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_the_cli_contract() {
        assert_eq!(Outcome::Deployed.exit_code(), 0);
        assert_eq!(Outcome::Failed.exit_code(), 1);
        assert_eq!(Outcome::PromotionFailed.exit_code(), 1);
        assert_eq!(Outcome::RolledBack.exit_code(), 3);
        assert_eq!(Outcome::RollbackFailed.exit_code(), 4);
        assert_eq!(Outcome::Locked.exit_code(), 5);
    }
}
