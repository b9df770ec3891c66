//! The per-host deploy state machine, as a pure transition function.
//!
//! [`step`] takes the current [`HostState`] and the result of the effect the
//! driver just performed ([`Input`]) and returns the next state, or
//! [`InvalidTransition`] when that input makes no sense in that state (a bug
//! in the driver). It does no I/O and reads no clock: times arrive inside the
//! inputs, as offsets from the start of a verification, and the policy values
//! a decision needs ([`VerifyLimits`]) arrive as data with the input that
//! begins it. The driver in [`engine`](crate::engine) performs the effects
//! and feeds their results back here; a host's report is a function of its
//! state alone.
//!
//! Rules:
//! - a lock that cannot be taken ends in `Refused` (the lock is not ours);
//! - a failure in `Locked`, `Captured` or `Pulled` (nothing changed yet) ends
//!   in `Failed`;
//! - a failure in `Switched`..`Verified` leads to `RollingBack`; the previous
//!   release is started again and verified (`Restoring`), which ends in
//!   `RolledBack` (it runs and is healthy) or `RollbackFailed`; with
//!   `on_failure = "halt"` the host is left as it is, `Halted`;
//! - a verified host whose previous release is no longer needed is `Done`;
//! - `recover` enters a host it adopts with [`Input::Adopted`]: a running
//!   app container is verified like a fresh switch, any other is rolled back.
//!
//! Each deploy strategy is a path through the table:
//! - stop-first (stop the old container, keep it, start the new one in its
//!   place): `Pulled → Switched → Verifying → Verified`;
//! - start-first behind a proxy: `Pulled → Started` (the new release runs
//!   beside the old one, which takes every request) `→ Warming` (probed
//!   directly) `→ Ready` (its first healthy answer) `→ Serving` (the proxy
//!   sends it the traffic; the old one still runs through `stable_for`)
//!   `→ Verified`. A failure before `Serving` never reached a user; one in
//!   `Serving` or `Verified` switches the traffic back to the old release,
//!   which never stopped.
//!
//! Both share the rows of verification, restore and retirement; see
//! `docs/architecture.md`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, ErrorKind};
use crate::event::Phase;
use crate::policy::HealthPolicy;
use crate::types::{ContainerExit, LockInfo, Release, Workload};

/// The release that ran on a host before the deploy, pinned by its container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapturedRelease {
    /// The container that ran it (and is kept, stopped, during the deploy).
    pub container: Workload,
    /// The release it runs, when its labels or repo digest tell.
    pub release: Option<Release>,
}

/// The policy values a verification decides with, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VerifyLimits {
    /// Verification gives up this long after it began.
    pub deadline: Duration,
    /// Failed answers before this offset are forgiven, even after a healthy one.
    pub start_period: Duration,
    /// How long health must last after a healthy answer.
    pub stable_for: Duration,
}

impl From<&HealthPolicy> for VerifyLimits {
    fn from(policy: &HealthPolicy) -> Self {
        Self {
            deadline: policy.deadline(),
            start_period: policy.start_period(),
            stable_for: policy.stable_for(),
        }
    }
}

/// How far one verification has come; offsets from its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probing {
    /// The limits it decides with.
    pub limits: VerifyLimits,
    /// When the current run of healthy answers began.
    pub healthy_since: Option<Duration>,
    /// Why the container can no longer be watched, when the engine stopped
    /// answering; named in the failure reason.
    pub unreachable: Option<Error>,
}

/// What one answer does to a verification.
enum Verdict {
    Continue(Probing),
    Stable,
    Failed(Error),
}

impl Probing {
    /// A verification that has seen nothing yet.
    pub fn new(limits: VerifyLimits) -> Self {
        Self {
            limits,
            healthy_since: None,
            unreachable: None,
        }
    }

    /// Whether a failed answer at `at` is forgiven: the start period rule.
    pub fn in_start_period(&self, at: Duration) -> bool {
        at < self.limits.start_period
    }

    /// An unhealthy or starting answer after the first healthy one, outside
    /// the start period: the release failed.
    fn answer_after_start(self, input: &Input) -> Verdict {
        let why = match input {
            Input::ProbeUnhealthy { reason, .. } => {
                format!("unhealthy after its first healthy answer: {reason}")
            }
            _ => "health went back to starting after its first healthy answer".into(),
        };
        Verdict::Failed(self.fail(Error::unhealthy(why)))
    }

    fn fail(&self, error: Error) -> Error {
        match &self.unreachable {
            Some(why) => {
                let message = format!(
                    "{} (the engine stopped answering: {})",
                    error.message(),
                    why.report()
                );
                Error::new(error.kind(), message)
            }
            None => error,
        }
    }

    /// An answer while users are served: the start period is over (it
    /// covers only the time before the first healthy answer), so any
    /// unhealthy or starting answer fails the release.
    fn answer_serving(self, input: &Input) -> Verdict {
        match input {
            Input::ProbeUnhealthy { .. } | Input::ProbeStarting { .. }
                if self.healthy_since.is_some() =>
            {
                self.answer_after_start(input)
            }
            _ => self.answer(input),
        }
    }

    /// Before the first healthy answer, unhealthy and starting answers are
    /// retried until the deadline; after it, any of them fails the release
    /// (health must be continuous for `stable_for`), except inside the start
    /// period, where it only restarts the wait for a healthy answer.
    fn answer(mut self, input: &Input) -> Verdict {
        match input {
            Input::ProbeHealthy { at } => {
                let since = *self.healthy_since.get_or_insert(*at);
                if at.saturating_sub(since) >= self.limits.stable_for {
                    Verdict::Stable
                } else {
                    Verdict::Continue(self)
                }
            }
            Input::ProbeUnhealthy { at, .. } | Input::ProbeStarting { at } => {
                if self.healthy_since.is_some() && !self.in_start_period(*at) {
                    self.answer_after_start(input)
                } else {
                    self.healthy_since = None;
                    Verdict::Continue(self)
                }
            }
            Input::ContainerExited(exit) => {
                Verdict::Failed(self.fail(Error::unhealthy(exit.to_string())))
            }
            Input::WatchLost(error) => {
                // Probes still decide; only crash detection is lost.
                if error.kind() == ErrorKind::Unavailable {
                    self.unreachable = Some(error.clone());
                }
                Verdict::Continue(self)
            }
            Input::DeadlinePassed => {
                let deadline = humantime::format_duration(self.limits.deadline);
                let why = match self.healthy_since {
                    None => format!("no healthy answer within the deadline of {deadline}"),
                    Some(_) => format!("not stable before the deadline of {deadline}"),
                };
                Verdict::Failed(self.fail(Error::timeout(why)))
            }
            _ => unreachable!("only probe inputs reach a verification"),
        }
    }
}

/// The restored release's verification inside [`HostState::Restoring`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "check")]
pub enum RestoreCheck {
    /// Still probing.
    Probing(Probing),
    /// Stable for `stable_for`.
    Stable,
    /// Not healthy.
    Failed {
        /// Why.
        reason: Error,
    },
}

/// The tidying beside a restore (the failed container's logs and removal,
/// the previous container's name given back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "tidy")]
pub enum Tidy {
    /// Not finished.
    Pending,
    /// Done.
    Done,
    /// A step failed.
    Failed {
        /// Why.
        reason: Error,
    },
}

