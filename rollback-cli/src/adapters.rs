//! Where commands get engines, locks, probes and the registry from: the
//! [`Adapters`] trait, and the real Docker and OCI adapters behind it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rollback_core::{
    ContainerId, DeployLock, HealthProbe, HttpProbe, ProbeResult, Registry, Runtime, StartFirst,
    Strategy, TcpProbe,
};
use rollback_docker::swarm::{Swarm, TaskTemplate};
use rollback_docker::{
    DockerExecProbe, DockerHealthProbe, DockerRuntime, SwarmStrategy, TaskHealth,
};
use rollback_proxy::{Caddy, DirectProbe, ProxyContainer, Tls};
use rollback_registry::OciRegistry;

use crate::config::{HealthCheck, HostConfig, ProxyConfig, SwarmConfig, TlsConfig};
use crate::exit::CliError;

/// A host's engine, deploy lock and probe, connected.
pub struct Connected {
    /// The engine.
    pub runtime: Arc<dyn Runtime>,
    /// The deploy lock.
    pub lock: Arc<dyn DeployLock>,
    /// The health probe of the release.
    pub probe: Arc<dyn HealthProbe>,
    /// The strategy the engine itself calls for (a Swarm manager's
    /// service), when it is not the config's container strategy.
    pub strategy: Option<Strategy>,
}

/// Where the commands get their registry, engines, locks and probes from.
///
/// The binary uses the real Docker and OCI adapters; tests hand in mocks.
#[async_trait]
pub trait Adapters: Send + Sync {
    /// The registry client.
    fn registry(&self) -> Result<Arc<dyn Registry>, CliError>;

    /// The deploy lock of `host`, connected.
    async fn lock(&self, host: &HostConfig) -> Result<Arc<dyn DeployLock>, CliError>;

    /// The engine, the lock and the health probe of `host`.
    async fn host(&self, host: &HostConfig) -> Result<Connected, CliError>;
}

/// Time to reach an engine, and the limit of each engine request's answer.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Docker engines named by the config, the registry from Docker's credentials.
#[derive(Debug, Default)]
pub struct RealAdapters;

impl RealAdapters {
    async fn docker(&self, host: &HostConfig) -> Result<DockerRuntime, CliError> {
        DockerRuntime::connect(host.docker.as_deref(), ENGINE_TIMEOUT)
            .await
            // Callers prefix the host name; the engine's message names the URL.
            .map_err(|e| CliError::failed(e.report()))
    }
}

#[async_trait]
impl Adapters for RealAdapters {
    fn registry(&self) -> Result<Arc<dyn Registry>, CliError> {
        let registry =
            OciRegistry::from_docker_config().map_err(|e| CliError::core("registry client", &e))?;
        Ok(Arc::new(registry))
    }

    async fn lock(&self, host: &HostConfig) -> Result<Arc<dyn DeployLock>, CliError> {
        Ok(Arc::new(self.docker(host).await?))
    }

    async fn host(&self, host: &HostConfig) -> Result<Connected, CliError> {
        let docker = self.docker(host).await?;
        if let (Some(swarm), Some(health)) = (&host.swarm, &host.health) {
            let strategy = swarm_strategy(&docker, swarm, health)?;
            let docker = Arc::new(docker);
            return Ok(Connected {
                runtime: docker.clone(),
                lock: docker,
                probe: Arc::new(ServiceTasks {
                    what: strategy.describe_probe(),
                }),
                strategy: Some(Strategy::new(strategy)),
            });
        }
        let probe: Arc<dyn HealthProbe> = match &host.health {
            Some(HealthCheck::Docker) => Arc::new(DockerHealthProbe::new(docker.clone())),
            Some(HealthCheck::Direct {
                path,
                port,
                expect_status,
                expect_json,
            }) => {
                let config = host.proxy.as_ref().ok_or_else(|| {
                    CliError::usage(format!("host {}: health.path needs [proxy]", host.name))
                })?;
                let proxy = proxy_container(Arc::new(docker.clone()), config)?;
                let bad = |e: rollback_core::Error| {
                    CliError::bad_argument(format_args!("health check GET {path}"), &e)
                };
                let mut probe = DirectProbe::new(proxy, *port, path).map_err(bad)?;
                if let Some(status) = expect_status {
                    probe = probe.expect_status(*status).map_err(bad)?;
                }
                if let Some((pointer, expected)) = expect_json {
                    probe = probe.expect_json(pointer, expected).map_err(bad)?;
                }
                Arc::new(probe)
            }
            Some(HealthCheck::Exec { command }) => Arc::new(
                DockerExecProbe::new(docker.clone(), command.clone())
                    .map_err(|e| CliError::bad_argument("health.exec", &e))?,
            ),
            Some(check) => probe(check)?,
            None => {
                return Err(CliError::usage(format!(
                    "host {}: no health check configured",
                    host.name
                )))
            }
        };
        // The engine keeps the deploy lock itself.
        let docker = Arc::new(docker);
        Ok(Connected {
            runtime: docker.clone(),
            lock: docker,
            probe,
            strategy: None,
        })
    }
}

