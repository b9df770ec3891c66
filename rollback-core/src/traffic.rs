//! The traffic seam: [`TrafficSwitch`], a proxy on one host that sends the
//! app's requests to one release's container, for start-first deploys.
//!
//! The new release starts beside the old one, is probed directly, and only
//! then receives traffic; the old one keeps running until the new one has
//! been stable, so a switch back costs one proxy change. Adapters (Caddy in
//! `rollback-proxy`; kamal-proxy, Traefik, HAProxy or nginx would each be
//! one more) drive their proxy through the host's container engine.
//!
//! With the `mock` feature a mockall mock (`MockTrafficSwitch`) is exported.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::types::ContainerId;

/// Where a proxy sends a host's traffic: an app container reachable from the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upstream {
    /// The container that answers.
    pub container: ContainerId,
    /// `host:port` as the proxy dials it (`172.18.0.5:8080`, `a1b2c3d4e5f6:8080`).
    pub address: String,
}

impl Upstream {
    /// The container `container`, dialled at `address`.
    pub fn new(container: ContainerId, address: impl Into<String>) -> Self {
        Self {
            container,
            address: address.into(),
        }
    }
}

impl Upstream {
    /// `container` dialled by its short id on `port`: the engine's DNS
    /// resolves it on a shared user-defined network and, unlike an IP
    /// address, it survives a restart of the container.
    pub fn of(container: &ContainerId, port: u16) -> Self {
        let short: String = container.as_str().chars().take(12).collect();
        Self::new(container.clone(), format!("{short}:{port}"))
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.container)
    }
}

/// A proxy in front of an app on one host.
///
/// Every method is idempotent, so a deploy resumed by `recover` may repeat
/// the step it was interrupted in.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait TrafficSwitch: Send + Sync {
    /// Boot the proxy on this host when it does not run (idempotent).
    async fn ensure(&self) -> Result<()>;
    /// The upstream the proxy sends traffic to now.
    async fn current(&self) -> Result<Option<Upstream>>;
    /// New requests go to `to` from now on; requests in flight finish where they are.
    async fn switch(&self, to: &Upstream) -> Result<()>;
    /// Wait until `from` has no request in flight, or `drain` has passed.
    async fn drain(&self, from: &Upstream, drain: Duration) -> Result<()>;
    /// What the switch drives, for output (`caddy:2 in rollback-proxy on 127.0.0.1:18080`).
    fn describe(&self) -> String;
}

macro_rules! forward_switch {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<T: TrafficSwitch + ?Sized> TrafficSwitch for $ty {
            async fn ensure(&self) -> Result<()> {
                (**self).ensure().await
            }
            async fn current(&self) -> Result<Option<Upstream>> {
                (**self).current().await
            }
            async fn switch(&self, to: &Upstream) -> Result<()> {
                (**self).switch(to).await
            }
            async fn drain(&self, from: &Upstream, drain: Duration) -> Result<()> {
                (**self).drain(from, drain).await
            }
            fn describe(&self) -> String {
                (**self).describe()
            }
        }
    )*};
}

forward_switch!(&T, Box<T>, Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_mock_works_through_arc_dyn() {
        let mut mock = MockTrafficSwitch::new();
        let up = Upstream::new(ContainerId("c2".into()), "172.18.0.5:8080");
        let expected = up.clone();
        mock.expect_current()
            .times(1)
            .returning(move || Ok(Some(expected.clone())));
        mock.expect_switch()
            .withf(|to| to.address == "172.18.0.5:8080")
            .times(1)
            .returning(|_| Ok(()));
        let switch: Arc<dyn TrafficSwitch> = Arc::new(mock);
        switch.switch(&up).await.unwrap();
        assert_eq!(switch.current().await.unwrap(), Some(up));
    }
}
