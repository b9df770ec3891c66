//! Domain types: digests, image references, releases, container specs and states.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A content digest, always `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest as `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, for human output.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// Build a digest from the 64 hex digits of a sha256 sum.
    pub fn from_sha256_hex(hex: &str) -> Result<Self, Error> {
        format!("sha256:{hex}").parse()
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            Error::invalid_input(format!(
                "invalid digest {s:?}: expected sha256:<64 hex digits>"
            ))
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid_input(format!(
                "invalid digest {s:?}: expected sha256:<64 lowercase hex digits>"
            )));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Digest> for String {
    fn from(value: Digest) -> Self {
        value.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

/// A full image reference (`registry/repository[:tag][@digest]`).
///
/// Parsing follows the distribution grammar (lowercase path components
/// joined by `.`, `_`, `__` or dashes, tags of at most 128 word characters,
/// Docker Hub names normalised to `docker.io/library/...`, `latest` when
/// neither tag nor digest is given) but is written out by hand: the
/// grammar's regular expression costs more to compile than a whole
/// `rollback tag` spends talking to the registry. A test checks it against
/// `oci_spec::distribution::Reference`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<Tag>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// The registry host as written (`docker.io` for Docker Hub names).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to speak to (`index.docker.io` for Docker Hub).
    pub fn resolve_registry(&self) -> &str {
        match self.registry.as_str() {
            DOCKER_HUB => "index.docker.io",
            registry => registry,
        }
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<Digest> {
        self.digest.clone()
    }

    /// The repository this reference belongs to.
    pub fn repo(&self) -> Repository {
        Repository {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
        }
    }
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ParsedRef::parse(s)?.into_image_ref())
    }
}

/// The pieces of a reference string, before defaults are applied.
struct ParsedRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

const DOCKER_HUB: &str = "docker.io";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;
const TAG_RULE: &str =
    "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'";

impl ParsedRef {
    fn parse(s: &str) -> Result<Self, Error> {
        let invalid =
            |why: &str| Error::invalid_input(format!("invalid image reference {s:?}: {why}"));
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (s, None),
        };
        let digest = match digest {
            Some(d) => Some(d.parse::<Digest>().map_err(|e| invalid(e.message()))?),
            None => None,
        };
        // A colon after the last slash starts the tag; one before it is a port.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(invalid(TAG_RULE));
            }
        }
        let (mut registry, mut repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_domain(first) {
                    return Err(invalid(&format!(
                        "{first:?} is not a valid registry host[:port]"
                    )));
                }
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(invalid(
                "repository path components are lowercase letters and digits joined by '.', '_', '__' or dashes",
            ));
        }
        if registry == "index.docker.io" {
            registry = DOCKER_HUB.to_owned();
        }
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if repository.len() > NAME_MAX {
            return Err(invalid(&format!(
                "repository longer than {NAME_MAX} characters"
            )));
        }
        Ok(ParsedRef {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    fn into_image_ref(self) -> ImageRef {
        let tag = match (self.tag, &self.digest) {
            (Some(tag), _) => Some(Tag(tag)),
            (None, Some(_)) => None,
            (None, None) => Some(Tag("latest".to_owned())),
        };
        ImageRef {
            registry: self.registry,
            repository: self.repository,
            tag,
            digest: self.digest,
        }
    }
}

fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `host[.host...][:port]`, each label alphanumeric with inner dashes.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of dashes.
fn valid_path_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        if !(matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

impl TryFrom<String> for ImageRef {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ImageRef> for String {
    fn from(value: ImageRef) -> Self {
        value.to_string()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

/// An image repository without tag or digest (`127.0.0.1:5000/team/app`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Repository {
    registry: String,
    repository: String,
}

impl Repository {
    /// The registry host as written.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry.
    pub fn path(&self) -> &str {
        &self.repository
    }

    /// `repository:tag`.
    pub fn with_tag(&self, tag: &Tag) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.clone()),
            digest: None,
        }
    }

    /// `repository@digest`.
    pub fn with_digest(&self, digest: &Digest) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.clone()),
        }
    }
}

