//! Finish or revert a deploy that was interrupted after the switch.

use super::deploy::{announce_outcome, runs_of};
use super::emit::{Emitter, Pump};
use super::host::HostRun;
use super::{join_hosts, timed, CancellationToken, Deployer, HostTarget};
use crate::adoption;
use crate::error::{Error, ErrorKind};
use crate::event::{Phase, Scope};
use crate::fleet::{self, Cause, FleetAction, FleetView, Promotion};
use crate::holder::{self, HolderFate};
use crate::machine::{Adoption, CapturedRelease, HostState, Input};
use crate::outcome::{DeployReport, Outcome};
use crate::policy::OnFailure;
use crate::types::{retained_name, ContainerInfo, Digest, LockAttempt, LockInfo, Release};
use std::time::SystemTime;

/// What recover found on one host.
#[derive(Default)]
struct Found {
    /// How to take the host over, when a deploy was interrupted there.
    adoption: Option<(Adoption, Option<CapturedRelease>)>,
    /// The app container.
    app: Option<ContainerInfo>,
    /// Who held the app's lock when the host was read.
    lock: Option<LockInfo>,
    /// Why the host could not be read.
    errors: Vec<String>,
}

impl Deployer {
    /// Finish or revert a deploy that was interrupted.
    ///
    /// Every host is read first. On each, a retained container (or, for a
    /// first deploy, an app container labelled with the deployment of a
    /// leftover lock) means the deploy stopped after the switch: recover
    /// adopts the host and verifies its app container, on every such host
    /// at once. When it is healthy everywhere and every other host already
    /// runs the same release, the deploy is finished (tags promoted from
    /// the container's labels, retained containers removed); otherwise (a
    /// host unhealthy, or one the deploy never reached) every such host gets
    /// its retained release back, verified, whatever `on_failure` says.
    /// Hosts without a retained container are left alone; when a host
    /// cannot be read nothing is changed.
    ///
    /// A live deploy's lock is taken or freed by nobody else: when a lock's
    /// holder is not proven gone ([`Deployer::with_holder_check`]), recover
    /// changes nothing and ends [`Outcome::Locked`], unless forced
    /// ([`Deployer::with_forced_takeover`]) and the holder is not seen
    /// running. Otherwise recover takes every host's lock itself while it
    /// works and releases its own locks at the end.
    ///
    /// # Cancel safety
    ///
    /// Cancelling `cancel` during verification restores the retained
    /// release; dropping the future may leave a host half restored, and
    /// running `recover` again continues from there.
    pub async fn recover(&self, cancel: CancellationToken) -> DeployReport {
        let pump = Pump::start(self.observer.clone());
        let report = self.recover_with(pump.emitter(), &cancel).await;
        pump.finish().await;
        report
    }

    async fn recover_with(&self, ev: &Emitter, cancel: &CancellationToken) -> DeployReport {
        let mut runs: Vec<HostRun> = (0..self.hosts.len()).map(HostRun::new).collect();
        let found: Vec<Found> = join_hosts(self.hosts.iter().map(|h| self.read_host(ev, h))).await;
        let errors: Vec<String> = found.iter().flat_map(|f| f.errors.clone()).collect();
        let mut locked = vec![false; self.hosts.len()];
        let (outcome, reason, promoted, target) = if !errors.is_empty() {
            // Deciding for the fleet needs every host; change nothing.
            (Outcome::Failed, Some(errors.join("; ")), false, None)
        } else if let Some(why) = self.refuse_live_locks(ev, &mut runs, &found) {
            (Outcome::Locked, Some(why), false, None)
        } else if let Some((outcome, why)) =
            self.take_locks(ev, &mut runs, &found, &mut locked).await
        {
            (outcome, Some(why), false, None)
        } else {
            self.take_over(ev, &mut runs, &found, cancel).await
        };

        // Only the locks recover took; a live deploy's lock stays its own.
        let unlocks = self
            .hosts
            .iter()
            .zip(&runs)
            .zip(&locked)
            .filter(|(_, held)| **held)
            .map(|((host, run), _)| self.release_lock(ev, host, run.state.phase()));
        join_hosts(unlocks).await;
        announce_outcome(ev, outcome, reason.as_deref());
        let hosts = runs
            .iter()
            .map(|run| {
                let release = found[run.index]
                    .app
                    .as_ref()
                    .and_then(|c| c.release.as_ref());
                run.report(&self.hosts[run.index], release)
            })
            .collect();
        let lock_holder = runs.iter().find_map(|r| match &r.state {
            HostState::Refused { holder, .. } => holder.clone(),
            _ => None,
        });
        DeployReport::new(outcome)
            .with_hosts(hosts)
            .with_target(target)
            .with_reason(reason)
            .with_promoted(promoted)
            .with_lock_holder(lock_holder)
    }

