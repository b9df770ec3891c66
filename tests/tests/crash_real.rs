//! Crashes of the parts around a deploy on the real engine: the ssh
//! master connection of an `ssh://` engine killed while the new release
//! is verified, and the engine itself restarted mid-deploy (an engine this
//! file starts: its own data root, exec root, socket, and a bridge of its
//! own name on a subnet of its own). Each deploy ends with a clear
//! outcome, and `recover` then leaves one verified release.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rollback_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

/// The environment of a run over the test env's sshd: its `ssh` first in
/// PATH and the agent holding the client key.
fn ssh_env() -> Vec<(&'static str, String)> {
    let path = format!(
        "{}:{}",
        test_env("ROLLBACK_TEST_SSH_PATH"),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![
        ("PATH", path),
        ("SSH_AUTH_SOCK", test_env("ROLLBACK_TEST_SSH_AUTH_SOCK")),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The pids of the `ssh` master connections `parent` started.
fn ssh_masters_of(parent: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &parent.to_string(), "-f", "ControlMaster=yes"])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn the_ssh_master_killed_mid_verify_ends_clearly_and_recover_leaves_one_verified_release() {
    let url = test_env("ROLLBACK_TEST_SSH");
    let fleet = Fleet::new("crash-ssh", &[("prod-a", None)]);
    fleet.write_config("");
    let path = fleet.dir().join("rollback.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replacen(
            "name = \"prod-a\"\n",
            &format!("name = \"prod-a\"\ndocker = \"{url}\"\n"),
            1,
        ),
    )
    .unwrap();
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    let env = ssh_env();
    let run = fleet.run_env(&["deploy", "--tag", "v1"], &as_refs(&env));
    assert_eq!(run.code, 0, "{}", run.explain());

    // Paused 2 s in the verification of v2; the master dies meanwhile.
    let mut paused = as_refs(&env);
    paused.push(("ROLLBACK_TEST_PAUSE_AT", "verifying@prod-a"));
    paused.push(("ROLLBACK_TEST_PAUSE_FOR", "2s"));
    let mut deploy = fleet.spawn(&["deploy", "--tag", "v2"], &paused);
    deploy.wait_for("paused at verifying", WAIT);
    let masters = ssh_masters_of(deploy.pid());
    assert!(
        !masters.is_empty(),
        "the deploy holds a master connection: {}",
        deploy.output_so_far()
    );
    for pid in &masters {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let run = deploy.finish();
    // A clear outcome: the JSON outcome object with its exit code, and a
    // reason whenever it is not deployed.
    let outcome = run.outcome();
    assert_eq!(
        outcome["exit_code"].as_i64(),
        Some(i64::from(run.code)),
        "{}",
        run.explain()
    );
    assert!(
        [0, 1, 3, 4].contains(&run.code),
        "exit {}: {}",
        run.code,
        run.explain()
    );
    if run.code != 0 {
        assert!(
            outcome["reason"].as_str().is_some_and(|r| !r.is_empty())
                || outcome["hosts"][0]["error"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty()),
            "a failure says why: {}",
            run.explain()
        );
    }

    println!(
        "the master killed mid-verify: exit {}, {}",
        run.code, outcome["reason"]
    );
    let recover = fleet.run_env(&["recover"], &as_refs(&env));
    println!(
        "recover: exit {}, {}",
        recover.code,
        recover.outcome()["reason"]
    );
    assert!(
        [0, 3].contains(&recover.code),
        "{}\nthe deploy: {}",
        recover.explain(),
        run.explain()
    );
    let versions = fleet.assert_invariant(&["v1", "v2"]);
    assert_eq!(versions.len(), 1, "{versions:?}");
}

/// A dockerd of this test's own, stopped and wiped when dropped. Never the
/// machine's engine or the shared second engine.
struct OwnEngine {
    dir: PathBuf,
    exec_root: PathBuf,
    config: PathBuf,
    socket: String,
    bridge: String,
    daemon: Option<Child>,
}

impl OwnEngine {
    fn start(name: &str, subnet: u8) -> Self {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bridge = format!("rbd{name}");
        assert!(bridge.len() <= 15, "an interface name fits: {bridge}");
        let ip = |args: &[&str]| Command::new("ip").args(args).status().expect("run ip");
        if !ip(&["link", "show", &bridge]).success() {
            assert!(ip(&["link", "add", &bridge, "type", "bridge"]).success());
            assert!(ip(&[
                "addr",
                "add",
                &format!("172.31.{subnet}.1/24"),
                "dev",
                &bridge
            ])
            .success());
            assert!(ip(&["link", "set", &bridge, "up"]).success());
        }
        let socket = format!("unix://{}/docker.sock", dir.display());
        let driver = docker(None, &["info", "--format", "{{.Driver}}"]);
        let exec_root = PathBuf::from(format!("/run/rb{name}-{}", std::process::id()));
        let config = dir.join("daemon.json");
        let json = serde_json::json!({
            "data-root": dir.join("data"),
            "exec-root": exec_root,
            "pidfile": dir.join("docker.pid"),
            "storage-driver": driver.trim(),
            "bridge": bridge,
            "iptables": false,
            "ip-masq": false,
            "mtu": 1400,
            "hosts": [socket],
        });
        std::fs::write(&config, json.to_string()).unwrap();
        let mut engine = Self {
            dir,
            exec_root,
            config,
            socket,
            bridge,
            daemon: None,
        };
        engine.run();
        engine
    }

    /// Start dockerd and wait until it answers.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.daemon = Some(child);
        let began = Instant::now();
        while !docker_output(Some(&self.socket), &["info"])
            .status
            .success()
        {
            assert!(
                began.elapsed() < WAIT,
                "dockerd did not start; see {}",
                self.dir.join("dockerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM dockerd and wait until it is gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let ids = docker_output(Some(&self.socket), &["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).lines() {
                let _ = docker_output(Some(&self.socket), &["rm", "-f", id]);
            }
        }
        self.stop();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

#[test]
fn dockerd_restarted_mid_deploy_ends_clearly_and_recover_leaves_one_verified_release() {
    let mut engine = OwnEngine::start("h2crash", 213);
    let fleet = Fleet::new("crash-dockerd", &[("prod-a", Some(engine.socket.clone()))]);
    fleet.write_config("");
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.deploy_ok("v1");

    // Paused 3 s in the verification of v2; the engine restarts meanwhile,
    // stopping every container it runs.
    let pause = [
        ("ROLLBACK_TEST_PAUSE_AT", "verifying@prod-a"),
        ("ROLLBACK_TEST_PAUSE_FOR", "3s"),
    ];
    let mut deploy = fleet.spawn(&["deploy", "--tag", "v2"], &pause);
    deploy.wait_for("paused at verifying", WAIT);
    engine.stop();
    engine.run();
    let run = deploy.finish();
    let outcome = run.outcome();
    println!(
        "dockerd restarted mid-verify: exit {}, {}",
        run.code, outcome["reason"]
    );
    assert_eq!(
        outcome["exit_code"].as_i64(),
        Some(i64::from(run.code)),
        "{}",
        run.explain()
    );
    if run.code != 0 {
        assert!(
            outcome["reason"].as_str().is_some_and(|r| !r.is_empty())
                || outcome["hosts"][0]["error"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty()),
            "a failure says why: {}",
            run.explain()
        );
    }

    let recover = fleet.run(&["recover"]);
    println!(
        "recover: exit {}, {}",
        recover.code,
        recover.outcome()["reason"]
    );
    assert!(
        [0, 3].contains(&recover.code),
        "{}\nthe deploy: {}",
        recover.explain(),
        run.explain()
    );
    let versions = fleet.assert_invariant(&["v1", "v2"]);
    assert_eq!(versions.len(), 1, "{versions:?}");
}
