//! `rollback-docker`: the Docker Engine adapter of `rollback`.
//!
//! [`DockerRuntime`] implements [`rollback_core::Runtime`] on the Engine API
//! (through bollard, from Docker 20.10 / API 1.41 on): inspect, pull by
//! digest with credentials from Docker's `config.json`, create, start, stop,
//! rename, remove, logs and an event-driven
//! [`wait_exit`](rollback_core::Runtime::wait_exit); it is also the host's
//! [`rollback_core::DeployLock`], kept in the engine ([`lock`]).
//! [`DockerHealthProbe`] reads the image's own `HEALTHCHECK` state.
//! [`swarm::Swarm`] is the adapter for Swarm services on a manager. Engines
//! are reached on a Unix socket, over TCP (plain or TLS), or over SSH
//! (`ssh://user@host[:port]`, through the system `ssh` and `docker system
//! dial-stdio`, as the docker CLI does).
//!
//! ```no_run
//! use std::time::Duration;
//! use rollback_core::Runtime;
//! use rollback_docker::DockerRuntime;
//!
//! # async fn demo() -> rollback_core::Result<()> {
//! let runtime = DockerRuntime::connect(None, Duration::from_secs(10)).await?;
//! if let Some(app) = runtime.current("ody-prod-app").await? {
//!     println!("{} is {}", app.name, app.state);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Errors name the engine URL and carry a [`rollback_core::ErrorKind`]
//! decided by the engine's status code. Secret environment values go to
//! the engine in the create request only; they are never logged, labelled
//! or quoted in errors. (bollard itself logs request bodies at `debug`
//! level of the `log` crate: keep its target below `debug`.)

pub mod lock;
pub mod swarm;

mod service;

mod connect;
mod convert;
mod error;
mod probe;
mod pull;
mod runtime;
mod ssh;

pub use connect::DEFAULT_DOCKER_URL;
pub use probe::{DockerExecProbe, DockerHealthProbe};
pub use runtime::DockerRuntime;
pub use service::{SwarmStrategy, TaskHealth};
