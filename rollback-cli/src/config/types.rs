//! Values whose rule is their own: each type's `Deserialize` refuses what
//! the engine or the probes would, with the message the config error shows
//! after `file:line: key:`, and its `JsonSchema` says the same to editors.

use std::borrow::Cow;

use rollback_core::Retain;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer};

/// A TCP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Port(pub(super) u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(deserializer)?;
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .map(Port)
            .ok_or_else(|| de::Error::custom(format!("{n} is not a port (1-65535)")))
    }
}

impl JsonSchema for Port {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 1, "maximum": 65535 })
    }
}

/// An HTTP status code, 100-599.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HttpStatus(pub(super) u16);

impl<'de> Deserialize<'de> for HttpStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(deserializer)?;
        u16::try_from(n)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .map(HttpStatus)
            .ok_or_else(|| de::Error::custom(format!("{n} is not an HTTP status (100-599)")))
    }
}

impl JsonSchema for HttpStatus {
    fn schema_name() -> Cow<'static, str> {
        "HttpStatus".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 100, "maximum": 599 })
    }
}

/// The schemes the engine adapter speaks.
const ENGINE_SCHEMES: [&str; 5] = ["unix://", "tcp://", "http://", "https://", "ssh://"];

/// An engine address: `unix://`, `tcp://`, `http://`, `https://` or `ssh://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EngineUrl(pub(super) String);

impl<'de> Deserialize<'de> for EngineUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = String::deserialize(deserializer)?;
        if v.starts_with("npipe://") {
            // The engine adapter cannot speak this: refuse it before any host is touched.
            return Err(de::Error::custom(format!(
                "{v:?}: npipe:// engines are not supported"
            )));
        }
        if !ENGINE_SCHEMES
            .iter()
            .any(|p| v.starts_with(p) && v.len() > p.len())
        {
            return Err(de::Error::custom(format!(
                "{v:?} is not an engine address (unix://, tcp://, http://, https:// or ssh://)"
            )));
        }
        Ok(EngineUrl(v))
    }
}

impl JsonSchema for EngineUrl {
    fn schema_name() -> Cow<'static, str> {
        "EngineUrl".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(unix|tcp|http|https|ssh)://.",
            "description": "The Docker engine: unix://, tcp://, http://, https:// or ssh://user@host[:port].",
            "examples": ["unix:///var/run/docker.sock", "ssh://deploy@prod-a:22"]
        })
    }
}

/// `[container] network`: a network name, or a mode of the engine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NetworkMode(pub(super) String);

impl NetworkMode {
    /// `host`, `none` and `container:NAME` share or refuse a network
    /// namespace: such a container joins no other network, the proxy's
    /// included.
    pub(super) fn joins_no_other(&self) -> bool {
        let mode = self.0.as_str();
        mode == "host" || mode == "none" || mode.starts_with("container:")
    }
}

impl<'de> Deserialize<'de> for NetworkMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(NetworkMode(text))
    }
}

impl JsonSchema for NetworkMode {
    fn schema_name() -> Cow<'static, str> {
        "NetworkMode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"\S",
            "description": "A network name, or host, none, container:NAME (which join no other network).",
            "examples": ["host", "shop-net"]
        })
    }
}

/// A host's name in the config: not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostName(pub(super) String);

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.trim() {
            "" => Err(de::Error::custom("must not be empty")),
            name => Ok(HostName(name.to_owned())),
        }
    }
}

impl JsonSchema for HostName {
    fn schema_name() -> Cow<'static, str> {
        "HostName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": r"\S" })
    }
}

/// `[app] retain`: at least 2, the rule of core's [`Retain`] with its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RetainCount(pub(super) Retain);

impl<'de> Deserialize<'de> for RetainCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(deserializer)?;
        let refused = || {
            de::Error::custom(format!(
                "must be at least 2 (the running release and the previous one), got {n}"
            ))
        };
        let n = u32::try_from(n).map_err(|_| refused())?;
        Retain::new(n)
            .map(RetainCount)
            .map_err(|e| de::Error::custom(e.reason))
    }
}