    /// Refuse when a lock is held by a deploy whose holder may still run
    /// ([`holder::may_take_over`]): the hosts so held end `Refused`, nothing
    /// is changed, and the reason names holder, deployment, target and the
    /// lock's age.
    fn refuse_live_locks(
        &self,
        ev: &Emitter,
        runs: &mut [HostRun],
        found: &[Found],
    ) -> Option<String> {
        let now = SystemTime::now();
        let mut reasons = Vec::new();
        for (run, found) in runs.iter_mut().zip(found) {
            let Some(lock) = &found.lock else { continue };
            let fate = self.holder_check.fate(lock);
            if holder::may_take_over(&fate, self.force_takeover) {
                continue;
            }
            let host = &self.hosts[run.index];
            let hint = match fate {
                HolderFate::Running => "wait for it to end",
                _ => "give --force to take it over if that deploy is stuck",
            };
            reasons.push(format!(
                "host {}: lock held by deployment {} of {} by {}, taken {} ago, and {fate}; {hint}",
                host.id,
                lock.deployment,
                lock.target,
                lock.holder,
                humantime::format_duration(holder::lock_age(lock, now)),
            ));
            self.advance(ev, host, run, Input::LockHeld(lock.clone()));
        }
        (!reasons.is_empty()).then(|| {
            format!(
                "{}; recover acts only on a deploy whose holder is gone",
                reasons.join("; ")
            )
        })
    }

    /// Take the app's lock on every host, in config order, breaking the
    /// lock of a holder that is gone (or, forced, cannot be proven alive).
    /// Stops at a lock someone took meanwhile: that host ends `Refused`.
    async fn take_locks(
        &self,
        ev: &Emitter,
        runs: &mut [HostRun],
        found: &[Found],
        locked: &mut [bool],
    ) -> Option<(Outcome, String)> {
        let limit = self.timeouts.engine;
        for (run, found) in runs.iter_mut().zip(found) {
            let host = &self.hosts[run.index];
            let scope = Scope::Host(host.id.clone());
            if let Some(old) = &found.lock {
                let fate = self.holder_check.fate(old);
                if let Err(e) = timed(
                    limit,
                    "break the deploy lock",
                    host.lock.break_lock(&self.app.name),
                )
                .await
                {
                    return Some((Outcome::Failed, format!("host {}: {}", host.id, e.report())));
                }
                ev.note(
                    &scope,
                    Phase::Planned,
                    format!(
                        "took over the lock of deployment {} ({fate})",
                        old.deployment
                    ),
                );
            }
            let ours = LockInfo {
                app: self.app.name.to_string(),
                deployment: self.deployment.clone(),
                holder: self.holder.clone(),
                target: "recover".to_owned(),
                started_at: SystemTime::now(),
            };
            match timed(limit, "take the deploy lock", host.lock.acquire(&ours)).await {
                Ok(LockAttempt::Acquired) => locked[run.index] = true,
                Ok(LockAttempt::Held(other)) => {
                    let why = format!("host {}: lock held by {other}", host.id);
                    self.advance(ev, host, run, Input::LockHeld(other));
                    return Some((Outcome::Locked, why));
                }
                Err(e) => {
                    return Some((Outcome::Failed, format!("host {}: {}", host.id, e.report())))
                }
            }
        }
        None
    }

