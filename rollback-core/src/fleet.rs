//! The fleet policy, as a pure function of the hosts' states.
//!
//! [`next`] looks at every host's [`HostState`], the rollout policy,
//! whether the deploy was cancelled and how promotion went, and returns
//! the fleet's next [`FleetAction`]; the driver performs it, feeds each
//! host's results to [`step`](crate::machine::step) and asks again, until
//! [`FleetAction::Finish`]. `deploy`, `undo` and `recover` all go through
//! it, so the outcome is decided in one place ([`outcome`]).
//!
//! [`IndexedFleet`] asks the same questions of a fleet whose states change
//! a few hosts at a time, without reading every host for each decision.
//!
//! Hosts waiting for their batch are `Locked`; hosts `recover` found
//! nothing to do on are `Planned`, and one the interrupted deploy never
//! reached is named by [`FleetView::behind`].

use std::collections::BTreeSet;

use crate::error::{Error, ErrorKind};
use crate::machine::HostState;
use crate::outcome::Outcome;
use crate::policy::OnFailure;
use crate::types::{Digest, Tag};

/// How the registry promotion went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Promotion {
    /// Not attempted.
    #[default]
    Pending,
    /// The tags moved.
    Done,
    /// Moving the tags failed.
    Failed,
    /// The stable tag was moved by someone else during the deploy: no tag
    /// moved, and the hosts keep the verified release.
    StableMoved,
}

/// What the fleet sees: its hosts' states and a few facts about the deploy.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FleetView<'a> {
    /// Every host, in config order.
    pub hosts: &'a [HostState],
    /// What happens when a host fails.
    pub on_failure: OnFailure,
    /// Hosts deployed at once.
    pub batch: usize,
    /// Whether the deploy was cancelled.
    pub cancelled: bool,
    /// How promotion went.
    pub promotion: Promotion,
    /// Whether verified hosts are promoted (`deploy --no-promote`: they keep
    /// the release and no tag moves).
    pub promote: bool,
    /// A host that does not run the new release and that this run will not
    /// deploy to (`recover`: the interrupted deploy never reached it).
    pub behind: Option<usize>,
}

impl<'a> FleetView<'a> {
    /// A view of `hosts`, not cancelled, nothing promoted, nobody behind.
    pub fn new(hosts: &'a [HostState], on_failure: OnFailure, batch: usize) -> Self {
        Self {
            hosts,
            on_failure,
            batch: batch.max(1),
            cancelled: false,
            promotion: Promotion::Pending,
            promote: true,
            behind: None,
        }
    }

    /// Whether verified hosts are promoted.
    pub fn promote(mut self, promote: bool) -> Self {
        self.promote = promote;
        self
    }

    /// Whether the deploy was cancelled.
    pub fn cancelled(mut self, cancelled: bool) -> Self {
        self.cancelled = cancelled;
        self
    }

    /// How promotion went.
    pub fn promotion(mut self, promotion: Promotion) -> Self {
        self.promotion = promotion;
        self
    }

    /// A host that does not run the new release and will not get it.
    pub fn behind(mut self, host: Option<usize>) -> Self {
        self.behind = host;
        self
    }
}

/// Why the fleet gave up on the new release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// This host failed (the first in config order).
    Host(usize),
    /// This host does not run the new release and will not get it.
    Behind(usize),
    /// The deploy was cancelled before any host failed.
    Cancelled,
}

/// The fleet's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetAction {
    /// Deploy to these hosts at once (the next batch).
    Deploy(Vec<usize>),
    /// Every host runs the new release, verified: move the registry tags.
    Promote,
    /// Send these switched hosts back (`Input::Revert`, or
    /// `Input::Cancelled` after a cancel); their restore follows.
    Revert {
        /// The hosts.
        hosts: Vec<usize>,
        /// Why.
        cause: Cause,
    },
    /// Restore the previous release on these hosts (they are rolling back).
    Restore(Vec<usize>),
    /// Leave these failed hosts as they are (`on_failure = "halt"`).
    Halt(Vec<usize>),
    /// These hosts keep the new release: their previous container goes.
    Retire(Vec<usize>),
    /// Nothing is left to do.
    Finish {
        /// How the deploy ended.
        outcome: Outcome,
        /// Why it did not deploy, when it did not.
        cause: Option<Cause>,
    },
}

fn which(hosts: &[HostState], wanted: impl Fn(&HostState) -> bool) -> Vec<usize> {
    hosts
        .iter()
        .enumerate()
        .filter(|(_, s)| wanted(s))
        .map(|(i, _)| i)
        .collect()
}

fn failed(state: &HostState) -> bool {
    matches!(
        state,
        HostState::Refused { .. }
            | HostState::Failed { .. }
            | HostState::RollingBack { .. }
            | HostState::Restoring { .. }
            | HostState::RolledBack { .. }
            | HostState::RollbackFailed { .. }
            | HostState::Halted { .. }
    )
}