/// The Swarm strategy `[swarm]` describes on the manager `docker` reaches.
fn swarm_strategy(
    docker: &DockerRuntime,
    config: &SwarmConfig,
    health: &HealthCheck,
) -> Result<SwarmStrategy, CliError> {
    let HealthCheck::Direct {
        path,
        expect_status,
        expect_json,
        ..
    } = health
    else {
        return Err(CliError::usage(
            "[swarm] needs health.path: each task is probed directly",
        ));
    };
    let template = TaskTemplate {
        replicas: config.replicas,
        network: config.network.clone(),
        port: config.port,
        publish: config.publish.clone(),
        parallelism: config.parallelism,
        healthcheck: config.healthcheck.clone(),
        health_interval: config.health_interval,
        health_timeout: config.health_timeout,
        ..Default::default()
    };
    let health = TaskHealth {
        path: path.clone(),
        expect_status: *expect_status,
        expect_json: expect_json.clone(),
    };
    Ok(SwarmStrategy::new(
        Swarm::new(docker),
        &config.service,
        template,
        &config.probe_image,
        health,
    ))
}

/// What the plan and `status` say of a service's health check; the
/// strategy probes each task itself, so this is never asked to.
struct ServiceTasks {
    what: String,
}

#[async_trait]
impl HealthProbe for ServiceTasks {
    async fn check(&self, _container: &ContainerId, _timeout: Duration) -> ProbeResult {
        ProbeResult::Unhealthy(format!(
            "{}: a service's tasks are probed by its strategy",
            self.what
        ))
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// The probe of an HTTP or TCP check (the Docker and exec ones need the host's engine).
pub fn probe(check: &HealthCheck) -> Result<Arc<dyn HealthProbe>, CliError> {
    let bad =
        |e: rollback_core::Error| CliError::bad_argument(format_args!("health check {check}"), &e);
    match check {
        HealthCheck::Http {
            url,
            expect_status,
            expect_json,
        } => {
            let mut probe = HttpProbe::new(url).map_err(bad)?;
            if let Some(status) = expect_status {
                probe = probe.expect_status(*status).map_err(bad)?;
            }
            if let Some((pointer, expected)) = expect_json {
                probe = probe.expect_json(pointer, expected).map_err(bad)?;
            }
            Ok(Arc::new(probe))
        }
        HealthCheck::Tcp { address } => Ok(Arc::new(TcpProbe::new(address).map_err(bad)?)),
        HealthCheck::Docker | HealthCheck::Exec { .. } | HealthCheck::Direct { .. } => {
            Err(CliError::usage(format!(
                "the {check} health check is built with the host's engine"
            )))
        }
    }
}

/// The proxy container `[proxy]` describes, on the host of `runtime`.
pub fn proxy_container(
    runtime: Arc<dyn rollback_core::Runtime>,
    config: &ProxyConfig,
) -> Result<ProxyContainer, CliError> {
    let image = config
        .image
        .parse()
        .map_err(|e| CliError::bad_argument(format_args!("proxy.image {:?}", config.image), &e))?;
    let mut container = Caddy::container(runtime, Some(image), &config.listen)
        .map_err(|e| CliError::bad_argument(format_args!("proxy.listen {:?}", config.listen), &e))?
        .with_name(&config.name);
    if let Some(listen) = &config.tls_listen {
        container = container
            .with_tls_listen(listen, rollback_proxy::caddy::TLS_CONTAINER_PORT)
            .map_err(|e| CliError::bad_argument(format_args!("proxy.tls_listen {listen:?}"), &e))?;
    }
    Ok(container)
}

/// The switch of `app`'s traffic in the proxy `[proxy]` describes: routed
/// by its `host`, over HTTPS with `tls`.
pub fn caddy(container: ProxyContainer, config: &ProxyConfig, app: &str) -> Caddy {
    let mut caddy = Caddy::new(container, app);
    if let Some(host) = &config.host {
        caddy = caddy.with_host(host);
    }
    if let Some(tls) = &config.tls {
        caddy = caddy.with_tls(match tls {
            TlsConfig::Acme { email, ca, ca_root } => Tls::Acme {
                email: email.clone(),
                ca: ca.clone(),
                ca_root_pem: ca_root.clone(),
            },
            TlsConfig::Internal => Tls::Internal,
            TlsConfig::Files(files) => Tls::Files {
                cert_pem: files.cert_pem.clone(),
                key_pem: files.key_pem.expose().to_owned(),
            },
        });
    }
    caddy
}

/// The start-first strategy `[proxy]` describes for `app` on the host of
/// `runtime`: Caddy in the proxy container, on the proxy's network.
pub fn start_first(
    runtime: Arc<dyn rollback_core::Runtime>,
    config: &ProxyConfig,
    app: &str,
) -> Result<StartFirst, CliError> {
    let container = proxy_container(runtime, config)?;
    let network = container.network().to_owned();
    let caddy = caddy(container, config, app);
    Ok(StartFirst::new(Arc::new(caddy), network, config.app_port).with_drain(config.drain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_built_from_checks() {
        let http = probe(&HealthCheck::Http {
            url: "http://127.0.0.1:18080/health".into(),
            expect_status: Some(200),
            expect_json: Some(("/status".into(), "UP".into())),
        })
        .unwrap();
        assert!(
            http.describe().contains("http://127.0.0.1:18080/health"),
            "{}",
            http.describe()
        );
        let tcp = probe(&HealthCheck::Tcp {
            address: "127.0.0.1:5432".into(),
        })
        .unwrap();
        assert!(
            tcp.describe().contains("127.0.0.1:5432"),
            "{}",
            tcp.describe()
        );
        let e = probe(&HealthCheck::Http {
            url: "http://127.0.0.1/".into(),
            expect_status: Some(1000),
            expect_json: None,
        })
        .err()
        .unwrap();
        assert_eq!(e.exit_code(), crate::exit::USAGE);
    }
}
