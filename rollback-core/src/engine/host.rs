//! The effects on one host, each feeding its result to the state machine.

use std::future::Future;
use std::time::SystemTime;

use tokio::time::Instant;

use super::emit::Emitter;
use super::{timed, Deployer, HostTarget};
use crate::checkpoint::Stage;
use crate::engine::CancellationToken;
use crate::error::{Error, ErrorKind};
use crate::event::{EventKind, Phase, Scope};
use crate::machine::{self, step, CapturedRelease, HostState, Input, RestoreCheck, VerifyLimits};
use crate::outcome::HostReport;
use crate::traits::ProbeResult;
use crate::types::{
    retained_name, ContainerExit, ContainerId, Digest, LockAttempt, LockInfo, Release, Workload,
};

/// What the tidying beside a restore gives back: the failed container's
/// logs, when it read them, and whether it finished.
pub(crate) type Tidying = (Option<Vec<String>>, Result<(), Error>);

/// The first pause before probing again while a release has not answered yet.
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(25);

/// One host's progress through a deploy: its state, and what was seen on
/// the way for the report (no decision is read from the latter).
pub(crate) struct HostRun {
    pub(crate) index: usize,
    pub(crate) state: HostState,
    /// Last output lines of the failed container.
    pub(crate) logs: Vec<String>,
    /// The last probe answer.
    pub(crate) last_probe: Option<String>,
    /// When the host entered `RollingBack`.
    pub(crate) failed_at: Option<Instant>,
    /// Start-first: the time from the failure to the traffic's switch back.
    pub(crate) switch_back: Option<std::time::Duration>,
}

impl HostRun {
    pub(crate) fn new(index: usize) -> Self {
        Self {
            index,
            state: HostState::Planned,
            logs: Vec::new(),
            last_probe: None,
            failed_at: None,
            switch_back: None,
        }
    }

    /// The host report, given the release being deployed: a function of
    /// the state (and of the logs and probe answer seen).
    pub(crate) fn report(&self, host: &HostTarget, target: Option<&Release>) -> HostReport {
        let report = HostReport::new(host.id.clone(), self.state.phase())
            .with_trail(self.logs.clone(), self.last_probe.clone())
            .with_switch_back(self.switch_back);
        let before = self.state.previous_release().cloned();
        let error = self.state.failure().map(Error::report);
        match &self.state {
            // The lock was taken for a batch that never came.
            HostState::Planned | HostState::Locked => HostReport::untouched(host.id.clone()),
            HostState::Refused { .. } => report.with_error(error),
            HostState::Verified { new_container, .. } | HostState::Done { new_container, .. } => {
                report
                    .with_releases(before, target.cloned())
                    .with_container(Some(new_container.clone()))
            }
            HostState::RolledBack { restored, reason } => match restored {
                Some(restored) => report
                    .with_releases(before, restored.release.clone())
                    .with_container(Some(restored.container.clone()))
                    .with_error(error),
                None => report.with_error(Some(format!(
                    "{}; there was no previous release to restore, nothing runs",
                    reason.report()
                ))),
            },
            HostState::RollbackFailed {
                reason, failure, ..
            } => report.with_releases(before, None).with_error(Some(format!(
                "{}; restoring the previous release failed: {}",
                reason.report(),
                failure.report()
            ))),
            // The failed release stays: the report says it runs there.
            HostState::Halted {
                failed_container,
                reason,
                ..
            } => report
                .with_releases(before, target.cloned())
                .with_container(failed_container.clone())
                .with_error(Some(format!("halted: {}", reason.report()))),
            HostState::Failed { previous, .. } => report
                .with_releases(before.clone(), before)
                .with_container(previous.as_ref().map(|p| p.container.clone()))
                .with_error(error),
            _ => report.with_releases(before, None).with_error(error),
        }
    }
}

/// `container ID`, or the service at its version.
fn named(w: &Workload) -> String {
    match w.container() {
        Some(id) => format!("container {id}"),
        None => w.to_string(),
    }
}

