//! The fleet rollout: locks, batches, failure policy, promotion, cleanup.

use super::emit::{Emitter, Pump};
use super::host::HostRun;
use super::{join_hosts, timed, CancellationToken, Deployer, Target};
use crate::checkpoint::Stage;
use crate::error::{Error, ErrorKind};
use crate::event::{Phase, Scope};
use crate::fleet::{self, Cause, FleetAction, IndexedFleet, Promotion, TagMoves, UndoPlan};
use crate::machine::{HostState, Input};
use crate::outcome::{DeployReport, HostReport, Outcome};
use crate::policy::OnFailure;
use crate::types::{labels, Digest, Release, Tag};

impl Deployer {
    /// Deploy `target` to every host, verify it, and promote it; on failure
    /// restore the previous release as the rollout policy says.
    ///
    /// Every event has been handed to the observer when this returns.
    ///
    /// # Cancel safety
    ///
    /// Cancelling `cancel` is the way to stop a deploy: hosts not yet
    /// switched are left untouched, switched hosts (verified or not) get
    /// their previous release back and verified (a restore under way is
    /// finished, not cut short), locks are released, and the report says
    /// `rolled_back` (`failed` when no host had been switched). Dropping the
    /// future instead stops at the next await point: a host may be left with
    /// its old container stopped and kept as the retained container and its
    /// lock held; `recover` finishes or reverts such a host.
    pub async fn deploy(&self, target: Target, cancel: CancellationToken) -> DeployReport {
        let pump = Pump::start(self.observer.clone());
        let report = self
            .deploy_with(pump.emitter(), target, None, self.promote, &cancel)
            .await;
        pump.finish().await;
        report
    }

    /// Deploy the release the previous tag points to, with the same checks;
    /// promotion then swaps the stable and previous tags.
    ///
    /// # Cancel safety
    ///
    /// As for [`Deployer::deploy`].
    pub async fn undo(&self, cancel: CancellationToken) -> DeployReport {
        let pump = Pump::start(self.observer.clone());
        let ev = pump.emitter();
        let report = match self.undo_target().await {
            Ok(UndoTarget::Deploy {
                digest,
                tag,
                promote,
            }) => {
                let tag = match tag {
                    Some(tag) => Some(tag),
                    None => self.replaced_tag(&digest).await,
                };
                self.deploy_with(ev, Target::Digest(digest), tag, promote, &cancel)
                    .await
            }
            Ok(UndoTarget::Refused(reason)) => self.failed_before_start(ev, None, reason),
            Err(e) => self.failed_before_start(ev, None, e.report()),
        };
        pump.finish().await;
        report
    }

