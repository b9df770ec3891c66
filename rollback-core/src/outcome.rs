//! The result of a deploy, and its exit code.

use std::fmt;

use serde::Serialize;

use crate::event::Phase;
use crate::exit::ExitCode;
use crate::types::{HostId, LockInfo, Release, Workload};

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
    /// Every host runs the new release, verified, but the stable tag was
    /// moved by someone else during the deploy, so no tag moved. Exit 1.
    StableMoved,
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
            Outcome::Failed | Outcome::PromotionFailed | Outcome::StableMoved => ExitCode::Failed,
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
            Outcome::StableMoved => "stable_moved",
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
#[non_exhaustive]
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
    pub container: Option<Workload>,
    /// Why this host failed, if it did.
    pub error: Option<String>,
    /// Last output lines of the failed container.
    pub logs: Vec<String>,
    /// The last probe answer seen on this host.
    pub last_probe: Option<String>,
    /// Start-first: milliseconds from the new release's failure to the
    /// proxy sending the traffic back to the old one, when it had to.
    pub switch_back_ms: Option<u64>,
}

impl HostReport {
    /// A report for a host nothing was done to yet.
    pub fn untouched(host: HostId) -> Self {
        Self::new(host, Phase::Planned)
    }

    /// A report for a host that ended in `phase`, nothing else known.
    pub fn new(host: HostId, phase: Phase) -> Self {
        Self {
            host,
            phase,
            before: None,
            after: None,
            container: None,
            error: None,
            logs: Vec::new(),
            last_probe: None,
            switch_back_ms: None,
        }
    }

    /// The releases before and after.
    pub fn with_releases(mut self, before: Option<Release>, after: Option<Release>) -> Self {
        self.before = before;
        self.after = after;
        self
    }

    /// The container that runs the app now.
    pub fn with_container(mut self, container: Option<Workload>) -> Self {
        self.container = container;
        self
    }

    /// Why the host failed.
    pub fn with_error(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }

    /// The failed container's last lines and the last probe answer.
    pub fn with_trail(mut self, logs: Vec<String>, last_probe: Option<String>) -> Self {
        self.logs = logs;
        self.last_probe = last_probe;
        self
    }

    /// The time from the failure to the traffic's switch back, start-first.
    pub fn with_switch_back(mut self, switch_back: Option<std::time::Duration>) -> Self {
        self.switch_back_ms = switch_back.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

/// The full result of a deploy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[must_use]
#[non_exhaustive]
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
    /// A report of `outcome` with no target, no hosts and no reason.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            target: None,
            hosts: Vec::new(),
            reason: None,
            lock_holder: None,
            promoted: false,
        }
    }

    /// The release deployed (or attempted).
    pub fn with_target(mut self, target: Option<Release>) -> Self {
        self.target = target;
        self
    }

    /// One entry per host.
    pub fn with_hosts(mut self, hosts: Vec<HostReport>) -> Self {
        self.hosts = hosts;
        self
    }

    /// Why it failed.
    pub fn with_reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    /// The lock that stopped it.
    pub fn with_lock_holder(mut self, lock: Option<LockInfo>) -> Self {
        self.lock_holder = lock;
        self
    }

    /// Whether the registry tags moved.
    pub fn with_promoted(mut self, promoted: bool) -> Self {
        self.promoted = promoted;
        self
    }

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
        assert_eq!(Outcome::StableMoved.exit_code(), 1);
        assert_eq!(Outcome::RolledBack.exit_code(), 3);
        assert_eq!(Outcome::RollbackFailed.exit_code(), 4);
        assert_eq!(Outcome::Locked.exit_code(), 5);
    }
}