/// Why the fleet gives up on the new release, if it does: the first host
/// in config order that failed by itself, else a host left behind next to
/// one that was changed, else the first host sent back (cancelled, or
/// reverted for another), else the cancel.
pub fn cause(view: &FleetView<'_>) -> Option<Cause> {
    let hosts = view.hosts;
    let sent_back = |s: &HostState| s.failure().map(Error::kind) == Some(ErrorKind::Cancelled);
    if let Some(i) = hosts.iter().position(|s| failed(s) && !sent_back(s)) {
        return Some(Cause::Host(i));
    }
    let changed = hosts.iter().any(|s| s.is_switched() || failed(s));
    match view.behind {
        Some(i) if changed => return Some(Cause::Behind(i)),
        _ => {}
    }
    if let Some(i) = hosts.iter().position(failed) {
        return Some(Cause::Host(i));
    }
    view.cancelled.then_some(Cause::Cancelled)
}

/// How the deploy ends, given where every host ended.
///
/// `Locked` when another deploy holds a lock, `Failed` when a lock could
/// not be taken or nothing changed; after a failure `RollbackFailed` when a
/// host may be without a healthy release, else `RolledBack` when some host
/// was changed; without one `PromotionFailed` or `Deployed`.
pub fn outcome(view: &FleetView<'_>) -> Outcome {
    let hosts = view.hosts;
    let any = |f: fn(&HostState) -> bool| hosts.iter().any(f);
    if any(|s| {
        matches!(
            s,
            HostState::Refused {
                holder: Some(_),
                ..
            }
        )
    }) {
        return Outcome::Locked;
    }
    if any(|s| matches!(s, HostState::Refused { .. })) {
        return Outcome::Failed;
    }
    if any(|s| {
        matches!(
            s,
            HostState::RollbackFailed { .. } | HostState::Halted { .. }
        )
    }) {
        return Outcome::RollbackFailed;
    }
    if cause(view).is_some() {
        return if any(|s| {
            matches!(
                s,
                HostState::RolledBack { .. } | HostState::Verified { .. } | HostState::Done { .. }
            )
        }) {
            Outcome::RolledBack
        } else {
            Outcome::Failed
        };
    }
    match view.promotion {
        Promotion::Failed => Outcome::PromotionFailed,
        Promotion::StableMoved => Outcome::StableMoved,
        _ => Outcome::Deployed,
    }
}

/// The fleet's next step; see the module docs.
pub fn next(view: &FleetView<'_>) -> FleetAction {
    let hosts = view.hosts;
    debug_assert!(
        !hosts.iter().any(|s| matches!(
            s,
            HostState::Captured { .. }
                | HostState::Pulled { .. }
                | HostState::Verifying { .. }
                | HostState::Warming { .. }
                | HostState::Ready { .. }
                | HostState::Serving { .. }
                | HostState::Restoring { .. }
        )),
        "the fleet decides between steps, not while a host is mid-way: {hosts:?}"
    );
    let finish = || FleetAction::Finish {
        outcome: outcome(view),
        cause: cause(view),
    };
    if hosts.iter().any(|s| matches!(s, HostState::Refused { .. })) {
        return finish();
    }
    let rolling_back = which(hosts, |s| matches!(s, HostState::RollingBack { .. }));
    let verified = which(hosts, |s| matches!(s, HostState::Verified { .. }));
    if let Some(cause) = cause(view) {
        // A cancel puts every switched host back, whatever the policy.
        let policy = if view.cancelled {
            OnFailure::RollbackAll
        } else {
            view.on_failure
        };
        return match policy {
            OnFailure::RollbackAll => {
                let switched = which(hosts, HostState::is_switched);
                if !switched.is_empty() {
                    FleetAction::Revert {
                        hosts: switched,
                        cause,
                    }
                } else if !rolling_back.is_empty() {
                    FleetAction::Restore(rolling_back)
                } else {
                    finish()
                }
            }
            OnFailure::RollbackHost if !rolling_back.is_empty() => {
                FleetAction::Restore(rolling_back)
            }
            OnFailure::RollbackHost if !verified.is_empty() => FleetAction::Retire(verified),
            OnFailure::Halt if !rolling_back.is_empty() => FleetAction::Halt(rolling_back),
            _ => finish(),
        };
    }
    // Promotion needs every host verified: one switched but never verified
    // (the driver verifies each before the fleet decides, so only a slip of
    // it leaves one) is sent back, never promoted or reported deployed.
    let unverified = which(hosts, |s| {
        s.is_switched() && !matches!(s, HostState::Verified { .. })
    });
    if let Some(&first) = unverified.first() {
        return FleetAction::Revert {
            hosts: unverified,
            cause: Cause::Host(first),
        };
    }
    let waiting = which(hosts, |s| matches!(s, HostState::Locked));
    if !waiting.is_empty() {
        return FleetAction::Deploy(waiting.into_iter().take(view.batch).collect());
    }
    match view.promotion {
        Promotion::Pending if !verified.is_empty() && view.promote => FleetAction::Promote,
        // Not promoted: the hosts keep the release like a promoted deploy
        // does; the new container's labels name the release it replaced.
        Promotion::Pending if !verified.is_empty() => FleetAction::Retire(verified),
        // Someone else's release is stable now: the hosts keep ours, as a
        // deploy without promotion does.
        Promotion::Done | Promotion::StableMoved if !verified.is_empty() => {
            FleetAction::Retire(verified)
        }
        _ => finish(),
    }
}