    /// What `undo` deploys: the previous tag's release, or, when the hosts
    /// run a release that was never promoted, the release it replaced (read
    /// from the app containers' labels), with no tag moved.
    pub async fn undo_target(&self) -> Result<UndoTarget, Error> {
        let stable = self.tag_digest(&self.app.stable_tag).await?;
        let reads = self.hosts.iter().map(|h| {
            timed(
                self.timeouts.engine,
                format!("read the app container on {}", h.id),
                h.runtime.current(&self.app.name),
            )
        });
        let mut running = Vec::new();
        for read in join_hosts(reads).await {
            running.push(read?.and_then(|c| {
                let digest = c.release.as_ref()?.digest.clone();
                let replaced = c
                    .labels
                    .get(labels::REPLACED_DIGEST)
                    .and_then(|d| d.parse::<Digest>().ok())
                    .map(|d| {
                        let tag = c
                            .labels
                            .get(labels::REPLACED_TAG)
                            .and_then(|t| t.parse::<Tag>().ok());
                        (d, tag)
                    });
                Some(fleet::Running { digest, replaced })
            }));
        }
        let names = |which: &[usize]| {
            which
                .iter()
                .map(|&i| self.hosts[i].id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(match fleet::undo_plan(stable.as_ref(), &running) {
            UndoPlan::Replaced { digest, tag } => UndoTarget::Deploy {
                digest,
                tag,
                promote: false,
            },
            UndoPlan::Mixed { unpromoted } => UndoTarget::Refused(format!(
                "{} run a release that {} does not name and that the other hosts do not share; undo them apart with --host",
                names(&unpromoted),
                self.app.stable_tag
            )),
            UndoPlan::Unknown(i) => UndoTarget::Refused(format!(
                "host {} runs a release that {} does not name, and its labels do not say which release it replaced",
                self.hosts[i].id, self.app.stable_tag
            )),
            _ => match self.tag_digest(&self.app.previous_tag).await? {
                Some(digest) => UndoTarget::Deploy {
                    digest,
                    tag: None,
                    promote: self.promote,
                },
                None => UndoTarget::Refused(format!(
                    "no previous release: tag {} not found in {}",
                    self.app.previous_tag, self.app.repository
                )),
            },
        })
    }

    /// What `promote` would move: `previous` ← what the stable tag names,
    /// the stable tag ← `target`; nothing when it already names it.
    pub async fn promote_plan(&self, target: &Target) -> Result<(Release, TagMoves), Error> {
        let release = self.resolve_target(target).await?;
        let stable = self.tag_digest(&self.app.stable_tag).await?;
        let moves = fleet::tag_moves(&release.digest, stable.as_ref());
        Ok((release, moves))
    }

    /// Move the registry tags to `target` without touching any host (the
    /// hosts were deployed with [`Deployer::with_promote`] `false`).
    pub async fn promote(&self, target: &Target) -> Result<(Release, TagMoves), Error> {
        let (release, moves) = self.promote_plan(target).await?;
        if moves.stable.is_some() {
            let pump = Pump::start(self.observer.clone());
            let moved = self
                .move_tags(pump.emitter(), &release.digest, moves.previous.as_ref())
                .await;
            pump.finish().await;
            moved?;
        }
        Ok((release, moves))
    }

    pub(crate) fn failed_before_start(
        &self,
        ev: &Emitter,
        target: Option<Release>,
        reason: String,
    ) -> DeployReport {
        ev.transition(&Scope::Fleet, Phase::Failed, reason.clone());
        DeployReport::new(Outcome::Failed)
            .with_target(target)
            .with_hosts(
                self.hosts
                    .iter()
                    .map(|h| HostReport::untouched(h.id.clone()))
                    .collect(),
            )
            .with_reason(Some(reason))
    }

    /// The tag `digest` was deployed as before a later release replaced it,
    /// read from the labels of the app containers; `None` when no host
    /// knows it (the name is for output only, so engine errors are passed
    /// over here and met again by the deploy).
    async fn replaced_tag(&self, digest: &Digest) -> Option<Tag> {
        let reads = self.hosts.iter().map(|h| {
            timed(
                self.timeouts.engine,
                "read the app container",
                h.runtime.current(&self.app.name),
            )
        });
        let wanted = digest.to_string();
        join_hosts(reads)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|c| {
                (c.labels.get(labels::REPLACED_DIGEST) == Some(&wanted))
                    .then(|| c.labels.get(labels::REPLACED_TAG)?.parse().ok())
                    .flatten()
            })
    }

    /// Deploy `target`; `tag` names a target given by digest in output and
    /// labels.
    async fn deploy_with(
        &self,
        ev: &Emitter,
        target: Target,
        tag: Option<Tag>,
        promote: bool,
        cancel: &CancellationToken,
    ) -> DeployReport {
        if self.hosts.is_empty() {
            return self.failed_before_start(ev, None, "no hosts to deploy to".into());
        }
        let release = match self.resolve_target(&target).await {
            Ok(release) => Release {
                tag: release.tag.or(tag),
                ..release
            },
            Err(e) => return self.failed_before_start(ev, None, e.report()),
        };
        let stable_before = match self.tag_digest(&self.app.stable_tag).await {
            Ok(digest) => digest,
            Err(e) => {
                return self.failed_before_start(
                    ev,
                    Some(release),
                    format!("cannot read tag {}: {}", self.app.stable_tag, e.report()),
                )
            }
        };
        ev.transition(
            &Scope::Fleet,
            Phase::Planned,
            format!(
                "deploying {} ({}) to {} host(s)",
                release.display_name(),
                release.image(),
                self.hosts.len()
            ),
        );
        let mut runs: Vec<HostRun> = (0..self.hosts.len()).map(HostRun::new).collect();
        // Every lock first, so a busy fleet is refused before anything
        // changes; one at a time in config order, so of two deploys started
        // at once the one that gets the first host gets them all and the
        // other stops there, instead of each holding a part and both giving up.
        let target_text = target.to_string();
        for run in runs.iter_mut() {
            self.lock_host(ev, &self.hosts[run.index], run, &target_text)
                .await;
            if !run.state.holds_lock() {
                break;
            }
        }
        let ending = self
            .rollout(
                ev,
                &mut runs,
                &release,
                stable_before.as_ref(),
                promote,
                cancel,
            )
            .await;
        if !promote && ending.outcome == Outcome::Deployed {
            ev.note(
                &Scope::Fleet,
                Phase::Done,
                format!(
                    "not promoted: {} still points at {}",
                    self.app.stable_tag,
                    stable_before
                        .as_ref()
                        .map_or_else(|| "nothing".to_owned(), |d| d.short().to_string())
                ),
            );
        }
        // Locks are always released, whatever happened.
        let unlocks = runs
            .iter()
            .map(|run| self.unlock_host(ev, &self.hosts[run.index], run));
        join_hosts(unlocks).await;
        let reason = self.deploy_reason(&runs, &ending, cancel.is_cancelled());
        announce_outcome(ev, ending.outcome, reason.as_deref());
        let lock_holder = runs.iter().find_map(|r| match &r.state {
            HostState::Refused { holder, .. } => holder.clone(),
            _ => None,
        });
        DeployReport::new(ending.outcome)
            .with_hosts(
                runs.iter()
                    .map(|run| run.report(&self.hosts[run.index], Some(&release)))
                    .collect(),
            )
            .with_target(Some(release))
            .with_reason(reason)
            .with_lock_holder(lock_holder)
            .with_promoted(ending.promotion == Promotion::Done)
    }

    /// Batches, failure handling, promotion and clean-up, as the fleet
    /// policy says, until it says finish.
    async fn rollout(
        &self,
        ev: &Emitter,
        runs: &mut [HostRun],
        release: &Release,
        stable_before: Option<&Digest>,
        promote: bool,
        cancel: &CancellationToken,
    ) -> Ending {
        let mut promotion = Promotion::Pending;
        let mut promotion_failure = None;
        let mut noted = false;
        let on_failure = self.rollout.on_failure();
        // The hosts' states as the fleet policy reads them, indexed by what
        // it asks, and updated only for the hosts the last action touched:
        // reading every host at each batch made a fleet quadratic in hosts.
        let mut fleet = IndexedFleet::new(
            runs.iter().map(|r| r.state.clone()).collect(),
            on_failure,
            self.rollout.batch(),
        )
        .promote(promote);
        let mut touched: Vec<usize> = Vec::new();
        loop {
            for &i in &touched {
                if let Some(run) = runs.get(i) {
                    fleet.set(i, run.state.clone());
                }
            }
            let cancelled = cancel.is_cancelled();
            let cause = fleet.cause(cancelled);
            if let (Some(cause), false, false) = (cause, fleet.refused(), noted) {
                noted = true;
                let policy = if cancelled {
                    OnFailure::RollbackAll
                } else {
                    on_failure
                };
                ev.note(
                    &Scope::Fleet,
                    Phase::RollingBack,
                    format!("{}; on failure: {policy}", self.cause_text(runs, cause)),
                );
            }
            let action = fleet.next(cancelled, promotion);
            touched = match &action {
                FleetAction::Deploy(hosts)
                | FleetAction::Revert { hosts, .. }
                | FleetAction::Restore(hosts)
                | FleetAction::Halt(hosts)
                | FleetAction::Retire(hosts) => hosts.clone(),
                FleetAction::Promote | FleetAction::Finish { .. } => Vec::new(),
            };
            match action {
                FleetAction::Deploy(batch) => {
                    let work = runs_of(runs, &batch).into_iter().map(|run| async move {
                        let host = &self.hosts[run.index];
                        self.deploy_host(ev, host, run, release, stable_before, cancel)
                            .await;
                        if fleet::restore_at_once(on_failure, &run.state) {
                            self.restore_host(ev, host, run).await;
                        }
                    });
                    join_hosts(work).await;
                }
                FleetAction::Promote => {
                    self.checkpoint
                        .reached(Stage::Promoting, &Scope::Fleet)
                        .await;
                    let (result, why) = self
                        .promote_checked(
                            ev,
                            &release.digest,
                            &release.display_name(),
                            stable_before,
                        )
                        .await;
                    promotion = result;
                    promotion_failure = why;
                }
                FleetAction::Revert { hosts, cause } => {
                    let why = Error::new(
                        ErrorKind::Cancelled,
                        format!("reverted because {}", self.cause_text(runs, cause)),
                    );
                    for run in runs_of(runs, &hosts) {
                        let input = if cancel.is_cancelled() {
                            Input::Cancelled
                        } else {
                            Input::Revert(why.clone())
                        };
                        self.advance(ev, &self.hosts[run.index], run, input);
                    }
                }
                FleetAction::Restore(hosts) => self.restore_all(ev, runs, &hosts).await,
                FleetAction::Halt(hosts) => {
                    for run in runs_of(runs, &hosts) {
                        self.advance(ev, &self.hosts[run.index], run, Input::Halt);
                    }
                }
                FleetAction::Retire(hosts) => {
                    for run in runs_of(runs, &hosts) {
                        self.retire_host(ev, &self.hosts[run.index], run).await;
                    }
                }
                FleetAction::Finish { outcome, cause } => {
                    return Ending {
                        outcome,
                        cause,
                        promotion,
                        promotion_failure,
                    }
                }
            }
        }
    }

    /// `host NAME: why` of the host that caused a failure, or `cancelled`.
    fn cause_text(&self, runs: &[HostRun], cause: Cause) -> String {
        match cause {
            Cause::Host(i) | Cause::Behind(i) => format!(
                "host {}: {}",
                self.hosts[i].id,
                runs[i]
                    .state
                    .failure()
                    .map_or_else(|| runs[i].state.to_string(), Error::report)
            ),
            _ => "cancelled".into(),
        }
    }

    /// The deploy's reason: what failed, and what that left.
    fn deploy_reason(&self, runs: &[HostRun], ending: &Ending, cancelled: bool) -> Option<String> {
        if matches!(
            ending.outcome,
            Outcome::PromotionFailed | Outcome::StableMoved
        ) {
            return ending.promotion_failure.clone();
        }
        let mut reason = self.cause_text(runs, ending.cause?);
        let refused = runs
            .iter()
            .any(|r| matches!(r.state, HostState::Refused { .. }));
        if refused {
            return Some(reason);
        }
        if self.rollout.on_failure() == OnFailure::Halt && !cancelled {
            reason = format!("halted: {reason}");
        }
        // A first deploy has nothing to restore: say so where users look first.
        let bare: Vec<String> = runs
            .iter()
            .filter(|r| matches!(r.state, HostState::RolledBack { restored: None, .. }))
            .map(|r| self.hosts[r.index].id.to_string())
            .collect();
        if !bare.is_empty() {
            reason = format!(
                "{reason}; there was no previous release to restore on {}, nothing runs there",
                bare.join(", ")
            );
        }
        Some(reason)
    }

    /// Restore the hosts `which`, at once.
    pub(crate) async fn restore_all(&self, ev: &Emitter, runs: &mut [HostRun], which: &[usize]) {
        let work = runs_of(runs, which)
            .into_iter()
            .map(|run| self.restore_host(ev, &self.hosts[run.index], run));
        join_hosts(work).await;
    }

    /// Promote `release` after reading the stable tag again: the tags move
    /// only when nobody else moved it since the deploy began
    /// ([`fleet::promotion_check`]). Returns how promotion went and, when
    /// it did not, why.
    pub(crate) async fn promote_checked(
        &self,
        ev: &Emitter,
        new: &Digest,
        name: &str,
        stable_before: Option<&Digest>,
    ) -> (Promotion, Option<String>) {
        let failed = |e: Error| {
            Some(format!(
                "every host runs {name} but moving the tags failed: {}; the previous containers are kept",
                e.report()
            ))
        };
        let stable_now = match self.tag_digest(&self.app.stable_tag).await {
            Ok(now) => now,
            Err(e) => return (Promotion::Failed, failed(e)),
        };
        let digest = |d: &Option<Digest>| {
            d.as_ref()
                .map_or_else(|| "nothing".to_owned(), |d| d.short().to_string())
        };
        match fleet::promotion_check(new, stable_before, stable_now.as_ref()) {
            fleet::PromotionCheck::Move(moves) if moves.stable.is_none() => {
                ev.note(
                    &Scope::Fleet,
                    Phase::Promoted,
                    format!("{} already points at {}", self.app.stable_tag, new.short()),
                );
                (Promotion::Done, None)
            }
            fleet::PromotionCheck::Move(moves) => {
                match self.move_tags(ev, new, moves.previous.as_ref()).await {
                    Ok(()) => (Promotion::Done, None),
                    Err(e) => (Promotion::Failed, failed(e)),
                }
            }
            fleet::PromotionCheck::StableMoved { expected, found } => (
                Promotion::StableMoved,
                Some(format!(
                    "every host runs {name}, verified, but {} was moved by someone else during the deploy (from {} to {}): no tag was moved",
                    self.app.stable_tag,
                    digest(&expected),
                    digest(&found),
                )),
            ),
        }
    }

    /// `previous` ← the digest stable had at the start (when it differs),
    /// then `stable` ← the new digest.
    pub(crate) async fn move_tags(
        &self,
        ev: &Emitter,
        new: &Digest,
        stable_before: Option<&Digest>,
    ) -> Result<(), Error> {
        let repo = &self.app.repository;
        let limit = self.timeouts.registry;
        if let Some(before) = stable_before.filter(|d| *d != new) {
            let destination = repo.with_tag(&self.app.previous_tag);
            let source = repo.with_digest(before);
            // Without `previous` in place the stable tag stays too, so the
            // two never disagree about what came before.
            let copy = timed(
                limit,
                format!("copy {source} to {destination}"),
                self.registry.copy(&source, &destination),
            )
            .await
            .map_err(|e| {
                e.context(format_args!(
                    "{} not moved, {destination} could not be set",
                    repo.with_tag(&self.app.stable_tag)
                ))
            })?;
            if copy.digest != *before {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{destination} points at {} after the copy, not {before}; {} was not moved",
                        copy.digest,
                        repo.with_tag(&self.app.stable_tag)
                    ),
                ));
            }
        }
        let destination = repo.with_tag(&self.app.stable_tag);
        let source = repo.with_digest(new);
        let copy = timed(
            limit,
            format!("copy {source} to {destination}"),
            self.registry.copy(&source, &destination),
        )
        .await?;
        if copy.digest != *new {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{destination} points at {} after the copy, not {new}",
                    copy.digest
                ),
            ));
        }
        ev.transition(
            &Scope::Fleet,
            Phase::Promoted,
            format!(
                "{} now points at {}{}",
                self.app.stable_tag,
                new.short(),
                match stable_before.filter(|d| *d != new) {
                    Some(before) => format!(", {} at {}", self.app.previous_tag, before.short()),
                    None => String::new(),
                }
            ),
        );
        Ok(())
    }
}