impl JsonSchema for RetainCount {
    fn schema_name() -> Cow<'static, str> {
        "Retain".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": 2,
            "maximum": u32::MAX,
            "description": "Images of the newest N releases kept on each host (the running release and the previous one at least)."
        })
    }
}

/// `[rollout] batch`: hosts at a time, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Batch(pub(super) usize);

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(deserializer)?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .map(Batch)
            .ok_or_else(|| de::Error::custom("must be at least 1"))
    }
}

impl JsonSchema for Batch {
    fn schema_name() -> Cow<'static, str> {
        "Batch".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 1, "description": "Hosts deployed at a time." })
    }
}

/// `[health] exec`: program and arguments, the program first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExecCommand(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for ExecCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Strings(Vec<String>),
            Other(de::IgnoredAny),
        }
        match Written::deserialize(deserializer)? {
            Written::Strings(c) if c.first().is_some_and(|p| !p.is_empty()) => Ok(ExecCommand(c)),
            _ => Err(de::Error::custom(
                "expected [\"program\", \"arg\", ...] (strings, the program first); for a shell line write [\"sh\", \"-c\", \"...\"]",
            )),
        }
    }
}

impl JsonSchema for ExecCommand {
    fn schema_name() -> Cow<'static, str> {
        "Exec".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "items": [{ "type": "string", "minLength": 1 }],
            "additionalItems": { "type": "string" },
            "minItems": 1,
            "description": "A command run inside the new container; exit 0 means healthy. For a shell line: [\"sh\", \"-c\", \"...\"]."
        })
    }
}

/// `[health] docker`: only `true` means something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DockerCheck;

impl<'de> Deserialize<'de> for DockerCheck {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match bool::deserialize(deserializer)? {
            true => Ok(DockerCheck),
            false => Err(de::Error::custom(
                "only `docker = true` is meaningful; remove the key to use another check",
            )),
        }
    }
}

impl JsonSchema for DockerCheck {
    fn schema_name() -> Cow<'static, str> {
        "DockerCheck".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "boolean", "const": true, "description": "The image's own HEALTHCHECK." })
    }
}

/// A string that starts with `/`: a URL path, or a JSON pointer (which
/// may also be empty: the whole document).
macro_rules! slash_type {
    ($(#[$doc:meta])* $name:ident, $empty_ok:expr, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(super) struct $name(pub(super) String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let v = String::deserialize(deserializer)?;
                if v.starts_with('/') || ($empty_ok && v.is_empty()) {
                    return Ok($name(v));
                }
                Err(de::Error::custom(format!(
                    "{v:?} must start with / (e.g. \"{}\")",
                    $example
                )))
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let pattern = if $empty_ok { "^(/|$)" } else { "^/" };
                json_schema!({ "type": "string", "pattern": pattern, "examples": [$example] })
            }
        }
    };
}

slash_type!(
    /// `[health] path`.
    UrlPath,
    false,
    "/health"
);

slash_type!(
    /// `[health] json_pointer`.
    JsonPointer,
    true,
    "/status"
);

/// A number as TOML may write it: an integer, a float, or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Integer(i64),
    Float(f64),
    String(String),
}

/// `[container] memory`, in bytes: at least the engine's minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemoryLimit(pub(super) u64);

impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        memory_bytes(&Number::deserialize(deserializer)?)
            .map(MemoryLimit)
            .map_err(de::Error::custom)
    }
}

impl JsonSchema for MemoryLimit {
    fn schema_name() -> Cow<'static, str> {
        "Memory".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 6291456 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*[kKmMgG]?[bB]?\\s*$" }
            ],
            "description": "Bytes, or a size with k, m or g (powers of 1024), as docker run --memory.",
            "examples": ["512m", "2g"]
        })
    }
}

