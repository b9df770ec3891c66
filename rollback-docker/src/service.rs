//! The Swarm strategy: a deploy updates a service on a manager, and the
//! machine's workload is the service at a spec version, not a container.
//!
//! | effect | Swarm service |
//! |---|---|
//! | capture | the service's spec: its image, version index and release labels; an update left unfinished (`updating`, `paused`, a rollback) stops the deploy with nothing changed |
//! | switch | create the service (first deploy), or update it with the image pinned by digest, start-first, `FailureAction: pause`, after checking that nobody changed it since the capture |
//! | probe | every running task of the new spec, directly on its overlay address, from a probe container on the service's network, with the `[health]` rules |
//! | failure watch | a task of the new spec that failed, was rejected or exited; Swarm pausing the update; the service changed or removed by someone else |
//! | restore | update back to the previous spec (`rollback=previous`) when the service still runs what this deploy wrote; otherwise nothing is overwritten and the restore fails with the reason |
//! | retire | nothing: Swarm keeps the previous spec itself |

use std::time::Duration;

use async_trait::async_trait;
use rollback_core::event::Phase;
use std::collections::BTreeMap;

use rollback_core::adoption::{adopt_service, ServiceObserved};
use rollback_core::machine::{CapturedRelease, Input};
use rollback_core::probe::judge_json;
use rollback_core::types::labels;
use rollback_core::{
    CancellationToken, ContainerExit, ContainerId, ContainerInfo, ContainerState, DeployStrategy,
    DeploymentId, Digest, Error, Interrupted, LockInfo, ProbeResult, Release, StrategyCx, Workload,
};

use crate::convert::{release_from_labels, release_from_reference};
use crate::swarm::{failures, ServiceState, Swarm, TaskInfo, TaskTemplate};

/// Time between two reads of the tasks while a release is watched.
const WATCH_EVERY: Duration = Duration::from_millis(300);

/// What `[health]` asks of each task's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskHealth {
    /// The path probed on each task (`/health`).
    pub path: String,
    /// The status expected instead of any 2xx.
    pub expect_status: Option<u16>,
    /// A JSON pointer into the body and the value expected there.
    pub expect_json: Option<(String, String)>,
}

/// A service on a Swarm manager, deployed by updating its spec; see the
/// module's table.
#[derive(Debug, Clone)]
pub struct SwarmStrategy {
    swarm: Swarm,
    service: String,
    template: TaskTemplate,
    probe_image: String,
    health: TaskHealth,
}

impl SwarmStrategy {
    /// The service `service` on the manager `swarm`, created from
    /// `template` when missing (its environment, command and labels come
    /// from the host's container template at each deploy), its tasks probed
    /// from containers of `probe_image` (a busybox `sh`, `timeout` and
    /// `wget` are enough) as `health` says.
    pub fn new(
        swarm: Swarm,
        service: impl Into<String>,
        template: TaskTemplate,
        probe_image: impl Into<String>,
        health: TaskHealth,
    ) -> Self {
        Self {
            swarm,
            service: service.into(),
            template,
            probe_image: probe_image.into(),
            health,
        }
    }

    /// What each task is asked, for plans and `status`.
    pub fn describe_probe(&self) -> String {
        format!(
            "GET :{}{} on each task of service {}",
            self.template.port, self.health.path, self.service
        )
    }

    /// The manager's adapter.
    pub fn swarm(&self) -> &Swarm {
        &self.swarm
    }

