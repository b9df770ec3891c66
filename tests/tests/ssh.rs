//! `ssh://` engines: the CLI reaching the machine's engine through the sshd
//! of `scripts/test-env` (root on 127.0.0.1, whose `docker` is the
//! machine's). Every run puts the test env's `ssh` first in PATH (it reads
//! the test env's ssh_config: its known_hosts, no key files, so not the
//! caller's ~/.ssh) and names the agent holding the client key.
//!
//! The containers are inspected with the local `docker`: same engine.

use std::time::Duration;

use rollback_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

/// The environment of a run: the test env's `ssh` and the given agent.
fn ssh_env(agent: &str) -> Vec<(&'static str, String)> {
    let path = format!(
        "{}:{}",
        test_env("ROLLBACK_TEST_SSH_PATH"),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![("PATH", path), ("SSH_AUTH_SOCK", agent.to_owned())]
}

fn agent() -> String {
    test_env("ROLLBACK_TEST_SSH_AUTH_SOCK")
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A one-host fleet whose host names `docker` (an ssh:// URL reaching the
/// machine's engine) in the config.
fn fleet_over(prefix: &str, docker: &str, extra: &str) -> Fleet {
    let fleet = Fleet::new(prefix, &[("prod-a", None)]);
    fleet.write_config(extra);
    let path = fleet.dir().join("rollback.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let config = config.replacen(
        "name = \"prod-a\"\n",
        &format!("name = \"prod-a\"\ndocker = \"{docker}\"\n"),
        1,
    );
    std::fs::write(&path, config).unwrap();
    fleet
}

fn run_ssh(fleet: &Fleet, args: &[&str], agent: &str) -> Run {
    let env = ssh_env(agent);
    fleet.run_env(args, &as_refs(&env))
}

/// The private keys of the test env, which no output may contain.
fn key_material() -> Vec<String> {
    let keys = std::path::Path::new(&test_env("ROLLBACK_TEST_SSH_PATH"))
        .parent()
        .unwrap()
        .join("keys");
    ["client", "other", "host"]
        .iter()
        .flat_map(|k| {
            let text = std::fs::read_to_string(keys.join(k)).unwrap();
            text.lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 20)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_no_key_material(run: &Run) {
    let out = run.all_output();
    assert!(!out.contains("PRIVATE KEY"), "{}", run.explain());
    for line in key_material() {
        assert!(
            !out.contains(&line),
            "key material in the output: {}",
            run.explain()
        );
    }
}

#[test]
fn deploy_rollback_status_and_recover_over_ssh() {
    let url = test_env("ROLLBACK_TEST_SSH");
    let fleet = fleet_over("ssh-deploy", &url, "");
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "crash");
    let v3 = push_release(&fleet.repo, "v3", "v3", "healthy");

    let run = run_ssh(&fleet, &["deploy", "--tag", "v1"], &agent());
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1"]);
    let v1_container = fleet.running_id(0);

    // A crashing v2: the previous release is restored over ssh.
    let run = run_ssh(&fleet, &["deploy", "--tag", "v2"], &agent());
    assert_eq!(run.code, 3, "{}", run.explain());
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1"]);
    assert_eq!(
        fleet.running_id(0),
        v1_container,
        "the same container runs again"
    );
    assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()));

    let run = run_ssh(&fleet, &["status"], &agent());
    assert_eq!(run.code, 0, "{}", run.explain());
    let host = &run.json_lines()[0];
    assert_eq!(host["host"], "prod-a", "{}", run.explain());
    assert_eq!(
        host["container"]["release"]["digest"],
        v1,
        "{}",
        run.explain()
    );

    // A deploy of v3 killed mid-verify, then recover over ssh finishes it.
    let env = ssh_env(&agent());
    let mut env = as_refs(&env);
    env.push(("ROLLBACK_TEST_PAUSE_AT", "verifying@prod-a"));
    let mut deploy = fleet.spawn(&["deploy", "--tag", "v3"], &env);
    deploy.wait_for("paused at verifying", WAIT);
    let killed = deploy.kill();
    assert!(fleet.lock_exists(0), "the killed deploy left its lock");
    let run = run_ssh(&fleet, &["recover"], &agent());
    assert_eq!(
        run.code,
        0,
        "{}\nthe killed deploy: {}",
        run.explain(),
        killed.explain()
    );
    assert_eq!(fleet.assert_invariant(&["v3"]), ["v3"]);
    assert_eq!(fleet.tag_digest("latest"), Some(v3));
    assert_eq!(fleet.tag_digest("previous"), Some(v1));
    assert_no_key_material(&run);
}

#[test]
fn docker_host_ssh_reaches_the_engine_for_a_config_without_hosts() {
    let fleet = Fleet::new("ssh-env", &[("prod-a", None)]);
    push_release(&fleet.repo, "v1", "v1", "healthy");
    fleet.write_config("");
    // The config names no engine: DOCKER_HOST decides.
    let path = fleet.dir().join("rollback.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(!config.contains("docker ="), "{config}");
    let url = test_env("ROLLBACK_TEST_SSH");
    let mut env = ssh_env(&agent());
    env.push(("DOCKER_HOST", url));
    let run = fleet.run_env(&["deploy", "--tag", "v1"], &as_refs(&env));
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1"]);

    // The same run with the engine unreachable over ssh proves DOCKER_HOST was used.
    let refused = format!("ssh://root@127.0.0.1:{}", free_port());
    let mut env = ssh_env(&agent());
    env.push(("DOCKER_HOST", refused.clone()));
    let run = fleet.run_env(&["status"], &as_refs(&env));
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(run.stdout.contains(&refused), "{}", run.explain());
}

/// An ssh failure: exit 1, the host and the cause named, nothing changed.
fn assert_refused(docker: &str, agent: &str, cause: &str) {
    let fleet = fleet_over("ssh-fail", docker, "");
    push_release(&fleet.repo, "v1", "v1", "healthy");
    for args in [&["deploy", "--tag", "v1"][..], &["status"], &["recover"]] {
        let run = run_ssh(&fleet, args, agent);
        assert_eq!(run.code, 1, "{args:?}: {}", run.explain());
        let out = run.all_output();
        assert!(
            out.contains(docker),
            "{args:?} names the engine: {}",
            run.explain()
        );
        assert!(
            out.contains(cause),
            "{args:?} says {cause:?}: {}",
            run.explain()
        );
        assert_no_key_material(&run);
    }
    assert!(fleet.guard.all(None).is_empty(), "nothing was created");
    assert!(!fleet.lock_exists(0));
    assert_eq!(fleet.tag_digest("latest"), None, "no tag moved");
}

#[test]
fn an_unreachable_port_is_exit_1_naming_the_host() {
    let docker = format!("ssh://root@127.0.0.1:{}", free_port());
    assert_refused(&docker, &agent(), "connection refused");
}

#[test]
fn a_refused_key_is_exit_1_naming_the_host() {
    let url = test_env("ROLLBACK_TEST_SSH");
    let other = test_env("ROLLBACK_TEST_SSH_OTHER_AUTH_SOCK");
    assert_refused(
        &url,
        &other,
        "permission denied: the host accepted none of the keys offered",
    );
}

#[test]
fn an_unknown_host_key_is_exit_1_naming_the_host() {
    // known_hosts has the key under [127.0.0.1]:PORT only.
    let url = test_env("ROLLBACK_TEST_SSH").replace("127.0.0.1", "localhost");
    assert_refused(
        &url,
        &agent(),
        "host key verification failed: the host's key is not in known_hosts",
    );
}

/// Removes the local engine's proxy container on drop.
struct ProxyGuard;

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        let _ = docker_output(None, &["rm", "-f", "rollback-proxy"]);
    }
}

/// Start-first behind the proxy, with the engine reached only over
/// ssh://: the proxy is booted, switched and the new container probed
/// through the engine, never through a port of the host but the public one.
#[test]
fn start_first_behind_the_proxy_over_ssh() {
    let url = test_env("ROLLBACK_TEST_SSH");
    let fleet = Fleet::new("ssh-proxy", &[("prod-a", None)]);
    let _ = docker_output(None, &["rm", "-f", "rollback-proxy"]);
    let _proxy = ProxyGuard;
    let port = free_port();
    let config = format!(
        "[app]\nname = \"{app}\"\nrepository = \"{repo}\"\n\n\
         [container]\nstop_timeout = \"1s\"\n\n\
         [proxy]\nlisten = \"127.0.0.1:{port}\"\napp_port = 8080\ndrain = \"1s\"\n\n\
         [health]\npath = \"/health\"\njson_pointer = \"/status\"\nexpect = \"UP\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\ndeadline = \"10s\"\nstable_for = \"1s\"\n\n\
         [[hosts]]\nname = \"prod-a\"\ndocker = \"{url}\"\n",
        app = fleet.app,
        repo = fleet.repo,
    );
    std::fs::write(fleet.dir().join("rollback.toml"), config).unwrap();
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "crash");
    let v3 = push_release(&fleet.repo, "v3", "v3", "healthy");
    let version = || http_get(port, "/version").map(|v| v.trim().to_owned());

    let run = run_ssh(&fleet, &["deploy", "--tag", "v1"], &agent());
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(version().as_deref(), Some("v1"), "{}", run.explain());

    let run = run_ssh(&fleet, &["deploy", "--tag", "v2"], &agent());
    assert_eq!(run.code, 3, "{}", run.explain());
    assert_eq!(version().as_deref(), Some("v1"));

    let run = run_ssh(&fleet, &["deploy", "--tag", "v3"], &agent());
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(version().as_deref(), Some("v3"));
    assert_eq!(fleet.running_digest(0), v3);
    let running = fleet.running(0);
    assert_eq!(running.len(), 1, "one app container: {running:?}");
    let name = docker(None, &["inspect", "-f", "{{.Name}}", &running[0]]);
    assert_eq!(
        name.trim(),
        format!("/{}", fleet.app),
        "renamed to the app name"
    );
    assert_no_key_material(&run);
}
