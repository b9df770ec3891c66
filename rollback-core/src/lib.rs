//! `rollback-core`: deploy a container image to Docker hosts, prove it
//! healthy, and restore the previous release by itself when it is not.
//!
//! This crate holds the domain types, the traits [`Registry`], [`Runtime`]
//! and [`HealthProbe`], the policies, the rollback state machine and its
//! driver, fleet rollout, events and the HTTP and TCP probes. It knows no
//! Docker or registry client: adapters live in `rollback-docker` and
//! `rollback-registry`.

#![warn(missing_docs)]

pub mod engine;
pub mod error;
pub mod event;
#[cfg(any(test, feature = "mock"))]
pub mod fake;
pub mod machine;
pub mod outcome;
pub mod policy;
pub mod probe;
pub mod traits;
pub mod types;

pub use engine::{
    App, CancellationToken, Deployer, History, HostPlan, HostStatus, HostTarget, Plan, Target,
};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventKind, NoopObserver, Observer, Phase};
pub use machine::{step, CapturedRelease, HostState, Input, InvalidTransition};
pub use outcome::{DeployReport, HostReport, Outcome};
pub use policy::{HealthPolicy, InvalidPolicy, OnFailure, RolloutPolicy, StepTimeouts};
pub use probe::{HttpProbe, TcpProbe};
pub use traits::{CopyReport, HealthProbe, ProbeResult, Registry, Runtime};
pub use types::{
    labels, retained_name, ContainerExit, ContainerId, ContainerInfo, ContainerSpec,
    ContainerState, DeploymentId, Digest, EnvValue, HealthStatus, HostId, ImageRef, LockAttempt,
    LockInfo, PortMapping, ProgressSink, PullProgress, Release, Repository, RestartPolicy, Secret,
};

#[cfg(any(test, feature = "mock"))]
pub use traits::{MockHealthProbe, MockRegistry, MockRuntime};
