//! The `rollback` binary with bad command lines and bad config files: exit
//! codes, messages naming file, line and key, and nothing touched.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

/// A loopback port that records whether anything connected: an engine
/// address nothing should ever reach when the config is rejected.
struct Tripwire {
    listener: TcpListener,
}

impl Tripwire {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self { listener }
    }

    fn docker(&self) -> String {
        format!("tcp://{}", self.listener.local_addr().unwrap())
    }

    fn assert_untouched(&self) {
        match self.listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("something connected to the engine address from {peer}"),
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("rollback.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn rollback(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::cargo_bin("rollback").unwrap();
    cmd.current_dir(dir.path())
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", dir.path());
    cmd
}

fn config_with(tripwire: &Tripwire, extra: &str) -> String {
    format!(
        "[app]\nname = \"app\"\nrepository = \"127.0.0.1:1/team/app\"\n\n[health]\ndocker = true\n{extra}\n[[hosts]]\nname = \"a\"\ndocker = \"{}\"\n",
        tripwire.docker()
    )
}

#[test]
fn an_unknown_key_exits_2_naming_file_line_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let tripwire = Tripwire::new();
    write_config(
        &dir,
        &config_with(&tripwire, "[container]\nprots = [\"80:80\"]\n"),
    );
    rollback(&dir)
        .args(["deploy", "--tag", "v2"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with(
            "error: rollback.toml:8: unknown field `prots` in [container], expected one of `ports`",
        ));
    tripwire.assert_untouched();
}

#[test]
fn every_changing_command_refuses_a_bad_config_before_touching_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let tripwire = Tripwire::new();
    let path = write_config(
        &dir,
        &config_with(&tripwire, "[container]\nports = [\"127.0.0.1:99999:80\"]\n"),
    );
    for args in [
        vec!["deploy", "--tag", "v2"],
        vec!["undo"],
        vec!["recover"],
        vec!["status"],
        vec!["history"],
        vec!["lock", "release"],
        vec!["deploy", "--tag", "v2", "--dry-run"],
    ] {
        rollback(&dir)
            .args(&args)
            .arg("-c")
            .arg(&path)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "rollback.toml:8: container.ports[0]: invalid port mapping \"127.0.0.1:99999:80\"",
            ));
    }
    tripwire.assert_untouched();
}

#[test]
fn a_missing_variable_names_variable_and_key_and_no_other_value() {
    let dir = tempfile::tempdir().unwrap();
    let tripwire = Tripwire::new();
    write_config(
        &dir,
        &config_with(
            &tripwire,
            "[container]\nenv = { API_KEY = \"${CLI_TEST_SET}\", DB = \"${CLI_TEST_UNSET}\" }\n",
        ),
    );
    rollback(&dir)
        .args(["deploy", "--tag", "v2", "--output", "json"])
        .env("CLI_TEST_SET", "leak-me-not-123")
        .env_remove("CLI_TEST_UNSET")
        .assert()
        .code(2)
        .stderr(
            "error: rollback.toml:8: container.env.DB: environment variable CLI_TEST_UNSET is not set\n",
        )
        .stdout(predicate::str::contains("\"exit_code\":2").and(predicate::str::contains("leak-me-not").not()));
    tripwire.assert_untouched();
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["deploy"],
        vec!["deploy", "--tag", "a", "--digest", "sha256:00"],
        vec!["--output", "yaml", "status"],
        vec!["nonsense"],
    ] {
        rollback(&dir).args(&args).assert().code(2);
    }
    rollback(&dir).arg("--help").assert().code(0);
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    rollback(&dir)
        .arg("status")
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with(
            "error: rollback.toml: cannot read the config file",
        ));
    rollback(&dir)
        .args(["status", "-c", "elsewhere.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with(
            "error: elsewhere.toml: cannot read",
        ));
}

