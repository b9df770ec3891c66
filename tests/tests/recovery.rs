//! Deploys that are interrupted: the process killed at each phase (through
//! the CLI's `ROLLBACK_TEST_PAUSE_AT` test checkpoint) and then `rollback recover`,
//! a registry that dies during promotion, an engine that dies mid-deploy,
//! signals during verification and a health endpoint that flaps. After each,
//! every host is checked: one container under the app name, healthy, the old
//! or the new release, and `latest` pointing at what runs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollback_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

/// Deploy v1 to two hosts, start deploying v2 (`v2_mode`), SIGKILL the
/// process when prod-a pauses at `point` (and, if given, once prod-b has
/// reached `other_at`), run `recover`, and check every host.
fn kill_then_recover(
    point: &str,
    v2_mode: &str,
    other_at: Option<&str>,
    recover_code: i32,
    version: &str,
) {
    let fleet = Fleet::two_hosts(&format!("rec-{}", point.replace('_', "-")));
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", v2_mode);
    fleet.write_config("[rollout]\nbatch = 2\n");
    fleet.deploy_ok("v1");
    let before = [fleet.running_id(0), fleet.running_id(1)];

    let pause = if point == "promoting" {
        point.to_owned()
    } else {
        format!("{point}@prod-a")
    };
    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v2"],
        &[("ROLLBACK_TEST_PAUSE_AT", &pause)],
    );
    deploy.wait_for(&format!("paused at {point}"), WAIT);
    if let Some(phase) = other_at {
        deploy.wait_event("prod-b", phase, WAIT);
    }
    let killed = deploy.kill();
    assert_eq!(
        killed.code,
        -1,
        "killed by the signal: {}",
        killed.explain()
    );
    assert!(fleet.lock_exists(0), "the killed deploy left its lock");

    let run = fleet.run(&["recover"]);
    assert_eq!(
        run.code,
        recover_code,
        "recover after a kill at {point}: {}\nthe killed deploy: {}",
        run.explain(),
        killed.explain()
    );
    assert_eq!(
        fleet.assert_invariant(&[version]),
        [version, version],
        "{}",
        run.explain()
    );
    for i in 0..2 {
        assert_eq!(
            fleet.guard.all(fleet.engine(i)).len(),
            1,
            "[{}] no retained container is left",
            fleet.hosts[i].name
        );
    }
    if version == "v1" {
        assert_eq!(
            [fleet.running_id(0), fleet.running_id(1)],
            before,
            "the original containers run again"
        );
        assert_eq!(fleet.tag_digest("latest"), Some(v1));
        assert_eq!(fleet.tag_digest("previous"), None);
    } else {
        assert_eq!(fleet.tag_digest("latest"), Some(v2));
        assert_eq!(fleet.tag_digest("previous"), Some(v1));
    }
}

