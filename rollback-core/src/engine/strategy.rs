//! Deploy strategies: how the new release takes the old one's place on a
//! host, and how the old one comes back.
//!
//! A strategy is an implementation of [`DeployStrategy`]: the effects the
//! driver performs at each step of the [state machine](crate::machine), and
//! what it watches beside the probes. The driver matches on no strategy; it
//! calls the host's [`Strategy`] and feeds the result to the machine. Every
//! strategy shares the machine's verification, restore and retirement rows;
//! what differs is what "switch", "restore" and "retire" do on the host:
//!
//! | effect | [`StopFirst`] | [`StartFirst`] |
//! |---|---|---|
//! | check (`Locked → Captured`) | — | no container of an interrupted deploy beside the app |
//! | prepare (`Captured → Pulled`, beside the pull) | nothing | boot the proxy if it does not run; point it at the running release |
//! | switch (`Pulled → Switched` / `Started`) | rename the old container to the retained name, stop it, create and start the new one under the app name | create and start the new one beside the old one, as [`next_name`], on the proxy's network, no host port |
//! | traffic switch (`Ready → Serving`) | — | the proxy sends new requests to the new release; the old one stays its fallback |
//! | watch (beside the probes and the container's exit) | nothing | the proxy stopping |
//! | free the failed release (`RollingBack`) | stop the new container (remove it when it will not stop: it may hold the port) | nothing: it may still finish requests it took |
//! | restart (`RollingBack → Restoring`) | start the retained container again | the proxy sends the traffic back to the old container (started first if it was stopped) |
//! | tidy (beside `Restoring`) | keep the failed container's logs, remove it, give the retained one the app name back | drain the failed container, keep its logs, remove it |
//! | retire (`Verified → Done`) | remove the retained container | drain the old container, stop and remove it, give the new one the app name |
//! | recover (reading a host) | — | the container beside the app, and whether the proxy sends it the traffic |
//!
//! An embedder brings another strategy by implementing [`DeployStrategy`]
//! and giving it to [`Strategy::new`]. `docs/architecture.md` shows how a
//! Swarm service update takes the same places.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::emit::Emitter;
use super::{timed, Deployer, HostTarget};
use crate::checkpoint::Stage;
use crate::engine::CancellationToken;
use crate::error::Error;
use crate::event::{Phase, Scope};
use crate::machine::{Adoption, CapturedRelease, Input};
use crate::traffic::{TrafficSwitch, Upstream};
use crate::traits::ProbeResult;
use crate::types::{
    labels, next_name, retained_name, ContainerExit, ContainerId, ContainerInfo, ContainerSpec,
    Digest, LockInfo, Release, Tag, Workload,
};

/// Default time between SIGTERM and SIGKILL when the spec names none.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept from a failed container.
pub(crate) const LOG_LINES: usize = 20;

/// One way of putting a new release in place of the old one on a host:
/// the effects the driver performs for the
/// [state machine](crate::machine), each returning what the machine needs.
///
/// Every method gets a [`StrategyCx`]: the host, the app, the engine's time
/// limit and the helpers the built-in strategies use. Implementations are
/// shared by every deploy of the host, so they keep no state of their own
/// between calls; what a deploy knows lives in the machine's states.
#[async_trait]
pub trait DeployStrategy: Send + Sync {
    /// A short description, for logs and `Debug`.
    fn describe(&self) -> String;

    /// The plan's sentences for the switch, from what runs on the host.
    fn plan(
        &self,
        cx: &StrategyCx<'_>,
        current: Option<&ContainerInfo>,
        release: &Release,
    ) -> Vec<String>;