#[test]
fn tag_with_a_bare_tag_needs_a_config() {
    let dir = tempfile::tempdir().unwrap();
    rollback(&dir)
        .args(["tag", "v1", "previous"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("give a full reference"));
    rollback(&dir)
        .args(["tag", "127.0.0.1:1/a/b:v1", "127.0.0.1:1/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the destination must end in :tag"));
}

#[test]
fn an_unreachable_engine_exits_1_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Bound then dropped: connections to it are refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    write_config(
        &dir,
        &format!(
            "[app]\nname = \"app\"\nrepository = \"127.0.0.1:1/team/app\"\n[health]\ndocker = true\n[[hosts]]\nname = \"a\"\ndocker = \"tcp://{closed}\"\n"
        ),
    );
    rollback(&dir)
        .args(["deploy", "--tag", "v2"])
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("[a]").and(predicate::str::contains("nothing was changed")),
        );
}

#[test]
fn completions_are_printed() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        rollback(&dir)
            .args(["completions", shell])
            .assert()
            .code(0)
            .stdout(predicate::str::contains("deploy").and(predicate::str::contains("rollback")));
    }
}

#[test]
fn init_writes_a_file_config_check_accepts_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Tripwire::new();
    let registry = Tripwire::new();
    let repository = format!("{}/team/shop", registry.listener.local_addr().unwrap());
    let host = format!("a={}", engine.docker());
    rollback(&dir)
        .args([
            "init",
            "--name",
            "shop",
            "--repository",
            &repository,
            "--host",
            &host,
        ])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("wrote rollback.toml\nnext:\n"))
        .stdout(predicate::str::contains("rollback config check"));
    let written = std::fs::read_to_string(dir.path().join("rollback.toml")).unwrap();
    assert!(written.starts_with("# rollback.toml:"), "{written}");
    assert!(written.contains("name = \"shop\""), "{written}");

    rollback(&dir)
        .args(["config", "check"])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("rollback.toml: valid\n"))
        .stdout(predicate::str::contains(
            "no host or registry was contacted",
        ));
    let out = rollback(&dir)
        .args(["config", "check", "--output", "json"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["outcome"], "valid");
    assert_eq!(json["hosts"], serde_json::json!(["a"]));

    rollback(&dir)
        .args(["init", "--name", "other"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with(
            "error: rollback.toml: already exists; nothing was written",
        ));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rollback.toml")).unwrap(),
        written
    );
    engine.assert_untouched();
    registry.assert_untouched();
}

#[test]
fn init_with_a_bad_name_or_a_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    rollback(&dir)
        .args(["init", "--name", "shop", "--dry-run"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("name = \"shop\""))
        .stdout(predicate::str::ends_with(
            "nothing written to rollback.toml (dry run)\n",
        ));
    assert!(!dir.path().join("rollback.toml").exists());
    rollback(&dir)
        .args(["init", "--name", "no spaces", "--proxy"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("app.name"));
    assert!(!dir.path().join("rollback.toml").exists());
    rollback(&dir)
        .args(["init", "--host", "just-a-name"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not NAME=URL"));
}

#[test]
fn config_check_exits_2_naming_file_line_and_key_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tripwire = Tripwire::new();
    write_config(
        &dir,
        &config_with(&tripwire, "[health]\nexpect_status = 700\n"),
    );
    rollback(&dir)
        .args(["config", "check"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with("error: rollback.toml:"));
    write_config(&dir, &config_with(&tripwire, "[rollout]\nbatch = 0\n"));
    let out = rollback(&dir)
        .args(["config", "check", "--output", "json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "rollback.toml:8: rollout.batch: must be at least 1",
        ))
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["outcome"], "invalid");
    tripwire.assert_untouched();
}

#[test]
fn config_schema_prints_a_json_schema_that_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = rollback(&dir)
        .args(["config", "schema"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let schema: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["definitions"]["Container"]["additionalProperties"],
        false
    );
    assert_eq!(
        schema["definitions"]["OnFailure"]["enum"],
        serde_json::json!(["rollback-all", "rollback-host", "halt"])
    );
}
