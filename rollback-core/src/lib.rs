//! `rollback-core`: deploy a container image to Docker hosts, prove it
//! healthy, and restore the previous release by itself when it is not.
//!
//! This crate holds the domain types, the traits [`Registry`], [`Runtime`],
//! [`DeployLock`] and [`HealthProbe`], the policies, the rollback
//! [state machine](machine), the [fleet policy](fleet), the deploy
//! [strategies](Strategy) and their [driver](engine), [checkpoints](checkpoint),
//! events, the [exit codes](exit) and, with the default `probes` feature, the
//! HTTP and TCP probes (`HttpProbe`, `TcpProbe`). It knows no Docker or
//! registry client: adapters live in `rollback-docker` and `rollback-registry`.
//! Without default features the engine builds with no HTTP stack at all.
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
//!     App, CancellationToken, ContainerTemplate, Deployer, Event, ExitCode, HealthPolicy,
//!     HostTarget, Outcome, Release, Tag, Target,
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
//! let running = Release::new(repository.clone(), v1).with_tag("v1".parse::<Tag>()?);
//! host.add_running("shop", "shop", &running);
//! // v2 crashes two seconds after it starts.
//! host.behave(&v2, Behavior::CrashAfter(Duration::from_secs(2)));
//!
//! // Releases are tagged `latest` (stable) and `previous`.
//! let app = App::new("shop".parse()?, repository.clone());
//! // The engine names the container after the app and runs the release's digest.
//! let container = ContainerTemplate::new().port("127.0.0.1:18080:8080".parse()?);
//! // The fake engine keeps its own deploy lock; any `DeployLock` will do.
//! let hosts = vec![HostTarget::new("prod-a", host.clone(), host.clone(), FakeProbe::new(host.clone()), container)];
//! let health = HealthPolicy::builder()
//!     .interval(Duration::from_secs(1))
//!     .deadline(Duration::from_secs(30))
//!     .stable_for(Duration::from_secs(5))
//!     .build()?;
//! let deployer = Deployer::new(app, registry.clone(), hosts)
//!     .with_health(health)
//!     .with_observer(Arc::new(|e: &Event| println!("{} {} {}", e.seq, e.phase, e.detail)));
//!
//! let report = deployer.deploy(Target::Tag("v2".parse()?), CancellationToken::new()).await;
//! assert_eq!(report.outcome, Outcome::RolledBack);
//! assert_eq!(report.exit_code(), ExitCode::RolledBack); // exit 3
//! assert_eq!(report.hosts[0].after, Some(running)); // v1 runs again, verified
//! assert!(registry.copies().is_empty());             // no tag moved
//! # Ok(())
//! # }
//! ```
//!
//! `examples/custom_runtime.rs` drives a deploy with hand-written trait
//! implementations instead of the fakes.

#![warn(missing_docs)]

pub mod adoption;
pub mod checkpoint;
pub mod engine;
pub mod error;
pub mod event;
pub mod exit;
#[cfg(any(test, feature = "mock"))]
pub mod fake;
pub mod fleet;
pub mod holder;
pub mod machine;
pub mod outcome;
pub mod policy;
#[cfg(feature = "probes")]
pub mod probe;
pub mod retention;
pub mod traffic;
pub mod traits;
pub mod types;

/// The attribute the traits are declared with, for implementations outside this crate.
pub use async_trait::async_trait;
pub use checkpoint::{Checkpoint, NoCheckpoint, Stage};
pub use engine::{
    App, CancellationToken, DeployStrategy, Deployer, FailedRemoval, History, HostPlan, HostPrune,
    HostStatus, HostTarget, Interrupted, Plan, PruneReport, StartFirst, StopFirst, Strategy,
    StrategyCx, Target, UndoTarget,
};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventKind, NoopObserver, Observer, Phase, Scope};
pub use exit::ExitCode;
pub use fleet::{FleetAction, FleetView, TagMoves};
pub use holder::{HolderCheck, HolderFate, NoHolderCheck};
pub use machine::{step, CapturedRelease, HostState, Input, InvalidTransition};
pub use outcome::{DeployReport, HostReport, Outcome};
pub use policy::{
    HealthPolicy, HealthPolicyBuilder, InvalidPolicy, OnFailure, RolloutPolicy, StepTimeouts,
};
#[cfg(feature = "probes")]
pub use probe::{HttpProbe, TcpProbe};
pub use retention::{ImageInfo, KeepReason, KeptImage, Protected, Retain, RetentionPlan};
pub use traffic::{TrafficSwitch, Upstream};
pub use traits::{
    CopyReport, DeployLock, ExecOutput, ExecSession, HealthProbe, ProbeResult, Registry, Runtime,
};
pub use types::{
    labels, next_name, retained_name, ContainerExit, ContainerId, ContainerInfo, ContainerName,
    ContainerSpec, ContainerState, ContainerTemplate, DeploymentId, Digest, EnvValue, HealthStatus,
    HostId, ImageRef, LockAttempt, LockInfo, PortMapping, ProgressSink, PullProgress, Release,
    Repository, RestartPolicy, RunOptions, Secret, Tag, Workload,
};

#[cfg(any(test, feature = "mock"))]
pub use traffic::MockTrafficSwitch;
#[cfg(any(test, feature = "mock"))]
pub use traits::{MockDeployLock, MockHealthProbe, MockRegistry, MockRuntime};