impl FromStr for Repository {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = ParsedRef::parse(s)?;
        if parsed.digest.is_some() || parsed.tag.is_some() {
            return Err(Error::invalid_input(format!(
                "invalid repository {s:?}: a repository has no tag or digest"
            )));
        }
        Ok(Repository {
            registry: parsed.registry,
            repository: parsed.repository,
        })
    }
}

impl TryFrom<String> for Repository {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Repository> for String {
    fn from(value: Repository) -> Self {
        value.to_string()
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

impl fmt::Debug for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Repository({self})")
    }
}

/// A release: an image pinned by digest, with the tag it was deployed as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Release {
    /// The image repository.
    pub repository: Repository,
    /// The tag the release was deployed as, when known.
    pub tag: Option<Tag>,
    /// The manifest digest that pins it.
    pub digest: Digest,
}

impl Release {
    /// The release `repository@digest`, its tag unknown.
    pub fn new(repository: Repository, digest: Digest) -> Self {
        Self {
            repository,
            tag: None,
            digest,
        }
    }

    /// The same release, recorded as deployed under `tag`.
    pub fn with_tag(mut self, tag: impl Into<Option<Tag>>) -> Self {
        self.tag = tag.into();
        self
    }

    /// `repository@digest`: what is pulled and run.
    pub fn image(&self) -> ImageRef {
        self.repository.with_digest(&self.digest)
    }

    /// `tag (sha256:0123456789ab)` or just the short digest.
    pub fn display_name(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{tag} ({})", self.digest.short()),
            None => format!("sha256:{}", self.digest.short()),
        }
    }
}

/// A validated string: parsed with `FromStr`, read through `Deref<Target = str>`.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, Error> {
                let value = value.into();
                let check: fn(&str) -> Result<(), Error> = $check;
                check(&value)?;
                Ok(Self(value))
            }

            /// The value as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_name!(
    /// An image tag: 1 to 128 letters, digits, `_`, `.` or `-`, not starting
    /// with `.` or `-` (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
    Tag,
    |s| {
        if valid_tag(s) {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "{s:?} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
            )))
        }
    }
);

checked_name!(
    /// A container name as the engine accepts it: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    /// The app's name is one, and so are the names derived from it.
    ContainerName,
    |s| {
        let mut chars = s.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "{s:?} is not a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"
            )))
        }
    }
);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }
    };
}

string_id!(
    /// The name of a host of the fleet (`prod-a`).
    HostId
);
string_id!(
    /// The id of one deploy run, recorded in locks and container labels.
    DeploymentId
);
string_id!(
    /// A container id as the engine knows it.
    ContainerId
);

/// What runs a release on a host, as a deploy's states hold it: a
/// container, or a service at a spec version (an orchestrator such as
/// Swarm, where the tasks come and go and the service is what a deploy
/// changes).
///
/// Serialized as the container id (a string), or as
/// `{"service": NAME, "version": N}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Workload {
    /// A container of the engine.
    Container(ContainerId),
    /// A service, at the version index of its spec.
    Service {
        /// The service's name.
        service: String,
        /// The version index of the spec, as read or written; 0 when not
        /// known (a spec named by the labels of the one that replaced it).
        version: u64,
        /// The image reference the spec runs (`repo:tag@sha256:...`): its
        /// tasks are the ones that run it.
        image: String,
    },
}

impl Workload {
    /// A service at the version index of its spec, running `image`.
    pub fn service(name: impl Into<String>, version: u64, image: impl Into<String>) -> Self {
        Workload::Service {
            service: name.into(),
            version,
            image: image.into(),
        }
    }

    /// The container, when the workload is one.
    pub fn container(&self) -> Option<&ContainerId> {
        match self {
            Workload::Container(id) => Some(id),
            Workload::Service { .. } => None,
        }
    }

    /// The container, or an error naming what the workload is instead:
    /// for effects that only work on containers.
    pub fn expect_container(&self) -> Result<&ContainerId, crate::Error> {
        self.container()
            .ok_or_else(|| crate::Error::invalid_input(format!("{self} is not a container")))
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Container(id) => f.write_str(id.as_str()),
            Workload::Service {
                service,
                version: 0,
                ..
            } => write!(f, "service {service}"),
            Workload::Service {
                service, version, ..
            } => write!(f, "service {service} (version {version})"),
        }
    }
}