/// Where one host stands in a deploy; each variant carries the data of that state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[non_exhaustive]
pub enum HostState {
    /// Nothing done yet; the lock is not ours.
    Planned,
    /// The lock could not be taken: nothing was done and the lock is not ours.
    Refused {
        /// Why.
        reason: Error,
        /// Who holds the lock, when someone does.
        holder: Option<LockInfo>,
    },
    /// The host's deploy lock is ours.
    Locked,
    /// The running release is known; nothing changed yet.
    Captured {
        /// What ran before, `None` on a first deploy.
        previous: Option<CapturedRelease>,
    },
    /// The new image is on the host; nothing changed yet.
    Pulled {
        /// What ran before.
        previous: Option<CapturedRelease>,
    },
    /// The new release runs in place of the old one, which is kept.
    Switched {
        /// The new container.
        new_container: Workload,
        /// The old container, kept stopped under the retained name.
        retained: Option<CapturedRelease>,
        /// Whether a traffic switch sends users' requests to the new
        /// release while the old one still runs (a start-first host that
        /// `recover` adopted serving).
        traffic_moved: bool,
    },
    /// Start-first: the new release runs beside the old one, which still
    /// takes every request; nothing is probed yet.
    Started {
        /// The new container.
        new_container: Workload,
        /// The old container, running.
        retained: Option<CapturedRelease>,
    },
    /// Start-first: probing the new release directly; no request reaches it.
    Warming {
        /// The new container.
        new_container: Workload,
        /// The old container, running and taking every request.
        retained: Option<CapturedRelease>,
        /// How far the verification has come.
        probing: Probing,
    },
    /// Start-first: the new release answered healthy; the proxy is to send
    /// it the traffic next.
    Ready {
        /// The new container.
        new_container: Workload,
        /// The old container, running and taking every request.
        retained: Option<CapturedRelease>,
        /// How far the verification has come.
        probing: Probing,
    },
    /// Start-first: the proxy sends the traffic to the new release, still
    /// probed through the stable window; the old one keeps running.
    Serving {
        /// The new container.
        new_container: Workload,
        /// The old container, running, the proxy's fallback.
        retained: Option<CapturedRelease>,
        /// How far the verification has come.
        probing: Probing,
    },
    /// Probing the new release.
    Verifying {
        /// The new container.
        new_container: Workload,
        /// The old container, kept stopped.
        retained: Option<CapturedRelease>,
        /// How far the verification has come.
        probing: Probing,
        /// Whether a traffic switch sends users' requests to it.
        traffic_moved: bool,
    },
    /// The new release proved healthy; the old container is still kept.
    Verified {
        /// The new container.
        new_container: Workload,
        /// The old container, kept stopped until promotion.
        retained: Option<CapturedRelease>,
        /// Whether a traffic switch sends users' requests to it.
        traffic_moved: bool,
    },
    /// The new release runs and the old container is no longer needed.
    Done {
        /// The new container.
        new_container: Workload,
        /// The release that ran before.
        previous: Option<Release>,
        /// The old container, when removing it failed (the next deploy
        /// removes it).
        leftover: Option<Workload>,
    },
    /// The new release failed: the previous release goes back.
    RollingBack {
        /// The container of the failed release, if one was created.
        failed_container: Option<Workload>,
        /// The release to restore, `None` on a first deploy.
        retained: Option<CapturedRelease>,
        /// Why the new release was abandoned.
        reason: Error,
        /// Whether a traffic switch had sent users' requests to the failed
        /// release while the previous one still ran: sending them back is
        /// one switch, made at once, before the rest of the fleet moves.
        traffic_moved: bool,
    },
    /// The previous release runs again and is being verified, while the
    /// failed container is cleared away.
    Restoring {
        /// The release being restored.
        restored: CapturedRelease,
        /// Why the new release was abandoned.
        reason: Error,
        /// The restored release's verification.
        check: RestoreCheck,
        /// The tidying beside it.
        tidy: Tidy,
    },
    /// The previous release runs and is verified healthy again (or, on a
    /// first deploy, the failed container is gone and nothing runs).
    RolledBack {
        /// The release running now, `None` on a first deploy.
        restored: Option<CapturedRelease>,
        /// Why the new release was abandoned.
        reason: Error,
    },
    /// The previous release could not be restored: a human must act.
    RollbackFailed {
        /// Why the new release was abandoned.
        reason: Error,
        /// Why restoring failed.
        failure: Error,
        /// The release that ran before.
        previous: Option<Release>,
    },
    /// Left as it is after a failure (`on_failure = "halt"`): the failed
    /// release stays, a human decides.
    Halted {
        /// The container of the failed release, left in place.
        failed_container: Option<Workload>,
        /// The previous release's container, kept.
        retained: Option<CapturedRelease>,
        /// Why the new release failed.
        reason: Error,
    },
    /// Failed before anything changed on the host; the lock is ours.
    Failed {
        /// What went wrong.
        reason: Error,
        /// What runs, untouched, when it was read.
        previous: Option<CapturedRelease>,
    },
}

/// How `recover` found a host an interrupted deploy had switched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Adoption {
    /// The app container runs: it is verified like a fresh switch.
    Running {
        /// The app container.
        container: Workload,
        /// Whether a traffic switch sends users' requests to it.
        traffic_moved: bool,
    },
    /// The app container is missing or stopped: the previous release goes back.
    Broken {
        /// The app container, if one exists.
        container: Option<Workload>,
        /// What is wrong with it.
        reason: Error,
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
    LockFailed(Error),
    /// The running release was read.
    Captured(Option<CapturedRelease>),
    /// Reading the running release failed, or the host needs `recover` first.
    CaptureFailed(Error),
    /// The new image is present.
    Pulled,
    /// The pull failed, or the probe refused the image.
    PullFailed(Error),
    /// The old container is stopped and kept, the new one runs.
    Switched {
        /// The new container.
        new_container: Workload,
    },
    /// Start-first: the new release runs beside the old one.
    StartedBeside {
        /// The new container.
        new_container: Workload,
    },
    /// Start-first: the proxy sends the traffic to the new release now.
    TrafficSwitched {
        /// When, from the start of the verification: the stable window
        /// counts from here, the time users have been on the release.
        at: Duration,
    },
    /// Start-first: the proxy did not take the switch to the new release.
    TrafficSwitchFailed(Error),
    /// Start-first: the proxy stopped serving while the new release was verified.
    ProxyLost(Error),
    /// A step of the switch failed.
    SwitchFailed {
        /// The new container, if it was created.
        new_container: Option<Workload>,
        /// What failed.
        reason: Error,
    },
    /// `recover` takes over a host an interrupted deploy switched.
    Adopted {
        /// The app container and its state.
        adoption: Adoption,
        /// The previous release's container, kept by the interrupted deploy.
        retained: Option<CapturedRelease>,
    },
    /// Probing begins, within these limits.
    VerifyStarted(VerifyLimits),
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
    ContainerExited(ContainerExit),
    /// The container can no longer be watched; probes go on.
    WatchLost(Error),
    /// The verification deadline passed before the release was stable.
    DeadlinePassed,
    /// The deploy was cancelled.
    Cancelled,
    /// The fleet asks a switched host to go back (another host failed).
    Revert(Error),
    /// The fleet leaves a failed host as it is (`on_failure = "halt"`).
    Halt,
    /// The previous container runs again; its verification begins within these limits.
    Restarted(VerifyLimits),
    /// There was no previous release, and the failed container is gone.
    Cleared,
    /// The tidying beside a restore is done.
    Tidied,
    /// The tidying beside a restore failed.
    TidyFailed(Error),
    /// Restoring failed (the failed container could not be removed, the
    /// previous one not started).
    RestoreFailed(Error),
    /// The old container is no longer needed and was removed.
    Retired,
    /// The old container is no longer needed, but removing it failed.
    RetireFailed(Error),
}

