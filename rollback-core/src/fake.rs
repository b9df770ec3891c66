//! In-memory fakes of [`Runtime`] (and its [`DeployLock`]), [`Registry`] and [`HealthProbe`] with
//! scripted behaviour, failures and delays, for tests of the engine and of
//! downstream crates (feature `mock`).
//!
//! Times use [`tokio::time`], so tests under `#[tokio::test(start_paused = true)]`
//! run scripted minutes in microseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::pending;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::retention::ImageInfo;
use crate::traffic::{TrafficSwitch, Upstream};
use crate::traits::{
    CopyReport, DeployLock, ExecOutput, HealthProbe, ProbeResult, Registry, Runtime,
};
use crate::types::{
    labels, ContainerExit, ContainerId, ContainerInfo, ContainerSpec, ContainerState, DeploymentId,
    Digest, ImageRef, LockAttempt, LockInfo, ProgressSink, PullProgress, Release, Repository,
};

/// How a container of a given image behaves once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Healthy from the start.
    #[default]
    Healthy,
    /// Runs but always answers unhealthy (`DOWN`).
    Unhealthy,
    /// Unhealthy until this long after start, healthy after.
    HealthyAfter(Duration),
    /// Healthy, then unhealthy from this long after start.
    HealthyFor(Duration),
    /// Exits with code 1 this long after start.
    CrashAfter(Duration),
    /// Healthy and unhealthy by turns, `period` each (healthy first),
    /// until `until` after start; healthy from then on.
    FlapUntil {
        /// Length of each healthy or unhealthy spell.
        period: Duration,
        /// When the flapping stops.
        until: Duration,
    },
}

#[derive(Debug, Clone)]
struct FakeContainer {
    info: ContainerInfo,
    digest: Option<Digest>,
    started: Option<Instant>,
    networks: BTreeSet<String>,
}

/// Answers [`Runtime::exec`] calls of a [`FakeRuntime`].
pub type ExecHandler = Arc<dyn Fn(&ContainerId, &[String]) -> ExecOutput + Send + Sync>;

#[derive(Default)]
struct RuntimeState {
    containers: BTreeMap<ContainerId, FakeContainer>,
    next_id: u64,
    calls: Vec<String>,
    counts: HashMap<&'static str, usize>,
    failures: Vec<(&'static str, usize, ErrorKind)>,
    delays: HashMap<&'static str, Duration>,
    behaviors: HashMap<Digest, Behavior>,
    lock: Option<LockInfo>,
    images: BTreeMap<String, ImageInfo>,
    /// Names of an image (by id) in other repositories.
    foreign_names: BTreeMap<String, BTreeSet<String>>,
    pulls: i64,
    networks: BTreeSet<String>,
    exec: Option<ExecHandler>,
}

/// An in-memory container engine.
///
/// Every call is recorded ([`FakeRuntime::calls`]) except `wait_exit`;
/// containers are named `c1`, `c2`, ... in creation order.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<RuntimeState>,
}

impl FakeRuntime {
    /// An empty engine.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, RuntimeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Containers of `digest` behave like `behavior`.
    pub fn behave(&self, digest: &Digest, behavior: Behavior) {
        self.lock().behaviors.insert(digest.clone(), behavior);
    }

    /// The `nth` (1-based) call of `op` (`"start"`, `"pull"`, ...) fails with `kind`.
    pub fn fail(&self, op: &'static str, nth: usize, kind: ErrorKind) {
        self.lock().failures.push((op, nth, kind));
    }

    /// Every call of `op` takes `delay` before answering.
    pub fn delay(&self, op: &'static str, delay: Duration) {
        self.lock().delays.insert(op, delay);
    }

    /// Someone else holds the deploy lock.
    pub fn hold_lock(&self, lock: LockInfo) {
        self.lock().lock = Some(lock);
    }

    /// Answer `exec` calls with `handler` (by default they exit 0, printing nothing).
    pub fn on_exec(&self, handler: ExecHandler) {
        self.lock().exec = Some(handler);
    }

