//! Crashes of the parts around a deploy on the real engine: the ssh
//! master connection of an `ssh://` engine killed while the new release
//! is verified. The deploy ends with a clear outcome, and `recover` then
//! leaves one verified release.

use std::time::Duration;

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
