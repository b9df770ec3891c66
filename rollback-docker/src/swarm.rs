//! Swarm services on a manager's Engine API: the calls a Swarm strategy
//! makes. Rollback decides, not Swarm: updates run with
//! `FailureAction: pause`, every new task is probed directly on its overlay
//! address, and a failure rolls back to the previous spec explicitly.
//!
//! Every change passes the service's version index read before it, so an
//! update made by someone else in between fails as [`rollback_core::ErrorKind::Conflict`]
//! and overwrites nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSettings,
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, HostConfig, NetworkAttachmentConfig,
    NetworkCreateRequest, NetworkingConfig, Service, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec, TaskSpecContainerSpec, TaskState,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectNetworkOptions, ListTasksOptions, LogsOptions,
    RemoveContainerOptions, UpdateServiceOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use rollback_core::{Error, Result};

use crate::error::classify;
use crate::DockerRuntime;

/// Service label holding the deploy lock's owner.
pub const LOCK_OWNER_LABEL: &str = "rollback.lock.owner";
/// Service label holding when the lock was taken (seconds since the epoch).
pub const LOCK_SINCE_LABEL: &str = "rollback.lock.since";

/// The task template of a service `rollback` creates: what `[swarm]` and
/// `[container]` say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskTemplate {
    /// Replicas when the service is created.
    pub replicas: u64,
    /// The attachable overlay network the tasks join (and probes run on).
    pub network: String,
    /// The tasks' port that probes use.
    pub port: u16,
    /// `KEY=VALUE` environment of the tasks.
    pub env: Vec<String>,
    /// Labels of the service.
    pub labels: BTreeMap<String, String>,
    /// Command (arguments to the image's entrypoint), when set.
    pub command: Option<Vec<String>>,
    /// Host-mode published ports, `(published, target)`: no routing mesh.
    pub publish: Vec<(u16, u16)>,
    /// Tasks updated at once.
    pub parallelism: u64,
    /// The tasks' HEALTHCHECK test (`["CMD", ...]` or `["CMD-SHELL", ...]`),
    /// checked every `health_interval`: Swarm adds a task to the service's
    /// DNS only once it passes; `None` keeps the image's own.
    pub healthcheck: Option<Vec<String>>,
    /// Time between two runs of the HEALTHCHECK.
    pub health_interval: Duration,
    /// How long one run of the HEALTHCHECK may take.
    pub health_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a task stops (`[container]
    /// stop_timeout`); Swarm's default (10 s) when `None`.
    pub stop_grace: Option<Duration>,
}

