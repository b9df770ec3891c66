//! The `rollback.toml` file: parsed, interpolated and validated in one go.
//!
//! Every error names the file, the line (when the value is in the file) and
//! the key, and never contains the value of an interpolated `${VAR}`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollback_core::{
    App, ContainerName, EnvValue, HealthPolicy, HostId, OnFailure, PortMapping, Repository,
    RestartPolicy, Retain, RolloutPolicy, RunOptions, Secret, Tag,
};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_path_to_error::Segment;
use toml::Spanned;

mod schema;
pub use schema::schema;

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
}

/// The proxy image when `[proxy] image` is not set.
pub const DEFAULT_PROXY_IMAGE: &str = "caddy:2";
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
                write!(f, "GET {path} on port {port} of the new container")
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

// ---- raw, as written ----
//
// Values are read into their core types (ports, tags, repositories, restart
// and failure policies) or into the small checked types below, so that a bad
// value is reported by the deserializer with its path (`hosts[1].ports[0]`)
// and line. A new key is one field here, plus a check in `validate` when it
// depends on other keys.

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[schemars(with = "Option<RawApp>")]
    app: Option<Spanned<RawApp>>,
    #[serde(default)]
    container: RawContainer,
    #[schemars(with = "Option<RawHealth>")]
    health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    rollout: RawRollout,
    #[serde(default)]
    #[schemars(with = "Vec<RawHost>")]
    hosts: Vec<Spanned<RawHost>>,
    #[schemars(with = "Option<RawProxy>")]
    proxy: Option<Spanned<RawProxy>>,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    notify: RawNotify,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Hooks")]
struct RawHooks {
    #[schemars(with = "Option<schema::Command>")]
    pre_deploy: Option<Spanned<String>>,
    #[schemars(with = "Option<schema::Command>")]
    post_deploy: Option<Spanned<String>>,
    #[schemars(with = "Option<HumanDuration>")]
    timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Notify")]
struct RawNotify {
    #[schemars(with = "Option<schema::HttpUrl>")]
    webhook: Option<Spanned<String>>,
    #[schemars(with = "Option<HumanDuration>")]
    timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum RawNumber {
    Integer(i64),
    Float(f64),
    String(String),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Args")]
enum RawArgs {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Proxy")]
struct RawProxy {
    #[schemars(with = "schema::Listen")]
    listen: Spanned<String>,
    #[schemars(with = "schema::Port")]
    app_port: Spanned<i64>,
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
    drain: Option<HumanDuration>,
    #[schemars(with = "Option<String>")]
    host: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "App")]
struct RawApp {
    #[schemars(with = "schema::ContainerName")]
    name: ContainerName,
    #[schemars(with = "schema::Repository")]
    repository: Repository,
    #[schemars(with = "Option<schema::Tag>")]
    stable_tag: Option<Spanned<Tag>>,
    #[schemars(with = "Option<schema::Tag>")]
    previous_tag: Option<Spanned<Tag>>,
    #[schemars(with = "Option<schema::Retain>")]
    retain: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Container")]
struct RawContainer {
    #[serde(default)]
    #[schemars(with = "Vec<schema::PortMapping>")]
    ports: Vec<PortMapping>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawEnvValue>")]
    env: BTreeMap<String, Spanned<RawEnvValue>>,
    #[serde(default)]
    volumes: Vec<NonEmpty>,
    platform: Option<Platform>,
    network: Option<NonEmpty>,
    #[schemars(with = "Option<schema::RestartPolicy>")]
    restart: Option<RestartPolicy>,
    #[serde(default)]
    command: Vec<String>,
    stop_timeout: Option<HumanDuration>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    labels: BTreeMap<String, Spanned<String>>,
    #[schemars(with = "Option<schema::Memory>")]
    memory: Option<Spanned<RawNumber>>,
    #[schemars(with = "Option<schema::Cpus>")]
    cpus: Option<Spanned<RawNumber>>,
    #[schemars(with = "Option<String>")]
    user: Option<Spanned<String>>,
    #[schemars(with = "Option<RawArgs>")]
    entrypoint: Option<Spanned<RawArgs>>,
    #[schemars(with = "Option<String>")]
    hostname: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    add_hosts: Vec<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    log_driver: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    log_options: BTreeMap<String, Spanned<String>>,
    #[schemars(with = "Option<String>")]
    env_file: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    cap_add: Vec<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "EnvValue")]
enum RawEnvValue {
    String(String),
    Integer(i64),
    Bool(bool),
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Health")]
struct RawHealth {
    #[schemars(with = "Option<schema::HttpUrl>")]
    http: Option<Spanned<String>>,
    #[schemars(with = "Option<schema::UrlPath>")]
    path: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    tcp: Option<Spanned<String>>,
    #[schemars(with = "Option<schema::True>")]
    docker: Option<Spanned<bool>>,
    #[schemars(with = "Option<schema::Exec>")]
    exec: Option<Spanned<toml::Value>>,
    #[schemars(with = "Option<schema::HttpStatus>")]
    expect_status: Option<Spanned<i64>>,
    #[schemars(with = "Option<schema::JsonPointer>")]
    json_pointer: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    expect: Option<Spanned<String>>,
    #[schemars(with = "Option<HumanDuration>")]
    interval: Option<Spanned<HumanDuration>>,
    #[schemars(with = "Option<HumanDuration>")]
    timeout: Option<Spanned<HumanDuration>>,
    #[schemars(with = "Option<HumanDuration>")]
    start_period: Option<Spanned<HumanDuration>>,
    #[schemars(with = "Option<HumanDuration>")]
    deadline: Option<Spanned<HumanDuration>>,
    #[schemars(with = "Option<HumanDuration>")]
    stable_for: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rollout")]
struct RawRollout {
    #[schemars(with = "Option<schema::Batch>")]
    batch: Option<Spanned<i64>>,
    #[serde(default)]
    #[schemars(with = "schema::OnFailure")]
    on_failure: OnFailure,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Host")]
struct RawHost {
    #[schemars(with = "schema::HostName")]
    name: Spanned<String>,
    #[schemars(with = "Option<schema::EngineUrl>")]
    docker: Option<Spanned<String>>,
    #[schemars(with = "Option<schema::HttpUrl>")]
    health_url: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    tcp: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<schema::PortMapping>>")]
    ports: Option<Vec<PortMapping>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawEnvValue>")]
    env: BTreeMap<String, Spanned<RawEnvValue>>,
}

/// A duration written as humans do (`"6s"`, `"1m 30s"`).
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} ({e}); write e.g. \"6s\" or \"1m\""
                ))
            })
    }
}

/// A string that is not blank.
#[derive(Debug, Clone)]
struct NonEmpty(String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Err(serde::de::Error::custom("must not be empty"));
        }
        Ok(NonEmpty(text))
    }
}

/// `os/arch[/variant]`.
#[derive(Debug, Clone)]
struct Platform(String);

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let NonEmpty(text) = NonEmpty::deserialize(deserializer)?;
        if !text.contains('/') {
            return Err(serde::de::Error::custom(format!(
                "{text:?} is not os/arch (e.g. \"linux/arm64\")"
            )));
        }
        Ok(Platform(text))
    }
}

// ---- validation ----

