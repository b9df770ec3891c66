//! The real adapters: Docker engines, the OCI registry client and the probes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rollback_core::{HealthProbe, Registry, Runtime};
use rollback_docker::{DockerHealthProbe, DockerRuntime};
use rollback_registry::OciRegistry;

use crate::commands::Adapters;
use crate::config::{HealthCheck, HostConfig};
use crate::exit::CliError;

/// Time to reach an engine, and the limit of each engine request's answer.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Docker engines named by the config, the registry from Docker's credentials.
#[derive(Debug, Default)]
pub struct RealAdapters;

impl RealAdapters {
    async fn docker(&self, host: &HostConfig) -> Result<DockerRuntime, CliError> {
        DockerRuntime::connect(host.docker.as_deref(), ENGINE_TIMEOUT)
            .await
            .map_err(|e| CliError::core(format_args!("host {}", host.name), &e))
    }
}

#[async_trait]
impl Adapters for RealAdapters {
    fn registry(&self) -> Result<Arc<dyn Registry>, CliError> {
        let registry =
            OciRegistry::from_docker_config().map_err(|e| CliError::core("registry client", &e))?;
        Ok(Arc::new(registry))
    }

    async fn runtime(&self, host: &HostConfig) -> Result<Arc<dyn Runtime>, CliError> {
        Ok(Arc::new(self.docker(host).await?))
    }

    async fn host(
        &self,
        host: &HostConfig,
    ) -> Result<(Arc<dyn Runtime>, Arc<dyn HealthProbe>), CliError> {
        let docker = self.docker(host).await?;
        let probe: Arc<dyn HealthProbe> = match &host.health {
            Some(HealthCheck::Docker) => Arc::new(DockerHealthProbe::new(docker.clone())),
            Some(check) => probe(check)?,
            None => {
                return Err(CliError::usage(format!(
                    "host {}: no health check configured",
                    host.name
                )))
            }
        };
        Ok((Arc::new(docker), probe))
    }
}

/// The HTTP or TCP probe of a check.
fn probe(check: &HealthCheck) -> Result<Arc<dyn HealthProbe>, CliError> {
    Err(CliError::failed(format!(
        "the {check} health check needs rollback_core::probe, not in this build"
    )))
}