    /// What must hold on the host before a deploy reads its release; an
    /// error stops the deploy with nothing changed.
    async fn check(&self, _cx: &StrategyCx<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// Read the release running on the host (`Locked → Captured`), after
    /// [`check`](Self::check); `None` on a first deploy. The default reads
    /// the app's container and removes a retained container an earlier
    /// deploy left beside a running app.
    async fn capture(&self, cx: &StrategyCx<'_>) -> Result<Option<CapturedRelease>, Error> {
        self.check(cx).await?;
        cx.deployer.capture_container(cx.ev, cx.host).await
    }

    /// `status` and the plan: what runs the app on the host, as a
    /// container shows it (release, labels, state). The default reads the
    /// app's container.
    async fn running(&self, cx: &StrategyCx<'_>) -> Result<Option<ContainerInfo>, Error> {
        timed(
            cx.engine_timeout(),
            "read the app container",
            cx.host.runtime.current(cx.app_name()),
        )
        .await
    }

    /// The workload `running` showed, as probes and watches name it.
    fn workload_of(&self, running: &ContainerInfo) -> Workload {
        Workload::Container(running.id.clone())
    }

    /// One health answer of `workload` within the policy's timeout. The
    /// default asks the host's [`HealthProbe`](crate::HealthProbe) about the
    /// container.
    async fn probe(&self, cx: &StrategyCx<'_>, workload: &Workload) -> ProbeResult {
        match workload.expect_container() {
            Ok(id) => cx.deployer.probe_once(cx.host, id).await,
            Err(e) => ProbeResult::Unhealthy(e.report()),
        }
    }

    /// Wait until `workload` fails while it is verified: its container
    /// exits, restarts or disappears (for a service, one of its tasks
    /// fails). The default watches the container on the host's engine.
    async fn wait_exit(
        &self,
        cx: &StrategyCx<'_>,
        workload: &Workload,
    ) -> Result<ContainerExit, Error> {
        cx.host
            .runtime
            .wait_exit(workload.expect_container()?)
            .await
    }

    /// What the strategy needs on the host before anything changes there;
    /// a failure here leaves the running release untouched.
    async fn prepare(
        &self,
        _cx: &StrategyCx<'_>,
        _previous: Option<&CapturedRelease>,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// Put the new release in place of `previous`: [`Input::Switched`] or
    /// [`Input::StartedBeside`], or [`Input::SwitchFailed`] with the new
    /// container when it was created.
    async fn switch(
        &self,
        cx: &StrategyCx<'_>,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Input;

    /// Send the traffic to the new release, healthy beside the old one
    /// (`Ready`): [`Input::TrafficSwitched`] at `verifying_since.elapsed()`,
    /// or [`Input::TrafficSwitchFailed`]. Only strategies that switch to
    /// [`Input::StartedBeside`] are asked.
    async fn traffic_switch(
        &self,
        _cx: &StrategyCx<'_>,
        _new: &Workload,
        _verifying_since: tokio::time::Instant,
    ) -> Input {
        Input::TrafficSwitchFailed(Error::other(format!(
            "{} has no traffic switch",
            self.describe()
        )))
    }

    /// Wait for what the strategy watches while a release is verified,
    /// beside the probes and the container's exit: the input it means
    /// (such as [`Input::ProxyLost`]), or `None` when there is nothing
    /// (more) to watch.
    async fn watch(&self, _cx: &StrategyCx<'_>) -> Option<Input> {
        None
    }

    /// Free what the failed release holds, first thing in a restore.
    /// Returns the failed container while it still exists.
    async fn release_failed(
        &self,
        cx: &StrategyCx<'_>,
        failed: Workload,
    ) -> Result<Option<Workload>, Error>;

    /// Run the retained release again, once the failed one is out of its way.
    async fn restart_previous(
        &self,
        cx: &StrategyCx<'_>,
        failed: Option<&Workload>,
        retained: &CapturedRelease,
    ) -> Result<(), Error>;

    /// The note once `retained` runs again, when no traffic switch had sent
    /// users to the failed release.
    fn restarted_note(&self, retained: &CapturedRelease) -> String {
        format!(
            "previous container {} started again; verifying it",
            retained.container
        )
    }

    /// What a restore does beside the restored release's verification: the
    /// failed container's logs (when it read them) and the clean-up.
    async fn tidy(
        &self,
        cx: &StrategyCx<'_>,
        failed: Option<&Workload>,
        retained: &CapturedRelease,
    ) -> (Option<Vec<String>>, Result<(), Error>);

    /// A failed first release (nothing ran before it): keep its last log
    /// lines and remove it, so that nothing of it runs.
    async fn clear(
        &self,
        cx: &StrategyCx<'_>,
        failed: &Workload,
    ) -> (Vec<String>, Result<(), Error>) {
        match failed.expect_container() {
            Ok(id) => cx.clear_failed(id).await,
            Err(e) => (Vec::new(), Err(e)),
        }
    }

    /// The previous release is no longer needed: drop what kept it.
    async fn retire(
        &self,
        cx: &StrategyCx<'_>,
        retained: Option<&Workload>,
        new: &Workload,
    ) -> Result<(), Error>;

    /// `recover`, for a strategy whose workload is not the app's
    /// containers: what an interrupted deploy left on the host, read
    /// through the strategy (the lock left behind is `lock`). `None`, the
    /// default, reads the app's containers instead.
    async fn interrupted(
        &self,
        _cx: &StrategyCx<'_>,
        _lock: Option<&LockInfo>,
    ) -> Result<Option<Interrupted>, Error> {
        Ok(None)
    }

    /// `recover`: the new release's container of an interrupted deploy
    /// that runs beside the app's, among `containers`, and whether the
    /// traffic goes to it; `None` when the strategy starts none beside.
    async fn interrupted_beside(
        &self,
        _cx: &StrategyCx<'_>,
        _containers: &[ContainerInfo],
    ) -> Result<Option<(ContainerInfo, bool)>, Error> {
        Ok(None)
    }
}

/// What [`DeployStrategy::interrupted`] found on a host.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Interrupted {
    /// How to take the host over ([`crate::adoption`]), when a deploy was
    /// interrupted there after its switch.
    pub adoption: Option<(Adoption, Option<CapturedRelease>)>,
    /// What runs the app now, as a container would show it (its labels
    /// and release): what recover promotes from.
    pub app: Option<ContainerInfo>,
}

impl Interrupted {
    /// An adoption (or none) and what runs the app.
    pub fn new(
        adoption: Option<(Adoption, Option<CapturedRelease>)>,
        app: Option<ContainerInfo>,
    ) -> Self {
        Self { adoption, app }
    }
}

/// What a [`DeployStrategy`] works with on one host during one deploy.
pub struct StrategyCx<'a> {
    pub(crate) deployer: &'a Deployer,
    pub(crate) ev: Option<&'a Emitter>,
    pub(crate) host: &'a HostTarget,
}

impl<'a> StrategyCx<'a> {
    /// The host being deployed.
    pub fn host(&self) -> &HostTarget {
        self.host
    }

