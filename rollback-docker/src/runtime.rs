//! [`DockerRuntime`]: the core's [`Runtime`] on the Docker Engine API.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerInspectResponse, EventMessage, NetworkConnectRequest, NetworkCreateRequest,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    ListImagesOptions, LogsOptions, RemoveContainerOptions, RemoveImageOptions,
    RenameContainerOptions, StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use rollback_core::{
    labels, ContainerExit, ContainerId, ContainerInfo, ContainerSpec, ContainerState, DeployLock,
    DeploymentId, Error, ExecOutput, ExecSession, ImageInfo, ImageRef, LockAttempt, LockInfo,
    ProgressSink, Repository, Result, Runtime,
};

use crate::connect::{ConnectEnv, Endpoint};
use crate::convert::{
    ceil_secs, container_info, create_body, image_info, release_from_repo_digests,
};
use crate::error::{classify, classify_pull, redact};
use crate::lock;
use crate::pull::{self, PullTracker};
use crate::ssh::{self, SshSession};

/// How often [`Runtime::wait_exit`] re-inspects the container while waiting
/// for engine events, in case the engine dropped an event from its buffer.
const WAIT_FALLBACK_INTERVAL: Duration = Duration::from_secs(2);

/// Tries to take a lock whose name is taken but whose record is not
/// readable yet, and the pause between them.
const LOCK_ATTEMPTS: u32 = 40;
const LOCK_RETRY_DELAY: Duration = Duration::from_millis(25);

/// A Docker engine on one host, speaking the Engine API through bollard.
///
/// Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    url: String,
    timeout: Duration,
    docker_config: Option<PathBuf>,
}

impl fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("docker_config", &self.docker_config)
            .finish()
    }
}