struct Ctx<'a> {
    file: String,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: span.map(|s| self.line_of(s.start)),
            message: message.into(),
        }
    }

    fn at<T>(&self, value: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.err(Some(value.span()), message)
    }

    fn toml_error(&self, e: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let inner = e.inner();
        // toml's messages may span lines ("invalid table header\nexpected ..."): keep one line.
        let message = inner
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let path = key_path(e.path());
        let message = match message.strip_prefix("unknown field ") {
            // `unknown field `prots`, expected ...` → name the table it is in.
            Some(rest) => match rest.split_once(',') {
                Some((field, tail)) => {
                    format!("unknown field {field} {},{tail}", table_name(e.path()))
                }
                None => format!("unknown field {rest} {}", table_name(e.path())),
            },
            None if path.is_empty() => message,
            None => format!("{path}: {message}"),
        };
        self.err(inner.span(), message)
    }

    fn env(
        &self,
        key: &str,
        raw: &BTreeMap<String, Spanned<RawEnvValue>>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, EnvValue>, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let full = format!("{key}.{name}");
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(self.at(value, format!("{key}: invalid variable name {name:?}")));
            }
            let v = match value.get_ref() {
                RawEnvValue::String(s) => interpolate(s, lookup).map_err(|e| {
                    self.at(
                        value,
                        match e {
                            InterpolationError::Missing(var) => format!(
                                "{full}: environment variable {var} is not set"
                            ),
                            InterpolationError::Malformed => format!(
                                "{full}: malformed ${{...}} reference (write ${{NAME}} with letters, digits and _)"
                            ),
                        },
                    )
                })?,
                RawEnvValue::Integer(i) => EnvValue::Plain(i.to_string()),
                RawEnvValue::Bool(b) => EnvValue::Plain(b.to_string()),
            };
            out.insert(name.clone(), v);
        }
        Ok(out)
    }

    fn url(&self, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
        let url = url::Url::parse(value.get_ref()).map_err(|e| {
            self.at(
                value,
                format!("{key}: invalid URL {:?}: {e}", value.get_ref()),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.at(
                value,
                format!(
                    "{key}: {:?} is not an http:// or https:// URL with a host",
                    value.get_ref()
                ),
            ));
        }
        Ok(value.get_ref().clone())
    }

    fn tcp_address(&self, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
        let v = value.get_ref();
        let ok = v.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !ok {
            return Err(self.at(value, format!("{key}: {v:?} is not a host:port address")));
        }
        Ok(v.clone())
    }

    fn validate(
        &self,
        raw: RawConfig,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let app = raw.app.as_ref().map(|a| self.app(a)).transpose()?;
        let retain = self.retain(raw.app.as_ref())?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let container = self.container(&raw.container, &dir, lookup)?;
        let hooks = self.hooks(&raw.hooks, &dir)?;
        let notify = self.notify(&raw.notify, lookup)?;
        let proxy = raw.proxy.as_ref().map(|p| self.proxy(p)).transpose()?;
        let (check, expect, health) =
            self.health(raw.health.as_ref(), proxy.as_ref().map(|p| p.app_port))?;
        if let Some(p) = &proxy {
            self.proxy_ports(
                p,
                raw.proxy.as_ref(),
                &raw.container.ports,
                "container.ports",
            )?;
            let mode = raw.container.network.as_ref().map(|n| n.0.as_str());
            if let (Some(mode), Some(table)) = (mode, raw.proxy.as_ref()) {
                if mode == "host" || mode == "none" || mode.starts_with("container:") {
                    return Err(self.at(
                        table,
                        format!("proxy: the proxy reaches the app on its network, which a container with container.network = {mode:?} cannot join: remove container.network"),
                    ));
                }
            }
        }
        let rollout = self.rollout(&raw.rollout)?;

        let mut hosts = Vec::new();
        let mut seen = HashSet::new();
        for (i, host) in raw.hosts.iter().enumerate() {
            let h = host.get_ref();
            let key = format!("hosts[{i}]");
            let name = h.name.get_ref().trim();
            if name.is_empty() {
                return Err(self.at(&h.name, format!("{key}.name: must not be empty")));
            }
            if !seen.insert(name.to_owned()) {
                return Err(self.at(
                    &h.name,
                    format!("{key}.name: host name {name:?} is used twice"),
                ));
            }
            let docker = match &h.docker {
                Some(d) => {
                    let v = d.get_ref();
                    if v.starts_with("npipe://") {
                        // The engine adapter cannot speak this: refuse with
                        // the file and line, before any host is touched.
                        return Err(self.at(
                            d,
                            format!("{key}.docker: {v:?}: npipe:// engines are not supported"),
                        ));
                    }
                    let known = ["unix://", "tcp://", "http://", "https://", "ssh://"];
                    if !known.iter().any(|p| v.starts_with(p) && v.len() > p.len()) {
                        return Err(self.at(
                            d,
                            format!("{key}.docker: {v:?} is not an engine address (unix://, tcp://, http://, https:// or ssh://)"),
                        ));
                    }
                    Some(v.clone())
                }
                None => None,
            };
            if proxy.is_some() {
                if let Some(v) = h.health_url.as_ref().or(h.tcp.as_ref()) {
                    return Err(self.at(
                        v,
                        format!("{key}: with [proxy] the new release is probed directly at [health] path: remove health_url and tcp"),
                    ));
                }
                if let (Some(p), Some(ports)) = (&proxy, &h.ports) {
                    self.proxy_ports(p, Some(host), ports, &format!("{key}.ports"))?;
                }
            }
            let health = match (&h.health_url, &h.tcp) {
                (Some(u), Some(_)) => {
                    return Err(self.at(u, format!("{key}: set either health_url or tcp, not both")))
                }
                (Some(u), None) => {
                    let url = self.url(&format!("{key}.health_url"), u)?;
                    Some(HealthCheck::Http {
                        url,
                        expect_status: expect.expect_status,
                        expect_json: expect.expect_json.clone(),
                    })
                }
                (None, Some(t)) => Some(HealthCheck::Tcp {
                    address: self.tcp_address(&format!("{key}.tcp"), t)?,
                }),
                (None, None) => check.clone(),
            };
            if health.is_none() && app.is_some() {
                return Err(self.at(
                    host,
                    format!("{key}: no health check: set [health] http, tcp or docker = true, or this host's health_url or tcp"),
                ));
            }
            let ports = h.ports.clone().unwrap_or_else(|| container.ports.clone());
            let mut env = container.env.clone();
            env.extend(self.env(&format!("{key}.env"), &h.env, lookup)?);
            hosts.push(HostConfig {
                name: HostId(name.to_owned()),
                docker,
                health,
                ports,
                env,
                proxy: proxy.clone(),
            });
        }
        if hosts.is_empty() {
            if check.is_none() && app.is_some() {
                return Err(self.err(
                    raw.app.as_ref().map(|a| a.span()),
                    "health: no health check: set one of health.http, health.tcp or health.docker = true",
                ));
            }
            hosts.push(HostConfig {
                name: HostId(DEFAULT_HOST.to_owned()),
                docker: None,
                health: check,
                ports: container.ports.clone(),
                env: container.env.clone(),
                proxy: proxy.clone(),
            });
        }
        Ok(Config {
            path: path.to_owned(),
            app,
            container,
            health,
            rollout,
            hosts,
            proxy,
            retain,
            hooks,
            notify,
            substituted: BTreeMap::new(),
        })
    }

    fn retain(&self, raw: Option<&Spanned<RawApp>>) -> Result<Retain, ConfigError> {
        let Some(r) = raw.and_then(|a| a.get_ref().retain.as_ref()) else {
            return Ok(Retain::default());
        };
        u32::try_from(*r.get_ref())
            .ok()
            .and_then(|n| Retain::new(n).ok())
            .ok_or_else(|| {
                self.at(
                    r,
                    format!(
                        "app.retain: must be at least 2 (the running release and the previous one), got {}",
                        r.get_ref()
                    ),
                )
            })
    }

    fn hooks(&self, h: &RawHooks, dir: &Path) -> Result<HooksConfig, ConfigError> {
        let command = |key: &str, v: &Option<Spanned<String>>| match v {
            Some(c) if c.get_ref().trim().is_empty() => Err(self.at(
                c,
                format!("{key}: must not be empty (remove the key to run no hook)"),
            )),
            Some(c) => Ok(Some(c.get_ref().clone())),
            None => Ok(None),
        };
        let timeout = h
            .timeout
            .as_ref()
            .map_or(DEFAULT_HOOK_TIMEOUT, |t| t.get_ref().0);
        if timeout.is_zero() {
            return Err(self.err(
                h.timeout.as_ref().map(|t| t.span()),
                "hooks.timeout: must be more than 0s",
            ));
        }
        Ok(HooksConfig {
            pre_deploy: command("hooks.pre_deploy", &h.pre_deploy)?,
            post_deploy: command("hooks.post_deploy", &h.post_deploy)?,
            timeout,
            dir: dir.to_owned(),
        })
    }

    fn notify(
        &self,
        n: &RawNotify,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<NotifyConfig>, ConfigError> {
        let timeout = n
            .timeout
            .as_ref()
            .map_or(DEFAULT_NOTIFY_TIMEOUT, |t| t.get_ref().0);
        if timeout.is_zero() {
            return Err(self.err(
                n.timeout.as_ref().map(|t| t.span()),
                "notify.timeout: must be more than 0s",
            ));
        }
        let Some(raw) = &n.webhook else {
            return Ok(None);
        };
        // Webhook URLs often carry a token: `${VAR}` keeps it out of the file.
        let value = interpolate(raw.get_ref(), lookup).map_err(|e| {
            self.at(
                raw,
                match e {
                    InterpolationError::Missing(var) => {
                        format!("notify.webhook: environment variable {var} is not set")
                    }
                    InterpolationError::Malformed => "notify.webhook: malformed ${...} reference (write ${NAME} with letters, digits and _)".to_owned(),
                },
            )
        })?;
        // The message never quotes the URL: it may hold credentials.
        let url = url::Url::parse(value.expose())
            .map_err(|e| self.at(raw, format!("notify.webhook: not a URL ({e})")))?;
        let Some(host) = url
            .host_str()
            .filter(|_| matches!(url.scheme(), "http" | "https"))
        else {
            return Err(self.at(
                raw,
                "notify.webhook: must be an http:// or https:// URL with a host",
            ));
        };
        let webhook_origin = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        Ok(Some(NotifyConfig {
            webhook: Secret::new(value.expose()),
            webhook_origin,
            timeout,
        }))
    }

    fn proxy(&self, raw: &Spanned<RawProxy>) -> Result<ProxyConfig, ConfigError> {
        let p = raw.get_ref();
        let listen = p.listen.get_ref().trim();
        // The host side of a `docker -p` mapping: an optional address and a port.
        let parsed = format!("{listen}:1").parse::<PortMapping>();
        if listen.is_empty()
            || listen.contains('/')
            || !parsed.as_ref().is_ok_and(|m| m.host_port.is_some())
        {
            return Err(self.at(
                &p.listen,
                format!("proxy.listen: {listen:?} is not a public address (\"80\", \"0.0.0.0:80\", \"127.0.0.1:18080\")"),
            ));
        }
        let app_port = u16::try_from(*p.app_port.get_ref())
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| {
                self.at(
                    &p.app_port,
                    format!(
                        "proxy.app_port: {} is not a port (1-65535)",
                        p.app_port.get_ref()
                    ),
                )
            })?;
        let image = match &p.image {
            Some(i) => {
                let v = i.get_ref().trim();
                if v.parse::<rollback_core::ImageRef>().is_err() {
                    return Err(self.at(i, format!("proxy.image: {v:?} is not an image reference")));
                }
                v.to_owned()
            }
            None => DEFAULT_PROXY_IMAGE.to_owned(),
        };
        let host = match &p.host {
            Some(h) => {
                let v = h.get_ref().trim().to_ascii_lowercase();
                let ok = !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '*');
                if !ok {
                    return Err(self.at(h, format!("proxy.host: {v:?} is not a host name")));
                }
                Some(v)
            }
            None => None,
        };
        Ok(ProxyConfig {
            listen: listen.to_owned(),
            app_port,
            image,
            drain: p.drain.map(|d| d.0).unwrap_or(DEFAULT_DRAIN),
            host,
        })
    }

    /// The proxy owns the public address and the app's port: no port
    /// mapping of the app's container may publish either.
    fn proxy_ports<T>(
        &self,
        proxy: &ProxyConfig,
        at: Option<&Spanned<T>>,
        ports: &[PortMapping],
        key: &str,
    ) -> Result<(), ConfigError> {
        let public = format!("{}:1", proxy.listen)
            .parse::<PortMapping>()
            .ok()
            .and_then(|m| m.host_port);
        for (i, m) in ports.iter().enumerate() {
            let why = if m.container_port == proxy.app_port {
                format!("publishes proxy.app_port {}", proxy.app_port)
            } else if m.host_port.is_some() && m.host_port == public {
                format!("publishes proxy.listen {:?}", proxy.listen)
            } else {
                continue;
            };
            // The entry's own line when it can be found, else the table's.
            let line = self
                .find_line(&format!("\"{m}"), at.map(|a| a.span()))
                .or_else(|| self.find_line("ports", None));
            return Err(ConfigError {
                file: self.file.clone(),
                line,
                message: format!(
                    "{key}[{i}]: {why}: with [proxy] the proxy publishes the app, remove the entry"
                ),
            });
        }
        Ok(())
    }

    /// The line of the first occurrence of `needle` in the file, else of `fallback`.
    fn find_line(&self, needle: &str, fallback: Option<Range<usize>>) -> Option<usize> {
        self.text
            .find(needle)
            .map(|o| self.line_of(o))
            .or_else(|| fallback.map(|s| self.line_of(s.start)))
    }

    fn app(&self, raw: &Spanned<RawApp>) -> Result<App, ConfigError> {
        let a = raw.get_ref();
        let tag = |v: &Option<Spanned<Tag>>| v.as_ref().map(|t| t.get_ref().clone());
        let app = App::new(a.name.clone(), a.repository.clone());
        let stable_tag = tag(&a.stable_tag).unwrap_or_else(|| app.stable_tag.clone());
        let previous_tag = tag(&a.previous_tag).unwrap_or_else(|| app.previous_tag.clone());
        let stable = stable_tag.to_string();
        app.with_tags(stable_tag, previous_tag).map_err(|_| {
            let span = a
                .previous_tag
                .as_ref()
                .or(a.stable_tag.as_ref())
                .map(|t| t.span());
            self.err(
                span,
                format!("app.previous_tag: must differ from app.stable_tag ({stable:?})"),
            )
        })
    }

    fn container(
        &self,
        c: &RawContainer,
        dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ContainerConfig, ConfigError> {
        // `env` wins over `env_file`, as a later -e wins in docker run.
        let mut env = match &c.env_file {
            Some(file) => self.env_file(file, dir, lookup)?,
            None => BTreeMap::new(),
        };
        env.extend(self.env("container.env", &c.env, lookup)?);
        Ok(ContainerConfig {
            ports: c.ports.clone(),
            env,
            volumes: c.volumes.iter().map(|v| v.0.clone()).collect(),
            platform: c.platform.as_ref().map(|p| p.0.clone()),
            network: c.network.as_ref().map(|n| n.0.clone()),
            restart: c.restart,
            command: c.command.clone(),
            stop_timeout: c.stop_timeout.map(|d| d.0),
            labels: self.labels(&c.labels)?,
            options: self.run_options(c)?,
        })
    }

    fn labels(
        &self,
        raw: &BTreeMap<String, Spanned<String>>,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut out = BTreeMap::new();
        for (key, value) in raw {
            if key.trim().is_empty() || key.contains(char::is_whitespace) {
                return Err(self.at(
                    value,
                    format!("container.labels: invalid label name {key:?}"),
                ));
            }
            if key.starts_with("io.rollback.") {
                return Err(self.at(
                    value,
                    format!("container.labels.{key}: io.rollback.* labels are rollback's own record of the release"),
                ));
            }
            out.insert(key.clone(), value.get_ref().clone());
        }
        Ok(out)
    }

    fn run_options(&self, c: &RawContainer) -> Result<RunOptions, ConfigError> {
        let word = |key: &str,
                    v: &Option<Spanned<String>>|
         -> Result<Option<String>, ConfigError> {
            match v {
                Some(s) if s.get_ref().is_empty() || s.get_ref().contains(char::is_whitespace) => {
                    Err(self.at(
                        s,
                        format!("{key}: {:?} must be one word, not empty", s.get_ref()),
                    ))
                }
                Some(s) => Ok(Some(s.get_ref().clone())),
                None => Ok(None),
            }
        };
        let list = |key: &str,
                    items: &[Spanned<String>],
                    valid: &dyn Fn(&str) -> Result<String, String>|
         -> Result<Vec<String>, ConfigError> {
            let mut out: Vec<String> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let v = valid(item.get_ref()).map_err(|why| {
                    self.at(item, format!("{key}[{i}]: {:?} {why}", item.get_ref()))
                })?;
                if out.contains(&v) {
                    return Err(self.at(item, format!("{key}[{i}]: {v:?} is listed twice")));
                }
                out.push(v);
            }
            Ok(out)
        };
        let memory = c
            .memory
            .as_ref()
            .map(|m| {
                memory_bytes(m.get_ref())
                    .map_err(|why| self.at(m, format!("container.memory: {why}")))
            })
            .transpose()?;
        let nano_cpus = c
            .cpus
            .as_ref()
            .map(|v| {
                let cpus = match v.get_ref() {
                    RawNumber::Integer(i) => Some(*i as f64),
                    RawNumber::Float(f) => Some(*f),
                    RawNumber::String(s) => s.trim().parse::<f64>().ok(),
                };
                match cpus {
                    Some(n) if n.is_finite() && n > 0.0 && n <= 1024.0 => {
                        Ok((n * 1e9).round() as u64)
                    }
                    _ => Err(self.at(
                        v,
                        "container.cpus: must be a number of CPUs above 0, such as 0.5 or 2",
                    )),
                }
            })
            .transpose()?;
        let hostname = match &c.hostname {
            Some(h) if !is_hostname(h.get_ref()) => {
                return Err(self.at(
                    h,
                    format!("container.hostname: {:?} is not a host name (letters, digits, '-' and '.', at most 63 per label)", h.get_ref()),
                ))
            }
            Some(h) => Some(h.get_ref().clone()),
            None => None,
        };
        let entrypoint = c.entrypoint.as_ref().map(|e| match e.get_ref() {
            RawArgs::One(s) if s.is_empty() => Vec::new(),
            RawArgs::One(s) => vec![s.clone()],
            RawArgs::Many(v) => v.clone(),
        });
        let add_hosts = list("container.add_hosts", &c.add_hosts, &|v| {
            let (name, ip) = v
                .split_once(':')
                .ok_or("is not name:ip (e.g. \"db:10.0.0.5\")")?;
            if !is_hostname(name) {
                return Err("does not start with a host name".into());
            }
            if ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("has {ip:?}, not an IP address or host-gateway"));
            }
            Ok(v.to_owned())
        })?;
        let networks = list("container.networks", &c.networks, &|v| {
            if v.is_empty() || v.contains(char::is_whitespace) {
                return Err("is not a network name".into());
            }
            Ok(v.to_owned())
        })?;
        if let (Some(first), Some(mode)) = (c.networks.first(), c.network.as_ref()) {
            let mode = &mode.0;
            if mode == "host" || mode == "none" || mode.starts_with("container:") {
                return Err(self.at(
                    first,
                    format!("container.networks: a container with network = {mode:?} cannot join other networks"),
                ));
            }
            if c.networks.iter().any(|n| n.get_ref() == mode) {
                return Err(self.at(
                    first,
                    format!("container.networks: {mode:?} is already container.network"),
                ));
            }
        }
        let cap_add = list("container.cap_add", &c.cap_add, &|v| {
            let name = v.to_ascii_uppercase();
            let name = name.strip_prefix("CAP_").unwrap_or(&name).to_owned();
            if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_') {
                return Err("is not a capability name (e.g. NET_ADMIN)".into());
            }
            Ok(name)
        })?;
        let log_driver = word("container.log_driver", &c.log_driver)?;
        let mut log_options = BTreeMap::new();
        for (key, value) in &c.log_options {
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(self.at(
                    value,
                    format!("container.log_options: invalid option name {key:?}"),
                ));
            }
            log_options.insert(key.clone(), value.get_ref().clone());
        }
        Ok(RunOptions {
            memory,
            nano_cpus,
            user: word("container.user", &c.user)?,
            entrypoint,
            hostname,
            add_hosts,
            log_driver,
            log_options,
            networks,
            cap_add,
        })
    }

    /// `KEY=VALUE` lines, as `docker run --env-file` reads them; every value
    /// is a secret. A bare `KEY` takes the variable from the environment.
    fn env_file(
        &self,
        file: &Spanned<String>,
        dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, EnvValue>, ConfigError> {
        let path = dir.join(file.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.at(
                file,
                format!("container.env_file: cannot read {}: {e}", path.display()),
            )
        })?;
        let mut out = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Never quote the line: its value is a secret.
            let at_line = |why: &str| {
                self.at(
                    file,
                    format!("container.env_file: {}:{}: {why}", path.display(), i + 1),
                )
            };
            let (name, value) = match line.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (line.trim_end(), None),
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(at_line("expected NAME=value"));
            }
            let value = match value {
                Some(v) => v,
                None => match lookup(name) {
                    Some(v) => v,
                    None => continue,
                },
            };
            out.insert(name.to_owned(), EnvValue::Secret(Secret::new(value)));
        }
        Ok(out)
    }

    fn health(
        &self,
        raw: Option<&Spanned<RawHealth>>,
        proxy_port: Option<u16>,
    ) -> Result<(Option<HealthCheck>, HttpExpect, HealthPolicy), ConfigError> {
        let default = RawHealth::default();
        let h = raw.map(|r| r.get_ref()).unwrap_or(&default);
        let exec = h
            .exec
            .as_ref()
            .map(|exec| {
                let command: Option<Vec<String>> = match exec.get_ref() {
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect(),
                    _ => None,
                };
                match command {
                    Some(c) if c.first().is_some_and(|p| !p.is_empty()) => Ok(c),
                    _ => Err(self.at(
                        exec,
                        "health.exec: expected [\"program\", \"arg\", ...] (strings, the program first); for a shell line write [\"sh\", \"-c\", \"...\"]",
                    )),
                }
            })
            .transpose()?;
        let mut chosen = Vec::new();
        if h.http.is_some() {
            chosen.push("http");
        }
        if let Some(p) = &h.path {
            if proxy_port.is_none() {
                return Err(self.at(
                    p,
                    "health.path: applies with [proxy] (the new container is probed directly); without [proxy] set health.http",
                ));
            }
            if !p.get_ref().starts_with('/') {
                return Err(self.at(
                    p,
                    format!(
                        "health.path: {:?} must start with / (e.g. \"/health\")",
                        p.get_ref()
                    ),
                ));
            }
            chosen.push("path");
        }
        if proxy_port.is_some() {
            if let Some(v) = h.http.as_ref().or(h.tcp.as_ref()) {
                return Err(self.at(
                    v,
                    "health: with [proxy] the new release is probed directly: set health.path (or docker = true) instead of http or tcp",
                ));
            }
        }
        if h.tcp.is_some() {
            chosen.push("tcp");
        }
        if let Some(d) = &h.docker {
            if *d.get_ref() {
                chosen.push("docker");
            } else {
                return Err(self.at(d, "health.docker: only `docker = true` is meaningful; remove the key to use another check"));
            }
        }
        if exec.is_some() {
            chosen.push("exec");
        }
        if chosen.len() > 1 {
            return Err(self.err(
                raw.map(|r| r.span()),
                format!(
                    "health: set only one of http, tcp, docker, exec (found {})",
                    chosen.join(", ")
                ),
            ));
        }
        let expect_status = match &h.expect_status {
            Some(s) if (100..=599).contains(s.get_ref()) => Some(*s.get_ref() as u16),
            Some(s) => {
                return Err(self.at(
                    s,
                    format!(
                        "health.expect_status: {} is not an HTTP status (100-599)",
                        s.get_ref()
                    ),
                ))
            }
            None => None,
        };
        let expect_json = match (&h.json_pointer, &h.expect) {
            (Some(p), Some(e)) => {
                if !p.get_ref().is_empty() && !p.get_ref().starts_with('/') {
                    return Err(self.at(
                        p,
                        format!(
                            "health.json_pointer: {:?} must start with / (e.g. \"/status\")",
                            p.get_ref()
                        ),
                    ));
                }
                Some((p.get_ref().clone(), e.get_ref().clone()))
            }
            (Some(p), None) => {
                return Err(self.at(
                    p,
                    "health.json_pointer: needs health.expect (the value to compare with)",
                ))
            }
            (None, Some(e)) => {
                return Err(self.at(
                    e,
                    "health.expect: needs health.json_pointer (where to look in the body)",
                ))
            }
            (None, None) => None,
        };
        let http_only = h
            .expect_status
            .as_ref()
            .map(|s| s.span())
            .or_else(|| h.json_pointer.as_ref().map(|p| p.span()));
        let not_http = |what: &str| {
            self.err(
                http_only.clone(),
                format!("health: expect_status, json_pointer and expect apply to http checks, not {what}"),
            )
        };
        let check = if let (Some(path), Some(port)) = (&h.path, proxy_port) {
            Some(HealthCheck::Direct {
                path: path.get_ref().clone(),
                port,
                expect_status,
                expect_json: expect_json.clone(),
            })
        } else if let Some(url) = &h.http {
            Some(HealthCheck::Http {
                url: self.url("health.http", url)?,
                expect_status,
                expect_json: expect_json.clone(),
            })
        } else if let Some(t) = &h.tcp {
            if http_only.is_some() {
                return Err(not_http("tcp"));
            }
            Some(HealthCheck::Tcp {
                address: self.tcp_address("health.tcp", t)?,
            })
        } else if h.docker.is_some() {
            if http_only.is_some() {
                return Err(not_http("docker"));
            }
            Some(HealthCheck::Docker)
        } else if let Some(command) = exec {
            if http_only.is_some() {
                return Err(not_http("exec"));
            }
            Some(HealthCheck::Exec { command })
        } else {
            None
        };
        let expect = HttpExpect {
            expect_status,
            expect_json,
        };
        let mut policy = HealthPolicy::builder();
        let d = |v: &Option<Spanned<HumanDuration>>| v.as_ref().map(|v| v.get_ref().0);
        if let Some(v) = d(&h.interval) {
            policy = policy.interval(v);
        }
        if let Some(v) = d(&h.timeout) {
            policy = policy.timeout(v);
        }
        if let Some(v) = d(&h.start_period) {
            policy = policy.start_period(v);
        }
        if let Some(v) = d(&h.deadline) {
            policy = policy.deadline(v);
        }
        if let Some(v) = d(&h.stable_for) {
            policy = policy.stable_for(v);
        }
        let policy = policy.build().map_err(|e| {
            let span = match e.field {
                "health.interval" => h.interval.as_ref(),
                "health.timeout" => h.timeout.as_ref(),
                "health.start_period" => h.start_period.as_ref(),
                "health.deadline" => h.deadline.as_ref(),
                "health.stable_for" => h.stable_for.as_ref(),
                _ => None,
            }
            .map(|s| s.span())
            .or_else(|| raw.map(|r| r.span()));
            self.err(span, e.to_string())
        })?;
        Ok((check, expect, policy))
    }

    fn rollout(&self, r: &RawRollout) -> Result<RolloutPolicy, ConfigError> {
        let on_failure = r.on_failure;
        let batch = match &r.batch {
            Some(b) => usize::try_from(*b.get_ref())
                .map_err(|_| self.at(b, "rollout.batch: must be at least 1"))?,
            None => 1,
        };
        RolloutPolicy::new(batch, on_failure)
            .map_err(|e| self.err(r.batch.as_ref().map(|b| b.span()), e.to_string()))
    }
}