    /// The app's name, the name of its container.
    pub fn app_name(&self) -> &str {
        &self.deployer.app.name
    }

    /// The time limit of one engine call.
    pub fn engine_timeout(&self) -> Duration {
        self.deployer.timeouts.engine
    }

    /// The health policy releases are verified with.
    pub fn health(&self) -> &crate::policy::HealthPolicy {
        &self.deployer.health
    }

    /// Say something about the host in the deploy's events.
    pub fn note(&self, phase: Phase, detail: impl Into<String>) {
        if let Some(ev) = self.ev {
            ev.note(&Scope::Host(self.host.id.clone()), phase, detail);
        }
    }

    /// Time between SIGTERM and SIGKILL when the app's container stops.
    pub fn stop_timeout(&self) -> Duration {
        stop_timeout(self.host)
    }

    /// The spec of the new release's container named `name`, labelled with
    /// what it runs and what it replaced.
    pub fn release_spec(
        &self,
        name: &str,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
    ) -> ContainerSpec {
        self.deployer
            .release_spec(self.host, name, previous, target, stable_before)
    }

    /// Create and start `spec`, attached to `network` too when given; the
    /// error carries the container once it was created.
    pub async fn create_and_start(
        &self,
        spec: &ContainerSpec,
        network: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<ContainerId, (Option<ContainerId>, Error)> {
        self.deployer
            .create_and_start(self.host, spec, network, cancel)
            .await
    }

    /// Remove a container; one already gone counts as removed.
    pub async fn remove(&self, id: &ContainerId) -> Result<(), Error> {
        self.deployer.remove_gone(self.host, id).await
    }

    /// Keep the failed container's last lines, then remove it.
    pub async fn clear_failed(&self, id: &ContainerId) -> (Vec<String>, Result<(), Error>) {
        match self.ev {
            Some(ev) => self.deployer.clear_failed(ev, self.host, id).await,
            None => (Vec::new(), self.remove(id).await),
        }
    }

    async fn checkpoint(&self, stage: Stage) {
        self.deployer.checkpoint(stage, self.host).await
    }
}

/// How the new release replaces the old one on a host: a shared
/// [`DeployStrategy`].
#[derive(Clone)]
pub struct Strategy(Arc<dyn DeployStrategy>);

impl Strategy {
    /// A strategy of the embedder's own.
    pub fn new(strategy: impl DeployStrategy + 'static) -> Self {
        Self(Arc::new(strategy))
    }