impl From<ContainerId> for Workload {
    fn from(id: ContainerId) -> Self {
        Workload::Container(id)
    }
}

impl From<&ContainerId> for Workload {
    fn from(id: &ContainerId) -> Self {
        Workload::Container(id.clone())
    }
}

impl From<&str> for Workload {
    fn from(id: &str) -> Self {
        Workload::Container(ContainerId::from(id))
    }
}

impl PartialEq<ContainerId> for Workload {
    fn eq(&self, other: &ContainerId) -> bool {
        self.container() == Some(other)
    }
}

impl DeploymentId {
    /// A new id, unique enough across processes and hosts: time and pid.
    pub fn generate() -> Self {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        DeploymentId(format!(
            "d{}{:06x}{:04x}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id() & 0xffff
        ))
    }
}

/// A secret value: shown as `***` by `Debug`, `Display` and serde.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value; only for handing to the engine.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// An environment value: plain, or a secret that never appears in output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// Shown as is.
    Plain(String),
    /// Interpolated from the caller's environment; shown as `***`.
    Secret(Secret),
}

impl EnvValue {
    /// The value to hand to the engine.
    pub fn expose(&self) -> &str {
        match self {
            EnvValue::Plain(v) => v,
            EnvValue::Secret(s) => s.expose(),
        }
    }

    /// Whether the value is a secret.
    pub fn is_secret(&self) -> bool {
        matches!(self, EnvValue::Secret(_))
    }
}

/// A published port in `docker run -p` syntax:
/// `[ip:][host_port:]container_port[/protocol]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortMapping {
    /// Host address to bind, all addresses when `None`.
    pub host_ip: Option<IpAddr>,
    /// Host port, an ephemeral one when `None`.
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl FromStr for PortMapping {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| Error::invalid_input(format!("invalid port mapping {s:?}: {why}"));
        let (rest, protocol) = match s.rsplit_once('/') {
            Some((rest, proto)) if proto == "tcp" || proto == "udp" => (rest, proto.to_owned()),
            Some(_) => return Err(bad("protocol must be tcp or udp")),
            None => (s, "tcp".to_owned()),
        };
        let port = |p: &str, what: &str| -> Result<u16, Error> {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("{what} {p:?} is not a port number (1-65535)")))
        };
        // An IPv6 host address is written in brackets: [::1]:8080:80
        let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
            let (ip, rest) = after
                .split_once("]:")
                .ok_or_else(|| bad("unterminated [ipv6] address"))?;
            let ip: IpAddr = ip.parse().map_err(|_| bad("invalid ip address"))?;
            (Some(ip), rest)
        } else {
            let parts: Vec<&str> = rest.split(':').collect();
            if parts.len() == 3 {
                let ip: IpAddr = parts[0].parse().map_err(|_| bad("invalid ip address"))?;
                (Some(ip), &rest[parts[0].len() + 1..])
            } else {
                (None, rest)
            }
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_port, container_port) = match parts.as_slice() {
            [c] if host_ip.is_none() => (None, port(c, "container port")?),
            ["", c] => (None, port(c, "container port")?),
            [h, c] => (Some(port(h, "host port")?), port(c, "container port")?),
            _ => return Err(bad("expected [ip:][host_port:]container_port[/protocol]")),
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
}

impl TryFrom<String> for PortMapping {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<PortMapping> for String {
    fn from(value: PortMapping) -> Self {
        value.to_string()
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        match self.host_port {
            Some(p) => write!(f, "{p}:")?,
            None if self.host_ip.is_some() => f.write_str(":")?,
            None => {}
        }
        write!(f, "{}", self.container_port)?;
        if self.protocol != "tcp" {
            write!(f, "/{}", self.protocol)?;
        }
        Ok(())
    }
}

/// Docker restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (`no`).
    No,
    /// `always`.
    Always,
    /// `unless-stopped`.
    UnlessStopped,
    /// `on-failure`.
    OnFailure,
}

impl FromStr for RestartPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            _ => Err(Error::invalid_input(format!(
                "invalid restart policy {s:?}: expected no, always, unless-stopped or on-failure"
            ))),
        }
    }
}