    /// The template of one deploy: `[swarm]`'s, with the environment,
    /// command and labels of the release's container spec.
    fn template_for(
        &self,
        cx: &StrategyCx<'_>,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
    ) -> TaskTemplate {
        let spec = cx.release_spec(&self.service, previous, target, stable_before);
        TaskTemplate {
            env: spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose()))
                .collect(),
            labels: spec.labels.clone(),
            command: (!spec.command.is_empty()).then(|| spec.command.clone()),
            stop_grace: spec.stop_timeout,
            ..self.template.clone()
        }
    }

    async fn read(&self, cx: &StrategyCx<'_>) -> Result<Option<ServiceState>, Error> {
        limited(
            cx.engine_timeout(),
            &self.swarm,
            self.swarm.service(&self.service),
        )
        .await
    }

    /// The service as read now, which must still run `image`: anything
    /// else was written by someone else.
    async fn still_running(
        &self,
        cx: &StrategyCx<'_>,
        image: &str,
    ) -> Result<ServiceState, ContainerExit> {
        let changed = |reason: String| ContainerExit::Failed { reason };
        match self.read(cx).await {
            Ok(Some(st)) if same_image(&st.image, image) => Ok(st),
            Ok(Some(st)) => Err(changed(format!(
                "service {} was changed by someone else: it runs {} instead of {image}",
                self.service, st.image
            ))),
            Ok(None) => Err(changed(format!(
                "service {} was removed by someone else",
                self.service
            ))),
            Err(e) => Err(changed(e.report())),
        }
    }

    /// The tasks of `image` started by the service's last update (or
    /// since it was created): older ones, of an earlier deploy of the same
    /// image, are history.
    async fn current_tasks(&self, st: &ServiceState, image: &str) -> Result<Vec<TaskInfo>, Error> {
        let tasks = self.swarm.tasks_of(st, Some(image)).await?;
        Ok(match st.update_started {
            Some(since) => tasks
                .into_iter()
                .filter(|t| t.created.is_none_or(|c| c >= since))
                .collect(),
            None => tasks,
        })
    }

    fn replicas(st: &ServiceState) -> usize {
        st.spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .unwrap_or(1)
            .max(0) as usize
    }

    fn judge(&self, answer: &crate::swarm::TaskProbe) -> ProbeResult {
        let Some(status) = answer.status else {
            return ProbeResult::Unhealthy(
                answer
                    .error
                    .clone()
                    .unwrap_or_else(|| "no answer".to_owned()),
            );
        };
        let ok = match self.health.expect_status {
            Some(expected) => status == expected,
            None => (200..300).contains(&status),
        };
        if !ok {
            return ProbeResult::Unhealthy(format!("status {status}"));
        }
        match &self.health.expect_json {
            Some((pointer, expected)) => judge_json(
                &format!("status {status}"),
                answer.body.as_bytes(),
                pointer,
                expected,
            ),
            None => ProbeResult::Healthy(format!("status {status}")),
        }
    }

    /// One probe of every task of `image`.
    async fn probe_tasks(&self, cx: &StrategyCx<'_>, image: &str) -> ProbeResult {
        let st = match self.still_running(cx, image).await {
            Ok(st) => st,
            Err(why) => return ProbeResult::Unhealthy(why.to_string()),
        };
        // Every task of the image that runs: a restored spec's tasks may
        // have run all along (start-first never stopped them).
        let tasks = async {
            let tasks = self.swarm.tasks_of(&st, Some(image)).await?;
            self.swarm.with_addresses(&st, tasks).await
        };
        let tasks = match tasks.await {
            Ok(tasks) => tasks,
            Err(e) => return ProbeResult::Unhealthy(e.report()),
        };
        let wanted = Self::replicas(&st);
        // A task whose HEALTHCHECK has not passed yet is `starting`: asked
        // directly all the same, so a bad answer is seen (and named) at once.
        let running: Vec<&TaskInfo> = tasks
            .iter()
            .filter(|t| {
                t.desired_state == "running"
                    && matches!(t.state.as_str(), "running" | "starting")
                    && t.address.is_some()
            })
            .collect();
        if running.is_empty() {
            return ProbeResult::Starting(format!("0 of {wanted} tasks running"));
        }
        let network = &self.template.network;
        let limit = cx.health().timeout();
        let mut answers = Vec::with_capacity(running.len());
        for task in running {
            let address = task.address.as_deref().unwrap_or_default();
            let answer = self
                .swarm
                .probe(
                    network,
                    &self.probe_image,
                    address,
                    self.template.port,
                    &self.health.path,
                    limit,
                )
                .await;
            let result = match answer {
                Ok(answer) => self.judge(&answer),
                Err(e) => ProbeResult::Unhealthy(e.report()),
            };
            let slot = task.slot.map(|s| format!("slot {s}")).unwrap_or_default();
            answers.push(TaskAnswer {
                task: format!("task {slot} at {address}"),
                bound: task.state == "running",
                result,
            });
        }
        verdict(wanted, &answers)
    }

    /// Wait until the tasks of `image` fail, Swarm pauses, or the service
    /// is changed by someone else.
    async fn watch_tasks(&self, cx: &StrategyCx<'_>, image: &str) -> ContainerExit {
        loop {
            let st = match self.still_running(cx, image).await {
                Ok(st) => st,
                Err(why) => return why,
            };
            match self.current_tasks(&st, image).await {
                Ok(tasks) => {
                    let failed = failures(&tasks);
                    if !failed.is_empty() {
                        return ContainerExit::Failed {
                            reason: format!("service {}: {}", self.service, failed.join("; ")),
                        };
                    }
                }
                Err(e) => cx.note(
                    Phase::Verifying,
                    format!("cannot read the tasks: {}", e.report()),
                ),
            }
            // Swarm's update state is left out: it pauses on a task failure,
            // seen above with its exit code; and when rollback sends the
            // service back before Swarm's own updater saw the failure, that
            // updater still pauses, and marks the rollback `rollback_paused`
            // with a message about the failed release's task, while the
            // restored tasks run. The restored tasks' own failures and
            // probes decide.
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    fn image_of(workload: &Workload) -> Result<&str, Error> {
        match workload {
            Workload::Service { image, .. } => Ok(image),
            other => Err(Error::invalid_input(format!("{other} is not a service"))),
        }
    }
}

/// The image reference a service runs for `release`: its tag (for people
/// reading `docker service ls`) and its digest (what runs).
fn pinned(release: &Release) -> String {
    match &release.tag {
        Some(tag) => format!("{}:{tag}@{}", release.repository, release.digest),
        None => format!("{}@{}", release.repository, release.digest),
    }
}

/// What a restore does, from the image the service runs now, the one it
/// ran before the deploy and the one this deploy wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WayBack {
    /// It runs the previous release already: the update never took, or
    /// was undone.
    There,
    /// It runs what this deploy wrote: back to the previous spec.
    RollBack,
    /// It runs something else, written by someone else: left as it is.
    Theirs,
}