    /// [`StopFirst`]: the default.
    pub fn stop_first() -> Self {
        Self::new(StopFirst)
    }

    /// [`StartFirst`] behind the proxy `sf` describes.
    pub fn start_first(sf: StartFirst) -> Self {
        Self::new(sf)
    }

    pub(crate) fn get(&self) -> &dyn DeployStrategy {
        self.0.as_ref()
    }
}

impl Default for Strategy {
    fn default() -> Self {
        Self::stop_first()
    }
}

impl fmt::Debug for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.describe())
    }
}

/// Stop the old container and keep it (renamed), start the new one in its
/// place, under the app name and on the same ports. The app does not
/// answer between the stop and the new release's start; rolling back
/// starts the kept container again. Needs nothing but the engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopFirst;

/// Start the new release beside the old one behind a proxy, probe it
/// directly, and only once it is healthy send it the traffic; the old one
/// keeps running through `stable_for`, so going back is one proxy change.
/// No request reaches a release that never answered healthy.
///
/// Its fields name the proxy and the network of the host.
#[derive(Clone)]
#[non_exhaustive]
pub struct StartFirst {
    /// The proxy in front of the app on this host.
    pub switch: Arc<dyn TrafficSwitch>,
    /// The network the proxy shares with the app's containers.
    pub network: String,
    /// The container port the proxy sends requests to.
    pub app_port: u16,
    /// How long requests in flight get on the release being left.
    pub drain: Duration,
}

impl StartFirst {
    /// Default time requests in flight get on the release being left.
    pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

    /// The app behind `switch`, reached on `network` at `app_port`.
    pub fn new(switch: Arc<dyn TrafficSwitch>, network: impl Into<String>, app_port: u16) -> Self {
        Self {
            switch,
            network: network.into(),
            app_port,
            drain: Self::DEFAULT_DRAIN,
        }
    }

    /// How long requests in flight get on the release being left.
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Where the proxy reaches `container`.
    pub fn upstream(&self, container: &ContainerId) -> Upstream {
        Upstream::of(container, self.app_port)
    }

    /// `e`, named as the proxy's.
    pub(crate) fn blame(&self, e: Error) -> Error {
        e.context(format!("the proxy {}", self.switch.describe()))
    }
}

impl fmt::Debug for StartFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartFirst")
            .field("switch", &self.switch.describe())
            .field("network", &self.network)
            .field("app_port", &self.app_port)
            .field("drain", &self.drain)
            .finish()
    }
}

/// The machine's input for a container switch's result: `started` with
/// the new container, or `SwitchFailed` with it once it was created.
fn switch_input(
    result: Result<ContainerId, (Option<ContainerId>, Error)>,
    started: impl FnOnce(Workload) -> Input,
) -> Input {
    match result {
        Ok(new_container) => started(new_container.into()),
        Err((new_container, reason)) => Input::SwitchFailed {
            new_container: new_container.map(Workload::from),
            reason,
        },
    }
}

/// Time between SIGTERM and SIGKILL when the app's container stops.
fn stop_timeout(host: &HostTarget) -> Duration {
    host.container.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT)
}

