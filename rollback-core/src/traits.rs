//! The seams of the engine: [`Registry`], [`Runtime`], [`DeployLock`] and
//! [`HealthProbe`] (the traffic seam is [`TrafficSwitch`](crate::traffic::TrafficSwitch)).
//!
//! All are object-safe (`Arc<dyn Runtime>` works), return owned values and
//! the crate's [`Error`](crate::Error), whose message names the operation
//! that failed and where. With the `mock` feature, mockall mocks
//! (`MockRegistry`, `MockRuntime`, `MockDeployLock`, `MockHealthProbe`) are
//! exported too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::retention::ImageInfo;
use crate::types::{
    ContainerExit, ContainerId, ContainerInfo, ContainerSpec, DeploymentId, Digest, ImageRef,
    LockAttempt, LockInfo, ProgressSink, Repository,
};

/// What a registry-side copy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub struct CopyReport {
    /// Digest of the copied manifest, identical at source and destination.
    pub digest: Digest,
    /// `false` when the destination already pointed at that digest and nothing was written.
    pub written: bool,
}

/// What a command run inside a container printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecOutput {
    /// The command's exit code.
    pub exit_code: i64,
    /// Its standard output and standard error, as one text in the order written.
    pub output: String,
}

impl ExecOutput {
    /// The result of a command that exited with `exit_code` after printing `output`.
    pub fn new(exit_code: i64, output: impl Into<String>) -> Self {
        Self {
            exit_code,
            output: output.into(),
        }
    }

    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// A process kept running inside a container, spoken to through its
/// standard input and output: many exchanges for the price of one process
/// start (a shell that runs one short command per request, for example).
///
/// Dropping it closes the process's standard input and the stream.
#[async_trait]
pub trait ExecSession: Send {
    /// Write `bytes` to the process's standard input.
    async fn send(&mut self, bytes: &[u8]) -> Result<()>;

    /// The next bytes the process wrote, on its standard output or error in
    /// the order written; `None` once it ended.
    async fn recv(&mut self) -> Result<Option<Vec<u8>>>;
}

/// An image registry: resolves tags and copies manifests without moving layers.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Registry: Send + Sync {
    /// The manifest digest `reference` points to (a HEAD request).
    ///
    /// A missing tag or repository is [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    async fn resolve(&self, reference: &ImageRef) -> Result<Digest>;

    /// Make `destination` point at the manifest of `source`, byte for byte.
    ///
    /// `source` may be a tag or a digest reference; `destination` a tag in the
    /// same or another repository of the same registry. No layer is
    /// downloaded.
    async fn copy(&self, source: &ImageRef, destination: &ImageRef) -> Result<CopyReport>;
}

