//! Drive a deploy with your own implementations of the traits.
//!
//! An in-memory container engine, a deploy lock of its own (as a Consul
//! session or a Kubernetes lease would be), an in-memory registry and a
//! probe that says healthy for every image but one. The first deploy (v2)
//! succeeds and moves the tags; the second (v3) never turns healthy and is
//! rolled back. A checkpoint traces the stages the engine passes.
//!
//! Run with `cargo run -p rollback-core --example custom_runtime`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollback_core::{
    async_trait, labels, App, CancellationToken, Checkpoint, ContainerExit, ContainerId,
    ContainerInfo, ContainerSpec, ContainerState, ContainerTemplate, CopyReport, DeployLock,
    Deployer, DeploymentId, Digest, Error, Event, HealthPolicy, HealthProbe, HostTarget, ImageRef,
    LockAttempt, LockInfo, ProbeResult, ProgressSink, Registry, Release, Result, Runtime, Scope,
    Stage, Target,
};

/// Containers in a map; nothing runs, states just change.
#[derive(Default)]
struct MemoryEngine {
    containers: Mutex<BTreeMap<String, ContainerInfo>>,
    next: Mutex<u32>,
}

impl MemoryEngine {
    fn with<T>(&self, id: &ContainerId, f: impl FnOnce(&mut ContainerInfo) -> T) -> Result<T> {
        let mut containers = self.containers.lock().unwrap();
        let c = containers
            .get_mut(id.as_str())
            .ok_or_else(|| Error::not_found(format!("no such container {id}")))?;
        Ok(f(c))
    }
}

#[async_trait]
impl Runtime for MemoryEngine {
    async fn current(&self, name: &str) -> Result<Option<ContainerInfo>> {
        let containers = self.containers.lock().unwrap();
        Ok(containers.values().find(|c| c.name == name).cloned())
    }
    async fn list_app(&self, app: &str) -> Result<Vec<ContainerInfo>> {
        let containers = self.containers.lock().unwrap();
        Ok(containers
            .values()
            .filter(|c| c.labels.get(labels::APP).map(String::as_str) == Some(app))
            .cloned()
            .collect())
    }
    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo> {
        self.with(id, |c| c.clone())
    }
    async fn pull(
        &self,
        image: &ImageRef,
        _: Option<String>,
        _: Option<ProgressSink>,
    ) -> Result<()> {
        println!("    engine: pull {image}");
        Ok(())
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let id = ContainerId(format!("ctr{next}"));
        let release = spec.image.digest().map(|digest| {
            Release::new(spec.image.repo(), digest)
                .with_tag(spec.labels.get(labels::TAG).and_then(|t| t.parse().ok()))
        });
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image_id: spec.image.to_string(),
            release,
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            restart_count: 0,
            started_at: None,
        };
        self.containers.lock().unwrap().insert(id.0.clone(), info);
        Ok(id)
    }
    async fn start(&self, id: &ContainerId) -> Result<()> {
        self.with(id, |c| c.state = ContainerState::Running { health: None })
    }
    async fn stop(&self, id: &ContainerId, _: Duration) -> Result<()> {
        self.with(id, |c| c.state = ContainerState::Exited { code: 0 })
    }
    async fn rename(&self, id: &ContainerId, new_name: &str) -> Result<()> {
        self.with(id, |c| c.name = new_name.to_owned())
    }
    async fn remove(&self, id: &ContainerId) -> Result<()> {
        self.containers.lock().unwrap().remove(id.as_str());
        Ok(())
    }
    async fn logs(&self, id: &ContainerId, _: usize) -> Result<Vec<String>> {
        Ok(vec![format!("{id}: listening on :8080")])
    }
    async fn wait_exit(&self, _: &ContainerId) -> Result<ContainerExit> {
        // Nothing here ever crashes.
        std::future::pending().await
    }
}

/// One deploy at a time, apart from the engine.
#[derive(Default)]
struct MemoryLock {
    held: Mutex<Option<LockInfo>>,
}

