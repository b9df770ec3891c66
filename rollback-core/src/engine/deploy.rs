//! The fleet rollout: locks, batches, failure policy, promotion, cleanup.

use futures_util::future::join_all;

use super::emit::{Emitter, Pump};
use super::host::HostRun;
use super::{pause, timed, CancellationToken, Deployer, Target};
use crate::error::{Error, ErrorKind};
use crate::event::Phase;
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
    /// their previous release back and verified, locks are released, and the
    /// report says `rolled_back`. Dropping the future instead stops at the
    /// next await point: a host may be left with its old container stopped
    /// and kept as the retained container and its lock held; `recover`
    /// finishes or reverts such a host.
    pub async fn deploy(&self, target: Target, cancel: CancellationToken) -> DeployReport {
        let pump = Pump::start(self.observer.clone());
        let report = self
            .deploy_with(pump.emitter(), target, None, &cancel)
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
        let report = match self.tag_digest(&self.app.previous_tag).await {
            Ok(Some(digest)) => {
                let tag = self.replaced_tag(&digest).await;
                self.deploy_with(ev, Target::Digest(digest), tag, &cancel)
                    .await
            }
            Ok(None) => self.failed_before_start(
                ev,
                None,
                format!(
                    "no previous release: tag {} not found in {}",
                    self.app.previous_tag, self.app.repository
                ),
            ),
            Err(e) => self.failed_before_start(ev, None, e.report()),
        };
        pump.finish().await;
        report
    }

    pub(crate) fn failed_before_start(
        &self,
        ev: &Emitter,
        target: Option<Release>,
        reason: String,
    ) -> DeployReport {
        ev.transition(None, Phase::Failed, reason.clone());
        DeployReport {
            outcome: Outcome::Failed,
            target,
            hosts: self
                .hosts
                .iter()
                .map(|h| HostReport::untouched(h.id.clone()))
                .collect(),
            reason: Some(reason),
            lock_holder: None,
            promoted: false,
        }
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
        join_all(reads)
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
            None,
            Phase::Planned,
            format!(
                "deploying {} ({}) to {} host(s)",
                release.display_name(),
                release.image(),
                self.hosts.len()
            ),
        );
        let mut runs: Vec<HostRun> = (0..self.hosts.len()).map(HostRun::new).collect();
        let report = self
            .rollout(
                ev,
                &mut runs,
                &target,
                &release,
                stable_before.as_ref(),
                cancel,
            )
            .await;
        // Locks are always released, whatever happened.
        let unlocks = runs
            .iter_mut()
            .map(|run| self.unlock_host(ev, &self.hosts[run.index], run));
        join_all(unlocks).await;
        let (outcome, reason, promoted, lock_holder) = report;
        announce_outcome(ev, outcome, reason.as_deref());
        DeployReport {
            outcome,
            hosts: runs
                .iter()
                .map(|run| run.report(&self.hosts[run.index], Some(&release)))
                .collect(),
            target: Some(release),
            reason,
            lock_holder,
            promoted,
        }
    }

    /// Locks, batches, failure handling and promotion. Returns the outcome,
    /// the reason, whether tags moved and the lock that stopped us.
    async fn rollout(
        &self,
        ev: &Emitter,
        runs: &mut [HostRun],
        target: &Target,
        release: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> (
        Outcome,
        Option<String>,
        bool,
        Option<crate::types::LockInfo>,
    ) {
        // Every lock first, so a busy fleet is refused before anything
        // changes; one at a time in config order, so of two deploys started
        // at once the one that gets the first host gets them all and the
        // other stops there, instead of each holding a part and both giving up.
        let target_text = target.to_string();
        for run in runs.iter_mut() {
            self.lock_host(ev, &self.hosts[run.index], run, &target_text)
                .await;
            if !run.lock_taken {
                break;
            }
        }
        if let Some(run) = runs.iter().find(|r| r.lock_holder.is_some()) {
            let holder = run.lock_holder.clone();
            let reason = format!(
                "host {}: lock held by {}",
                self.hosts[run.index].id,
                holder.as_ref().map(ToString::to_string).unwrap_or_default()
            );
            return (Outcome::Locked, Some(reason), false, holder);
        }
        if let Some(run) = runs.iter().find(|r| !r.lock_taken) {
            let reason = match &run.state {
                HostState::Failed { reason } => reason.clone(),
                other => other.to_string(),
            };
            return (
                Outcome::Failed,
                Some(format!("host {}: {reason}", self.hosts[run.index].id)),
                false,
                None,
            );
        }

        let batch = self.rollout.batch();
        let mut first_failure: Option<String> = None;
        for chunk in runs.chunks_mut(batch) {
            if cancel.is_cancelled() {
                break;
            }
            let work = chunk.iter_mut().map(|run| {
                let host = &self.hosts[run.index];
                self.deploy_host(ev, host, run, release, stable_before, cancel)
            });
            join_all(work).await;
            if let Some(run) = chunk
                .iter()
                .find(|r| !matches!(r.state, HostState::Verified { .. }))
            {
                let reason = match &run.state {
                    HostState::Failed { reason } | HostState::RollingBack { reason, .. } => {
                        reason.clone()
                    }
                    other => format!("ended in {other}"),
                };
                first_failure = Some(format!("host {}: {reason}", self.hosts[run.index].id));
                break;
            }
        }

        let cancelled = cancel.is_cancelled();
        if first_failure.is_none() && !cancelled {
            return self.promote(ev, runs, release, stable_before).await;
        }
        let reason = first_failure.unwrap_or_else(|| "cancelled".into());
        let policy = if cancelled {
            OnFailure::RollbackAll
        } else {
            self.rollout.on_failure()
        };
        ev.note(
            None,
            Phase::RollingBack,
            format!("{reason}; on failure: {policy}"),
        );
        match policy {
            OnFailure::RollbackAll => {
                for run in runs.iter_mut() {
                    if run.state.is_switched() {
                        let why = if cancelled {
                            "cancelled".to_owned()
                        } else {
                            format!("reverted because {reason}")
                        };
                        let input = if cancelled {
                            Input::Cancelled
                        } else {
                            Input::Revert(why)
                        };
                        self.advance(ev, &self.hosts[run.index], run, input);
                    }
                }
                self.restore_all(ev, runs).await;
            }
            OnFailure::RollbackHost => {
                self.restore_all(ev, runs).await;
                // Verified hosts keep the new release; their old container is not needed.
                for run in runs.iter_mut() {
                    if matches!(run.state, HostState::Verified { .. }) {
                        self.remove_retained(ev, &self.hosts[run.index], run).await;
                    }
                }
            }
            OnFailure::Halt => {
                for run in runs.iter_mut() {
                    if let HostState::RollingBack {
                        failed_container, ..
                    } = &run.state
                    {
                        // The failed release stays: the report says it runs there.
                        run.halted_container = failed_container.clone();
                        self.advance(ev, &self.hosts[run.index], run, Input::Halt);
                    }
                }
            }
        }
        let outcome = fleet_outcome(runs);
        let mut reason = if policy == OnFailure::Halt {
            format!("halted: {reason}")
        } else {
            reason
        };
        // A first deploy has nothing to restore: say so where users look first.
        let bare: Vec<String> = runs
            .iter()
            .filter(|r| {
                matches!(r.state, HostState::RolledBack { .. }) && r.previous_container.is_none()
            })
            .map(|r| self.hosts[r.index].id.to_string())
            .collect();
        if !bare.is_empty() {
            reason = format!(
                "{reason}; there was no previous release to restore on {}, nothing runs there",
                bare.join(", ")
            );
        }
        (outcome, Some(reason), false, None)
    }

    async fn restore_all(&self, ev: &Emitter, runs: &mut [HostRun]) {
        let work = runs
            .iter_mut()
            .filter(|r| matches!(r.state, HostState::RollingBack { .. }))
            .map(|run| self.restore_host(ev, &self.hosts[run.index], run));
        join_all(work).await;
    }

    /// Move the tags once every host is verified, then drop the retained containers.
    async fn promote(
        &self,
        ev: &Emitter,
        runs: &mut [HostRun],
        release: &Release,
        stable_before: Option<&Digest>,
    ) -> (
        Outcome,
        Option<String>,
        bool,
        Option<crate::types::LockInfo>,
    ) {
        pause::point("promoting", None).await;
        if let Err(e) = self.move_tags(ev, &release.digest, stable_before).await {
            let reason = format!(
                "every host runs {} but moving the tags failed: {}; the previous containers are kept",
                release.display_name(),
                e.report()
            );
            return (Outcome::PromotionFailed, Some(reason), false, None);
        }
        for run in runs.iter_mut() {
            self.remove_retained(ev, &self.hosts[run.index], run).await;
        }
        (Outcome::Deployed, None, true, None)
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
            let _ = timed(
                limit,
                format!("copy {source} to {destination}"),
                self.registry.copy(&source, &destination),
            )
            .await?;
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
            None,
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

/// The fleet's outcome after a failure: `RollbackFailed` when a host may be
/// without a healthy release, `RolledBack` when some host was changed and
/// every host runs a verified release, `Failed` when nothing changed.
fn fleet_outcome(runs: &[HostRun]) -> Outcome {
    if runs
        .iter()
        .any(|r| matches!(r.state, HostState::RollbackFailed { .. }))
    {
        Outcome::RollbackFailed
    } else if runs.iter().any(|r| {
        r.done
            || matches!(
                r.state,
                HostState::RolledBack { .. } | HostState::Verified { .. }
            )
    }) {
        Outcome::RolledBack
    } else {
        Outcome::Failed
    }
}

/// The fleet's last event: the phase that matches the outcome, and the reason.
pub(crate) fn announce_outcome(ev: &Emitter, outcome: Outcome, reason: Option<&str>) {
    let phase = match outcome {
        Outcome::Deployed => Phase::Done,
        Outcome::RolledBack => Phase::RolledBack,
        Outcome::RollbackFailed => Phase::RollbackFailed,
        Outcome::PromotionFailed => Phase::Verified,
        _ => Phase::Failed,
    };
    let detail = match reason {
        // The phase already names the outcome: do not say it twice.
        Some(reason) if phase.as_str() == outcome.as_str() => reason.to_owned(),
        Some(reason) => format!("{outcome}: {reason}"),
        None => outcome.to_string(),
    };
    ev.transition(None, phase, detail);
}