/// What [`IndexedFleet`] keeps an ordered set of hosts for: each is a
/// question the fleet policy asks of every host.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Refused,
    /// Refused because another deploy holds the lock.
    Held,
    Failed,
    /// Failed by itself, not sent back for another host or a cancel.
    FailedItself,
    RollingBack,
    Verified,
    Switched,
    /// Switched but not verified.
    Unverified,
    Locked,
    /// Rollback failed, or halted: maybe without a healthy release.
    Broken,
    /// Runs a healthy release after the deploy: rolled back, verified, done.
    Kept,
    /// Mid-step: the fleet never decides while a host is here.
    Midway,
}

const KINDS: [Kind; 12] = [
    Kind::Refused,
    Kind::Held,
    Kind::Failed,
    Kind::FailedItself,
    Kind::RollingBack,
    Kind::Verified,
    Kind::Switched,
    Kind::Unverified,
    Kind::Locked,
    Kind::Broken,
    Kind::Kept,
    Kind::Midway,
];

impl Kind {
    fn holds(self, s: &HostState) -> bool {
        let sent_back = || s.failure().map(Error::kind) == Some(ErrorKind::Cancelled);
        match self {
            Kind::Refused => matches!(s, HostState::Refused { .. }),
            Kind::Held => matches!(
                s,
                HostState::Refused {
                    holder: Some(_),
                    ..
                }
            ),
            Kind::Failed => failed(s),
            Kind::FailedItself => failed(s) && !sent_back(),
            Kind::RollingBack => matches!(s, HostState::RollingBack { .. }),
            Kind::Verified => matches!(s, HostState::Verified { .. }),
            Kind::Switched => s.is_switched(),
            Kind::Unverified => s.is_switched() && !matches!(s, HostState::Verified { .. }),
            Kind::Locked => matches!(s, HostState::Locked),
            Kind::Broken => matches!(
                s,
                HostState::RollbackFailed { .. } | HostState::Halted { .. }
            ),
            Kind::Kept => matches!(
                s,
                HostState::RolledBack { .. } | HostState::Verified { .. } | HostState::Done { .. }
            ),
            Kind::Midway => matches!(
                s,
                HostState::Captured { .. }
                    | HostState::Pulled { .. }
                    | HostState::Verifying { .. }
                    | HostState::Warming { .. }
                    | HostState::Ready { .. }
                    | HostState::Serving { .. }
                    | HostState::Restoring { .. }
            ),
        }
    }
}

/// The hosts' states with, beside them, the hosts of each kind the fleet
/// policy asks about, kept up to date as states change: the driver's way to
/// ask [`next`], [`cause`] and [`outcome`] once per batch without reading
/// every host each time. Changing a host costs O(log hosts), a decision
/// the hosts it names; the decisions are exactly those of the pure
/// functions over the same [`FleetView`] (a property test holds them to it).
#[derive(Debug, Clone)]
pub struct IndexedFleet {
    hosts: Vec<HostState>,
    on_failure: OnFailure,
    batch: usize,
    promote: bool,
    behind: Option<usize>,
    /// The hosts of each kind, by `Kind as usize`, in config order.
    kinds: Vec<BTreeSet<usize>>,
}

impl IndexedFleet {
    /// A fleet of `hosts`, promoted when verified, nobody behind.
    pub fn new(hosts: Vec<HostState>, on_failure: OnFailure, batch: usize) -> Self {
        let mut kinds = vec![BTreeSet::new(); KINDS.len()];
        for (i, state) in hosts.iter().enumerate() {
            for kind in KINDS {
                if kind.holds(state) {
                    kinds[kind as usize].insert(i);
                }
            }
        }
        Self {
            hosts,
            on_failure,
            batch: batch.max(1),
            promote: true,
            behind: None,
            kinds,
        }
    }

    /// Whether verified hosts are promoted.
    pub fn promote(mut self, promote: bool) -> Self {
        self.promote = promote;
        self
    }

    /// A host that does not run the new release and will not get it.
    pub fn behind(mut self, host: Option<usize>) -> Self {
        self.behind = host;
        self
    }

    /// Every host's state, in config order.
    pub fn hosts(&self) -> &[HostState] {
        &self.hosts
    }

    /// Host `i` is in `state` now.
    ///
    /// # Panics
    ///
    /// When there is no host `i`.
    pub fn set(&mut self, i: usize, state: HostState) {
        for kind in KINDS {
            let set = &mut self.kinds[kind as usize];
            match (kind.holds(&self.hosts[i]), kind.holds(&state)) {
                (false, true) => {
                    set.insert(i);
                }
                (true, false) => {
                    set.remove(&i);
                }
                _ => {}
            }
        }
        self.hosts[i] = state;
    }