impl Deployer {
    /// The strategy context of `host`.
    pub(crate) fn cx<'a>(
        &'a self,
        ev: Option<&'a Emitter>,
        host: &'a HostTarget,
    ) -> StrategyCx<'a> {
        StrategyCx {
            deployer: self,
            ev,
            host,
        }
    }

    /// The plan's sentences for the switch on `host`, from what runs there.
    pub(crate) fn switch_steps(
        &self,
        host: &HostTarget,
        current: Option<&ContainerInfo>,
        release: &Release,
    ) -> Vec<String> {
        host.strategy
            .get()
            .plan(&self.cx(None, host), current, release)
    }

    /// The spec of the new release's container named `name`, labelled with
    /// what it runs and what it replaced.
    fn release_spec(
        &self,
        host: &HostTarget,
        name: &str,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
    ) -> ContainerSpec {
        let mut spec = ContainerSpec::new(name, target.image(), host.container.clone());
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
        spec
    }

    /// Create and start `spec`, attached to `network` too when given; the
    /// error carries the container once it was created.
    async fn create_and_start(
        &self,
        host: &HostTarget,
        spec: &ContainerSpec,
        network: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<ContainerId, (Option<ContainerId>, Error)> {
        let limit = self.timeouts.engine;
        let id = timed(
            limit,
            format!("create container {}", spec.name),
            host.runtime.create(spec),
        )
        .await
        .map_err(|e| (None, e))?;
        if cancel.is_cancelled() {
            return Err((Some(id), Error::cancelled()));
        }
        if let Some(network) = network {
            timed(
                limit,
                format!("connect container {id} to network {network}"),
                host.runtime.connect_network(&id, network),
            )
            .await
            .map_err(|e| (Some(id.clone()), e))?;
        }
        timed(
            limit,
            format!("start container {id}"),
            host.runtime.start(&id),
        )
        .await
        .map_err(|e| (Some(id.clone()), e))?;
        Ok(id)
    }

    /// Start-first: boot the proxy when it does not run (a stopped one comes
    /// back with its last config). Booting may pull the proxy's image.
    pub(crate) async fn boot_proxy(&self, sf: &StartFirst) -> Result<(), Error> {
        timed(self.timeouts.pull, "boot the proxy", sf.switch.ensure())
            .await
            .map_err(|e| sf.blame(e))
    }
}

#[async_trait]
impl DeployStrategy for StopFirst {
    fn describe(&self) -> String {
        "stop-first".to_owned()
    }

    fn plan(
        &self,
        cx: &StrategyCx<'_>,
        current: Option<&ContainerInfo>,
        release: &Release,
    ) -> Vec<String> {
        let retained = retained_name(cx.app_name());
        let mut steps = Vec::new();
        if let Some(c) = current {
            steps.push(format!(
                "stop container {} ({}) and keep it as {retained}",
                c.id,
                c.release
                    .as_ref()
                    .map(Release::display_name)
                    .unwrap_or_else(|| "unknown release".into()),
            ));
        }
        steps.push(format!(
            "create and start {} from {}",
            cx.app_name(),
            release.display_name()
        ));
        steps.push(format!(
            "verify with {} (deadline {}, stable for {})",
            cx.host.probe.describe(),
            humantime::format_duration(cx.health().deadline()),
            humantime::format_duration(cx.health().stable_for())
        ));
        if current.is_some() {
            steps.push(format!(
                "on success remove {retained}; on failure restore it"
            ));
        }
        steps
    }

    async fn switch(
        &self,
        cx: &StrategyCx<'_>,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Input {
        let host = cx.host;
        let d = cx.deployer;
        let limit = cx.engine_timeout();
        let cancelled = |new: Option<ContainerId>| (new, Error::cancelled());
        let result = async {
            if let Some(previous) = previous {
                let old = previous
                    .container
                    .expect_container()
                    .map_err(|e| (None, e))?;
                // Renamed before it stops: a deploy that dies between the two
                // leaves a retained container `recover` restores, never a
                // stopped app container under the app's own name.
                timed(
                    limit,
                    format!("rename container {old}"),
                    host.runtime.rename(old, &retained_name(cx.app_name())),
                )
                .await
                .map_err(|e| (None, e))?;
                if cancel.is_cancelled() {
                    return Err(cancelled(None));
                }
                let stop = cx.stop_timeout();
                timed(
                    stop + d.timeouts.stop_grace,
                    format!("stop container {old}"),
                    host.runtime.stop(old, stop),
                )
                .await
                .map_err(|e| (None, e))?;
            }
            if cancel.is_cancelled() {
                return Err(cancelled(None));
            }
            let spec = cx.release_spec(cx.app_name(), previous, target, stable_before);
            cx.create_and_start(&spec, None, cancel).await
        };
        switch_input(result.await, |new_container| Input::Switched {
            new_container,
        })
    }

