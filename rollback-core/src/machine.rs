//! The per-host deploy state machine, as a pure transition function.
//!
//! [`step`] takes the current [`HostState`] and the result of the effect the
//! driver just performed ([`Input`]) and returns the next state, or
//! [`InvalidTransition`] when that input makes no sense in that state. It does
//! no I/O and reads no clock: times arrive inside the inputs, as offsets from
//! the start of verification. The driver in [`engine`](crate::engine) performs
//! the effects and feeds their results back here.
//!
//! Rules:
//! - a failure in `Planned`, `Locked` or `Captured` (nothing changed yet) ends
//!   in `Failed`;
//! - a failure in `Pulled`..`Verifying` (the switch may have begun) leads to
//!   `RollingBack`, which ends in `RolledBack` (the previous release runs and
//!   is verified healthy) or `RollbackFailed`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::event::Phase;
use crate::types::{ContainerId, LockInfo, Release};

/// The release that ran on a host before the deploy, pinned by its container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapturedRelease {
    /// The container that ran it (and is kept, stopped, during the deploy).
    pub container: ContainerId,
    /// The release it runs, when its labels or repo digest tell.
    pub release: Option<Release>,
}

/// Where one host stands in a deploy; each variant carries the data of that state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[non_exhaustive]
pub enum HostState {
    /// Nothing done yet.
    Planned,
    /// The host's deploy lock is ours.
    Locked,
    /// The running release is known; nothing changed yet.
    Captured {
        /// What ran before, `None` on a first deploy.
        previous: Option<CapturedRelease>,
    },
    /// The new image is on the host.
    Pulled {
        /// What ran before.
        previous: Option<CapturedRelease>,
    },
    /// The old container is stopped and renamed, the new one started.
    Switched {
        /// The new container.
        new_container: ContainerId,
        /// The old container, kept stopped under the retained name.
        retained: Option<CapturedRelease>,
    },
    /// Probing the new release.
    Verifying {
        /// The new container.
        new_container: ContainerId,
        /// The old container, kept stopped.
        retained: Option<CapturedRelease>,
        /// Probe attempts so far.
        attempt: u32,
        /// Healthy answers in a row.
        consecutive_ok: u32,
        /// When the first healthy answer came (offset from verification start).
        since_first_ok: Option<Duration>,
        /// When verification gives up (offset from verification start).
        deadline: Duration,
        /// Until then failed answers are forgiven, even after a healthy one
        /// (offset from verification start).
        start_period: Duration,
    },
    /// The new release proved healthy; the old container is still kept.
    Verified {
        /// The new container.
        new_container: ContainerId,
        /// The old container, kept stopped until promotion.
        retained: Option<CapturedRelease>,
    },
    /// Putting the previous release back.
    RollingBack {
        /// The container of the failed release, if one was created.
        failed_container: Option<ContainerId>,
        /// The release to restore, `None` on a first deploy.
        retained: Option<CapturedRelease>,
        /// Why the new release was abandoned.
        reason: String,
    },
    /// The previous release runs and is verified healthy again (or, on a
    /// first deploy, the failed container is gone and nothing runs).
    RolledBack {
        /// The release running now.
        restored: Option<Release>,
        /// Why the new release was abandoned.
        reason: String,
    },
    /// The previous release could not be restored: a human must act.
    RollbackFailed {
        /// What went wrong.
        reason: String,
    },
    /// Failed before anything changed on the host.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// The result of an effect, fed to [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// The deploy lock was taken.
    LockAcquired,
    /// Someone else holds the lock.
    LockHeld(LockInfo),
    /// The lock could not be asked for (engine unreachable).
    LockFailed(String),
    /// The running release was read.
    Captured(Option<CapturedRelease>),
    /// Reading the running release failed, or the host needs `recover` first.
    CaptureFailed(String),
    /// The new image is present.
    Pulled,
    /// The pull failed.
    PullFailed(String),
    /// The old container is stopped and kept, the new one runs.
    Switched {
        /// The new container.
        new_container: ContainerId,
    },
    /// A step of the switch failed.
    SwitchFailed {
        /// The new container, if it was created.
        new_container: Option<ContainerId>,
        /// What failed.
        reason: String,
    },
    /// Probing begins; gives up at `deadline` after this.
    VerifyStarted {
        /// Verification limit.
        deadline: Duration,
        /// Failed answers before this are forgiven.
        start_period: Duration,
    },
    /// A healthy probe answer at `at` (offset from verification start).
    ProbeHealthy {
        /// When it came.
        at: Duration,
    },
    /// An unhealthy probe answer.
    ProbeUnhealthy {
        /// When it came.
        at: Duration,
        /// Why.
        reason: String,
    },
    /// The probe says the release is still starting.
    ProbeStarting {
        /// When it came.
        at: Duration,
    },
    /// The container exited, restarted or disappeared.
    ContainerExited(String),
    /// The verification deadline passed before the release was stable.
    DeadlinePassed,
    /// The release stayed healthy for `stable_for` after its first healthy answer.
    StableReached,
    /// The deploy was cancelled.
    Cancelled,
    /// The fleet asks a verified host to go back (another host failed).
    Revert(String),
    /// The fleet stops without restoring (`on_failure = "halt"`).
    Halt,
    /// The previous release is back and verified (or there was none to restore).
    RestoreOk(Option<Release>),
    /// Restoring failed.
    RestoreFailed(String),
}