fn way_back(current: &str, before: &str, ours: Option<&str>) -> WayBack {
    if same_image(current, before) {
        WayBack::There
    } else if ours.is_some_and(|ours| same_image(ours, current)) {
        WayBack::RollBack
    } else {
        WayBack::Theirs
    }
}

/// One task's answer to a probe.
#[derive(Debug, Clone)]
struct TaskAnswer {
    /// `task slot N at ADDRESS`.
    task: String,
    /// Swarm bound it to the service (its HEALTHCHECK passed): it takes
    /// requests.
    bound: bool,
    result: ProbeResult,
}

/// The service's health from its tasks' answers: unhealthy when a task
/// that takes requests answers badly; healthy once as many tasks as the
/// service wants answer well (tasks beyond, a start-first update's or
/// rollback's extra one, may still be starting; an update of
/// `parallelism` tasks at a time starts the rest once these pass);
/// starting otherwise. A bad answer from a task Swarm has not bound yet is
/// not a verdict: its HEALTHCHECK or its exit decides, and the watch sees
/// that.
fn verdict(wanted: usize, answers: &[TaskAnswer]) -> ProbeResult {
    let mut healthy = Vec::new();
    let mut waiting = Vec::new();
    for a in answers {
        match &a.result {
            ProbeResult::Healthy(d) => healthy.push(format!("{} {d}", a.task)),
            ProbeResult::Unhealthy(d) if a.bound => {
                return ProbeResult::Unhealthy(format!("{}: {d}", a.task))
            }
            ProbeResult::Unhealthy(d) | ProbeResult::Starting(d) => {
                let starting = if a.bound { "" } else { " (starting)" };
                waiting.push(format!("{}{starting}: {d}", a.task))
            }
        }
    }
    if healthy.is_empty() && waiting.is_empty() {
        return ProbeResult::Starting(format!("0 of {wanted} tasks running"));
    }
    if healthy.len() < wanted {
        return ProbeResult::Starting(format!(
            "{} of {wanted} tasks healthy ({}){}",
            healthy.len(),
            healthy.join(", "),
            waiting.iter().map(|w| format!("; {w}")).collect::<String>()
        ));
    }
    ProbeResult::Healthy(format!(
        "{} tasks healthy ({})",
        healthy.len(),
        healthy.join(", ")
    ))
}