    async fn release_failed(
        &self,
        cx: &StrategyCx<'_>,
        failed: Workload,
    ) -> Result<Option<Workload>, Error> {
        let id = failed.expect_container()?.clone();
        let stop = cx.stop_timeout();
        match timed(
            stop + cx.deployer.timeouts.stop_grace,
            format!("stop container {id}"),
            cx.host.runtime.stop(&id, stop),
        )
        .await
        {
            Ok(()) => Ok(Some(failed)),
            Err(e) => {
                cx.note(Phase::RollingBack, e.report());
                // Not known to be stopped: it may still hold the
                // port, so it goes now (a forced remove), logs or not.
                cx.remove(&id).await?;
                Ok(None)
            }
        }
    }

    async fn restart_previous(
        &self,
        cx: &StrategyCx<'_>,
        failed: Option<&Workload>,
        retained: &CapturedRelease,
    ) -> Result<(), Error> {
        let limit = cx.engine_timeout();
        let rt = &cx.host.runtime;
        let id = retained.container.expect_container()?;
        let failed = failed.and_then(Workload::container);
        // A container created under the app name whose id never
        // reached us (a lost answer) could hold the port and blocks
        // the rename back.
        let current = timed(limit, "read the app container", rt.current(cx.app_name())).await?;
        if let Some(c) = current {
            if &c.id != id && Some(&c.id) != failed {
                cx.remove(&c.id).await?;
            }
        }
        timed(limit, format!("start container {id}"), rt.start(id)).await
    }

    async fn tidy(
        &self,
        cx: &StrategyCx<'_>,
        failed: Option<&Workload>,
        retained: &CapturedRelease,
    ) -> (Option<Vec<String>>, Result<(), Error>) {
        let limit = cx.engine_timeout();
        let rt = &cx.host.runtime;
        let id = match retained.container.expect_container() {
            Ok(id) => id,
            Err(e) => return (None, Err(e)),
        };
        let (logs, removed) = match failed.and_then(Workload::container) {
            Some(failed) => {
                let (logs, removed) = cx.clear_failed(failed).await;
                (Some(logs), removed)
            }
            None => (None, Ok(())),
        };
        let renamed = async {
            removed?;
            let info = timed(limit, format!("inspect container {id}"), rt.inspect(id)).await?;
            if info.name != cx.app_name() {
                timed(
                    limit,
                    format!("rename container {id}"),
                    rt.rename(id, cx.app_name()),
                )
                .await?;
            }
            Ok::<_, Error>(())
        };
        (logs, renamed.await)
    }

    async fn retire(
        &self,
        cx: &StrategyCx<'_>,
        retained: Option<&Workload>,
        _new: &Workload,
    ) -> Result<(), Error> {
        match retained {
            Some(retained) => cx.remove(retained.expect_container()?).await,
            None => Ok(()),
        }
    }
}

impl StartFirst {
    /// Let the requests `from` took finish (up to the drain time); a proxy
    /// that cannot say is only noted, the drain time passes.
    async fn drain(&self, cx: &StrategyCx<'_>, from: &ContainerId) {
        let result = timed(
            self.drain + cx.engine_timeout(),
            format!("drain container {from}"),
            self.switch.drain(&self.upstream(from), self.drain),
        )
        .await;
        if let Err(e) = result {
            cx.note(
                Phase::Verified,
                format!("drain container {from}: {}", e.report()),
            );
        }
    }
}

#[async_trait]
impl DeployStrategy for StartFirst {
    fn describe(&self) -> String {
        format!("{self:?}")
    }

    fn plan(
        &self,
        cx: &StrategyCx<'_>,
        current: Option<&ContainerInfo>,
        release: &Release,
    ) -> Vec<String> {
        let app = cx.app_name();
        let next = next_name(app);
        let mut steps = Vec::new();
        steps.push(format!(
            "boot the proxy if it does not run: {}",
            self.switch.describe()
        ));
        steps.push(format!(
            "create and start {next} from {} beside {}, on network {} without host ports",
            release.display_name(),
            current.map_or_else(
                || "nothing (first deploy)".to_owned(),
                |c| format!("container {}", c.id)
            ),
            self.network
        ));
        steps.push(format!(
            "probe it directly with {} until healthy (deadline {}); no request reaches it before",
            cx.host.probe.describe(),
            humantime::format_duration(cx.health().deadline()),
        ));
        steps.push(format!(
            "switch the proxy to it; {} for {} while it serves",
            if current.is_some() {
                "the old container keeps running"
            } else {
                "keep probing it"
            },
            humantime::format_duration(cx.health().stable_for())
        ));
        steps.push(match current {
            Some(c) => format!(
                "on success drain container {} ({}), stop and remove it, rename {next} to {app}; on failure switch the proxy back to it and remove {next}",
                c.id,
                humantime::format_duration(self.drain),
            ),
            None => format!("on success rename {next} to {app}; on failure remove it"),
        });
        steps
    }