    /// The networks created so far.
    pub fn networks(&self) -> Vec<String> {
        self.lock().networks.iter().cloned().collect()
    }

    /// The lock currently recorded.
    pub fn lock_info(&self) -> Option<LockInfo> {
        self.lock().lock.clone()
    }

    /// Add a running container of `release` named `name`, as a previous deploy left it.
    pub fn add_running(&self, name: &str, app: &str, release: &Release) -> ContainerId {
        let mut st = self.lock();
        st.next_id += 1;
        let id = ContainerId(format!("c{}", st.next_id));
        let mut labels = BTreeMap::new();
        labels.insert(labels::APP.to_owned(), app.to_owned());
        labels.insert(labels::DIGEST.to_owned(), release.digest.to_string());
        labels.insert(
            labels::REPOSITORY.to_owned(),
            release.repository.to_string(),
        );
        if let Some(tag) = &release.tag {
            labels.insert(labels::TAG.to_owned(), tag.to_string());
        }
        let info = ContainerInfo {
            id: id.clone(),
            name: name.to_owned(),
            image_id: format!("img-{}", release.digest.short()),
            release: Some(release.clone()),
            labels,
            state: ContainerState::Running { health: None },
            restart_count: 0,
            started_at: Some(std::time::SystemTime::now()),
        };
        st.containers.insert(
            id.clone(),
            FakeContainer {
                info,
                digest: Some(release.digest.clone()),
                started: Some(Instant::now()),
                networks: BTreeSet::new(),
            },
        );
        id
    }

    /// Put an image on the host, as an earlier pull left it.
    pub fn add_image(&self, image: ImageInfo) {
        self.lock().images.insert(image.id.clone(), image);
    }

    /// Another repository names the image `id` too (`other/app:v1`), as a
    /// `docker tag` across repositories leaves it: the engine then refuses
    /// to remove it by id, and keeps it while that name stays.
    pub fn name_elsewhere(&self, id: &str, name: &str) {
        self.lock()
            .foreign_names
            .entry(id.to_owned())
            .or_default()
            .insert(name.to_owned());
    }

