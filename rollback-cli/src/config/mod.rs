//! The `rollback.toml` file: parsed, interpolated and validated in one go.
//!
//! Every error names the file, the line (when the value is in the file) and
//! the key, and never contains the value of an interpolated `${VAR}`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollback_core::{
    App, EnvValue, HealthPolicy, HostId, PortMapping, RestartPolicy, Retain, RolloutPolicy,
    RunOptions, Secret,
};

mod raw;
mod schema;
mod types;
mod validate;

pub use schema::schema;

use raw::RawConfig;
use validate::Ctx;

/// The default config file name, looked up in the current folder.
pub const DEFAULT_FILE: &str = "rollback.toml";

/// The name of the host used when the file lists none.
pub const DEFAULT_HOST: &str = "local";

/// A configuration error: `file:line: key: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file as given.
    pub file: String,
    /// 1-based line, when the error points at something in the file.
    pub line: Option<usize>,
    /// The message, naming the key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The `[app]` table; absent only in a file used for `rollback tag` with full references.
    pub app: Option<App>,
    /// The `[container]` table, shared by every host.
    pub container: ContainerConfig,
    /// The health policy of `[health]`.
    pub health: HealthPolicy,
    /// The rollout policy of `[rollout]`.
    pub rollout: RolloutPolicy,
    /// The hosts, in file order; one host named `local` when the file lists none.
    pub hosts: Vec<HostConfig>,
    /// The `[proxy]` table: start-first deploys behind a proxy on each host.
    pub proxy: Option<ProxyConfig>,
    /// The `[swarm]` table: the app is a Swarm service on each host.
    pub swarm: Option<SwarmConfig>,
    /// Images of this many releases stay on each host (`[app] retain`).
    pub retain: Retain,
    /// The `[hooks]` table.
    pub hooks: HooksConfig,
    /// The `[notify]` table, when it names a webhook.
    pub notify: Option<NotifyConfig>,
    /// Every variable the file took from the environment (`${VAR}`, a bare
    /// `env_file` name), by name: each value is a secret of its own, even
    /// when it is only part of a value.
    pub substituted: BTreeMap<String, Secret>,
    /// Things in the file worth a warning that do not stop a command (a
    /// key file others can read).
    pub warnings: Vec<String>,
}

/// Commands run around deploy, undo and recover (`[hooks]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksConfig {
    /// Run before anything is contacted; non-zero stops the command.
    pub pre_deploy: Option<String>,
    /// Run after every outcome.
    pub post_deploy: Option<String>,
    /// How long a hook may run before it is killed.
    pub timeout: Duration,
    /// Where hooks run: the config file's folder.
    pub dir: PathBuf,
}

/// Where outcomes are posted (`[notify]`).
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// The webhook URL; may hold credentials or a token, so it is never shown.
    pub webhook: Secret,
    /// `scheme://host:port` of the webhook, the only part ever shown.
    pub webhook_origin: String,
    /// Time limit of each attempt.
    pub timeout: Duration,
}

impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("webhook", &self.webhook_origin)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The `[proxy]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The public address on each host, the host side of `docker -p`
    /// (`"80"`, `"0.0.0.0:80"`, `"127.0.0.1:18080"`).
    pub listen: String,
    /// The container port the proxy sends traffic to.
    pub app_port: u16,
    /// The proxy image.
    pub image: String,
    /// How long requests in flight get on the old release.
    pub drain: Duration,
    /// Route only requests for this `Host` to the app.
    pub host: Option<String>,
    /// The proxy container's name on each host (`[proxy] name`).
    pub name: String,
    /// The public HTTPS address on each host: `443` by default with
    /// `tls`; without, the one a proxy this app boots publishes for others.
    pub tls_listen: Option<String>,
    /// Where the certificate for `host` comes from; `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
}

/// The `[swarm]` table: the app is a Swarm service on each host, a manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmConfig {
    /// The service's name (the app's by default).
    pub service: String,
    /// Replicas when the service is created.
    pub replicas: u64,
    /// The attachable overlay network of the tasks, where probes run.
    pub network: String,
    /// The tasks' port that probes use.
    pub port: u16,
    /// Tasks updated at once.
    pub parallelism: u64,
    /// Host-mode published ports, `(published, target)`.
    pub publish: Vec<(u16, u16)>,
    /// The tasks' HEALTHCHECK test; `None` keeps the image's own.
    pub healthcheck: Option<Vec<String>>,
    /// The image of the probe containers.
    pub probe_image: String,
    /// How often the HEALTHCHECK runs: `[health] interval`.
    pub health_interval: Duration,
    /// How long one run may take: `[health] timeout`.
    pub health_timeout: Duration,
}

/// `[swarm] probe_image` when not set: a busybox has `sh`, `timeout` and `wget`.
pub const DEFAULT_PROBE_IMAGE: &str = "busybox:1.36";