/// A container engine on one host.
///
/// Operations name containers by id, except [`Runtime::current`] which
/// finds the app's container by name.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Runtime: Send + Sync {
    /// The container named `name`, if one exists (running or not).
    async fn current(&self, name: &str) -> Result<Option<ContainerInfo>>;

    /// Every container labelled as belonging to `app` (active and retained).
    async fn list_app(&self, app: &str) -> Result<Vec<ContainerInfo>>;

    /// Inspect a container by id.
    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo>;

    /// Make `image` (`repo@sha256:...`) present on the host; no-op when it is.
    async fn pull(
        &self,
        image: &ImageRef,
        platform: Option<String>,
        progress: Option<ProgressSink>,
    ) -> Result<()>;

    /// Create (not start) a container.
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId>;

    /// Start a created or stopped container.
    async fn start(&self, id: &ContainerId) -> Result<()>;

    /// Stop a container, waiting `timeout` before killing it. Stopping a
    /// stopped container succeeds.
    async fn stop(&self, id: &ContainerId, timeout: Duration) -> Result<()>;

    /// Rename a container.
    async fn rename(&self, id: &ContainerId, new_name: &str) -> Result<()>;

    /// Remove a container (forcefully if it runs).
    async fn remove(&self, id: &ContainerId) -> Result<()>;

    /// The last `lines` lines of the container's output.
    async fn logs(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>>;

    /// Resolves when the container stops counting as running: it exits,
    /// restarts or disappears. Pending while it runs; dropping the future
    /// stops watching.
    async fn wait_exit(&self, id: &ContainerId) -> Result<ContainerExit>;

    /// Run `cmd` (no shell) inside the running container `id` and wait for
    /// it, at most `timeout` ([`ErrorKind::Timeout`](crate::ErrorKind::Timeout)).
    ///
    /// The default refuses: a runtime without it cannot drive a proxy.
    async fn exec(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let _ = (cmd, timeout);
        Err(unsupported(&format!("run a command in container {id}")))
    }

    /// Start `cmd` (no shell) inside the running container `id` and keep it
    /// running, its standard input open, as an [`ExecSession`].
    ///
    /// The default refuses; callers fall back to one [`exec`](Runtime::exec)
    /// per command.
    async fn exec_session(&self, id: &ContainerId, cmd: &[String]) -> Result<Box<dyn ExecSession>> {
        let _ = cmd;
        Err(unsupported(&format!(
            "keep a command running in container {id}"
        )))
    }

    /// The images on the host known by a digest or tag of `repository`.
    ///
    /// The default refuses: a runtime without it cannot apply image retention.
    async fn list_images(&self, repository: &Repository) -> Result<Vec<ImageInfo>> {
        Err(unsupported(&format!("list the images of {repository}")))
    }

    /// Remove an image by id (with every name it has), or one name of it
    /// (`repo:tag`, `repo@sha256:...`): the image itself goes with its last
    /// name. Never forced: an image a container uses, or (by id) one that
    /// several repositories name, is refused
    /// ([`ErrorKind::Conflict`](crate::ErrorKind::Conflict)).
    async fn remove_image(&self, id: &str) -> Result<()> {
        Err(unsupported(&format!("remove image {id}")))
    }

    /// Create the network `name` (a bridge on this host) unless it exists.
    /// Returns whether it was created.
    async fn create_network(&self, name: &str) -> Result<bool> {
        Err(unsupported(&format!("create network {name}")))
    }

    /// Attach the container `id` to the network `network`; attaching an
    /// attached container succeeds.
    async fn connect_network(&self, id: &ContainerId, network: &str) -> Result<()> {
        Err(unsupported(&format!(
            "connect container {id} to network {network}"
        )))
    }

    /// The IP address of container `id` on `network`, or `None` when it is
    /// not attached there or not running.
    async fn network_address(&self, id: &ContainerId, network: &str) -> Result<Option<String>> {
        Err(unsupported(&format!(
            "read the address of container {id} on network {network}"
        )))
    }
}

fn unsupported(what: &str) -> crate::Error {
    crate::Error::other(format!("this container runtime cannot {what}"))
}

/// The per-host deploy lock: one deploy of an app at a time on a host.
///
/// Apart from [`Runtime`] so that an embedder can bring another lock (a
/// Consul session, a Kubernetes lease) without writing a container engine.
/// `rollback-docker` keeps it in the engine itself.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait DeployLock: Send + Sync {
    /// Take the lock of `lock.app`, atomically: [`LockAttempt::Held`] when
    /// someone else has it.
    async fn acquire(&self, lock: &LockInfo) -> Result<LockAttempt>;

    /// Who holds the lock of `app`, if anyone.
    async fn status(&self, app: &str) -> Result<Option<LockInfo>>;

    /// Release the lock of `app` when `deployment` holds it. A lock held by
    /// another deployment is left as it is: a live deploy's lock is freed by
    /// nobody else. Returns whether a lock was removed.
    async fn release(&self, app: &str, deployment: &DeploymentId) -> Result<bool>;

    /// Break the lock of `app`, whoever holds it: the human's way out
    /// (`rollback lock release`) and `recover --force`'s takeover. Returns
    /// whether a lock was removed.
    async fn break_lock(&self, app: &str) -> Result<bool>;
}