impl DockerRuntime {
    /// Connect to the engine at `url` (`unix:///path`, `tcp://host:port`,
    /// `https://host:port`, `ssh://[user@]host[:port][/socket]`), or
    /// `DOCKER_HOST`, or the local socket.
    ///
    /// `tcp://` uses TLS when `DOCKER_TLS_VERIFY` is set, with `ca.pem`,
    /// `cert.pem` and `key.pem` from `DOCKER_CERT_PATH` (else `~/.docker`).
    ///
    /// `ssh://` runs the system `ssh` (with the user's `~/.ssh/config`,
    /// agent and `known_hosts`; `BatchMode`, so it never prompts): one
    /// master connection, opened here, and one `docker system dial-stdio`
    /// channel on it per HTTP connection; the host needs the docker CLI.
    /// A refused connection, an unknown or changed host key or a refused
    /// key fails here, naming the host and the cause. The master closes
    /// when the last clone of the runtime is dropped.
    /// Pings the engine and negotiates the API version (down to the
    /// engine's, 1.41 for Docker 20.10). `timeout` bounds this and every
    /// later request's wait for an answer; an engine that cannot be reached
    /// within it is [`ErrorKind::Unavailable`], naming the URL.
    pub async fn connect(url: Option<&str>, timeout: Duration) -> Result<Self> {
        let env = ConnectEnv::from_process();
        let url = env.url(url);
        let endpoint = env.endpoint(&url)?;
        let secs = ceil_secs(timeout).max(1);
        let mut session = None;
        let docker = match &endpoint {
            Endpoint::Ssh(target) => {
                let opened = SshSession::open(target, timeout)
                    .await
                    .map_err(|cause| ssh::connect_error(&url, target, &cause))?;
                let opened = std::sync::Arc::new(opened);
                session = Some(opened.clone());
                ssh::docker(opened, secs, API_DEFAULT_VERSION)
            }
            Endpoint::Unix(path) => Docker::connect_with_unix(path, secs, API_DEFAULT_VERSION),
            Endpoint::Http(address) => {
                Docker::connect_with_http(address, secs, API_DEFAULT_VERSION)
            }
            Endpoint::Https(address, files) => Docker::connect_with_ssl(
                address,
                &files.key,
                &files.cert,
                &files.ca,
                secs,
                API_DEFAULT_VERSION,
            ),
        }
        .map_err(|e| unreachable_engine(&url, e))?;

        let handshake = async {
            docker.ping().await?;
            docker.negotiate_version().await
        };
        let docker = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "cannot reach docker engine at {url}: no answer within {}",
                    humantime::format_duration(timeout)
                ))
            })?
            .map_err(|e| match &session {
                // The master is up, so ssh got in: what failed is the far end.
                Some(session) => match session.channel_failure() {
                    Some(why) => Error::unavailable(format!(
                        "cannot reach docker engine at {url}: ssh {}: {why}",
                        session.target()
                    )),
                    None => unreachable_engine(&url, e),
                },
                None => unreachable_engine(&url, e),
            })?;
        Ok(DockerRuntime {
            docker,
            url,
            timeout,
            docker_config: None,
        })
    }

    /// Read pull credentials from this Docker config (a `config.json` file
    /// or the folder holding it) instead of `DOCKER_CONFIG` or
    /// `~/.docker/config.json`.
    pub fn with_docker_config(mut self, path: PathBuf) -> Self {
        self.docker_config = Some(path);
        self
    }

    /// The engine URL, as named in errors.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying bollard client, for callers that need more of the API.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The engine API version in use after negotiation (`1.41`).
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    fn err(&self, what: &str, err: EngineError) -> Error {
        classify(&self.url, what, err)
    }

    async fn inspect_raw(
        &self,
        name_or_id: &str,
    ) -> std::result::Result<ContainerInspectResponse, EngineError> {
        self.docker.inspect_container(name_or_id, None).await
    }

    /// Inspect, with the release read from the image's `RepoDigests` when
    /// neither the labels nor the container's image reference record it.
    async fn info(&self, response: &ContainerInspectResponse) -> ContainerInfo {
        let mut info = container_info(response);
        if info.release.is_none() && !info.image_id.is_empty() {
            if let Ok(image) = self.docker.inspect_image(&info.image_id).await {
                let config_image = response.config.as_ref().and_then(|c| c.image.as_deref());
                info.release = release_from_repo_digests(
                    &image.repo_digests.unwrap_or_default(),
                    config_image,
                );
            }
        }
        info
    }

    async fn inspect_or_none(&self, name_or_id: &str) -> Result<Option<ContainerInspectResponse>> {
        match self.inspect_raw(name_or_id).await {
            Ok(response) => Ok(Some(response)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err(&format!("inspect container {name_or_id}"), e)),
        }
    }

    /// The endpoint address on `network`: `Some("")` when attached but not
    /// running (no address yet), `None` when not attached.
    async fn network_address_raw(&self, id: &ContainerId, network: &str) -> Result<Option<String>> {
        let response = self
            .inspect_raw(id.as_str())
            .await
            .map_err(|e| self.err(&format!("inspect container {id}"), e))?;
        let networks = response
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        Ok(networks
            .get(network)
            .map(|endpoint| endpoint.ip_address.clone().unwrap_or_default()))
    }

    async fn credentials(
        &self,
        image: &ImageRef,
    ) -> Result<Option<bollard::auth::DockerCredentials>> {
        let config = self
            .docker_config
            .clone()
            .or_else(pull::default_config_path);
        let registry = image.registry().to_owned();
        tokio::task::spawn_blocking(move || pull::credentials(config.as_deref(), &registry))
            .await
            .map_err(|e| Error::other(format!("reading registry credentials failed: {e}")))?
            .map_err(|e| e.context(format!("pull {image} on {}", self.url)))
    }

    async fn import_lock_image(&self) -> Result<()> {
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(lock::IMAGE_REPO.into()),
            tag: Some(lock::IMAGE_TAG.into()),
            ..Default::default()
        };
        // An empty tar archive: two zero blocks.
        let body = bollard::body_full(bytes::Bytes::from(vec![0u8; 1024]));
        let mut stream = self.docker.create_image(Some(options), Some(body), None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| self.err("import the lock image", e))?;
        }
        Ok(())
    }

    async fn create_lock_container(&self, lock: &LockInfo) -> std::result::Result<(), EngineError> {
        let options = CreateContainerOptions {
            name: Some(lock::container_name(&lock.app)),
            ..Default::default()
        };
        self.docker
            .create_container(Some(options), lock::container_body(lock))
            .await
            .map(|_| ())
    }
}

