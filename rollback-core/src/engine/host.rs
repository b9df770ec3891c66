//! The effects on one host, each feeding its result to the state machine.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::emit::Emitter;
use super::{pause, timed, Deployer, HostTarget};
use crate::engine::CancellationToken;
use crate::error::{Error, ErrorKind};
use crate::event::{EventKind, Phase};
use crate::machine::{step, CapturedRelease, HostState, Input};
use crate::outcome::HostReport;
use crate::traits::ProbeResult;
use crate::types::{
    labels, retained_name, ContainerId, ContainerSpec, Digest, LockAttempt, LockInfo, Release, Tag,
};

/// Default time between SIGTERM and SIGKILL when the spec names none.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept from a failed container.
const LOG_LINES: usize = 20;
/// The first pause before probing again while a release has not answered yet.
const FIRST_RETRY: Duration = Duration::from_millis(25);

/// One host's progress through a deploy.
pub(crate) struct HostRun {
    pub(crate) index: usize,
    pub(crate) state: HostState,
    pub(crate) lock_taken: bool,
    pub(crate) lock_holder: Option<LockInfo>,
    /// The deploy began changing this host (capture onwards).
    pub(crate) started: bool,
    /// Retained container removed after promotion.
    pub(crate) done: bool,
    pub(crate) before: Option<Release>,
    pub(crate) previous_container: Option<ContainerId>,
    /// The failed release's container, left in place by `halt`.
    pub(crate) halted_container: Option<ContainerId>,
    pub(crate) logs: Vec<String>,
    pub(crate) last_probe: Option<String>,
    pub(crate) error: Option<String>,
}

impl HostRun {
    pub(crate) fn new(index: usize) -> Self {
        Self {
            index,
            state: HostState::Planned,
            lock_taken: false,
            lock_holder: None,
            started: false,
            done: false,
            before: None,
            previous_container: None,
            halted_container: None,
            logs: Vec::new(),
            last_probe: None,
            error: None,
        }
    }

    /// The host report, given the release being deployed.
    pub(crate) fn report(&self, host: &HostTarget, target: Option<&Release>) -> HostReport {
        let mut report = HostReport::untouched(host.id.clone());
        if !self.started && !matches!(self.state, HostState::Failed { .. }) {
            return report;
        }
        report.phase = if self.done {
            Phase::Done
        } else {
            self.state.phase()
        };
        report.before = self.before.clone();
        report.logs = self.logs.clone();
        report.last_probe = self.last_probe.clone();
        report.error = self.error.clone();
        match &self.state {
            HostState::Verified { new_container, .. } => {
                report.after = target.cloned();
                report.container = Some(new_container.clone());
            }
            HostState::RolledBack { restored, reason } => {
                report.after = restored.clone();
                report.container = self.previous_container.clone();
                if self.previous_container.is_none() {
                    report.error = Some(format!(
                        "{reason}; there was no previous release to restore, nothing runs"
                    ));
                } else {
                    report.error = Some(reason.clone());
                }
            }
            HostState::RollbackFailed { reason } => {
                if let Some(container) = &self.halted_container {
                    report.after = target.cloned();
                    report.container = Some(container.clone());
                }
                report.error = Some(reason.clone());
            }
            HostState::Failed { reason } => {
                report.after = self.before.clone();
                report.container = self.previous_container.clone();
                report.error = Some(reason.clone());
            }
            _ => {}
        }
        report
    }
}

fn describe(state: &HostState, app: &str) -> String {
    match state {
        HostState::Planned => "planned".into(),
        HostState::Locked => "deploy lock taken".into(),
        HostState::Captured { previous: None } => "no running release: first deploy".into(),
        HostState::Captured { previous: Some(p) } => format!(
            "running release {} in container {}",
            p.release
                .as_ref()
                .map(Release::display_name)
                .unwrap_or_else(|| "of unknown image".into()),
            p.container
        ),
        HostState::Pulled { .. } => "image present".into(),
        HostState::Switched {
            new_container,
            retained,
        } => match retained {
            Some(r) => format!(
                "started container {new_container}; previous container {} kept as {}",
                r.container,
                retained_name(app)
            ),
            None => format!("started container {new_container}"),
        },
        HostState::Verifying { new_container, .. } => {
            format!("verifying container {new_container}")
        }
        HostState::Verified { .. } => "new release verified healthy".into(),
        HostState::RollingBack { reason, .. } => format!("rolling back: {reason}"),
        HostState::RolledBack {
            restored: Some(r), ..
        } => format!("previous release {} restored and healthy", r.display_name()),
        HostState::RolledBack { restored: None, .. } => {
            "failed container removed; there was no previous release to restore".into()
        }
        HostState::RollbackFailed { reason } | HostState::Failed { reason } => reason.clone(),
    }
}