fn describe(state: &HostState, app: &str) -> String {
    match state {
        HostState::Switched {
            new_container: new @ Workload::Service { .. },
            retained,
            ..
        } => match retained {
            Some(r) => format!(
                "updated {new}; the previous spec ({}) is kept by Swarm",
                r.container
            ),
            None => format!("created {new}"),
        },
        HostState::Planned => "planned".into(),
        HostState::Locked => "deploy lock taken".into(),
        HostState::Captured { previous: None } => "no running release: first deploy".into(),
        HostState::Captured { previous: Some(p) } => format!(
            "running release {} in {}",
            p.release
                .as_ref()
                .map(Release::display_name)
                .unwrap_or_else(|| "of unknown image".into()),
            named(&p.container)
        ),
        HostState::Pulled { .. } => "image present".into(),
        HostState::Switched {
            new_container,
            retained,
            ..
        } => match retained {
            Some(r) => format!(
                "started container {new_container}; previous container {} kept as {}",
                r.container,
                retained_name(app)
            ),
            None => format!("started container {new_container}"),
        },
        HostState::Verifying { new_container, .. } => {
            format!("verifying {}", named(new_container))
        }
        HostState::Started {
            new_container,
            retained,
        } => match retained {
            Some(r) => format!(
                "started container {new_container} beside {}, which takes every request",
                r.container
            ),
            None => format!("started container {new_container}; no request reaches it yet"),
        },
        HostState::Warming { new_container, .. } | HostState::Ready { new_container, .. } => {
            format!("probing container {new_container} directly; no request reaches it yet")
        }
        HostState::Serving {
            new_container,
            retained,
            ..
        } => match retained {
            Some(r) => format!(
                "the proxy sends requests to container {new_container}; container {} keeps running until it is stable",
                r.container
            ),
            None => format!("the proxy sends requests to container {new_container}"),
        },
        HostState::Verified { .. } => "new release verified healthy".into(),
        HostState::Done { leftover: None, .. } => "previous container removed".into(),
        HostState::Done {
            leftover: Some(id), ..
        } => format!("previous container {id} left in place; the next deploy removes it"),
        HostState::RollingBack { reason, .. } | HostState::Restoring { reason, .. } => {
            format!("rolling back: {}", reason.report())
        }
        HostState::RolledBack {
            restored: Some(CapturedRelease {
                release: Some(r), ..
            }),
            ..
        } => format!("previous release {} restored and healthy", r.display_name()),
        HostState::RolledBack {
            restored: Some(r), ..
        } => format!("previous {} restored and healthy", named(&r.container)),
        HostState::RolledBack { restored: None, .. } => {
            "failed container removed; there was no previous release to restore".into()
        }
        HostState::RollbackFailed {
            reason, failure, ..
        } => format!(
            "{}; restoring the previous release failed: {}",
            reason.report(),
            failure.report()
        ),
        HostState::Halted { reason, .. } => format!("halted: {}", reason.report()),
        HostState::Refused { reason, .. } | HostState::Failed { reason, .. } => reason.report(),
    }
}

impl Deployer {
    /// Feed `input` to the host's machine and emit the transition.
    pub(crate) fn advance(&self, ev: &Emitter, host: &HostTarget, run: &mut HostRun, input: Input) {
        let before = run.state.phase();
        let was_rolling_back = matches!(run.state, HostState::RollingBack { .. });
        let scope = Scope::Host(host.id.clone());
        run.state = match step(run.state.clone(), input) {
            Ok(next) => next,
            // A bug in the driver: said aloud, and the host stops where the
            // usual restore or failure rules take over.
            Err(invalid) => {
                ev.error(&scope, before, format!("internal error: {invalid}"));
                machine::fault(run.state.clone(), &invalid)
            }
        };
        if !was_rolling_back && matches!(run.state, HostState::RollingBack { .. }) {
            run.failed_at = Some(Instant::now());
        }
        if run.state.phase() != before {
            ev.transition(
                &scope,
                run.state.phase(),
                describe(&run.state, &self.app.name),
            );
        }
    }

    /// Await the checkpoint of `stage` on `host`.
    pub(crate) async fn checkpoint(&self, stage: Stage, host: &HostTarget) {
        self.checkpoint
            .reached(stage, &Scope::Host(host.id.clone()))
            .await;
    }