/// An input that makes no sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transition: {input} in state {state}")]
pub struct InvalidTransition {
    /// Name of the state.
    pub state: &'static str,
    /// Name of the input.
    pub input: &'static str,
}

impl HostState {
    /// The state's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            HostState::Planned => "planned",
            HostState::Locked => "locked",
            HostState::Captured { .. } => "captured",
            HostState::Pulled { .. } => "pulled",
            HostState::Switched { .. } => "switched",
            HostState::Verifying { .. } => "verifying",
            HostState::Verified { .. } => "verified",
            HostState::RollingBack { .. } => "rolling_back",
            HostState::RolledBack { .. } => "rolled_back",
            HostState::RollbackFailed { .. } => "rollback_failed",
            HostState::Failed { .. } => "failed",
        }
    }

    /// The event phase of this state.
    pub fn phase(&self) -> Phase {
        match self {
            HostState::Planned => Phase::Planned,
            HostState::Locked => Phase::Locked,
            HostState::Captured { .. } => Phase::Captured,
            HostState::Pulled { .. } => Phase::Pulled,
            HostState::Switched { .. } => Phase::Switched,
            HostState::Verifying { .. } => Phase::Verifying,
            HostState::Verified { .. } => Phase::Verified,
            HostState::RollingBack { .. } => Phase::RollingBack,
            HostState::RolledBack { .. } => Phase::RolledBack,
            HostState::RollbackFailed { .. } => Phase::RollbackFailed,
            HostState::Failed { .. } => Phase::Failed,
        }
    }

    /// Whether no further input is accepted.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            HostState::RolledBack { .. }
                | HostState::RollbackFailed { .. }
                | HostState::Failed { .. }
        )
    }

    /// Whether the host was changed (the switch began) and so must be reverted on failure.
    pub fn is_switched(&self) -> bool {
        matches!(
            self,
            HostState::Switched { .. } | HostState::Verifying { .. } | HostState::Verified { .. }
        )
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Input {
    /// The input's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Input::LockAcquired => "lock_acquired",
            Input::LockHeld(_) => "lock_held",
            Input::LockFailed(_) => "lock_failed",
            Input::Captured(_) => "captured",
            Input::CaptureFailed(_) => "capture_failed",
            Input::Pulled => "pulled",
            Input::PullFailed(_) => "pull_failed",
            Input::Switched { .. } => "switched",
            Input::SwitchFailed { .. } => "switch_failed",
            Input::VerifyStarted { .. } => "verify_started",
            Input::ProbeHealthy { .. } => "probe_healthy",
            Input::ProbeUnhealthy { .. } => "probe_unhealthy",
            Input::ProbeStarting { .. } => "probe_starting",
            Input::ContainerExited(_) => "container_exited",
            Input::DeadlinePassed => "deadline_passed",
            Input::StableReached => "stable_reached",
            Input::Cancelled => "cancelled",
            Input::Revert(_) => "revert",
            Input::Halt => "halt",
            Input::RestoreOk(_) => "restore_ok",
            Input::RestoreFailed(_) => "restore_failed",
        }
    }
}