    /// The same fleet as a [`FleetView`], for the pure functions.
    pub fn view(&self, cancelled: bool, promotion: Promotion) -> FleetView<'_> {
        FleetView::new(&self.hosts, self.on_failure, self.batch)
            .cancelled(cancelled)
            .promotion(promotion)
            .promote(self.promote)
            .behind(self.behind)
    }

    fn of(&self, kind: Kind) -> &BTreeSet<usize> {
        &self.kinds[kind as usize]
    }

    fn list(&self, kind: Kind) -> Vec<usize> {
        self.of(kind).iter().copied().collect()
    }

    /// Whether a host refused the deploy (a lock or an engine).
    pub fn refused(&self) -> bool {
        !self.of(Kind::Refused).is_empty()
    }

    /// As [`cause`] says of [`IndexedFleet::view`].
    pub fn cause(&self, cancelled: bool) -> Option<Cause> {
        if let Some(&i) = self.of(Kind::FailedItself).first() {
            return Some(Cause::Host(i));
        }
        let changed = !self.of(Kind::Switched).is_empty() || !self.of(Kind::Failed).is_empty();
        match self.behind {
            Some(i) if changed => return Some(Cause::Behind(i)),
            _ => {}
        }
        if let Some(&i) = self.of(Kind::Failed).first() {
            return Some(Cause::Host(i));
        }
        cancelled.then_some(Cause::Cancelled)
    }

    /// As [`outcome`] says of [`IndexedFleet::view`].
    pub fn outcome(&self, cancelled: bool, promotion: Promotion) -> Outcome {
        if !self.of(Kind::Held).is_empty() {
            return Outcome::Locked;
        }
        if self.refused() {
            return Outcome::Failed;
        }
        if !self.of(Kind::Broken).is_empty() {
            return Outcome::RollbackFailed;
        }
        if self.cause(cancelled).is_some() {
            return if self.of(Kind::Kept).is_empty() {
                Outcome::Failed
            } else {
                Outcome::RolledBack
            };
        }
        match promotion {
            Promotion::Failed => Outcome::PromotionFailed,
            Promotion::StableMoved => Outcome::StableMoved,
            _ => Outcome::Deployed,
        }
    }

    /// As [`next`] says of [`IndexedFleet::view`], in the same order of
    /// questions.
    pub fn next(&self, cancelled: bool, promotion: Promotion) -> FleetAction {
        debug_assert!(
            self.of(Kind::Midway).is_empty(),
            "the fleet decides between steps, not while a host is mid-way: {:?}",
            self.hosts
        );
        let finish = || FleetAction::Finish {
            outcome: self.outcome(cancelled, promotion),
            cause: self.cause(cancelled),
        };
        if self.refused() {
            return finish();
        }
        let rolling_back = !self.of(Kind::RollingBack).is_empty();
        let verified = !self.of(Kind::Verified).is_empty();
        if let Some(cause) = self.cause(cancelled) {
            let policy = if cancelled {
                OnFailure::RollbackAll
            } else {
                self.on_failure
            };
            return match policy {
                OnFailure::RollbackAll => {
                    if !self.of(Kind::Switched).is_empty() {
                        FleetAction::Revert {
                            hosts: self.list(Kind::Switched),
                            cause,
                        }
                    } else if rolling_back {
                        FleetAction::Restore(self.list(Kind::RollingBack))
                    } else {
                        finish()
                    }
                }
                OnFailure::RollbackHost if rolling_back => {
                    FleetAction::Restore(self.list(Kind::RollingBack))
                }
                OnFailure::RollbackHost if verified => {
                    FleetAction::Retire(self.list(Kind::Verified))
                }
                OnFailure::Halt if rolling_back => FleetAction::Halt(self.list(Kind::RollingBack)),
                _ => finish(),
            };
        }
        if let Some(&first) = self.of(Kind::Unverified).first() {
            return FleetAction::Revert {
                hosts: self.list(Kind::Unverified),
                cause: Cause::Host(first),
            };
        }
        let waiting = self.of(Kind::Locked);
        if !waiting.is_empty() {
            return FleetAction::Deploy(waiting.iter().copied().take(self.batch).collect());
        }
        match promotion {
            Promotion::Pending if verified && self.promote => FleetAction::Promote,
            Promotion::Pending | Promotion::Done | Promotion::StableMoved if verified => {
                FleetAction::Retire(self.list(Kind::Verified))
            }
            _ => finish(),
        }
    }
}

/// Whether a host that failed while its batch still deploys goes back at
/// once, before the batch ends: when a traffic switch had sent the failing
/// release users' requests (`RollingBack { traffic_moved: true }`) and the
/// policy restores failed hosts (not `halt`). Every other failed host waits
/// for the fleet's [`next`] step.
pub fn restore_at_once(on_failure: OnFailure, state: &HostState) -> bool {
    on_failure != OnFailure::Halt
        && matches!(
            state,
            HostState::RollingBack {
                traffic_moved: true,
                ..
            }
        )
}

/// What a host runs, as `undo` reads it from the app container's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The digest it runs.
    pub digest: Digest,
    /// The release the deploy that started it replaced, when known.
    pub replaced: Option<(Digest, Option<Tag>)>,
}

/// What `undo` deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UndoPlan {
    /// The hosts run the stable release: deploy the previous tag's release
    /// and promote it (the tags swap).
    Previous,
    /// The hosts run a release that was never promoted (`deploy
    /// --no-promote`): put back the release it replaced and move no tag.
    Replaced {
        /// The replaced release.
        digest: Digest,
        /// Its tag, when the labels name it.
        tag: Option<Tag>,
    },
    /// Some hosts run the stable release and others an unpromoted one, or
    /// the unpromoted ones replaced different releases: undo them apart.
    Mixed {
        /// The hosts that run an unpromoted release.
        unpromoted: Vec<usize>,
    },
    /// This host runs an unpromoted release whose labels do not say what
    /// it replaced (it was the host's first deploy).
    Unknown(usize),
}

