//! `rollback-registry`: the [`Registry`](rollback_core::Registry) of
//! `rollback` for OCI and Docker registries.
//!
//! [`OciRegistry`] resolves tags with `HEAD` requests and copies tags
//! registry-side: a retag inside one repository fetches the manifest once
//! and writes the exact same bytes under the new tag (the digest stays
//! identical, multi-platform indexes included); a copy into another
//! repository of the same registry mounts every blob. No layer is ever
//! downloaded.
//!
//! Registries on loopback (`127.0.0.0/8`, `localhost`, `[::1]`) are spoken
//! to over plain HTTP, as Docker does; every other host over TLS unless it
//! is listed in [`RegistryConfig::insecure`]. Credentials come from Docker's
//! `config.json`, credential helpers included ([`credentials`], the lookup
//! `rollback-docker` uses too); Bearer tokens are requested for every
//! repository an operation touches at once, and kept for their lifetime.
//! Docker Hub names (`nginx`, `docker.io/team/app`) are spoken to at
//! `registry-1.docker.io`, as `docker` does.
//!
//! ```no_run
//! use rollback_core::{ImageRef, Registry};
//! use rollback_registry::OciRegistry;
//!
//! # async fn demo() -> rollback_core::Result<()> {
//! let registry = OciRegistry::from_docker_config()?;
//! let latest: ImageRef = "127.0.0.1:5000/team/app:latest".parse()?;
//! let previous: ImageRef = "127.0.0.1:5000/team/app:previous".parse()?;
//! let report = registry.copy(&latest, &previous).await?;
//! println!("previous is now {} (written: {})", report.digest, report.written);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod auth;
mod config;
pub use rollback_credentials as credentials;
mod registry;
mod transport;

pub use config::{RegistryConfig, DEFAULT_MAX_MANIFEST_BYTES};
pub use registry::{
    CopyStats, OciRegistry, DOCKER_HUB_REGISTRY, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES, OCI_INDEX, OCI_MANIFEST,
};
pub use transport::RequestCounts;
