//! Values are read into their core types (ports, tags, repositories, restart
//! and failure policies) or into the small checked types below, so that a bad
//! value is reported by the deserializer with its path (`hosts[1].ports[0]`)
//! and line. A new key is one field here, plus a check in `validate` when it
//! depends on other keys.

use std::collections::BTreeMap;
use std::time::Duration;

use rollback_core::{ContainerName, OnFailure, PortMapping, Repository, RestartPolicy, Tag};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::schema;
use super::types::{
    Batch, Cpus, DockerCheck, EngineUrl, ExecCommand, HostName, HttpStatus, JsonPointer,
    MemoryLimit, NetworkMode, Port, RetainCount, UrlPath,
};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[schemars(with = "Option<RawApp>")]
    pub(super) app: Option<Spanned<RawApp>>,
    #[serde(default)]
    pub(super) container: RawContainer,
    #[schemars(with = "Option<RawHealth>")]
    pub(super) health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    pub(super) rollout: RawRollout,
    #[serde(default)]
    #[schemars(with = "Vec<RawHost>")]
    pub(super) hosts: Vec<Spanned<RawHost>>,
    #[schemars(with = "Option<RawProxy>")]
    pub(super) proxy: Option<Spanned<RawProxy>>,
    #[schemars(with = "Option<RawSwarm>")]
    pub(super) swarm: Option<Spanned<RawSwarm>>,
    #[serde(default)]
    pub(super) hooks: RawHooks,
    #[serde(default)]
    pub(super) notify: RawNotify,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Hooks")]
pub(super) struct RawHooks {
    #[schemars(with = "Option<schema::Command>")]
    pub(super) pre_deploy: Option<Spanned<String>>,
    #[schemars(with = "Option<schema::Command>")]
    pub(super) post_deploy: Option<Spanned<String>>,
    #[schemars(with = "Option<HumanDuration>")]
    pub(super) timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Notify")]
pub(super) struct RawNotify {
    #[schemars(with = "Option<schema::HttpUrl>")]
    pub(super) webhook: Option<Spanned<String>>,
    #[schemars(with = "Option<HumanDuration>")]
    pub(super) timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Args")]
pub(super) enum RawArgs {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Proxy")]
pub(super) struct RawProxy {
    #[schemars(with = "schema::Listen")]
    pub(super) listen: Spanned<String>,
    #[schemars(with = "Port")]
    pub(super) app_port: Spanned<Port>,
    #[schemars(with = "Option<String>")]
    pub(super) image: Option<Spanned<String>>,
    pub(super) drain: Option<HumanDuration>,
    #[schemars(with = "Option<String>")]
    pub(super) host: Option<Spanned<String>>,
    #[schemars(with = "Option<schema::ContainerName>")]
    pub(super) name: Option<Spanned<String>>,
    #[schemars(with = "Option<schema::Listen>")]
    pub(super) tls_listen: Option<Spanned<String>>,
    #[schemars(with = "Option<RawTls>")]
    pub(super) tls: Option<Spanned<RawTls>>,
    #[schemars(with = "Option<String>")]
    pub(super) acme_email: Option<Spanned<String>>,
    #[schemars(with = "Option<schema::HttpUrl>")]
    pub(super) acme_ca: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub(super) acme_ca_root: Option<Spanned<String>>,
}

/// `[swarm]`: every host is a Swarm manager and the app is a service.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Swarm")]
pub(super) struct RawSwarm {
    #[schemars(with = "Option<schema::ContainerName>")]
    pub(super) service: Option<Spanned<String>>,
    #[schemars(with = "Option<u32>")]
    pub(super) replicas: Option<Spanned<u64>>,
    #[schemars(with = "Option<schema::ContainerName>")]
    pub(super) network: Option<Spanned<String>>,
    #[schemars(with = "Port")]
    pub(super) port: Spanned<Port>,
    #[schemars(with = "Option<u32>")]
    pub(super) parallelism: Option<Spanned<u64>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) publish: Vec<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) healthcheck: Option<Spanned<Vec<String>>>,
    #[schemars(with = "Option<String>")]
    pub(super) probe_image: Option<Spanned<String>>,
}

/// `[proxy] tls`: `"acme"`, `"internal"`, or `{ cert, key }` files.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Tls")]
pub(super) enum RawTls {
    #[schemars(with = "schema::TlsMode")]
    Mode(String),
    Files(RawTlsFiles),
}

// By hand rather than untagged: a table missing `key` is reported as such,
// not as "did not match any variant".
impl<'de> Deserialize<'de> for RawTls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawTls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"acme\", \"internal\" or { cert = \"...\", key = \"...\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawTls, E> {
                Ok(RawTls::Mode(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawTls, A::Error> {
                RawTlsFiles::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawTls::Files)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TlsFiles")]
pub(super) struct RawTlsFiles {
    /// The certificate chain (PEM), leaf first, where rollback runs.
    pub(super) cert: String,
    /// Its private key (PEM), where rollback runs.
    pub(super) key: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "App")]
pub(super) struct RawApp {
    #[schemars(with = "schema::ContainerName")]
    pub(super) name: ContainerName,
    #[schemars(with = "schema::Repository")]
    pub(super) repository: Repository,
    #[schemars(with = "Option<schema::Tag>")]
    pub(super) stable_tag: Option<Spanned<Tag>>,
    #[schemars(with = "Option<schema::Tag>")]
    pub(super) previous_tag: Option<Spanned<Tag>>,
    pub(super) retain: Option<RetainCount>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Container")]
pub(super) struct RawContainer {
    #[serde(default)]
    #[schemars(with = "Vec<schema::PortMapping>")]
    pub(super) ports: Vec<Spanned<PortMapping>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawEnvValue>")]
    pub(super) env: BTreeMap<String, Spanned<RawEnvValue>>,
    #[serde(default)]
    pub(super) volumes: Vec<NonEmpty>,
    pub(super) platform: Option<Platform>,
    pub(super) network: Option<NetworkMode>,
    #[schemars(with = "Option<schema::RestartPolicy>")]
    pub(super) restart: Option<RestartPolicy>,
    #[serde(default)]
    pub(super) command: Vec<String>,
    pub(super) stop_timeout: Option<HumanDuration>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(super) labels: BTreeMap<String, Spanned<String>>,
    pub(super) memory: Option<MemoryLimit>,
    pub(super) cpus: Option<Cpus>,
    #[schemars(with = "Option<String>")]
    pub(super) user: Option<Spanned<String>>,
    #[schemars(with = "Option<RawArgs>")]
    pub(super) entrypoint: Option<Spanned<RawArgs>>,
    #[schemars(with = "Option<String>")]
    pub(super) hostname: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) add_hosts: Vec<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub(super) log_driver: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(super) log_options: BTreeMap<String, Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub(super) env_file: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) networks: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) cap_add: Vec<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "EnvValue")]
