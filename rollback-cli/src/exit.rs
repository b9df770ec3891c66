//! Exit codes of the CLI contract and the one error type every failure path uses.
//!
//! The codes themselves are [`rollback_core::ExitCode`]; these are their numbers.

use std::fmt;

use rollback_core::{ExitCode, LockInfo, Outcome};

use crate::config::ConfigError;

/// Deployed, or the command succeeded.
pub const OK: i32 = ExitCode::Ok.code();
/// Failed before anything changed, or an unexpected error.
pub const FAILED: i32 = ExitCode::Failed.code();
/// Usage or configuration error.
pub const USAGE: i32 = ExitCode::Usage.code();
/// The new release failed; the previous one was restored and is healthy.
pub const ROLLED_BACK: i32 = ExitCode::RolledBack.code();
/// Rollback failed: a host may be without a healthy release.
pub const ROLLBACK_FAILED: i32 = ExitCode::RollbackFailed.code();
/// Another deploy holds the lock.
pub const LOCKED: i32 = ExitCode::Locked.code();

/// The exit code of a deploy outcome.
pub fn for_outcome(outcome: Outcome) -> i32 {
    outcome.exit_code().code()
}

/// A failure of a command, with the exit code it maps to.
///
/// Every message a user sees about a failure is built here, so there is one
/// place where wording and redaction are decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    code: i32,
    message: String,
}

impl CliError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }

    /// A failure before anything changed, or an unexpected one (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: FAILED,
            message: message.into(),
        }
    }

    /// A lock held by another deploy (exit 5).
    pub fn locked(host: &str, lock: &LockInfo) -> Self {
        Self {
            code: LOCKED,
            message: format!("[{host}] locked by {lock}"),
        }
    }

    /// An error of a registry, engine or probe, with what was being done (exit 1).
    pub fn core(context: impl fmt::Display, err: &rollback_core::Error) -> Self {
        Self {
            code: FAILED,
            message: format!("{context}: {}", err.report()),
        }
    }

    /// A bad value given on the command line (exit 2), such as an invalid reference.
    pub fn bad_argument(what: impl fmt::Display, err: &rollback_core::Error) -> Self {
        Self {
            code: USAGE,
            message: format!("{what}: {}", err.message()),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        self.code
    }

    /// The message, without the `error: ` prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        Self::usage(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_documented_codes() {
        assert_eq!(for_outcome(Outcome::Deployed), OK);
        assert_eq!(for_outcome(Outcome::Failed), FAILED);
        assert_eq!(for_outcome(Outcome::PromotionFailed), FAILED);
        assert_eq!(for_outcome(Outcome::StableMoved), FAILED);
        assert_eq!(for_outcome(Outcome::RolledBack), ROLLED_BACK);
        assert_eq!(for_outcome(Outcome::RollbackFailed), ROLLBACK_FAILED);
        assert_eq!(for_outcome(Outcome::Locked), LOCKED);
    }

    #[test]
    fn errors_map_to_codes() {
        let config = ConfigError {
            file: "rollback.toml".into(),
            line: Some(3),
            message: "app.name: bad".into(),
        };
        let e = CliError::from(config);
        assert_eq!(e.exit_code(), USAGE);
        assert_eq!(e.to_string(), "rollback.toml:3: app.name: bad");
        let e = CliError::core("resolve x", &rollback_core::Error::not_found("no such tag"));
        assert_eq!(
            (e.exit_code(), e.message()),
            (FAILED, "resolve x: no such tag")
        );
        let e = CliError::core(
            "copy",
            &rollback_core::Error::invalid_input("digest mismatch"),
        );
        assert_eq!(e.exit_code(), FAILED);
        let e = CliError::bad_argument("SRC", &rollback_core::Error::invalid_input("bad ref"));
        assert_eq!((e.exit_code(), e.message()), (USAGE, "SRC: bad ref"));
        let lock = LockInfo {
            app: "a".into(),
            deployment: "d1".into(),
            holder: "ci@runner pid 7".into(),
            target: "v2".into(),
            started_at: std::time::UNIX_EPOCH,
        };
        let e = CliError::locked("prod-a", &lock);
        assert_eq!(e.exit_code(), LOCKED);
        assert!(e.message().contains("ci@runner pid 7"), "{e}");
    }
}