/// The answer expected from an HTTP check, shared by hosts that give their own URL.
struct HttpExpect {
    expect_status: Option<u16>,
    expect_json: Option<(String, String)>,
}

enum InterpolationError {
    Missing(String),
    Malformed,
}

/// Replace every `${NAME}` in `value`; any reference makes the value a secret.
fn interpolate(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvValue, InterpolationError> {
    if !value.contains("${") {
        return Ok(EnvValue::Plain(value.to_owned()));
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(InterpolationError::Malformed)?;
        let name = &after[..end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(InterpolationError::Malformed);
        }
        let v = lookup(name).ok_or_else(|| InterpolationError::Missing(name.to_owned()))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(EnvValue::Secret(Secret::new(out)))
}

/// A key path as the config writes it (`hosts[1].ports[0]`), without the
/// fields toml uses internally to carry spans.
fn key_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } if !key.starts_with("$__") => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            _ => {}
        }
    }
    out
}

/// The table holding the unknown key at the end of `path`: `in [container]`,
/// `in [[hosts]]`, `at the top level`.
fn table_name(path: &serde_path_to_error::Path) -> String {
    let mut names = Vec::new();
    let mut array = false;
    let segments: Vec<&Segment> = path.iter().collect();
    let parent = match segments.split_last() {
        Some((Segment::Map { .. }, parent)) => parent,
        _ => &segments[..],
    };
    for segment in parent {
        match segment {
            Segment::Seq { .. } => array = true,
            Segment::Map { key } | Segment::Enum { variant: key } if !key.starts_with("$__") => {
                names.push(key.as_str());
                array = false;
            }
            _ => {}
        }
    }
    let name = names.join(".");
    match (name.is_empty(), array) {
        (true, _) => "at the top level".to_owned(),
        (false, true) => format!("in [[{name}]]"),
        (false, false) => format!("in [{name}]"),
    }
}