    async fn check(&self, cx: &StrategyCx<'_>) -> Result<(), Error> {
        let next = next_name(cx.app_name());
        let beside = timed(
            cx.engine_timeout(),
            "look for a container started beside the app",
            cx.host.runtime.current(&next),
        )
        .await?;
        if beside.is_some() {
            return Err(Error::conflict(format!(
                "container {next} from an interrupted deploy exists: run `rollback recover` first"
            )));
        }
        Ok(())
    }

    async fn prepare(
        &self,
        cx: &StrategyCx<'_>,
        previous: Option<&CapturedRelease>,
    ) -> Result<(), Error> {
        let limit = cx.engine_timeout();
        cx.deployer.boot_proxy(self).await?;
        let Some(previous) = previous else {
            return Ok(());
        };
        let old = previous.container.expect_container()?;
        // The old release is the fallback and the way back: the proxy must
        // reach it and send it the traffic before the new one starts.
        timed(
            limit,
            format!("connect container {old} to network {}", self.network),
            cx.host.runtime.connect_network(old, &self.network),
        )
        .await?;
        let current = timed(limit, "read the proxy's route", self.switch.current()).await?;
        if current.map(|u| u.container).as_ref() != Some(old) {
            timed(
                limit,
                format!("switch the proxy to container {old}"),
                self.switch.switch(&self.upstream(old)),
            )
            .await?;
        }
        Ok(())
    }

    async fn switch(
        &self,
        cx: &StrategyCx<'_>,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Input {
        let result = async {
            if cancel.is_cancelled() {
                return Err((None, Error::cancelled()));
            }
            let name = next_name(cx.app_name());
            let mut spec = cx.release_spec(&name, previous, target, stable_before);
            // The proxy publishes the app: the new container publishes nothing,
            // so it starts while the old one runs.
            spec.ports.clear();
            let extra = match &spec.network {
                None => {
                    spec.network = Some(self.network.clone());
                    None
                }
                Some(n) if *n == self.network => None,
                Some(_) => Some(self.network.as_str()),
            };
            cx.create_and_start(&spec, extra, cancel).await
        };
        switch_input(result.await, |new_container| Input::StartedBeside {
            new_container,
        })
    }

    async fn traffic_switch(
        &self,
        cx: &StrategyCx<'_>,
        new: &Workload,
        verifying_since: tokio::time::Instant,
    ) -> Input {
        let new = match new.expect_container() {
            Ok(id) => id,
            Err(e) => return Input::TrafficSwitchFailed(e),
        };
        match timed(
            cx.engine_timeout(),
            format!("switch the proxy to container {new}"),
            self.switch.switch(&self.upstream(new)),
        )
        .await
        {
            Ok(()) => Input::TrafficSwitched {
                at: verifying_since.elapsed(),
            },
            Err(e) => Input::TrafficSwitchFailed(
                e.context(format!("switch the proxy {}", self.switch.describe())),
            ),
        }
    }

    /// The release verified (the new one, or the one restored) is reached
    /// through the proxy: a proxy that stops ends that verification.
    async fn watch(&self, cx: &StrategyCx<'_>) -> Option<Input> {
        match self.switch.wait_stopped().await {
            Ok(why) => Some(Input::ProxyLost(why)),
            Err(e) => {
                cx.note(
                    Phase::Verifying,
                    format!("cannot watch the proxy: {}", e.report()),
                );
                None
            }
        }
    }