/// An error at connect time: anything but a bad URL or bad certificate
/// files means the engine cannot be reached.
fn unreachable_engine(url: &str, err: EngineError) -> Error {
    match err {
        EngineError::RequestTimeoutError => Error::unavailable(format!(
            "cannot reach docker engine at {url}: no answer in time"
        )),
        err @ (EngineError::CertPathError { .. }
        | EngineError::CertParseError { .. }
        | EngineError::CertMultipleKeys { .. }
        | EngineError::UnsupportedURISchemeError { .. }
        | EngineError::NoHomePathError) => classify(url, "connect", err),
        err => Error::unavailable(format!("cannot reach docker engine at {url}")).with_source(err),
    }
}

fn status_of(err: &EngineError) -> Option<u16> {
    match err {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// What ends a watch, comparing the container now with when the watch began.
fn exit_of(now: &ContainerInfo, baseline: &ContainerInfo) -> Option<ContainerExit> {
    match now.state {
        ContainerState::Running { .. } | ContainerState::Paused => {
            let restarted =
                now.restart_count > baseline.restart_count || now.started_at != baseline.started_at;
            restarted.then_some(ContainerExit::Restarted {
                restart_count: now.restart_count,
            })
        }
        ContainerState::Restarting => Some(ContainerExit::Restarted {
            restart_count: now.restart_count,
        }),
        ContainerState::Exited { code } => Some(ContainerExit::Exited { code }),
        ContainerState::Created => Some(ContainerExit::Exited { code: 0 }),
        ContainerState::Dead => Some(ContainerExit::Gone),
    }
}

/// The engine's events that may end a container's run.
fn exit_filters(container: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("container".to_owned(), vec![container.to_owned()]),
        (
            "event".to_owned(),
            ["die", "restart", "oom", "destroy"]
                .map(str::to_owned)
                .to_vec(),
        ),
    ])
}

/// The exit told by an event of container `id` (its id or a prefix; the
/// engine's filter also matches names, which are not taken for it).
fn exit_told(event: &EventMessage, id: &str) -> Option<ContainerExit> {
    let actor = event.actor.as_ref()?;
    if !actor.id.as_deref()?.starts_with(id) {
        return None;
    }
    match event.action.as_deref()? {
        "destroy" => Some(ContainerExit::Gone),
        "die" => Some(ContainerExit::Exited {
            code: exit_code(event)?,
        }),
        _ => None,
    }
}

fn exit_code(event: &EventMessage) -> Option<i64> {
    event
        .actor
        .as_ref()?
        .attributes
        .as_ref()?
        .get("exitCode")?
        .parse()
        .ok()
}

/// The exit a `die` event reports, when the engine will not bring the
/// container back (no restart policy, or `on-failure` after a clean exit).
///
/// The engine sends `die` before it releases the container's network and
/// mounts, and holds the container while it does: an inspect right after
/// the event waits for that (60-130 ms measured on Docker 20.10 with a
/// published port), so the event's own exit code decides. Under a restart
/// policy only the inspect tells a restart from a stop.
fn final_exit(
    event: &EventMessage,
    policy: Option<RestartPolicyNameEnum>,
) -> Option<ContainerExit> {
    let code = exit_code(event)?;
    let may_restart = match policy {
        None | Some(RestartPolicyNameEnum::EMPTY | RestartPolicyNameEnum::NO) => false,
        Some(RestartPolicyNameEnum::ON_FAILURE) => code != 0,
        Some(RestartPolicyNameEnum::ALWAYS | RestartPolicyNameEnum::UNLESS_STOPPED) => true,
    };
    (!may_restart).then_some(ContainerExit::Exited { code })
}

