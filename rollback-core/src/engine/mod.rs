//! The async driver: performs the effects the [state machine](crate::machine)
//! asks for, each under a time limit, and rolls a release out to a fleet.
//!
//! [`Deployer`] is the entry point; the CLI and other deploy tools call it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::checkpoint::{Checkpoint, NoCheckpoint};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{NoopObserver, Observer};
use crate::holder::{HolderCheck, NoHolderCheck};
use crate::policy::{HealthPolicy, RolloutPolicy, StepTimeouts};
use crate::traits::{DeployLock, HealthProbe, ProbeResult, Registry, Runtime};
use crate::types::{
    ContainerId, ContainerInfo, ContainerName, ContainerTemplate, DeploymentId, Digest, HostId,
    LockInfo, Release, Repository, Tag,
};

mod deploy;
pub use deploy::UndoTarget;
mod emit;
mod host;
mod prune;
mod recover;
mod strategy;
#[cfg(test)]
mod tests;

pub use prune::{FailedRemoval, HostPrune, PruneReport};
pub use strategy::{DeployStrategy, Interrupted, StartFirst, StopFirst, Strategy, StrategyCx};
pub use tokio_util::sync::CancellationToken;

/// The application being deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct App {
    /// Container name on every host.
    pub name: ContainerName,
    /// Image repository, no tag.
    pub repository: Repository,
    /// The tag that names the release in production (`latest`).
    pub stable_tag: Tag,
    /// The tag that names the release before it (`previous`).
    pub previous_tag: Tag,
}

impl App {
    /// The app `name` from `repository`, its releases named by the tags
    /// `latest` (stable) and `previous`.
    pub fn new(name: ContainerName, repository: Repository) -> Self {
        Self {
            name,
            repository,
            stable_tag: Tag::new("latest").expect("a valid tag"),
            previous_tag: Tag::new("previous").expect("a valid tag"),
        }
    }

    /// The tags that name the stable release and the one before it; they must differ.
    pub fn with_tags(mut self, stable: Tag, previous: Tag) -> Result<Self> {
        if stable == previous {
            return Err(Error::invalid_input(format!(
                "the previous tag must differ from the stable tag ({:?})",
                stable.as_str()
            )));
        }
        self.stable_tag = stable;
        self.previous_tag = previous;
        Ok(self)
    }
}

/// What to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A tag of the app's repository, resolved to a digest once at the start.
    Tag(Tag),
    /// A manifest digest of the app's repository.
    Digest(Digest),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tag(tag) => f.write_str(tag),
            Target::Digest(digest) => fmt::Display::fmt(digest, f),
        }
    }
}

/// One host of the fleet and how to reach, run, lock and probe the app there.
#[derive(Clone)]
#[non_exhaustive]
pub struct HostTarget {
    /// Host name.
    pub id: HostId,
    /// The container engine.
    pub runtime: Arc<dyn Runtime>,
    /// The host's deploy lock.
    pub lock: Arc<dyn DeployLock>,
    /// The health check of the app on this host.
    pub probe: Arc<dyn HealthProbe>,
    /// How the app's container runs here; the engine names it after the
    /// app and pins its image to the release's digest.
    pub container: ContainerTemplate,
    /// How the new release replaces the old one.
    pub strategy: Strategy,
}

impl HostTarget {
    /// A host deployed with the default [`Strategy`].
    pub fn new(
        id: impl Into<HostId>,
        runtime: Arc<dyn Runtime>,
        lock: Arc<dyn DeployLock>,
        probe: Arc<dyn HealthProbe>,
        container: ContainerTemplate,
    ) -> Self {
        Self {
            id: id.into(),
            runtime,
            lock,
            probe,
            container,
            strategy: Strategy::default(),
        }
    }

    /// How the new release replaces the old one.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
}

impl fmt::Debug for HostTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostTarget")
            .field("id", &self.id)
            .field("probe", &self.probe.describe())
            .field("container", &self.container)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// A dry run: what a deploy would do, changing nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Plan {
    /// The release that would be deployed.
    pub target: Release,
    /// The digest the stable tag has now.
    pub stable_before: Option<Digest>,
    /// Per host, in config order.
    pub hosts: Vec<HostPlan>,
}

impl Plan {
    /// A plan of `target`.
    pub fn new(target: Release, stable_before: Option<Digest>, hosts: Vec<HostPlan>) -> Self {
        Self {
            target,
            stable_before,
            hosts,
        }
    }
}

