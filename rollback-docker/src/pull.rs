//! Pull credentials from Docker's `config.json` and pull progress.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bollard::auth::DockerCredentials;
use bollard::models::CreateImageInfo;
use rollback_core::{PullProgress, Result};
use rollback_credentials::{self as credentials, Credential};

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub(crate) fn default_config_path() -> Option<PathBuf> {
    Some(credentials::default_config_file())
}

/// The credentials for `registry` from the Docker config at `config` (a
/// file, or a folder holding `config.json`), found by the lookup the
/// registry client uses: inline `auth`, identity tokens or credential
/// helpers. `None` when nothing is configured, so the pull goes anonymous.
///
/// Blocking: reads a file and may run a credential helper.
pub(crate) fn credentials(
    config: Option<&Path>,
    registry: &str,
) -> Result<Option<DockerCredentials>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let file = credentials::config_file(config);
    let serveraddress = Some(credentials::credential_key(registry).to_owned());
    Ok(
        credentials::lookup(&file, registry)?.map(|credential| match credential {
            Credential::UsernamePassword { username, password } => DockerCredentials {
                username: Some(username),
                password: Some(password.expose().to_owned()),
                serveraddress,
                ..Default::default()
            },
            Credential::IdentityToken(token) => DockerCredentials {
                identitytoken: Some(token.expose().to_owned()),
                serveraddress,
                ..Default::default()
            },
        }),
    )
}

#[derive(Debug, Default, Clone)]
struct Layer {
    current: u64,
    total: u64,
    done: bool,
}

/// Folds the engine's pull messages into layer counts and bytes.
#[derive(Debug, Default)]
pub(crate) struct PullTracker {
    layers: BTreeMap<String, Layer>,
}

impl PullTracker {
    /// Account for one message; `true` when it was about a layer.
    pub(crate) fn update(&mut self, info: &CreateImageInfo) -> bool {
        let (Some(id), Some(status)) = (&info.id, &info.status) else {
            return false;
        };
        let is_layer_status = [
            "Pulling fs layer",
            "Waiting",
            "Downloading",
            "Verifying Checksum",
            "Download complete",
            "Extracting",
            "Pull complete",
            "Already exists",
            "Retrying",
        ]
        .iter()
        .any(|s| status.starts_with(s));
        if !is_layer_status {
            return false;
        }
        let layer = self.layers.entry(id.clone()).or_default();
        let detail = info.progress_detail.as_ref();
        let current = detail
            .and_then(|d| d.current)
            .and_then(|c| u64::try_from(c).ok());
        let total = detail
            .and_then(|d| d.total)
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0);
        match status.as_str() {
            "Downloading" => {
                if let Some(total) = total {
                    layer.total = total;
                }
                if let Some(current) = current {
                    layer.current = current;
                }
            }
            "Download complete" | "Verifying Checksum" => layer.current = layer.total,
            "Pull complete" | "Already exists" => {
                layer.current = layer.total;
                layer.done = true;
            }
            _ => {}
        }
        true
    }

    /// The progress so far.
    pub(crate) fn progress(&self) -> PullProgress {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PullProgress {
            layers_total: count(self.layers.len()),
            layers_done: count(self.layers.values().filter(|l| l.done).count()),
            bytes_done: self.layers.values().map(|l| l.current).sum(),
            bytes_total: self.layers.values().map(|l| l.total).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn msg(id: &str, status: &str, current: Option<i64>, total: Option<i64>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail { current, total }),
            ..Default::default()
        }
    }

    #[test]
    fn tracker_counts_layers_and_bytes() {
        let mut t = PullTracker::default();
        assert!(!t.update(&msg("sha256:abc", "Pulling from team/app", None, None)));
        assert!(t.update(&msg("aaa", "Pulling fs layer", None, None)));
        assert!(t.update(&msg("bbb", "Already exists", None, None)));
        assert!(t.update(&msg("aaa", "Downloading", Some(100), Some(400))));
        assert_eq!(
            t.progress(),
            PullProgress {
                layers_total: 2,
                layers_done: 1,
                bytes_done: 100,
                bytes_total: 400
            }
        );
        assert!(t.update(&msg("aaa", "Download complete", None, None)));
        assert!(t.update(&msg("aaa", "Extracting", Some(10), Some(400))));
        assert!(t.update(&msg("aaa", "Pull complete", None, None)));
        assert_eq!(
            t.progress(),
            PullProgress {
                layers_total: 2,
                layers_done: 2,
                bytes_done: 400,
                bytes_total: 400
            }
        );
        assert!(!t.update(&CreateImageInfo {
            status: Some("Digest: sha256:...".into()),
            ..Default::default()
        }));
    }

    fn write_config(dir: &Path, json: &str) {
        std::fs::write(dir.join("config.json"), json).unwrap();
    }

    #[test]
    fn credentials_come_from_config_auth() {
        let dir = tempfile::tempdir().unwrap();
        // base64("user:pa:ss")
        write_config(
            dir.path(),
            r#"{"auths":{"127.0.0.1:15001":{"auth":"dXNlcjpwYTpzcw=="}}}"#,
        );
        let creds = credentials(Some(dir.path()), "127.0.0.1:15001")
            .unwrap()
            .unwrap();
        assert_eq!(creds.username.as_deref(), Some("user"));
        assert_eq!(creds.password.as_deref(), Some("pa:ss"));
        assert_eq!(creds.serveraddress.as_deref(), Some("127.0.0.1:15001"));
        // Another registry, or no config at all: anonymous.
        assert!(credentials(Some(dir.path()), "other:5000")
            .unwrap()
            .is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(credentials(Some(empty.path()), "127.0.0.1:15001")
            .unwrap()
            .is_none());
        assert!(credentials(None, "127.0.0.1:15001").unwrap().is_none());
    }

    #[test]
    fn docker_hub_uses_its_legacy_key_and_bad_json_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnB3"}}}"#,
        );
        let file = dir.path().join("config.json");
        let creds = credentials(Some(&file), "docker.io").unwrap().unwrap();
        assert_eq!(creds.username.as_deref(), Some("hub"));
        write_config(dir.path(), "{not json");
        let err = credentials(Some(dir.path()), "docker.io").unwrap_err();
        assert_eq!(err.kind(), rollback_core::ErrorKind::InvalidInput);
    }

    #[test]
    fn failing_credential_helper_is_unauthorized_without_its_output() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            r#"{"credHelpers":{"127.0.0.1:15001":"rollback-test-missing-helper"}}"#,
        );
        let err = credentials(Some(dir.path()), "127.0.0.1:15001").unwrap_err();
        assert_eq!(err.kind(), rollback_core::ErrorKind::Unauthorized);
        assert!(
            err.message().contains("127.0.0.1:15001"),
            "{}",
            err.message()
        );
    }
}
