//! Settings of [`OciRegistry`](crate::OciRegistry).

use std::path::PathBuf;
use std::time::Duration;

/// The largest manifest accepted by default: 4 MiB, the limit most registries enforce.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// How [`OciRegistry`](crate::OciRegistry) talks to registries.
///
/// Build it from [`RegistryConfig::default`] and change the fields you need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Extra registry hosts (`host` or `host:port`) spoken to over plain HTTP.
    /// Loopback hosts (`127.0.0.0/8`, `localhost`, `[::1]`) always are.
    pub insecure: Vec<String>,
    /// How many times a request is repeated after a 429, a 5xx or a broken
    /// connection, on top of the first try.
    pub max_retries: u32,
    /// Pause before the first retry; it doubles for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of the pause between retries (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// Time limit of one HTTP request, body included.
    pub request_timeout: Duration,
    /// Docker's configuration directory (the one holding `config.json`).
    /// `None` means `$DOCKER_CONFIG`, else `~/.docker`, read when the
    /// registry client is built.
    pub docker_config: Option<PathBuf>,
    /// Manifests larger than this are refused without being read whole.
    pub max_manifest_bytes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure: Vec::new(),
            max_retries: 2,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            docker_config: None,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
        }
    }
}

impl RegistryConfig {
    /// The `config.json` credentials are read from.
    pub(crate) fn docker_config_file(&self) -> PathBuf {
        match &self.docker_config {
            Some(dir) => dir.join("config.json"),
            None => crate::credentials::default_config_file(),
        }
    }
}
