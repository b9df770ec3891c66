//! `rollback-core`: deploy a container image to Docker hosts, prove it
//! healthy, and restore the previous release by itself when it is not.
//!
//! This crate holds the domain types, the traits [`Registry`], [`Runtime`],
//! [`DeployLock`] and [`HealthProbe`], the policies, the rollback
//! [state machine](machine), the [fleet policy](fleet), the deploy
//! [strategies](Strategy) and their [driver](engine), [checkpoints](checkpoint),
//! events and the HTTP and TCP [probes](probe). It knows no Docker or
//! registry client: adapters live in `rollback-docker` and `rollback-registry`.
//!
//! Every decision is a row of a pure, table-tested function: the per-host
//! [`machine::step`] and the fleet's [`fleet::next`]; the driver only
//! performs effects and feeds back what it saw.
//!
//! # How a deploy goes
//!
//! On each host, [`Deployer::deploy`] takes the deploy lock, pins the running
//! release by digest, pulls the new image, stops the old container and keeps
//! it (renamed to [`retained_name`]), starts the new one and probes it
//! directly, watching the container for a crash at the same time. When every
//! host is healthy the registry tags move (`previous` ← what `latest` was,
//! `latest` ← new); when one is not, the kept containers come back and are
//! verified the same way. The [`DeployReport`] says which, with an exit code.
//!
//! # Example
//!
//! With the in-memory fakes of the `mock` feature (any [`Runtime`],
//! [`Registry`] and [`HealthProbe`] will do):
//!
//! ```
//! use std::sync::Arc;
//! use rollback_core::fake::{Behavior, FakeProbe, FakeRegistry, FakeRuntime};
//! use rollback_core::{
//!     App, CancellationToken, ContainerSpec, Deployer, Event, HealthPolicy, HostTarget,
//!     Outcome, Release, Target,
//! };
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repository = "127.0.0.1:5000/team/shop".parse()?;
//! let v1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111".parse()?;
//! let v2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222".parse()?;
//!
//! // A registry with `latest` at v1 and a new tag `v2`; a host running v1.
//! let registry = FakeRegistry::new();
//! registry.set_tag(&repository, "latest", &v1);
//! registry.set_tag(&repository, "v2", &v2);
//! let host = FakeRuntime::new();
//! let running = Release { repository: repository.clone(), tag: Some("v1".into()), digest: v1 };
//! host.add_running("shop", "shop", &running);
//! // v2 crashes two seconds after it starts.
//! host.behave(&v2, Behavior::CrashAfter(Duration::from_secs(2)));
//!
//! let app = App {
//!     name: "shop".into(),
//!     repository: repository.clone(),
//!     stable_tag: "latest".into(),
//!     previous_tag: "previous".into(),
//! };
//! let spec = ContainerSpec {
//!     name: "shop".into(),
//!     image: repository.with_tag("v2")?,
//!     ports: vec!["127.0.0.1:18080:8080".parse()?],
//!     env: vec![],
//!     volumes: vec![],
//!     platform: None,
//!     network: None,
//!     restart: None,
//!     command: vec![],
//!     labels: Default::default(),
//!     stop_timeout: None,
//! };
//! // The fake engine keeps its own deploy lock; any `DeployLock` will do.
//! let hosts = vec![HostTarget::new("prod-a", host.clone(), host.clone(), FakeProbe::new(host.clone()), spec)];
//! let health = HealthPolicy::new(
//!     Duration::from_secs(1),  // interval
//!     Duration::from_secs(1),  // timeout per attempt
//!     Duration::ZERO,          // start period
//!     Duration::from_secs(30), // deadline
//!     Duration::from_secs(5),  // stable for
//! )?;
//! let deployer = Deployer::new(app, registry.clone(), hosts)
//!     .with_health(health)
//!     .with_observer(Arc::new(|e: &Event| println!("{} {} {}", e.seq, e.phase, e.detail)));
//!
//! let report = deployer.deploy(Target::Tag("v2".into()), CancellationToken::new()).await;
//! assert_eq!(report.outcome, Outcome::RolledBack);
//! assert_eq!(report.exit_code(), 3);
//! assert_eq!(report.hosts[0].after, Some(running)); // v1 runs again, verified
//! assert!(registry.copies().is_empty());             // no tag moved
//! # Ok(())
//! # }
//! ```
//!
//! `examples/custom_runtime.rs` drives a deploy with hand-written trait
//! implementations instead of the fakes.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod engine;
pub mod error;
pub mod event;
#[cfg(any(test, feature = "mock"))]
pub mod fake;
pub mod fleet;
pub mod machine;
pub mod outcome;
pub mod policy;
pub mod probe;
pub mod traffic;
pub mod traits;
pub mod types;

pub use checkpoint::{Checkpoint, NoCheckpoint, Stage};
pub use engine::{
    App, CancellationToken, Deployer, History, HostPlan, HostStatus, HostTarget, Plan, Strategy,
    Target,
};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventKind, NoopObserver, Observer, Phase, Scope};
pub use fleet::{FleetAction, FleetView};
pub use machine::{step, CapturedRelease, HostState, Input, InvalidTransition};
pub use outcome::{DeployReport, HostReport, Outcome};
pub use policy::{HealthPolicy, InvalidPolicy, OnFailure, RolloutPolicy, StepTimeouts};
pub use probe::{HttpProbe, TcpProbe};
pub use traffic::{TrafficSwitch, Upstream};
pub use traits::{CopyReport, DeployLock, ExecOutput, HealthProbe, ProbeResult, Registry, Runtime};
pub use types::{
    labels, retained_name, ContainerExit, ContainerId, ContainerInfo, ContainerSpec,
    ContainerState, DeploymentId, Digest, EnvValue, HealthStatus, HostId, ImageRef, LockAttempt,
    LockInfo, PortMapping, ProgressSink, PullProgress, Release, Repository, RestartPolicy, Secret,
};

#[cfg(any(test, feature = "mock"))]
pub use traffic::MockTrafficSwitch;
#[cfg(any(test, feature = "mock"))]
pub use traits::{MockDeployLock, MockHealthProbe, MockRegistry, MockRuntime};