/// An input that makes no sense in the current state: a bug in the driver.
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
            HostState::Refused { .. } => "refused",
            HostState::Locked => "locked",
            HostState::Captured { .. } => "captured",
            HostState::Pulled { .. } => "pulled",
            HostState::Switched { .. } => "switched",
            HostState::Started { .. } => "started",
            HostState::Warming { .. } => "warming",
            HostState::Ready { .. } => "ready",
            HostState::Serving { .. } => "serving",
            HostState::Verifying { .. } => "verifying",
            HostState::Verified { .. } => "verified",
            HostState::Done { .. } => "done",
            HostState::RollingBack { .. } => "rolling_back",
            HostState::Restoring { .. } => "restoring",
            HostState::RolledBack { .. } => "rolled_back",
            HostState::RollbackFailed { .. } => "rollback_failed",
            HostState::Halted { .. } => "halted",
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
            HostState::Switched { .. } | HostState::Serving { .. } => Phase::Switched,
            HostState::Started { .. } => Phase::Started,
            HostState::Verifying { .. } | HostState::Warming { .. } | HostState::Ready { .. } => {
                Phase::Verifying
            }
            HostState::Verified { .. } => Phase::Verified,
            HostState::Done { .. } => Phase::Done,
            HostState::RollingBack { .. } | HostState::Restoring { .. } => Phase::RollingBack,
            HostState::RolledBack { .. } => Phase::RolledBack,
            HostState::RollbackFailed { .. } | HostState::Halted { .. } => Phase::RollbackFailed,
            HostState::Refused { .. } | HostState::Failed { .. } => Phase::Failed,
        }
    }

    /// Whether no further input is accepted.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            HostState::Refused { .. }
                | HostState::Done { .. }
                | HostState::RolledBack { .. }
                | HostState::RollbackFailed { .. }
                | HostState::Halted { .. }
                | HostState::Failed { .. }
        )
    }

    /// Whether the new release runs in place of (or beside) the old one,
    /// which is kept: the host must be reverted if the fleet fails.
    pub fn is_switched(&self) -> bool {
        matches!(
            self,
            HostState::Switched { .. }
                | HostState::Verifying { .. }
                | HostState::Verified { .. }
                | HostState::Started { .. }
                | HostState::Warming { .. }
                | HostState::Ready { .. }
                | HostState::Serving { .. }
        )
    }

    /// Whether this deploy holds the host's lock (it took it, and it is
    /// released at the end).
    pub fn holds_lock(&self) -> bool {
        !matches!(self, HostState::Planned | HostState::Refused { .. })
    }

    /// Whether a traffic switch sends (or had sent, before the failure)
    /// users' requests to the new release while the previous one still
    /// runs: then going back is one switch, made at once.
    pub fn traffic_moved(&self) -> bool {
        match self {
            HostState::Serving { .. } => true,
            HostState::Switched { traffic_moved, .. }
            | HostState::Verifying { traffic_moved, .. }
            | HostState::Verified { traffic_moved, .. }
            | HostState::RollingBack { traffic_moved, .. } => *traffic_moved,
            _ => false,
        }
    }

    /// The verification under way, if one is.
    pub fn probing(&self) -> Option<&Probing> {
        match self {
            HostState::Verifying { probing, .. }
            | HostState::Warming { probing, .. }
            | HostState::Ready { probing, .. }
            | HostState::Serving { probing, .. }
            | HostState::Restoring {
                check: RestoreCheck::Probing(probing),
                ..
            } => Some(probing),
            _ => None,
        }
    }

    /// Why the host failed, if it did: the reason the new release (or the
    /// lock, or the capture) was given up for.
    pub fn failure(&self) -> Option<&Error> {
        match self {
            HostState::Refused { reason, .. }
            | HostState::RollingBack { reason, .. }
            | HostState::Restoring { reason, .. }
            | HostState::RolledBack { reason, .. }
            | HostState::RollbackFailed { reason, .. }
            | HostState::Halted { reason, .. }
            | HostState::Failed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The release that ran before the deploy, once it was read.
    pub fn previous_release(&self) -> Option<&Release> {
        match self {
            HostState::Captured { previous }
            | HostState::Pulled { previous }
            | HostState::Failed { previous, .. } => previous.as_ref()?.release.as_ref(),
            HostState::Switched { retained, .. }
            | HostState::Started { retained, .. }
            | HostState::Warming { retained, .. }
            | HostState::Ready { retained, .. }
            | HostState::Serving { retained, .. }
            | HostState::Verifying { retained, .. }
            | HostState::Verified { retained, .. }
            | HostState::RollingBack { retained, .. }
            | HostState::Halted { retained, .. } => retained.as_ref()?.release.as_ref(),
            HostState::Restoring { restored, .. } => restored.release.as_ref(),
            HostState::RolledBack { restored, .. } => restored.as_ref()?.release.as_ref(),
            HostState::Done { previous, .. } | HostState::RollbackFailed { previous, .. } => {
                previous.as_ref()
            }
            HostState::Planned | HostState::Refused { .. } | HostState::Locked => None,
        }
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
            Input::StartedBeside { .. } => "started_beside",
            Input::TrafficSwitched { .. } => "traffic_switched",
            Input::TrafficSwitchFailed(_) => "traffic_switch_failed",
            Input::ProxyLost(_) => "proxy_lost",
            Input::Adopted {
                adoption: Adoption::Running { .. },
                ..
            } => "adopted_running",
            Input::Adopted {
                adoption: Adoption::Broken { .. },
                ..
            } => "adopted_broken",
            Input::VerifyStarted(_) => "verify_started",
            Input::ProbeHealthy { .. } => "probe_healthy",
            Input::ProbeUnhealthy { .. } => "probe_unhealthy",
            Input::ProbeStarting { .. } => "probe_starting",
            Input::ContainerExited(_) => "container_exited",
            Input::WatchLost(_) => "watch_lost",
            Input::DeadlinePassed => "deadline_passed",
            Input::Cancelled => "cancelled",
            Input::Revert(_) => "revert",
            Input::Halt => "halt",
            Input::Restarted(_) => "restarted",
            Input::Cleared => "cleared",
            Input::Tidied => "tidied",
            Input::TidyFailed(_) => "tidy_failed",
            Input::RestoreFailed(_) => "restore_failed",
            Input::Retired => "retired",
            Input::RetireFailed(_) => "retire_failed",
        }
    }

    fn is_probe(&self) -> bool {
        matches!(
            self,
            Input::ProbeHealthy { .. }
                | Input::ProbeUnhealthy { .. }
                | Input::ProbeStarting { .. }
                | Input::ContainerExited(_)
                | Input::WatchLost(_)
                | Input::DeadlinePassed
        )
    }
}

/// A restore whose two halves have both settled ends; otherwise it goes on.
fn settle(restored: CapturedRelease, reason: Error, check: RestoreCheck, tidy: Tidy) -> HostState {
    let previous = restored.release.clone();
    match (check, tidy) {
        (RestoreCheck::Stable, Tidy::Done) => HostState::RolledBack {
            restored: Some(restored),
            reason,
        },
        (RestoreCheck::Failed { reason: why }, Tidy::Done | Tidy::Failed { .. }) => {
            HostState::RollbackFailed {
                reason,
                failure: Error::new(
                    why.kind(),
                    format!("the restored release is not healthy: {}", why.message()),
                ),
                previous,
            }
        }
        (RestoreCheck::Stable, Tidy::Failed { reason: why }) => HostState::RollbackFailed {
            reason,
            failure: why,
            previous,
        },
        (check, tidy) => HostState::Restoring {
            restored,
            reason,
            check,
            tidy,
        },
    }
}

/// Where a host goes when the driver fed an input its state does not take
/// (a bug): a safe stop from which the usual rules run, never a silent
/// carry-on.
///
/// Nothing changed yet: `Failed` (or `Refused` before the lock is ours);
/// a new release switched in: `RollingBack`, so the previous release goes
/// back and is verified; a restore under way: `RollbackFailed`, for a human.
/// An end state stays as it is. The reason is of kind
/// [`ErrorKind::Internal`] and names the transition.
pub fn fault(state: HostState, invalid: &InvalidTransition) -> HostState {
    use HostState as S;
    let reason = Error::new(
        ErrorKind::Internal,
        format!("stopped safely after an internal error: {invalid}"),
    )
    .with_source(invalid.clone());
    let moved = state.traffic_moved();
    match state {
        S::Planned => S::Refused {
            reason,
            holder: None,
        },
        S::Locked => S::Failed {
            reason,
            previous: None,
        },
        S::Captured { previous } | S::Pulled { previous } => S::Failed { reason, previous },
        S::Switched {
            new_container,
            retained,
            ..
        }
        | S::Started {
            new_container,
            retained,
        }
        | S::Warming {
            new_container,
            retained,
            ..
        }
        | S::Ready {
            new_container,
            retained,
            ..
        }
        | S::Serving {
            new_container,
            retained,
            ..
        }
        | S::Verifying {
            new_container,
            retained,
            ..
        }
        | S::Verified {
            new_container,
            retained,
            ..
        } => S::RollingBack {
            traffic_moved: moved,
            failed_container: Some(new_container),
            retained,
            reason,
        },
        S::Restoring {
            restored,
            reason: why,
            ..
        } => S::RollbackFailed {
            reason: why,
            failure: reason,
            previous: restored.release,
        },
        end @ (S::Refused { .. }
        | S::Done { .. }
        | S::RollingBack { .. }
        | S::RolledBack { .. }
        | S::RollbackFailed { .. }
        | S::Halted { .. }
        | S::Failed { .. }) => end,
    }
}