#[test]
fn every_container_of_a_deploy_in_progress_carries_the_prune_filter_label() {
    let fleet = Fleet::new("managed", &[("prod-a", None)]);
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    fleet.deploy_ok("v1");
    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v2"],
        &[("ROLLBACK_TEST_PAUSE_AT", "verifying@prod-a")],
    );
    deploy.wait_for("paused at verifying", WAIT);

    // What `docker container prune --filter label!=io.rollback.managed`
    // spares: the new container, the stopped kept one and the lock.
    let names = |extra: &[&str]| {
        let filter = format!("name={}", fleet.app);
        let mut args = vec!["ps", "-a", "--format", "{{.Names}}", "--filter", &filter];
        args.extend(extra);
        let mut names: Vec<String> = docker(None, &args).lines().map(str::to_owned).collect();
        names.sort();
        names
    };
    let all = names(&[]);
    assert_eq!(
        all,
        [
            fleet.app.clone(),
            format!("{}--rollback-previous", fleet.app),
            format!("rollback-lock-{}", fleet.app),
        ]
    );
    assert_eq!(names(&["--filter", "label=io.rollback.managed=true"]), all);

    deploy.kill();
    let run = fleet.run(&["recover"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    fleet.assert_invariant(&["v2"]);
}

#[test]
fn killed_after_the_first_lock_recover_releases_it() {
    kill_then_recover("locked", "healthy", None, 0, "v1");
}

#[test]
fn killed_after_capture_recover_reverts_the_host_that_went_ahead() {
    kill_then_recover("captured", "healthy", Some("verified"), 3, "v1");
}

#[test]
fn killed_after_the_pull_recover_reverts_the_host_that_went_ahead() {
    kill_then_recover("pulled", "healthy", Some("verified"), 3, "v1");
}

#[test]
fn killed_after_the_switch_recover_verifies_and_promotes() {
    kill_then_recover("switched", "healthy", Some("verified"), 0, "v2");
}

#[test]
fn killed_while_verifying_recover_verifies_and_promotes() {
    kill_then_recover("verifying", "healthy", Some("verified"), 0, "v2");
}

#[test]
fn killed_while_rolling_back_recover_finishes_the_rollback() {
    kill_then_recover("rolling_back", "crash", Some("rolled_back"), 3, "v1");
}

#[test]
fn killed_before_promotion_recover_promotes() {
    kill_then_recover("promoting", "healthy", None, 0, "v2");
}

/// A registry of this test's own, so it can be killed and started again.
struct PrivateRegistry {
    port: u16,
    dir: tempfile::TempDir,
    process: Option<Child>,
}

impl PrivateRegistry {
    fn start() -> Self {
        let mut registry = PrivateRegistry {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            process: None,
        };
        registry.restart();
        registry
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start the registry process on the same port and storage.
    fn restart(&mut self) {
        let dir = self.dir.path();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: rollback-recovery-test\n",
                dir.join("data").display(),
                self.port
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (run scripts/test-env first)");
        self.process = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while http_get(self.port, "/v2/").is_none() {
            assert!(Instant::now() < end, "the private registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_registry_that_dies_during_promotion_leaves_the_verified_release_for_recover() {
    let mut registry = PrivateRegistry::start();
    let fleet = Fleet::in_registry("rec-registry", &registry.address(), &[("prod-a", None)]);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    fleet.deploy_ok("v1");

    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v2"],
        &[
            ("ROLLBACK_TEST_PAUSE_AT", "promoting"),
            ("ROLLBACK_TEST_PAUSE_FOR", "2s"),
        ],
    );
    deploy.wait_for("paused at promoting", WAIT);
    registry.kill();
    let run = deploy.finish();
    assert_eq!(run.code, 1, "{}", run.explain());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "promotion_failed");
    assert_eq!(outcome["promoted"], false);
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|r| r.contains("moving the tags failed")),
        "{outcome}"
    );
    assert_eq!(fleet.answering(0), Some(("v2".into(), "UP".into())));
    fleet.running_id(0);
    assert_eq!(
        fleet.guard.all(None).len(),
        2,
        "the previous container is kept until the tags move"
    );
    assert!(!fleet.lock_exists(0));

    registry.restart();
    assert_eq!(
        fleet.tag_digest("latest"),
        Some(v1.clone()),
        "latest did not move"
    );
    let run = fleet.run(&["recover"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(run.outcome()["promoted"], true);
    assert_eq!(fleet.assert_invariant(&["v2"]), ["v2"]);
    assert_eq!(fleet.tag_digest("latest"), Some(v2.clone()));
    assert_eq!(fleet.tag_digest("previous"), Some(v1));
    assert_eq!(fleet.guard.all(None).len(), 1);

    // The same again, finished by re-running the deploy instead.
    let v3 = push_release(&fleet.repo, "v3", "v3", "healthy");
    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v3"],
        &[
            ("ROLLBACK_TEST_PAUSE_AT", "promoting"),
            ("ROLLBACK_TEST_PAUSE_FOR", "2s"),
        ],
    );
    deploy.wait_for("paused at promoting", WAIT);
    registry.kill();
    let run = deploy.finish();
    assert_eq!(run.code, 1, "{}", run.explain());
    assert_eq!(run.outcome()["outcome"], "promotion_failed");
    assert_eq!(fleet.answering(0), Some(("v3".into(), "UP".into())));
    registry.restart();
    assert_eq!(fleet.tag_digest("latest"), Some(v2.clone()));
    let run = fleet.run(&["deploy", "--tag", "v3"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(fleet.assert_invariant(&["v3"]), ["v3"]);
    assert_eq!(fleet.tag_digest("latest"), Some(v3));
    assert_eq!(fleet.tag_digest("previous"), Some(v2));
    assert_eq!(fleet.guard.all(None).len(), 1);
}

/// A Docker engine of this test's own (like engine B of `scripts/test-env`),
/// so it can be killed mid-deploy.
struct PrivateEngine {
    dir: tempfile::TempDir,
    exec_root: PathBuf,
    bridge: String,
    config: PathBuf,
    process: Option<Child>,
}

impl PrivateEngine {
    fn start() -> Self {
        let id = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix("engine-")
            // runc refuses a rootfs path through a symbolic link.
            .tempdir_in(
                workspace_root()
                    .join(".test-env")
                    .canonicalize()
                    .expect("scripts/test-env has run"),
            )
            .expect("temp dir under .test-env");
        let bridge = format!("rbf{:x}", id & 0xfffff);
        let exec_root = PathBuf::from(format!("/run/rbf-{id}"));
        let driver = docker(None, &["info", "--format", "{{.Driver}}"]);
        let sock = dir.path().join("docker.sock");
        let config = dir.path().join("daemon.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "data-root": dir.path().join("data"),
                "exec-root": exec_root,
                "pidfile": dir.path().join("docker.pid"),
                "storage-driver": driver,
                "bridge": bridge,
                "iptables": false,
                "ip-masq": false,
                "mtu": 1400,
                "hosts": [format!("unix://{}", sock.display())],
            })
            .to_string(),
        )
        .unwrap();
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("172.29.{}.1/24", id % 200 + 20),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        let mut engine = PrivateEngine {
            dir,
            exec_root,
            bridge,
            config,
            process: None,
        };
        engine.run_daemon();
        engine
    }

    fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn run_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.process = Some(child);
        let url = self.url();
        let end = Instant::now() + Duration::from_secs(30);
        while !docker_output(Some(&url), &["info"]).status.success() {
            assert!(Instant::now() < end, "the private dockerd did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL the daemon: its API goes away, as when a host dies.
    fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // Started again so it removes what the killed one left running.
        if self.process.is_none() {
            self.run_daemon();
        }
        let url = self.url();
        let ids = docker_output(Some(&url), &["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
        if !ids.trim().is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.split_whitespace());
            let _ = docker_output(Some(&url), &args);
        }
        if let Some(mut child) = self.process.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let end = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        let _ = std::fs::remove_dir_all(&self.exec_root);
        // dockerd bind-mounts its data root on itself; the killed one never
        // took its mount down.
        let data = self.dir.path().join("data");
        for _ in 0..4 {
            let unmounted = Command::new("umount")
                .arg(&data)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                break;
            }
        }
    }
}

#[test]
fn an_engine_that_dies_mid_deploy_is_named_and_the_other_host_is_reverted() {
    let mut engine = PrivateEngine::start();
    let mut fleet = Fleet::new(
        "rec-engine",
        &[("prod-a", None), ("prod-c", Some(engine.url()))],
    );
    // The private engine is cleaned as a whole when it goes; the guard
    // could not read it while it is down.
    fleet.guard.hosts.retain(Option::is_none);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("[rollout]\nbatch = 2\n");
    fleet.deploy_ok("v1");
    let a_before = fleet.running_id(0);

    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v2"],
        &[
            ("ROLLBACK_TEST_PAUSE_AT", "verifying@prod-c"),
            ("ROLLBACK_TEST_PAUSE_FOR", "2s"),
        ],
    );
    deploy.wait_for("paused at verifying on prod-c", WAIT);
    engine.kill();
    let run = deploy.finish();
    assert!(
        [3, 4].contains(&run.code),
        "rolled back, or a host may be left without a release: {}",
        run.explain()
    );
    let outcome = run.outcome();
    let hosts = outcome["hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["host"], "prod-a");
    assert_eq!(hosts[0]["phase"], "rolled_back", "{outcome}");
    assert_eq!(hosts[0]["after"]["digest"], v1.as_str(), "{outcome}");
    assert_eq!(hosts[1]["host"], "prod-c");
    assert!(
        hosts[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach docker engine")),
        "prod-c is named unreachable: {outcome}"
    );
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|r| r.contains("prod-c") && r.contains("cannot reach docker engine")),
        "the reason names prod-c and its engine: {outcome}"
    );
    assert_eq!(
        fleet.running_id(0),
        a_before,
        "prod-a runs v1's container again"
    );
    assert_eq!(fleet.answering(0), Some(("v1".into(), "UP".into())));
    assert_eq!(fleet.running_digest(0), v1);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
    assert!(!fleet.lock_exists(0));
}

#[test]
fn a_first_interrupt_during_verify_rolls_back_and_a_second_says_what_is_left() {
    let fleet = Fleet::new("rec-signal", &[("prod-a", None)]);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "hang");
    fleet.write_config("");
    fleet.deploy_ok("v1");
    let before = fleet.running_id(0);

    // One SIGINT: cancelled, v1 restored and verified, exit 3.
    let mut deploy = fleet.spawn(&["deploy", "--tag", "v2"], &[]);
    deploy.wait_event("prod-a", "verifying", WAIT);
    deploy.signal("INT");
    let run = deploy.finish();
    assert_eq!(run.code, 3, "{}", run.explain());
    assert!(
        run.stderr.contains("interrupted: cancelling"),
        "{}",
        run.explain()
    );
    assert_eq!(run.outcome()["outcome"], "rolled_back");
    assert_eq!(fleet.running_id(0), before);
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1"]);

    // Two SIGTERMs: the second exits at once and says what is left.
    let mut deploy = fleet.spawn(&["deploy", "--tag", "v2"], &[]);
    deploy.wait_event("prod-a", "verifying", WAIT);
    deploy.signal("TERM");
    deploy.wait_for("interrupted: cancelling", WAIT);
    deploy.signal("TERM");
    let run = deploy.finish();
    assert!(
        run.stderr.contains("second interrupt") && run.stderr.contains("[prod-a] last seen"),
        "{}",
        run.explain()
    );
    assert!([4, 130].contains(&run.code), "{}", run.explain());
    if run.code == 4 {
        assert!(run.stderr.contains("rollback recover"), "{}", run.explain());
    }
    let run = fleet.run(&["recover"]);
    assert!([0, 3].contains(&run.code), "{}", run.explain());
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1"]);
    assert_eq!(fleet.running_id(0), before);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
}

#[test]
fn a_health_endpoint_that_flaps_during_stable_for_fails_the_deploy() {
    let mut fleet = Fleet::new("rec-flap", &[("prod-a", None)]);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "flap");
    fleet.write_config("");
    fleet.deploy_ok("v1");
    let before = fleet.running_id(0);

    // UP for 1s, DOWN for 1s, ...: it must stay UP for 3s.
    fleet.hosts[0].env = "FLAP_SECS = \"1\"".into();
    fleet.write_config("");
    let path = fleet.dir().join("rollback.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("stable_for = \"1s\"", "stable_for = \"3s\"");
    std::fs::write(&path, config).unwrap();
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    let healthy_probes = run
        .json_lines()
        .iter()
        .filter(|e| e["host"] == "prod-a" && e["detail"].as_str().is_some_and(|d| d.contains("UP")))
        .count();
    assert!(
        healthy_probes >= 1,
        "v2 answered UP first: {}",
        run.explain()
    );
    let outcome = run.outcome();
    assert!(
        outcome["reason"]
            .as_str()
            .is_some_and(|r| r.contains("after its first healthy answer")),
        "{outcome}"
    );
    assert_eq!(fleet.running_id(0), before);
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1"]);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
}
