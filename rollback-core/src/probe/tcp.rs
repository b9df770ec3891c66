use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::traits::{HealthProbe, ProbeResult};
use crate::types::ContainerId;

/// Healthy when a TCP connection to `host:port` opens within the attempt timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpProbe {
    address: String,
}

impl TcpProbe {
    /// A probe of `address` (`127.0.0.1:18080`, `db.internal:5432`, `[::1]:80`).
    pub fn new(address: &str) -> Result<Self> {
        let bad =
            |why: &str| Error::invalid_input(format!("invalid tcp address {address:?}: {why}"));
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("port must be 1-65535"))?;
        Ok(Self {
            address: address.to_owned(),
        })
    }

    /// The probed address.
    pub fn address(&self) -> &str {
        &self.address
    }
}

#[async_trait]
impl HealthProbe for TcpProbe {
    async fn check(&self, _container: &ContainerId, timeout: Duration) -> ProbeResult {
        match tokio::time::timeout(timeout, TcpStream::connect(&self.address)).await {
            Ok(Ok(_stream)) => ProbeResult::Healthy(format!("connected to {}", self.address)),
            Ok(Err(e)) => ProbeResult::Unhealthy(e.to_string().to_lowercase()),
            Err(_) => ProbeResult::Unhealthy(format!(
                "no connection within {}",
                humantime::format_duration(timeout)
            )),
        }
    }

    fn describe(&self) -> String {
        format!("tcp://{}", self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_or_says_why_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let probe = TcpProbe::new(&address).unwrap();
        let id = ContainerId("ignored".into());
        assert!(probe.check(&id, Duration::from_secs(2)).await.is_healthy());
        drop(listener);
        let result = probe.check(&id, Duration::from_secs(2)).await;
        assert!(!result.is_healthy());
        assert!(result.detail().contains("refused"), "{result:?}");
        assert_eq!(probe.describe(), format!("tcp://{address}"));
    }

    #[test]
    fn rejects_addresses_without_a_port() {
        for bad in ["localhost", ":80", "host:0", "host:http", "host:70000"] {
            assert!(TcpProbe::new(bad).is_err(), "{bad}");
        }
        TcpProbe::new("[::1]:8080").unwrap();
    }
}