    /// The names other repositories give the image `id`.
    pub fn foreign_names(&self, id: &str) -> Vec<String> {
        self.lock()
            .foreign_names
            .get(id)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The images on the host, by id.
    pub fn images(&self) -> Vec<ImageInfo> {
        self.lock().images.values().cloned().collect()
    }

    /// Stop a container from outside, as a crash would.
    pub fn set_state(&self, id: &ContainerId, state: ContainerState) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.info.state = state;
        }
    }

    /// The recorded calls, such as `"stop c1"`, `"create app sha256:0123456789ab"`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The recorded calls whose operation is one of `ops`.
    pub fn calls_of(&self, ops: &[&str]) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| ops.iter().any(|op| c.split(' ').next() == Some(op)))
            .collect()
    }

    /// Every container, by id.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        let mut st = self.lock();
        let now = Instant::now();
        let ids: Vec<ContainerId> = st.containers.keys().cloned().collect();
        ids.iter()
            .filter_map(|id| Self::refresh(&mut st, id, now).ok())
            .collect()
    }

    /// The container named `name`, if any.
    pub fn named(&self, name: &str) -> Option<ContainerInfo> {
        self.containers().into_iter().find(|c| c.name == name)
    }

    async fn enter(&self, op: &'static str, call: String) -> Result<()> {
        let (delay, failure) = {
            let mut st = self.lock();
            st.calls.push(call.clone());
            let n = {
                let count = st.counts.entry(op).or_insert(0);
                *count += 1;
                *count
            };
            let failure = st
                .failures
                .iter()
                .find(|(o, nth, _)| *o == op && *nth == n)
                .map(|(_, _, kind)| *kind);
            (st.delays.get(op).copied(), failure)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match failure {
            // Named like an adapter's error: the operation, then what went wrong.
            Some(kind) => Err(Error::new(kind, format!("{call}: scripted {op} failure"))),
            None => Ok(()),
        }
    }

    fn behavior_of(st: &RuntimeState, c: &FakeContainer) -> Behavior {
        c.digest
            .as_ref()
            .and_then(|d| st.behaviors.get(d).copied())
            .unwrap_or_default()
    }

    /// Apply scripted crashes that are due, then return the container.
    fn refresh(st: &mut RuntimeState, id: &ContainerId, now: Instant) -> Result<ContainerInfo> {
        let behavior = match st.containers.get(id) {
            Some(c) => Self::behavior_of(st, c),
            None => return Err(Error::not_found(format!("no such container {id}"))),
        };
        let c = st.containers.get_mut(id).expect("checked above");
        if let (Behavior::CrashAfter(after), Some(started), true) =
            (behavior, c.started, c.info.state.is_running())
        {
            if now >= started + after {
                c.info.state = ContainerState::Exited { code: 1 };
            }
        }
        Ok(c.info.clone())
    }

    /// What a probe of `id` sees now.
    pub fn health(&self, id: &ContainerId) -> ProbeResult {
        let mut st = self.lock();
        let now = Instant::now();
        let info = match Self::refresh(&mut st, id, now) {
            Ok(info) => info,
            Err(_) => return ProbeResult::Unhealthy("connection refused".into()),
        };
        if !info.state.is_running() {
            return ProbeResult::Unhealthy("connection refused".into());
        }
        let c = &st.containers[id];
        let up = now - c.started.unwrap_or(now);
        let healthy = match Self::behavior_of(&st, c) {
            Behavior::Healthy | Behavior::CrashAfter(_) => true,
            Behavior::Unhealthy => false,
            Behavior::HealthyAfter(d) => up >= d,
            Behavior::HealthyFor(d) => up < d,
            Behavior::FlapUntil { period, until } => {
                up >= until || (up.as_nanos() / period.as_nanos().max(1)).is_multiple_of(2)
            }
        };
        if healthy {
            ProbeResult::Healthy("200 OK".into())
        } else {
            ProbeResult::Unhealthy("status is \"DOWN\"".into())
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn current(&self, name: &str) -> Result<Option<ContainerInfo>> {
        self.enter("current", format!("current {name}")).await?;
        Ok(self.named(name))
    }

    async fn list_app(&self, app: &str) -> Result<Vec<ContainerInfo>> {
        self.enter("list_app", format!("list_app {app}")).await?;
        Ok(self
            .containers()
            .into_iter()
            .filter(|c| c.labels.get(labels::APP).map(String::as_str) == Some(app))
            .collect())
    }

    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo> {
        self.enter("inspect", format!("inspect {id}")).await?;
        let mut st = self.lock();
        Self::refresh(&mut st, id, Instant::now())
    }

    async fn pull(
        &self,
        image: &ImageRef,
        _platform: Option<String>,
        progress: Option<ProgressSink>,
    ) -> Result<()> {
        self.enter("pull", format!("pull {image}")).await?;
        if let Some(digest) = image.digest() {
            // Image ids match the ones containers created from it report;
            // each pull is newer than the last.
            let mut st = self.lock();
            st.pulls += 1;
            let created = st.pulls;
            let id = format!("img-{}", digest.short());
            st.images.entry(id.clone()).or_insert(ImageInfo {
                id,
                digests: vec![digest],
                tags: Vec::new(),
                created,
                size: 1024,
                shared: false,
            });
        }
        if let Some(sink) = progress {
            sink(PullProgress {
                layers_total: 1,
                layers_done: 1,
                bytes_done: 1024,
                bytes_total: 1024,
            });
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        let digest = spec.image.digest();
        let short = digest
            .as_ref()
            .map(|d| d.short().to_owned())
            .unwrap_or_default();
        self.enter("create", format!("create {} sha256:{short}", spec.name))
            .await?;
        let mut st = self.lock();
        if st.containers.values().any(|c| c.info.name == spec.name) {
            return Err(Error::conflict(format!(
                "container name {} is already in use",
                spec.name
            )));
        }
        st.next_id += 1;
        let id = ContainerId(format!("c{}", st.next_id));
        let release = digest.clone().map(|digest| Release {
            repository: spec.image.repo(),
            tag: spec.labels.get(labels::TAG).and_then(|t| t.parse().ok()),
            digest,
        });
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image_id: format!("img-{short}"),
            release,
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            restart_count: 0,
            started_at: None,
        };
        let networks = spec
            .network
            .iter()
            .filter(|n| st.networks.contains(*n))
            .cloned()
            .collect();
        st.containers.insert(
            id.clone(),
            FakeContainer {
                info,
                digest,
                started: None,
                networks,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &ContainerId) -> Result<()> {
        self.enter("start", format!("start {id}")).await?;
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("no such container {id}")))?;
        if !c.info.state.is_running() {
            c.info.state = ContainerState::Running { health: None };
            c.started = Some(Instant::now());
            c.info.started_at = Some(std::time::SystemTime::now());
        }
        Ok(())
    }

    async fn stop(&self, id: &ContainerId, _timeout: Duration) -> Result<()> {
        self.enter("stop", format!("stop {id}")).await?;
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("no such container {id}")))?;
        if c.info.state.is_running() {
            c.info.state = ContainerState::Exited { code: 0 };
        }
        Ok(())
    }

    async fn rename(&self, id: &ContainerId, new_name: &str) -> Result<()> {
        self.enter("rename", format!("rename {id} {new_name}"))
            .await?;
        let mut st = self.lock();
        if st
            .containers
            .values()
            .any(|c| c.info.name == new_name && &c.info.id != id)
        {
            return Err(Error::conflict(format!(
                "container name {new_name} is already in use"
            )));
        }
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("no such container {id}")))?;
        c.info.name = new_name.to_owned();
        Ok(())
    }

    async fn remove(&self, id: &ContainerId) -> Result<()> {
        self.enter("remove", format!("remove {id}")).await?;
        self.lock()
            .containers
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| Error::not_found(format!("no such container {id}")))
    }

    async fn logs(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>> {
        self.enter("logs", format!("logs {id}")).await?;
        Ok((1..=lines.min(3))
            .map(|n| format!("{id} log line {n}"))
            .collect())
    }

    async fn wait_exit(&self, id: &ContainerId) -> Result<ContainerExit> {
        let crash_at = {
            let mut st = self.lock();
            let info = Self::refresh(&mut st, id, Instant::now())?;
            if let ContainerState::Exited { code } = info.state {
                return Ok(ContainerExit::Exited { code });
            }
            let c = &st.containers[id];
            match (Self::behavior_of(&st, c), c.started) {
                (Behavior::CrashAfter(after), Some(started)) => Some(started + after),
                _ => None,
            }
        };
        match crash_at {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                Ok(ContainerExit::Exited { code: 1 })
            }
            None => pending().await,
        }
    }

    async fn exec(
        &self,
        id: &ContainerId,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput> {
        self.enter("exec", format!("exec {id} {}", cmd.join(" ")))
            .await?;
        let handler = {
            let mut st = self.lock();
            if !Self::refresh(&mut st, id, Instant::now())?
                .state
                .is_running()
            {
                return Err(Error::conflict(format!("container {id} is not running")));
            }
            st.exec.clone()
        };
        Ok(match handler {
            Some(handler) => handler(id, cmd),
            None => ExecOutput::new(0, ""),
        })
    }

    async fn list_images(&self, repository: &Repository) -> Result<Vec<ImageInfo>> {
        self.enter("list_images", format!("list_images {repository}"))
            .await?;
        // The fake's images all belong to the repository asked about, while
        // they have a name in it.
        let st = self.lock();
        Ok(st
            .images
            .values()
            .filter(|i| !i.tags.is_empty() || !i.digests.is_empty())
            .map(|i| ImageInfo {
                shared: st.foreign_names.get(&i.id).is_some_and(|n| !n.is_empty()),
                ..i.clone()
            })
            .collect())
    }

    /// By id, or by one name of this repository (`repo:tag`,
    /// `repo@sha256:...`), as the engine does: a name goes alone, the image
    /// with its last name.
    async fn remove_image(&self, id: &str) -> Result<()> {
        self.enter("remove_image", format!("remove_image {id}"))
            .await?;
        let used: BTreeSet<String> = self.containers().into_iter().map(|c| c.image_id).collect();
        let mut st = self.lock();
        // The name's image, and whether the name was the image's id.
        let found = match st.images.get(id) {
            Some(image) => Some((image.id.clone(), true)),
            None => {
                let name = id.rsplit('/').next().unwrap_or(id);
                st.images
                    .values()
                    .find(|image| match name.split_once('@') {
                        Some((_, digest)) => image.digests.iter().any(|d| d.as_str() == digest),
                        None => name
                            .rsplit_once(':')
                            .is_some_and(|(_, tag)| image.tags.iter().any(|t| t == tag)),
                    })
                    .map(|image| (image.id.clone(), false))
            }
        };
        let Some((image_id, by_id)) = found else {
            return Err(Error::not_found(format!("no such image {id}")));
        };
        let foreign = st
            .foreign_names
            .get(&image_id)
            .is_some_and(|n| !n.is_empty());
        if by_id && foreign {
            return Err(Error::conflict(format!(
                "unable to delete {id} (must be forced): image is referenced in multiple repositories"
            )));
        }
        let Some(image) = st.images.get_mut(&image_id) else {
            return Err(Error::not_found(format!("no such image {id}")));
        };
        if !by_id {
            let names = image.tags.len() + image.digests.len();
            let name = id.rsplit('/').next().unwrap_or(id);
            if names > 1 || foreign {
                match name.split_once('@') {
                    Some((_, digest)) => image.digests.retain(|d| d.as_str() != digest),
                    None => {
                        let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
                        image.tags.retain(|t| t != tag);
                    }
                }
                return Ok(());
            }
        }
        if used.contains(&image_id) {
            return Err(Error::conflict(format!(
                "image {id} is used by a container"
            )));
        }
        st.images.remove(&image_id);
        Ok(())
    }

    async fn create_network(&self, name: &str) -> Result<bool> {
        self.enter("create_network", format!("create_network {name}"))
            .await?;
        Ok(self.lock().networks.insert(name.to_owned()))
    }

    async fn connect_network(&self, id: &ContainerId, network: &str) -> Result<()> {
        self.enter("connect_network", format!("connect_network {id} {network}"))
            .await?;
        let mut st = self.lock();
        if !st.networks.contains(network) {
            return Err(Error::not_found(format!("no such network {network}")));
        }
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("no such container {id}")))?;
        c.networks.insert(network.to_owned());
        Ok(())
    }

    /// `10.0.0.N` for container `cN` while it runs on the network.
    async fn network_address(&self, id: &ContainerId, network: &str) -> Result<Option<String>> {
        self.enter("network_address", format!("network_address {id} {network}"))
            .await?;
        let mut st = self.lock();
        let info = Self::refresh(&mut st, id, Instant::now())?;
        let attached = st.containers[id].networks.contains(network);
        Ok((attached && info.state.is_running())
            .then(|| format!("10.0.0.{}", id.as_str().trim_start_matches('c'))))
    }
}