/// Whether two image references name the same content: the same
/// reference, or the same pinned digest.
fn same_image(a: &str, b: &str) -> bool {
    let digest = |r: &str| r.split_once('@').map(|(_, d)| d.to_owned());
    a == b || (digest(a).is_some() && digest(a) == digest(b))
}

fn spec_labels(st: &ServiceState) -> BTreeMap<String, String> {
    st.spec
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The release the spec's labels say this deploy replaced, as the
/// workload that ran it: what `rollback=previous` goes back to.
fn replaced_of(st: &ServiceState, labels: &BTreeMap<String, String>) -> Option<CapturedRelease> {
    let repository = labels.get(labels::REPOSITORY)?.parse().ok()?;
    let digest = labels.get(labels::REPLACED_DIGEST)?.parse().ok()?;
    let tag = labels
        .get(labels::REPLACED_TAG)
        .and_then(|t| t.parse().ok());
    let release = Release::new(repository, digest).with_tag(tag);
    Some(CapturedRelease {
        container: Workload::service(&st.name, 0, pinned(&release)),
        release: Some(release),
    })
}

/// A service as a container shows: named as the service, its spec's image
/// as the image, its spec's labels and release. Swarm keeps its tasks
/// running, so it reads as running.
fn service_view(st: &ServiceState) -> ContainerInfo {
    ContainerInfo {
        id: ContainerId(st.id.clone()),
        name: st.name.clone(),
        image_id: st.image.clone(),
        release: release_of(st),
        labels: spec_labels(st),
        state: ContainerState::Running { health: None },
        restart_count: 0,
        started_at: None,
    }
}

/// The release a service runs: its labels when they name the image it
/// runs, else the digest in its image reference.
fn release_of(st: &ServiceState) -> Option<Release> {
    let labels = st
        .spec
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    release_from_labels(&labels)
        .filter(|r| st.digest.as_deref() == Some(r.digest.as_str()))
        .or_else(|| release_from_reference(&st.image))
}

async fn limited<T>(
    limit: Duration,
    swarm: &Swarm,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(Error::timeout(format!(
            "the manager {} did not answer within {}",
            swarm.url(),
            humantime::format_duration(limit)
        )))
    })
}

#[async_trait]
impl DeployStrategy for SwarmStrategy {
    fn describe(&self) -> String {
        format!("swarm service {} on {}", self.service, self.swarm.url())
    }

    fn plan(
        &self,
        cx: &StrategyCx<'_>,
        _current: Option<&ContainerInfo>,
        release: &Release,
    ) -> Vec<String> {
        vec![
            format!(
                "update service {} to {} (start-first, {} task(s) at once, Swarm's failure action: pause), or create it with {} replica(s) on network {}",
                self.service,
                release.display_name(),
                self.template.parallelism.max(1),
                self.template.replicas,
                self.template.network
            ),
            format!(
                "probe every new task on network {} at port {}{} (deadline {}, stable for {})",
                self.template.network,
                self.template.port,
                self.health.path,
                humantime::format_duration(cx.health().deadline()),
                humantime::format_duration(cx.health().stable_for())
            ),
            "on failure roll the service back to its previous spec and verify the restored tasks"
                .to_owned(),
        ]
    }