pub(super) enum RawEnvValue {
    String(String),
    Integer(i64),
    Bool(bool),
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Health")]
pub(super) struct RawHealth {
    #[schemars(with = "Option<schema::HttpUrl>")]
    pub(super) http: Option<Spanned<String>>,
    #[schemars(with = "Option<UrlPath>")]
    pub(super) path: Option<Spanned<UrlPath>>,
    #[schemars(with = "Option<String>")]
    pub(super) tcp: Option<Spanned<String>>,
    #[schemars(with = "Option<DockerCheck>")]
    pub(super) docker: Option<Spanned<DockerCheck>>,
    pub(super) exec: Option<ExecCommand>,
    #[schemars(with = "Option<HttpStatus>")]
    pub(super) expect_status: Option<Spanned<HttpStatus>>,
    #[schemars(with = "Option<JsonPointer>")]
    pub(super) json_pointer: Option<Spanned<JsonPointer>>,
    #[schemars(with = "Option<String>")]
    pub(super) expect: Option<Spanned<String>>,
    #[schemars(with = "Option<HumanDuration>")]
    pub(super) interval: Option<Spanned<HumanDuration>>,
    #[schemars(with = "Option<HumanDuration>")]
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    #[schemars(with = "Option<HumanDuration>")]
    pub(super) start_period: Option<Spanned<HumanDuration>>,
    #[schemars(with = "Option<HumanDuration>")]
    pub(super) deadline: Option<Spanned<HumanDuration>>,
    #[schemars(with = "Option<HumanDuration>")]
    pub(super) stable_for: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rollout")]
pub(super) struct RawRollout {
    #[schemars(with = "Option<Batch>")]
    pub(super) batch: Option<Spanned<Batch>>,
    #[serde(default)]
    #[schemars(with = "schema::OnFailure")]
    pub(super) on_failure: OnFailure,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Host")]
pub(super) struct RawHost {
    #[schemars(with = "HostName")]
    pub(super) name: Spanned<HostName>,
    pub(super) docker: Option<EngineUrl>,
    #[schemars(with = "Option<schema::HttpUrl>")]
    pub(super) health_url: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub(super) tcp: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<schema::PortMapping>>")]
    pub(super) ports: Option<Vec<Spanned<PortMapping>>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawEnvValue>")]
    pub(super) env: BTreeMap<String, Spanned<RawEnvValue>>,
}

/// A duration written as humans do (`"6s"`, `"1m 30s"`).
#[derive(Debug, Clone, Copy)]
pub(super) struct HumanDuration(pub(super) Duration);

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
pub(super) struct NonEmpty(pub(super) String);

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
pub(super) struct Platform(pub(super) String);

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