impl TaskTemplate {
    /// The task's container spec running `image`.
    fn container_spec(&self, image: &str) -> TaskSpecContainerSpec {
        TaskSpecContainerSpec {
            image: Some(image.to_owned()),
            env: Some(self.env.clone()),
            args: self.command.clone(),
            labels: Some(self.labels.clone().into_iter().collect()),
            stop_grace_period: self.stop_grace.map(nanos),
            health_check: self.healthcheck.as_ref().map(|test| HealthConfig {
                test: Some(test.clone()),
                interval: Some(nanos(self.health_interval)),
                timeout: Some(nanos(self.health_timeout)),
                start_period: Some(0),
                // One slow answer on a busy node must not kill a task.
                retries: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.max(Duration::from_millis(100)).as_nanos()).unwrap_or(i64::MAX)
}

/// A service as the manager reports it.
#[derive(Debug, Clone)]
pub struct ServiceState {
    /// Service id.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Version index: passed back with every change (compare-and-swap).
    pub version: u64,
    /// The current spec.
    pub spec: ServiceSpec,
    /// The image reference the tasks run (`repo:tag@sha256:...`).
    pub image: String,
    /// The digest pinned in that reference, when there is one.
    pub digest: Option<String>,
    /// Swarm's update state (`updating`, `paused`, `completed`,
    /// `rollback_started`, `rollback_completed`, ...), when an update ran.
    pub update_state: Option<String>,
    /// Swarm's message about that update.
    pub update_message: Option<String>,
    /// When the last update (or rollback) began, on the manager's clock:
    /// the tasks it started were created after.
    pub update_started: Option<std::time::SystemTime>,
}

impl ServiceState {
    fn from_service(service: Service) -> Result<Self> {
        let spec = service
            .spec
            .ok_or_else(|| Error::other("the manager returned a service without a spec"))?;
        let image = image_of(&spec).unwrap_or_default();
        let digest = image.split_once('@').map(|(_, d)| d.to_owned());
        let update = service.update_status;
        Ok(ServiceState {
            id: service.id.unwrap_or_default(),
            name: spec.name.clone().unwrap_or_default(),
            version: service.version.and_then(|v| v.index).unwrap_or(0),
            image,
            digest,
            update_state: update
                .as_ref()
                .and_then(|u| u.state.map(|s| s.to_string()))
                .filter(|s| !s.is_empty()),
            update_started: update
                .as_ref()
                .and_then(|u| u.started_at.as_deref())
                .and_then(crate::convert::parse_time),
            update_message: update.and_then(|u| u.message),
            spec,
        })
    }

    /// The lock owner recorded in the service's labels.
    pub fn lock_owner(&self) -> Option<&str> {
        self.spec
            .labels
            .as_ref()
            .and_then(|l| l.get(LOCK_OWNER_LABEL))
            .map(String::as_str)
    }
}

/// One task of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Task id.
    pub id: String,
    /// Replica slot.
    pub slot: Option<i64>,
    /// The image reference of the task's spec.
    pub image: String,
    /// Observed state (`running`, `failed`, `rejected`, `shutdown`, ...).
    pub state: String,
    /// The state Swarm wants it in.
    pub desired_state: String,
    /// Exit code of its container, once it exited.
    pub exit_code: Option<i64>,
    /// Swarm's message or error for the task.
    pub message: String,
    /// Its address on the service's overlay network (no prefix length).
    pub address: Option<String>,
    /// Its container id, once it has one.
    pub container_id: Option<String>,
    /// When the manager created it.
    pub created: Option<std::time::SystemTime>,
}

impl TaskInfo {
    /// Running, and meant to be.
    pub fn is_running(&self) -> bool {
        self.state == "running" && self.desired_state == "running"
    }

    /// A task that failed, was rejected, or exited (a server that exits,
    /// even with 0, is a failure: Swarm restarts it).
    pub fn has_failed(&self) -> bool {
        matches!(
            self.state.as_str(),
            "failed" | "rejected" | "orphaned" | "complete"
        ) || (self.state == "shutdown"
            && self.desired_state != "shutdown"
            && self.exit_code.is_some_and(|c| c != 0))
    }
}

/// Failed, rejected or exited tasks among `tasks` (those of one image).
/// Swarm restarts a task by starting another in its slot once one of these
/// is seen, so this also catches every restart; tasks an update or a
/// rollback shut down are not failures.
pub fn failures(tasks: &[TaskInfo]) -> Vec<String> {
    tasks
        .iter()
        .filter(|t| t.has_failed())
        .map(|t| {
            let code = t
                .exit_code
                .map(|c| format!(", exit {c}"))
                .unwrap_or_default();
            let slot = t.slot.map(|s| format!(" (slot {s})")).unwrap_or_default();
            format!(
                "task {}{slot} {}{code}: {}",
                short(&t.id),
                t.state,
                t.message
            )
        })
        .collect()
}

/// What a probe of a task got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProbe {
    /// HTTP status, when the task answered.
    pub status: Option<u16>,
    /// Response body (empty on errors).
    pub body: String,
    /// What went wrong, when the task did not answer.
    pub error: Option<String>,
}

/// The Swarm adapter: a manager's Engine API.
#[derive(Debug, Clone)]
pub struct Swarm {
    docker: Docker,
    url: String,
}

impl Swarm {
    /// Use the connection of `runtime`, which must reach a swarm manager.
    pub fn new(runtime: &DockerRuntime) -> Self {
        Swarm {
            docker: runtime.docker().clone(),
            url: runtime.url().to_owned(),
        }
    }

