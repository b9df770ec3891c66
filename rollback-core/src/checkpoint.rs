//! Checkpoints: a hook the engine awaits at each stage of a deploy.
//!
//! The engine calls [`Checkpoint::reached`] when a host (or the fleet)
//! gets to a [`Stage`] and waits for it to return. The default does nothing.
//! Tests use a checkpoint to hold a deploy at an exact point (and kill the
//! process there, for crash recovery); an embedder may use one to trace or
//! pace deploys. A checkpoint that waits holds the deploy where it is, locks
//! and stopped containers included: it belongs in tests, not in production.

use std::fmt;

use async_trait::async_trait;

use crate::event::Scope;

/// A point of a deploy where the engine awaits the [`Checkpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// The host's lock was taken.
    Locked,
    /// The host's running release was read.
    Captured,
    /// The new image is on the host.
    Pulled,
    /// Start-first: the new release runs beside the old one, not probed yet.
    Started,
    /// The new release takes the traffic: stop-first, it runs in place of
    /// the old one; start-first, the proxy was just switched to it.
    Switched,
    /// Start-first: the first healthy answer with the traffic on the new
    /// release, inside the stable window.
    StableWindow,
    /// The new release is being verified (before the first probe).
    Verifying,
    /// A failed release is stopped and the previous one about to start again.
    RollingBack,
    /// Every host is verified and the tags are about to move (fleet).
    Promoting,
    /// Start-first: the old release is being drained, before it stops.
    Draining,
}

impl Stage {
    /// The snake_case name (`rolling_back`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Locked => "locked",
            Stage::Captured => "captured",
            Stage::Pulled => "pulled",
            Stage::Started => "started",
            Stage::Switched => "switched",
            Stage::StableWindow => "stable_window",
            Stage::Verifying => "verifying",
            Stage::RollingBack => "rolling_back",
            Stage::Promoting => "promoting",
            Stage::Draining => "draining",
        }
    }

    /// Every stage, in deploy order.
    pub const ALL: [Stage; 10] = [
        Stage::Locked,
        Stage::Captured,
        Stage::Pulled,
        Stage::Started,
        Stage::Switched,
        Stage::Verifying,
        Stage::StableWindow,
        Stage::RollingBack,
        Stage::Promoting,
        Stage::Draining,
    ];
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
                crate::Error::invalid_input(format!(
                    "unknown stage {s:?}: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// Awaited by the engine at each [`Stage`] of a deploy; see the module docs.
#[async_trait]
pub trait Checkpoint: Send + Sync {
    /// `scope` reached `stage`; the deploy goes on when this returns.
    async fn reached(&self, stage: Stage, scope: &Scope);

    /// Whether the driver is to feed host `scope`, at `stage`, an input no
    /// state there takes, as a bug in the driver would: a test's way to see
    /// the safe stop of an internal error. Asked at
    /// [`Stage::Verifying`] only; `false` by default.
    fn fault(&self, _stage: Stage, _scope: &Scope) -> bool {
        false
    }
}

/// The checkpoint of a deploy that nothing holds.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCheckpoint;

#[async_trait]
impl Checkpoint for NoCheckpoint {
    async fn reached(&self, _stage: Stage, _scope: &Scope) {}
}
