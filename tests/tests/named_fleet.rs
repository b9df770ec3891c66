//! A host may be named `fleet`, the word the output uses for the deploy as
//! a whole: it deploys, reports and handles a second interrupt like any
//! other host.

use std::time::Duration;

use rollback_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_host_named_fleet_deploys_and_reports_like_any_other() {
    let fleet = Fleet::new(
        "named-fleet",
        &[("fleet", None), ("prod-b", Some(engine_b()))],
    );
    push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    fleet.deploy_ok("v1");

    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    let events = run.json_lines();
    assert!(
        events
            .iter()
            .any(|e| e["host"] == "fleet" && e["phase"] == "verified"),
        "the host's own events name it: {}",
        run.explain()
    );
    assert!(
        events
            .iter()
            .any(|e| e["host"].is_null() && e["phase"] == "promoted"),
        "the deploy's own events name no host: {}",
        run.explain()
    );
    let outcome = run.outcome();
    let host = outcome["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host"] == "fleet"))
        .unwrap_or_else(|| panic!("no host fleet in {outcome}"));
    assert_eq!(host["phase"], "done", "{outcome}");
    assert_eq!(host["after"]["digest"], v2.as_str(), "{outcome}");
    assert_eq!(fleet.assert_invariant(&["v2"]), ["v2", "v2"]);

    let human = rollback(fleet.dir(), &["status"], &[]);
    assert_eq!(human.code, 0, "{}", human.explain());
    assert!(human.stdout.contains("[fleet]"), "{}", human.explain());
}

#[test]
fn a_second_interrupt_while_a_host_named_fleet_rolls_back_exits_4() {
    let fleet = Fleet::new("named-fleet-int", &[("fleet", None)]);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "hang");
    fleet.write_config("");
    fleet.deploy_ok("v1");
    let before = fleet.running_id(0);

    // The first signal starts the rollback, held where the failed release
    // is stopped and the previous one not yet started again; the second
    // gives up waiting while the host has no release running.
    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v2"],
        &[("ROLLBACK_TEST_PAUSE_AT", "rolling_back@fleet")],
    );
    deploy.wait_event("fleet", "verifying", WAIT);
    deploy.signal("TERM");
    deploy.wait_for("paused at rolling_back on fleet", WAIT);
    deploy.signal("TERM");
    let run = deploy.finish();
    assert_eq!(run.code, 4, "{}", run.explain());
    assert!(
        run.stderr
            .contains("[fleet] last seen rolling_back: may be without a healthy release"),
        "{}",
        run.explain()
    );
    assert!(run.stderr.contains("rollback recover"), "{}", run.explain());

    let run = fleet.run(&["recover"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    assert_eq!(fleet.running_id(0), before, "v1's own container runs again");
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1"]);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
}
