//! The per-host deploy lock: a container that is created, never started.
//!
//! Creating a container under a fixed name is atomic in the engine: the
//! second creation fails with 409. The lock's record lives in the
//! container's labels, so any client can read who holds it. The container
//! runs nothing and carries no `io.rollback.app` label, so it is never
//! mistaken for a release.

use std::collections::HashMap;
use std::time::SystemTime;

use bollard::models::{ContainerCreateBody, HostConfig};
use rollback_core::{ContainerName, DeploymentId, Error, LockInfo, Result};

/// Repository of the empty image the lock containers are created from.
pub(crate) const IMAGE_REPO: &str = "rollback-lock";
/// Tag of that image.
pub(crate) const IMAGE_TAG: &str = "1";

/// Label naming the app the lock is for; marks lock containers.
pub const LABEL_APP: &str = "io.rollback.lock.app";
/// Label naming who holds the lock.
pub const LABEL_HOLDER: &str = "io.rollback.lock.holder";
/// Label with the deployment id holding the lock.
pub const LABEL_DEPLOYMENT: &str = "io.rollback.lock.deployment";
/// Label with what is being deployed.
pub const LABEL_TARGET: &str = "io.rollback.lock.target";
/// Label with the RFC 3339 time the lock was taken.
pub const LABEL_STARTED_AT: &str = "io.rollback.lock.started-at";

/// The name of the lock container of `app`.
pub fn container_name(app: &str) -> String {
    format!("rollback-lock-{app}")
}

/// App names become part of a container name.
pub(crate) fn validate_app(app: &str) -> Result<()> {
    ContainerName::new(app)
        .map(drop)
        .map_err(|e| Error::invalid_input(format!("invalid app name: {}", e.message())))
}

pub(crate) fn container_body(lock: &LockInfo) -> ContainerCreateBody {
    let labels = HashMap::from([
        (rollback_core::labels::MANAGED.to_owned(), "true".to_owned()),
        (LABEL_APP.to_owned(), lock.app.clone()),
        (LABEL_HOLDER.to_owned(), lock.holder.clone()),
        (LABEL_DEPLOYMENT.to_owned(), lock.deployment.to_string()),
        (LABEL_TARGET.to_owned(), lock.target.clone()),
        (
            LABEL_STARTED_AT.to_owned(),
            humantime::format_rfc3339_seconds(lock.started_at).to_string(),
        ),
    ]);
    ContainerCreateBody {
        image: Some(format!("{IMAGE_REPO}:{IMAGE_TAG}")),
        // Never run; the engine only insists that a command exists.
        cmd: Some(vec!["rollback-lock".to_owned()]),
        labels: Some(labels),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The lock record from a lock container's labels; missing fields read as
/// `unknown` so a damaged lock can still be shown and broken.
pub(crate) fn info_from_labels(app: &str, labels: &HashMap<String, String>) -> LockInfo {
    let get = |key: &str| {
        labels
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned())
    };
    LockInfo {
        app: labels
            .get(LABEL_APP)
            .cloned()
            .unwrap_or_else(|| app.to_owned()),
        deployment: DeploymentId(get(LABEL_DEPLOYMENT)),
        holder: get(LABEL_HOLDER),
        target: get(LABEL_TARGET),
        started_at: labels
            .get(LABEL_STARTED_AT)
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn labels_round_trip_the_lock_record() {
        let lock = LockInfo {
            app: "shop".into(),
            deployment: DeploymentId("d1".into()),
            holder: "ci@runner pid 7".into(),
            target: "v2".into(),
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let body = container_body(&lock);
        let labels = body.labels.unwrap();
        assert!(!labels.contains_key(rollback_core::labels::APP));
        assert_eq!(labels[LABEL_STARTED_AT], "2023-11-14T22:13:20Z");
        assert_eq!(info_from_labels("shop", &labels), lock);
        let damaged = info_from_labels("shop", &HashMap::new());
        assert_eq!(damaged.holder, "unknown");
        assert_eq!(damaged.app, "shop");
    }

    #[test]
    fn app_names_must_fit_in_a_container_name() {
        for ok in ["a", "ody-prod-app", "x_1.2"] {
            assert!(validate_app(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a b", "a/b", "é"] {
            assert!(validate_app(bad).is_err(), "{bad}");
        }
    }
}