/// The engine's `since` syntax: seconds and nanoseconds since the epoch.
fn engine_timestamp(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn current(&self, name: &str) -> Result<Option<ContainerInfo>> {
        let Some(response) = self.inspect_or_none(name).await? else {
            return Ok(None);
        };
        let info = self.info(&response).await;
        // The engine also resolves id prefixes; only an exact name counts.
        Ok((info.name == name.trim_start_matches('/')).then_some(info))
    }

    async fn list_app(&self, app: &str) -> Result<Vec<ContainerInfo>> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{}={app}", labels::APP)])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err(&format!("list containers of {app}"), e))?;
        let mut infos = Vec::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let is_lock = summary
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(lock::LABEL_APP));
            if is_lock {
                continue;
            }
            // Removed between list and inspect: no longer part of the app.
            if let Some(response) = self.inspect_or_none(&id).await? {
                infos.push(self.info(&response).await);
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo> {
        let response = self
            .inspect_raw(id.as_str())
            .await
            .map_err(|e| self.err(&format!("inspect container {id}"), e))?;
        Ok(self.info(&response).await)
    }

    async fn pull(
        &self,
        image: &ImageRef,
        platform: Option<String>,
        progress: Option<ProgressSink>,
    ) -> Result<()> {
        let reference = image.to_string();
        match self.docker.inspect_image(&reference).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.err(&format!("inspect image {reference}"), e)),
        }
        let credentials = self.credentials(image).await?;
        let options = CreateImageOptions {
            from_image: Some(reference.clone()),
            platform: platform.clone().unwrap_or_default(),
            ..Default::default()
        };
        let what = format!("pull {reference}");
        let mut tracker = PullTracker::default();
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| classify_pull(&self.url, &what, e))?;
            if tracker.update(&info) {
                if let Some(sink) = &progress {
                    sink(tracker.progress());
                }
            }
        }
        // The engine ends the stream without an error for some failures;
        // the image being there is what counts.
        match self.docker.inspect_image(&reference).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Err(Error::not_found(format!(
                "{what} on {}: the engine finished without the image",
                self.url
            ))),
            Err(e) => Err(self.err(&format!("inspect image {reference}"), e)),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            platform: spec.platform.clone().unwrap_or_default(),
        };
        let secrets: Vec<&str> = spec
            .env
            .iter()
            .filter(|(_, v)| v.is_secret())
            .map(|(_, v)| v.expose())
            .collect();
        match self
            .docker
            .create_container(Some(options), create_body(spec))
            .await
        {
            Ok(created) => {
                let id = ContainerId(created.id);
                // The create request joins one network on every API version;
                // the others are joined before the first start.
                for network in &spec.options.networks {
                    if let Err(e) = self.connect_network(&id, network).await {
                        // Nothing ran yet: leave no half-made container behind.
                        let _ = self.remove(&id).await;
                        return Err(e);
                    }
                }
                Ok(id)
            }
            Err(e) => {
                let err = self.err(&format!("create container {}", spec.name), e);
                // Engine messages may quote the request; never let a secret through.
                Err(Error::new(
                    err.kind(),
                    redact(err.message().to_owned(), &secrets),
                ))
            }
        }
    }

    async fn start(&self, id: &ContainerId) -> Result<()> {
        self.docker
            .start_container(id.as_str(), None)
            .await
            .map_err(|e| self.err(&format!("start container {id}"), e))
    }

    async fn stop(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        let secs = ceil_secs(timeout);
        let options = StopContainerOptions {
            t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
            signal: None,
        };
        // The engine answers only once the container is down, after up to
        // `timeout` plus the kill.
        let docker = self
            .docker
            .clone()
            .with_timeout(self.timeout + timeout + Duration::from_secs(5));
        docker
            .stop_container(id.as_str(), Some(options))
            .await
            .map_err(|e| self.err(&format!("stop container {id}"), e))
    }

    async fn rename(&self, id: &ContainerId, new_name: &str) -> Result<()> {
        let options = RenameContainerOptions {
            name: new_name.to_owned(),
        };
        self.docker
            .rename_container(id.as_str(), options)
            .await
            .map_err(|e| self.err(&format!("rename container {id} to {new_name}"), e))
    }

    async fn remove(&self, id: &ContainerId) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        self.docker
            .remove_container(id.as_str(), Some(options))
            .await
            .map_err(|e| self.err(&format!("remove container {id}"), e))
    }

    async fn logs(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>> {
        if lines == 0 {
            return Ok(Vec::new());
        }
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut bytes = Vec::new();
        let mut stream = self.docker.logs(id.as_str(), Some(options));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.err(&format!("read logs of container {id}"), e))?;
            bytes.extend_from_slice(&chunk.into_bytes());
        }
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect();
        let skip = all.len().saturating_sub(lines);
        Ok(all.into_iter().skip(skip).collect())
    }

    /// Watches engine events for this container (`die`, `restart`, `oom`,
    /// `destroy`), replayed from the container's start so an exit before the
    /// subscription is not missed; a `die` the engine will not follow with a
    /// restart decides at once, any other event is checked by an inspect.
    /// An exit the engine tells before it answers the first inspect is
    /// reported as `Exited`, whatever the restart policy.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes the event stream; nothing else changes.
    async fn wait_exit(&self, id: &ContainerId) -> Result<ContainerExit> {
        // The engine answers an inspect of a container that just died only
        // after its cleanup, even one asked before the exit (60-250 ms
        // measured): a crash at start would wait for it. So the first inspect
        // races a live event stream, and an exit told there decides (under a
        // restart policy too: the restart would come after the exit).
        let mut live = self.docker.events(Some(EventsOptions {
            since: None,
            until: None,
            filters: Some(exit_filters(id.as_str())),
        }));
        let mut live_open = true;
        let inspect = self.inspect_or_none(id.as_str());
        tokio::pin!(inspect);
        let first = loop {
            tokio::select! {
                first = &mut inspect => break first?,
                event = live.next(), if live_open => match event {
                    Some(Ok(event)) => {
                        if let Some(exit) = exit_told(&event, id.as_str()) {
                            return Ok(exit);
                        }
                    }
                    // The inspect decides.
                    _ => live_open = false,
                },
            }
        };
        drop(live);
        let Some(first) = first else {
            return Ok(ContainerExit::Gone);
        };
        let baseline = container_info(&first);
        if let Some(exit) = exit_of(&baseline, &baseline) {
            return Ok(exit);
        }
        let restart_policy = first
            .host_config
            .as_ref()
            .and_then(|h| h.restart_policy.as_ref())
            .and_then(|p| p.name);
        let full_id = baseline.id.as_str().to_owned();
        let options = EventsOptions {
            // The engine's own clock: replays anything since the start.
            since: baseline.started_at.map(engine_timestamp),
            until: None,
            filters: Some(exit_filters(&full_id)),
        };
        let mut events = self.docker.events(Some(options));
        let mut fallback = tokio::time::interval(WAIT_FALLBACK_INTERVAL);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        fallback.tick().await;
        // Inspections run beside the event stream, never before it: the
        // engine answers an inspect of a container that just died only after
        // it released the container's network and mounts (60-130 ms), while
        // the `die` event arrives at once and decides by itself. The first
        // one catches an exit the stream would not show.
        let inspect = || Box::pin(self.inspect_or_none(&full_id));
        let mut check = Some(inspect());
        // An event seen while an inspect was under way: that answer may
        // predate it, so another one follows.
        let mut recheck = false;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) if event.action.as_deref() == Some("destroy") => {
                        return Ok(ContainerExit::Gone);
                    }
                    Some(Ok(event)) => {
                        let exit = match event.action.as_deref() {
                            Some("die") => final_exit(&event, restart_policy),
                            _ => None,
                        };
                        if let Some(exit) = exit {
                            return Ok(exit);
                        }
                        recheck = true;
                    }
                    Some(Err(e)) => {
                        return Err(self.err(&format!("watch events of container {id}"), e));
                    }
                    None => {
                        return Err(Error::unavailable(format!(
                            "watch events of container {id}: the engine at {} closed the event stream",
                            self.url
                        )));
                    }
                },
                inspected = async {
                    match check.as_mut() {
                        Some(check) => check.await,
                        None => std::future::pending().await,
                    }
                }, if check.is_some() => {
                    check = None;
                    let Some(response) = inspected? else {
                        return Ok(ContainerExit::Gone);
                    };
                    if let Some(exit) = exit_of(&container_info(&response), &baseline) {
                        return Ok(exit);
                    }
                }
                _ = fallback.tick() => recheck = true,
            }
            if recheck && check.is_none() {
                recheck = false;
                check = Some(inspect());
            }
        }
    }

    /// # Cancel safety
    ///
    /// Dropping the future detaches from the command; it keeps running in
    /// the container until it ends by itself.
    async fn exec_session(&self, id: &ContainerId, cmd: &[String]) -> Result<Box<dyn ExecSession>> {
        let program = cmd.first().map(String::as_str).unwrap_or_default();
        let what = format!("keep {program} running in container {id}");
        let options = CreateExecOptions {
            cmd: Some(cmd.to_vec()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(id.as_str(), options)
            .await
            .map_err(|e| self.err(&what, e))?;
        match self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.err(&what, e))?
        {
            StartExecResults::Attached { output, input } => Ok(Box::new(EngineExecSession {
                output,
                input,
                what,
            })),
            StartExecResults::Detached => Err(Error::other(format!(
                "{what} on {}: the engine did not attach to it",
                self.url
            ))),
        }
    }

    async fn exec(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let program = cmd.first().map(String::as_str).unwrap_or_default();
        let what = format!("run {program} in container {id}");
        let run = async {
            let options = CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let created = self
                .docker
                .create_exec(id.as_str(), options)
                .await
                .map_err(|e| self.err(&what, e))?;
            let started = self
                .docker
                .start_exec(&created.id, None)
                .await
                .map_err(|e| self.err(&what, e))?;
            let mut bytes = Vec::new();
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(chunk) = output.next().await {
                    let chunk = chunk.map_err(|e| self.err(&what, e))?;
                    bytes.extend_from_slice(&chunk.into_bytes());
                }
            }
            // The output ends when the process does; its code may show a moment later.
            for _ in 0..50 {
                let inspected = self
                    .docker
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| self.err(&what, e))?;
                if inspected.running != Some(true) {
                    let code = inspected.exit_code.unwrap_or(-1);
                    return Ok(ExecOutput::new(code, String::from_utf8_lossy(&bytes)));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(Error::unavailable(format!(
                "{what} on {}: the engine does not report how it ended",
                self.url
            )))
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(format!(
                    "{what} on {}: not done within {}",
                    self.url,
                    humantime::format_duration(timeout)
                )))
            })
    }

    async fn list_images(&self, repository: &Repository) -> Result<Vec<ImageInfo>> {
        let options = ListImagesOptions {
            digests: true,
            shared_size: true,
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| self.err(&format!("list the images of {repository}"), e))?;
        Ok(summaries
            .iter()
            .filter_map(|summary| image_info(summary, repository))
            .collect())
    }

    async fn remove_image(&self, id: &str) -> Result<()> {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        // An id is named by its short form; a reference (`repo:tag`) as it is.
        let what = match id.strip_prefix("sha256:") {
            Some(hex) => format!("remove image {}", &hex[..hex.len().min(12)]),
            None => format!("remove image {id}"),
        };
        self.docker
            .remove_image(id, Some(options), None)
            .await
            .map(drop)
            .map_err(|e| self.err(&what, e))
    }

    async fn create_network(&self, name: &str) -> Result<bool> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => return Ok(false),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.err(&format!("inspect network {name}"), e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                labels::MANAGED.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(true),
            // Created by someone else in between.
            Err(e) if status_of(&e) == Some(409) => Ok(false),
            Err(e) => Err(self.err(&format!("create network {name}"), e)),
        }
    }

    async fn connect_network(&self, id: &ContainerId, network: &str) -> Result<()> {
        if self.network_address_raw(id, network).await?.is_some() {
            return Ok(());
        }
        let request = NetworkConnectRequest {
            container: id.as_str().to_owned(),
            endpoint_config: None,
        };
        let Err(e) = self.docker.connect_network(network, request).await else {
            return Ok(());
        };
        // Attached in between: old engines say so with a 403 or a 500.
        if self.network_address_raw(id, network).await?.is_some() {
            return Ok(());
        }
        Err(self.err(&format!("connect container {id} to network {network}"), e))
    }

    async fn network_address(&self, id: &ContainerId, network: &str) -> Result<Option<String>> {
        Ok(self
            .network_address_raw(id, network)
            .await?
            .filter(|ip| !ip.is_empty()))
    }
}