/// The engine's own deploy lock, as `rollback-docker` keeps it; calls are
/// recorded as `acquire_lock`, `lock_status` and `release_lock`.
#[async_trait]
impl DeployLock for FakeRuntime {
    async fn acquire(&self, lock: &LockInfo) -> Result<LockAttempt> {
        self.enter("acquire_lock", format!("acquire_lock {}", lock.app))
            .await?;
        let mut st = self.lock();
        match &st.lock {
            Some(held) => Ok(LockAttempt::Held(held.clone())),
            None => {
                st.lock = Some(lock.clone());
                Ok(LockAttempt::Acquired)
            }
        }
    }

    async fn status(&self, app: &str) -> Result<Option<LockInfo>> {
        self.enter("lock_status", format!("lock_status {app}"))
            .await?;
        Ok(self.lock().lock.clone())
    }

    async fn release(&self, app: &str, deployment: &DeploymentId) -> Result<bool> {
        self.enter("release_lock", format!("release_lock {app}"))
            .await?;
        let mut st = self.lock();
        if st
            .lock
            .as_ref()
            .is_some_and(|l| &l.deployment == deployment)
        {
            st.lock = None;
            return Ok(true);
        }
        Ok(false)
    }

    async fn break_lock(&self, app: &str) -> Result<bool> {
        self.enter("break_lock", format!("break_lock {app}"))
            .await?;
        Ok(self.lock().lock.take().is_some())
    }
}