    async fn capture(&self, cx: &StrategyCx<'_>) -> Result<Option<CapturedRelease>, Error> {
        let Some(st) = self.read(cx).await? else {
            return Ok(None);
        };
        // `rollback_paused` is not refused: Swarm marks a rollback so when
        // rollback sent it before Swarm's own updater saw the failure, and
        // the previous spec runs.
        if let Some(state @ ("updating" | "paused" | "rollback_started")) =
            st.update_state.as_deref()
        {
            return Err(Error::conflict(format!(
                "service {} on {} is in update state {state} ({}): an update has not finished; \
                 run `rollback recover` first",
                self.service,
                self.swarm.url(),
                st.update_message.as_deref().unwrap_or("no message")
            )));
        }
        Ok(Some(CapturedRelease {
            release: release_of(&st),
            container: Workload::service(&st.name, st.version, &st.image),
        }))
    }

    async fn switch(
        &self,
        cx: &StrategyCx<'_>,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Input {
        let failed = |reason| Input::SwitchFailed {
            new_container: None,
            reason,
        };
        if cancel.is_cancelled() {
            return failed(Error::cancelled());
        }
        let image = pinned(target);
        let template = self.template_for(cx, previous, target, stable_before);
        let limit = cx.health().deadline() + cx.engine_timeout();
        let written = match previous {
            None => {
                limited(
                    limit,
                    &self.swarm,
                    self.swarm.create(&self.service, &image, &template),
                )
                .await
            }
            Some(previous) => {
                let before = match Self::image_of(&previous.container) {
                    Ok(image) => image,
                    Err(e) => return failed(e),
                };
                let current = match self.still_running(cx, before).await {
                    Ok(st) => st,
                    Err(why) => {
                        return failed(Error::conflict(format!("{why}; nothing was overwritten")))
                    }
                };
                limited(
                    limit,
                    &self.swarm,
                    self.swarm.deploy(&current, &image, &template),
                )
                .await
            }
        };
        match written {
            Ok(st) => Input::Switched {
                new_container: Workload::service(&st.name, st.version, &st.image),
            },
            Err(e) => failed(e),
        }
    }

    async fn probe(&self, cx: &StrategyCx<'_>, workload: &Workload) -> ProbeResult {
        match Self::image_of(workload) {
            Ok(image) => self.probe_tasks(cx, image).await,
            Err(e) => ProbeResult::Unhealthy(e.report()),
        }
    }

    async fn wait_exit(
        &self,
        cx: &StrategyCx<'_>,
        workload: &Workload,
    ) -> Result<ContainerExit, Error> {
        Ok(self.watch_tasks(cx, Self::image_of(workload)?).await)
    }

    /// Its tasks go when the service goes back.
    async fn release_failed(
        &self,
        _cx: &StrategyCx<'_>,
        failed: Workload,
    ) -> Result<Option<Workload>, Error> {
        Ok(Some(failed))
    }

    async fn restart_previous(
        &self,
        cx: &StrategyCx<'_>,
        failed: Option<&Workload>,
        retained: &CapturedRelease,
    ) -> Result<(), Error> {
        let before = Self::image_of(&retained.container)?;
        let current = self.read(cx).await?.ok_or_else(|| {
            Error::conflict(format!(
                "service {} was removed by someone else; nothing to roll back",
                self.service
            ))
        })?;
        let ours = failed.and_then(|f| Self::image_of(f).ok());
        match way_back(&current.image, before, ours) {
            WayBack::There => return Ok(()),
            WayBack::Theirs => {
                return Err(Error::conflict(format!(
                    "service {} was changed by someone else: it runs {}, neither this deploy's release nor the previous one {before}; nothing was overwritten",
                    self.service, current.image
                )))
            }
            WayBack::RollBack => {}
        }
        let limit = cx.health().deadline() + cx.engine_timeout();
        let restored = limited(limit, &self.swarm, self.swarm.rollback(&current)).await?;
        if !same_image(&restored.image, before) {
            return Err(Error::conflict(format!(
                "service {}'s previous spec runs {}, not {before} as captured: someone else updated it meanwhile",
                self.service, restored.image
            )));
        }
        Ok(())
    }

