//! `rollback-proxy`: traffic switches for start-first deploys.
//!
//! A start-first deploy starts the new release beside the old one, probes
//! it directly, and only then moves the host's traffic to it through a
//! proxy, keeping the old release running until the new one has been
//! stable. This crate holds the proxies that do the moving, each an
//! implementation of the core's [`TrafficSwitch`](rollback_core::TrafficSwitch):
//!
//! - [`Caddy`]: Caddy 2 (the official `caddy:2` image), driven through its
//!   admin API from inside the proxy container.
//!
//! Everything goes through the host's [`Runtime`](rollback_core::Runtime):
//! [`ProxyContainer`] boots the proxy's container the same way for every
//! adapter, and the adapter speaks to its proxy by running commands in that
//! container. Another proxy is one more adapter of the same shape:
//! kamal-proxy (`kamal-proxy deploy` run in its container), Traefik (a file
//! provider's config written into its container), HAProxy (its runtime API
//! on a socket inside the container), nginx (a config written and
//! `nginx -s reload`).
//!
//! [`cert`] checks certificate files before anything changes.
//!
//! [`DirectProbe`] checks a new release's health from inside the proxy
//! container, straight at the container's address, never through the
//! proxy's routing.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use rollback_core::{ContainerId, Runtime, TrafficSwitch};
//! use rollback_proxy::Caddy;
//!
//! # async fn run(runtime: Arc<dyn Runtime>, new: ContainerId) -> rollback_core::Result<()> {
//! let proxy = Caddy::container(runtime, None, "127.0.0.1:18080")?;
//! let switch = Caddy::new(proxy, "shop");
//! switch.ensure().await?;                          // boots caddy:2 if it does not run
//! switch.switch(&Caddy::upstream(&new, 8080)).await?; // new requests go to `new`
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod caddy;
pub mod cert;
pub mod container;
pub mod probe;
mod shell;

pub use caddy::{AppCertificate, Caddy, Route, Tls};
pub use container::{Booted, ProxyContainer};
pub use probe::DirectProbe;
