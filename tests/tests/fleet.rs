//! Fleet deploys through the CLI against two real engines: the failure
//! policies, batches, and the deploy lock. After every deploy each host is
//! checked the way an operator would: which container runs under the app
//! name, which release answers on its port, and where the registry tags point.

use std::time::Duration;

use rollback_e2e::*;

const ROLLBACK_ALL_BATCH_1: &str = "[rollout]\nbatch = 1\non_failure = \"rollback-all\"\n";

/// The host entry of the outcome object.
fn host_outcome<'a>(outcome: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    outcome["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host"] == host))
        .unwrap_or_else(|| panic!("no host {host} in {outcome}"))
}

/// Whether `host` went through `phase` during the run.
fn went_through(run: &Run, host: &str, phase: &str) -> bool {
    run.json_lines()
        .iter()
        .any(|e| e["host"] == host && e["phase"] == phase)
}

#[test]
fn batch_1_rollback_all_reverts_the_verified_host_when_the_next_one_crashes() {
    let mut fleet = Fleet::two_hosts("fleet-all");
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config(ROLLBACK_ALL_BATCH_1);
    fleet.deploy_ok("v1");
    let before = [fleet.running_id(0), fleet.running_id(1)];

    // The same release crashes on prod-b only.
    fleet.hosts[1].env = "APP_MODE = \"crash\"".into();
    fleet.write_config(ROLLBACK_ALL_BATCH_1);
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    assert!(
        went_through(&run, "prod-a", "verified"),
        "prod-a was verified on v2 before prod-b failed: {}",
        run.explain()
    );
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "rolled_back");
    assert_eq!(outcome["promoted"], false);
    for (i, host) in ["prod-a", "prod-b"].iter().enumerate() {
        let h = host_outcome(&outcome, host);
        assert_eq!(h["phase"], "rolled_back", "{outcome}");
        assert_eq!(h["after"]["digest"], v1.as_str(), "{outcome}");
        assert_eq!(
            fleet.running_id(i),
            before[i],
            "[{host}] the original v1 container runs again"
        );
    }
    assert!(
        host_outcome(&outcome, "prod-b")["logs"]
            .to_string()
            .contains("fatal: cannot start"),
        "prod-b's crash log is in the outcome: {outcome}"
    );
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1", "v1"]);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
    assert_eq!(fleet.tag_digest("previous"), None, "no tag moved");
    assert_ne!(fleet.tag_digest("latest"), Some(v2));
}

#[test]
fn halt_leaves_the_failed_host_for_recover_and_rollback_host_keeps_verified_hosts() {
    let mut fleet = Fleet::two_hosts("fleet-policies");
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    fleet.deploy_ok("v1");
    let v1_b = fleet.running_id(1);

    // halt: prod-a verified on v2 stays so, prod-b keeps its crashed
    // container and the retained one; exit 4 until recover decides.
    fleet.hosts[1].env = "APP_MODE = \"crash\"".into();
    fleet.write_config("[rollout]\non_failure = \"halt\"\n");
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 4, "{}", run.explain());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "rollback_failed");
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("halted"),
        "{outcome}"
    );
    let a = host_outcome(&outcome, "prod-a");
    assert_eq!(a["phase"], "verified", "{outcome}");
    assert_eq!(a["after"]["digest"], v2.as_str(), "{outcome}");
    assert_eq!(host_outcome(&outcome, "prod-b")["phase"], "rollback_failed");
    assert_eq!(
        fleet.answering(0),
        Some(("v2".into(), "UP".into())),
        "prod-a keeps v2"
    );
    // The engine lists a container that just died as running until it has
    // cleaned up after it (100-200 ms), and the deploy decides on the
    // `die` event, before that.
    let settled = std::time::Instant::now() + Duration::from_secs(5);
    while !fleet.running(1).is_empty() && std::time::Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        fleet.running(1).is_empty(),
        "the crashed v2 is left on prod-b, stopped"
    );
    assert_eq!(
        fleet.guard.all(fleet.engine(1)).len(),
        2,
        "prod-b keeps v1 retained"
    );
    assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()));

    // recover: prod-b is not healthy, so both hosts get v1 back.
    let run = fleet.run(&["recover"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1", "v1"]);
    assert_eq!(
        fleet.running_id(1),
        v1_b,
        "prod-b runs its original container"
    );

    // rollback-host: prod-a keeps v2, prod-b alone goes back; no tag moves.
    fleet.write_config("[rollout]\non_failure = \"rollback-host\"\n");
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "rolled_back");
    assert_eq!(outcome["promoted"], false);
    let a = host_outcome(&outcome, "prod-a");
    assert_eq!(a["phase"], "done", "{outcome}");
    assert_eq!(a["after"]["digest"], v2.as_str(), "{outcome}");
    let b = host_outcome(&outcome, "prod-b");
    assert_eq!(b["phase"], "rolled_back", "{outcome}");
    assert_eq!(b["after"]["digest"], v1.as_str(), "{outcome}");
    assert_eq!(fleet.answering(0), Some(("v2".into(), "UP".into())));
    assert_eq!(fleet.answering(1), Some(("v1".into(), "UP".into())));
    assert_eq!(fleet.running_id(1), v1_b);
    assert_eq!(
        fleet.guard.all(None).len(),
        1,
        "prod-a's retained v1 is removed: it keeps v2"
    );
    assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()));
    assert!(!fleet.lock_exists(0) && !fleet.lock_exists(1));

    // Fixed: the same release reaches both hosts and moves the tags.
    fleet.hosts[1].env.clear();
    fleet.write_config("");
    fleet.deploy_ok("v2");
    assert_eq!(fleet.assert_invariant(&["v2"]), ["v2", "v2"]);
    assert_eq!(fleet.tag_digest("latest"), Some(v2));
    assert_eq!(fleet.tag_digest("previous"), Some(v1));
}

