//! The JSON Schema of `rollback.toml`, generated from the types the parser
//! reads (`rollback config schema`), for editors that complete and check
//! TOML against a schema (taplo, Even Better TOML).
//!
//! The parser reads some values into core types or keeps their spans; the
//! schema of such a field is one of the types below, each constraining the
//! value as its parser does. Rules across keys (one health check, a port
//! that the proxy publishes) are the parser's alone.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use super::raw::{HumanDuration, NonEmpty, Platform, RawConfig};

/// The schema of `rollback.toml`, as JSON.
pub fn schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<RawConfig>();
    schema.insert(
        "title".into(),
        serde_json::Value::String("rollback.toml".into()),
    );
    schema.insert(
        "description".into(),
        serde_json::Value::String(
            "Configuration of rollback: what is deployed, where, and how a release is proven healthy."
                .into(),
        ),
    );
    let mut value = schema.to_value();
    drop_null(&mut value);
    value
}

/// TOML has no null: an optional key is one that may be left out, so the
/// `null` schemars allows for an `Option` goes.
fn drop_null(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
                if let [only] = any.as_slice() {
                    let only = only.clone();
                    map.remove("anyOf");
                    if let Value::Object(inner) = only {
                        map.extend(inner);
                    }
                }
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// A string schema type: its name and its schema.
macro_rules! string_type {
    ($(#[$doc:meta])* $name:ident, $schema:tt) => {
        $(#[$doc])*
        pub(super) struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// humantime: numbers with units, added together.
const DURATION_PATTERN: &str = r"^\s*([0-9]+\s*[A-Za-zµ]+\s*)+$";

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a number and a unit, several added together (\"500ms\", \"6s\", \"1m 30s\").",
            "examples": ["6s", "1m", "1m 30s"]
        })
    }
}

impl JsonSchema for NonEmpty {
    fn schema_name() -> Cow<'static, str> {
        "NonEmpty".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": r"\S" })
    }
}

impl JsonSchema for Platform {
    fn schema_name() -> Cow<'static, str> {
        "Platform".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^\s*[^/\s]+/[^\s]+\s*$",
            "description": "os/arch[/variant], e.g. \"linux/arm64\".",
            "examples": ["linux/amd64", "linux/arm64"]
        })
    }
}

string_type!(
    /// `docker run -p` syntax.
    PortMapping,
    {
        "type": "string",
        "pattern": r"^((\[[0-9A-Fa-f:.]+\]|[0-9]{1,3}(\.[0-9]{1,3}){3}):)?([0-9]{0,5}:)?[0-9]{1,5}(/(tcp|udp))?$",
        "description": "A published port in docker run -p syntax: [ip:][host_port:]container_port[/tcp|udp].",
        "examples": ["127.0.0.1:18080:8080", "80:8080", "8080"]
    }
);

string_type!(
    /// A container name, as the engine accepts it.
    ContainerName,
    {
        "type": "string",
        "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        "description": "The container name on every host."
    }
);

string_type!(
    /// An image repository without a tag or digest.
    Repository,
    {
        "type": "string",
        "pattern": "^[a-z0-9]([^@\\s]*[^@:\\s/])?$",
        "description": "The image repository, without a tag or digest (registry/path).",
        "examples": ["127.0.0.1:5000/team/app", "registry.example.com/team/app"]
    }
);

string_type!(
    /// A tag.
    Tag,
    {
        "type": "string",
        "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
    }
);

string_type!(
    /// `[container] restart`.
    RestartPolicy,
    { "type": "string", "enum": ["no", "always", "unless-stopped", "on-failure"] }
);

string_type!(
    /// `[rollout] on_failure`.
    OnFailure,
    {
        "type": "string",
        "enum": ["rollback-all", "rollback-host", "halt"],
        "default": "rollback-all"
    }
);

string_type!(
    /// An http:// or https:// URL; `${VAR}` may stand for any part of it.
    HttpUrl,
    { "type": "string", "pattern": r"^(https?://[^\s/]+|\$\{)" }
);

string_type!(
    /// `[proxy] listen`: the host side of `-p`.
    Listen,
    {
        "type": "string",
        "pattern": r"^((\[[0-9A-Fa-f:.]+\]|[0-9]{1,3}(\.[0-9]{1,3}){3}):)?[0-9]{1,5}$",
        "examples": ["80", "0.0.0.0:80", "127.0.0.1:18080"]
    }
);

string_type!(
    /// `[proxy] tls` as a word: certificates from an ACME CA, or from the
    /// proxy's own CA.
    TlsMode,
    { "type": "string", "enum": ["acme", "internal"] }
);

string_type!(
    /// A hook: a `sh -c` line.
    Command,
    { "type": "string", "pattern": r"\S" }
);