    /// Adopt the interrupted hosts, verify them at once, then finish or
    /// revert as the fleet policy says.
    async fn take_over(
        &self,
        ev: &Emitter,
        runs: &mut [HostRun],
        found: &[Found],
        cancel: &CancellationToken,
    ) -> (Outcome, Option<String>, bool, Option<Release>) {
        for (run, found) in runs.iter_mut().zip(found) {
            if let Some((adoption, retained)) = found.adoption.clone() {
                let input = Input::Adopted { adoption, retained };
                self.advance(ev, &self.hosts[run.index], run, input);
            }
        }
        // Promoting needs the new release on every host: a host the deploy
        // never reached (a batch not started) runs another one.
        let reached: Vec<adoption::Reached<'_>> = runs
            .iter()
            .map(|r| {
                let app = found[r.index].app.as_ref();
                adoption::Reached {
                    adopted_running: r.state.is_switched(),
                    untouched: matches!(r.state, HostState::Planned),
                    runs: app
                        .filter(|c| c.state.is_running())
                        .and_then(|c| c.release.as_ref())
                        .map(|release| &release.digest),
                }
            })
            .collect();
        let (new_digest, behind) = adoption::behind(&reached);
        let new_digest = new_digest.cloned();
        let work = runs
            .iter_mut()
            .filter_map(|run| match &run.state {
                HostState::Switched { new_container, .. } => Some((new_container.clone(), run)),
                _ => None,
            })
            .map(|(container, run)| async move {
                self.verify_new(ev, &self.hosts[run.index], run, &container, cancel)
                    .await
            });
        join_hosts(work).await;

        let mut promotion = Promotion::Pending;
        let mut promotion_failure = None;
        let mut target = None;
        loop {
            let states: Vec<HostState> = runs.iter().map(|r| r.state.clone()).collect();
            let view = FleetView::new(&states, OnFailure::RollbackAll, self.rollout.batch())
                .cancelled(cancel.is_cancelled())
                .promotion(promotion)
                .promote(self.promote)
                .behind(behind);
            let why = |cause: Cause| {
                match cause {
                Cause::Behind(i) => format!(
                    "reverted because host {} does not run {}: the interrupted deploy never reached it",
                    self.hosts[i].id,
                    new_digest.as_ref().map(Digest::short).unwrap_or_default()
                ),
                Cause::Host(i) => format!(
                    "reverted because host {} is not healthy",
                    self.hosts[i].id
                ),
                _ => "cancelled".to_owned(),
            }
            };
            match fleet::next(&view) {
                FleetAction::Revert { hosts, cause } => {
                    let reason = Error::new(ErrorKind::Cancelled, why(cause));
                    for run in runs_of(runs, &hosts) {
                        let input = if cancel.is_cancelled() {
                            Input::Cancelled
                        } else {
                            Input::Revert(reason.clone())
                        };
                        self.advance(ev, &self.hosts[run.index], run, input);
                    }
                }
                FleetAction::Restore(hosts) => self.restore_all(ev, runs, &hosts).await,
                FleetAction::Promote => {
                    let (release, result, why) = self.promote_from_labels(ev, runs, found).await;
                    target = release;
                    promotion = result;
                    promotion_failure = why;
                }
                FleetAction::Retire(hosts) => {
                    for run in runs_of(runs, &hosts) {
                        self.retire_host(ev, &self.hosts[run.index], run).await;
                    }
                }
                FleetAction::Finish { outcome, cause } => {
                    let finished = runs
                        .iter()
                        .any(|r| matches!(r.state, HostState::Done { .. }));
                    if !self.promote && finished && outcome == Outcome::Deployed {
                        ev.note(
                            &Scope::Fleet,
                            Phase::Done,
                            format!("not promoted: {} was left as it is", self.app.stable_tag),
                        );
                    }
                    let reason = match outcome {
                        Outcome::PromotionFailed | Outcome::StableMoved => promotion_failure,
                        _ => cause.map(why),
                    };
                    return (outcome, reason, promotion == Promotion::Done, target);
                }
                other => {
                    debug_assert!(false, "recover has no effect for {other:?}");
                    return (fleet::outcome(&view), None, false, target);
                }
            }
        }
    }