/// What a deploy would do on one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HostPlan {
    /// The host.
    pub host: HostId,
    /// The release running now.
    pub current: Option<Release>,
    /// The container running it.
    pub container: Option<ContainerId>,
    /// Who holds the deploy lock now, if anyone.
    pub lock: Option<LockInfo>,
    /// The steps, in order, as sentences.
    pub steps: Vec<String>,
}

impl HostPlan {
    /// The plan of `host`, with nothing running, no lock and no steps.
    pub fn new(host: HostId) -> Self {
        Self {
            host,
            current: None,
            container: None,
            lock: None,
            steps: Vec::new(),
        }
    }

    /// What runs now, in which container.
    pub fn with_current(
        mut self,
        current: Option<Release>,
        container: Option<ContainerId>,
    ) -> Self {
        self.current = current;
        self.container = container;
        self
    }

    /// Who holds the lock now.
    pub fn with_lock(mut self, lock: Option<LockInfo>) -> Self {
        self.lock = lock;
        self
    }

    /// The steps, in order.
    pub fn with_steps(mut self, steps: Vec<String>) -> Self {
        self.steps = steps;
        self
    }
}

/// The state of the app on one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HostStatus {
    /// The host.
    pub host: HostId,
    /// The app container, if one exists.
    pub container: Option<ContainerInfo>,
    /// One probe answer, when the container runs.
    pub probe: Option<ProbeResult>,
    /// Who holds the deploy lock, if anyone.
    pub lock: Option<LockInfo>,
    /// Why the host could not be read fully.
    pub error: Option<String>,
}

impl HostStatus {
    /// The status of `host` with nothing read.
    pub fn new(host: HostId) -> Self {
        Self {
            host,
            container: None,
            probe: None,
            lock: None,
            error: None,
        }
    }

    /// The app container.
    pub fn with_container(mut self, container: Option<ContainerInfo>) -> Self {
        self.container = container;
        self
    }

    /// One probe answer.
    pub fn with_probe(mut self, probe: Option<ProbeResult>) -> Self {
        self.probe = probe;
        self
    }

    /// Who holds the lock.
    pub fn with_lock(mut self, lock: Option<LockInfo>) -> Self {
        self.lock = lock;
        self
    }

    /// Why the host could not be read fully.
    pub fn with_error(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }
}

/// Releases known from the registry tags and the hosts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct History {
    /// The digest of the stable tag.
    pub stable: Option<Digest>,
    /// The digest of the previous tag.
    pub previous: Option<Digest>,
    /// Per host, the app's containers (active and retained).
    pub hosts: Vec<(HostId, Vec<ContainerInfo>)>,
}

impl History {
    /// A history from the two tags and the hosts' containers.
    pub fn new(
        stable: Option<Digest>,
        previous: Option<Digest>,
        hosts: Vec<(HostId, Vec<ContainerInfo>)>,
    ) -> Self {
        Self {
            stable,
            previous,
            hosts,
        }
    }
}

/// Deploys, verifies, rolls back and promotes releases of one app across a fleet.
pub struct Deployer {
    app: App,
    registry: Arc<dyn Registry>,
    hosts: Vec<HostTarget>,
    health: HealthPolicy,
    rollout: RolloutPolicy,
    timeouts: StepTimeouts,
    observer: Arc<dyn Observer>,
    checkpoint: Arc<dyn Checkpoint>,
    holder: String,
    deployment: DeploymentId,
    promote: bool,
    holder_check: Arc<dyn HolderCheck>,
    force_takeover: bool,
}

impl fmt::Debug for Deployer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deployer")
            .field("app", &self.app)
            .field("hosts", &self.hosts)
            .field("health", &self.health)
            .field("rollout", &self.rollout)
            .field("timeouts", &self.timeouts)
            .field("holder", &self.holder)
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

/// Who deploys when the embedder does not say ([`Deployer::with_holder`]):
/// the library reads no environment, so only the process id.
fn default_holder() -> String {
    format!("pid {}", std::process::id())
}