/// How long a hook may run unless `[hooks] timeout` says otherwise.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long each webhook attempt may take unless `[notify] timeout` says otherwise.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// `--memory` syntax: bytes, or a number with b, k, m or g (powers of 1024).
fn memory_bytes(raw: &RawNumber) -> Result<u64, String> {
    const MIN: u64 = 6 * 1024 * 1024;
    let bytes = match raw {
        RawNumber::Integer(i) => u64::try_from(*i).ok(),
        RawNumber::Float(_) => None,
        RawNumber::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            let (number, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
                Some((at, _)) => s.split_at(at),
                None => (s.as_str(), ""),
            };
            let unit: u64 = match unit.trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => 0,
            };
            let number: Option<f64> = number.trim().parse().ok();
            number
                .filter(|n| n.is_finite() && *n >= 0.0 && unit > 0)
                .map(|n| (n * unit as f64) as u64)
        }
    };
    match bytes {
        Some(b) if b >= MIN => Ok(b),
        Some(_) => Err("is below the engine's minimum of 6m".into()),
        None => Err("expected bytes or a size such as \"512m\" or \"2g\"".into()),
    }
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "JASYPT_PASSWORD" => Some("s3cr3t-value".into()),
            "OTHER_SECRET" => Some("another-hidden".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("rollback.toml"), &env)
    }

    fn error(text: &str) -> String {
        let e = parse(text).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
        assert!(!e.to_string().contains("another-hidden"), "{e}");
        e.to_string()
    }

    const APP: &str = "[app]\nname = \"ody\"\nrepository = \"127.0.0.1:5000/team/ody\"\n";

    fn with_app(rest: &str) -> String {
        format!("{APP}[health]\nhttp = \"http://127.0.0.1:18080/health\"\n{rest}")
    }

    const FULL: &str = r#"[app]