    /// Connect to the manager at `url` (as [`DockerRuntime::connect`]).
    pub async fn connect(url: Option<&str>, timeout: Duration) -> Result<Self> {
        Ok(Swarm::new(&DockerRuntime::connect(url, timeout).await?))
    }

    /// An adapter whose calls go nowhere, for unit tests of what it
    /// decides without a manager.
    #[cfg(test)]
    pub(crate) fn from_docker_for_tests() -> Self {
        let docker =
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .expect("a client that never connects");
        Swarm {
            docker,
            url: "tcp://127.0.0.1:9".into(),
        }
    }

    /// The manager's address, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self, what: &str, e: EngineError) -> Error {
        classify(&self.url, what, e)
    }

    /// Make sure the attachable overlay network `name` exists; its id.
    pub async fn ensure_network(&self, name: &str) -> Result<String> {
        if let Some(id) = self.network_id(name).await? {
            return Ok(id);
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(HashMap::from([("rollback.managed".into(), "true".into())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(created) => Ok(created.id),
            // Created meanwhile by someone else: fine, it is the same network.
            Err(e) if status_of(&e) == Some(409) => self
                .network_id(name)
                .await?
                .ok_or_else(|| Error::conflict(format!("network {name} vanished on {}", self.url))),
            Err(e) => Err(self.err(&format!("create overlay network {name}"), e)),
        }
    }

    async fn network_id(&self, name: &str) -> Result<Option<String>> {
        match self.docker.inspect_network(name, None).await {
            Ok(net) => {
                if net.driver.as_deref() != Some("overlay") || net.attachable != Some(true) {
                    return Err(Error::invalid_input(format!(
                        "network {name} on {} is not an attachable overlay network",
                        self.url
                    )));
                }
                Ok(net.id)
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err(&format!("inspect network {name}"), e)),
        }
    }

    /// The service `name`, or `None` when there is none.
    pub async fn service(&self, name: &str) -> Result<Option<ServiceState>> {
        match self.docker.inspect_service(name, None).await {
            Ok(service) => ServiceState::from_service(service).map(Some),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err(&format!("inspect service {name}"), e)),
        }
    }

    async fn existing(&self, name: &str) -> Result<ServiceState> {
        self.service(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("service {name} not found on {}", self.url)))
    }

    /// Check that the manager resolves `image` in its registry and return
    /// the manifest digest, before anything changes.
    pub async fn resolve(&self, image: &str) -> Result<String> {
        self.docker
            .inspect_registry_image(image, None)
            .await
            .map(|d| d.descriptor.digest.unwrap_or_default())
            .map_err(|e| self.err(&format!("resolve image {image} in its registry"), e))
            .and_then(|digest| {
                if digest.is_empty() {
                    Err(Error::other(format!(
                        "the manager {} resolved {image} without a digest",
                        self.url
                    )))
                } else {
                    Ok(digest)
                }
            })
    }

    /// Create the service `name` running `image` (pinned by digest) from
    /// `template`: replicated, on the template's network, `endpoint_mode:
    /// dnsrr` (no virtual IP to balance old and new tasks), updates
    /// start-first with `FailureAction: pause`.
    pub async fn create(
        &self,
        name: &str,
        image: &str,
        template: &TaskTemplate,
    ) -> Result<ServiceState> {
        self.resolve(image).await?;
        self.ensure_network(&template.network).await?;
        let spec = ServiceSpec {
            name: Some(name.to_owned()),
            labels: Some(template.labels.clone().into_iter().collect()),
            task_template: Some(TaskSpec {
                container_spec: Some(template.container_spec(image)),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(template.replicas as i64),
                }),
                ..Default::default()
            }),
            update_config: Some(update_config(template.parallelism)),
            rollback_config: Some(rollback_config(template.parallelism)),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(template.network.clone()),
                ..Default::default()
            }]),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(
                    template
                        .publish
                        .iter()
                        .map(|(published, target)| EndpointPortConfig {
                            target_port: Some(i64::from(*target)),
                            published_port: Some(i64::from(*published)),
                            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
        };
        self.docker
            .create_service(spec, None)
            .await
            .map_err(|e| self.err(&format!("create service {name}"), e))?;
        self.existing(name).await
    }

    /// Update `current` (as read before) to `image`, which must be pinned
    /// by digest: start-first, `FailureAction: pause`, `parallelism` tasks
    /// at once. Returns the service as it is after the update was accepted.
    /// Fails with [`rollback_core::ErrorKind::Conflict`] when the service changed since
    /// `current` was read.
    pub async fn update(
        &self,
        current: &ServiceState,
        image: &str,
        parallelism: u64,
    ) -> Result<ServiceState> {
        let mut spec = self.spec_for(current, image).await?;
        let task = spec.task_template.get_or_insert_with(Default::default);
        let container = task.container_spec.get_or_insert_with(Default::default);
        container.image = Some(image.to_owned());
        spec.update_config = Some(update_config(parallelism));
        spec.rollback_config = Some(rollback_config(parallelism));
        self.write_spec(
            current,
            spec,
            &format!("update service {} to {image}", current.name),
        )
        .await
    }

    /// Update `current` (as read before) to run `image` (pinned by
    /// digest) from `template`: the task's environment, command, labels
    /// and HEALTHCHECK as the template says, the service's labels merged
    /// (rollback's replaced, others kept), start-first with `FailureAction:
    /// pause`. Fails with [`rollback_core::ErrorKind::Conflict`] when the
    /// service changed since `current` was read.
    pub async fn deploy(
        &self,
        current: &ServiceState,
        image: &str,
        template: &TaskTemplate,
    ) -> Result<ServiceState> {
        let mut spec = self.spec_for(current, image).await?;
        let task = spec.task_template.get_or_insert_with(Default::default);
        let old = task.container_spec.take().unwrap_or_default();
        // What the template does not say (mounts, user, ...) stays as the
        // service had it.
        task.container_spec = Some(TaskSpecContainerSpec {
            mounts: old.mounts,
            user: old.user,
            hostname: old.hostname,
            ..template.container_spec(image)
        });
        let labels = spec.labels.get_or_insert_with(Default::default);
        labels.retain(|k, _| !k.starts_with("io.rollback."));
        labels.extend(template.labels.clone());
        spec.update_config = Some(update_config(template.parallelism));
        spec.rollback_config = Some(rollback_config(template.parallelism));
        self.write_spec(
            current,
            spec,
            &format!("update service {} to {image}", current.name),
        )
        .await
    }

    /// The spec of `current`, to be changed to run `image`, which must be
    /// pinned by digest and resolve in its registry from the manager.
    async fn spec_for(&self, current: &ServiceState, image: &str) -> Result<ServiceSpec> {
        if !image.contains("@sha256:") {
            return Err(Error::invalid_input(format!(
                "image {image} is not pinned by digest"
            )));
        }
        self.resolve(image).await?;
        Ok(current.spec.clone())
    }

    async fn write_spec(
        &self,
        current: &ServiceState,
        spec: ServiceSpec,
        what: &str,
    ) -> Result<ServiceState> {
        let options = UpdateServiceOptions {
            version: version_param(current.version)?,
            ..Default::default()
        };
        match self
            .docker
            .update_service(&current.id, spec, options, None)
            .await
        {
            Ok(_) => self.existing(&current.name).await,
            Err(e) if is_out_of_sequence(&e) => Err(self.changed_meanwhile(current)),
            Err(e) => Err(self.err(what, e)),
        }
    }

    fn changed_meanwhile(&self, current: &ServiceState) -> Error {
        Error::conflict(format!(
            "service {} on {} was changed by someone else since version {} was read; \
             nothing was overwritten",
            current.name, self.url, current.version
        ))
    }

    /// The tasks of `service`, all of them or those whose spec runs `image`.
    pub async fn tasks(&self, service: &str, image: Option<&str>) -> Result<Vec<TaskInfo>> {
        let current = self.existing(service).await?;
        let tasks = self.tasks_of(&current, image).await?;
        self.with_addresses(&current, tasks).await
    }

    /// The tasks of `current` (the service as just read), all of them or
    /// those whose spec runs `image`, without their addresses: what a watch
    /// for failures needs, without reading the service or its network again.
    pub async fn tasks_of(
        &self,
        current: &ServiceState,
        image: Option<&str>,
    ) -> Result<Vec<TaskInfo>> {
        let options = ListTasksOptions {
            filters: Some(HashMap::from([(
                "service".into(),
                vec![current.id.clone()],
            )])),
        };
        let tasks = self
            .docker
            .list_tasks(Some(options))
            .await
            .map_err(|e| self.err(&format!("list the tasks of service {}", current.name), e))?;
        let mut out: Vec<TaskInfo> = tasks
            .into_iter()
            .map(|t| task_info(t, &HashMap::new()))
            .filter(|t| image.is_none_or(|i| t.image == i))
            .collect();
        out.sort_by(|a, b| (a.slot, &a.id).cmp(&(b.slot, &b.id)));
        Ok(out)
    }

    /// `tasks` of `current` with their addresses on the service's network.
    pub async fn with_addresses(
        &self,
        current: &ServiceState,
        mut tasks: Vec<TaskInfo>,
    ) -> Result<Vec<TaskInfo>> {
        let network = current
            .spec
            .task_template
            .as_ref()
            .and_then(|t| t.networks.as_ref())
            .or(current.spec.networks.as_ref())
            .and_then(|n| n.first())
            .and_then(|n| n.target.clone());
        let Some(net) = network else {
            return Ok(tasks);
        };
        let addresses = self.overlay_addresses(&net).await?;
        for task in &mut tasks {
            task.address = addresses.get(&task.id).cloned();
            // The network lists a task only once Swarm bound it to the
            // service, after its HEALTHCHECK passed; a task still
            // `starting` on this node is found through its container.
            if task.address.is_none() {
                if let Some(id) = task.container_id.clone() {
                    task.address = self.container_address(&id, &net).await;
                }
            }
        }
        Ok(tasks)
    }

    /// The address of container `id` (on this node) on `network`.
    async fn container_address(&self, id: &str, network: &str) -> Option<String> {
        let info = self.docker.inspect_container(id, None).await.ok()?;
        let networks = info.network_settings?.networks?;
        networks
            .iter()
            .find(|(name, n)| name.as_str() == network || n.network_id.as_deref() == Some(network))
            .and_then(|(_, n)| n.ip_address.clone())
            .filter(|ip| !ip.is_empty())
    }

    /// Task id -> address on the overlay network `network`, from the
    /// manager's view of the network (all nodes' tasks).
    async fn overlay_addresses(&self, network: &str) -> Result<HashMap<String, String>> {
        let options = InspectNetworkOptions {
            verbose: true,
            scope: Some("swarm".into()),
        };
        let net = match self.docker.inspect_network(network, Some(options)).await {
            Ok(net) => net,
            Err(e) if status_of(&e) == Some(404) => return Ok(HashMap::new()),
            Err(e) => return Err(self.err(&format!("inspect network {network}"), e)),
        };
        let mut out = HashMap::new();
        for service in net.services.unwrap_or_default().values() {
            let Some(tasks) = service.get("Tasks").and_then(|t| t.as_array()) else {
                continue;
            };
            for task in tasks {
                let name = task.get("Name").and_then(|n| n.as_str()).unwrap_or("");
                let ip = task
                    .get("EndpointIP")
                    .and_then(|n| n.as_str())
                    .unwrap_or("");
                // Names are `service.slot.task-id`.
                if let (Some((_, id)), false) = (name.rsplit_once('.'), ip.is_empty()) {
                    out.insert(id.to_owned(), ip.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// Wait until `replicas` tasks of `service` run `image`, each with an
    /// overlay address; fails early when tasks of that image fail.
    pub async fn wait_running(
        &self,
        service: &str,
        image: &str,
        replicas: usize,
        limit: Duration,
    ) -> Result<Vec<TaskInfo>> {
        let deadline = Instant::now() + limit;
        loop {
            let tasks = self.tasks(service, Some(image)).await?;
            let failed = failures(&tasks);
            if !failed.is_empty() {
                return Err(Error::unhealthy(format!(
                    "service {service} on {}: {}",
                    self.url,
                    failed.join("; ")
                )));
            }
            let running: Vec<TaskInfo> = tasks
                .into_iter()
                .filter(|t| t.is_running() && t.address.is_some())
                .collect();
            if running.len() >= replicas {
                return Ok(running);
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "service {service} on {}: {} of {replicas} tasks of {image} running after {}",
                    self.url,
                    running.len(),
                    humantime::format_duration(limit)
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Wait until tasks of `image` in `service` fail (see [`failures`]);
    /// what failed, or `None` when nothing failed within `limit`.
    pub async fn wait_failure(
        &self,
        service: &str,
        image: &str,
        limit: Duration,
    ) -> Result<Option<Vec<String>>> {
        let deadline = Instant::now() + limit;
        loop {
            let failed = failures(&self.tasks(service, Some(image)).await?);
            if !failed.is_empty() {
                return Ok(Some(failed));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// GET `http://address:port/path` from a short-lived probe container on
    /// `network`, run from `probe_image` (which needs a busybox `sh`,
    /// `timeout` and `wget`): the task itself answers, not a balancer.
    pub async fn probe(
        &self,
        network: &str,
        probe_image: &str,
        address: &str,
        port: u16,
        path: &str,
        limit: Duration,
    ) -> Result<TaskProbe> {
        let secs = limit.as_secs().max(1);
        let url = format!("http://{address}:{port}/{}", path.trim_start_matches('/'));
        // busybox wget's own -T is unreliable; `timeout` bounds it instead.
        // Headers (-S) go to stderr, the body to a file printed after a marker.
        let script = format!(
            "mkdir -p /tmp; timeout {secs} wget -S -q -O /tmp/body '{url}' 2>/tmp/head; rc=$?; \
             cat /tmp/head; echo '--rollback-body--'; cat /tmp/body 2>/dev/null; exit $rc"
        );
        let body = ContainerCreateBody {
            image: Some(probe_image.to_owned()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec![script]),
            labels: Some(HashMap::from([("rollback.probe".into(), "true".into())])),
            host_config: Some(HostConfig {
                network_mode: Some(network.to_owned()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_owned(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| self.err(&format!("create a probe container on {network}"), e))?;
        let id = created.id;
        let result = self.run_probe(&id, limit + Duration::from_secs(10)).await;
        let _ = self
            .docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        let output = result?;
        Ok(parse_probe(&output, &url))
    }

    async fn run_probe(&self, id: &str, limit: Duration) -> Result<String> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| self.err("start the probe container", e))?;
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        // A non-zero exit arrives as an error item: the output tells why.
        match tokio::time::timeout(limit, wait.next()).await {
            Ok(_) => {}
            Err(_) => {
                return Err(Error::timeout(format!(
                    "the probe container on {} did not finish in {}",
                    self.url,
                    humantime::format_duration(limit)
                )))
            }
        }
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut bytes = Vec::new();
        let mut logs = self.docker.logs(id, Some(options));
        while let Some(chunk) = logs.next().await {
            let chunk = chunk.map_err(|e| self.err("read the probe's output", e))?;
            bytes.extend_from_slice(&chunk.into_bytes());
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Roll `service` back to its previous spec (Swarm's `PreviousSpec`),
    /// passing the version index of `current`.
    pub async fn rollback(&self, current: &ServiceState) -> Result<ServiceState> {
        let options = UpdateServiceOptions {
            version: version_param(current.version)?,
            rollback: Some("previous".into()),
            ..Default::default()
        };
        match self
            .docker
            .update_service(&current.id, current.spec.clone(), options, None)
            .await
        {
            Ok(_) => self.existing(&current.name).await,
            Err(e) if is_out_of_sequence(&e) => Err(self.changed_meanwhile(current)),
            Err(e) => Err(self.err(&format!("roll back service {}", current.name), e)),
        }
    }

    /// Roll back (see [`Swarm::rollback`]) and wait until `replicas` tasks
    /// of the previous image run; the service as restored and those tasks.
    pub async fn rollback_and_wait(
        &self,
        current: &ServiceState,
        replicas: usize,
        limit: Duration,
    ) -> Result<(ServiceState, Vec<TaskInfo>)> {
        let deadline = Instant::now() + limit;
        let mut restored = self.rollback(current).await?;
        // Swarm's own account first: the rollback has finished replacing
        // the tasks, so none of the failed release is left running. A
        // rollback sent before Swarm's updater saw the failure is marked
        // `rollback_paused` by that updater (its message names the failed
        // release's task) while it goes on: the restored tasks decide.
        loop {
            match restored.update_state.as_deref() {
                Some("rollback_completed" | "rollback_paused") => break,
                state if Instant::now() >= deadline => {
                    return Err(Error::timeout(format!(
                        "rolling back service {} on {}: still {} after {}",
                        restored.name,
                        self.url,
                        state.unwrap_or("without an update state"),
                        humantime::format_duration(limit)
                    )))
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            restored = self.existing(&current.name).await?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let tasks = self
            .wait_running(&restored.name, &restored.image, replicas, left)
            .await?;
        Ok((restored, tasks))
    }

    /// Take the deploy lock of `service` for `owner`: its labels, updated
    /// with the version index as compare-and-swap. Fails with
    /// [`rollback_core::ErrorKind::Conflict`] when someone else holds it or the service
    /// changed meanwhile.
    pub async fn lock(&self, service: &str, owner: &str) -> Result<ServiceState> {
        let current = self.existing(service).await?;
        if let Some(holder) = current.lock_owner() {
            if holder != owner {
                return Err(Error::conflict(format!(
                    "service {service} on {} is locked by {holder}",
                    self.url
                )));
            }
            return Ok(current);
        }
        let mut spec = current.spec.clone();
        let labels = spec.labels.get_or_insert_with(Default::default);
        labels.insert(LOCK_OWNER_LABEL.into(), owner.into());
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        labels.insert(LOCK_SINCE_LABEL.into(), since.to_string());
        self.write_spec(&current, spec, &format!("lock service {service}"))
            .await
    }

    /// Release the deploy lock of `service` held by `owner`; `false` when
    /// it was not held. Fails with [`rollback_core::ErrorKind::Conflict`] when someone
    /// else holds it.
    pub async fn unlock(&self, service: &str, owner: &str) -> Result<bool> {
        let Some(current) = self.service(service).await? else {
            return Ok(false);
        };
        match current.lock_owner() {
            None => return Ok(false),
            Some(holder) if holder != owner => {
                return Err(Error::conflict(format!(
                    "service {service} on {} is locked by {holder}, not {owner}",
                    self.url
                )))
            }
            Some(_) => {}
        }
        let mut spec = current.spec.clone();
        if let Some(labels) = spec.labels.as_mut() {
            labels.remove(LOCK_OWNER_LABEL);
            labels.remove(LOCK_SINCE_LABEL);
        }
        self.write_spec(&current, spec, &format!("unlock service {service}"))
            .await?;
        Ok(true)
    }

    /// Remove the service `name`; `false` when there is none.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        match self.docker.delete_service(name).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.err(&format!("remove service {name}"), e)),
        }
    }
}

fn update_config(parallelism: u64) -> ServiceSpecUpdateConfig {
    ServiceSpecUpdateConfig {
        parallelism: Some(parallelism.max(1) as i64),
        order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
        ..Default::default()
    }
}

/// Going back, start-first too: the restored tasks start before the
/// failing ones stop, and rollback (not Swarm) still decides.
fn rollback_config(parallelism: u64) -> ServiceSpecRollbackConfig {
    ServiceSpecRollbackConfig {
        parallelism: Some(parallelism.max(1) as i64),
        order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
        failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
        ..Default::default()
    }
}

fn version_param(version: u64) -> Result<i32> {
    i32::try_from(version)
        .map_err(|_| Error::other(format!("service version {version} is out of range")))
}

fn image_of(spec: &ServiceSpec) -> Option<String> {
    spec.task_template
        .as_ref()?
        .container_spec
        .as_ref()?
        .image
        .clone()
}

fn status_of(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The manager's answer to a stale version index.
fn is_out_of_sequence(e: &EngineError) -> bool {
    matches!(e, EngineError::DockerResponseServerError { message, .. }
        if message.contains("out of sequence"))
}

fn state_name(state: Option<TaskState>) -> String {
    state.map(|s| s.to_string()).unwrap_or_default()
}

fn task_info(task: Task, addresses: &HashMap<String, String>) -> TaskInfo {
    let id = task.id.unwrap_or_default();
    let status = task.status.unwrap_or_default();
    let container = status.container_status.unwrap_or_default();
    TaskInfo {
        slot: task.slot,
        image: task
            .spec
            .and_then(|s| s.container_spec)
            .and_then(|c| c.image)
            .unwrap_or_default(),
        state: state_name(status.state),
        desired_state: state_name(task.desired_state),
        exit_code: container.exit_code.filter(|_| container.pid == Some(0)),
        message: status
            .err
            .filter(|e| !e.is_empty())
            .or(status.message)
            .unwrap_or_default(),
        address: addresses.get(&id).cloned(),
        container_id: container.container_id.filter(|c| !c.is_empty()),
        created: task
            .created_at
            .as_deref()
            .and_then(crate::convert::parse_time),
        id,
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn parse_probe(output: &str, url: &str) -> TaskProbe {
    let (head, body) = output
        .split_once("--rollback-body--\n")
        .unwrap_or((output, ""));
    let status = head
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].starts_with("HTTP/"))
        .filter_map(|w| w[1].parse::<u16>().ok())
        .next_back();
    let error = match status {
        Some(_) => None,
        None => Some(format!(
            "no answer from {url}: {}",
            head.lines().last().unwrap_or("").trim()
        )),
    };
    TaskProbe {
        status,
        body: if status.is_some_and(|s| (200..300).contains(&s)) {
            body.to_owned()
        } else {
            String::new()
        },
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(slot: i64, state: &str, desired: &str, exit: Option<i64>) -> TaskInfo {
        TaskInfo {
            id: format!("t{slot}{state}"),
            slot: Some(slot),
            image: "r/app@sha256:1".into(),
            state: state.into(),
            desired_state: desired.into(),
            exit_code: exit,
            message: String::new(),
            address: None,
            container_id: None,
            created: None,
        }
    }

    #[test]
    fn failed_rejected_and_restarted_tasks_are_failures() {
        assert!(failures(&[task(1, "running", "running", None)]).is_empty());
        assert_eq!(failures(&[task(1, "failed", "shutdown", Some(1))]).len(), 1);
        assert_eq!(failures(&[task(1, "rejected", "shutdown", None)]).len(), 1);
        let restarted = failures(&[
            task(1, "complete", "shutdown", Some(0)),
            task(1, "running", "running", None),
        ]);
        assert_eq!(restarted.len(), 1);
        assert!(restarted[0].contains("(slot 1) complete, exit 0"));
    }

    #[test]
    fn a_task_shut_down_by_an_update_is_no_failure() {
        assert!(!task(1, "shutdown", "shutdown", Some(143)).has_failed());
        assert!(!task(1, "shutdown", "shutdown", Some(0)).has_failed());
    }

    #[test]
    fn probe_output_gives_status_and_body() {
        let ok = "  HTTP/1.1 200 OK\n  Content-Type: text/plain\n--rollback-body--\n{\"status\":\"UP\"}\n";
        let p = parse_probe(ok, "http://x/health");
        assert_eq!(p.status, Some(200));
        assert_eq!(p.body, "{\"status\":\"UP\"}\n");
        let bad = "  HTTP/1.1 404 Not Found\nwget: server returned error: HTTP/1.1 404 Not Found\n--rollback-body--\n";
        assert_eq!(parse_probe(bad, "u").status, Some(404));
        let none = "wget: can't connect to remote host (10.0.0.2): Connection refused\n--rollback-body--\n";
        let p = parse_probe(none, "http://10.0.0.2:8080/health");
        assert_eq!(p.status, None);
        assert!(p.error.unwrap().contains("Connection refused"));
    }
}
