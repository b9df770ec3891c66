//! The Swarm adapter against a real single-node swarm (engine C of
//! `scripts/test-env`), with releases pushed to the test registry and
//! referenced by digest as a deploy does.

use std::collections::BTreeMap;
use std::time::Duration;

use rollback_core::ErrorKind;
use rollback_docker::swarm::{Swarm, TaskInfo, TaskTemplate};
use rollback_e2e::{docker_output, push_release, registry, swarm, unique};

const PROBE_IMAGE: &str = "rollback-fixture:healthy";
const WAIT: Duration = Duration::from_secs(60);

/// A service and its network on the swarm, removed when the test ends.
struct SwarmApp {
    swarm: Swarm,
    service: String,
    network: String,
    repo: String,
}

impl SwarmApp {
    async fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        SwarmApp {
            swarm: Swarm::connect(Some(&swarm()), Duration::from_secs(30))
                .await
                .expect("connect to the swarm manager (ROLLBACK_TEST_SWARM)"),
            service: name.clone(),
            network: format!("{name}-net"),
            repo: format!("{}/e2e/{name}", registry()),
        }
    }

    /// Push a fixture release and return its reference pinned by digest.
    fn release(&self, tag: &str, version: &str, mode: &str) -> String {
        let digest = push_release(&self.repo, tag, version, mode);
        format!("{}:{tag}@{digest}", self.repo)
    }

    fn template(&self) -> TaskTemplate {
        TaskTemplate {
            replicas: 2,
            network: self.network.clone(),
            port: 8080,
            labels: BTreeMap::from([("e2e".into(), self.service.clone())]),
            parallelism: 1,
            ..Default::default()
        }
    }

    /// Probe every task and return the bodies; each must answer 200 UP.
    async fn probe_all(&self, tasks: &[TaskInfo], version: &str) {
        for task in tasks {
            let address = task
                .address
                .as_deref()
                .expect("a running task has an address");
            let answer = self
                .swarm
                .probe(
                    &self.network,
                    PROBE_IMAGE,
                    address,
                    8080,
                    "/health",
                    Duration::from_secs(5),
                )
                .await
                .expect("run the probe");
            assert_eq!(
                answer.status,
                Some(200),
                "task {} at {address}: {answer:?}",
                task.id
            );
            assert!(
                answer.body.contains("\"UP\"") && answer.body.contains(version),
                "task {} at {address} should be {version} and UP: {:?}",
                task.id,
                answer.body
            );
        }
    }

    async fn create_v1(&self) -> String {
        let v1 = self.release("v1", "v1", "healthy");
        let created = self
            .swarm
            .create(&self.service, &v1, &self.template())
            .await
            .expect("create the service");
        assert_eq!(created.image, v1);
        let tasks = self
            .swarm
            .wait_running(&self.service, &v1, 2, WAIT)
            .await
            .expect("v1 runs");
        assert_eq!(tasks.len(), 2);
        self.probe_all(&tasks, "v1").await;
        v1
    }
}