    fn restarted_note(&self, retained: &CapturedRelease) -> String {
        format!(
            "service {} rolled back to its previous spec ({}); verifying its tasks",
            self.service,
            retained
                .release
                .as_ref()
                .map(Release::display_name)
                .unwrap_or_else(|| retained.container.to_string())
        )
    }

    /// Swarm keeps the failed tasks in the service's history, with their
    /// exit codes; nothing to clean up.
    async fn tidy(
        &self,
        _cx: &StrategyCx<'_>,
        _failed: Option<&Workload>,
        _retained: &CapturedRelease,
    ) -> (Option<Vec<String>>, Result<(), Error>) {
        (None, Ok(()))
    }

    /// A first deploy that failed: the service it created goes.
    async fn clear(
        &self,
        cx: &StrategyCx<'_>,
        failed: &Workload,
    ) -> (Vec<String>, Result<(), Error>) {
        let removed = async {
            let image = Self::image_of(failed)?;
            match self.read(cx).await? {
                Some(st) if !same_image(&st.image, image) => Err(Error::conflict(format!(
                    "service {} was changed by someone else (it runs {}); left as it is",
                    self.service, st.image
                ))),
                Some(_) => limited(
                    cx.engine_timeout(),
                    &self.swarm,
                    self.swarm.remove(&self.service),
                )
                .await
                .map(drop),
                None => Ok(()),
            }
        };
        (Vec::new(), removed.await)
    }

    async fn interrupted(
        &self,
        cx: &StrategyCx<'_>,
        lock: Option<&LockInfo>,
    ) -> Result<Option<Interrupted>, Error> {
        let Some(st) = self.read(cx).await? else {
            return Ok(Some(Interrupted::default()));
        };
        let labels = spec_labels(&st);
        let running = CapturedRelease {
            container: Workload::service(&st.name, st.version, &st.image),
            release: release_of(&st),
        };
        let replaced = replaced_of(&st, &labels);
        let deployment = labels.get(labels::DEPLOYMENT).cloned().map(DeploymentId);
        let seen = ServiceObserved {
            current: &running.container,
            deployment: deployment.as_ref(),
            replaced: replaced.as_ref(),
            running: &running,
            update_state: st.update_state.as_deref(),
            update_message: st.update_message.as_deref(),
            update_started: st.update_started,
            lock,
        };
        let adoption = adopt_service(&seen);
        // What recover promotes from: the spec's labels, as a container's.
        Ok(Some(Interrupted::new(adoption, Some(service_view(&st)))))
    }

    async fn running(&self, cx: &StrategyCx<'_>) -> Result<Option<ContainerInfo>, Error> {
        Ok(self.read(cx).await?.map(|st| service_view(&st)))
    }

    /// The view's image id is the image the spec runs.
    fn workload_of(&self, running: &ContainerInfo) -> Workload {
        Workload::service(&self.service, 0, &running.image_id)
    }

    /// Swarm keeps the previous spec itself.
    async fn retire(
        &self,
        _cx: &StrategyCx<'_>,
        _retained: Option<&Workload>,
        _new: &Workload,
    ) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::TaskProbe;

    fn strategy(health: TaskHealth) -> SwarmStrategy {
        let swarm = Swarm::from_docker_for_tests();
        SwarmStrategy::new(swarm, "shop", TaskTemplate::default(), "probe", health)
    }

    fn answer(status: Option<u16>, body: &str) -> TaskProbe {
        TaskProbe {
            status,
            body: body.to_owned(),
            error: status.is_none().then(|| "connection refused".to_owned()),
        }
    }