/// Read through `FromStr`, so a config names the accepted values.
impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl RestartPolicy {
    /// The engine's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        }
    }
}

/// How the app's container is run on a host, apart from its name and image,
/// which the engine decides at deploy time (the app's name, the release's
/// digest).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ContainerTemplate {
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Environment, in order; secret values are marked.
    pub env: Vec<(String, EnvValue)>,
    /// Bind mounts and volumes in `docker run -v` syntax.
    pub volumes: Vec<String>,
    /// Platform such as `linux/arm64`.
    pub platform: Option<String>,
    /// Network mode or network name.
    pub network: Option<String>,
    /// Restart policy.
    pub restart: Option<RestartPolicy>,
    /// Arguments given to the image's entrypoint, replacing its `CMD`.
    pub command: Vec<String>,
    /// Labels; the release labels of [`labels`] are added by the engine.
    pub labels: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Option<Duration>,
    /// Namespaced kernel parameters (`docker run --sysctl`).
    pub sysctls: BTreeMap<String, String>,
    /// The other `docker run` options.
    pub options: RunOptions,
}

impl ContainerTemplate {
    /// A container with no ports, env, volumes or options: the image's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publish `port`.
    pub fn port(mut self, port: PortMapping) -> Self {
        self.ports.push(port);
        self
    }

    /// Set the environment variable `name`.
    pub fn env(mut self, name: impl Into<String>, value: EnvValue) -> Self {
        self.env.push((name.into(), value));
        self
    }

    /// Mount `volume` (`docker run -v` syntax).
    pub fn volume(mut self, volume: impl Into<String>) -> Self {
        self.volumes.push(volume.into());
        self
    }

    /// Run the image for `platform` (`linux/arm64`).
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = Some(platform.into());
        self
    }

    /// Attach to `network` (a mode such as `host` or a network name).
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// Let the engine restart the container by `restart`.
    pub fn restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = Some(restart);
        self
    }

    /// Replace the image's `CMD` by `command`.
    pub fn command(mut self, command: Vec<String>) -> Self {
        self.command = command;
        self
    }

    /// Add the label `key=value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Wait `stop_timeout` between SIGTERM and SIGKILL.
    pub fn stop_timeout(mut self, stop_timeout: Duration) -> Self {
        self.stop_timeout = Some(stop_timeout);
        self
    }

    /// Set the namespaced kernel parameter `key` to `value` in the container.
    pub fn sysctl(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.sysctls.insert(key.into(), value.into());
        self
    }

    /// The other `docker run` options (limits, user, entrypoint, logging, ...).
    pub fn options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }
}

/// Everything needed to create one container: a [`ContainerTemplate`] with
/// its name and image. The engine builds it; runtimes read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// The image, pinned by digest (`repo@sha256:...`).
    pub image: ImageRef,
    /// Everything else, as the host's template says; its fields read
    /// through the spec (`spec.ports`).
    #[serde(flatten)]
    pub template: ContainerTemplate,
}

impl std::ops::Deref for ContainerSpec {
    type Target = ContainerTemplate;

    fn deref(&self) -> &ContainerTemplate {
        &self.template
    }
}

impl std::ops::DerefMut for ContainerSpec {
    fn deref_mut(&mut self) -> &mut ContainerTemplate {
        &mut self.template
    }
}

/// The `docker run` options beyond ports, env, volumes and the restart
/// policy; each empty or `None` means the engine's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunOptions {
    /// Memory limit in bytes (`--memory`).
    pub memory: Option<u64>,
    /// CPU limit in billionths of a CPU (`--cpus 1.5` is 1_500_000_000).
    pub nano_cpus: Option<u64>,
    /// User and optional group to run as (`--user 1000:1000`).
    pub user: Option<String>,
    /// Replaces the image's `ENTRYPOINT`; an empty list clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Host name inside the container (`--hostname`).
    pub hostname: Option<String>,
    /// Extra `/etc/hosts` entries as `name:ip` (`--add-host`).
    pub add_hosts: Vec<String>,
    /// Logging driver (`--log-driver`).
    pub log_driver: Option<String>,
    /// Options of the logging driver (`--log-opt key=value`).
    pub log_options: BTreeMap<String, String>,
    /// Networks joined besides the main one (`docker network connect`).
    pub networks: Vec<String>,
    /// Kernel capabilities added (`--cap-add`).
    pub cap_add: Vec<String>,
}

