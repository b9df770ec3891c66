//! The safety promise at its edges: one actor per app, tags that move only
//! together and only over the `latest` the deploy began with, a subset of
//! the hosts that promotes nothing. Each test runs the `rollback` binary
//! against the real engine and a real registry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rollback_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

/// Give host `i` of `fleet` the port `port` (this file's range is 19100-19199).
fn with_ports(mut fleet: Fleet, first: u16) -> Fleet {
    for (i, host) in fleet.hosts.iter_mut().enumerate() {
        host.port = first + i as u16;
    }
    fleet
}

/// An HTTP proxy on `127.0.0.1:0` in front of the test registry that answers
/// 500 to the manifest PUTs of the tags in `failing`, and forwards every
/// other request, one request per connection.
struct FailingRegistry {
    port: u16,
    refused: Arc<AtomicUsize>,
}

impl FailingRegistry {
    fn start(failing: &'static [&'static str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the registry proxy");
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        let upstream = registry();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let _ = forward(client, &upstream, failing, &counter);
                });
            }
        });
        Self { port, refused }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Serve one request of `client`: refuse it, or pass it and its answer
/// through with `Connection: close`, so the next request comes on a new
/// connection and is looked at too.
fn forward(
    client: TcpStream,
    upstream: &str,
    failing: &[&str],
    refused: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        if !line.to_ascii_lowercase().starts_with("connection:") && !end {
            head.push(line);
        }
        if end {
            break;
        }
    }
    let request = head.first().cloned().unwrap_or_default();
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let refuse = method == "PUT"
        && failing
            .iter()
            .any(|tag| path.ends_with(&format!("/manifests/{tag}")));
    let mut client = client;
    if refuse {
        refused.fetch_add(1, Ordering::SeqCst);
        let length: u64 = head
            .iter()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
        client.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut server = TcpStream::connect(upstream)?;
    let mut text = head.concat();
    text.push_str("Connection: close\r\n\r\n");
    server.write_all(text.as_bytes())?;
    let mut to_server = server.try_clone()?;
    let body = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut to_server);
    });
    std::io::copy(&mut server, &mut client)?;
    let _ = client.shutdown(std::net::Shutdown::Both);
    drop(body);
    Ok(())
}

/// Invariant 2: the registry answering 5xx to the `previous` PUT moves no
/// tag; the failed copy is named, and the hosts keep the verified release.
#[test]
fn a_failed_previous_copy_moves_no_tag_and_is_named() {
    let proxy = FailingRegistry::start(&["previous"]);
    let fleet = with_ports(
        Fleet::in_registry("safe-prev", &proxy.address(), &[("prod-a", None)]),
        19100,
    );
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    // The first deploy has no `latest` to keep: only `latest` is written.
    fleet.deploy_ok("v1");

    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 1, "{}", run.explain());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "promotion_failed", "{outcome}");
    assert_eq!(outcome["promoted"], false);
    let reason = outcome["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(":latest not moved") && reason.contains(":previous could not be set"),
        "the failed copy is named: {reason}"
    );
    assert!(proxy.refused() >= 1, "the PUT of previous was refused");
    assert_eq!(fleet.tag_digest("latest"), Some(v1), "latest did not move");
    assert_eq!(fleet.tag_digest("previous"), None);
    assert_eq!(fleet.answering(0), Some(("v2".into(), "UP".into())));
    assert!(!fleet.lock_exists(0));
}

/// Invariant 2: the registry answering 5xx to the `latest` PUT leaves
/// `latest` where it was and ends with exit 1.
#[test]
fn a_failed_latest_copy_ends_with_exit_1_and_latest_unmoved() {
    let proxy = FailingRegistry::start(&["latest"]);
    let fleet = with_ports(
        Fleet::in_registry("safe-latest", &proxy.address(), &[("prod-a", None)]),
        19102,
    );
    push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 1, "{}", run.explain());
    assert_eq!(run.outcome()["outcome"], "promotion_failed");
    assert!(proxy.refused() >= 1, "the PUT of latest was refused");
    assert_eq!(fleet.tag_digest("latest"), None, "latest was not written");
    assert_eq!(fleet.answering(0), Some(("v2".into(), "UP".into())));
    assert!(!fleet.lock_exists(0));
}