/// `[proxy] tls`: where the app's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsConfig {
    /// Issued by an ACME CA (Let's Encrypt unless `acme_ca` names another)
    /// through an HTTP challenge on `listen`.
    Acme {
        /// `acme_email`: the account's contact.
        email: Option<String>,
        /// `acme_ca`: the CA's directory URL.
        ca: Option<String>,
        /// `acme_ca_root`: the CA's root certificate (PEM) as read, for a
        /// private CA the proxy would not trust otherwise.
        ca_root: Option<String>,
    },
    /// Issued by the proxy's own CA (clients must trust its root).
    Internal,
    /// Files where rollback runs, checked, then written into the proxy.
    Files(TlsFiles),
}

/// `tls = { cert, key }`, read and checked when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate file, as resolved from the config's folder.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// The certificate chain, PEM.
    pub cert_pem: String,
    /// The private key, PEM; never shown.
    pub key_pem: Secret,
    /// The leaf certificate.
    pub info: rollback_proxy::cert::CertInfo,
}

/// The proxy image when `[proxy] image` is not set.
pub const DEFAULT_PROXY_IMAGE: &str = "caddy:2";
/// `[proxy] tls_listen` when `tls` is set and it is not.
pub const DEFAULT_TLS_LISTEN: &str = "443";
/// `[proxy] drain` when not set.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// The `[container]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Environment; `${VAR}` values are secrets.
    pub env: BTreeMap<String, EnvValue>,
    /// `docker run -v` specs.
    pub volumes: Vec<String>,
    /// Platform such as `linux/arm64`.
    pub platform: Option<String>,
    /// Network mode or name.
    pub network: Option<String>,
    /// Restart policy.
    pub restart: Option<RestartPolicy>,
    /// Arguments replacing the image's `CMD`.
    pub command: Vec<String>,
    /// Time between SIGTERM and SIGKILL.
    pub stop_timeout: Option<Duration>,
    /// Labels given to the container.
    pub labels: BTreeMap<String, String>,
    /// The other `docker run` options.
    pub options: RunOptions,
}

/// How a host's release is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// An HTTP GET.
    Http {
        /// The URL, `http` or `https`.
        url: String,
        /// The status to expect; any 2xx when `None`.
        expect_status: Option<u16>,
        /// A JSON pointer into the body and the string it must equal.
        expect_json: Option<(String, String)>,
    },
    /// A TCP connect to `host:port`.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// The image's Docker `HEALTHCHECK`.
    Docker,
    /// With `[proxy]`: an HTTP GET of `path` on the new container itself,
    /// from inside the proxy container (never through the proxy).
    Direct {
        /// The path, starting with `/`.
        path: String,
        /// The container port.
        port: u16,
        /// The status to expect; any 2xx when `None`.
        expect_status: Option<u16>,
        /// A JSON pointer into the body and the string it must equal.
        expect_json: Option<(String, String)>,
    },
    /// A command run inside the container; exit 0 is healthy.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthCheck::Http { url, .. } => write!(f, "GET {url}"),
            HealthCheck::Tcp { address } => write!(f, "tcp {address}"),
            HealthCheck::Docker => f.write_str("docker HEALTHCHECK"),
            HealthCheck::Direct { path, port, .. } => {
                write!(f, "GET {path} on port {port} of each new container or task")
            }
            HealthCheck::Exec { command } => write!(f, "exec {:?}", command.join(" ")),
        }
    }
}

/// One host of the fleet, with the per-host overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// The host's name.
    pub name: HostId,
    /// Engine address (`unix://...`, `tcp://...`); the local engine
    /// (`DOCKER_HOST` or the default socket) when `None`.
    pub docker: Option<String>,
    /// The health check of this host; `None` only when the file has no `[app]`.
    pub health: Option<HealthCheck>,
    /// Published ports (the host's own, else `[container]`'s).
    pub ports: Vec<PortMapping>,
    /// `[container]` env with the host's env merged over it.
    pub env: BTreeMap<String, EnvValue>,
    /// `[proxy]`, the same on every host.
    pub proxy: Option<ProxyConfig>,
    /// `[swarm]`, the same on every host (each a manager of its swarm).
    pub swarm: Option<SwarmConfig>,
}

impl Config {
    /// Read and validate `path`, interpolating `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parse and validate `text`, read from `path`, looking variables up with `env`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let ctx = Ctx {
            file: path.display().to_string(),
            text,
        };
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| ctx.toml_error(&e))?;
        let substituted = RefCell::new(BTreeMap::new());
        let recording = |name: &str| {
            let value = env(name);
            if let Some(v) = &value {
                substituted
                    .borrow_mut()
                    .insert(name.to_owned(), Secret::new(v.clone()));
            }
            value
        };
        let mut config = ctx.validate(raw, path, &recording)?;
        config.substituted = substituted.into_inner();
        Ok(config)
    }

    /// The `[app]` table, or an error for commands that need it.
    pub fn app(&self) -> Result<&App, ConfigError> {
        self.app.as_ref().ok_or_else(|| ConfigError {
            file: self.path.display().to_string(),
            line: None,
            message: "missing [app] table (name and repository are required)".into(),
        })
    }
}

/// How long a hook may run unless `[hooks] timeout` says otherwise.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long each webhook attempt may take unless `[notify] timeout` says otherwise.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;