/// What `undo` deploys, from the stable tag's digest and what each
/// contacted host runs (`None`: nothing). A host that runs anything but
/// the stable release got it from a deploy that was not promoted.
pub fn undo_plan(stable: Option<&Digest>, hosts: &[Option<Running>]) -> UndoPlan {
    let unpromoted = which_running(hosts, |r| Some(&r.digest) != stable);
    let promoted = which_running(hosts, |r| Some(&r.digest) == stable);
    let Some(&first) = unpromoted.first() else {
        return UndoPlan::Previous;
    };
    let replaced = |i: usize| hosts[i].as_ref().and_then(|r| r.replaced.clone());
    if !promoted.is_empty() {
        return UndoPlan::Mixed { unpromoted };
    }
    let Some((digest, tag)) = replaced(first) else {
        return UndoPlan::Unknown(first);
    };
    if let Some(&other) = unpromoted
        .iter()
        .find(|&&i| replaced(i).map(|(d, _)| d) != Some(digest.clone()))
    {
        return match replaced(other) {
            None => UndoPlan::Unknown(other),
            Some(_) => UndoPlan::Mixed { unpromoted },
        };
    }
    UndoPlan::Replaced { digest, tag }
}

fn which_running(hosts: &[Option<Running>], wanted: impl Fn(&Running) -> bool) -> Vec<usize> {
    hosts
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_ref().is_some_and(&wanted))
        .map(|(i, _)| i)
        .collect()
}

/// What `promote` moves: `previous` ← what `stable` names, `stable` ← the
/// release; nothing when `stable` already names it, so `previous` never
/// becomes the release itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMoves {
    /// The digest `previous` gets, when it moves.
    pub previous: Option<Digest>,
    /// The digest `stable` gets, when it moves.
    pub stable: Option<Digest>,
}

/// The tag moves that promote `release` when `stable` names `stable_now`.
pub fn tag_moves(release: &Digest, stable_now: Option<&Digest>) -> TagMoves {
    if stable_now == Some(release) {
        return TagMoves {
            previous: None,
            stable: None,
        };
    }
    TagMoves {
        previous: stable_now.cloned(),
        stable: Some(release.clone()),
    }
}

/// Whether the tags may move, decided right before promotion from what the
/// stable tag named when the deploy began and what it names now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PromotionCheck {
    /// Nobody else moved the stable tag: these moves promote the release.
    Move(TagMoves),
    /// Someone else moved the stable tag meanwhile: nothing is overwritten.
    StableMoved {
        /// What it named when the deploy began.
        expected: Option<Digest>,
        /// What it names now.
        found: Option<Digest>,
    },
}