/// A probe that asks a [`FakeRuntime`] how the probed container behaves.
pub struct FakeProbe {
    runtime: Arc<FakeRuntime>,
    delay: Mutex<Option<Duration>>,
    checks: Mutex<Vec<Instant>>,
}

impl FakeProbe {
    /// A probe of containers of `runtime`.
    pub fn new(runtime: Arc<FakeRuntime>) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            delay: Mutex::new(None),
            checks: Mutex::new(Vec::new()),
        })
    }

    /// Each answer takes `delay` (beyond the attempt timeout, it is cut off).
    pub fn delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = Some(delay);
    }

    /// When each check began.
    pub fn checks(&self) -> Vec<Instant> {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl HealthProbe for FakeProbe {
    async fn check(&self, container: &ContainerId, timeout: Duration) -> ProbeResult {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Instant::now());
        let delay = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(delay) = delay {
            if delay >= timeout {
                tokio::time::sleep(timeout).await;
                return ProbeResult::Unhealthy("timed out".into());
            }
            tokio::time::sleep(delay).await;
        }
        self.runtime.health(container)
    }

    fn describe(&self) -> String {
        "fake probe".into()
    }
}

/// An in-memory registry: tags to digests, with a log of copies.
#[derive(Default)]
pub struct FakeRegistry {
    tags: Mutex<BTreeMap<String, Digest>>,
    copies: Mutex<Vec<String>>,
    fail_copy: Mutex<Vec<(usize, ErrorKind)>>,
    unreachable: Mutex<bool>,
}