    /// It holds no port; requests it took finish while the traffic goes
    /// back, and the tidying drains and removes it.
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
        _failed: Option<&Workload>,
        retained: &CapturedRelease,
    ) -> Result<(), Error> {
        let limit = cx.engine_timeout();
        let rt = &cx.host.runtime;
        let id = retained.container.expect_container()?;
        // It never stopped, unless an interrupted retirement stopped it.
        let info = timed(limit, format!("inspect container {id}"), rt.inspect(id)).await?;
        if !info.state.is_running() {
            timed(limit, format!("start container {id}"), rt.start(id)).await?;
        }
        // Idempotent: also right when the traffic never moved, or
        // when a refused switch moved it half way.
        let upstream = self.upstream(id);
        let back = || {
            timed(
                limit,
                format!("switch the proxy back to container {id}"),
                self.switch.switch(&upstream),
            )
        };
        if back().await.is_ok() {
            return Ok(());
        }
        // A proxy that died (or was stopped) comes back with its
        // last config; then the switch again.
        cx.deployer.boot_proxy(self).await?;
        back().await.map_err(|e| self.blame(e))
    }

    fn restarted_note(&self, retained: &CapturedRelease) -> String {
        format!(
            "container {} kept every request; verifying it",
            retained.container
        )
    }

    async fn tidy(
        &self,
        cx: &StrategyCx<'_>,
        failed: Option<&Workload>,
        _retained: &CapturedRelease,
    ) -> (Option<Vec<String>>, Result<(), Error>) {
        let Some(failed) = failed.and_then(Workload::container) else {
            return (None, Ok(()));
        };
        self.drain(cx, failed).await;
        let (logs, removed) = cx.clear_failed(failed).await;
        (Some(logs), removed)
    }

    async fn retire(
        &self,
        cx: &StrategyCx<'_>,
        retained: Option<&Workload>,
        new: &Workload,
    ) -> Result<(), Error> {
        let limit = cx.engine_timeout();
        let rt = &cx.host.runtime;
        let new = new.expect_container()?;
        if let Some(old) = retained {
            let old = old.expect_container()?;
            cx.checkpoint(Stage::Draining).await;
            self.drain(cx, old).await;
            let stop = cx.stop_timeout();
            match timed(limit, format!("inspect container {old}"), rt.inspect(old)).await {
                Ok(info) if info.state.is_running() => {
                    timed(
                        stop + cx.deployer.timeouts.stop_grace,
                        format!("stop container {old}"),
                        rt.stop(old, stop),
                    )
                    .await?
                }
                Ok(_) => {}
                Err(e) if e.kind() == crate::error::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            cx.remove(old).await?;
        }
        let info = timed(limit, format!("inspect container {new}"), rt.inspect(new)).await?;
        if info.name != cx.app_name() {
            timed(
                limit,
                format!("rename container {new} to {}", cx.app_name()),
                rt.rename(new, cx.app_name()),
            )
            .await?;
        }
        Ok(())
    }

    /// A start-first deploy was interrupted with the new release's
    /// container beside the app's: the proxy says whether it took the
    /// traffic.
    async fn interrupted_beside(
        &self,
        cx: &StrategyCx<'_>,
        containers: &[ContainerInfo],
    ) -> Result<Option<(ContainerInfo, bool)>, Error> {
        let next = next_name(cx.app_name());
        let Some(beside) = containers.iter().find(|c| c.name == next) else {
            return Ok(None);
        };
        let app = containers.iter().find(|c| c.name == cx.app_name());
        // A proxy that died with the deploy comes back with its last config.
        cx.deployer.boot_proxy(self).await?;
        let current = timed(
            cx.engine_timeout(),
            "read the proxy's route",
            self.switch.current(),
        )
        .await
        .map_err(|e| self.blame(e))?;
        let serving = current.as_ref().map(|u| &u.container) == Some(&beside.id);
        cx.note(
            Phase::Planned,
            format!(
                "container {} of an interrupted deploy runs beside {}; the proxy sends requests to {}",
                beside.id,
                app.map_or_else(|| "no app container".to_owned(), |a| a.id.to_string()),
                match (&current, serving) {
                    (_, true) => "it".to_owned(),
                    (Some(u), false) => u.to_string(),
                    (None, false) => "nothing".to_owned(),
                }
            ),
        );
        Ok(Some((beside.clone(), serving)))
    }
}