/// `--memory` syntax: bytes, or a number with b, k, m or g (powers of 1024).
fn memory_bytes(raw: &Number) -> Result<u64, String> {
    const MIN: u64 = 6 * 1024 * 1024;
    let bytes = match raw {
        Number::Integer(i) => u64::try_from(*i).ok(),
        Number::Float(_) => None,
        Number::String(s) => {
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

/// `[container] cpus`, in billionths of a CPU, as the engine counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cpus(pub(super) u64);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cpus = match Number::deserialize(deserializer)? {
            Number::Integer(i) => Some(i as f64),
            Number::Float(f) => Some(f),
            Number::String(s) => s.trim().parse::<f64>().ok(),
        };
        match cpus {
            Some(n) if n.is_finite() && n > 0.0 && n <= 1024.0 => {
                Ok(Cpus((n * 1e9).round() as u64))
            }
            _ => Err(de::Error::custom(
                "must be a number of CPUs above 0, such as 0.5 or 2",
            )),
        }
    }
}

impl JsonSchema for Cpus {
    fn schema_name() -> Cow<'static, str> {
        "Cpus".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "number", "exclusiveMinimum": 0, "maximum": 1024 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*$" }
            ],
            "examples": [0.5, 2]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: for<'de> Deserialize<'de>>(value: &str) -> Result<T, String> {
        #[derive(Deserialize)]
        struct Doc<T> {
            v: T,
        }
        toml::from_str::<Doc<T>>(&format!("v = {value}"))
            .map(|d| d.v)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn each_type_refuses_what_its_parser_refuses_with_its_message() {
        assert_eq!(read::<Port>("8080"), Ok(Port(8080)));
        assert_eq!(read::<Port>("0"), Err("0 is not a port (1-65535)".into()));
        assert_eq!(
            read::<Port>("70000"),
            Err("70000 is not a port (1-65535)".into())
        );
        assert_eq!(read::<HttpStatus>("204"), Ok(HttpStatus(204)));
        assert_eq!(
            read::<HttpStatus>("42"),
            Err("42 is not an HTTP status (100-599)".into())
        );
        assert_eq!(
            read::<EngineUrl>("\"ssh://deploy@a\""),
            Ok(EngineUrl("ssh://deploy@a".into()))
        );
        assert!(read::<EngineUrl>("\"unix://\"")
            .unwrap_err()
            .contains("is not an engine address"));
        assert!(read::<EngineUrl>("\"npipe:////./pipe/x\"")
            .unwrap_err()
            .contains("npipe:// engines are not supported"));
        assert_eq!(
            read::<ExecCommand>("[\"curl\", \"-f\"]"),
            Ok(ExecCommand(vec!["curl".into(), "-f".into()]))
        );
        for bad in ["\"curl -f x\"", "[]", "[1, 2]", "[\"\"]"] {
            assert!(read::<ExecCommand>(bad)
                .unwrap_err()
                .starts_with("expected ["));
        }
        assert!(read::<DockerCheck>("false").is_err());
        assert_eq!(
            read::<UrlPath>("\"health\""),
            Err("\"health\" must start with / (e.g. \"/health\")".into())
        );
        assert_eq!(read::<JsonPointer>("\"\""), Ok(JsonPointer(String::new())));
        assert_eq!(read::<MemoryLimit>("\"512m\""), Ok(MemoryLimit(512 << 20)));
        assert_eq!(read::<Cpus>("1.5"), Ok(Cpus(1_500_000_000)));
        assert!(read::<Cpus>("0").is_err());
        assert_eq!(read::<Batch>("2"), Ok(Batch(2)));
        assert_eq!(read::<Batch>("0"), Err("must be at least 1".into()));
        assert_eq!(
            read::<RetainCount>("-1"),
            Err("must be at least 2 (the running release and the previous one), got -1".into())
        );
        assert_eq!(read::<RetainCount>("3").map(|r| r.0.get()), Ok(3));
        assert_eq!(read::<HostName>("\" a \""), Ok(HostName("a".into())));
        assert_eq!(read::<HostName>("\" \""), Err("must not be empty".into()));
        for (mode, alone) in [("host", true), ("container:db", true), ("shop-net", false)] {
            let m: NetworkMode = read(&format!("{mode:?}")).unwrap();
            assert_eq!(m.joins_no_other(), alone, "{mode}");
        }
    }
}