/// The next state after `input` in `state`.
///
/// Before the first healthy answer, unhealthy and starting answers are
/// retried until [`Input::DeadlinePassed`]; after it, any of them fails the
/// release (health must be continuous for `stable_for`), except inside the
/// start period, where it only restarts the wait for a healthy answer.
pub fn step(state: HostState, input: Input) -> Result<HostState, InvalidTransition> {
    use HostState as S;
    use Input as I;
    let invalid = |state: &HostState, input: &Input| InvalidTransition {
        state: state.name(),
        input: input.name(),
    };
    let failed = |reason: String| S::Failed { reason };
    let next = match (state, input) {
        (S::Planned, I::LockAcquired) => S::Locked,
        (S::Planned, I::LockHeld(lock)) => failed(format!("lock held by {lock}")),
        (S::Planned, I::LockFailed(reason)) => failed(reason),
        (S::Planned | S::Locked, I::Cancelled) => failed("cancelled".into()),

        (S::Locked, I::Captured(previous)) => S::Captured { previous },
        (S::Locked, I::CaptureFailed(reason)) => failed(reason),

        (S::Captured { previous }, I::Pulled) => S::Pulled { previous },
        (S::Captured { .. }, I::PullFailed(reason)) => failed(reason),
        (S::Captured { .. }, I::Cancelled) => failed("cancelled".into()),

        (S::Pulled { previous }, I::Switched { new_container }) => S::Switched {
            new_container,
            retained: previous,
        },
        (
            S::Pulled { previous },
            I::SwitchFailed {
                new_container,
                reason,
            },
        ) => S::RollingBack {
            failed_container: new_container,
            retained: previous,
            reason,
        },
        // The switch has not begun: the old container still runs untouched.
        (S::Pulled { .. }, I::Cancelled) => failed("cancelled".into()),

        (
            S::Switched {
                new_container,
                retained,
            },
            I::VerifyStarted {
                deadline,
                start_period,
            },
        ) => S::Verifying {
            new_container,
            retained,
            attempt: 0,
            consecutive_ok: 0,
            since_first_ok: None,
            deadline,
            start_period,
        },
        (
            S::Switched {
                new_container,
                retained,
            },
            I::ContainerExited(reason) | I::Revert(reason),
        ) => S::RollingBack {
            failed_container: Some(new_container),
            retained,
            reason,
        },
        (
            S::Switched {
                new_container,
                retained,
            },
            I::Cancelled,
        ) => S::RollingBack {
            failed_container: Some(new_container),
            retained,
            reason: "cancelled".into(),
        },

        (
            S::Verifying {
                new_container,
                retained,
                attempt,
                consecutive_ok,
                since_first_ok,
                deadline,
                start_period,
            },
            I::ProbeHealthy { at },
        ) => S::Verifying {
            new_container,
            retained,
            attempt: attempt + 1,
            consecutive_ok: consecutive_ok + 1,
            since_first_ok: since_first_ok.or(Some(at)),
            deadline,
            start_period,
        },
        (
            S::Verifying {
                new_container,
                retained,
                attempt,
                since_first_ok,
                deadline,
                start_period,
                ..
            },
            input @ (I::ProbeUnhealthy { .. } | I::ProbeStarting { .. }),
        ) => {
            let at = match &input {
                I::ProbeUnhealthy { at, .. } | I::ProbeStarting { at } => *at,
                _ => Duration::ZERO,
            };
            if since_first_ok.is_some() && at >= start_period {
                let reason = match input {
                    I::ProbeUnhealthy { reason, .. } => {
                        format!("unhealthy after its first healthy answer: {reason}")
                    }
                    _ => "health went back to starting after its first healthy answer".into(),
                };
                S::RollingBack {
                    failed_container: Some(new_container),
                    retained,
                    reason,
                }
            } else {
                // Before the first healthy answer failures are retried until
                // the deadline; inside the start period a failure after one
                // only restarts the count.
                S::Verifying {
                    new_container,
                    retained,
                    attempt: attempt + 1,
                    consecutive_ok: 0,
                    since_first_ok: None,
                    deadline,
                    start_period,
                }
            }
        }
        (
            S::Verifying {
                new_container,
                retained,
                since_first_ok: Some(_),
                ..
            },
            I::StableReached,
        ) => S::Verified {
            new_container,
            retained,
        },
        (
            S::Verifying {
                new_container,
                retained,
                deadline,
                since_first_ok,
                ..
            },
            I::DeadlinePassed,
        ) => S::RollingBack {
            failed_container: Some(new_container),
            retained,
            reason: match since_first_ok {
                None => format!(
                    "no healthy answer within the deadline of {}",
                    humantime::format_duration(deadline)
                ),
                Some(_) => format!(
                    "not stable before the deadline of {}",
                    humantime::format_duration(deadline)
                ),
            },
        },
        (
            S::Verifying {
                new_container,
                retained,
                ..
            },
            I::ContainerExited(reason) | I::Revert(reason),
        ) => S::RollingBack {
            failed_container: Some(new_container),
            retained,
            reason,
        },
        (
            S::Verifying {
                new_container,
                retained,
                ..
            },
            I::Cancelled,
        ) => S::RollingBack {
            failed_container: Some(new_container),
            retained,
            reason: "cancelled".into(),
        },

        (
            S::Verified {
                new_container,
                retained,
            },
            I::Revert(reason),
        ) => S::RollingBack {
            failed_container: Some(new_container),
            retained,
            reason,
        },
        (
            S::Verified {
                new_container,
                retained,
            },
            I::Cancelled,
        ) => S::RollingBack {
            failed_container: Some(new_container),
            retained,
            reason: "cancelled".into(),
        },

        (S::RollingBack { reason, .. }, I::RestoreOk(restored)) => {
            S::RolledBack { restored, reason }
        }
        (S::RollingBack { reason, .. }, I::RestoreFailed(why)) => S::RollbackFailed {
            reason: format!("{reason}; restoring the previous release failed: {why}"),
        },
        (S::RollingBack { reason, .. }, I::Halt) => S::RollbackFailed {
            reason: format!("halted: {reason}"),
        },

        (state, input) => return Err(invalid(&state, &input)),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DeploymentId;
    use std::time::SystemTime;

    fn c(id: &str) -> ContainerId {
        ContainerId(id.into())
    }

    fn previous() -> Option<CapturedRelease> {
        Some(CapturedRelease {
            container: c("old"),
            release: None,
        })
    }

    fn verifying(first_ok: Option<Duration>) -> HostState {
        verifying_with(first_ok, Duration::ZERO)
    }

    fn verifying_with(first_ok: Option<Duration>, start_period: Duration) -> HostState {
        HostState::Verifying {
            new_container: c("new"),
            retained: previous(),
            attempt: 3,
            consecutive_ok: u32::from(first_ok.is_some()),
            since_first_ok: first_ok,
            deadline: Duration::from_secs(60),
            start_period,
        }
    }

    fn states() -> Vec<(&'static str, HostState)> {
        vec![
            ("planned", HostState::Planned),
            ("locked", HostState::Locked),
            (
                "captured",
                HostState::Captured {
                    previous: previous(),
                },
            ),
            (
                "pulled",
                HostState::Pulled {
                    previous: previous(),
                },
            ),
            (
                "switched",
                HostState::Switched {
                    new_container: c("new"),
                    retained: previous(),
                },
            ),
            ("verifying", verifying(None)),
            ("verifying_ok", verifying(Some(Duration::from_secs(2)))),
            (
                "verifying_ok_in_start_period",
                verifying_with(Some(Duration::from_secs(2)), Duration::from_secs(10)),
            ),
            (
                "verified",
                HostState::Verified {
                    new_container: c("new"),
                    retained: previous(),
                },
            ),
            (
                "rolling_back",
                HostState::RollingBack {
                    failed_container: Some(c("new")),
                    retained: previous(),
                    reason: "boom".into(),
                },
            ),
            (
                "rolled_back",
                HostState::RolledBack {
                    restored: None,
                    reason: "boom".into(),
                },
            ),
            (
                "rollback_failed",
                HostState::RollbackFailed {
                    reason: "boom".into(),
                },
            ),
            (
                "failed",
                HostState::Failed {
                    reason: "boom".into(),
                },
            ),
        ]
    }

    fn inputs() -> Vec<Input> {
        let at = Duration::from_secs(5);
        vec![
            Input::LockAcquired,
            Input::LockHeld(LockInfo {
                app: "app".into(),
                deployment: DeploymentId("d1".into()),
                holder: "someone".into(),
                target: "v1".into(),
                started_at: SystemTime::UNIX_EPOCH,
            }),
            Input::LockFailed("engine down".into()),
            Input::Captured(previous()),
            Input::CaptureFailed("engine down".into()),
            Input::Pulled,
            Input::PullFailed("manifest unknown".into()),
            Input::Switched {
                new_container: c("new"),
            },
            Input::SwitchFailed {
                new_container: None,
                reason: "create failed".into(),
            },
            Input::VerifyStarted {
                deadline: Duration::from_secs(60),
                start_period: Duration::ZERO,
            },
            Input::ProbeHealthy { at },
            Input::ProbeUnhealthy {
                at,
                reason: "503".into(),
            },
            Input::ProbeStarting { at },
            Input::ContainerExited("exited with code 1".into()),
            Input::DeadlinePassed,
            Input::StableReached,
            Input::Cancelled,
            Input::Revert("other host failed".into()),
            Input::Halt,
            Input::RestoreOk(None),
            Input::RestoreFailed("start failed".into()),
        ]
    }

    /// The expected next state name of every valid (state, input) pair;
    /// every pair not listed must be an [`InvalidTransition`].
    const TABLE: &[(&str, &str, &str)] = &[
        ("planned", "lock_acquired", "locked"),
        ("planned", "lock_held", "failed"),
        ("planned", "lock_failed", "failed"),
        ("planned", "cancelled", "failed"),
        ("locked", "captured", "captured"),
        ("locked", "capture_failed", "failed"),
        ("locked", "cancelled", "failed"),
        ("captured", "pulled", "pulled"),
        ("captured", "pull_failed", "failed"),
        ("captured", "cancelled", "failed"),
        ("pulled", "switched", "switched"),
        ("pulled", "switch_failed", "rolling_back"),
        ("pulled", "cancelled", "failed"),
        ("switched", "verify_started", "verifying"),
        ("switched", "container_exited", "rolling_back"),
        ("switched", "revert", "rolling_back"),
        ("switched", "cancelled", "rolling_back"),
        ("verifying", "probe_healthy", "verifying"),
        ("verifying", "probe_unhealthy", "verifying"),
        ("verifying", "probe_starting", "verifying"),
        ("verifying", "container_exited", "rolling_back"),
        ("verifying", "deadline_passed", "rolling_back"),
        ("verifying", "revert", "rolling_back"),
        ("verifying", "cancelled", "rolling_back"),
        ("verifying_ok", "probe_healthy", "verifying"),
        ("verifying_ok", "probe_unhealthy", "rolling_back"),
        ("verifying_ok", "probe_starting", "rolling_back"),
        ("verifying_ok", "container_exited", "rolling_back"),
        ("verifying_ok", "deadline_passed", "rolling_back"),
        ("verifying_ok", "stable_reached", "verified"),
        ("verifying_ok", "revert", "rolling_back"),
        ("verifying_ok", "cancelled", "rolling_back"),
        ("verifying_ok_in_start_period", "probe_healthy", "verifying"),
        (
            "verifying_ok_in_start_period",
            "probe_unhealthy",
            "verifying",
        ),
        (
            "verifying_ok_in_start_period",
            "probe_starting",
            "verifying",
        ),
        (
            "verifying_ok_in_start_period",
            "container_exited",
            "rolling_back",
        ),
        (
            "verifying_ok_in_start_period",
            "deadline_passed",
            "rolling_back",
        ),
        ("verifying_ok_in_start_period", "stable_reached", "verified"),
        ("verifying_ok_in_start_period", "revert", "rolling_back"),
        ("verifying_ok_in_start_period", "cancelled", "rolling_back"),
        ("verified", "revert", "rolling_back"),
        ("verified", "cancelled", "rolling_back"),
        ("rolling_back", "restore_ok", "rolled_back"),
        ("rolling_back", "restore_failed", "rollback_failed"),
        ("rolling_back", "halt", "rollback_failed"),
    ];

    #[test]
    fn every_state_input_pair_follows_the_table() {
        let mut checked = 0;
        for (label, state) in states() {
            for input in inputs() {
                let expected = TABLE
                    .iter()
                    .find(|(s, i, _)| *s == label && *i == input.name())
                    .map(|(_, _, next)| *next);
                let result = step(state.clone(), input.clone());
                match (expected, result) {
                    (Some(next), Ok(got)) => {
                        assert_eq!(got.name(), next, "{label} + {} gave {got:?}", input.name())
                    }
                    (None, Err(err)) => {
                        assert_eq!(err.state, state.name());
                        assert_eq!(err.input, input.name());
                    }
                    (expected, got) => panic!(
                        "{label} + {}: expected {expected:?}, got {got:?}",
                        input.name()
                    ),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, states().len() * inputs().len());
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for (_, state) in states().into_iter().filter(|(_, s)| s.is_terminal()) {
            for input in inputs() {
                assert!(step(state.clone(), input).is_err(), "{state:?}");
            }
        }
    }

    #[test]
    fn failures_before_the_switch_change_nothing_and_after_roll_back() {
        let s = step(
            HostState::Captured {
                previous: previous(),
            },
            Input::PullFailed("x".into()),
        )
        .unwrap();
        assert_eq!(s.phase(), Phase::Failed);
        let s = step(
            HostState::Pulled {
                previous: previous(),
            },
            Input::SwitchFailed {
                new_container: Some(c("new")),
                reason: "start failed".into(),
            },
        )
        .unwrap();
        assert_eq!(
            s,
            HostState::RollingBack {
                failed_container: Some(c("new")),
                retained: previous(),
                reason: "start failed".into(),
            }
        );
    }

    #[test]
    fn verifying_records_the_first_healthy_answer_and_counts() {
        let s = step(
            verifying(None),
            Input::ProbeHealthy {
                at: Duration::from_secs(4),
            },
        )
        .unwrap();
        let s = step(
            s,
            Input::ProbeHealthy {
                at: Duration::from_secs(5),
            },
        )
        .unwrap();
        match &s {
            HostState::Verifying {
                attempt,
                consecutive_ok,
                since_first_ok,
                ..
            } => {
                assert_eq!((*attempt, *consecutive_ok), (5, 2));
                assert_eq!(*since_first_ok, Some(Duration::from_secs(4)));
            }
            other => panic!("{other:?}"),
        }
        // Stable cannot be reached without a healthy answer.
        assert!(step(verifying(None), Input::StableReached).is_err());
        let s = step(
            s,
            Input::ProbeUnhealthy {
                at: Duration::from_secs(6),
                reason: "503".into(),
            },
        )
        .unwrap();
        assert!(
            matches!(&s, HostState::RollingBack { reason, .. } if reason.contains("503")),
            "{s:?}"
        );
        // Inside the start period the same answer only restarts the wait.
        let s = step(
            verifying_with(Some(Duration::from_secs(2)), Duration::from_secs(10)),
            Input::ProbeUnhealthy {
                at: Duration::from_secs(5),
                reason: "503".into(),
            },
        )
        .unwrap();
        assert!(
            matches!(
                s,
                HostState::Verifying {
                    since_first_ok: None,
                    consecutive_ok: 0,
                    ..
                }
            ),
            "{s:?}"
        );
    }

    #[test]
    fn phases_map_one_to_one() {
        let phases: Vec<Phase> = states().iter().map(|(_, s)| s.phase()).collect();
        assert_eq!(phases[0], Phase::Planned);
        assert_eq!(phases[6], Phase::Verifying);
        assert_eq!(phases[12], Phase::Failed);
        for (_, s) in states() {
            assert_eq!(s.phase().as_str(), s.name());
        }
    }
}