/// Invariant 2: `latest` moved by someone else while the deploy ran is not
/// overwritten; the deploy ends `stable_moved` with exit 1, the hosts keep
/// the verified release, and `previous` stays.
#[test]
fn latest_moved_during_the_deploy_is_not_overwritten() {
    let fleet = with_ports(
        Fleet::new(
            "safe-moved",
            &[("prod-a", None), ("prod-b", Some(engine_b()))],
        ),
        19104,
    );
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    let v3 = push_release(&fleet.repo, "v3", "v3", "healthy");
    fleet.write_config("[rollout]\nbatch = 2\n");
    fleet.deploy_ok("v1");
    assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()));

    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v3"],
        &[
            ("ROLLBACK_TEST_PAUSE_AT", "promoting"),
            ("ROLLBACK_TEST_PAUSE_FOR", "2s"),
        ],
    );
    deploy.wait_for("paused at promoting", WAIT);
    // Another actor promotes v2 meanwhile.
    let moved = fleet.run(&["tag", "v2", "latest"]);
    assert_eq!(moved.code, 0, "{}", moved.explain());
    let run = deploy.finish();
    assert_eq!(run.code, 1, "{}", run.explain());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "stable_moved", "{outcome}");
    assert_eq!(outcome["promoted"], false);
    let reason = outcome["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("latest was moved by someone else") && reason.contains("no tag was moved"),
        "{reason}"
    );
    assert_eq!(fleet.tag_digest("latest"), Some(v2), "not overwritten");
    assert_eq!(fleet.tag_digest("previous"), None, "previous untouched");
    for i in 0..2 {
        assert_eq!(fleet.answering(i), Some(("v3".into(), "UP".into())));
        assert_eq!(fleet.running_digest(i), v3);
        assert_eq!(
            fleet.guard.all(fleet.engine(i)).len(),
            1,
            "nothing retained"
        );
        assert!(!fleet.lock_exists(i));
    }
}

/// Invariant 2: a deploy limited by `--host` to some of the hosts moves no
/// tag unless `--promote` says so, and says why.
#[test]
fn a_subset_of_the_hosts_moves_no_tag_without_promote() {
    let fleet = with_ports(Fleet::two_hosts("safe-subset"), 19110);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    fleet.deploy_ok("v1");

    let run = fleet.run(&["deploy", "--tag", "v2", "--host", "prod-a"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "deployed", "{outcome}");
    assert_eq!(outcome["promoted"], false);
    assert!(
        run.stderr
            .contains("latest is not moved: --host leaves out prod-b"),
        "the note says why: {}",
        run.explain()
    );
    assert!(run.stdout.contains("not promoted"), "{}", run.explain());
    assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()), "latest stays");
    assert_eq!(fleet.tag_digest("previous"), None);
    assert_eq!(fleet.answering(0), Some(("v2".into(), "UP".into())));
    assert_eq!(fleet.answering(1), Some(("v1".into(), "UP".into())));
    assert_eq!(fleet.guard.all(None).len(), 1, "nothing retained on prod-a");

    // The rest of the fleet, promoted on purpose.
    let run = fleet.run(&["deploy", "--tag", "v2", "--host", "prod-b", "--promote"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(run.outcome()["promoted"], true);
    assert_eq!(fleet.tag_digest("latest"), Some(v2));
    assert_eq!(fleet.tag_digest("previous"), Some(v1));
    assert_eq!(fleet.assert_invariant(&["v2"]), ["v2", "v2"]);
}

/// Invariant 1: `recover` (even `--force`) and a second deploy started
/// beside a live deploy change nothing and end with exit 5; the deploy
/// finishes and frees its own lock.
#[test]
fn recover_beside_a_live_deploy_is_refused_and_the_deploy_finishes() {
    let mut fleet = with_ports(Fleet::new("safe-live", &[("prod-a", None)]), 19120);
    fleet.hosts[0].env = "SLOW_SECS = \"8\"".to_owned();
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "slow");
    fleet.write_config("");
    let path = fleet.dir().join("rollback.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace("deadline = \"5s\"", "deadline = \"30s\""),
    )
    .unwrap();
    fleet.deploy_ok("v1");

    let mut deploy = fleet.spawn(&["deploy", "--tag", "v2"], &[]);
    deploy.wait_event("prod-a", "verifying", WAIT);
    std::thread::sleep(Duration::from_secs(3));
    let containers = fleet.guard.all(None);
    assert!(fleet.lock_exists(0));

    for args in [&["recover"][..], &["recover", "--force"]] {
        let run = fleet.run(args);
        assert_eq!(
            run.code,
            5,
            "{args:?} beside a live deploy: {}",
            run.explain()
        );
        let outcome = run.outcome();
        assert_eq!(outcome["outcome"], "locked", "{outcome}");
        let reason = outcome["reason"].as_str().unwrap_or_default();
        let pid = format!("pid {}", deploy.pid());
        for part in [
            " of v2 by ",
            pid.as_str(),
            "taken ",
            "its holder still runs",
        ] {
            assert!(reason.contains(part), "{part:?} in {reason}");
        }
        assert_eq!(
            fleet.guard.all(None),
            containers,
            "{args:?} changed nothing"
        );
        assert!(fleet.lock_exists(0), "the live deploy keeps its lock");
    }
    let third = fleet.run(&["deploy", "--tag", "v1"]);
    assert_eq!(third.code, 5, "a second deploy: {}", third.explain());
    assert_eq!(fleet.guard.all(None), containers);

    let run = deploy.finish();
    assert_eq!(run.code, 0, "the live deploy: {}", run.explain());
    assert_eq!(run.outcome()["outcome"], "deployed");
    assert!(!fleet.lock_exists(0), "the deploy released its own lock");
    assert_eq!(fleet.assert_invariant(&["v2"]), ["v2"]);
}