    /// Read one host: its lock and its app containers, and whether a deploy
    /// was interrupted there after the switch.
    async fn read_host(&self, ev: &Emitter, host: &HostTarget) -> Found {
        let limit = self.timeouts.engine;
        let scope = Scope::Host(host.id.clone());
        let retained_name = retained_name(&self.app.name);
        let mut found = Found::default();
        let lock = match timed(limit, "read the lock", host.lock.status(&self.app.name)).await {
            Ok(Some(lock)) => {
                ev.note(&scope, Phase::Planned, format!("lock held by {lock}"));
                found.lock = Some(lock.clone());
                Some(lock)
            }
            Ok(None) => None,
            Err(e) => {
                found
                    .errors
                    .push(format!("host {}: {}", host.id, e.report()));
                None
            }
        };
        let cx = self.cx(Some(ev), host);
        match host.strategy.get().interrupted(&cx, lock.as_ref()).await {
            Ok(Some(interrupted)) => {
                found.adoption = interrupted.adoption;
                found.app = interrupted.app;
                if found.adoption.is_none() {
                    ev.note(&scope, Phase::Done, "nothing to recover");
                }
                return found;
            }
            Ok(None) => {}
            Err(e) => {
                found
                    .errors
                    .push(format!("host {}: {}", host.id, e.report()));
                return found;
            }
        }
        let containers = match timed(
            limit,
            "list the app containers",
            host.runtime.list_app(&self.app.name),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                found
                    .errors
                    .push(format!("host {}: {}", host.id, e.report()));
                return found;
            }
        };
        let app = containers.iter().find(|c| c.name == self.app.name).cloned();
        let beside = match host
            .strategy
            .get()
            .interrupted_beside(&cx, &containers)
            .await
        {
            Ok(beside) => beside,
            Err(e) => {
                found
                    .errors
                    .push(format!("host {}: {}", host.id, e.report()));
                return found;
            }
        };
        if let Some((beside, serving)) = beside {
            // The container beside is the new release.
            let seen = adoption::Observed::new(&self.app.name, app.as_ref())
                .beside(Some((&beside, serving)));
            found.adoption = adoption::adopt(&seen);
            found.app = Some(beside);
            return found;
        }
        let retained = containers.iter().find(|c| c.name == retained_name);
        let seen = adoption::Observed::new(&self.app.name, app.as_ref())
            .retained(retained)
            .lock(lock.as_ref());
        found.adoption = adoption::adopt(&seen);
        found.app = app;
        if found.adoption.is_none() {
            ev.note(&scope, Phase::Done, "nothing to recover");
        }
        found
    }

    /// Every interrupted host is healthy: promote from the labels of their
    /// app containers. Returns the release they run and how it went.
    async fn promote_from_labels(
        &self,
        ev: &Emitter,
        runs: &[HostRun],
        found: &[Found],
    ) -> (Option<Release>, Promotion, Option<String>) {
        let verified: Vec<&ContainerInfo> = runs
            .iter()
            .filter(|r| matches!(r.state, HostState::Verified { .. }))
            .filter_map(|r| found[r.index].app.as_ref())
            .collect();
        let target = verified.first().and_then(|c| c.release.clone());
        match adoption::agreed_release(&verified) {
            Some((new, before)) => {
                let name = target
                    .as_ref()
                    .map_or_else(|| new.short().to_string(), Release::display_name);
                let (promotion, why) = self.promote_checked(ev, &new, &name, before.as_ref()).await;
                (target, promotion, why)
            }
            // Without promotion the retained containers stay, so recover can run again.
            _ => (
                target,
                Promotion::Failed,
                Some("the hosts do not run one labelled release; tags left as they are".into()),
            ),
        }
    }
}