    /// Take the host's deploy lock.
    pub(crate) async fn lock_host(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        run: &mut HostRun,
        target: &str,
    ) {
        let lock = LockInfo {
            app: self.app.name.to_string(),
            deployment: self.deployment.clone(),
            holder: self.holder.clone(),
            target: target.to_owned(),
            started_at: SystemTime::now(),
        };
        let result = timed(
            self.timeouts.engine,
            "take the deploy lock",
            host.lock.acquire(&lock),
        )
        .await;
        let input = match result {
            Ok(LockAttempt::Acquired) => {
                self.checkpoint(Stage::Locked, host).await;
                Input::LockAcquired
            }
            Ok(LockAttempt::Held(holder)) => Input::LockHeld(holder),
            Err(e) => Input::LockFailed(e),
        };
        self.advance(ev, host, run, input);
    }

    /// Release the host's lock if this deploy holds it.
    pub(crate) async fn unlock_host(&self, ev: &Emitter, host: &HostTarget, run: &HostRun) {
        if run.state.holds_lock() {
            self.release_lock(ev, host, run.state.phase()).await;
        }
    }

    /// Release this deployment's lock of the app on `host`; a lock someone
    /// else holds stays, and a failure is noted.
    pub(crate) async fn release_lock(&self, ev: &Emitter, host: &HostTarget, phase: Phase) {
        let result = timed(
            self.timeouts.engine,
            "release the deploy lock",
            host.lock.release(&self.app.name, &self.deployment),
        )
        .await;
        if let Err(e) = result {
            ev.note(&Scope::Host(host.id.clone()), phase, e.report());
        }
    }