impl FakeRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Point `repo:tag` at `digest`.
    pub fn set_tag(&self, repo: &Repository, tag: &str, digest: &Digest) {
        Self::guard(&self.tags).insert(format!("{repo}:{tag}"), digest.clone());
    }

    /// The digest `repo:tag` points at.
    pub fn tag(&self, repo: &Repository, tag: &str) -> Option<Digest> {
        Self::guard(&self.tags)
            .get(&format!("{repo}:{tag}"))
            .cloned()
    }

    /// The `nth` (1-based) copy fails with `kind`.
    pub fn fail_copy(&self, nth: usize, kind: ErrorKind) {
        Self::guard(&self.fail_copy).push((nth, kind));
    }

    /// Every request fails as if the registry were down.
    pub fn set_unreachable(&self, down: bool) {
        *Self::guard(&self.unreachable) = down;
    }

    /// Copies done or attempted, as `"src -> dst"`.
    pub fn copies(&self) -> Vec<String> {
        Self::guard(&self.copies).clone()
    }
}

#[async_trait]
impl Registry for FakeRegistry {
    async fn resolve(&self, reference: &ImageRef) -> Result<Digest> {
        if *Self::guard(&self.unreachable) {
            return Err(Error::unavailable("registry unreachable"));
        }
        if let Some(digest) = reference.digest() {
            return Ok(digest);
        }
        let tag = reference.tag().unwrap_or("latest");
        Self::guard(&self.tags)
            .get(&format!("{}:{tag}", reference.repo()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("manifest unknown: {reference}")))
    }

    async fn copy(&self, source: &ImageRef, destination: &ImageRef) -> Result<CopyReport> {
        let n = {
            let mut copies = Self::guard(&self.copies);
            copies.push(format!("{source} -> {destination}"));
            copies.len()
        };
        if let Some((_, kind)) = Self::guard(&self.fail_copy)
            .iter()
            .find(|(nth, _)| *nth == n)
        {
            return Err(Error::new(*kind, "scripted copy failure"));
        }
        let digest = self.resolve(source).await?;
        let tag = destination
            .tag()
            .ok_or_else(|| Error::invalid_input("destination has no tag"))?;
        let key = format!("{}:{tag}", destination.repo());
        let previous = Self::guard(&self.tags).insert(key, digest.clone());
        Ok(CopyReport {
            written: previous.as_ref() != Some(&digest),
            digest,
        })
    }
}