name = "ody-prod-app"
repository = "127.0.0.1:5000/team/ody"
stable_tag = "latest"
previous_tag = "previous"

[container]
ports = ["127.0.0.1:18080:8080"]
env = { SPRING_PROFILES_ACTIVE = "prod", JASYPT_ENCRYPTOR_PASSWORD = "${JASYPT_PASSWORD}", WORKERS = 4 }
volumes = ["/var/logs/ody:/ody-logs"]
platform = "linux/arm64"
network = "host"
restart = "unless-stopped"
command = ["--flag"]
stop_timeout = "10s"

[health]
http = "http://127.0.0.1:18080/actuator/health"
expect_status = 200
json_pointer = "/status"
expect = "UP"
interval = "1s"
timeout = "2s"
start_period = "0s"
deadline = "60s"
stable_for = "5s"

[rollout]
batch = 2
on_failure = "rollback-host"

[[hosts]]
name = "prod-a"
docker = "unix:///var/run/docker.sock"
health_url = "http://10.0.0.1:80/actuator/health"
ports = ["127.0.0.1:18081:8080"]
env = { REGION = "b", SPRING_PROFILES_ACTIVE = "prod-a" }

[[hosts]]
name = "prod-b"
docker = "tcp://10.0.0.2:2376"
tcp = "10.0.0.2:80"
"#;

    #[test]
    fn the_design_example_loads() {
        let c = parse(FULL).unwrap();
        let app = c.app().unwrap();
        assert_eq!(app.name, "ody-prod-app");
        assert_eq!(app.repository.to_string(), "127.0.0.1:5000/team/ody");
        assert_eq!(
            (app.stable_tag.as_str(), app.previous_tag.as_str()),
            ("latest", "previous")
        );
        assert_eq!(c.container.ports[0].host_port, Some(18080));
        assert_eq!(c.container.volumes, vec!["/var/logs/ody:/ody-logs"]);
        assert_eq!(c.container.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(c.container.network.as_deref(), Some("host"));
        assert_eq!(c.container.restart, Some(RestartPolicy::UnlessStopped));
        assert_eq!(c.container.command, vec!["--flag"]);
        assert_eq!(c.container.stop_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.container.env["WORKERS"], EnvValue::Plain("4".into()));
        let secret = &c.container.env["JASYPT_ENCRYPTOR_PASSWORD"];
        assert!(secret.is_secret());
        assert_eq!(secret.expose(), "s3cr3t-value");
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
        assert_eq!(c.health.deadline(), Duration::from_secs(60));
        assert_eq!(c.health.stable_for(), Duration::from_secs(5));
        assert_eq!(
            (c.rollout.batch(), c.rollout.on_failure()),
            (2, OnFailure::RollbackHost)
        );

        assert_eq!(c.hosts.len(), 2);
        let a = &c.hosts[0];
        assert_eq!(a.name.as_str(), "prod-a");
        assert_eq!(a.docker.as_deref(), Some("unix:///var/run/docker.sock"));
        assert_eq!(
            a.health,
            Some(HealthCheck::Http {
                url: "http://10.0.0.1:80/actuator/health".into(),
                expect_status: Some(200),
                expect_json: Some(("/status".into(), "UP".into())),
            })
        );
        assert_eq!(a.ports[0].host_port, Some(18081));
        assert_eq!(a.env["REGION"], EnvValue::Plain("b".into()));
        assert_eq!(
            a.env["SPRING_PROFILES_ACTIVE"],
            EnvValue::Plain("prod-a".into())
        );
        assert!(a.env["JASYPT_ENCRYPTOR_PASSWORD"].is_secret());
        let b = &c.hosts[1];
        assert_eq!(
            b.health,
            Some(HealthCheck::Tcp {
                address: "10.0.0.2:80".into()
            })
        );
        assert_eq!(b.ports, c.container.ports);
        assert_eq!(b.env, c.container.env);
    }

    #[test]
    fn defaults_one_local_host_and_default_policies() {
        let c = parse(&with_app("")).unwrap();
        let app = c.app().unwrap();
        assert_eq!(
            (app.stable_tag.as_str(), app.previous_tag.as_str()),
            ("latest", "previous")
        );
        assert_eq!(c.hosts.len(), 1);
        assert_eq!(c.hosts[0].name.as_str(), DEFAULT_HOST);
        assert_eq!(c.hosts[0].docker, None);
        assert_eq!(c.health, HealthPolicy::default());
        assert_eq!(c.rollout, RolloutPolicy::default());
        let c = parse(&format!("{APP}[health]\ndocker = true\n")).unwrap();
        assert_eq!(c.hosts[0].health, Some(HealthCheck::Docker));
    }

    #[test]
    fn a_file_without_app_loads_but_app_commands_refuse() {
        let c = parse("[container]\nports = [\"8080\"]\n").unwrap();
        let e = c.app().unwrap_err();
        assert_eq!(
            e.to_string(),
            "rollback.toml: missing [app] table (name and repository are required)"
        );
    }

    #[test]
    fn unknown_fields_name_file_line_and_table() {
        let text = format!("{APP}\n[container]\nprots = [\"80:80\"]\n");
        let e = error(&text);
        assert!(
            e.starts_with("rollback.toml:6: unknown field `prots` in [container], expected one of"),
            "{e}"
        );
        assert!(e.contains("`ports`"), "{e}");
        let e = error(&with_app(
            "[[hosts]]\nname = \"a\"\nhealthurl = \"http://x\"\n",
        ));
        assert!(
            e.starts_with("rollback.toml:8: unknown field `healthurl` in [[hosts]]"),
            "{e}"
        );
        let e = error(&with_app("[healthz]\nx = 1\n"));
        assert!(
            e.starts_with(
                "rollback.toml:6: unknown field `healthz` at the top level, expected one of"
            ),
            "{e}"
        );
        let e = error(&format!("bogus = 1\n{APP}"));
        assert!(
            e.starts_with("rollback.toml:1: unknown field `bogus` at the top level"),
            "{e}"
        );
        let e = error(&with_app("[[hosts]]\nname = \"a\"\n[hosts.extra]\ny = 1\n"));
        assert!(
            e.starts_with("rollback.toml:8: unknown field `extra` in [[hosts]]"),
            "{e}"
        );
        let e = error(&format!(
            "{APP}[health]\nhttp = \"http://a/\"\nretries = 5\n"
        ));
        assert!(
            e.starts_with("rollback.toml:6: unknown field `retries` in [health]"),
            "{e}"
        );
    }

    #[test]
    fn syntax_and_type_errors_have_lines() {
        let e = error(&format!("{APP}[container]\nports = \"80:80\"\n"));
        assert!(e.starts_with("rollback.toml:5: "), "{e}");
        let e = error("[app\nname = \"x\"\n");
        assert_eq!(
            e,
            "rollback.toml:1: invalid table header: expected `.`, `]`"
        );
        let e = error(&format!("{APP}[container\n"));
        assert!(e.starts_with("rollback.toml:4: "), "{e}");
        let e = error("[app]\nname = \"ody\"\n");
        assert!(e.contains("missing field `repository`"), "{e}");
    }

    #[test]
    fn bad_ports_name_the_key_and_line() {
        let e = error(&with_app(
            "[container]\nports = [\"127.0.0.1:80:80\", \"x:80\"]\n",
        ));
        assert!(
            e.starts_with("rollback.toml:7: container.ports[1]: invalid port mapping \"x:80\""),
            "{e}"
        );
        let e = error(&with_app(
            "[[hosts]]\nname = \"a\"\nports = [\"70000:80\"]\n",
        ));
        assert!(
            e.starts_with("rollback.toml:8: hosts[0].ports[0]: invalid port mapping"),
            "{e}"
        );
    }

    #[test]
    fn bad_container_values() {
        let e = error(&with_app("[container]\nrestart = \"sometimes\"\n"));
        assert!(
            e.starts_with("rollback.toml:7: container.restart: invalid restart policy"),
            "{e}"
        );
        let e = error(&with_app("[container]\nstop_timeout = \"ten seconds\"\n"));
        assert!(
            e.starts_with("rollback.toml:7: container.stop_timeout: invalid duration"),
            "{e}"
        );
        let e = error(&with_app("[container]\nplatform = \"arm64\"\n"));
        assert!(e.starts_with("rollback.toml:7: container.platform:"), "{e}");
        let e = error(&with_app("[container]\nvolumes = [\" \"]\n"));
        assert!(
            e.starts_with("rollback.toml:7: container.volumes[0]: must not be empty"),
            "{e}"
        );
    }

    #[test]
    fn variables_become_secrets_and_missing_ones_name_variable_and_key() {
        let c = parse(&with_app(
            "[container]\nenv = { A = \"x-${JASYPT_PASSWORD}-${OTHER_SECRET}\", B = \"$plain\" }\n",
        ))
        .unwrap();
        assert_eq!(
            c.container.env["A"].expose(),
            "x-s3cr3t-value-another-hidden"
        );
        assert!(c.container.env["A"].is_secret());
        assert_eq!(c.container.env["B"], EnvValue::Plain("$plain".into()));
        // Each variable is a secret of its own, by name.
        let substituted: Vec<(&str, &str)> = c
            .substituted
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            substituted,
            [
                ("JASYPT_PASSWORD", "s3cr3t-value"),
                ("OTHER_SECRET", "another-hidden")
            ]
        );
        let secrets = crate::output::secrets_of(&c);
        assert!(secrets.iter().any(|s| s == "s3cr3t-value"), "{secrets:?}");

        let e = error(&with_app(
            "[container]\nenv = { A = \"${OTHER_SECRET}\", DB_PASSWORD = \"${DB_PASS}\", C = \"visible-plain\" }\n",
        ));
        assert_eq!(
            e,
            "rollback.toml:7: container.env.DB_PASSWORD: environment variable DB_PASS is not set"
        );
        let e = error(&with_app(
            "[[hosts]]\nname = \"a\"\nenv = { T = \"${TOKEN}\" }\n",
        ));
        assert_eq!(
            e,
            "rollback.toml:8: hosts[0].env.T: environment variable TOKEN is not set"
        );
        let e = error(&with_app("[container]\nenv = { A = \"${UNCLOSED\" }\n"));
        assert!(
            e.starts_with("rollback.toml:7: container.env.A: malformed ${...}"),
            "{e}"
        );
        let e = error(&with_app("[container]\nenv = { A = \"${1BAD}\" }\n"));
        assert!(
            e.starts_with("rollback.toml:7: container.env.A: malformed"),
            "{e}"
        );
    }

    #[test]
    fn day_two_keys_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.env"),
            "# comment\nDB_PASSWORD=from-file\nMODE=file\n\nJASYPT_PASSWORD\nUNSET_ONE\n",
        )
        .unwrap();
        let text = "[app]\nname = \"ody\"\nrepository = \"127.0.0.1:5000/team/ody\"\nretain = 3\n\
             [container]\nenv = { MODE = \"env\" }\nenv_file = \"app.env\"\n\
             labels = { team = \"shop\" }\nmemory = \"512m\"\ncpus = 1.5\nuser = \"1000:1000\"\n\
             entrypoint = [\"/bin/sh\", \"/app.sh\"]\nhostname = \"web-1\"\nadd_hosts = [\"db:10.0.0.5\"]\n\
             log_driver = \"json-file\"\nlog_options = { max-size = \"10m\" }\nnetworks = [\"backend\"]\n\
             cap_add = [\"cap_net_admin\"]\n\
             [health]\nexec = [\"true\"]\n\
             [hooks]\npre_deploy = \"./check\"\npost_deploy = \"./announce\"\ntimeout = \"30s\"\n\
             [notify]\nwebhook = \"https://user:${JASYPT_PASSWORD}@hooks.example.com:8443/x\"\n"
        .to_owned();
        let path = dir.path().join("rollback.toml");
        let c = Config::parse(&text, &path, &env).unwrap();
        assert_eq!(c.retain.get(), 3);
        let o = &c.container.options;
        assert_eq!(o.memory, Some(512 << 20));
        assert_eq!(o.nano_cpus, Some(1_500_000_000));
        assert_eq!(o.user.as_deref(), Some("1000:1000"));
        assert_eq!(
            o.entrypoint.as_deref(),
            Some(&["/bin/sh".to_owned(), "/app.sh".to_owned()][..])
        );
        assert_eq!(o.hostname.as_deref(), Some("web-1"));
        assert_eq!(o.add_hosts, ["db:10.0.0.5"]);
        assert_eq!(o.log_driver.as_deref(), Some("json-file"));
        assert_eq!(o.log_options["max-size"], "10m");
        assert_eq!(o.networks, ["backend"]);
        assert_eq!(o.cap_add, ["NET_ADMIN"]);
        assert_eq!(c.container.labels["team"], "shop");
        let env = &c.container.env;
        assert_eq!(env["MODE"].expose(), "env", "env wins over env_file");
        assert!(env["DB_PASSWORD"].is_secret());
        assert_eq!(env["DB_PASSWORD"].expose(), "from-file");
        assert_eq!(env["JASYPT_PASSWORD"].expose(), "s3cr3t-value");
        assert!(!env.contains_key("UNSET_ONE"));
        assert_eq!(c.hooks.pre_deploy.as_deref(), Some("./check"));
        assert_eq!(c.hooks.timeout, Duration::from_secs(30));
        assert_eq!(c.hooks.dir, dir.path());
        let notify = c.notify.as_ref().unwrap();
        assert_eq!(notify.webhook_origin, "https://hooks.example.com:8443");
        assert!(notify.webhook.expose().contains("s3cr3t-value"));
        assert!(!format!("{notify:?}").contains("s3cr3t"), "{notify:?}");

        let c = parse(&with_app("")).unwrap();
        assert_eq!(c.retain.get(), 5);
        assert_eq!(c.hooks.timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(c.hooks.dir, Path::new("."));
        assert!(c.notify.is_none() && c.hooks.pre_deploy.is_none());
    }

    #[test]
    fn day_two_keys_are_validated_with_lines() {
        let app = |extra: &str| {
            format!("[app]\nname = \"ody\"\nrepository = \"127.0.0.1:5000/team/ody\"\n{extra}[health]\ndocker = true\n")
        };
        for (text, want) in [
            (
                app("retain = 1\n"),
                "rollback.toml:4: app.retain: must be at least 2",
            ),
            (
                app("retain = -3\n"),
                "rollback.toml:4: app.retain: must be at least 2",
            ),
            (
                with_app("[container]\nmemory = \"lots\"\n"),
                "rollback.toml:7: container.memory: expected bytes",
            ),
            (
                with_app("[container]\nmemory = \"1k\"\n"),
                "rollback.toml:7: container.memory: is below",
            ),
            (
                with_app("[container]\ncpus = 0\n"),
                "rollback.toml:7: container.cpus: must be a number",
            ),
            (
                with_app("[container]\nuser = \"a b\"\n"),
                "rollback.toml:7: container.user:",
            ),
            (
                with_app("[container]\nhostname = \"-x\"\n"),
                "rollback.toml:7: container.hostname:",
            ),
            (
                with_app("[container]\nadd_hosts = [\"db\"]\n"),
                "rollback.toml:7: container.add_hosts[0]: \"db\" is not name:ip",
            ),
            (
                with_app("[container]\nadd_hosts = [\"db:nope\"]\n"),
                "rollback.toml:7: container.add_hosts[0]:",
            ),
            (
                with_app("[container]\nnetworks = [\"a\", \"a\"]\n"),
                "rollback.toml:7: container.networks[1]: \"a\" is listed twice",
            ),
            (
                with_app("[container]\nnetwork = \"host\"\nnetworks = [\"a\"]\n"),
                "rollback.toml:8: container.networks: a container with network = \"host\"",
            ),
            (
                with_app("[container]\ncap_add = [\"NET ADMIN\"]\n"),
                "rollback.toml:7: container.cap_add[0]:",
            ),
            (
                with_app("[container]\nlabels = { \"io.rollback.app\" = \"x\" }\n"),
                "rollback.toml:7: container.labels.io.rollback.app:",
            ),
            (
                with_app("[container]\nenv_file = \"no-such.env\"\n"),
                "rollback.toml:7: container.env_file: cannot read",
            ),
            (
                with_app("[container]\nlog_driver = \"\"\n"),
                "rollback.toml:7: container.log_driver:",
            ),
            (
                with_app("[hooks]\npre_deploy = \" \"\n"),
                "rollback.toml:7: hooks.pre_deploy: must not be empty",
            ),
            (
                with_app("[hooks]\ntimeout = \"soon\"\n"),
                "rollback.toml:7: hooks.timeout: invalid duration",
            ),
            (
                with_app("[hooks]\npre = \"x\"\n"),
                "rollback.toml:7: unknown field `pre` in [hooks]",
            ),
            (
                with_app("[notify]\nwebhook = \"ftp://u:p@x/\"\n"),
                "rollback.toml:7: notify.webhook: must be an http:// or https:// URL",
            ),
            (
                with_app("[notify]\nwebhook = \"${NOPE}\"\n"),
                "rollback.toml:7: notify.webhook: environment variable NOPE is not set",
            ),
        ] {
            let e = error(&text);
            assert!(e.starts_with(want), "{text}\n{e}");
        }
        // A bad env file line is named by file and line, never quoted.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.env"), "A=1\nsecret value here\n").unwrap();
        let text = with_app("[container]\nenv_file = \"bad.env\"\n");
        let e = Config::parse(&text, &dir.path().join("rollback.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.env:2: expected NAME=value"), "{e}");
        assert!(!e.contains("secret value"), "{e}");
        // A webhook URL's credentials never reach an error.
        let e = error(&with_app("[notify]\nwebhook = \"https://user:pa ss@\"\n"));
        assert!(!e.contains("pa ss"), "{e}");
    }

    #[test]
    fn health_check_choice_is_validated() {
        let c = parse(&format!(
            "{APP}[health]\nexec = [\"curl\", \"-f\", \"x\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.hosts[0].health,
            Some(HealthCheck::Exec {
                command: vec!["curl".into(), "-f".into(), "x".into()]
            })
        );
        for bad in ["\"curl -f x\"", "[]", "[1, 2]", "[\"\"]"] {
            let e = error(&format!("{APP}[health]\nexec = {bad}\n"));
            assert!(
                e.starts_with("rollback.toml:5: health.exec: expected ["),
                "{bad}: {e}"
            );
        }
        let e = error(&format!(
            "{APP}[health]\nexec = [\"true\"]\ndocker = true\n"
        ));
        assert!(
            e.contains("set only one of http, tcp, docker, exec (found docker, exec)"),
            "{e}"
        );
        let e = error(&format!(
            "{APP}[health]\nhttp = \"http://a/\"\ntcp = \"a:80\"\n"
        ));
        assert!(
            e.starts_with("rollback.toml:4: health: set only one of http, tcp, docker"),
            "{e}"
        );
        let e = error(APP);
        assert!(e.contains("no health check"), "{e}");
        let e = error(&format!("{APP}[health]\nhttp = \"ftp://a/\"\n"));
        assert!(
            e.starts_with("rollback.toml:5: health.http: \"ftp://a/\" is not an http"),
            "{e}"
        );
        let e = error(&format!("{APP}[health]\nhttp = \"not a url\"\n"));
        assert!(
            e.starts_with("rollback.toml:5: health.http: invalid URL"),
            "{e}"
        );
        let e = error(&format!("{APP}[health]\ntcp = \"localhost\"\n"));
        assert!(
            e.starts_with("rollback.toml:5: health.tcp: \"localhost\" is not a host:port"),
            "{e}"
        );
        let e = error(&format!("{APP}[health]\ndocker = false\n"));
        assert!(e.starts_with("rollback.toml:5: health.docker:"), "{e}");
        let e = error(&format!(
            "{APP}[health]\ntcp = \"a:80\"\nexpect_status = 200\n"
        ));
        assert!(e.starts_with("rollback.toml:6: health: expect_status, json_pointer and expect apply to http checks"), "{e}");
        let e = error(&with_app("expect = \"UP\"\n"));
        assert!(
            e.starts_with("rollback.toml:6: health.expect: needs health.json_pointer"),
            "{e}"
        );
        let e = error(&with_app("json_pointer = \"/status\"\n"));
        assert!(
            e.starts_with("rollback.toml:6: health.json_pointer: needs health.expect"),
            "{e}"
        );
        let e = error(&with_app("json_pointer = \"status\"\nexpect = \"UP\"\n"));
        assert!(
            e.starts_with("rollback.toml:6: health.json_pointer: \"status\" must start with /"),
            "{e}"
        );
        let e = error(&with_app("expect_status = 42\n"));
        assert!(
            e.starts_with("rollback.toml:6: health.expect_status: 42 is not an HTTP status"),
            "{e}"
        );
    }

    #[test]
    fn health_policy_errors_name_the_field_and_line() {
        let e = error(&with_app("timeout = \"10s\"\ndeadline = \"5s\"\n"));
        assert!(
            e.starts_with("rollback.toml:7: health.deadline: 5s is shorter than one attempt"),
            "{e}"
        );
        let e = error(&with_app("interval = \"0s\"\n"));
        assert_eq!(
            e,
            "rollback.toml:6: health.interval: must be greater than zero"
        );
        let e = error(&with_app("stable_for = \"2m\"\n"));
        assert!(e.starts_with("rollback.toml:6: health.stable_for:"), "{e}");
        let e = error(&with_app("start_period = \"5 parsecs\"\n"));
        assert!(
            e.starts_with("rollback.toml:6: health.start_period: invalid duration"),
            "{e}"
        );
    }

    #[test]
    fn rollout_errors_name_the_field() {
        let e = error(&with_app("[rollout]\nbatch = 0\n"));
        assert_eq!(e, "rollback.toml:7: rollout.batch: must be at least 1");
        let e = error(&with_app("[rollout]\nbatch = -3\n"));
        assert_eq!(e, "rollback.toml:7: rollout.batch: must be at least 1");
        let e = error(&with_app("[rollout]\non_failure = \"panic\"\n"));
        assert!(
            e.starts_with("rollback.toml:7: rollout.on_failure: \"panic\" is not one of"),
            "{e}"
        );
    }

    #[test]
    fn hosts_are_validated() {
        let e = error(&with_app(
            "[[hosts]]\nname = \"a\"\n[[hosts]]\nname = \"a\"\n",
        ));
        assert_eq!(
            e,
            "rollback.toml:9: hosts[1].name: host name \"a\" is used twice"
        );
        let e = error(&with_app("[[hosts]]\nname = \" \"\n"));
        assert_eq!(e, "rollback.toml:7: hosts[0].name: must not be empty");
        let e = error(&with_app(
            "[[hosts]]\nname = \"a\"\ndocker = \"/var/run/docker.sock\"\n",
        ));
        assert!(e.starts_with("rollback.toml:8: hosts[0].docker: \"/var/run/docker.sock\" is not an engine address"), "{e}");
        let e = error(&with_app(
            "[[hosts]]\nname = \"a\"\ndocker = \"npipe:////./pipe/docker_engine\"\n",
        ));
        assert!(
            e.starts_with("rollback.toml:8: hosts[0].docker: \"npipe:////./pipe/docker_engine\": npipe:// engines are not supported"),
            "{e}"
        );
        let e = error(&with_app(
            "[[hosts]]\nname = \"a\"\nhealth_url = \"10.0.0.1/health\"\n",
        ));
        assert!(
            e.starts_with("rollback.toml:8: hosts[0].health_url: invalid URL"),
            "{e}"
        );
        let e = error(&with_app(
            "[[hosts]]\nname = \"a\"\nhealth_url = \"http://a/\"\ntcp = \"a:1\"\n",
        ));
        assert!(
            e.starts_with("rollback.toml:8: hosts[0]: set either health_url or tcp"),
            "{e}"
        );
        let e = error(&format!("{APP}[[hosts]]\nname = \"a\"\n"));
        assert!(
            e.starts_with("rollback.toml:4: hosts[0]: no health check"),
            "{e}"
        );
        // A host's own check is enough when [health] has none.
        let c = parse(&format!(
            "{APP}[health]\nexpect_status = 204\n[[hosts]]\nname = \"a\"\nhealth_url = \"http://a:1/h\"\n[[hosts]]\nname = \"b\"\ntcp = \"b:1\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.hosts[0].health,
            Some(HealthCheck::Http {
                url: "http://a:1/h".into(),
                expect_status: Some(204),
                expect_json: None
            })
        );
        assert_eq!(
            c.hosts[1].health,
            Some(HealthCheck::Tcp {
                address: "b:1".into()
            })
        );
    }

    #[test]
    fn app_values_are_validated() {
        let e = error("[app]\nname = \"-bad name\"\nrepository = \"r\"\n[health]\ndocker = true\n");
        assert!(
            e.starts_with("rollback.toml:2: app.name: \"-bad name\" is not a valid container name"),
            "{e}"
        );
        let e = error("[app]\nname = \"a\"\nrepository = \"127.0.0.1:5000/team/ody:latest\"\n[health]\ndocker = true\n");
        assert!(
            e.starts_with("rollback.toml:3: app.repository: invalid repository"),
            "{e}"
        );
        let e = error(&format!(
            "{APP}stable_tag = \"bad tag\"\n[health]\ndocker = true\n"
        ));
        assert!(
            e.starts_with("rollback.toml:4: app.stable_tag: \"bad tag\" is not a valid tag"),
            "{e}"
        );
        let e = error(&format!(
            "{APP}previous_tag = \"latest\"\n[health]\ndocker = true\n"
        ));
        assert!(
            e.starts_with("rollback.toml:4: app.previous_tag: must differ from app.stable_tag"),
            "{e}"
        );
    }

    const PROXY: &str = "[app]\nname = \"ody\"\nrepository = \"127.0.0.1:5000/team/ody\"\n[proxy]\nlisten = \"127.0.0.1:18080\"\napp_port = 8080\n[health]\npath = \"/health\"\njson_pointer = \"/status\"\nexpect = \"UP\"\n";

    #[test]
    fn proxy_defaults_and_the_direct_check() {
        let c = parse(PROXY).unwrap();
        let p = c.proxy.clone().unwrap();
        assert_eq!(
            p,
            ProxyConfig {
                listen: "127.0.0.1:18080".into(),
                app_port: 8080,
                image: "caddy:2".into(),
                drain: Duration::from_secs(30),
                host: None,
            }
        );
        assert_eq!(c.hosts[0].proxy.as_ref(), Some(&p));
        assert_eq!(
            c.hosts[0].health,
            Some(HealthCheck::Direct {
                path: "/health".into(),
                port: 8080,
                expect_status: None,
                expect_json: Some(("/status".into(), "UP".into())),
            })
        );
        let text = PROXY.replace(
            "app_port = 8080\n",
            "app_port = 8080\nimage = \"127.0.0.1:5000/caddy:2\"\ndrain = \"5s\"\nhost = \"Shop.Example.com\"\n",
        );
        let p = parse(&text).unwrap().proxy.unwrap();
        assert_eq!(p.image, "127.0.0.1:5000/caddy:2");
        assert_eq!(p.drain, Duration::from_secs(5));
        assert_eq!(p.host.as_deref(), Some("shop.example.com"));
        assert!(parse(&PROXY.replace("127.0.0.1:18080", "80")).is_ok());
    }

    #[test]
    fn proxy_refuses_a_network_mode_it_cannot_reach() {
        for mode in ["host", "none", "container:db"] {
            let text = PROXY.replace(
                "[proxy]",
                &format!("[container]\nnetwork = \"{mode}\"\n[proxy]"),
            );
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.starts_with("rollback.toml:6: proxy: the proxy reaches the app on its network"),
                "{e}"
            );
            assert!(e.contains(mode), "{e}");
        }
        // A network of the user's own is joined beside the proxy's.
        let text = PROXY.replace("[proxy]", "[container]\nnetwork = \"backend\"\n[proxy]");
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn proxy_errors_name_file_line_and_key() {
        // A [container] port publishing app_port or listen.
        let e = error(&PROXY.replace(
            "[proxy]",
            "[container]\nports = [\"127.0.0.1:18081:8080\"]\n[proxy]",
        ));
        assert!(
            e.starts_with("rollback.toml:5: container.ports[0]: publishes proxy.app_port 8080"),
            "{e}"
        );
        let e = error(&PROXY.replace(
            "[proxy]",
            "[container]\nports = [\"127.0.0.1:18080:9000\"]\n[proxy]",
        ));
        assert!(
            e.starts_with("rollback.toml:5: container.ports[0]: publishes proxy.listen"),
            "{e}"
        );
        // A host's own ports too.
        let e = error(&format!(
            "{PROXY}[[hosts]]\nname = \"a\"\nports = [\"18080:8080\"]\n"
        ));
        assert!(
            e.contains("hosts[0].ports[0]: publishes proxy.app_port"),
            "{e}"
        );
        // Another port of the app stays allowed.
        assert!(parse(&PROXY.replace(
            "[proxy]",
            "[container]\nports = [\"127.0.0.1:19090:9090\"]\n[proxy]"
        ))
        .is_ok());
        // A path without '/'.
        let e = error(&PROXY.replace("path = \"/health\"", "path = \"health\""));
        assert!(
            e.starts_with("rollback.toml:8: health.path: \"health\" must start with /"),
            "{e}"
        );
        // An unknown key.
        let e = error(&PROXY.replace("app_port = 8080", "app_port = 8080\nport = 80"));
        assert!(e.starts_with("rollback.toml:7: "), "{e}");
        assert!(e.contains("proxy") && e.contains("port"), "{e}");
        // Missing, bad or conflicting values.
        let e = error(&PROXY.replace("app_port = 8080\n", ""));
        assert!(e.contains("app_port"), "{e}");
        let e = error(&PROXY.replace("app_port = 8080", "app_port = 70000"));
        assert!(
            e.starts_with("rollback.toml:6: proxy.app_port: 70000 is not a port"),
            "{e}"
        );
        let e = error(&PROXY.replace("127.0.0.1:18080", "127.0.0.1:x"));
        assert!(e.starts_with("rollback.toml:5: proxy.listen:"), "{e}");
        let e = error(&PROXY.replace(
            "path = \"/health\"",
            "http = \"http://127.0.0.1:18080/health\"",
        ));
        assert!(
            e.contains("health: with [proxy] the new release is probed directly"),
            "{e}"
        );
        let e = error(&with_app("path = \"/health\"\n"));
        assert!(e.contains("health.path: applies with [proxy]"), "{e}");
        let e = error(&format!(
            "{PROXY}[[hosts]]\nname = \"a\"\nhealth_url = \"http://a:8080/health\"\n"
        ));
        assert!(e.contains("hosts[0]: with [proxy]"), "{e}");
    }

    #[test]
    fn load_names_a_missing_file() {
        let e = Config::load(Path::new("/nonexistent/rollback.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/rollback.toml: cannot read the config file"),
            "{e}"
        );
    }
}
