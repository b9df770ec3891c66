//! Rules across keys and tables, and the config built from the raw tables.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;

use rollback_core::{
    App, EnvValue, HealthPolicy, HostId, PortMapping, Retain, RolloutPolicy, RunOptions, Secret,
    Tag,
};
use serde_path_to_error::Segment;
use toml::Spanned;

use super::raw::*;
use super::*;

pub(super) struct Ctx<'a> {
    pub(super) file: String,
    pub(super) text: &'a str,
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

    pub(super) fn toml_error(
        &self,
        e: &serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
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

    pub(super) fn validate(
        &self,
        raw: RawConfig,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let app = raw.app.as_ref().map(|a| self.app(a)).transpose()?;
        let retain = raw
            .app
            .as_ref()
            .and_then(|a| a.get_ref().retain)
            .map_or_else(Retain::default, |r| r.0);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let container = self.container(&raw.container, &dir, lookup)?;
        let hooks = self.hooks(&raw.hooks, &dir)?;
        let notify = self.notify(&raw.notify, lookup)?;
        let mut warnings = Vec::new();
        let proxy = raw
            .proxy
            .as_ref()
            .map(|p| self.proxy(p, &dir, &mut warnings))
            .transpose()?;
        if let (Some(_), Some(s)) = (&raw.proxy, &raw.swarm) {
            return Err(self.at(
                s,
                "swarm: a service is reached through its tasks' network, not [proxy]: remove one of [proxy] and [swarm]",
            ));
        }
        let swarm = raw
            .swarm
            .as_ref()
            .map(|s| self.swarm(s, app.as_ref()))
            .transpose()?;
        if let Some(table) = &raw.swarm {
            // Only what the task template takes from [container] is
            // accepted; anything else would be silently left out.
            let c = &raw.container;
            let set = [
                ("ports", !c.ports.is_empty()),
                ("volumes", !c.volumes.is_empty()),
                ("platform", c.platform.is_some()),
                ("network", c.network.is_some()),
                ("restart", c.restart.is_some()),
                ("memory", c.memory.is_some()),
                ("cpus", c.cpus.is_some()),
                ("user", c.user.is_some()),
                ("entrypoint", c.entrypoint.is_some()),
                ("hostname", c.hostname.is_some()),
                ("add_hosts", !c.add_hosts.is_empty()),
                ("log_driver", c.log_driver.is_some()),
                ("log_options", !c.log_options.is_empty()),
                ("networks", !c.networks.is_empty()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
                let hint = if *key == "ports" {
                    "use swarm.publish"
                } else {
                    "remove it (a service takes env, command, labels and stop_timeout from [container])"
                };
                let span = c
                    .ports
                    .first()
                    .filter(|_| *key == "ports")
                    .map(|p| p.span());
                return Err(self.err(
                    span.or_else(|| Some(table.span())),
                    format!("container.{key}: not applied to a Swarm service: {hint}"),
                ));
            }
        }
        let direct_port = proxy
            .as_ref()
            .map(|p| p.app_port)
            .or(swarm.as_ref().map(|s| s.port));
        let (check, expect, health) = self.health(raw.health.as_ref(), direct_port)?;
        let swarm = match (swarm, &check) {
            (
                Some(mut s),
                Some(HealthCheck::Direct {
                    path,
                    port,
                    expect_json,
                    ..
                }),
            ) => {
                if s.healthcheck.is_none() {
                    s.healthcheck = Some(default_healthcheck(*port, path, expect_json.as_ref()));
                }
                s.healthcheck = s.healthcheck.filter(|h| !h.is_empty());
                s.health_interval = health.interval();
                s.health_timeout = health.timeout();
                Some(s)
            }
            (Some(_), _) => {
                return Err(self.err(
                    raw.swarm.as_ref().map(|s| s.span()),
                    "swarm: each task is probed directly: set health.path",
                ))
            }
            (None, _) => None,
        };
        if let Some(p) = &proxy {
            self.proxy_ports(p, &raw.container.ports, "container.ports")?;
            let mode = raw.container.network.as_ref();
            if let (Some(mode), Some(table)) = (mode, raw.proxy.as_ref()) {
                if mode.joins_no_other() {
                    let mode = &mode.0;
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
            let name = h.name.get_ref().0.as_str();
            if !seen.insert(name.to_owned()) {
                return Err(self.at(
                    &h.name,
                    format!("{key}.name: host name {name:?} is used twice"),
                ));
            }
            let docker = h.docker.as_ref().map(|d| d.0.clone());
            if swarm.is_some() {
                if let Some(v) = h.health_url.as_ref().or(h.tcp.as_ref()) {
                    return Err(self.at(
                        v,
                        format!("{key}: with [swarm] every task is probed directly at [health] path: remove health_url and tcp"),
                    ));
                }
            }
            if proxy.is_some() {
                if let Some(v) = h.health_url.as_ref().or(h.tcp.as_ref()) {
                    return Err(self.at(
                        v,
                        format!("{key}: with [proxy] the new release is probed directly at [health] path: remove health_url and tcp"),
                    ));
                }
                if let (Some(p), Some(ports)) = (&proxy, &h.ports) {
                    self.proxy_ports(p, ports, &format!("{key}.ports"))?;
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
            let ports = match &h.ports {
                Some(ports) => unspanned(ports),
                None => container.ports.clone(),
            };
            let mut env = container.env.clone();
            env.extend(self.env(&format!("{key}.env"), &h.env, lookup)?);
            hosts.push(HostConfig {
                name: HostId(name.to_owned()),
                docker,
                health,
                ports,
                env,
                proxy: proxy.clone(),
                swarm: swarm.clone(),
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
                swarm: swarm.clone(),
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
            swarm,
            retain,
            hooks,
            notify,
            substituted: BTreeMap::new(),
            warnings,
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

    fn swarm(
        &self,
        raw: &Spanned<RawSwarm>,
        app: Option<&App>,
    ) -> Result<SwarmConfig, ConfigError> {
        let s = raw.get_ref();
        let name = |key: &str, v: &Spanned<String>| {
            let text = v.get_ref().trim();
            if text.parse::<rollback_core::ContainerName>().is_err() {
                return Err(self.at(v, format!("swarm.{key}: {text:?} is not a valid name")));
            }
            Ok(text.to_owned())
        };
        let service = match &s.service {
            Some(v) => name("service", v)?,
            None => match app {
                Some(app) => app.name.to_string(),
                None => {
                    return Err(self.at(raw, "swarm.service: needs a name, or [app] name"));
                }
            },
        };
        let network = match &s.network {
            Some(v) => name("network", v)?,
            None => format!("{service}-net"),
        };
        let count = |key: &str, v: &Option<Spanned<u64>>, default: u64| match v {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > 1000 => Err(self.at(
                n,
                format!("swarm.{key}: {} is not between 1 and 1000", n.get_ref()),
            )),
            Some(n) => Ok(*n.get_ref()),
            None => Ok(default),
        };
        let mut publish = Vec::new();
        for (i, p) in s.publish.iter().enumerate() {
            let text = p.get_ref().trim();
            let parsed = text
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)));
            match parsed {
                Some((a, b)) if a > 0 && b > 0 => publish.push((a, b)),
                _ => {
                    return Err(self.at(
                        p,
                        format!(
                        "swarm.publish[{i}]: {text:?} is not \"PUBLISHED:TARGET\" (\"8080:8080\")"
                    ),
                    ))
                }
            }
        }
        let probe_image = match &s.probe_image {
            Some(v) => {
                let text = v.get_ref().trim();
                if text.parse::<rollback_core::ImageRef>().is_err() {
                    return Err(self.at(
                        v,
                        format!("swarm.probe_image: {text:?} is not an image reference"),
                    ));
                }
                text.to_owned()
            }
            None => DEFAULT_PROBE_IMAGE.to_owned(),
        };
        Ok(SwarmConfig {
            service,
            replicas: count("replicas", &s.replicas, 1)?,
            network,
            port: s.port.get_ref().0,
            parallelism: count("parallelism", &s.parallelism, 1)?,
            publish,
            healthcheck: s.healthcheck.as_ref().map(|h| h.get_ref().clone()),
            probe_image,
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
        })
    }

    fn proxy(
        &self,
        raw: &Spanned<RawProxy>,
        dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<ProxyConfig, ConfigError> {
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
        let app_port = p.app_port.get_ref().0;
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
        let name = match &p.name {
            Some(n) => {
                let v = n.get_ref().trim();
                if v.parse::<rollback_core::ContainerName>().is_err() {
                    return Err(self.at(n, format!("proxy.name: {v:?} is not a container name")));
                }
                v.to_owned()
            }
            None => rollback_proxy::container::DEFAULT_NAME.to_owned(),
        };
        let tls = match &p.tls {
            Some(t) => Some(self.tls(p, t, host.as_deref(), dir, warnings)?),
            None => {
                // tls_listen stays: a plain HTTP app can share a proxy that
                // publishes HTTPS for the others, and may be the one booting it.
                let acme = [&p.acme_email, &p.acme_ca, &p.acme_ca_root];
                if let Some(v) = acme.into_iter().flatten().next() {
                    return Err(self.at(v, "proxy: this key applies with proxy.tls: set tls = \"acme\", \"internal\" or { cert, key }"));
                }
                None
            }
        };
        let tls_listen = match (&tls, &p.tls_listen) {
            (None, None) => None,
            (Some(_), None) => Some(DEFAULT_TLS_LISTEN.to_owned()),
            (_, Some(l)) => {
                let v = l.get_ref().trim();
                let port = |a: &str| {
                    format!("{a}:1")
                        .parse::<PortMapping>()
                        .ok()
                        .and_then(|m| m.host_port)
                };
                if v.is_empty() || v.contains('/') || port(v).is_none() {
                    return Err(self.at(l, format!("proxy.tls_listen: {v:?} is not a public address (\"443\", \"0.0.0.0:443\", \"127.0.0.1:18443\")")));
                }
                if port(v) == port(listen) {
                    return Err(self.at(l, format!("proxy.tls_listen: {v:?} uses the port of proxy.listen; HTTPS needs a port of its own")));
                }
                Some(v.to_owned())
            }
        };
        Ok(ProxyConfig {
            listen: listen.to_owned(),
            app_port,
            image,
            drain: p.drain.map(|d| d.0).unwrap_or(DEFAULT_DRAIN),
            host,
            name,
            tls_listen,
            tls,
        })
    }

    fn tls(
        &self,
        p: &RawProxy,
        raw: &Spanned<RawTls>,
        host: Option<&str>,
        dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<TlsConfig, ConfigError> {
        let Some(host) = host else {
            return Err(self.at(
                raw,
                "proxy.tls: needs proxy.host, the name the certificate is for",
            ));
        };
        let mode = match raw.get_ref() {
            RawTls::Mode(m) => m.as_str(),
            RawTls::Files(_) => "files",
        };
        if mode != "acme" {
            let acme = [&p.acme_email, &p.acme_ca, &p.acme_ca_root];
            if let Some(v) = acme.into_iter().flatten().next() {
                return Err(self.at(
                    v,
                    "proxy: acme_email, acme_ca and acme_ca_root apply with tls = \"acme\"",
                ));
            }
        }
        match raw.get_ref() {
            RawTls::Mode(m) if m == "acme" => {
                if host.contains('*') {
                    return Err(self.at(raw, format!("proxy.tls: an ACME HTTP challenge cannot prove the wildcard {host:?}: use tls = {{ cert, key }}")));
                }
                let email = match &p.acme_email {
                    Some(e) => {
                        let v = e.get_ref().trim();
                        let ok = v.split_once('@').is_some_and(|(user, domain)| {
                            !user.is_empty()
                                && domain.contains('.')
                                && !v.contains(char::is_whitespace)
                        });
                        if !ok {
                            return Err(self.at(
                                e,
                                format!("proxy.acme_email: {v:?} is not an email address"),
                            ));
                        }
                        Some(v.to_owned())
                    }
                    None => None,
                };
                let ca = match &p.acme_ca {
                    Some(c) => {
                        let v = self.url("proxy.acme_ca", c)?;
                        if !v.starts_with("https://") {
                            return Err(self.at(
                                c,
                                format!(
                                    "proxy.acme_ca: {v:?}: an ACME directory is an https:// URL"
                                ),
                            ));
                        }
                        Some(v)
                    }
                    None => None,
                };
                let ca_root = match &p.acme_ca_root {
                    Some(r) => {
                        let path = dir.join(r.get_ref());
                        let shown = path.display();
                        let pem = std::fs::read(&path).map_err(|e| {
                            self.at(
                                r,
                                format!("proxy.acme_ca_root: {shown}: cannot be read: {e}"),
                            )
                        })?;
                        if rollback_proxy::cert::inspect_pem(&pem).is_none() {
                            return Err(self.at(
                                r,
                                format!("proxy.acme_ca_root: {shown}: not a PEM certificate"),
                            ));
                        }
                        Some(String::from_utf8_lossy(&pem).into_owned())
                    }
                    None => None,
                };
                Ok(TlsConfig::Acme { email, ca, ca_root })
            }
            RawTls::Mode(m) if m == "internal" => Ok(TlsConfig::Internal),
            RawTls::Mode(m) => Err(self.at(
                raw,
                format!("proxy.tls: {m:?} is not one of \"acme\", \"internal\" or {{ cert, key }}"),
            )),
            RawTls::Files(f) => {
                let cert = dir.join(&f.cert);
                let key = dir.join(&f.key);
                let files = rollback_proxy::cert::check_files(
                    &cert,
                    &key,
                    host,
                    std::time::SystemTime::now(),
                )
                .map_err(|e| self.at(raw, format!("proxy.tls: {e}")))?;
                warnings.extend(files.warnings.iter().cloned());
                Ok(TlsConfig::Files(TlsFiles {
                    cert,
                    key,
                    key_pem: Secret::new(files.key_pem.clone()),
                    cert_pem: files.cert_pem.clone(),
                    info: files.info.clone(),
                }))
            }
        }
    }

    /// The proxy owns the public address and the app's port: no port
    /// mapping of the app's container may publish either.
    fn proxy_ports(
        &self,
        proxy: &ProxyConfig,
        ports: &[Spanned<PortMapping>],
        key: &str,
    ) -> Result<(), ConfigError> {
        let public = format!("{}:1", proxy.listen)
            .parse::<PortMapping>()
            .ok()
            .and_then(|m| m.host_port);
        for (i, entry) in ports.iter().enumerate() {
            let m = entry.get_ref();
            let why = if m.container_port == proxy.app_port {
                format!("publishes proxy.app_port {}", proxy.app_port)
            } else if m.host_port.is_some() && m.host_port == public {
                format!("publishes proxy.listen {:?}", proxy.listen)
            } else {
                continue;
            };
            return Err(self.at(
                entry,
                format!(
                    "{key}[{i}]: {why}: with [proxy] the proxy publishes the app, remove the entry"
                ),
            ));
        }
        Ok(())
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
            ports: unspanned(&c.ports),
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
        let memory = c.memory.map(|m| m.0);
        let nano_cpus = c.cpus.map(|c| c.0);
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
            if mode.joins_no_other() {
                let mode = &mode.0;
                return Err(self.at(
                    first,
                    format!("container.networks: a container with network = {mode:?} cannot join other networks"),
                ));
            }
            let mode = &mode.0;
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
        let exec = h.exec.as_ref().map(|e| e.0.clone());
        let mut chosen = Vec::new();
        if h.http.is_some() {
            chosen.push("http");
        }
        if let Some(p) = &h.path {
            if proxy_port.is_none() {
                return Err(self.at(
                    p,
                    "health.path: applies with [proxy] or [swarm] (the new release is probed directly); without them set health.http",
                ));
            }
            chosen.push("path");
        }
        if proxy_port.is_some() {
            if let Some(v) = h.http.as_ref().or(h.tcp.as_ref()) {
                return Err(self.at(
                    v,
                    "health: with [proxy] or [swarm] the new release is probed directly: set health.path (or docker = true with [proxy]) instead of http or tcp",
                ));
            }
        }
        if h.tcp.is_some() {
            chosen.push("tcp");
        }
        if h.docker.is_some() {
            chosen.push("docker");
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
        let expect_status = h.expect_status.as_ref().map(|s| s.get_ref().0);
        let expect_json = match (&h.json_pointer, &h.expect) {
            (Some(p), Some(e)) => Some((p.get_ref().0.clone(), e.get_ref().clone())),
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
                path: path.get_ref().0.clone(),
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
        let batch = r.batch.as_ref().map_or(1, |b| b.get_ref().0);
        RolloutPolicy::new(batch, on_failure)
            .map_err(|e| self.err(r.batch.as_ref().map(|b| b.span()), e.to_string()))
    }
}

/// The answer expected from an HTTP check, shared by hosts that give their own URL.
pub(super) struct HttpExpect {
    expect_status: Option<u16>,
    expect_json: Option<(String, String)>,
}

pub(super) enum InterpolationError {
    Missing(String),
    Malformed,
}

/// Replace every `${NAME}` in `value`; any reference makes the value a secret.
pub(super) fn interpolate(
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

/// The values of `entries`, without their place in the file.
fn unspanned<T: Clone>(entries: &[Spanned<T>]) -> Vec<T> {
    entries.iter().map(|e| e.get_ref().clone()).collect()
}

/// A key path as the config writes it (`hosts[1].ports[0]`), without the
/// fields toml uses internally to carry spans.
pub(super) fn key_path(path: &serde_path_to_error::Path) -> String {
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
pub(super) fn table_name(path: &serde_path_to_error::Path) -> String {
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

pub(super) fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The tasks' HEALTHCHECK when `[swarm] healthcheck` is not set: Swarm adds
/// a task to the service's DNS only once it passes, so no request reaches a
/// task before it answers at `[health] path` (with the expected value in
/// its body, when `[health] expect` names one). Needs `wget` and `sh` in
/// the image; `healthcheck = []` keeps the image's own.
fn default_healthcheck(port: u16, path: &str, expect: Option<&(String, String)>) -> Vec<String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    match expect {
        Some((_, value)) => {
            let quoted = value.replace('\'', "'\\''");
            vec![
                "CMD-SHELL".into(),
                format!("wget -q -O - '{url}' | grep -qF '{quoted}'"),
            ]
        }
        None => ["CMD", "wget", "-q", "-O", "/dev/null", &url]
            .map(String::from)
            .to_vec(),
    }
}