    /// Capture, pull, switch and verify a `Locked` host; ends in
    /// `Verified`, `RollingBack` or `Failed`.
    pub(crate) async fn deploy_host(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        run: &mut HostRun,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) {
        if cancel.is_cancelled() {
            return self.advance(ev, host, run, Input::Cancelled);
        }
        let input = match host.strategy.get().capture(&self.cx(Some(ev), host)).await {
            Ok(previous) => Input::Captured(previous),
            Err(e) => Input::CaptureFailed(e),
        };
        self.advance(ev, host, run, input);
        if !matches!(run.state, HostState::Captured { .. }) {
            return;
        }
        self.checkpoint(Stage::Captured, host).await;

        let image = target.image();
        let pull = timed(
            self.timeouts.pull,
            format!("pull {image}"),
            host.runtime.pull(
                &image,
                host.container.platform.clone(),
                Some(ev.pull_sink(&host.id)),
            ),
        );
        // The probe's say on the image belongs to this step: refusing here
        // leaves the running release untouched.
        let admit = async {
            timed(
                self.timeouts.engine,
                format!("image {image}"),
                host.probe.admit(&image),
            )
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Timeout => e,
                _ => e.context(format!("image {image}")),
            })
        };
        let previous = match &run.state {
            HostState::Captured { previous } => previous.clone(),
            _ => None,
        };
        let cx = self.cx(Some(ev), host);
        let prepare = host.strategy.get().prepare(&cx, previous.as_ref());
        let input = tokio::select! {
            result = async { pull.await?; admit.await?; prepare.await } => match result {
                Ok(()) => Input::Pulled,
                Err(e) => Input::PullFailed(e),
            },
            _ = cancel.cancelled() => Input::Cancelled,
        };
        self.advance(ev, host, run, input);
        if cancel.is_cancelled() && matches!(run.state, HostState::Pulled { .. }) {
            self.advance(ev, host, run, Input::Cancelled);
        }
        let HostState::Pulled { previous } = &run.state else {
            return;
        };
        self.checkpoint(Stage::Pulled, host).await;

        let previous = previous.clone();
        let input = host
            .strategy
            .get()
            .switch(&cx, previous.as_ref(), target, stable_before, cancel)
            .await;
        self.advance(ev, host, run, input);
        let (new_container, stage) = match &run.state {
            HostState::Switched { new_container, .. } => (new_container.clone(), Stage::Switched),
            HostState::Started { new_container, .. } => (new_container.clone(), Stage::Started),
            _ => return,
        };
        self.checkpoint(stage, host).await;
        self.verify_new(ev, host, run, &new_container, cancel).await;
    }

    /// The running release and its container; removes a leftover retained
    /// container only when the app container runs.
    pub(crate) async fn capture_container(
        &self,
        ev: Option<&Emitter>,
        host: &HostTarget,
    ) -> Result<Option<CapturedRelease>, Error> {
        let limit = self.timeouts.engine;
        let current = timed(
            limit,
            "read the app container",
            host.runtime.current(&self.app.name),
        )
        .await?;
        let retained = retained_name(&self.app.name);
        let leftover = timed(
            limit,
            "look for a retained container",
            host.runtime.current(&retained),
        )
        .await?;
        if let Some(leftover) = leftover {
            match &current {
                Some(c) if c.state.is_running() => {
                    timed(
                        limit,
                        format!("remove the leftover container {retained}"),
                        host.runtime.remove(&leftover.id),
                    )
                    .await?;
                    if let Some(ev) = ev {
                        ev.note(
                            &Scope::Host(host.id.clone()),
                            Phase::Locked,
                            format!(
                                "removed container {} ({retained}) left by an earlier deploy",
                                leftover.id
                            ),
                        );
                    }
                }
                _ => {
                    return Err(Error::conflict(format!(
                        "container {retained} from an interrupted deploy exists and {} is not running: run `rollback recover` first",
                        self.app.name
                    )));
                }
            }
        }
        Ok(current.map(|c| CapturedRelease {
            container: c.id.into(),
            release: c.release,
        }))
    }

    /// Verify the new release of a `Switched` (or start-first `Started`)
    /// host; ends in `Verified` or `RollingBack`.
    pub(crate) async fn verify_new(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        run: &mut HostRun,
        container: &Workload,
        cancel: &CancellationToken,
    ) {
        let policy = self.health;
        self.advance(
            ev,
            host,
            run,
            Input::VerifyStarted(VerifyLimits::from(&policy)),
        );
        if !matches!(
            run.state,
            HostState::Verifying { .. } | HostState::Warming { .. }
        ) {
            return;
        }
        self.checkpoint(Stage::Verifying, host).await;
        if self
            .checkpoint
            .fault(Stage::Verifying, &Scope::Host(host.id.clone()))
        {
            // The lock is taken once, before any switch: here it is a bug.
            self.advance(ev, host, run, Input::LockAcquired);
            return;
        }
        ev.note(
            &Scope::Host(host.id.clone()),
            Phase::Verifying,
            format!(
                "probing {} every {} (deadline {}, stable for {})",
                host.probe.describe(),
                humantime::format_duration(policy.interval()),
                humantime::format_duration(policy.deadline()),
                humantime::format_duration(policy.stable_for())
            ),
        );
        let no_tidy: Option<std::future::Ready<Tidying>> = None;
        self.watch(ev, host, run, container, Some(cancel), no_tidy)
            .await;
    }

    /// Probe `container` and watch it while the machine verifies
    /// (`Verifying`, or `Restoring` with `tidy` running beside).
    ///
    /// Without `cancel` the verification cannot be cancelled (a restore
    /// must finish).
    async fn watch<T>(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        run: &mut HostRun,
        container: &Workload,
        cancel: Option<&CancellationToken>,
        tidy: Option<T>,
    ) where
        T: Future<Output = Tidying>,
    {
        let policy = self.health;
        let scope = Scope::Host(host.id.clone());
        let Some(limits) = run.state.probing().map(|p| p.limits) else {
            return;
        };
        let started = Instant::now();
        let deadline_at = started + limits.deadline;
        // What the strategy watches besides (start-first: the proxy, which
        // the release verified is reached through).
        let cx = self.cx(Some(ev), host);
        let mut exit = host.strategy.get().wait_exit(&cx, container);
        let mut watching = true;
        let mut strategy_watched = true;
        let strategy_watch = host.strategy.get().watch(&cx);
        tokio::pin!(strategy_watch);
        let mut tidying = tidy.is_some();
        let tidy = async move {
            match tidy {
                Some(tidy) => tidy.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(tidy);
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        let mut next_probe = started;
        // Within the first interval, until a healthy answer, a failed attempt
        // is retried after a pause that starts short and doubles: a release
        // usually answers moments after its start, and waiting a whole
        // interval for it would add up to one to every switch and restore.
        // Later probes keep the interval's cadence from the start.
        let mut ramp = Some(FIRST_RETRY);
        let first_regular = started + policy.interval();
        let mut attempt: u32 = 0;
        let mut in_window = false;
        while matches!(
            run.state,
            HostState::Verifying { .. }
                | HostState::Warming { .. }
                | HostState::Ready { .. }
                | HostState::Serving { .. }
                | HostState::Restoring { .. }
        ) {
            if let HostState::Ready { new_container, .. } = &run.state {
                // Healthy: the traffic moves now, before the next answer.
                let new_container = new_container.clone();
                let input = host
                    .strategy
                    .get()
                    .traffic_switch(&cx, &new_container, started)
                    .await;
                self.advance(ev, host, run, input);
                if matches!(run.state, HostState::Serving { .. }) {
                    self.checkpoint(Stage::Switched, host).await;
                }
                continue;
            }
            let probing = run.state.probing().cloned();
            let phase = run.state.phase();
            let probe = async {
                tokio::time::sleep_until(next_probe).await;
                let began = Instant::now();
                (began, host.strategy.get().probe(&cx, container).await)
            };
            let input = tokio::select! {
                biased;
                _ = cancel.cancelled() => Input::Cancelled,
                (logs, result) = &mut tidy, if tidying => {
                    tidying = false;
                    if let Some(logs) = logs {
                        run.logs = logs;
                    }
                    match result {
                        Ok(()) => Input::Tidied,
                        Err(e) => Input::TidyFailed(e),
                    }
                }
                exited = &mut exit, if watching && probing.is_some() => {
                    watching = false;
                    match exited {
                        Ok(exit) => Input::ContainerExited(exit),
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            Input::ContainerExited(ContainerExit::Gone)
                        }
                        Err(e) => {
                            ev.note(&scope, phase, format!("cannot watch the container: {}", e.report()));
                            Input::WatchLost(e)
                        }
                    }
                },
                seen = &mut strategy_watch, if strategy_watched => {
                    strategy_watched = false;
                    match seen {
                        Some(input) => input,
                        None => continue,
                    }
                }
                _ = tokio::time::sleep_until(deadline_at), if probing.is_some() => Input::DeadlinePassed,
                (began, result) = probe, if probing.is_some() => {
                    attempt += 1;
                    next_probe = match ramp.take() {
                        Some(step) if !result.is_healthy() && began + step < first_regular => {
                            ramp = Some(step * 2);
                            began + step
                        }
                        Some(_) if !result.is_healthy() => first_regular,
                        _ => began + policy.interval(),
                    };
                    let at = began.duration_since(started);
                    let mut detail = format!("probe {attempt}: {}", result.detail());
                    // Users on the release: the start period is over.
                    let serving = matches!(run.state, HostState::Serving { .. });
                    let forgiven = !serving && probing.as_ref().is_some_and(|p| p.in_start_period(at));
                    if !result.is_healthy() && forgiven {
                        detail.push_str(" (start period)");
                    }
                    run.last_probe = Some(result.detail().to_owned());
                    ev.emit(&scope, phase, EventKind::Probe { attempt, result: result.clone() }, detail);
                    match result {
                        ProbeResult::Healthy(_) => Input::ProbeHealthy { at },
                        ProbeResult::Unhealthy(reason) => Input::ProbeUnhealthy { at, reason },
                        ProbeResult::Starting(_) => Input::ProbeStarting { at },
                    }
                }
            };
            let healthy = matches!(input, Input::ProbeHealthy { .. });
            self.advance(ev, host, run, input);
            if healthy && !in_window && matches!(run.state, HostState::Serving { .. }) {
                in_window = true;
                self.checkpoint(Stage::StableWindow, host).await;
            }
        }
    }

    /// Put the previous release back on a host in `RollingBack` and verify
    /// it; ends in `RolledBack` or `RollbackFailed`.
    ///
    /// Only what stands between the failure and the previous release
    /// answering (freeing what the failed release holds, the start) runs
    /// before verification begins; the rest runs beside it.
    pub(crate) async fn restore_host(&self, ev: &Emitter, host: &HostTarget, run: &mut HostRun) {
        let HostState::RollingBack {
            failed_container,
            retained,
            traffic_moved,
            ..
        } = &run.state
        else {
            debug_assert!(false, "host {}: restore in {}", host.id, run.state);
            return;
        };
        let (failed_container, retained, traffic_moved) =
            (failed_container.clone(), retained.clone(), *traffic_moved);
        let cx = self.cx(Some(ev), host);
        let strategy = host.strategy.get();
        let released = match failed_container {
            Some(id) => strategy.release_failed(&cx, id).await,
            None => Ok(None),
        };
        let failed = match released {
            Ok(failed) => failed,
            Err(e) => return self.advance(ev, host, run, Input::RestoreFailed(e)),
        };
        self.checkpoint(Stage::RollingBack, host).await;
        let Some(retained) = retained else {
            let input = match &failed {
                Some(failed) => {
                    let (logs, cleared) = strategy.clear(&cx, failed).await;
                    run.logs = logs;
                    cleared.map_or_else(Input::RestoreFailed, |()| Input::Cleared)
                }
                None => Input::Cleared,
            };
            return self.advance(ev, host, run, input);
        };
        if let Err(e) = strategy
            .restart_previous(&cx, failed.as_ref(), &retained)
            .await
        {
            // Both containers stay as they are, stopped, for `recover` or a
            // human; the failed one's logs still go into the report.
            if let Some(failed) = failed.as_ref().and_then(Workload::container) {
                run.logs = self.failed_logs(ev, host, failed).await;
            }
            return self.advance(ev, host, run, Input::RestoreFailed(e));
        }
        let note = if traffic_moved {
            let took = run.failed_at.map(|t| t.elapsed()).unwrap_or_default();
            run.switch_back = Some(took);
            format!(
                "traffic switched back to {} {} ms after the failure; verifying it",
                named(&retained.container),
                took.as_millis()
            )
        } else {
            strategy.restarted_note(&retained)
        };
        ev.note(&Scope::Host(host.id.clone()), Phase::RollingBack, note);
        self.advance(
            ev,
            host,
            run,
            Input::Restarted(VerifyLimits::from(&self.health)),
        );
        debug_assert!(matches!(
            run.state,
            HostState::Restoring {
                check: RestoreCheck::Probing(_),
                ..
            }
        ));
        let tidy = strategy.tidy(&cx, failed.as_ref(), &retained);
        let id = retained.container.clone();
        self.watch(ev, host, run, &id, None, Some(tidy)).await;
    }

    /// The last lines the failed container wrote; a failure to read them is
    /// only noted.
    pub(crate) async fn failed_logs(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        id: &ContainerId,
    ) -> Vec<String> {
        match timed(
            self.timeouts.engine,
            format!("read the logs of {id}"),
            host.runtime.logs(id, super::strategy::LOG_LINES),
        )
        .await
        {
            Ok(lines) => lines,
            Err(e) => {
                ev.note(
                    &Scope::Host(host.id.clone()),
                    Phase::RollingBack,
                    e.report(),
                );
                Vec::new()
            }
        }
    }

    /// Keep the failed container's last lines, then remove it.
    pub(crate) async fn clear_failed(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        id: &ContainerId,
    ) -> (Vec<String>, Result<(), Error>) {
        let logs = self.failed_logs(ev, host, id).await;
        (logs, self.remove_gone(host, id).await)
    }

    /// Remove a container; one already gone counts as removed.
    pub(crate) async fn remove_gone(
        &self,
        host: &HostTarget,
        id: &ContainerId,
    ) -> Result<(), Error> {
        match timed(
            self.timeouts.engine,
            format!("remove container {id}"),
            host.runtime.remove(id),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A verified host keeps the new release: the previous one goes. A
    /// failure is noted; the next deploy removes the leftover.
    pub(crate) async fn retire_host(&self, ev: &Emitter, host: &HostTarget, run: &mut HostRun) {
        if let HostState::Verified {
            retained,
            new_container,
            ..
        } = &run.state
        {
            let (old, new) = (
                retained.as_ref().map(|r| r.container.clone()),
                new_container.clone(),
            );
            let cx = self.cx(Some(ev), host);
            let retired = host.strategy.get().retire(&cx, old.as_ref(), &new).await;
            if let Err(e) = retired {
                ev.note(&Scope::Host(host.id.clone()), Phase::Verified, e.report());
                return self.advance(ev, host, run, Input::RetireFailed(e));
            }
        }
        self.advance(ev, host, run, Input::Retired);
    }
}