impl ContainerSpec {
    /// The container `name` running `image` as `template` says.
    pub fn new(name: impl Into<String>, image: ImageRef, template: ContainerTemplate) -> Self {
        Self {
            name: name.into(),
            image,
            template,
        }
    }
}

/// Health as reported by a Docker `HEALTHCHECK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Within the healthcheck's start period.
    Starting,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
}

/// Run state of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running, with the `HEALTHCHECK` status when the image has one.
    Running {
        /// Docker health status, if the image defines a healthcheck.
        health: Option<HealthStatus>,
    },
    /// The engine is restarting it after an exit.
    Restarting,
    /// Exited.
    Exited {
        /// Exit code.
        code: i64,
    },
    /// Paused.
    Paused,
    /// Dead or being removed.
    Dead,
}

impl ContainerState {
    /// Whether the container is up.
    pub fn is_running(&self) -> bool {
        matches!(self, ContainerState::Running { .. })
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerState::Created => f.write_str("created"),
            ContainerState::Running { health: None } => f.write_str("running"),
            ContainerState::Running { health: Some(h) } => {
                write!(f, "running ({})", format!("{h:?}").to_lowercase())
            }
            ContainerState::Restarting => f.write_str("restarting"),
            ContainerState::Exited { code } => write!(f, "exited with code {code}"),
            ContainerState::Paused => f.write_str("paused"),
            ContainerState::Dead => f.write_str("dead"),
        }
    }
}

/// What the engine knows about one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Container id.
    pub id: ContainerId,
    /// Container name without the leading `/`.
    pub name: String,
    /// Local image id.
    pub image_id: String,
    /// The release recorded in its labels, or derived from its repo digest.
    pub release: Option<Release>,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// Run state.
    pub state: ContainerState,
    /// How often the engine restarted it.
    pub restart_count: u64,
    /// When it was last started, if ever.
    pub started_at: Option<SystemTime>,
}

impl ContainerInfo {
    /// The deployment that created this container, from its labels.
    pub fn deployment(&self) -> Option<DeploymentId> {
        self.labels
            .get(labels::DEPLOYMENT)
            .map(|d| DeploymentId(d.clone()))
    }
}

/// Something that stops a running container from counting as a live release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum ContainerExit {
    /// The process exited.
    Exited {
        /// Exit code.
        code: i64,
    },
    /// The engine restarted it (it exited and came back).
    Restarted {
        /// Restart count after the restart.
        restart_count: u64,
    },
    /// The container was removed or killed from outside.
    Gone,
    /// A workload that is not one container failed, as its strategy tells
    /// (a service's task failed or was rejected, the service was changed
    /// by someone else).
    Failed {
        /// What happened, for people.
        reason: String,
    },
}

impl fmt::Display for ContainerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerExit::Exited { code } => write!(f, "container exited with code {code}"),
            ContainerExit::Restarted { restart_count } => {
                write!(f, "container restarted (restart count {restart_count})")
            }
            ContainerExit::Gone => f.write_str("container disappeared"),
            ContainerExit::Failed { reason } => f.write_str(reason),
        }
    }
}

/// The record of a per-host deploy lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The app the lock is for.
    pub app: String,
    /// Deployment that holds it.
    pub deployment: DeploymentId,
    /// Who holds it (`user@machine pid N`).
    pub holder: String,
    /// What is being deployed (a tag or digest).
    pub target: String,
    /// When it was taken; RFC 3339 in serde formats.
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
}

/// A time as RFC 3339 text (`2024-05-01T12:00:00Z`), as people and `jq` read it.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deployment {} of {} by {} since {}",
            self.deployment,
            self.target,
            self.holder,
            humantime::format_rfc3339_seconds(self.started_at)
        )
    }
}

/// The answer to a lock request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum LockAttempt {
    /// The lock is ours.
    Acquired,
    /// Someone else holds it.
    Held(LockInfo),
}

