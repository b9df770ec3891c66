//! The process exit codes of the command line contract, in one place: the
//! [`Outcome`](crate::Outcome) of a deploy maps to one, and so does every
//! usage or configuration error of a tool built on this crate.

use std::fmt;

use serde::Serialize;

/// A documented process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ExitCode {
    /// Deployed, or the command succeeded.
    Ok,
    /// Failed before anything changed, or an unexpected error.
    Failed,
    /// Usage or configuration error.
    Usage,
    /// The new release failed; the previous one was restored and is healthy.
    RolledBack,
    /// Rollback failed: a host may be without a healthy release.
    RollbackFailed,
    /// Another deploy holds the lock.
    Locked,
    /// Interrupted twice before any host was switched.
    Interrupted,
}

impl ExitCode {
    /// The number the process exits with.
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Failed => 1,
            ExitCode::Usage => 2,
            ExitCode::RolledBack => 3,
            ExitCode::RollbackFailed => 4,
            ExitCode::Locked => 5,
            ExitCode::Interrupted => 130,
        }
    }

    /// The code with the number `code`, if it is a documented one.
    pub fn from_code(code: i32) -> Option<Self> {
        [
            ExitCode::Ok,
            ExitCode::Failed,
            ExitCode::Usage,
            ExitCode::RolledBack,
            ExitCode::RollbackFailed,
            ExitCode::Locked,
            ExitCode::Interrupted,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

impl From<ExitCode> for i32 {
    fn from(value: ExitCode) -> Self {
        value.code()
    }
}

impl PartialEq<i32> for ExitCode {
    fn eq(&self, other: &i32) -> bool {
        self.code() == *other
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// Serialized as the number, as scripts read it.
impl Serialize for ExitCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [0, 1, 2, 3, 4, 5, 130] {
            assert_eq!(ExitCode::from_code(code).unwrap().code(), code);
        }
        assert_eq!(ExitCode::from_code(6), None);
    }
}