impl Drop for SwarmApp {
    fn drop(&mut self) {
        let host = swarm();
        docker_output(Some(&host), &["service", "rm", &self.service]);
        // The network goes once the service's tasks have left it.
        for _ in 0..40 {
            if docker_output(Some(&host), &["network", "rm", &self.network])
                .status
                .success()
                || !docker_output(Some(&host), &["network", "inspect", &self.network])
                    .status
                    .success()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_update_runs_new_tasks_probed_on_their_overlay_addresses() {
    let app = SwarmApp::new("sw-ok").await;
    let v1 = app.create_v1().await;
    let v2 = app.release("v2", "v2", "healthy");

    let before = app.swarm.service(&app.service).await.unwrap().unwrap();
    assert_eq!(before.image, v1);
    let updated = app
        .swarm
        .update(&before, &v2, 1)
        .await
        .expect("update to v2");
    assert!(updated.version > before.version);
    let tasks = app
        .swarm
        .wait_running(&app.service, &v2, 2, WAIT)
        .await
        .expect("v2 runs");
    assert_eq!(tasks.len(), 2);
    app.probe_all(&tasks, "v2").await;

    let after = app.swarm.service(&app.service).await.unwrap().unwrap();
    assert_eq!(after.image, v2);
    assert_eq!(after.digest.as_deref(), v2.split_once('@').map(|(_, d)| d));
    let config = after.spec.update_config.expect("update config");
    assert_eq!(
        config.order.map(|o| o.to_string()).as_deref(),
        Some("start-first")
    );
    assert_eq!(
        config.failure_action.map(|a| a.to_string()).as_deref(),
        Some("pause")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_release_is_detected_and_rolled_back_to_healthy_tasks() {
    let app = SwarmApp::new("sw-crash").await;
    let v1 = app.create_v1().await;
    let crash = app.release("v2", "v2", "crash");

    let before = app.swarm.service(&app.service).await.unwrap().unwrap();
    let updated = app.swarm.update(&before, &crash, 1).await.expect("update");
    let failed = app
        .swarm
        .wait_failure(&app.service, &crash, WAIT)
        .await
        .unwrap()
        .expect("the crashing tasks are seen failing");
    assert!(
        failed
            .iter()
            .any(|f| f.contains("failed") && f.contains("exit 1")),
        "{failed:?}"
    );
    assert!(app
        .swarm
        .wait_running(&app.service, &crash, 2, Duration::from_secs(1))
        .await
        .is_err_and(|e| e.kind() == ErrorKind::Unhealthy));

    let current = app.swarm.service(&app.service).await.unwrap().unwrap();
    assert!(current.version >= updated.version);
    let (restored, tasks) = app
        .swarm
        .rollback_and_wait(&current, 2, WAIT)
        .await
        .expect("roll back");
    assert_eq!(restored.image, v1);
    // `rollback_paused` when the rollback was sent before Swarm's own
    // updater saw the failure: it marks the rollback so, and it goes on.
    assert!(
        matches!(
            restored.update_state.as_deref(),
            Some("rollback_completed" | "rollback_paused")
        ),
        "{:?}",
        restored.update_state
    );
    assert_eq!(tasks.len(), 2);
    app.probe_all(&tasks, "v1").await;
    let crashing = app.swarm.tasks(&app.service, Some(&crash)).await.unwrap();
    assert!(
        crashing.iter().all(|t| t.desired_state != "running"),
        "no task of the crashing release may be left to run: {crashing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_update_stops_the_update_and_overwrites_nothing() {
    let app = SwarmApp::new("sw-race").await;
    let v1 = app.create_v1().await;
    let v2 = app.release("v2", "v2", "healthy");

    let read = app.swarm.service(&app.service).await.unwrap().unwrap();
    // Someone else changes the service after it was read.
    let other = docker_output(
        Some(&swarm()),
        &[
            "service",
            "update",
            "--detach",
            "--label-add",
            "changed-by=someone-else",
            &app.service,
        ],
    );
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );

    let err = app
        .swarm
        .update(&read, &v2, 1)
        .await
        .expect_err("stale version");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.message().contains("changed by someone else") && err.message().contains(&app.service),
        "{err}"
    );
    let now = app.swarm.service(&app.service).await.unwrap().unwrap();
    assert_eq!(now.image, v1, "the image must not change");
    assert_eq!(
        now.spec
            .labels
            .unwrap()
            .get("changed-by")
            .map(String::as_str),
        Some("someone-else"),
        "the other change must stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_digest_fails_with_the_service_unchanged() {
    let app = SwarmApp::new("sw-missing").await;
    let v1 = app.create_v1().await;
    let missing = format!(
        "{}:v9@sha256:{}",
        app.repo, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );

    let before = app.swarm.service(&app.service).await.unwrap().unwrap();
    let err = app
        .swarm
        .update(&before, &missing, 1)
        .await
        .expect_err("missing image");
    assert!(err.message().contains(&missing), "{err}");
    let after = app.swarm.service(&app.service).await.unwrap().unwrap();
    assert_eq!(after.version, before.version, "nothing changed");
    assert_eq!(after.image, v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_lock_is_a_compare_and_swap_on_its_labels() {
    let app = SwarmApp::new("sw-lock").await;
    app.create_v1().await;
    let s = &app.swarm;

    let read = s.service(&app.service).await.unwrap().unwrap();
    let locked = s
        .lock(&app.service, "deploy-a")
        .await
        .expect("take the lock");
    assert_eq!(locked.lock_owner(), Some("deploy-a"));
    assert!(locked.version > read.version);
    // Taking it again as the same owner changes nothing.
    assert_eq!(
        s.lock(&app.service, "deploy-a").await.unwrap().version,
        locked.version
    );

    let err = s
        .lock(&app.service, "deploy-b")
        .await
        .expect_err("held by a");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains("locked by deploy-a"), "{err}");
    let err = s
        .unlock(&app.service, "deploy-b")
        .await
        .expect_err("not b's");
    assert_eq!(err.kind(), ErrorKind::Conflict);

    // Taking the lock moved the version: a change from the earlier read fails.
    let v2 = app.release("v2", "v2", "healthy");
    let err = s.update(&read, &v2, 1).await.expect_err("stale version");
    assert_eq!(err.kind(), ErrorKind::Conflict);

    assert!(s.unlock(&app.service, "deploy-a").await.unwrap());
    assert!(!s.unlock(&app.service, "deploy-a").await.unwrap());
    let b = s.lock(&app.service, "deploy-b").await.expect("free again");
    assert_eq!(b.lock_owner(), Some("deploy-b"));
}