/// Progress of a pull, as layer counts and bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    /// Layers known so far.
    pub layers_total: u32,
    /// Layers downloaded (or already present).
    pub layers_done: u32,
    /// Bytes downloaded so far.
    pub bytes_done: u64,
    /// Bytes to download, as far as known.
    pub bytes_total: u64,
}

/// Where a pull reports progress; called often, must return quickly.
pub type ProgressSink = std::sync::Arc<dyn Fn(PullProgress) + Send + Sync>;

/// The container labels that record a release, so the engine alone tells what runs.
pub mod labels {
    /// On every container rollback creates, the lock included; value
    /// `true`. One prune filter (`label!=io.rollback.managed`) spares them
    /// all, the stopped kept container and the never-started lock among them.
    pub const MANAGED: &str = "io.rollback.managed";
    /// Marks every app container managed by rollback; value: the app name.
    pub const APP: &str = "io.rollback.app";
    /// Image repository of the release.
    pub const REPOSITORY: &str = "io.rollback.release.repository";
    /// Tag the release was deployed as.
    pub const TAG: &str = "io.rollback.release.tag";
    /// Manifest digest of the release.
    pub const DIGEST: &str = "io.rollback.release.digest";
    /// Deployment that created the container.
    pub const DEPLOYMENT: &str = "io.rollback.deployment";
    /// RFC 3339 time of creation by the deployment.
    pub const DEPLOYED_AT: &str = "io.rollback.deployed-at";
    /// Digest the stable tag had when the deployment began (for promotion on recovery).
    pub const STABLE_BEFORE: &str = "io.rollback.stable-before";
    /// Digest of the release this container replaced on its host.
    pub const REPLACED_DIGEST: &str = "io.rollback.replaced.digest";
    /// Tag the replaced release had been deployed as, so that `undo` can
    /// name it again.
    pub const REPLACED_TAG: &str = "io.rollback.replaced.tag";
}

/// The name a retained (stopped, kept) container gets during a deploy.
pub fn retained_name(app: &str) -> String {
    format!("{app}--rollback-previous")
}

