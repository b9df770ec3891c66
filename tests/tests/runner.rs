//! The topology of a self-hosted runner on each host: every job is its own
//! `rollback` process that reaches one host (`--host`), deploys without
//! moving a tag (`--no-promote`), reverts the earlier hosts with
//! `undo --host` when a later one fails, and promotes from the registry
//! alone at the end. Checked as an operator would: which release answers on
//! each host's port and which digest each tag points to.

use rollback_e2e::*;

/// One job: `rollback ARGS` on the runner of one host, exit code asserted.
fn job(fleet: &Fleet, args: &[&str], code: i32) -> Run {
    let run = fleet.run(args);
    assert_eq!(run.code, code, "rollback {args:?}: {}", run.explain());
    run
}

fn version(fleet: &Fleet, i: usize) -> String {
    let (version, status) = fleet
        .answering(i)
        .unwrap_or_else(|| panic!("nothing answers on {}", fleet.hosts[i].name));
    assert_eq!(status, "UP");
    version
}

#[test]
fn per_host_jobs_deploy_revert_and_promote_without_moving_latest_early() {
    let mut fleet = Fleet::two_hosts("runner");
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    let v3 = push_release(&fleet.repo, "v3", "v3", "healthy");
    fleet.write_config("");

    // v1: a deploy job per host, then the promote job.
    for host in ["prod-a", "prod-b"] {
        let run = job(
            &fleet,
            &["deploy", "--host", host, "--no-promote", "--tag", "v1"],
            0,
        );
        let outcome = run.outcome();
        assert_eq!(outcome["outcome"], "deployed");
        assert_eq!(outcome["promoted"], false);
        let hosts = outcome["hosts"].as_array().unwrap();
        assert_eq!(hosts.len(), 1, "only {host} is in the report: {outcome}");
        assert_eq!(hosts[0]["host"], host);
        assert_eq!(fleet.tag_digest("latest"), None, "no tag moved yet");
    }
    let run = job(&fleet, &["promote", "--tag", "v1"], 0);
    assert_eq!(run.outcome()["outcome"], "promoted");
    assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()));
    assert_eq!(fleet.tag_digest("previous"), None);
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1", "v1"]);

    // v2 passes on prod-a and crashes on prod-b: prod-b rolls itself back,
    // the revert job puts v1 back on prod-a, latest never moves.
    fleet.hosts[1].env = "APP_MODE = \"crash\"".into();
    fleet.write_config("");
    job(
        &fleet,
        &["deploy", "--host", "prod-a", "--no-promote", "--tag", "v2"],
        0,
    );
    assert_eq!(version(&fleet, 0), "v2");
    assert_eq!(fleet.running_digest(0), v2);
    assert_eq!(
        version(&fleet, 1),
        "v1",
        "prod-b is not touched by prod-a's job"
    );
    assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()));
    let run = job(
        &fleet,
        &["deploy", "--host", "prod-b", "--no-promote", "--tag", "v2"],
        3,
    );
    assert_eq!(run.outcome()["outcome"], "rolled_back");
    assert_eq!(version(&fleet, 1), "v1");
    assert_eq!(fleet.running_digest(1), v1);

    let dry = job(&fleet, &["undo", "--host", "prod-a", "--dry-run"], 0);
    assert_eq!(
        dry.outcome()["target"]["digest"],
        v1.as_str(),
        "{}",
        dry.explain()
    );
    assert_eq!(version(&fleet, 0), "v2", "a dry run changes nothing");
    let run = job(&fleet, &["undo", "--host", "prod-a"], 0);
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "deployed");
    assert_eq!(outcome["promoted"], false);
    assert_eq!(outcome["hosts"].as_array().unwrap().len(), 1, "{outcome}");
    assert!(
        run.stdout.contains("v1"),
        "undo names the release it put back by its tag: {}",
        run.explain()
    );
    assert_eq!(version(&fleet, 0), "v1", "v1 answers on prod-a again");
    assert_eq!(fleet.running_digest(0), v1);
    assert_eq!(
        fleet.tag_digest("latest"),
        Some(v1.clone()),
        "latest never moved"
    );
    assert_eq!(fleet.tag_digest("previous"), None, "previous never moved");
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1", "v1"]);

    // v3 passes on both; promote moves latest and previous, once.
    fleet.hosts[1].env.clear();
    fleet.write_config("");
    for host in ["prod-a", "prod-b"] {
        job(
            &fleet,
            &["deploy", "--host", host, "--no-promote", "--tag", "v3"],
            0,
        );
        assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()));
    }
    let dry = job(&fleet, &["promote", "--tag", "v3", "--dry-run"], 0);
    let planned = dry.outcome();
    assert_eq!(planned["outcome"], "planned");
    assert_eq!(planned["moves"]["latest"], v3.as_str());
    assert_eq!(planned["moves"]["previous"], v1.as_str());
    assert_eq!(
        fleet.tag_digest("latest"),
        Some(v1.clone()),
        "a dry run moves nothing"
    );
    job(&fleet, &["promote", "--tag", "v3"], 0);
    assert_eq!(fleet.tag_digest("latest"), Some(v3.clone()));
    assert_eq!(fleet.tag_digest("previous"), Some(v1.clone()));
    let run = job(&fleet, &["promote", "--tag", "v3"], 0);
    assert_eq!(run.outcome()["outcome"], "unchanged");
    assert_eq!(fleet.tag_digest("latest"), Some(v3.clone()));
    assert_eq!(
        fleet.tag_digest("previous"),
        Some(v1.clone()),
        "a repeated promote does not make previous the release itself"
    );
    assert_eq!(fleet.assert_invariant(&["v3"]), ["v3", "v3"]);

    // An unknown host is a usage error naming the known ones; nothing changes.
    let run = job(&fleet, &["deploy", "--host", "prod-c", "--tag", "v2"], 2);
    let text = run.all_output();
    assert!(
        text.contains("prod-c") && text.contains("prod-a, prod-b"),
        "{}",
        run.explain()
    );
    job(&fleet, &["undo", "--host", "prod-a", "--host", "nope"], 2);
    assert_eq!(fleet.assert_invariant(&["v3"]), ["v3", "v3"]);
}

#[test]
fn only_the_chosen_hosts_are_contacted() {
    let mut fleet = Fleet::two_hosts("runner-reach");
    // Nothing listens there: contacting prod-b fails the command.
    fleet.hosts[1].docker = Some("tcp://127.0.0.1:9".to_owned());
    push_release(&fleet.repo, "v1", "v1", "healthy");
    fleet.write_config("");
    let run = job(&fleet, &["status"], 1);
    assert!(run.all_output().contains("prod-b"), "{}", run.explain());
    job(&fleet, &["status", "--host", "prod-a"], 0);
    job(&fleet, &["deploy", "--host", "prod-a", "--tag", "v1"], 0);
    assert_eq!(version(&fleet, 0), "v1");
    job(&fleet, &["recover", "--host", "prod-a"], 0);
}