/// A proxy in front of the app on a [`FakeRuntime`]'s host, for start-first
/// deploys. Its calls go into the runtime's record, in order with the
/// engine's (`proxy_ensure`, `proxy_current`, `proxy_switch c2`,
/// `proxy_drain c1`), and fail like the engine's ([`FakeRuntime::fail`]
/// with `"proxy_switch"`, ...). Booting it creates its network.
pub struct FakeSwitch {
    runtime: Arc<FakeRuntime>,
    network: String,
    current: Mutex<Option<Upstream>>,
    life: Mutex<Life>,
}

/// Whether a [`FakeSwitch`]'s proxy serves.
#[derive(Debug, Clone, Copy)]
enum Life {
    Serving,
    /// Stops this long after it is first watched.
    StopsAfter(Duration),
    Stopped,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeSwitch {
    /// A proxy on `network` that sends the traffic nowhere yet.
    pub fn new(runtime: Arc<FakeRuntime>, network: &str) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            network: network.to_owned(),
            current: Mutex::new(None),
            life: Mutex::new(Life::Serving),
        })
    }

    /// The proxy stops this long after it is first watched; until it is
    /// booted again, every call to it fails as unavailable.
    pub fn stop_after(&self, after: Duration) {
        *locked(&self.life) = Life::StopsAfter(after);
    }

    fn stopped(&self) -> bool {
        matches!(*locked(&self.life), Life::Stopped)
    }

    async fn call(&self, op: &'static str, call: String) -> Result<()> {
        self.runtime.enter(op, call.clone()).await?;
        if self.stopped() {
            return Err(Error::unavailable(format!(
                "{call}: the fake proxy is not running"
            )));
        }
        Ok(())
    }

    /// The container the proxy sends the traffic to now.
    pub fn target(&self) -> Option<ContainerId> {
        self.upstream().map(|u| u.container)
    }

    /// Send the traffic to `container` (as a deploy before the test left it).
    pub fn set_target(&self, container: &ContainerId, port: u16) {
        *locked(&self.current) = Some(Upstream::of(container, port));
    }

    fn upstream(&self) -> Option<Upstream> {
        locked(&self.current).clone()
    }
}

#[async_trait]
impl TrafficSwitch for FakeSwitch {
    async fn ensure(&self) -> Result<()> {
        self.runtime
            .enter("proxy_ensure", "proxy_ensure".into())
            .await?;
        if self.stopped() {
            *locked(&self.life) = Life::Serving;
        }
        self.runtime.create_network(&self.network).await.map(drop)
    }

    async fn current(&self) -> Result<Option<Upstream>> {
        self.call("proxy_current", "proxy_current".into()).await?;
        Ok(self.upstream())
    }

    async fn switch(&self, to: &Upstream) -> Result<()> {
        self.call("proxy_switch", format!("proxy_switch {}", to.container))
            .await?;
        *locked(&self.current) = Some(to.clone());
        Ok(())
    }

    async fn drain(&self, from: &Upstream, _drain: Duration) -> Result<()> {
        self.call("proxy_drain", format!("proxy_drain {}", from.container))
            .await
    }

    async fn wait_stopped(&self) -> Result<Error> {
        let life = *locked(&self.life);
        match life {
            Life::StopsAfter(after) => {
                tokio::time::sleep(after).await;
                *locked(&self.life) = Life::Stopped;
                Ok(Error::unavailable("the fake proxy stopped"))
            }
            Life::Stopped => Ok(Error::unavailable("the fake proxy is not running")),
            Life::Serving => pending().await,
        }
    }

    fn describe(&self) -> String {
        "the fake proxy".into()
    }
}