/// The name of a start-first deploy's new container while it runs beside
/// the old one; it takes the app name once the old one is gone.
pub fn next_name(app: &str) -> String {
    format!("{app}--rollback-next")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_validates() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(ok.parse::<Digest>().unwrap().as_str(), ok);
        for bad in [
            "sha256:abc",
            "md5:aaaa",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}g", "a".repeat(63)),
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn repository_rejects_tags_and_digests() {
        let repo: Repository = "127.0.0.1:5000/team/ody".parse().unwrap();
        assert_eq!(repo.registry(), "127.0.0.1:5000");
        assert_eq!(repo.path(), "team/ody");
        assert_eq!(repo.to_string(), "127.0.0.1:5000/team/ody");
        assert!("127.0.0.1:5000/team/ody:latest"
            .parse::<Repository>()
            .is_err());
        let d = format!("127.0.0.1:5000/team/ody@sha256:{}", "b".repeat(64));
        assert!(d.parse::<Repository>().is_err());
        let hub: Repository = "nginx".parse().unwrap();
        assert_eq!(hub.to_string(), "docker.io/library/nginx");
    }

    /// The hand-written parser agrees with oci-spec's regular expression on
    /// every input both are meant to accept or refuse.
    #[test]
    fn image_refs_parse_like_oci_spec() {
        let hex = "d".repeat(64);
        let long_path = format!("a/{}", "b".repeat(254));
        let cases = [
            "busybox".to_owned(),
            "busybox:1.36".to_owned(),
            "test.com:tag".to_owned(),
            "test.com:5000".to_owned(),
            "test.com/repo:tag".to_owned(),
            "test:5000/repo".to_owned(),
            "test:5000/repo:tag".to_owned(),
            format!("test:5000/repo@sha256:{hex}"),
            format!("test:5000/repo:tag@sha256:{hex}"),
            "localhost/app".to_owned(),
            "localhost:5000/team/app:v1".to_owned(),
            "127.0.0.1:15000/team/shop:2024.06-rc_1".to_owned(),
            "index.docker.io/nginx".to_owned(),
            "docker.io/team/app".to_owned(),
            "team/app".to_owned(),
            "team/a.b-c__d---e".to_owned(),
            "my-registry.example.com/a/b/c".to_owned(),
            format!("x/y:{}", "t".repeat(128)),
            long_path.clone(),
            // refused by both
            String::new(),
            ":tag".to_owned(),
            "app:".to_owned(),
            "app:-x".to_owned(),
            "app:.x".to_owned(),
            format!("x/y:{}", "t".repeat(129)),
            "a..b".to_owned(),
            "a_-b".to_owned(),
            "a___b".to_owned(),
            "-a".to_owned(),
            "a-".to_owned(),
            "a//b".to_owned(),
            "host:port/app".to_owned(),
            "-host.com/app".to_owned(),
            "app@sha256:abc".to_owned(),
            "app@".to_owned(),
            "a:b:c".to_owned(),
            "Upper.com/Case".to_owned(),
            format!("a/{}", "b".repeat(255)),
        ];
        for case in &cases {
            let ours = case.parse::<ImageRef>();
            let theirs = case.parse::<oci_spec::distribution::Reference>();
            match (&ours, &theirs) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(ours.registry(), theirs.registry(), "{case:?}");
                    assert_eq!(
                        ours.resolve_registry(),
                        theirs.resolve_registry(),
                        "{case:?}"
                    );
                    assert_eq!(ours.repository(), theirs.repository(), "{case:?}");
                    assert_eq!(ours.tag(), theirs.tag(), "{case:?}");
                    assert_eq!(
                        ours.digest().map(|d| d.to_string()).as_deref(),
                        theirs.digest(),
                        "{case:?}"
                    );
                    assert_eq!(ours.to_string(), theirs.to_string(), "{case:?}");
                }
                (Err(e), Err(_)) => {
                    assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{case:?}");
                    assert!(e.message().contains("invalid image reference"), "{e}");
                }
                _ => panic!("{case:?}: ours {ours:?}, oci-spec {theirs:?}"),
            }
        }
        // Stricter than the regular expression, like `docker pull`: uppercase
        // repository names, registry hosts with underscores and digests other
        // than sha256 are refused.
        for case in [
            "Team/app",
            "my_host.example/app",
            &format!("app@sha512:{}", "e".repeat(128)),
        ] {
            assert!(case.parse::<oci_spec::distribution::Reference>().is_ok());
            assert!(case.parse::<ImageRef>().is_err(), "{case:?}");
        }
        let e = "app:bad tag".parse::<ImageRef>().unwrap_err();
        assert!(e.message().contains("a tag is 1 to 128"), "{e}");
        let e = "host:port/app".parse::<ImageRef>().unwrap_err();
        assert!(e.message().contains("registry host"), "{e}");
    }

    #[test]
    fn image_ref_with_digest_round_trips() {
        let repo: Repository = "localhost:5000/app".parse().unwrap();
        let digest: Digest = format!("sha256:{}", "c".repeat(64)).parse().unwrap();
        let image = repo.with_digest(&digest);
        assert_eq!(image.digest(), Some(digest.clone()));
        assert_eq!(image.to_string(), format!("localhost:5000/app@{digest}"));
        let back: ImageRef = image.to_string().parse().unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn port_mappings_parse_like_docker_run() {
        let p: PortMapping = "127.0.0.1:18080:8080".parse().unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((p.host_port, p.container_port), (Some(18080), 8080));
        let p: PortMapping = "80:8080".parse().unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port),
            (None, Some(80), 8080)
        );
        let p: PortMapping = "8080/udp".parse().unwrap();
        assert_eq!((p.host_port, p.protocol.as_str()), (None, "udp"));
        let p: PortMapping = "[::1]:9000:9000".parse().unwrap();
        assert_eq!(p.to_string(), "[::1]:9000:9000");
        let p: PortMapping = "127.0.0.1::8080".parse().unwrap();
        assert_eq!(p.host_port, None);
        assert_eq!(p.to_string(), "127.0.0.1::8080");
        for bad in [
            "",
            "x:80",
            "1.2.3:80:80",
            "80:0",
            "70000:80",
            "80/sctp",
            "a:b:c:d",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn secrets_never_print() {
        let v = EnvValue::Secret(Secret::new("hunter2"));
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&v).unwrap().contains("hunter2"));
        assert_eq!(v.expose(), "hunter2");
    }
}