impl Deployer {
    /// A deployer with default policies, no observer and a generated deployment id.
    pub fn new(app: App, registry: Arc<dyn Registry>, hosts: Vec<HostTarget>) -> Self {
        Self {
            app,
            registry,
            hosts,
            health: HealthPolicy::default(),
            rollout: RolloutPolicy::default(),
            timeouts: StepTimeouts::default(),
            observer: Arc::new(NoopObserver),
            checkpoint: Arc::new(NoCheckpoint),
            holder: default_holder(),
            deployment: DeploymentId::generate(),
            promote: true,
            holder_check: Arc::new(NoHolderCheck),
            force_takeover: false,
        }
    }

    /// How `recover` learns whether a lock's holder still runs; by default
    /// nothing is proven, and only a forced takeover proceeds.
    pub fn with_holder_check(mut self, check: Arc<dyn HolderCheck>) -> Self {
        self.holder_check = check;
        self
    }

    /// Whether `recover` takes over a lock whose holder cannot be proven
    /// gone (`recover --force`). A holder seen running is never overtaken.
    pub fn with_forced_takeover(mut self, force: bool) -> Self {
        self.force_takeover = force;
        self
    }

    /// Whether a verified deploy (or undo, or a deploy `recover` finishes)
    /// moves the registry tags (the default); with `false` the hosts keep
    /// the release and no tag moves, and `undo` puts back the release it
    /// replaced. An embedder deploying to some hosts of an app passes
    /// `false` unless asked, since the others may run another release.
    pub fn with_promote(mut self, promote: bool) -> Self {
        self.promote = promote;
        self
    }

    /// How releases are proven healthy.
    pub fn with_health(mut self, health: HealthPolicy) -> Self {
        self.health = health;
        self
    }

    /// Batch size and what happens on failure.
    pub fn with_rollout(mut self, rollout: RolloutPolicy) -> Self {
        self.rollout = rollout;
        self
    }