impl DockerRuntime {
    /// Remove the lock container `container` (a name or an id) of `app`;
    /// `false` when it is gone already.
    async fn remove_lock(&self, app: &str, container: &str) -> Result<bool> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.err(&format!("release the deploy lock of {app}"), e)),
        }
    }
}

/// The lock kept in the engine itself; see [`crate::lock`].
#[async_trait]
impl DeployLock for DockerRuntime {
    async fn acquire(&self, lock: &LockInfo) -> Result<LockAttempt> {
        lock::validate_app(&lock.app).map_err(|e| e.context(&self.url))?;
        let what = format!("take the deploy lock of {}", lock.app);
        let mut imported = false;
        // The engine reserves the name before the container can be
        // inspected, so a 409 may briefly show no lock; a lock released in
        // between is simply taken on the next try.
        for attempt in 0..LOCK_ATTEMPTS {
            match self.create_lock_container(lock).await {
                Ok(()) => return Ok(LockAttempt::Acquired),
                Err(e) if status_of(&e) == Some(409) => {
                    if let Some(held) = self.status(&lock.app).await? {
                        return Ok(LockAttempt::Held(held));
                    }
                    tokio::time::sleep(LOCK_RETRY_DELAY * (attempt + 1).min(4)).await;
                }
                Err(e) if status_of(&e) == Some(404) && !imported => {
                    self.import_lock_image().await?;
                    imported = true;
                }
                Err(e) => return Err(self.err(&what, e)),
            }
        }
        Err(Error::conflict(format!(
            "{what} on {}: the lock kept changing hands",
            self.url
        )))
    }