/// The verdict of one health probe attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum ProbeResult {
    /// Healthy; the detail says what was seen (`200 OK`).
    Healthy(String),
    /// Not healthy; the reason says why (`503`, `status is "DOWN"`, `connection refused`).
    Unhealthy(String),
    /// Still starting (Docker healthcheck in its start period).
    Starting(String),
}

impl ProbeResult {
    /// Whether the attempt counts as healthy.
    pub fn is_healthy(&self) -> bool {
        matches!(self, ProbeResult::Healthy(_))
    }

    /// The detail or reason text.
    pub fn detail(&self) -> &str {
        match self {
            ProbeResult::Healthy(d) | ProbeResult::Unhealthy(d) | ProbeResult::Starting(d) => d,
        }
    }
}

/// A health check of a running release on one host.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// One attempt against `container`. Probes that check an address (HTTP,
    /// TCP) ignore the id. The app's answer gets at most `timeout`; a probe
    /// that reaches the app through the engine (exec, a proxy container)
    /// may take an engine round trip more, which the engine allows for.
    async fn check(&self, container: &ContainerId, timeout: Duration) -> ProbeResult;

    /// Whether this probe can judge a release of `image`, asked once the
    /// image is on the host and before anything is switched, so that a check
    /// that could never pass fails the host with nothing changed. The
    /// default admits every image.
    async fn admit(&self, image: &ImageRef) -> Result<()> {
        let _ = image;
        Ok(())
    }

    /// What is probed, for output (`http://127.0.0.1:18080/health`).
    fn describe(&self) -> String;
}

macro_rules! forward_registry {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<T: Registry + ?Sized> Registry for $ty {
            async fn resolve(&self, reference: &ImageRef) -> Result<Digest> {
                (**self).resolve(reference).await
            }
            async fn copy(&self, source: &ImageRef, destination: &ImageRef) -> Result<CopyReport> {
                (**self).copy(source, destination).await
            }
        }
    )*};
}

macro_rules! forward_runtime {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<T: Runtime + ?Sized> Runtime for $ty {
            async fn current(&self, name: &str) -> Result<Option<ContainerInfo>> {
                (**self).current(name).await
            }
            async fn list_app(&self, app: &str) -> Result<Vec<ContainerInfo>> {
                (**self).list_app(app).await
            }
            async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo> {
                (**self).inspect(id).await
            }
            async fn pull(
                &self,
                image: &ImageRef,
                platform: Option<String>,
                progress: Option<ProgressSink>,
            ) -> Result<()> {
                (**self).pull(image, platform, progress).await
            }
            async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId> {
                (**self).create(spec).await
            }
            async fn start(&self, id: &ContainerId) -> Result<()> {
                (**self).start(id).await
            }
            async fn stop(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
                (**self).stop(id, timeout).await
            }
            async fn rename(&self, id: &ContainerId, new_name: &str) -> Result<()> {
                (**self).rename(id, new_name).await
            }
            async fn remove(&self, id: &ContainerId) -> Result<()> {
                (**self).remove(id).await
            }
            async fn logs(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>> {
                (**self).logs(id, lines).await
            }
            async fn wait_exit(&self, id: &ContainerId) -> Result<ContainerExit> {
                (**self).wait_exit(id).await
            }
            async fn exec(
                &self,
                id: &ContainerId,
                cmd: &[String],
                timeout: Duration,
            ) -> Result<ExecOutput> {
                (**self).exec(id, cmd, timeout).await
            }
            async fn exec_session(
                &self,
                id: &ContainerId,
                cmd: &[String],
            ) -> Result<Box<dyn ExecSession>> {
                (**self).exec_session(id, cmd).await
            }
            async fn list_images(&self, repository: &Repository) -> Result<Vec<ImageInfo>> {
                (**self).list_images(repository).await
            }
            async fn remove_image(&self, id: &str) -> Result<()> {
                (**self).remove_image(id).await
            }
            async fn create_network(&self, name: &str) -> Result<bool> {
                (**self).create_network(name).await
            }
            async fn connect_network(&self, id: &ContainerId, network: &str) -> Result<()> {
                (**self).connect_network(id, network).await
            }
            async fn network_address(
                &self,
                id: &ContainerId,
                network: &str,
            ) -> Result<Option<String>> {
                (**self).network_address(id, network).await
            }
        }
    )*};
}