    /// Time limits of each effect.
    pub fn with_timeouts(mut self, timeouts: StepTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Who receives the events.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// What the engine awaits at each [stage](crate::checkpoint::Stage) of a
    /// deploy; by default nothing.
    pub fn with_checkpoint(mut self, checkpoint: Arc<dyn Checkpoint>) -> Self {
        self.checkpoint = checkpoint;
        self
    }

    /// Who deploys, recorded in locks (`user@machine pid 123`).
    pub fn with_holder(mut self, holder: String) -> Self {
        self.holder = holder;
        self
    }

    /// The deployment id recorded in locks and labels.
    pub fn with_deployment_id(mut self, deployment: DeploymentId) -> Self {
        self.deployment = deployment;
        self
    }

    /// The app.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The deployment id.
    pub fn deployment_id(&self) -> &DeploymentId {
        &self.deployment
    }

    /// Resolve `target` to a release pinned by digest.
    async fn resolve_target(&self, target: &Target) -> Result<Release> {
        match target {
            Target::Digest(digest) => Ok(Release {
                repository: self.app.repository.clone(),
                tag: None,
                digest: digest.clone(),
            }),
            Target::Tag(tag) => {
                let reference = self.app.repository.with_tag(tag);
                let what = format!("resolve {reference}");
                match timed(
                    self.timeouts.registry,
                    &what,
                    self.registry.resolve(&reference),
                )
                .await
                {
                    Ok(digest) => Ok(Release {
                        repository: self.app.repository.clone(),
                        tag: Some(tag.clone()),
                        digest,
                    }),
                    Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::not_found(format!(
                        "tag {tag} not found in {}",
                        self.app.repository
                    ))),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The digest a tag points at, `None` when the tag does not exist.
    async fn tag_digest(&self, tag: &Tag) -> Result<Option<Digest>> {
        let reference = self.app.repository.with_tag(tag);
        let what = format!("resolve {reference}");
        match timed(
            self.timeouts.registry,
            &what,
            self.registry.resolve(&reference),
        )
        .await
        {
            Ok(digest) => Ok(Some(digest)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A dry run: resolve `target`, read each host's running release and
    /// lock, and list the steps a deploy would take. Changes nothing.
    pub async fn plan(&self, target: &Target) -> Result<Plan> {
        let release = self.resolve_target(target).await?;
        let stable_before = self.tag_digest(&self.app.stable_tag).await?;
        let limit = self.timeouts.engine;
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for host in &self.hosts {
            let ctx = |e: Error| e.context(format!("host {}", host.id));
            let current = host
                .strategy
                .get()
                .running(&self.cx(None, host))
                .await
                .map_err(ctx)?;
            let lock = timed(limit, "read the lock", host.lock.status(&self.app.name))
                .await
                .map_err(ctx)?;
            let mut steps = vec![format!("take the deploy lock of {}", self.app.name)];
            if let Some(holder) = &lock {
                steps.push(format!("(the lock is held now: {holder})"));
            }
            steps.push(format!("pull {}", release.image()));
            steps.extend(self.switch_steps(host, current.as_ref(), &release));
            hosts.push(
                HostPlan::new(host.id.clone())
                    .with_current(
                        current.as_ref().and_then(|c| c.release.clone()),
                        current.map(|c| c.id),
                    )
                    .with_lock(lock)
                    .with_steps(steps),
            );
        }
        Ok(Plan::new(release, stable_before, hosts))
    }

    /// Per host: the running release and container state, one probe answer
    /// and the lock. A host that cannot be read has `error` set.
    pub async fn status(&self) -> Vec<HostStatus> {
        let futures = self.hosts.iter().map(|host| self.host_status(host));
        join_hosts(futures).await
    }

    async fn host_status(&self, host: &HostTarget) -> HostStatus {
        let limit = self.timeouts.engine;
        let mut errors = Vec::new();
        let cx = self.cx(None, host);
        let strategy = host.strategy.get();
        let container = match strategy.running(&cx).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(e.report());
                None
            }
        };
        let lock = match timed(limit, "read the lock", host.lock.status(&self.app.name)).await {
            Ok(l) => l,
            Err(e) => {
                errors.push(e.report());
                None
            }
        };
        let probe = match &container {
            Some(c) if c.state.is_running() => {
                Some(strategy.probe(&cx, &strategy.workload_of(c)).await)
            }
            _ => None,
        };
        HostStatus::new(host.id.clone())
            .with_container(container)
            .with_probe(probe)
            .with_lock(lock)
            .with_error((!errors.is_empty()).then(|| errors.join("; ")))
    }

    /// One probe answer of `container`. Probes bound the app's answer by
    /// the policy's timeout themselves; the limit on top only stops a probe
    /// whose own way to the app (an engine round trip, over SSH say) hangs,
    /// so a slow engine does not count against the app.
    pub(crate) async fn probe_once(
        &self,
        host: &HostTarget,
        container: &ContainerId,
    ) -> ProbeResult {
        let t = self.health.timeout();
        let limit = t + self.timeouts.engine;
        tokio::time::timeout(limit, host.probe.check(container, t))
            .await
            .unwrap_or_else(|_| {
                ProbeResult::Unhealthy(format!(
                    "no answer within {}",
                    humantime::format_duration(limit)
                ))
            })
    }

    /// The digests of the stable and previous tags, and the app's containers
    /// on every host (the active one and any retained one).
    pub async fn history(&self) -> Result<History> {
        let stable = self.tag_digest(&self.app.stable_tag).await?;
        let previous = self.tag_digest(&self.app.previous_tag).await?;
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for host in &self.hosts {
            let containers = timed(
                self.timeouts.engine,
                "list the app containers",
                host.runtime.list_app(&self.app.name),
            )
            .await
            .map_err(|e| e.context(format!("host {}", host.id)))?;
            hosts.push((host.id.clone(), containers));
        }
        Ok(History::new(stable, previous, hosts))
    }
}

/// Run `fut` within `limit`. An adapter's error already names what it was
/// doing (the traits ask for it) and passes as it is; running out of time
/// is a [`Timeout`](ErrorKind::Timeout) that names `what`.
pub(crate) async fn timed<T>(
    limit: Duration,
    what: impl fmt::Display,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::timeout(format!(
            "{what}: no answer within {}",
            humantime::format_duration(limit)
        ))),
    }
}

/// Await one future per host, all at once. Unconstrained because tokio's
/// budget (128 operations a poll) runs out after the first 128 hosts woken
/// together, and `FuturesUnordered` then still polls every other host, each
/// returning `Pending`, before it yields: N²/256 empty polls per wake-up
/// (rust-lang/futures-rs#2053). It yields after one pass all the same, so
/// the runtime is not held for longer.
pub(crate) fn join_hosts<I>(futures: I) -> impl Future<Output = Vec<<I::Item as Future>::Output>>
where
    I: IntoIterator,
    I::Item: Future,
{
    tokio::task::unconstrained(futures_util::future::join_all(futures))
}