/// The next state after `input` in `state`.
pub fn step(state: HostState, input: Input) -> Result<HostState, InvalidTransition> {
    use HostState as S;
    use Input as I;
    let invalid = |state: &HostState, input: &Input| InvalidTransition {
        state: state.name(),
        input: input.name(),
    };
    // Every state that leaves for `RollingBack` or `Verified` keeps what
    // it knew about the traffic.
    let moved = state.traffic_moved();
    let next = match (state, input) {
        (S::Planned, I::LockAcquired) => S::Locked,
        (S::Planned, I::LockHeld(lock)) => S::Refused {
            reason: Error::conflict(format!("lock held by {lock}")),
            holder: Some(lock),
        },
        (S::Planned, I::LockFailed(reason)) => S::Refused {
            reason,
            holder: None,
        },
        (
            S::Planned,
            I::Adopted {
                adoption:
                    Adoption::Running {
                        container,
                        traffic_moved,
                    },
                retained,
            },
        ) => S::Switched {
            traffic_moved,
            new_container: container,
            retained,
        },
        (
            S::Planned,
            I::Adopted {
                adoption: Adoption::Broken { container, reason },
                retained,
            },
        ) => S::RollingBack {
            traffic_moved: false,
            failed_container: container,
            retained,
            reason,
        },

        (S::Locked, I::Captured(previous)) => S::Captured { previous },
        (S::Locked, I::CaptureFailed(reason)) => S::Failed {
            reason,
            previous: None,
        },
        (S::Locked, I::Cancelled) => S::Failed {
            reason: Error::cancelled(),
            previous: None,
        },

        (S::Captured { previous }, I::Pulled) => S::Pulled { previous },
        (S::Captured { previous }, I::PullFailed(reason)) => S::Failed { reason, previous },
        // The switch has not begun: the old container still runs untouched.
        (S::Captured { previous } | S::Pulled { previous }, I::Cancelled) => S::Failed {
            reason: Error::cancelled(),
            previous,
        },

        (S::Pulled { previous }, I::Switched { new_container }) => S::Switched {
            traffic_moved: false,
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
            traffic_moved: false,
            failed_container: new_container,
            retained: previous,
            reason,
        },

        (S::Pulled { previous }, I::StartedBeside { new_container }) => S::Started {
            new_container,
            retained: previous,
        },
        (
            S::Started {
                new_container,
                retained,
            },
            I::VerifyStarted(limits),
        ) => S::Warming {
            new_container,
            retained,
            probing: Probing::new(limits),
        },
        (
            S::Warming {
                new_container,
                retained,
                mut probing,
            },
            I::ProbeHealthy { at },
        ) => {
            // Healthy: the traffic moves next. The stable window counts
            // from the switch, once users are on the release.
            probing.healthy_since.get_or_insert(at);
            S::Ready {
                new_container,
                retained,
                probing,
            }
        }
        (
            S::Warming {
                new_container,
                retained,
                probing,
            },
            input,
        ) if input.is_probe() => match probing.answer(&input) {
            Verdict::Continue(probing) => S::Warming {
                new_container,
                retained,
                probing,
            },
            Verdict::Failed(reason) => S::RollingBack {
                traffic_moved: false,
                failed_container: Some(new_container),
                retained,
                reason,
            },
            Verdict::Stable => unreachable!("only a healthy answer is stable"),
        },
        (
            S::Ready {
                new_container,
                retained,
                mut probing,
            },
            I::TrafficSwitched { at },
        ) => {
            probing.healthy_since = Some(at);
            S::Serving {
                new_container,
                retained,
                probing,
            }
        }
        (
            S::Ready {
                new_container,
                retained,
                ..
            },
            I::TrafficSwitchFailed(reason),
        ) => S::RollingBack {
            traffic_moved: false,
            failed_container: Some(new_container),
            retained,
            reason,
        },
        // Without the proxy the release cannot be verified where users
        // reach it: the old one goes back once the proxy is up again.
        (
            S::Started {
                new_container,
                retained,
            }
            | S::Warming {
                new_container,
                retained,
                ..
            }
            | S::Ready {
                new_container,
                retained,
                ..
            }
            | S::Serving {
                new_container,
                retained,
                ..
            },
            I::ProxyLost(reason),
        ) => S::RollingBack {
            traffic_moved: moved,
            failed_container: Some(new_container),
            retained,
            reason,
        },
        (
            S::Serving {
                new_container,
                retained,
                probing,
            },
            input,
        ) if input.is_probe() => match probing.answer_serving(&input) {
            Verdict::Continue(probing) => S::Serving {
                new_container,
                retained,
                probing,
            },
            Verdict::Stable => S::Verified {
                traffic_moved: true,
                new_container,
                retained,
            },
            Verdict::Failed(reason) => S::RollingBack {
                traffic_moved: true,
                failed_container: Some(new_container),
                retained,
                reason,
            },
        },

        (
            S::Switched {
                new_container,
                retained,
                ..
            },
            I::VerifyStarted(limits),
        ) => S::Verifying {
            traffic_moved: moved,
            new_container,
            retained,
            probing: Probing::new(limits),
        },
        (
            S::Switched {
                new_container,
                retained,
                ..
            }
            | S::Started {
                new_container,
                retained,
            },
            I::ContainerExited(exit),
        ) => S::RollingBack {
            traffic_moved: moved,
            failed_container: Some(new_container),
            retained,
            reason: Error::unhealthy(exit.to_string()),
        },

        (
            S::Verifying {
                new_container,
                retained,
                probing,
                ..
            },
            input,
        ) if input.is_probe() => match probing.answer(&input) {
            Verdict::Continue(probing) => S::Verifying {
                traffic_moved: moved,
                new_container,
                retained,
                probing,
            },
            Verdict::Stable => S::Verified {
                traffic_moved: moved,
                new_container,
                retained,
            },
            Verdict::Failed(reason) => S::RollingBack {
                traffic_moved: moved,
                failed_container: Some(new_container),
                retained,
                reason,
            },
        },

        (
            S::Switched {
                new_container,
                retained,
                ..
            }
            | S::Verifying {
                new_container,
                retained,
                ..
            }
            | S::Verified {
                new_container,
                retained,
                ..
            }
            | S::Started {
                new_container,
                retained,
            }
            | S::Warming {
                new_container,
                retained,
                ..
            }
            | S::Ready {
                new_container,
                retained,
                ..
            }
            | S::Serving {
                new_container,
                retained,
                ..
            },
            input @ (I::Revert(_) | I::Cancelled),
        ) => S::RollingBack {
            traffic_moved: moved,
            failed_container: Some(new_container),
            retained,
            reason: match input {
                I::Revert(reason) => reason,
                _ => Error::cancelled(),
            },
        },

        (
            S::Verified {
                new_container,
                retained,
                ..
            },
            input @ (I::Retired | I::RetireFailed(_)),
        ) => S::Done {
            new_container,
            leftover: match input {
                I::RetireFailed(_) => retained.as_ref().map(|r| r.container.clone()),
                _ => None,
            },
            previous: retained.and_then(|r| r.release),
        },

        (
            S::RollingBack {
                retained: Some(restored),
                reason,
                ..
            },
            I::Restarted(limits),
        ) => S::Restoring {
            restored,
            reason,
            check: RestoreCheck::Probing(Probing::new(limits)),
            tidy: Tidy::Pending,
        },
        (
            S::RollingBack {
                retained: None,
                reason,
                ..
            },
            I::Cleared,
        ) => S::RolledBack {
            restored: None,
            reason,
        },
        (
            S::RollingBack {
                retained, reason, ..
            },
            I::RestoreFailed(failure),
        ) => S::RollbackFailed {
            reason,
            failure,
            previous: retained.and_then(|r| r.release),
        },
        (
            S::RollingBack {
                failed_container,
                retained,
                reason,
                ..
            },
            I::Halt,
        ) => S::Halted {
            failed_container,
            retained,
            reason,
        },

        (
            S::Restoring {
                restored,
                reason,
                check: RestoreCheck::Probing(probing),
                tidy,
            },
            input,
        ) if input.is_probe() => {
            let check = match probing.answer(&input) {
                Verdict::Continue(probing) => RestoreCheck::Probing(probing),
                Verdict::Stable => RestoreCheck::Stable,
                Verdict::Failed(reason) => RestoreCheck::Failed { reason },
            };
            settle(restored, reason, check, tidy)
        }
        // Start-first: the restored release serves through the proxy; a
        // proxy that stops leaves users without it, whatever the probes say.
        (
            S::Restoring {
                restored,
                reason,
                tidy,
                ..
            },
            I::ProxyLost(lost),
        ) => {
            let check = RestoreCheck::Failed {
                reason: Error::new(
                    lost.kind(),
                    format!("the proxy stopped: {}", lost.message()),
                ),
            };
            settle(restored, reason, check, tidy)
        }
        (
            S::Restoring {
                restored,
                reason,
                check,
                tidy: Tidy::Pending,
            },
            input @ (I::Tidied | I::TidyFailed(_)),
        ) => {
            let tidy = match input {
                I::TidyFailed(reason) => Tidy::Failed { reason },
                _ => Tidy::Done,
            };
            settle(restored, reason, check, tidy)
        }

        (state, input) => return Err(invalid(&state, &input)),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DeploymentId;
    use std::time::SystemTime;

    thread_local! {
        /// Whether [`c`] names services (a Swarm host's workloads) instead
        /// of containers: the same rows hold for both.
        static AS_SERVICES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn c(id: &str) -> Workload {
        if AS_SERVICES.get() {
            Workload::service("app", id.len() as u64, format!("r/app:{id}@sha256:{id}"))
        } else {
            Workload::from(id)
        }
    }

    fn previous() -> Option<CapturedRelease> {
        Some(CapturedRelease {
            container: c("old"),
            release: None,
        })
    }

    fn limits(start_period: Duration) -> VerifyLimits {
        VerifyLimits {
            deadline: Duration::from_secs(60),
            start_period,
            stable_for: Duration::from_secs(3),
        }
    }

    fn probing(first_ok: Option<Duration>, start_period: Duration) -> Probing {
        Probing {
            healthy_since: first_ok,
            ..Probing::new(limits(start_period))
        }
    }

    fn verifying(first_ok: Option<Duration>) -> HostState {
        verifying_with(first_ok, Duration::ZERO)
    }

    fn verifying_with(first_ok: Option<Duration>, start_period: Duration) -> HostState {
        HostState::Verifying {
            traffic_moved: false,
            new_container: c("new"),
            retained: previous(),
            probing: probing(first_ok, start_period),
        }
    }

    fn serving(first_ok: Option<Duration>) -> HostState {
        HostState::Serving {
            new_container: c("new"),
            retained: previous(),
            probing: probing(first_ok, Duration::ZERO),
        }
    }

    fn restoring(check: RestoreCheck, tidy: Tidy) -> HostState {
        HostState::Restoring {
            restored: previous().unwrap(),
            reason: Error::unhealthy("boom"),
            check,
            tidy,
        }
    }

    fn boom() -> Error {
        Error::unhealthy("boom")
    }

    fn states() -> Vec<(&'static str, HostState)> {
        let ok_at_2s = Some(Duration::from_secs(2));
        vec![
            ("planned", HostState::Planned),
            (
                "refused",
                HostState::Refused {
                    reason: Error::unavailable("engine down"),
                    holder: None,
                },
            ),
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
                    traffic_moved: false,
                    new_container: c("new"),
                    retained: previous(),
                },
            ),
            // Adopted by `recover` with the traffic on it.
            (
                "switched_moved",
                HostState::Switched {
                    traffic_moved: true,
                    new_container: c("new"),
                    retained: previous(),
                },
            ),
            (
                "verifying_moved",
                HostState::Verifying {
                    traffic_moved: true,
                    new_container: c("new"),
                    retained: previous(),
                    probing: probing(None, Duration::ZERO),
                },
            ),
            (
                "verified_moved",
                HostState::Verified {
                    traffic_moved: true,
                    new_container: c("new"),
                    retained: previous(),
                },
            ),
            (
                "started",
                HostState::Started {
                    new_container: c("new"),
                    retained: previous(),
                },
            ),
            (
                "warming",
                HostState::Warming {
                    new_container: c("new"),
                    retained: previous(),
                    probing: probing(None, Duration::ZERO),
                },
            ),
            (
                "ready",
                HostState::Ready {
                    new_container: c("new"),
                    retained: previous(),
                    probing: probing(ok_at_2s, Duration::ZERO),
                },
            ),
            ("serving", serving(None)),
            ("serving_ok", serving(ok_at_2s)),
            (
                "serving_ok_in_start_period",
                HostState::Serving {
                    new_container: c("new"),
                    retained: previous(),
                    probing: probing(ok_at_2s, Duration::from_secs(10)),
                },
            ),
            ("verifying", verifying(None)),
            // Healthy since 2 s: the answer at 5 s is 3 s of health, stable.
            ("verifying_ok", verifying(ok_at_2s)),
            (
                "verifying_ok_in_start_period",
                verifying_with(ok_at_2s, Duration::from_secs(10)),
            ),
            (
                "verifying_ok_lately",
                verifying(Some(Duration::from_millis(4500))),
            ),
            (
                "verified",
                HostState::Verified {
                    traffic_moved: false,
                    new_container: c("new"),
                    retained: previous(),
                },
            ),
            (
                "done",
                HostState::Done {
                    new_container: c("new"),
                    previous: None,
                    leftover: None,
                },
            ),
            (
                "rolling_back",
                HostState::RollingBack {
                    traffic_moved: false,
                    failed_container: Some(c("new")),
                    retained: previous(),
                    reason: boom(),
                },
            ),
            // Users' requests had been sent to the failed release.
            (
                "rolling_back_moved",
                HostState::RollingBack {
                    traffic_moved: true,
                    failed_container: Some(c("new")),
                    retained: previous(),
                    reason: boom(),
                },
            ),
            (
                "rolling_back_first_deploy",
                HostState::RollingBack {
                    traffic_moved: false,
                    failed_container: Some(c("new")),
                    retained: None,
                    reason: boom(),
                },
            ),
            (
                "restoring",
                restoring(
                    RestoreCheck::Probing(probing(None, Duration::ZERO)),
                    Tidy::Pending,
                ),
            ),
            (
                "restoring_ok",
                restoring(
                    RestoreCheck::Probing(probing(ok_at_2s, Duration::ZERO)),
                    Tidy::Pending,
                ),
            ),
            (
                "restoring_ok_tidied",
                restoring(
                    RestoreCheck::Probing(probing(ok_at_2s, Duration::ZERO)),
                    Tidy::Done,
                ),
            ),
            (
                "restoring_stable",
                restoring(RestoreCheck::Stable, Tidy::Pending),
            ),
            (
                "restoring_unhealthy",
                restoring(RestoreCheck::Failed { reason: boom() }, Tidy::Pending),
            ),
            (
                "restoring_tidy_failed",
                restoring(
                    RestoreCheck::Probing(probing(ok_at_2s, Duration::ZERO)),
                    Tidy::Failed { reason: boom() },
                ),
            ),
            (
                "rolled_back",
                HostState::RolledBack {
                    restored: None,
                    reason: boom(),
                },
            ),
            (
                "rollback_failed",
                HostState::RollbackFailed {
                    reason: boom(),
                    failure: boom(),
                    previous: None,
                },
            ),
            (
                "halted",
                HostState::Halted {
                    failed_container: Some(c("new")),
                    retained: previous(),
                    reason: boom(),
                },
            ),
            (
                "failed",
                HostState::Failed {
                    reason: boom(),
                    previous: None,
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
            Input::LockFailed(Error::unavailable("engine down")),
            Input::Captured(previous()),
            Input::CaptureFailed(Error::unavailable("engine down")),
            Input::Pulled,
            Input::PullFailed(Error::not_found("manifest unknown")),
            Input::Switched {
                new_container: c("new"),
            },
            Input::SwitchFailed {
                new_container: None,
                reason: Error::invalid_input("create failed"),
            },
            Input::StartedBeside {
                new_container: c("new"),
            },
            Input::TrafficSwitched {
                at: Duration::from_secs(2),
            },
            Input::TrafficSwitchFailed(Error::conflict("the proxy refused the config")),
            Input::ProxyLost(Error::unavailable("the proxy container stopped")),
            Input::Adopted {
                adoption: Adoption::Running {
                    traffic_moved: false,
                    container: c("new"),
                },
                retained: previous(),
            },
            Input::Adopted {
                adoption: Adoption::Running {
                    traffic_moved: true,
                    container: c("new"),
                },
                retained: previous(),
            },
            Input::Adopted {
                adoption: Adoption::Broken {
                    container: None,
                    reason: Error::not_found("app does not exist"),
                },
                retained: previous(),
            },
            Input::VerifyStarted(limits(Duration::ZERO)),
            Input::ProbeHealthy { at },
            Input::ProbeUnhealthy {
                at,
                reason: "503".into(),
            },
            Input::ProbeStarting { at },
            Input::ContainerExited(ContainerExit::Exited { code: 1 }),
            Input::WatchLost(Error::unavailable("engine down")),
            Input::DeadlinePassed,
            Input::Cancelled,
            Input::Revert(Error::unhealthy("other host failed")),
            Input::Halt,
            Input::Restarted(limits(Duration::ZERO)),
            Input::Cleared,
            Input::Tidied,
            Input::TidyFailed(Error::conflict("rename failed")),
            Input::RestoreFailed(Error::unavailable("start failed")),
            Input::Retired,
            Input::RetireFailed(Error::unavailable("remove failed")),
        ]
    }

    /// The probe rows of a verification, shared by `Verifying` (the new
    /// release) and `Restoring` (the previous one): `(label suffix, input,
    /// outcome)` where the outcome is "continue", "stable" or "failed".
    const VERIFY: &[(&str, &str, &str)] = &[
        ("", "probe_healthy", "continue"),
        ("", "probe_unhealthy", "continue"),
        ("", "probe_starting", "continue"),
        ("", "container_exited", "failed"),
        ("", "watch_lost", "continue"),
        ("", "deadline_passed", "failed"),
        ("_ok", "probe_healthy", "stable"),
        ("_ok", "probe_unhealthy", "failed"),
        ("_ok", "probe_starting", "failed"),
        ("_ok", "container_exited", "failed"),
        ("_ok", "watch_lost", "continue"),
        ("_ok", "deadline_passed", "failed"),
    ];

    /// The expected next state name of every valid (state, input) pair
    /// beside the [`VERIFY`] rows; every pair not listed must be an
    /// [`InvalidTransition`].
    const TABLE: &[(&str, &str, &str)] = &[
        ("planned", "lock_acquired", "locked"),
        ("planned", "lock_held", "refused"),
        ("planned", "lock_failed", "refused"),
        ("planned", "adopted_running", "switched"),
        ("planned", "adopted_broken", "rolling_back"),
        ("locked", "captured", "captured"),
        ("locked", "capture_failed", "failed"),
        ("locked", "cancelled", "failed"),
        ("captured", "pulled", "pulled"),
        ("captured", "pull_failed", "failed"),
        ("captured", "cancelled", "failed"),
        ("pulled", "switched", "switched"),
        ("pulled", "switch_failed", "rolling_back"),
        ("pulled", "cancelled", "failed"),
        ("pulled", "started_beside", "started"),
        // Start-first: nothing reaches the new release before it is healthy.
        ("started", "verify_started", "warming"),
        ("started", "container_exited", "rolling_back"),
        ("started", "revert", "rolling_back"),
        ("started", "cancelled", "rolling_back"),
        ("warming", "probe_healthy", "ready"),
        ("warming", "probe_unhealthy", "warming"),
        ("warming", "probe_starting", "warming"),
        ("warming", "container_exited", "rolling_back"),
        ("warming", "watch_lost", "warming"),
        ("warming", "deadline_passed", "rolling_back"),
        ("warming", "revert", "rolling_back"),
        ("warming", "cancelled", "rolling_back"),
        ("ready", "traffic_switched", "serving"),
        ("started", "proxy_lost", "rolling_back"),
        ("warming", "proxy_lost", "rolling_back"),
        ("ready", "proxy_lost", "rolling_back"),
        ("serving", "proxy_lost", "rolling_back"),
        ("serving_ok", "proxy_lost", "rolling_back"),
        // Users are on it: the start period no longer forgives.
        ("serving_ok_in_start_period", "probe_healthy", "verified"),
        (
            "serving_ok_in_start_period",
            "probe_unhealthy",
            "rolling_back",
        ),
        (
            "serving_ok_in_start_period",
            "probe_starting",
            "rolling_back",
        ),
        (
            "serving_ok_in_start_period",
            "container_exited",
            "rolling_back",
        ),
        ("serving_ok_in_start_period", "watch_lost", "serving"),
        (
            "serving_ok_in_start_period",
            "deadline_passed",
            "rolling_back",
        ),
        ("serving_ok_in_start_period", "proxy_lost", "rolling_back"),
        ("serving_ok_in_start_period", "revert", "rolling_back"),
        ("serving_ok_in_start_period", "cancelled", "rolling_back"),
        ("ready", "traffic_switch_failed", "rolling_back"),
        ("ready", "revert", "rolling_back"),
        ("ready", "cancelled", "rolling_back"),
        ("serving", "revert", "rolling_back"),
        ("serving", "cancelled", "rolling_back"),
        ("serving_ok", "revert", "rolling_back"),
        ("serving_ok", "cancelled", "rolling_back"),
        ("switched", "verify_started", "verifying"),
        ("switched", "container_exited", "rolling_back"),
        ("switched", "revert", "rolling_back"),
        ("switched", "cancelled", "rolling_back"),
        ("verifying", "revert", "rolling_back"),
        ("verifying", "cancelled", "rolling_back"),
        ("verifying_ok", "revert", "rolling_back"),
        ("verifying_ok", "cancelled", "rolling_back"),
        // Inside the start period failures after a healthy answer are forgiven.
        ("verifying_ok_in_start_period", "probe_healthy", "verified"),
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
        ("verifying_ok_in_start_period", "watch_lost", "verifying"),
        (
            "verifying_ok_in_start_period",
            "deadline_passed",
            "rolling_back",
        ),
        ("verifying_ok_in_start_period", "revert", "rolling_back"),
        ("verifying_ok_in_start_period", "cancelled", "rolling_back"),
        // Healthy for only half a second: not stable yet.
        ("verifying_ok_lately", "probe_healthy", "verifying"),
        ("verifying_ok_lately", "probe_unhealthy", "rolling_back"),
        ("verifying_ok_lately", "probe_starting", "rolling_back"),
        ("verifying_ok_lately", "container_exited", "rolling_back"),
        ("verifying_ok_lately", "watch_lost", "verifying"),
        ("verifying_ok_lately", "deadline_passed", "rolling_back"),
        ("verifying_ok_lately", "revert", "rolling_back"),
        ("verifying_ok_lately", "cancelled", "rolling_back"),
        ("verified", "revert", "rolling_back"),
        ("verified", "cancelled", "rolling_back"),
        ("verified", "retired", "done"),
        ("verified", "retire_failed", "done"),
        ("rolling_back", "restarted", "restoring"),
        ("rolling_back", "restore_failed", "rollback_failed"),
        ("rolling_back", "halt", "halted"),
        ("rolling_back_first_deploy", "cleared", "rolled_back"),
        // Where the traffic had moved the same rows hold; the flag is kept.
        ("switched_moved", "verify_started", "verifying"),
        ("switched_moved", "container_exited", "rolling_back"),
        ("switched_moved", "revert", "rolling_back"),
        ("switched_moved", "cancelled", "rolling_back"),
        ("verifying_moved", "probe_healthy", "verifying"),
        ("verifying_moved", "probe_unhealthy", "verifying"),
        ("verifying_moved", "probe_starting", "verifying"),
        ("verifying_moved", "container_exited", "rolling_back"),
        ("verifying_moved", "watch_lost", "verifying"),
        ("verifying_moved", "deadline_passed", "rolling_back"),
        ("verifying_moved", "revert", "rolling_back"),
        ("verifying_moved", "cancelled", "rolling_back"),
        ("verified_moved", "revert", "rolling_back"),
        ("verified_moved", "cancelled", "rolling_back"),
        ("verified_moved", "retired", "done"),
        ("verified_moved", "retire_failed", "done"),
        ("rolling_back_moved", "restarted", "restoring"),
        ("rolling_back_moved", "restore_failed", "rollback_failed"),
        ("rolling_back_moved", "halt", "halted"),
        (
            "rolling_back_first_deploy",
            "restore_failed",
            "rollback_failed",
        ),
        ("rolling_back_first_deploy", "halt", "halted"),
        // A proxy lost during a start-first restore fails it, once tidied.
        ("restoring", "proxy_lost", "restoring"),
        ("restoring_ok", "proxy_lost", "restoring"),
        ("restoring_ok_tidied", "proxy_lost", "rollback_failed"),
        ("restoring_stable", "proxy_lost", "restoring"),
        ("restoring_unhealthy", "proxy_lost", "restoring"),
        ("restoring_tidy_failed", "proxy_lost", "rollback_failed"),
        ("restoring", "tidied", "restoring"),
        ("restoring", "tidy_failed", "restoring"),
        ("restoring_ok", "tidied", "restoring"),
        ("restoring_ok", "tidy_failed", "restoring"),
        // Stable and tidied: the previous release is back.
        ("restoring_ok_tidied", "probe_healthy", "rolled_back"),
        ("restoring_ok_tidied", "probe_unhealthy", "rollback_failed"),
        ("restoring_ok_tidied", "probe_starting", "rollback_failed"),
        ("restoring_ok_tidied", "container_exited", "rollback_failed"),
        ("restoring_ok_tidied", "watch_lost", "restoring"),
        ("restoring_ok_tidied", "deadline_passed", "rollback_failed"),
        ("restoring_stable", "tidied", "rolled_back"),
        ("restoring_stable", "tidy_failed", "rollback_failed"),
        ("restoring_unhealthy", "tidied", "rollback_failed"),
        ("restoring_unhealthy", "tidy_failed", "rollback_failed"),
        // Healthy but the previous container could not get its name back.
        ("restoring_tidy_failed", "probe_healthy", "rollback_failed"),
        (
            "restoring_tidy_failed",
            "probe_unhealthy",
            "rollback_failed",
        ),
        ("restoring_tidy_failed", "probe_starting", "rollback_failed"),
        (
            "restoring_tidy_failed",
            "container_exited",
            "rollback_failed",
        ),
        ("restoring_tidy_failed", "watch_lost", "restoring"),
        (
            "restoring_tidy_failed",
            "deadline_passed",
            "rollback_failed",
        ),
    ];

    /// The full table: [`TABLE`] plus the [`VERIFY`] rows for the states
    /// that verify and wait for nothing else.
    fn table() -> Vec<(String, &'static str, &'static str)> {
        let mut rows: Vec<(String, &str, &str)> = TABLE
            .iter()
            .map(|(s, i, n)| (s.to_string(), *i, *n))
            .collect();
        for (suffix, input, outcome) in VERIFY {
            let verifying = match *outcome {
                "continue" => "verifying",
                "stable" => "verified",
                _ => "rolling_back",
            };
            rows.push((format!("verifying{suffix}"), input, verifying));
            // The stable window with the traffic on the new release decides alike.
            let serving = match *outcome {
                "continue" => "serving",
                _ => verifying,
            };
            rows.push((format!("serving{suffix}"), input, serving));
            // The restore waits for its tidying too.
            rows.push((format!("restoring{suffix}"), input, "restoring"));
        }
        rows
    }

    #[test]
    fn a_fault_stops_every_state_safely() {
        // State name -> where a fault leaves it.
        let table = [
            ("planned", "refused"),
            ("refused", "refused"),
            ("locked", "failed"),
            ("captured", "failed"),
            ("pulled", "failed"),
            ("switched", "rolling_back"),
            ("started", "rolling_back"),
            ("warming", "rolling_back"),
            ("ready", "rolling_back"),
            ("serving", "rolling_back"),
            ("verifying", "rolling_back"),
            ("verified", "rolling_back"),
            ("done", "done"),
            ("rolling_back", "rolling_back"),
            ("restoring", "rollback_failed"),
            ("rolled_back", "rolled_back"),
            ("rollback_failed", "rollback_failed"),
            ("halted", "halted"),
            ("failed", "failed"),
        ];
        let invalid = InvalidTransition {
            state: "verified",
            input: "lock_acquired",
        };
        for (label, state) in states() {
            let name = state.name();
            let expected = table
                .iter()
                .find(|(s, _)| *s == name)
                .map(|(_, next)| *next)
                .unwrap_or_else(|| panic!("no fault row for {label}"));
            let next = fault(state.clone(), &invalid);
            assert_eq!(next.name(), expected, "{label}");
            // A state the fault moved carries the typed reason; the new
            // container is the one given up, the kept one goes back.
            if next.name() != name {
                let reason = match &next {
                    HostState::Refused { reason, .. }
                    | HostState::Failed { reason, .. }
                    | HostState::RollingBack { reason, .. } => reason,
                    HostState::RollbackFailed { failure, .. } => failure,
                    other => panic!("{label}: unexpected {other:?}"),
                };
                assert_eq!(reason.kind(), ErrorKind::Internal, "{label}");
                assert!(reason.message().contains("lock_acquired"), "{label}");
            }
            if let (
                HostState::Verified {
                    new_container,
                    retained,
                    ..
                },
                HostState::RollingBack {
                    failed_container,
                    retained: kept,
                    ..
                },
            ) = (&state, &next)
            {
                assert_eq!(failed_container.as_ref(), Some(new_container));
                assert_eq!(kept, retained);
            }
        }
    }

    #[test]
    fn every_state_input_pair_follows_the_table() {
        check_every_pair();
    }

    /// The swarm rows: a Swarm host's states hold services at a version,
    /// its failures are a task's (`ContainerExit::Failed`), and every
    /// state and input pair decides as on a container host.
    #[test]
    fn every_state_input_pair_follows_the_table_for_services() {
        AS_SERVICES.set(true);
        check_every_pair();
        let failed = Input::ContainerExited(ContainerExit::Failed {
            reason: "task t1 (slot 1) failed, exit 1".into(),
        });
        for (label, state) in states() {
            let plain = step(
                state.clone(),
                Input::ContainerExited(ContainerExit::Exited { code: 1 }),
            );
            let task = step(state.clone(), failed.clone());
            assert_eq!(
                plain.as_ref().map(HostState::name).ok(),
                task.as_ref().map(HostState::name).ok(),
                "{label}"
            );
            if let (
                HostState::Verifying { new_container, .. },
                Ok(HostState::RollingBack {
                    failed_container,
                    reason,
                    ..
                }),
            ) = (&state, &task)
            {
                assert_eq!(failed_container.as_ref(), Some(new_container), "{label}");
                assert!(matches!(new_container, Workload::Service { .. }));
                assert!(reason.message().contains("exit 1"), "{label}: {reason}");
            }
        }
        AS_SERVICES.set(false);
    }

    fn check_every_pair() {
        let table = table();
        let mut checked = 0;
        for (label, state) in states() {
            for input in inputs() {
                let expected = table
                    .iter()
                    .find(|(s, i, _)| s == label && *i == input.name())
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
        // Every row names a state and an input that exist.
        for (s, i, _) in &table {
            assert!(states().iter().any(|(l, _)| l == s), "{s}");
            assert!(inputs().iter().any(|input| input.name() == *i), "{i}");
        }
    }

    /// Whether the traffic had moved is known from the switch to the
    /// rollback: set by the traffic switch (`Serving`) or by an adoption
    /// that found it moved, kept by every later state that carries it, and
    /// read by the fleet to restore at once.
    #[test]
    fn the_traffic_having_moved_is_carried_to_the_rollback() {
        let moved = [
            "switched_moved",
            "verifying_moved",
            "verified_moved",
            "rolling_back_moved",
            "serving",
            "serving_ok",
            "serving_ok_in_start_period",
        ];
        let mut checked = 0;
        for (label, state) in states() {
            for input in inputs() {
                let Ok(next) = step(state.clone(), input.clone()) else {
                    continue;
                };
                let adopted_moved = matches!(
                    &input,
                    Input::Adopted {
                        adoption: Adoption::Running {
                            traffic_moved: true,
                            ..
                        },
                        ..
                    }
                );
                let carries = matches!(
                    next,
                    HostState::Switched { .. }
                        | HostState::Verifying { .. }
                        | HostState::Verified { .. }
                        | HostState::Serving { .. }
                        | HostState::RollingBack { .. }
                );
                let expected = matches!(next, HostState::Serving { .. })
                    || (carries && (moved.contains(&label) || adopted_moved));
                assert_eq!(
                    next.traffic_moved(),
                    expected,
                    "{label} + {} gave {next:?}",
                    input.name()
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked}");
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
            Input::PullFailed(Error::not_found("x")),
        )
        .unwrap();
        assert_eq!(s.phase(), Phase::Failed);
        assert!(s.holds_lock());
        let s = step(
            HostState::Pulled {
                previous: previous(),
            },
            Input::SwitchFailed {
                new_container: Some(c("new")),
                reason: Error::unavailable("start failed"),
            },
        )
        .unwrap();
        assert_eq!(
            s,
            HostState::RollingBack {
                traffic_moved: false,
                failed_container: Some(c("new")),
                retained: previous(),
                reason: Error::unavailable("start failed"),
            }
        );
        let refused = step(
            HostState::Planned,
            Input::LockFailed(Error::unavailable("x")),
        )
        .unwrap();
        assert!(!refused.holds_lock());
        assert_eq!(refused.phase(), Phase::Failed);
    }

    #[test]
    fn verifying_waits_for_stable_for_after_the_first_healthy_answer() {
        let at = Duration::from_secs;
        let mut s = step(
            HostState::Switched {
                traffic_moved: false,
                new_container: c("new"),
                retained: previous(),
            },
            Input::VerifyStarted(limits(Duration::ZERO)),
        )
        .unwrap();
        for t in [1, 2, 3] {
            s = step(s, Input::ProbeHealthy { at: at(t) }).unwrap();
            assert_eq!(s.name(), "verifying");
        }
        match &s {
            HostState::Verifying { probing, .. } => {
                assert_eq!(probing.healthy_since, Some(at(1)))
            }
            other => panic!("{other:?}"),
        }
        let s = step(s, Input::ProbeHealthy { at: at(4) }).unwrap();
        assert_eq!(s.name(), "verified", "3 s of health after the first at 1 s");

        // With no stable time the first healthy answer is enough.
        let s = step(
            HostState::Switched {
                traffic_moved: false,
                new_container: c("new"),
                retained: None,
            },
            Input::VerifyStarted(VerifyLimits {
                stable_for: Duration::ZERO,
                ..limits(Duration::ZERO)
            }),
        )
        .unwrap();
        assert_eq!(
            step(s, Input::ProbeHealthy { at: at(0) }).unwrap().name(),
            "verified"
        );
    }

    #[test]
    fn start_first_switches_on_the_first_healthy_answer_and_counts_the_window_from_the_switch() {
        let at = Duration::from_secs;
        let s = step(
            HostState::Pulled {
                previous: previous(),
            },
            Input::StartedBeside {
                new_container: c("new"),
            },
        )
        .unwrap();
        assert!(
            s.is_switched(),
            "a host started beside is reverted with the fleet"
        );
        let s = step(s, Input::VerifyStarted(limits(Duration::ZERO))).unwrap();
        let s = step(s, Input::ProbeStarting { at: at(1) }).unwrap();
        assert_eq!(s.name(), "warming");
        let s = step(s, Input::ProbeHealthy { at: at(2) }).unwrap();
        assert_eq!(s.name(), "ready");
        // The switch took a second: the window counts from it, not from
        // the healthy answer before it.
        let s = step(s, Input::TrafficSwitched { at: at(3) }).unwrap();
        assert_eq!(s.phase(), Phase::Switched);
        let s = step(s, Input::ProbeHealthy { at: at(5) }).unwrap();
        assert_eq!(s.name(), "serving", "2 s of the 3 s window");
        let s = step(s, Input::ProbeHealthy { at: at(6) }).unwrap();
        assert_eq!(
            s,
            HostState::Verified {
                traffic_moved: true,
                new_container: c("new"),
                retained: previous(),
            }
        );

        // A failure inside the window keeps the old container to go back to.
        let s = step(
            serving(Some(at(2))),
            Input::ContainerExited(ContainerExit::Exited { code: 2 }),
        )
        .unwrap();
        assert_eq!(
            s,
            HostState::RollingBack {
                traffic_moved: true,
                failed_container: Some(c("new")),
                retained: previous(),
                reason: Error::unhealthy("container exited with code 2"),
            }
        );
        // A proxy that refuses the switch: the traffic never left the old one.
        let ready = HostState::Ready {
            new_container: c("new"),
            retained: previous(),
            probing: probing(Some(at(2)), Duration::ZERO),
        };
        let s = step(
            ready,
            Input::TrafficSwitchFailed(Error::conflict("refused")),
        )
        .unwrap();
        assert_eq!(s.failure(), Some(&Error::conflict("refused")));
    }

    #[test]
    fn a_failure_after_the_first_healthy_answer_says_so() {
        let s = step(
            verifying(Some(Duration::from_secs(4))),
            Input::ProbeUnhealthy {
                at: Duration::from_secs(6),
                reason: "503".into(),
            },
        )
        .unwrap();
        match &s {
            HostState::RollingBack { reason, .. } => {
                assert_eq!(reason.kind(), ErrorKind::Unhealthy);
                assert_eq!(
                    reason.message(),
                    "unhealthy after its first healthy answer: 503"
                );
            }
            other => panic!("{other:?}"),
        }
        // Inside the start period the same answer only restarts the wait.
        let s = step(
            verifying_with(Some(Duration::from_secs(2)), Duration::from_secs(10)),
            Input::ProbeUnhealthy {
                at: Duration::from_secs(5),
                reason: "503".into(),
            },
        )
        .unwrap();
        match &s {
            HostState::Verifying { probing, .. } => {
                assert_eq!(probing.healthy_since, None);
                assert!(probing.in_start_period(Duration::from_secs(5)));
                assert!(!probing.in_start_period(Duration::from_secs(10)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_deadline_is_a_timeout_that_names_a_lost_engine() {
        let s = step(
            verifying(None),
            Input::WatchLost(Error::unavailable("engine down")),
        )
        .unwrap();
        let s = step(s, Input::DeadlinePassed).unwrap();
        match &s {
            HostState::RollingBack { reason, .. } => {
                assert_eq!(reason.kind(), ErrorKind::Timeout);
                assert_eq!(
                    reason.message(),
                    "no healthy answer within the deadline of 1m (the engine stopped answering: engine down)"
                );
            }
            other => panic!("{other:?}"),
        }
        // Another kind of watch failure is not the engine going away.
        let s = step(
            verifying(Some(Duration::from_secs(1))),
            Input::WatchLost(Error::other("bad event")),
        )
        .unwrap();
        let s = step(s, Input::DeadlinePassed).unwrap();
        assert_eq!(
            s.failure().unwrap().message(),
            "not stable before the deadline of 1m"
        );
    }

    #[test]
    fn a_restore_ends_when_both_its_check_and_its_tidying_have() {
        let rolling = HostState::RollingBack {
            traffic_moved: false,
            failed_container: Some(c("new")),
            retained: previous(),
            reason: boom(),
        };
        let s = step(rolling.clone(), Input::Restarted(limits(Duration::ZERO))).unwrap();
        let s = step(s, Input::ProbeHealthy { at: Duration::ZERO }).unwrap();
        let s = step(
            s,
            Input::ProbeHealthy {
                at: Duration::from_secs(3),
            },
        )
        .unwrap();
        assert!(
            matches!(
                &s,
                HostState::Restoring {
                    check: RestoreCheck::Stable,
                    tidy: Tidy::Pending,
                    ..
                }
            ),
            "{s:?}"
        );
        let s = step(s, Input::Tidied).unwrap();
        assert_eq!(
            s,
            HostState::RolledBack {
                restored: previous(),
                reason: boom(),
            }
        );

        let s = step(rolling, Input::Restarted(limits(Duration::ZERO))).unwrap();
        let s = step(s, Input::Tidied).unwrap();
        let s = step(s, Input::ContainerExited(ContainerExit::Exited { code: 2 })).unwrap();
        match s {
            HostState::RollbackFailed {
                reason, failure, ..
            } => {
                assert_eq!(reason, boom());
                assert_eq!(
                    failure.message(),
                    "the restored release is not healthy: container exited with code 2"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recover_adopts_a_switched_host_without_a_lock() {
        let s = step(
            HostState::Planned,
            Input::Adopted {
                adoption: Adoption::Running {
                    traffic_moved: false,
                    container: c("new"),
                },
                retained: previous(),
            },
        )
        .unwrap();
        assert!(s.is_switched());
        assert_eq!(s.phase(), Phase::Switched);
        // The previous release must still be restorable from there.
        let s = step(s, Input::Cancelled).unwrap();
        assert!(matches!(
            s,
            HostState::RollingBack {
                retained: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn phases_follow_the_states() {
        let expected = [
            ("planned", Phase::Planned),
            ("refused", Phase::Failed),
            ("locked", Phase::Locked),
            ("captured", Phase::Captured),
            ("pulled", Phase::Pulled),
            ("switched", Phase::Switched),
            ("started", Phase::Started),
            ("warming", Phase::Verifying),
            ("ready", Phase::Verifying),
            ("serving", Phase::Switched),
            ("verifying", Phase::Verifying),
            ("verified", Phase::Verified),
            ("done", Phase::Done),
            ("rolling_back", Phase::RollingBack),
            ("restoring", Phase::RollingBack),
            ("rolled_back", Phase::RolledBack),
            ("rollback_failed", Phase::RollbackFailed),
            ("halted", Phase::RollbackFailed),
            ("failed", Phase::Failed),
        ];
        for (_, s) in states() {
            let phase = expected
                .iter()
                .find(|(name, _)| *name == s.name())
                .map(|(_, p)| *p);
            assert_eq!(phase, Some(s.phase()), "{s:?}");
        }
    }
}
