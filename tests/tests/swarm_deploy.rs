//! `rollback deploy` on a Swarm service (engine C of `scripts/test-env`, a
//! single-node swarm): what a user checks is what the service runs, what
//! every task answers on the overlay network, and where the tags point.

use std::path::Path;
use std::time::Duration;

use rollback_docker::swarm::Swarm;
use rollback_e2e::{
    digest_of, docker_output, push_release, registry, rollback, swarm, unique, Run,
};

const PROBE_IMAGE: &str = "rollback-fixture:healthy";

/// An app deployed as a service on the test swarm, removed at the end.
struct SwarmApp {
    app: String,
    repo: String,
    dir: tempfile::TempDir,
}

impl SwarmApp {
    fn new(prefix: &str, stable_for: &str) -> Self {
        let app = unique(prefix);
        let repo = format!("{}/e2e/{app}", registry());
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            r#"[app]
name = "{app}"
repository = "{repo}"

[health]
path = "/health"
json_pointer = "/status"
expect = "UP"
interval = "500ms"
timeout = "2s"
deadline = "45s"
stable_for = "{stable_for}"

[swarm]
replicas = 2
port = 8080
probe_image = "{PROBE_IMAGE}"

[[hosts]]
name = "swarm"
docker = "{docker}"
"#,
            docker = swarm(),
        );
        std::fs::write(dir.path().join("rollback.toml"), config).expect("write rollback.toml");
        SwarmApp { app, repo, dir }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Push a fixture release as `tag`; its digest.
    fn push(&self, tag: &str, mode: &str) -> String {
        push_release(&self.repo, tag, tag, mode)
    }

    fn deploy(&self, tag: &str) -> Run {
        rollback(
            self.dir(),
            &["deploy", "--tag", tag, "--output", "json"],
            &[],
        )
    }

    fn tag_digest(&self, tag: &str) -> Option<String> {
        digest_of(&format!("{}:{tag}", self.repo))
    }