    async fn status(&self, app: &str) -> Result<Option<LockInfo>> {
        lock::validate_app(app).map_err(|e| e.context(&self.url))?;
        let name = lock::container_name(app);
        let Some(response) = self.inspect_or_none(&name).await? else {
            return Ok(None);
        };
        let labels = response.config.and_then(|c| c.labels).unwrap_or_default();
        Ok(Some(lock::info_from_labels(app, &labels)))
    }

    async fn release(&self, app: &str, deployment: &DeploymentId) -> Result<bool> {
        lock::validate_app(app).map_err(|e| e.context(&self.url))?;
        let name = lock::container_name(app);
        let Some(response) = self.inspect_or_none(&name).await? else {
            return Ok(false);
        };
        let labels = response.config.and_then(|c| c.labels).unwrap_or_default();
        if &lock::info_from_labels(app, &labels).deployment != deployment {
            return Ok(false);
        }
        // By id: a lock taken again by someone else since it was read has
        // another id and is left alone.
        let Some(id) = response.id else {
            return Ok(false);
        };
        self.remove_lock(app, &id).await
    }

    async fn break_lock(&self, app: &str) -> Result<bool> {
        lock::validate_app(app).map_err(|e| e.context(&self.url))?;
        self.remove_lock(app, &lock::container_name(app)).await
    }
}