impl Deployer {
    /// Feed `input` to the host's machine and emit the transition.
    pub(crate) fn advance(&self, ev: &Emitter, host: &HostTarget, run: &mut HostRun, input: Input) {
        let before = run.state.phase();
        match step(run.state.clone(), input) {
            Ok(next) => {
                run.state = next;
                if run.state.phase() != before {
                    ev.transition(
                        Some(&host.id),
                        run.state.phase(),
                        describe(&run.state, &self.app.name),
                    );
                }
            }
            // The driver only feeds inputs valid in the current state; say so loudly if not.
            Err(err) => ev.note(Some(&host.id), before, err.to_string()),
        }
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
            host.runtime.acquire_lock(&lock),
        )
        .await;
        let input = match result {
            Ok(LockAttempt::Acquired) => {
                run.lock_taken = true;
                pause::point("locked", Some(&host.id)).await;
                Input::LockAcquired
            }
            Ok(LockAttempt::Held(holder)) => {
                run.lock_holder = Some(holder.clone());
                Input::LockHeld(holder)
            }
            Err(e) => Input::LockFailed(e.report()),
        };
        self.advance(ev, host, run, input);
    }

    /// Release the host's lock if this deploy took it.
    pub(crate) async fn unlock_host(&self, ev: &Emitter, host: &HostTarget, run: &mut HostRun) {
        if !run.lock_taken {
            return;
        }
        let result = timed(
            self.timeouts.engine,
            "release the deploy lock",
            host.runtime.release_lock(&self.app.name),
        )
        .await;
        match result {
            Ok(_) => run.lock_taken = false,
            Err(e) => ev.note(Some(&host.id), run.state.phase(), e.report()),
        }
    }

    /// Capture, pull, switch and verify; ends in `Verified`, `RollingBack` or `Failed`.
    pub(crate) async fn deploy_host(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        run: &mut HostRun,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) {
        run.started = true;
        if cancel.is_cancelled() {
            return self.advance(ev, host, run, Input::Cancelled);
        }
        let input = match self.capture(ev, host).await {
            Ok(previous) => {
                run.before = previous.as_ref().and_then(|p| p.release.clone());
                run.previous_container = previous.as_ref().map(|p| p.container.clone());
                Input::Captured(previous)
            }
            Err(e) => Input::CaptureFailed(e.report()),
        };
        self.advance(ev, host, run, input);
        if !matches!(run.state, HostState::Captured { .. }) {
            return;
        }
        pause::point("captured", Some(&host.id)).await;

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
        let admit = timed(
            self.timeouts.engine,
            format!("image {image}"),
            host.probe.admit(&image),
        );
        let input = tokio::select! {
            result = async { pull.await?; admit.await } => match result {
                Ok(()) => Input::Pulled,
                Err(e) => Input::PullFailed(e.report()),
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
        pause::point("pulled", Some(&host.id)).await;

        let previous = previous.clone();
        let input = match self
            .switch(host, previous.as_ref(), target, stable_before, cancel)
            .await
        {
            Ok(new_container) => Input::Switched { new_container },
            Err((new_container, reason)) => Input::SwitchFailed {
                new_container,
                reason,
            },
        };
        self.advance(ev, host, run, input);
        let HostState::Switched { new_container, .. } = &run.state else {
            return;
        };
        pause::point("switched", Some(&host.id)).await;
        let new_container = new_container.clone();
        let state = std::mem::replace(&mut run.state, HostState::Planned);
        let (state, last) = self
            .verify(ev, host, &new_container, cancel, state, true)
            .await;
        run.state = state;
        if last.is_some() {
            run.last_probe = last;
        }
    }

    /// The running release and its container; removes a leftover retained
    /// container only when the app container runs.
    async fn capture(
        &self,
        ev: &Emitter,
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
                    ev.note(
                        Some(&host.id),
                        Phase::Locked,
                        format!(
                            "removed container {} ({retained}) left by an earlier deploy",
                            leftover.id
                        ),
                    );
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
            container: c.id,
            release: c.release,
        }))
    }

    /// Stop and keep the old container, create and start the new one.
    /// On failure returns the new container, if it was created, and why.
    async fn switch(
        &self,
        host: &HostTarget,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Result<ContainerId, (Option<ContainerId>, String)> {
        let limit = self.timeouts.engine;
        let cancelled = |new: Option<ContainerId>| (new, "cancelled".to_owned());
        if let Some(previous) = previous {
            let stop = host.container.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
            timed(
                stop + self.timeouts.stop_grace,
                format!("stop container {}", previous.container),
                host.runtime.stop(&previous.container, stop),
            )
            .await
            .map_err(|e| (None, e.report()))?;
            if cancel.is_cancelled() {
                return Err(cancelled(None));
            }
            timed(
                limit,
                format!("rename container {}", previous.container),
                host.runtime
                    .rename(&previous.container, &retained_name(&self.app.name)),
            )
            .await
            .map_err(|e| (None, e.report()))?;
        }
        if cancel.is_cancelled() {
            return Err(cancelled(None));
        }
        let mut spec = ContainerSpec::new(
            self.app.name.as_str(),
            target.image(),
            host.container.clone(),
        );
        let replaced = previous.and_then(|p| p.release.as_ref());
        let release_labels = [
            (labels::MANAGED, Some("true".to_owned())),
            (labels::APP, Some(self.app.name.to_string())),
            (labels::REPOSITORY, Some(target.repository.to_string())),
            (labels::TAG, target.tag.as_ref().map(Tag::to_string)),
            (labels::DIGEST, Some(target.digest.to_string())),
            (labels::DEPLOYMENT, Some(self.deployment.to_string())),
            (
                labels::DEPLOYED_AT,
                Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
            ),
            (labels::STABLE_BEFORE, stable_before.map(|d| d.to_string())),
            (
                labels::REPLACED_DIGEST,
                replaced.map(|r| r.digest.to_string()),
            ),
            (
                labels::REPLACED_TAG,
                replaced.and_then(|r| r.tag.as_ref().map(Tag::to_string)),
            ),
        ];
        for (key, value) in release_labels {
            if let Some(value) = value {
                spec.labels.insert(key.to_owned(), value);
            }
        }
        let id = timed(
            limit,
            format!("create container {}", self.app.name),
            host.runtime.create(&spec),
        )
        .await
        .map_err(|e| (None, e.report()))?;
        if cancel.is_cancelled() {
            return Err(cancelled(Some(id)));
        }
        timed(
            limit,
            format!("start container {id}"),
            host.runtime.start(&id),
        )
        .await
        .map_err(|e| (Some(id.clone()), e.report()))?;
        Ok(id)
    }

    /// Probe `container` until the machine leaves `Verifying`.
    ///
    /// `state` must be `Switched`; returns the final state (`Verified` or
    /// `RollingBack`) and the last probe answer. When `emit_transitions` is
    /// false (verifying a restored release), only probe events are sent.
    pub(crate) async fn verify(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        container: &ContainerId,
        cancel: &CancellationToken,
        state: HostState,
        emit_transitions: bool,
    ) -> (HostState, Option<String>) {
        let policy = self.health;
        let started = Instant::now();
        let deadline_at = started + policy.deadline();
        let mut state = state;
        let mut last_probe = None;
        let phase_of = |s: &HostState| {
            if emit_transitions {
                s.phase()
            } else {
                Phase::RollingBack
            }
        };
        let feed = |state: HostState, input: Input| -> HostState {
            let phase = state.phase();
            match step(state.clone(), input) {
                Ok(next) => {
                    if emit_transitions && next.phase() != phase {
                        ev.transition(
                            Some(&host.id),
                            next.phase(),
                            describe(&next, &self.app.name),
                        );
                    }
                    next
                }
                Err(err) => {
                    ev.note(Some(&host.id), phase, err.to_string());
                    state
                }
            }
        };
        state = feed(
            state,
            Input::VerifyStarted {
                deadline: policy.deadline(),
                start_period: policy.start_period(),
            },
        );
        if emit_transitions {
            pause::point("verifying", Some(&host.id)).await;
            ev.note(
                Some(&host.id),
                Phase::Verifying,
                format!(
                    "probing {} every {} (deadline {}, stable for {})",
                    host.probe.describe(),
                    humantime::format_duration(policy.interval()),
                    humantime::format_duration(policy.deadline()),
                    humantime::format_duration(policy.stable_for())
                ),
            );
        }
        let mut exit = host.runtime.wait_exit(container);
        let mut watching = true;
        // Why the engine stopped answering, for the failure reason.
        let mut unreachable: Option<String> = None;
        let mut next_probe = started;
        // Within the first interval, until a healthy answer, a failed attempt
        // is retried after a pause that starts short and doubles: a release
        // usually answers moments after its start, and waiting a whole
        // interval for it would add up to one to every switch and restore.
        // Later probes keep the interval's cadence from the start.
        let mut ramp = Some(FIRST_RETRY);
        let first_regular = started + policy.interval();
        let mut attempt: u32 = 0;
        while matches!(state, HostState::Verifying { .. }) {
            let probe = async {
                tokio::time::sleep_until(next_probe).await;
                let began = Instant::now();
                let t = policy.timeout();
                let result = tokio::time::timeout(t, host.probe.check(container, t))
                    .await
                    .unwrap_or_else(|_| {
                        ProbeResult::Unhealthy(format!(
                            "no answer within {}",
                            humantime::format_duration(t)
                        ))
                    });
                (began, result)
            };
            let input = tokio::select! {
                biased;
                _ = cancel.cancelled() => Input::Cancelled,
                exited = &mut exit, if watching => match exited {
                    Ok(exit) => Input::ContainerExited(exit.to_string()),
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        Input::ContainerExited("container disappeared".into())
                    }
                    Err(e) => {
                        // Probes still decide; only crash detection is lost.
                        watching = false;
                        if e.kind() == ErrorKind::Unavailable {
                            unreachable = Some(e.report());
                        }
                        ev.note(Some(&host.id), phase_of(&state), format!("cannot watch the container: {}", e.report()));
                        continue;
                    }
                },
                _ = tokio::time::sleep_until(deadline_at) => Input::DeadlinePassed,
                (began, result) = probe => {
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
                    if !result.is_healthy() && at < policy.start_period() {
                        detail.push_str(" (start period)");
                    }
                    last_probe = Some(result.detail().to_owned());
                    ev.emit(Some(&host.id), phase_of(&state), EventKind::Probe { attempt, result: result.clone() }, detail);
                    match result {
                        ProbeResult::Healthy(_) => Input::ProbeHealthy { at },
                        ProbeResult::Unhealthy(reason) => Input::ProbeUnhealthy { at, reason },
                        ProbeResult::Starting(_) => Input::ProbeStarting { at },
                    }
                }
            };
            let healthy_at = match &input {
                Input::ProbeHealthy { at } => Some(*at),
                _ => None,
            };
            state = feed(state, input);
            if let (
                Some(at),
                HostState::Verifying {
                    since_first_ok: Some(first),
                    ..
                },
            ) = (healthy_at, &state)
            {
                if at.saturating_sub(*first) >= policy.stable_for() {
                    state = feed(state, Input::StableReached);
                }
            }
        }
        if let (HostState::RollingBack { reason, .. }, Some(why)) = (&mut state, unreachable) {
            reason.push_str(&format!(" (the engine stopped answering: {why})"));
        }
        (state, last_probe)
    }

    /// Put the previous release back on a host in `RollingBack` and verify it.
    pub(crate) async fn restore_host(&self, ev: &Emitter, host: &HostTarget, run: &mut HostRun) {
        let HostState::RollingBack {
            failed_container,
            retained,
            ..
        } = &run.state
        else {
            return;
        };
        let (failed_container, retained) = (failed_container.clone(), retained.clone());
        let result = self
            .restore(
                ev,
                host,
                failed_container.as_ref(),
                retained.as_ref(),
                Some(run),
            )
            .await;
        let input = match result {
            Ok(()) => Input::RestoreOk(retained.and_then(|r| r.release)),
            Err(why) => Input::RestoreFailed(why),
        };
        self.advance(ev, host, run, input);
    }

    /// Stop the failed container, start the retained one and verify it;
    /// meanwhile keep the failed container's logs, remove it and give the
    /// retained container the app name back.
    ///
    /// Only what stands between the failure and the previous release
    /// answering (the stop that frees the port, the start) runs before
    /// verification begins; the rest runs beside it.
    pub(crate) async fn restore(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        failed: Option<&ContainerId>,
        retained: Option<&CapturedRelease>,
        run: Option<&mut HostRun>,
    ) -> Result<(), String> {
        let limit = self.timeouts.engine;
        let rt = &host.runtime;
        // The failed container, while it exists.
        let mut failed = failed;
        if let Some(id) = failed {
            let stop = host.container.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
            if let Err(e) = timed(
                stop + self.timeouts.stop_grace,
                format!("stop container {id}"),
                rt.stop(id, stop),
            )
            .await
            {
                ev.note(Some(&host.id), Phase::RollingBack, e.report());
                // Not known to be stopped: it may still hold the port, so it
                // goes now (a forced remove), logs or not.
                self.remove_gone(host, id).await?;
                failed = None;
            }
        }
        pause::point("rolling_back", Some(&host.id)).await;
        let Some(retained) = retained else {
            if let Some(id) = failed {
                let (logs, removed) = self.clear_failed(ev, host, id).await;
                if let Some(run) = run {
                    run.logs = logs;
                }
                removed?;
            }
            return Ok(());
        };
        let id = &retained.container;
        // A container created under the app name whose id never reached us
        // (a lost answer) could hold the port and blocks the rename back.
        let current = timed(limit, "read the app container", rt.current(&self.app.name))
            .await
            .map_err(|e| e.report())?;
        if let Some(c) = current {
            if &c.id != id && Some(&c.id) != failed {
                self.remove_gone(host, &c.id).await?;
            }
        }
        if let Err(e) = timed(limit, format!("start container {id}"), rt.start(id)).await {
            // Both containers stay as they are, stopped, for `recover` or a
            // human; the failed one's logs still go into the report.
            if let (Some(failed), Some(run)) = (failed, run) {
                run.logs = self.failed_logs(ev, host, failed).await;
            }
            return Err(e.report());
        }
        ev.note(
            Some(&host.id),
            Phase::RollingBack,
            format!("previous container {id} started again; verifying it"),
        );
        let tidy = async {
            let (logs, removed) = match failed {
                Some(failed) => {
                    let (logs, removed) = self.clear_failed(ev, host, failed).await;
                    (Some(logs), removed)
                }
                None => (None, Ok(())),
            };
            let renamed = async {
                removed?;
                let info = timed(limit, format!("inspect container {id}"), rt.inspect(id))
                    .await
                    .map_err(|e| e.report())?;
                if info.name != self.app.name {
                    timed(
                        limit,
                        format!("rename container {id}"),
                        rt.rename(id, &self.app.name),
                    )
                    .await
                    .map_err(|e| e.report())?;
                }
                Ok::<_, String>(())
            };
            (logs, renamed.await)
        };
        // Restoring must finish even when the deploy was cancelled.
        let never = CancellationToken::new();
        let switched = HostState::Switched {
            new_container: id.clone(),
            retained: None,
        };
        let verify = self.verify(ev, host, id, &never, switched, false);
        let ((logs, tidied), (state, last)) = tokio::join!(tidy, verify);
        if let Some(run) = run {
            if last.is_some() {
                run.last_probe = last;
            }
            if let Some(logs) = logs {
                run.logs = logs;
            }
        }
        match state {
            HostState::Verified { .. } => tidied,
            HostState::RollingBack { reason, .. } => {
                Err(format!("the restored release is not healthy: {reason}"))
            }
            other => Err(format!("restored release ended verification in {other}")),
        }
    }

    /// The last lines the failed container wrote; a failure to read them is
    /// only noted.
    async fn failed_logs(&self, ev: &Emitter, host: &HostTarget, id: &ContainerId) -> Vec<String> {
        match timed(
            self.timeouts.engine,
            format!("read the logs of {id}"),
            host.runtime.logs(id, LOG_LINES),
        )
        .await
        {
            Ok(lines) => lines,
            Err(e) => {
                ev.note(Some(&host.id), Phase::RollingBack, e.report());
                Vec::new()
            }
        }
    }

    /// Keep the failed container's last lines, then remove it.
    async fn clear_failed(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        id: &ContainerId,
    ) -> (Vec<String>, Result<(), String>) {
        let logs = self.failed_logs(ev, host, id).await;
        (logs, self.remove_gone(host, id).await)
    }

    /// Remove a container; one already gone counts as removed.
    async fn remove_gone(&self, host: &HostTarget, id: &ContainerId) -> Result<(), String> {
        match timed(
            self.timeouts.engine,
            format!("remove container {id}"),
            host.runtime.remove(id),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.report()),
        }
    }

    /// After promotion: the old container is no longer needed.
    pub(crate) async fn remove_retained(&self, ev: &Emitter, host: &HostTarget, run: &mut HostRun) {
        if let HostState::Verified {
            retained: Some(r), ..
        } = &run.state
        {
            let id = r.container.clone();
            if let Err(e) = self.remove_gone(host, &id).await {
                ev.note(Some(&host.id), Phase::Verified, e);
                return;
            }
        }
        run.done = true;
        ev.transition(Some(&host.id), Phase::Done, "previous container removed");
    }
}