#[async_trait]
impl DeployLock for MemoryLock {
    async fn acquire(&self, lock: &LockInfo) -> Result<LockAttempt> {
        let mut held = self.held.lock().unwrap();
        match &*held {
            Some(other) => Ok(LockAttempt::Held(other.clone())),
            None => {
                *held = Some(lock.clone());
                Ok(LockAttempt::Acquired)
            }
        }
    }
    async fn status(&self, _: &str) -> Result<Option<LockInfo>> {
        Ok(self.held.lock().unwrap().clone())
    }
    async fn release(&self, _: &str, deployment: &DeploymentId) -> Result<bool> {
        let mut held = self.held.lock().unwrap();
        // Only the holder frees its lock.
        if held.as_ref().is_some_and(|l| &l.deployment == deployment) {
            *held = None;
            return Ok(true);
        }
        Ok(false)
    }
    async fn break_lock(&self, _: &str) -> Result<bool> {
        Ok(self.held.lock().unwrap().take().is_some())
    }
}

/// Prints each stage the engine reaches; a test could wait here instead.
struct Trace;

#[async_trait]
impl Checkpoint for Trace {
    async fn reached(&self, stage: Stage, scope: &Scope) {
        let on = scope.host().map_or("the fleet", |h| h.as_str());
        println!("      (checkpoint {stage} on {on})");
    }
}

/// Tags in a map.
#[derive(Default)]
struct MemoryRegistry {
    tags: Mutex<HashMap<String, Digest>>,
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn resolve(&self, reference: &ImageRef) -> Result<Digest> {
        if let Some(digest) = reference.digest() {
            return Ok(digest);
        }
        self.tags
            .lock()
            .unwrap()
            .get(reference.tag().unwrap_or("latest"))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("{reference} not found")))
    }
    async fn copy(&self, source: &ImageRef, destination: &ImageRef) -> Result<CopyReport> {
        let digest = self.resolve(source).await?;
        let tag = destination.tag().unwrap_or("latest").to_owned();
        let old = self.tags.lock().unwrap().insert(tag, digest.clone());
        println!("    registry: {destination} -> {}", digest.short());
        Ok(CopyReport {
            written: old.as_ref() != Some(&digest),
            digest,
        })
    }
}

/// Healthy unless the container runs the `broken` digest.
struct ImageProbe {
    engine: Arc<MemoryEngine>,
    broken: Digest,
}

#[async_trait]
impl HealthProbe for ImageProbe {
    async fn check(&self, container: &ContainerId, _: Duration) -> ProbeResult {
        let digest = self
            .engine
            .inspect(container)
            .await
            .ok()
            .and_then(|c| c.release)
            .map(|r| r.digest);
        if digest.as_ref() == Some(&self.broken) {
            ProbeResult::Unhealthy("status is \"DOWN\"".into())
        } else {
            ProbeResult::Healthy("200 OK".into())
        }
    }
    fn describe(&self) -> String {
        "in-memory probe".into()
    }
}

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let repository: rollback_core::Repository = "registry.local/team/shop".parse()?;
    let registry = Arc::new(MemoryRegistry::default());
    for (tag, c) in [("v2", '2'), ("v3", '3')] {
        registry.tags.lock().unwrap().insert(tag.into(), digest(c));
    }
    let engine = Arc::new(MemoryEngine::default());
    let probe = Arc::new(ImageProbe {
        engine: engine.clone(),
        broken: digest('3'),
    });
    // The engine names the container after the app and pins the image.
    let container = ContainerTemplate::new().port("127.0.0.1:18080:8080".parse()?);
    let app = App::new("shop".parse()?, repository);
    let health = HealthPolicy::builder()
        .interval(Duration::from_millis(100))
        .timeout(Duration::from_millis(100))
        .deadline(Duration::from_secs(1))
        .stable_for(Duration::from_millis(300))
        .build()?;
    let deployer = Deployer::new(
        app,
        registry.clone(),
        vec![HostTarget::new(
            "local",
            engine.clone(),
            Arc::new(MemoryLock::default()),
            probe,
            container,
        )],
    )
    .with_health(health)
    .with_checkpoint(Arc::new(Trace))
    .with_observer(Arc::new(|e: &Event| {
        println!("  {:>3} {:<12} {}", e.seq, e.phase.as_str(), e.detail)
    }));

    for tag in ["v2", "v3"] {
        println!("deploy {tag}:");
        let report = deployer
            .deploy(Target::Tag(tag.parse()?), CancellationToken::new())
            .await;
        println!(
            "outcome: {} (exit {}){}",
            report.outcome,
            report.exit_code(),
            report.reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    let running = engine.current("shop").await?.and_then(|c| c.release);
    println!(
        "running now: {}",
        running.map(|r| r.display_name()).unwrap_or_default()
    );
    Ok(())
}