macro_rules! forward_lock {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<T: DeployLock + ?Sized> DeployLock for $ty {
            async fn acquire(&self, lock: &LockInfo) -> Result<LockAttempt> {
                (**self).acquire(lock).await
            }
            async fn status(&self, app: &str) -> Result<Option<LockInfo>> {
                (**self).status(app).await
            }
            async fn release(&self, app: &str, deployment: &DeploymentId) -> Result<bool> {
                (**self).release(app, deployment).await
            }
            async fn break_lock(&self, app: &str) -> Result<bool> {
                (**self).break_lock(app).await
            }
        }
    )*};
}

macro_rules! forward_probe {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<T: HealthProbe + ?Sized> HealthProbe for $ty {
            async fn check(&self, container: &ContainerId, timeout: Duration) -> ProbeResult {
                (**self).check(container, timeout).await
            }
            async fn admit(&self, image: &ImageRef) -> Result<()> {
                (**self).admit(image).await
            }
            fn describe(&self) -> String {
                (**self).describe()
            }
        }
    )*};
}

forward_registry!(&T, Box<T>, Arc<T>);
forward_runtime!(&T, Box<T>, Arc<T>);
forward_lock!(&T, Box<T>, Arc<T>);
forward_probe!(&T, Box<T>, Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    // Compiles only while the traits stay object-safe and the blanket impls exist.
    #[allow(dead_code)]
    fn object_safe(
        registry: Arc<dyn Registry>,
        runtime: Arc<dyn Runtime>,
        lock: Arc<dyn DeployLock>,
        probe: Box<dyn HealthProbe>,
        switch: Arc<dyn crate::traffic::TrafficSwitch>,
    ) {
        fn takes_registry<R: Registry>(_: R) {}
        fn takes_runtime<R: Runtime>(_: R) {}
        fn takes_lock<L: DeployLock>(_: L) {}
        fn takes_probe<P: HealthProbe>(_: P) {}
        fn takes_switch<S: crate::traffic::TrafficSwitch>(_: S) {}
        takes_runtime(&*runtime);
        takes_registry(registry);
        takes_runtime(runtime);
        takes_lock(&*lock);
        takes_lock(Box::new(lock.clone()));
        takes_lock(lock);
        takes_probe(probe);
        takes_switch(&*switch);
        takes_switch(switch);
    }

    #[tokio::test]
    async fn a_lock_mock_works_through_arc_dyn() {
        let mut mock = MockDeployLock::new();
        let ours = DeploymentId("d1".into());
        mock.expect_release()
            .with(
                mockall::predicate::eq("app"),
                mockall::predicate::eq(ours.clone()),
            )
            .times(1)
            .returning(|_, _| Ok(true));
        mock.expect_break_lock().times(1).returning(|_| Ok(false));
        let lock: Arc<dyn DeployLock> = Arc::new(mock);
        assert!(lock.release("app", &ours).await.unwrap());
        assert!(!lock.break_lock("app").await.unwrap());
    }

    #[tokio::test]
    async fn mocks_work_through_arc_dyn() {
        let mut mock = MockRegistry::new();
        let digest: Digest = format!("sha256:{}", "d".repeat(64)).parse().unwrap();
        let expected = digest.clone();
        mock.expect_resolve()
            .times(1)
            .returning(move |_| Ok(expected.clone()));
        let registry: Arc<dyn Registry> = Arc::new(mock);
        let reference: ImageRef = "localhost:5000/app:v1".parse().unwrap();
        assert_eq!(registry.resolve(&reference).await.unwrap(), digest);
    }
}