/// A process kept running in a container: the engine's hijacked exec stream.
struct EngineExecSession {
    output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = std::result::Result<LogOutput, EngineError>> + Send>,
    >,
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    what: String,
}

#[async_trait]
impl ExecSession for EngineExecSession {
    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let sent = async {
            self.input.write_all(bytes).await?;
            self.input.flush().await
        };
        sent.await
            .map_err(|e| Error::unavailable(format!("{}: write its input: {e}", self.what)))
    }

    async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        match self.output.next().await {
            Some(Ok(chunk)) => Ok(Some(chunk.into_bytes().to_vec())),
            Some(Err(e)) => Err(Error::unavailable(format!(
                "{}: read its output: {e}",
                self.what
            ))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: ContainerState, restart_count: u64, started: u64) -> ContainerInfo {
        ContainerInfo {
            id: ContainerId("c".into()),
            name: "app".into(),
            image_id: String::new(),
            release: None,
            labels: Default::default(),
            state,
            restart_count,
            started_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(started)),
        }
    }

    #[test]
    fn exit_of_tells_exits_restarts_and_removal() {
        let running = info(ContainerState::Running { health: None }, 0, 10);
        assert_eq!(exit_of(&running, &running), None);
        let exited = info(ContainerState::Exited { code: 3 }, 0, 10);
        assert_eq!(
            exit_of(&exited, &running),
            Some(ContainerExit::Exited { code: 3 })
        );
        let restarting = info(ContainerState::Restarting, 1, 10);
        assert_eq!(
            exit_of(&restarting, &running),
            Some(ContainerExit::Restarted { restart_count: 1 })
        );
        let back_up = info(ContainerState::Running { health: None }, 1, 11);
        assert_eq!(
            exit_of(&back_up, &running),
            Some(ContainerExit::Restarted { restart_count: 1 })
        );
        let restarted_by_hand = info(ContainerState::Running { health: None }, 0, 12);
        assert_eq!(
            exit_of(&restarted_by_hand, &running),
            Some(ContainerExit::Restarted { restart_count: 0 })
        );
        let dead = info(ContainerState::Dead, 0, 10);
        assert_eq!(exit_of(&dead, &running), Some(ContainerExit::Gone));
    }

    #[test]
    fn a_die_event_decides_unless_the_engine_may_restart_the_container() {
        use bollard::models::EventActor;
        use RestartPolicyNameEnum as P;
        let die = |code: Option<&str>| EventMessage {
            action: Some("die".into()),
            actor: Some(EventActor {
                id: Some("c1".into()),
                attributes: Some(
                    code.map(|c| ("exitCode".to_owned(), c.to_owned()))
                        .into_iter()
                        .collect(),
                ),
            }),
            ..Default::default()
        };
        let exited = |code| Some(ContainerExit::Exited { code });
        for (code, policy, expected) in [
            (Some("1"), None, exited(1)),
            (Some("137"), Some(P::NO), exited(137)),
            (Some("1"), Some(P::EMPTY), exited(1)),
            (Some("0"), Some(P::ON_FAILURE), exited(0)),
            // The engine may bring it back: its inspect says whether it did.
            (Some("1"), Some(P::ON_FAILURE), None),
            (Some("0"), Some(P::ALWAYS), None),
            (Some("1"), Some(P::UNLESS_STOPPED), None),
            // An engine that does not say the code.
            (None, None, None),
            (Some("x"), None, None),
        ] {
            assert_eq!(
                final_exit(&die(code), policy),
                expected,
                "{code:?} {policy:?}"
            );
        }
    }

    #[test]
    fn an_event_tells_an_exit_only_of_the_watched_container() {
        use bollard::models::EventActor;
        let event = |action: &str, id: &str| EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(HashMap::from([
                    ("exitCode".to_owned(), "3".to_owned()),
                    ("name".to_owned(), "app".to_owned()),
                ])),
            }),
            ..Default::default()
        };
        let exited = Some(ContainerExit::Exited { code: 3 });
        assert_eq!(exit_told(&event("die", "abc123"), "abc123"), exited);
        assert_eq!(exit_told(&event("die", "abc123"), "abc"), exited);
        assert_eq!(
            exit_told(&event("destroy", "abc123"), "abc123"),
            Some(ContainerExit::Gone)
        );
        assert_eq!(exit_told(&event("oom", "abc123"), "abc123"), None);
        // Another container, or one the engine matched by its name.
        assert_eq!(exit_told(&event("die", "def456"), "abc123"), None);
        assert_eq!(exit_told(&event("die", "abc123"), "app"), None);
    }

    #[test]
    fn engine_timestamps_carry_nanoseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(engine_timestamp(t), "1700000000.000000005");
    }
}
