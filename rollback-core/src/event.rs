//! Events: every transition and probe result, numbered, timed, per host.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::traits::ProbeResult;
use crate::types::{HostId, PullProgress};

/// Where a host (or the fleet) stands in a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Nothing done yet.
    Planned,
    /// The host's deploy lock is held.
    Locked,
    /// The running release is pinned by digest; nothing changed yet.
    Captured,
    /// The new image is on the host.
    Pulled,
    /// Start-first: the new release runs beside the old one, which still
    /// takes every request.
    Started,
    /// The new release takes the traffic: stop-first, the old container
    /// is stopped and kept and the new one started; start-first, the proxy
    /// sends the requests to the new release and the old one still runs.
    Switched,
    /// Probing the new release.
    Verifying,
    /// The new release proved healthy.
    Verified,
    /// Registry tags moved (fleet).
    Promoted,
    /// Finished (fleet, or host after cleanup).
    Done,
    /// Putting the previous release back.
    RollingBack,
    /// The previous release runs and is healthy again.
    RolledBack,
    /// The previous release could not be restored: a human must act.
    RollbackFailed,
    /// Failed before anything changed.
    Failed,
}

impl Phase {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Locked => "locked",
            Phase::Captured => "captured",
            Phase::Pulled => "pulled",
            Phase::Started => "started",
            Phase::Switched => "switched",
            Phase::Verifying => "verifying",
            Phase::Verified => "verified",
            Phase::Promoted => "promoted",
            Phase::Done => "done",
            Phase::RollingBack => "rolling_back",
            Phase::RolledBack => "rolled_back",
            Phase::RollbackFailed => "rollback_failed",
            Phase::Failed => "failed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event (or a checkpoint) is about: the whole fleet, or one host.
///
/// Serialized as the host's name, or `null` for the fleet, so a host may
/// have any name, `fleet` included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The deploy as a whole (resolving, promotion, the outcome).
    Fleet,
    /// One host.
    Host(HostId),
}

impl Scope {
    /// The host, or `None` for the fleet.
    pub fn host(&self) -> Option<&HostId> {
        match self {
            Scope::Fleet => None,
            Scope::Host(host) => Some(host),
        }
    }
}

impl From<HostId> for Scope {
    fn from(host: HostId) -> Self {
        Scope::Host(host)
    }
}

impl From<&HostId> for Scope {
    fn from(host: &HostId) -> Self {
        Scope::Host(host.clone())
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.host().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<HostId>::deserialize(d)?.map_or(Scope::Fleet, Scope::Host))
    }
}

/// What an event reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum EventKind {
    /// The host (or the fleet, for [`Scope::Fleet`]) entered `phase`.
    Transition,
    /// One health probe attempt.
    Probe {
        /// 1-based attempt number.
        attempt: u32,
        /// The verdict.
        result: ProbeResult,
    },
    /// Pull progress.
    Pull(PullProgress),
    /// Anything else worth a line (a retry, a skipped step).
    Note,
    /// Something that must not happen did (a bug in rollback); the deploy
    /// stopped safely, and the detail says where.
    Error,
}

/// One numbered event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Strictly increasing within one deploy, from 1.
    pub seq: u64,
    /// When it happened.
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    /// The host, or the fleet; serialized as `host`, the name or `null`.
    #[serde(rename = "host")]
    pub scope: Scope,
    /// The phase the host (or fleet) is in after the event.
    pub phase: Phase,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// A human sentence; never contains a secret.
    pub detail: String,
}

fn serialize_time<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_millis(*time).to_string())
}

/// Receives the events of a deploy.
///
/// The engine hands events over through an unbounded queue drained by its
/// own thread, so a slow observer delays output, never the deploy. Calls come
/// in `seq` order, one at a time.
pub trait Observer: Send + Sync {
    /// One event.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> Observer for F {
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

/// An observer that drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn on_event(&self, _event: &Event) {}
}