#[test]
fn batch_2_deploys_both_hosts_at_once_and_reverts_both_on_one_failure() {
    let mut fleet = Fleet::two_hosts("fleet-batch2");
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    let batch_2 = "[rollout]\nbatch = 2\n";
    fleet.write_config(batch_2);
    fleet.deploy_ok("v1");
    let before = [fleet.running_id(0), fleet.running_id(1)];

    // The first host crashes; with batch 1 prod-b would never be touched.
    fleet.hosts[0].env = "APP_MODE = \"crash\"".into();
    fleet.write_config(batch_2);
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    assert!(
        went_through(&run, "prod-b", "switched"),
        "prod-b was switched in the same batch: {}",
        run.explain()
    );
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "rolled_back");
    for (i, host) in ["prod-a", "prod-b"].iter().enumerate() {
        let h = host_outcome(&outcome, host);
        assert_eq!(h["phase"], "rolled_back", "{outcome}");
        assert_eq!(h["after"]["digest"], v1.as_str(), "{outcome}");
        assert_eq!(fleet.running_id(i), before[i], "[{host}]");
    }
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1", "v1"]);
    assert_eq!(fleet.tag_digest("previous"), None);
}

#[test]
fn of_two_deploys_at_once_one_proceeds_and_the_other_is_refused() {
    let fleet = Fleet::two_hosts("fleet-locks");
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    let v3 = push_release(&fleet.repo, "v3", "v3", "healthy");
    fleet.write_config("");
    fleet.deploy_ok("v1");

    // The winner lingers 2s in verification, so a slow machine cannot
    // start the second deploy only after the first is over.
    let linger = [
        ("ROLLBACK_TEST_PAUSE_AT", "verifying"),
        ("ROLLBACK_TEST_PAUSE_FOR", "2s"),
    ];
    let first = fleet.spawn(&["deploy", "--tag", "v2"], &linger);
    let second = fleet.spawn(&["deploy", "--tag", "v2"], &linger);
    let runs = [first.finish(), second.finish()];
    let mut codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [0, 5],
        "one deploys, one is refused:\n{}\n{}",
        runs[0].explain(),
        runs[1].explain()
    );
    let refused = runs.iter().find(|r| r.code == 5).unwrap();
    let outcome = refused.outcome();
    assert_eq!(outcome["outcome"], "locked");
    let holder = &outcome["lock_holder"];
    let winner_deployment = docker(
        None,
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.rollback.deployment\"}}",
            &fleet.running_id(0),
        ],
    );
    assert_eq!(
        holder["deployment"],
        winner_deployment.as_str(),
        "{outcome}"
    );
    assert_eq!(holder["target"], "v2", "{outcome}");
    assert!(
        holder["started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{outcome}"
    );
    assert!(
        refused.all_output().contains(&winner_deployment),
        "the refusal names the holder's deployment: {}",
        refused.explain()
    );
    assert!(
        refused
            .json_lines()
            .iter()
            .all(|e| !["switched", "captured"].contains(&e["phase"].as_str().unwrap_or(""))),
        "the refused deploy touched nothing: {}",
        refused.explain()
    );
    assert_eq!(fleet.assert_invariant(&["v2"]), ["v2", "v2"]);
    assert_eq!(fleet.tag_digest("previous"), Some(v1));

    // A deploy killed while it verifies leaves its locks behind.
    let mut killed = fleet.spawn(
        &["deploy", "--tag", "v3"],
        &[("ROLLBACK_TEST_PAUSE_AT", "verifying")],
    );
    killed.wait_for("paused at verifying on prod-a", Duration::from_secs(30));
    let killed = killed.kill();
    assert!(
        fleet.lock_exists(0) && fleet.lock_exists(1),
        "{}",
        killed.explain()
    );

    let run = fleet.run(&["lock", "status"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    let locks: Vec<_> = run
        .json_lines()
        .into_iter()
        .filter(|l| l["host"].is_string())
        .collect();
    assert_eq!(locks.len(), 2, "{}", run.explain());
    for lock in &locks {
        assert_eq!(lock["lock"]["target"], "v3", "{}", run.explain());
        assert!(lock["lock"]["deployment"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }

    let run = fleet.run(&["lock", "release"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.json_lines()
            .iter()
            .filter(|l| l["released"] == true)
            .count()
            == 2,
        "{}",
        run.explain()
    );
    assert!(!fleet.lock_exists(0) && !fleet.lock_exists(1));
    let run = fleet.run(&["lock", "status"]);
    assert!(
        run.json_lines().iter().all(|l| l["lock"].is_null()),
        "{}",
        run.explain()
    );

    // prod-a was left mid-verify on v3 while prod-b still runs v2: recover
    // cannot promote a release one host never got, so prod-a goes back.
    let run = fleet.run(&["recover"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    assert_eq!(fleet.assert_invariant(&["v2"]), ["v2", "v2"]);
    assert_eq!(fleet.tag_digest("latest"), Some(v2));
    assert_ne!(fleet.tag_digest("latest"), Some(v3));
}