/// The fleet's last event: the phase that matches the outcome, and the reason.
pub(crate) fn announce_outcome(ev: &Emitter, outcome: Outcome, reason: Option<&str>) {
    let phase = match outcome {
        Outcome::Deployed => Phase::Done,
        Outcome::RolledBack => Phase::RolledBack,
        Outcome::RollbackFailed => Phase::RollbackFailed,
        Outcome::PromotionFailed => Phase::Verified,
        Outcome::StableMoved => Phase::Done,
        _ => Phase::Failed,
    };
    let detail = match reason {
        // The phase already names the outcome: do not say it twice.
        Some(reason) if phase.as_str() == outcome.as_str() => reason.to_owned(),
        Some(reason) => format!("{outcome}: {reason}"),
        None => outcome.to_string(),
    };
    ev.transition(&Scope::Fleet, phase, detail);
}

/// What `undo` deploys, or why it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UndoTarget {
    /// Deploy this release; `promote`: whether its tags move afterwards.
    Deploy {
        /// The release.
        digest: Digest,
        /// Its tag, when known.
        tag: Option<Tag>,
        /// Whether the tags move when it is verified.
        promote: bool,
    },
    /// Nothing to deploy, and why.
    Refused(String),
}

/// How a rollout ended, as the fleet policy said.
pub(crate) struct Ending {
    pub(crate) outcome: Outcome,
    pub(crate) cause: Option<Cause>,
    pub(crate) promotion: Promotion,
    pub(crate) promotion_failure: Option<String>,
}

/// The runs of the hosts `which`, in config order, each once: found by
/// index, not by a search of every run, so a batch costs its own hosts.
/// `runs[i]` is host `i`'s run.
pub(crate) fn runs_of<'a>(mut runs: &'a mut [HostRun], which: &[usize]) -> Vec<&'a mut HostRun> {
    let mut which = which.to_vec();
    which.sort_unstable();
    which.dedup();
    let mut picked = Vec::with_capacity(which.len());
    // Where `runs` now starts in the original slice.
    let mut start = 0;
    for i in which {
        let Some(at) = i.checked_sub(start).filter(|&at| at < runs.len()) else {
            continue;
        };
        let (_, rest) = std::mem::take(&mut runs).split_at_mut(at);
        let Some((run, rest)) = rest.split_first_mut() else {
            break;
        };
        debug_assert_eq!(run.index, i, "runs[i] is host i's run");
        picked.push(run);
        runs = rest;
        start = i + 1;
    }
    picked
}