    /// The image reference the service's spec runs.
    fn service_image(&self) -> String {
        let out = docker_output(
            Some(&swarm()),
            &[
                "service",
                "inspect",
                "-f",
                "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                &self.app,
            ],
        );
        assert!(out.status.success(), "service {} exists", self.app);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// What every running task of the service answers on the overlay
    /// network, asked directly (not through a balancer).
    async fn answers(&self) -> Vec<String> {
        let swarm = Swarm::connect(Some(&swarm()), Duration::from_secs(30))
            .await
            .expect("connect to the swarm manager");
        let image = self.service_image();
        let tasks = swarm
            .wait_running(&self.app, &image, 2, Duration::from_secs(30))
            .await
            .expect("the service's tasks run");
        let mut answers = Vec::new();
        for task in tasks {
            let address = task.address.expect("a running task has an address");
            let answer = swarm
                .probe(
                    &format!("{}-net", self.app),
                    PROBE_IMAGE,
                    &address,
                    8080,
                    "/health",
                    Duration::from_secs(5),
                )
                .await
                .expect("probe a task");
            answers.push(answer.body.trim().to_owned());
        }
        answers
    }

    fn lock_left(&self) -> bool {
        let filter = format!("name=^/rollback-lock-{}$", self.app);
        let out = docker_output(Some(&swarm()), &["ps", "-aq", "--filter", &filter]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }

    /// Deploy v1 (a first deploy creates the service) and insist it runs.
    async fn with_v1(&self) -> String {
        let v1 = self.push("v1", "healthy");
        let run = self.deploy("v1");
        assert_eq!(run.code, 0, "first deploy: {}", run.explain());
        assert!(self.service_image().ends_with(&v1));
        v1
    }

    /// The deploy failed and the service runs v1 again, healthy on every
    /// task; the tags did not move and no lock is left.
    async fn assert_restored(&self, run: &Run, v1: &str) {
        assert_eq!(
            run.code,
            3,
            "the release fails and v1 is restored: {}",
            run.explain()
        );
        assert!(
            self.service_image().ends_with(v1),
            "the service runs v1 again: {}",
            self.service_image()
        );
        for answer in self.answers().await {
            assert!(
                answer.contains("\"UP\"") && answer.contains("v1"),
                "every task answers v1 UP: {answer}"
            );
        }
        assert_eq!(self.tag_digest("latest").as_deref(), Some(v1));
        assert!(!self.lock_left(), "no lock is left");
    }
}

impl Drop for SwarmApp {
    fn drop(&mut self) {
        let host = swarm();
        docker_output(Some(&host), &["service", "rm", &self.app]);
        let network = format!("{}-net", self.app);
        for _ in 0..40 {
            if docker_output(Some(&host), &["network", "rm", &network])
                .status
                .success()
                || !docker_output(Some(&host), &["network", "inspect", &network])
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
async fn a_first_deploy_creates_the_service_and_an_update_moves_every_task() {
    let app = SwarmApp::new("swd-ok", "2s");
    let v1 = app.with_v1().await;
    assert_eq!(app.tag_digest("latest").as_deref(), Some(v1.as_str()));
    for answer in app.answers().await {
        assert!(
            answer.contains("v1") && answer.contains("\"UP\""),
            "{answer}"
        );
    }

    let v2 = app.push("v2", "healthy");
    let run = app.deploy("v2");
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        app.service_image().ends_with(&v2),
        "{}",
        app.service_image()
    );
    let answers = app.answers().await;
    assert_eq!(answers.len(), 2);
    for answer in answers {
        assert!(
            answer.contains("v2") && answer.contains("\"UP\""),
            "{answer}"
        );
    }
    assert_eq!(app.tag_digest("latest").as_deref(), Some(v2.as_str()));
    assert_eq!(app.tag_digest("previous").as_deref(), Some(v1.as_str()));
    assert!(!app.lock_left());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "deployed", "{outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_release_is_rolled_back_to_the_previous_spec() {
    let app = SwarmApp::new("swd-crash", "2s");
    let v1 = app.with_v1().await;
    app.push("v2", "crash");
    let run = app.deploy("v2");
    app.assert_restored(&run, &v1).await;
    assert!(
        run.all_output().contains("exit 1"),
        "the reason names the task's exit: {}",
        run.explain()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_answering_down_is_rolled_back() {
    let app = SwarmApp::new("swd-down", "2s");
    let v1 = app.with_v1().await;
    app.push("v2", "down");
    let run = app.deploy("v2");
    app.assert_restored(&run, &v1).await;
    assert!(run.all_output().contains("DOWN"), "{}", run.explain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_dying_after_its_first_up_is_rolled_back() {
    // flaky answers UP for 3 s, then exits: inside a stable window of 8 s.
    let app = SwarmApp::new("swd-flaky", "8s");
    let v1 = app.with_v1().await;
    app.push("v2", "flaky");
    let run = app.deploy("v2");
    app.assert_restored(&run, &v1).await;
    assert!(run.all_output().contains("exit 2"), "{}", run.explain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_by_someone_else_during_the_deploy_is_not_overwritten() {
    let app = SwarmApp::new("swd-other", "20s");
    let v1 = app.with_v1().await;
    let v2 = app.push("v2", "healthy");
    let v3 = app.push("v3", "healthy");
    let mut deploy = rollback_e2e::spawn_rollback(
        app.dir(),
        &["deploy", "--tag", "v2", "--output", "json"],
        &[],
    );
    deploy.wait_event("swarm", "verifying", Duration::from_secs(60));
    let theirs = format!("{}:v3@{v3}", app.repo);
    let out = docker_output(
        Some(&swarm()),
        &[
            "service", "update", "--detach", "--image", &theirs, &app.app,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = deploy.finish();
    assert_ne!(run.code, 0, "{}", run.explain());
    assert!(
        run.all_output().contains("changed by someone else"),
        "the reason says so: {}",
        run.explain()
    );
    assert_eq!(app.service_image(), theirs, "their update stands");
    assert_eq!(app.tag_digest("latest").as_deref(), Some(v1.as_str()));
    assert_ne!(app.tag_digest("latest").as_deref(), Some(v2.as_str()));
    assert!(!app.lock_left());
}

impl SwarmApp {
    /// Start `deploy --tag tag`, SIGKILL it once the host reached `phase`,
    /// then run `recover`.
    fn killed_at_then_recovered(&self, tag: &str, phase: &str) -> Run {
        let mut deploy = rollback_e2e::spawn_rollback(
            self.dir(),
            &["deploy", "--tag", tag, "--output", "json"],
            &[],
        );
        deploy.wait_event("swarm", phase, Duration::from_secs(60));
        deploy.kill();
        rollback(self.dir(), &["recover", "--output", "json"], &[])
    }

    /// One release runs, healthy on every task, `latest` names it, and no
    /// lock is left.
    async fn assert_one_release(&self, version: &str, digest: &str) {
        assert!(
            self.service_image().ends_with(digest),
            "the service runs {version}: {}",
            self.service_image()
        );
        for answer in self.answers().await {
            assert!(
                answer.contains("\"UP\"") && answer.contains(version),
                "every task answers {version} UP: {answer}"
            );
        }
        assert_eq!(self.tag_digest("latest").as_deref(), Some(digest));
        assert!(!self.lock_left(), "no lock is left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_at_each_swarm_phase_is_recovered_to_one_verified_release() {
    let app = SwarmApp::new("swd-kill", "3s");
    let mut running = ("v1".to_owned(), app.with_v1().await);
    // Before the update, while its tasks start, in the stable window: a
    // healthy release is finished by recover, a crashing one reverted.
    let cases = [
        ("v2", "healthy", "captured"),
        ("v3", "healthy", "verifying"),
        ("v4", "crash", "verifying"),
        ("v5", "healthy", "verified"),
    ];
    for (tag, mode, phase) in cases {
        let digest = app.push(tag, mode);
        let run = app.killed_at_then_recovered(tag, phase);
        let expected = match (mode, phase) {
            ("healthy", "captured") => 0,
            ("healthy", _) => 0,
            _ => 3,
        };
        assert_eq!(
            run.code,
            expected,
            "{tag} ({mode}) killed at {phase}, then recover: {}",
            run.explain()
        );
        if mode == "healthy" && phase != "captured" {
            running = (tag.to_owned(), digest);
        }
        app.assert_one_release(&running.0, &running.1).await;
    }
}

/// A relay of the manager's socket that the test can cut: the manager
/// becomes unreachable for rollback and comes back.
struct Relay {
    path: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(dir: &Path) -> Self {
        let path = dir.join("manager.sock");
        let target = swarm()
            .strip_prefix("unix://")
            .expect("the test swarm is a unix socket")
            .to_owned();
        let listener = tokio::net::UnixListener::bind(&path).expect("bind the relay");
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.changed() => return,
                };
                let Ok((mut client, _)) = accepted else {
                    return;
                };
                let target = target.clone();
                let mut cut = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut engine) = tokio::net::UnixStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut engine) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { path, stop }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn cut(&self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_unreachable_mid_update_fails_clearly_and_recover_restores() {
    let app = SwarmApp::new("swd-gone", "20s");
    let v1 = app.with_v1().await;
    app.push("v2", "healthy");
    let relay = Relay::start(app.dir()).await;
    let config = std::fs::read_to_string(app.dir().join("rollback.toml")).unwrap();
    std::fs::write(
        app.dir().join("rollback.toml"),
        config.replace(
            &format!("docker = \"{}\"", swarm()),
            &format!("docker = \"{}\"", relay.url()),
        ),
    )
    .unwrap();
    let mut deploy = rollback_e2e::spawn_rollback(
        app.dir(),
        &["deploy", "--tag", "v2", "--output", "json"],
        &[],
    );
    deploy.wait_event("swarm", "verifying", Duration::from_secs(60));
    relay.cut();
    let run = deploy.finish();
    assert_eq!(run.code, 4, "the manager is gone: {}", run.explain());
    assert!(
        run.all_output().contains("manager.sock"),
        "the error names the manager: {}",
        run.explain()
    );
    assert_eq!(
        app.tag_digest("latest").as_deref(),
        Some(v1.as_str()),
        "no tag moved"
    );

    // The manager is back (its own address): recover ends the update.
    let config = std::fs::read_to_string(app.dir().join("rollback.toml")).unwrap();
    std::fs::write(
        app.dir().join("rollback.toml"),
        config.replace(&relay.url(), &swarm()),
    )
    .unwrap();
    let recovered = rollback(app.dir(), &["recover", "--output", "json"], &[]);
    assert!(
        [0, 3].contains(&recovered.code),
        "recover finishes or reverts the update: {}",
        recovered.explain()
    );
    let (version, digest) = match recovered.code {
        0 => ("v2", app.tag_digest("v2").unwrap()),
        _ => ("v1", v1.clone()),
    };
    app.assert_one_release(version, &digest).await;
}