    #[test]
    fn a_task_answer_is_judged_by_the_health_rules() {
        let any = strategy(TaskHealth::default());
        assert!(any.judge(&answer(Some(204), "")).is_healthy());
        assert!(!any.judge(&answer(Some(503), "")).is_healthy());
        assert!(!any.judge(&answer(None, "")).is_healthy());
        let json = strategy(TaskHealth {
            path: "/health".into(),
            expect_status: Some(200),
            expect_json: Some(("/status".into(), "UP".into())),
        });
        assert!(json
            .judge(&answer(Some(200), r#"{"status":"UP"}"#))
            .is_healthy());
        let down = json.judge(&answer(Some(200), r#"{"status":"DOWN"}"#));
        assert!(!down.is_healthy(), "{down:?}");
        assert!(!json
            .judge(&answer(Some(201), r#"{"status":"UP"}"#))
            .is_healthy());
    }

    #[test]
    fn the_service_is_healthy_once_as_many_tasks_as_it_wants_answer_well() {
        let ok = |t: &str, bound| TaskAnswer {
            task: t.into(),
            bound,
            result: ProbeResult::Healthy("status 200".into()),
        };
        let down = |t: &str, bound| TaskAnswer {
            task: t.into(),
            bound,
            result: ProbeResult::Unhealthy("/status is \"DOWN\"".into()),
        };
        let kind = |r: ProbeResult| match r {
            ProbeResult::Healthy(_) => "healthy",
            ProbeResult::Unhealthy(_) => "unhealthy",
            ProbeResult::Starting(_) => "starting",
        };
        let table: Vec<(usize, Vec<TaskAnswer>, &str)> = vec![
            (2, vec![], "starting"),
            (2, vec![ok("t1", true), ok("t2", true)], "healthy"),
            // An update one task at a time: the first new one is healthy.
            (2, vec![ok("t1", true)], "starting"),
            // A rollback's extra task still starting beside enough healthy ones.
            (
                2,
                vec![ok("t1", true), ok("t2", true), down("t3", false)],
                "healthy",
            ),
            // A task not bound yet answering DOWN: not yet a verdict.
            (2, vec![down("t1", false)], "starting"),
            // A bound task answering DOWN is.
            (2, vec![ok("t1", true), down("t2", true)], "unhealthy"),
            (1, vec![down("t1", true), ok("t2", true)], "unhealthy"),
        ];
        for (wanted, answers, expected) in table {
            let got = verdict(wanted, &answers);
            assert_eq!(kind(got.clone()), expected, "{wanted} {answers:?}: {got:?}");
        }
        let named = verdict(2, &[ok("t1", true), down("task slot 2 at 10.0.1.5", true)]);
        assert!(
            named
                .detail()
                .contains("task slot 2 at 10.0.1.5: /status is \"DOWN\""),
            "{named:?}"
        );
    }

    #[test]
    fn a_restore_overwrites_only_what_this_deploy_wrote() {
        let v1 = "r/app:v1@sha256:1";
        let v2 = "r/app:v2@sha256:2";
        let v3 = "r/app:v3@sha256:3";
        // (runs now, ran before, this deploy wrote) -> what the restore does
        let table = [
            (v1, v1, Some(v2), WayBack::There),
            (v2, v1, Some(v2), WayBack::RollBack),
            // The same digest under another tag or none is the same release.
            ("r/app@sha256:2", v1, Some(v2), WayBack::RollBack),
            ("r/app:latest@sha256:1", v1, Some(v2), WayBack::There),
            (v3, v1, Some(v2), WayBack::Theirs),
            // The switch failed before this deploy wrote anything.
            (v3, v1, None, WayBack::Theirs),
            (v1, v1, None, WayBack::There),
            // A reference without a digest is compared whole.
            ("r/app:v2", v1, Some("r/app:v2"), WayBack::RollBack),
            ("r/app:v2", "r/app:v1", Some(v2), WayBack::Theirs),
        ];
        for (now, before, ours, expected) in table {
            assert_eq!(
                way_back(now, before, ours),
                expected,
                "{now} {before} {ours:?}"
            );
        }
    }

    #[test]
    fn a_service_pins_its_image_by_digest_and_keeps_the_tag_for_people() {
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let release = Release::new("reg:5000/team/app".parse().unwrap(), digest.clone())
            .with_tag(Some("v2".parse().unwrap()));
        assert_eq!(pinned(&release), format!("reg:5000/team/app:v2@{digest}"));
        assert_eq!(
            release_from_reference(&pinned(&release)).map(|r| r.digest),
            Some(digest)
        );
    }
}