/// Invariant 1 and 3: a deploy killed after the switch leaves its lock;
/// its holder is gone (same machine, no such process), so `recover`
/// takes the lock, finishes, and leaves no lock.
#[test]
fn recover_takes_over_the_lock_of_a_killed_deploy() {
    let fleet = with_ports(Fleet::new("safe-dead", &[("prod-a", None)]), 19122);
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    fleet.deploy_ok("v1");
    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v2"],
        &[("ROLLBACK_TEST_PAUSE_AT", "verifying@prod-a")],
    );
    deploy.wait_for("paused at verifying", WAIT);
    let killed = deploy.kill();
    assert_eq!(killed.code, -1, "{}", killed.explain());
    assert!(fleet.lock_exists(0));
    let run = fleet.run(&["recover"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout.contains("took over the lock of deployment")
            && run.stdout.contains("its holder is gone"),
        "{}",
        run.explain()
    );
    assert_eq!(fleet.assert_invariant(&["v2"]), ["v2"]);
}

/// An internal error (an input the host's state does not take, fed at the
/// start of the verification through the test checkpoint) is an `error`
/// event and a safe stop: the host is treated as failed and the previous
/// release comes back, verified (exit 3), in the build users run as well.
#[test]
fn an_internal_error_is_an_error_event_and_a_safe_stop() {
    let fleet = with_ports(Fleet::new("safe-fault", &[("prod-a", None)]), 19124);
    push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    fleet.write_config("");
    fleet.deploy_ok("v1");
    let run = fleet.run_env(
        &["deploy", "--tag", "v2"],
        &[("ROLLBACK_TEST_FAULT_AT", "verifying@prod-a")],
    );
    assert_eq!(run.code, 3, "{}", run.explain());
    let lines = run.json_lines();
    let error = lines
        .iter()
        .find(|l| l["kind"] == "error")
        .unwrap_or_else(|| panic!("an error event: {}", run.explain()));
    assert_eq!(error["host"], "prod-a");
    assert!(
        error["detail"]
            .as_str()
            .is_some_and(|d| d.contains("internal error: invalid transition")),
        "{error}"
    );
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "rolled_back", "{outcome}");
    assert!(
        outcome["hosts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("stopped safely after an internal error")),
        "{outcome}"
    );
    assert_eq!(fleet.assert_invariant(&["v1"]), ["v1"]);
    assert_ne!(fleet.tag_digest("latest"), Some(v2));
    assert_eq!(
        fleet.guard.all(None).len(),
        1,
        "the failed container is gone"
    );
}
