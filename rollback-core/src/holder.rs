//! Whether the holder of a deploy lock still runs, and whether `recover`
//! may take its lock over.
//!
//! A live deploy's lock is taken or freed by nobody else. `recover` acts
//! on a host only when the deploy that holds its lock is proven gone; the
//! proof comes from the embedder ([`HolderCheck`]: the CLI knows its own
//! machine and can ask whether a process id still runs). Without a proof,
//! only a forced takeover proceeds.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::types::LockInfo;

/// What is known of the process that holds a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HolderFate {
    /// It still runs (same machine, its process is there).
    Running,
    /// It is gone (same machine, no such process).
    Gone,
    /// Nothing can be proven (another machine, an unreadable holder).
    Unknown,
}

impl fmt::Display for HolderFate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HolderFate::Running => "its holder still runs",
            HolderFate::Gone => "its holder is gone",
            HolderFate::Unknown => "its holder cannot be proven gone",
        })
    }
}

/// Tells whether the holder of a lock still runs.
pub trait HolderCheck: Send + Sync {
    /// The fate of `lock`'s holder.
    fn fate(&self, lock: &LockInfo) -> HolderFate;
}

impl<F: Fn(&LockInfo) -> HolderFate + Send + Sync> HolderCheck for F {
    fn fate(&self, lock: &LockInfo) -> HolderFate {
        self(lock)
    }
}

/// Proves nothing: every holder is [`HolderFate::Unknown`], so `recover`
/// takes a lock over only when forced.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHolderCheck;

impl HolderCheck for NoHolderCheck {
    fn fate(&self, _: &LockInfo) -> HolderFate {
        HolderFate::Unknown
    }
}

/// Whether `recover` may take over a lock whose holder's fate is `fate`:
/// when the holder is gone, or, forced, when it cannot be proven gone. A
/// holder seen running is never overtaken: its deploy goes on.
pub fn may_take_over(fate: &HolderFate, force: bool) -> bool {
    match fate {
        HolderFate::Gone => true,
        HolderFate::Unknown => force,
        HolderFate::Running => false,
    }
}

/// How long ago `lock` was taken, in whole seconds, as of `now`.
pub fn lock_age(lock: &LockInfo, now: SystemTime) -> Duration {
    let age = now.duration_since(lock.started_at).unwrap_or_default();
    Duration::from_secs(age.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DeploymentId;

    #[test]
    fn only_a_gone_holder_or_a_forced_unknown_one_is_overtaken() {
        // (fate, force) -> take over
        let table = [
            (HolderFate::Gone, false, true),
            (HolderFate::Gone, true, true),
            (HolderFate::Unknown, false, false),
            (HolderFate::Unknown, true, true),
            (HolderFate::Running, false, false),
            (HolderFate::Running, true, false),
        ];
        for (fate, force, expected) in table {
            assert_eq!(may_take_over(&fate, force), expected, "{fate:?} {force}");
        }
    }

    #[test]
    fn checks_are_closures_or_none() {
        let lock = LockInfo {
            app: "app".into(),
            deployment: DeploymentId("d".into()),
            holder: "ci@runner pid 7".into(),
            target: "v2".into(),
            started_at: SystemTime::UNIX_EPOCH,
        };
        let gone = |_: &LockInfo| HolderFate::Gone;
        assert_eq!(gone.fate(&lock), HolderFate::Gone);
        assert_eq!(NoHolderCheck.fate(&lock), HolderFate::Unknown);
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(3_900);
        assert_eq!(lock_age(&lock, now), Duration::from_secs(3));
    }
}