/// The promotion of `release` when the stable tag named `before` at the
/// start of the deploy and names `now` right before promotion.
///
/// A stable tag that already names the release (another actor promoted the
/// same release) moves nothing and is no conflict.
pub fn promotion_check(
    release: &Digest,
    before: Option<&Digest>,
    now: Option<&Digest>,
) -> PromotionCheck {
    if now == before || now == Some(release) {
        return PromotionCheck::Move(tag_moves(release, now));
    }
    PromotionCheck::StableMoved {
        expected: before.cloned(),
        found: now.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DeploymentId, LockInfo, Workload};

    thread_local! {
        /// Whether [`c`] names services (Swarm hosts, each a manager)
        /// instead of containers.
        static AS_SERVICES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn c(id: &str) -> Workload {
        if AS_SERVICES.get() {
            Workload::service("app", 3, format!("r/app:{id}@sha256:{id}"))
        } else {
            Workload::from(id)
        }
    }

    /// A host state by a one-letter code.
    fn host(code: char) -> HostState {
        let reason = Error::unhealthy("boom");
        match code {
            'p' => HostState::Planned,
            'l' => HostState::Locked,
            'v' => HostState::Verified {
                new_container: c("n"),
                retained: None,
                traffic_moved: false,
            },
            // Verified behind a traffic switch that sends it the requests.
            'w' => HostState::Verified {
                new_container: c("n"),
                retained: None,
                traffic_moved: true,
            },
            'd' => HostState::Done {
                new_container: c("n"),
                previous: None,
                leftover: None,
            },
            'r' => HostState::RollingBack {
                failed_container: Some(c("n")),
                retained: None,
                reason,
                traffic_moved: false,
            },
            // Failed after a traffic switch had sent it users' requests.
            'm' => HostState::RollingBack {
                failed_container: Some(c("n")),
                retained: None,
                reason,
                traffic_moved: true,
            },
            'b' => HostState::RolledBack {
                restored: None,
                reason,
            },
            // Sent back: reverted for another host, or cancelled.
            'q' => HostState::RollingBack {
                failed_container: Some(c("n")),
                retained: None,
                reason: Error::new(ErrorKind::Cancelled, "reverted"),
                traffic_moved: false,
            },
            'c' => HostState::RolledBack {
                restored: None,
                reason: Error::cancelled(),
            },
            'x' => HostState::RollbackFailed {
                reason: reason.clone(),
                failure: reason,
                previous: None,
            },
            'h' => HostState::Halted {
                failed_container: Some(c("n")),
                retained: None,
                reason,
            },
            'f' => HostState::Failed {
                reason,
                previous: None,
            },
            'e' => HostState::Refused {
                reason: Error::unavailable("engine down"),
                holder: None,
            },
            'k' => HostState::Refused {
                reason: Error::conflict("held"),
                holder: Some(LockInfo {
                    app: "app".into(),
                    deployment: DeploymentId("d".into()),
                    holder: "someone".into(),
                    target: "v1".into(),
                    started_at: std::time::SystemTime::UNIX_EPOCH,
                }),
            },
            's' => HostState::Switched {
                new_container: c("n"),
                retained: None,
                traffic_moved: false,
            },
            other => panic!("no host code {other}"),
        }
    }

    fn finish(outcome: Outcome, cause: Option<Cause>) -> FleetAction {
        FleetAction::Finish { outcome, cause }
    }

    use FleetAction::{Deploy, Halt, Promote, Restore, Retire, Revert};
    use OnFailure::{Halt as H, RollbackAll as All, RollbackHost as One};
    use Outcome::{Deployed, Failed, Locked, PromotionFailed, RollbackFailed, RolledBack};

    /// `(hosts, on_failure, cancelled, promotion, behind) -> action`, batch 2.
    #[allow(clippy::type_complexity)]
    fn table() -> Vec<(
        &'static str,
        OnFailure,
        bool,
        Promotion,
        Option<usize>,
        FleetAction,
    )> {
        use Promotion::{Done as P, Failed as PF, Pending as N};
        let host = Cause::Host;
        vec![
            // Locks: a refused host ends the deploy before anything changes.
            ("ek", All, false, N, None, finish(Locked, Some(host(0)))),
            ("le", All, false, N, None, finish(Failed, Some(host(1)))),
            // Batches of two, in order.
            ("lll", All, false, N, None, Deploy(vec![0, 1])),
            ("vvl", All, false, N, None, Deploy(vec![2])),
            // Every host verified: promote, then retire, then done.
            ("vvv", All, false, N, None, Promote),
            // A host switched but not verified is never promoted.
            (
                "vs",
                All,
                false,
                N,
                None,
                Revert {
                    hosts: vec![1],
                    cause: Cause::Host(1),
                },
            ),
            ("vvv", All, false, P, None, Retire(vec![0, 1, 2])),
            ("ddd", All, false, P, None, finish(Deployed, None)),
            ("vvv", All, false, PF, None, finish(PromotionFailed, None)),
            // A failure with rollback-all: revert, restore, report.
            (
                "vrl",
                All,
                false,
                N,
                None,
                Revert {
                    hosts: vec![0],
                    cause: host(1),
                },
            ),
            ("qrl", All, false, N, None, Restore(vec![0, 1])),
            // Where the traffic had moved, the fleet decides alike: the
            // host restored at once already left `RollingBack`.
            (
                "wml",
                All,
                false,
                N,
                None,
                Revert {
                    hosts: vec![0],
                    cause: host(1),
                },
            ),
            ("qml", All, false, N, None, Restore(vec![0, 1])),
            ("wml", One, false, N, None, Restore(vec![1])),
            ("wml", H, false, N, None, Halt(vec![1])),
            ("wwv", All, false, N, None, Promote),
            (
                "cbl",
                All,
                false,
                N,
                None,
                finish(RolledBack, Some(host(1))),
            ),
            (
                "bcl",
                All,
                false,
                N,
                None,
                finish(RolledBack, Some(host(0))),
            ),
            (
                "bxl",
                All,
                false,
                N,
                None,
                finish(RollbackFailed, Some(host(0))),
            ),
            (
                "vfl",
                All,
                false,
                N,
                None,
                Revert {
                    hosts: vec![0],
                    cause: host(1),
                },
            ),
            ("fll", All, false, N, None, finish(Failed, Some(host(0)))),
            ("qfl", All, false, N, None, Restore(vec![0])),
            (
                "cfl",
                All,
                false,
                N,
                None,
                finish(RolledBack, Some(host(1))),
            ),
            // Rollback-host: restore the failed, keep the verified, report.
            ("vrl", One, false, N, None, Restore(vec![1])),
            ("vbl", One, false, N, None, Retire(vec![0])),
            (
                "dbl",
                One,
                false,
                N,
                None,
                finish(RolledBack, Some(host(1))),
            ),
            (
                "dfl",
                One,
                false,
                N,
                None,
                finish(RolledBack, Some(host(1))),
            ),
            // Halt: leave the failed host, keep the verified one as it is.
            ("vrl", H, false, N, None, Halt(vec![1])),
            (
                "vhl",
                H,
                false,
                N,
                None,
                finish(RollbackFailed, Some(host(1))),
            ),
            // A cancel reverts every switched host, whatever the policy.
            (
                "vvl",
                H,
                true,
                N,
                None,
                Revert {
                    hosts: vec![0, 1],
                    cause: Cause::Cancelled,
                },
            ),
            (
                "svl",
                One,
                true,
                N,
                None,
                Revert {
                    hosts: vec![0, 1],
                    cause: Cause::Cancelled,
                },
            ),
            (
                "lll",
                All,
                true,
                N,
                None,
                finish(Failed, Some(Cause::Cancelled)),
            ),
            ("qql", All, true, N, None, Restore(vec![0, 1])),
            ("ccl", All, true, N, None, finish(RolledBack, Some(host(0)))),
            (
                "vll",
                All,
                true,
                N,
                None,
                Revert {
                    hosts: vec![0],
                    cause: Cause::Cancelled,
                },
            ),
            ("cll", All, true, N, None, finish(RolledBack, Some(host(0)))),
            (
                "rvl",
                One,
                true,
                N,
                None,
                Revert {
                    hosts: vec![1],
                    cause: host(0),
                },
            ),
            ("bbl", One, true, N, None, finish(RolledBack, Some(host(0)))),
            // Recover: nothing to do, a host left behind, an adopted host.
            ("ppp", All, false, N, None, finish(Deployed, None)),
            (
                "vpp",
                All,
                false,
                N,
                Some(1),
                Revert {
                    hosts: vec![0],
                    cause: Cause::Behind(1),
                },
            ),
            ("qpp", All, false, N, Some(1), Restore(vec![0])),
            (
                "cpp",
                All,
                false,
                N,
                Some(1),
                finish(RolledBack, Some(Cause::Behind(1))),
            ),
            (
                "cpb",
                All,
                false,
                N,
                Some(1),
                finish(RolledBack, Some(host(2))),
            ),
            ("ppp", All, false, N, Some(1), finish(Deployed, None)),
            ("vpv", All, false, N, None, Promote),
            ("dpd", All, false, P, None, finish(Deployed, None)),
        ]
    }

    #[test]
    fn the_fleet_follows_the_table() {
        check_table();
    }

    /// The swarm rows: a fleet of managers, each host's workload a
    /// service, is decided alike (batches count swarms, not tasks).
    #[test]
    fn a_fleet_of_swarms_follows_the_table() {
        AS_SERVICES.set(true);
        assert!(matches!(
            host('v'),
            HostState::Verified {
                new_container: Workload::Service { .. },
                ..
            }
        ));
        check_table();
        AS_SERVICES.set(false);
    }

    fn check_table() {
        for (hosts, on_failure, cancelled, promotion, behind, expected) in table() {
            let states: Vec<HostState> = hosts.chars().map(host).collect();
            let view = FleetView::new(&states, on_failure, 2)
                .cancelled(cancelled)
                .promotion(promotion)
                .behind(behind);
            assert_eq!(
                next(&view),
                expected,
                "{hosts} {on_failure} cancelled={cancelled} {promotion:?} behind={behind:?}"
            );
            let indexed = IndexedFleet::new(states.clone(), on_failure, 2).behind(behind);
            assert_eq!(
                indexed.next(cancelled, promotion),
                expected,
                "indexed: {hosts} {on_failure} cancelled={cancelled} {promotion:?} behind={behind:?}"
            );
        }
    }

    /// Driving the table from a start to its end gives the outcome of a
    /// whole deploy, each step applied as the driver would.
    #[test]
    fn a_rollback_all_run_ends_rolled_back() {
        let mut states: Vec<HostState> = "vrl".chars().map(host).collect();
        let mut steps = Vec::new();
        loop {
            let view = FleetView::new(&states, All, 1);
            let action = next(&view);
            steps.push(action.clone());
            match action {
                Revert { hosts, .. } => {
                    for i in hosts {
                        states[i] = host('q');
                    }
                }
                Restore(hosts) => {
                    for i in hosts {
                        states[i] = match states[i].failure().map(Error::kind) {
                            Some(ErrorKind::Cancelled) => host('c'),
                            _ => host('b'),
                        };
                    }
                }
                FleetAction::Finish { outcome, cause } => {
                    assert_eq!((outcome, cause), (RolledBack, Some(Cause::Host(1))));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(steps.len(), 3, "{steps:?}");
    }

    /// `deploy --no-promote`: `(hosts, promotion) -> action`, rollback-all, batch 2.
    #[test]
    fn an_unpromoted_deploy_keeps_the_release_and_moves_no_tag() {
        use Promotion::Pending as N;
        for (hosts, promotion, expected) in [
            ("lll", N, Deploy(vec![0, 1])),
            ("vvl", N, Deploy(vec![2])),
            // Verified everywhere: the old containers go, no tag moves.
            ("vvv", N, Retire(vec![0, 1, 2])),
            ("ddd", N, finish(Deployed, None)),
            ("vpv", N, Retire(vec![0, 2])),
            // A failure is handled as in a promoted deploy.
            (
                "vrl",
                N,
                Revert {
                    hosts: vec![0],
                    cause: Cause::Host(1),
                },
            ),
            ("bbl", N, finish(RolledBack, Some(Cause::Host(0)))),
            ("ek", N, finish(Locked, Some(Cause::Host(0)))),
        ] {
            let states: Vec<HostState> = hosts.chars().map(host).collect();
            let view = FleetView::new(&states, All, 2)
                .promotion(promotion)
                .promote(false);
            assert_eq!(next(&view), expected, "{hosts} {promotion:?}");
        }
    }

    fn d(n: u8) -> Digest {
        format!(
            "sha256:{}",
            format!("{n:x}")
                .repeat(64)
                .chars()
                .take(64)
                .collect::<String>()
        )
        .parse()
        .unwrap()
    }

    fn runs(digest: u8, replaced: Option<u8>) -> Option<Running> {
        Some(Running {
            digest: d(digest),
            replaced: replaced.map(|r| (d(r), Some(format!("v{r}").parse().unwrap()))),
        })
    }

    /// `(stable, hosts) -> plan`: what undo deploys.
    #[test]
    fn undo_puts_back_what_an_unpromoted_deploy_replaced() {
        let replaced = |n: u8| UndoPlan::Replaced {
            digest: d(n),
            tag: Some(format!("v{n}").parse().unwrap()),
        };
        for (stable, hosts, expected) in [
            // Every host runs the stable release: the previous one comes back.
            (
                Some(1),
                vec![runs(1, Some(0)), runs(1, None)],
                UndoPlan::Previous,
            ),
            (Some(1), vec![None, runs(1, None)], UndoPlan::Previous),
            (None, vec![None], UndoPlan::Previous),
            // v2 deployed unpromoted over v1: v1 comes back.
            (Some(1), vec![runs(2, Some(1))], replaced(1)),
            (
                Some(1),
                vec![runs(2, Some(1)), runs(2, Some(1))],
                replaced(1),
            ),
            (None, vec![runs(2, Some(1)), None], replaced(1)),
            // Part of the fleet promoted, or different releases replaced.
            (
                Some(1),
                vec![runs(2, Some(1)), runs(1, Some(0))],
                UndoPlan::Mixed {
                    unpromoted: vec![0],
                },
            ),
            (
                Some(1),
                vec![runs(2, Some(1)), runs(3, Some(0))],
                UndoPlan::Mixed {
                    unpromoted: vec![0, 1],
                },
            ),
            // A first deploy replaced nothing.
            (Some(1), vec![runs(2, None)], UndoPlan::Unknown(0)),
            (
                Some(1),
                vec![runs(2, Some(1)), runs(2, None)],
                UndoPlan::Unknown(1),
            ),
        ] {
            let stable = stable.map(d);
            assert_eq!(
                undo_plan(stable.as_ref(), &hosts),
                expected,
                "{stable:?} {hosts:?}"
            );
        }
    }

    #[test]
    fn the_tags_move_only_over_the_stable_tag_the_deploy_began_with() {
        let moves = |previous: Option<u8>, stable: Option<u8>| {
            PromotionCheck::Move(TagMoves {
                previous: previous.map(d),
                stable: stable.map(d),
            })
        };
        let moved = |expected: Option<u8>, found: Option<u8>| PromotionCheck::StableMoved {
            expected: expected.map(d),
            found: found.map(d),
        };
        // (before, now) -> decision, for release 2.
        let table = [
            (Some(1), Some(1), moves(Some(1), Some(2))),
            (None, None, moves(None, Some(2))),
            (Some(2), Some(2), moves(None, None)),
            // Someone else promoted this same release: nothing to do.
            (Some(1), Some(2), moves(None, None)),
            (None, Some(2), moves(None, None)),
            // Someone else's release, or a deleted tag: overwrite nothing.
            (Some(1), Some(3), moved(Some(1), Some(3))),
            (None, Some(3), moved(None, Some(3))),
            (Some(1), None, moved(Some(1), None)),
            (Some(2), Some(3), moved(Some(2), Some(3))),
        ];
        for (before, now, expected) in table {
            let got = promotion_check(&d(2), before.map(d).as_ref(), now.map(d).as_ref());
            assert_eq!(got, expected, "before {before:?} now {now:?}");
        }
    }

    #[test]
    fn a_moved_stable_tag_retires_the_hosts_and_ends_so() {
        let hosts = [host('v'), host('v')];
        let view =
            FleetView::new(&hosts, OnFailure::RollbackAll, 1).promotion(Promotion::StableMoved);
        assert_eq!(next(&view), FleetAction::Retire(vec![0, 1]));
        let done = [host('d'), host('d')];
        let view =
            FleetView::new(&done, OnFailure::RollbackAll, 1).promotion(Promotion::StableMoved);
        assert_eq!(
            next(&view),
            FleetAction::Finish {
                outcome: Outcome::StableMoved,
                cause: None
            }
        );
    }

    #[test]
    fn promoting_the_stable_release_again_moves_nothing() {
        let none = TagMoves {
            previous: None,
            stable: None,
        };
        assert_eq!(tag_moves(&d(2), Some(&d(2))), none);
        assert_eq!(
            tag_moves(&d(2), Some(&d(1))),
            TagMoves {
                previous: Some(d(1)),
                stable: Some(d(2)),
            }
        );
        assert_eq!(
            tag_moves(&d(1), None),
            TagMoves {
                previous: None,
                stable: Some(d(1)),
            }
        );
    }

    #[test]
    fn only_a_host_whose_traffic_moved_goes_back_before_its_batch_ends() {
        // `m`: failed after the traffic moved; `r`, `q`: before it, or
        // without a traffic switch; `w`: verified with the traffic on it.
        for (policy, code, at_once) in [
            (OnFailure::RollbackAll, 'm', true),
            (OnFailure::RollbackHost, 'm', true),
            (OnFailure::Halt, 'm', false),
            (OnFailure::RollbackAll, 'r', false),
            (OnFailure::RollbackHost, 'r', false),
            (OnFailure::RollbackAll, 'q', false),
            (OnFailure::RollbackAll, 'w', false),
            (OnFailure::RollbackAll, 'l', false),
        ] {
            assert_eq!(
                restore_at_once(policy, &host(code)),
                at_once,
                "{policy} {code}"
            );
        }
    }
}
