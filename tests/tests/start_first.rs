//! Start-first deploys behind `[proxy]` end to end, against the real engines
//! and the `caddy:2` stand-in: the new release starts beside the old one, is
//! probed directly, takes the traffic only once healthy and gives it back at
//! once when it fails inside `stable_for`, all of it under a load loop on
//! the proxy's public address. Then a kill at each start-first checkpoint
//! followed by `rollback recover`, a proxy that dies or refuses a change
//! mid-deploy, and a fleet whose second proxy cannot boot.
//!
//! Each app is routed by a `Host` of its own, so the proxy of an engine
//! may serve other apps meanwhile; the tests that kill the proxy or break
//! its admin API wait until it serves none. Tests of this file take turns
//! (see [`turn`]).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rollback_e2e::*;

/// The proxy container `[proxy]` manages on each engine.
const PROXY: &str = "rollback-proxy";
const WAIT: Duration = Duration::from_secs(60);
/// Three threads, one request each per 20 ms: about 150 requests a second.
const THREADS: usize = 3;
const EVERY: Duration = Duration::from_millis(20);

static TURN: Mutex<()> = Mutex::new(());

/// A test's turn at the proxies; when it ends, a proxy that serves no app
/// of another process is removed.
struct Turn {
    _turn: MutexGuard<'static, ()>,
}

fn turn() -> Turn {
    // A test that failed holding the turn still hands it on.
    Turn {
        _turn: TURN.lock().unwrap_or_else(|e| e.into_inner()),
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        for engine in [None, Some(engine_b())] {
            if others_behind_proxy(engine.as_deref()).is_empty() {
                let _ = docker_output(engine.as_deref(), &["rm", "-f", PROXY]);
            }
        }
    }
}

/// Running apps of other processes on the proxy's network of the engine.
fn others_behind_proxy(engine: Option<&str>) -> Vec<String> {
    let out = docker_output(
        engine,
        &[
            "ps",
            "--filter",
            "network=rollback",
            "--filter",
            "label=io.rollback.app",
            "--format",
            "{{.Label \"io.rollback.app\"}}",
        ],
    );
    let ours = format!("-{}-", std::process::id());
    let mut apps: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|app| !app.contains(&ours))
        .map(str::to_owned)
        .collect();
    apps.sort();
    apps.dedup();
    apps
}

/// Wait until the engine's proxy serves no app of another process, before
/// a test breaks it.
fn alone_behind_proxy(engine: Option<&str>) {
    let end = Instant::now() + Duration::from_secs(300);
    loop {
        let others = others_behind_proxy(engine);
        if others.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "the proxy {PROXY} on {engine:?} still serves {others:?} after 5 minutes: not breaking it"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// The loopback port the engine's proxy publishes: the one it has when it
/// exists (a deploy keeps a proxy that exists), else a free one to boot it on.
fn proxy_port(engine: Option<&str>) -> u16 {
    let out = docker_output(
        engine,
        &["inspect", "-f", "{{json .HostConfig.PortBindings}}", PROXY],
    );
    let bound: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    bound
        .as_ref()
        .and_then(|b| {
            b.as_object()?.values().next()?[0]["HostPort"]
                .as_str()?
                .parse()
                .ok()
        })
        .unwrap_or_else(free_port)
}

/// The public address to configure for `port`: the one the engine's proxy
/// records when it publishes that port (every app behind a proxy must name
/// it alike), else `127.0.0.1:port`.
fn listen_for(engine: Option<&str>, port: u16) -> String {
    let out = docker_output(
        engine,
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.rollback.proxy.listen\"}}",
            PROXY,
        ],
    );
    let recorded = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && recorded.ends_with(&format!(":{port}")) {
        recorded
    } else {
        format!("127.0.0.1:{port}")
    }
}

/// The `Host` the app is routed by.
fn vhost(fleet: &Fleet) -> String {
    format!("{}.test", fleet.app)
}

/// `rollback.toml` behind a proxy publishing `port` for the fleet's hosts:
/// short health timings, `stable_for` as given, `env` the body of the
/// `[container]` env table.
fn write_config(fleet: &Fleet, port: u16, stable_for: &str, env: &str) {
    let listen = listen_for(fleet.engine(0), port);
    let mut text = format!(
        r#"[app]
name = "{app}"
repository = "{repo}"

[container]
stop_timeout = "1s"
env = {{ {env} }}

[proxy]
listen = "{listen}"
app_port = 8080
drain = "1s"
host = "{vhost}"

[health]
path = "/health"
json_pointer = "/status"
expect = "UP"
interval = "200ms"
timeout = "1s"
deadline = "10s"
stable_for = "{stable_for}"
"#,
        app = fleet.app,
        repo = fleet.repo,
        vhost = vhost(fleet),
    );
    for host in &fleet.hosts {
        text.push_str(&format!("\n[[hosts]]\nname = \"{}\"\n", host.name));
        if let Some(docker) = &host.docker {
            text.push_str(&format!("docker = \"{docker}\"\n"));
        }
    }
    std::fs::write(fleet.dir().join("rollback.toml"), text).expect("write rollback.toml");
}

/// One host, `prod-a` on `engine`, and the port of its proxy.
fn one_host(prefix: &str, engine: Option<String>) -> (Fleet, u16) {
    let port = proxy_port(engine.as_deref());
    (Fleet::new(prefix, &[("prod-a", engine)]), port)
}

/// The trimmed body of a 200 answer to the app's `GET path` on `port`.
fn via_proxy(fleet: &Fleet, port: u16, path: &str) -> Option<String> {
    match http_status(port, &vhost(fleet), path) {
        Ok((200, body)) => Some(body.trim().to_owned()),
        _ => None,
    }
}

/// Whether a container of that name (or id) exists on the engine.
fn exists(engine: Option<&str>, name: &str) -> bool {
    docker_output(engine, &["inspect", name]).status.success()
}

fn next_name(fleet: &Fleet) -> String {
    format!("{}--rollback-next", fleet.app)
}

/// Check what a user checks after a deploy on host `i`: exactly one
/// container of the app exists and runs, named like the app, running
/// `digest`; the proxy on `port` answers `version` (and its health UP) from
/// it and routes to it; no `--rollback-next` container and no lock are
/// left. Returns the container's id.
fn assert_serves(fleet: &Fleet, i: usize, port: u16, version: &str, digest: &str) -> String {
    let name = &fleet.hosts[i].name;
    let engine = fleet.engine(i);
    let id = fleet.running_id(i);
    assert_eq!(
        fleet.guard.all(engine),
        [id[..12].to_owned()],
        "[{name}] the app's only container is {} ({id})",
        fleet.app
    );
    assert_eq!(
        fleet.running_digest(i),
        digest,
        "[{name}] {} runs {version}'s digest",
        fleet.app
    );
    assert!(
        !exists(engine, &next_name(fleet)),
        "[{name}] {} is left",
        next_name(fleet)
    );
    assert!(!fleet.lock_exists(i), "[{name}] a deploy lock is left");
    for _ in 0..10 {
        assert_eq!(
            via_proxy(fleet, port, "/version").as_deref(),
            Some(version),
            "[{name}] the proxy on {port} answers from {version}"
        );
    }
    let health: serde_json::Value = serde_json::from_str(
        &via_proxy(fleet, port, "/health").expect("the proxy answers /health"),
    )
    .expect("/health is JSON");
    assert_eq!(health["status"], "UP", "[{name}] {health}");
    assert_eq!(health["version"], version, "[{name}] {health}");
    let status = rollback(fleet.dir(), &["proxy", "status", "--output", "json"], &[]);
    assert_eq!(status.code, 0, "{}", status.explain());
    let line = status
        .json_lines()
        .into_iter()
        .find(|l| l["host"] == name.as_str())
        .unwrap_or_else(|| panic!("no proxy status of {name}: {}", status.explain()));
    assert!(
        line["primary"]
            .as_str()
            .is_some_and(|p| p.starts_with(&id[..12])),
        "[{name}] the proxy routes to {id}: {line}"
    );
    id
}

/// The deploy's events of `phase`.
fn events_in(run: &Run, phase: &str) -> Vec<serde_json::Value> {
    run.json_lines()
        .into_iter()
        .filter(|e| e["phase"] == phase && e.get("seq").is_some())
        .collect()
}

/// The reason of the outcome and every host's error, in one text.
fn reasons(run: &Run) -> String {
    let outcome = run.outcome();
    let mut text = outcome["reason"].as_str().unwrap_or_default().to_owned();
    for host in outcome["hosts"].as_array().into_iter().flatten() {
        if let Some(e) = host["error"].as_str() {
            text.push('\n');
            text.push_str(e);
        }
    }
    text
}

/// A load loop running while `during` does, with half a second on either
/// side so the loop is seen serving before and after.
fn under_load<T>(fleet: &Fleet, port: u16, during: impl FnOnce() -> T) -> (T, Load) {
    let load = load_loop(port, &vhost(fleet), "/version", THREADS, EVERY);
    std::thread::sleep(Duration::from_millis(500));
    let out = during();
    std::thread::sleep(Duration::from_millis(500));
    (out, load.stop())
}

#[test]
fn a_release_slow_to_start_takes_over_under_load_without_a_failed_request() {
    let _turn = turn();
    let (fleet, port) = one_host("sf-slow", None);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "slow");
    write_config(&fleet, port, "2s", "");
    fleet.deploy_ok("v1");
    let old = assert_serves(&fleet, 0, port, "v1", &v1);

    let started = Instant::now();
    let (run, seen) = under_load(&fleet, port, || fleet.run(&["deploy", "--tag", "v2"]));
    println!(
        "slow release: deploy {} ms; {}",
        started.elapsed().as_millis(),
        seen.summary()
    );
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(run.outcome()["outcome"], "deployed");
    assert!(
        seen.failed().is_empty(),
        "requests failed during the deploy:\n{}",
        seen.failures()
    );
    assert!(seen.ok() > 100, "the load loop ran: {}", seen.summary());
    assert_eq!(seen.versions(), ["v1", "v2"], "{}", seen.summary());

    let new = assert_serves(&fleet, 0, port, "v2", &v2);
    assert_ne!(new, old);
    assert!(!exists(None, &old), "the old container {old} is removed");
    assert_eq!(fleet.tag_digest("latest"), Some(v2));
    assert_eq!(fleet.tag_digest("previous"), Some(v1));
    // The proxy publishes the app: the release itself publishes nothing.
    let ports = docker(
        None,
        &["inspect", "-f", "{{json .HostConfig.PortBindings}}", &new],
    );
    assert!(ports == "{}" || ports == "null", "{ports}");
    let networks = docker(
        None,
        &["inspect", "-f", "{{json .NetworkSettings.Networks}}", &new],
    );
    assert!(networks.contains("\"rollback\""), "{networks}");
}

/// v1 serves under load; deploying a v2 in `mode` is rolled back before
/// v2 ever gets a request.
fn a_bad_release_never_takes_a_request(prefix: &str, mode: &str) -> Run {
    let _turn = turn();
    let (fleet, port) = one_host(prefix, None);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", mode);
    write_config(&fleet, port, "2s", "");
    fleet.deploy_ok("v1");
    let old = assert_serves(&fleet, 0, port, "v1", &v1);

    let (run, seen) = under_load(&fleet, port, || fleet.run(&["deploy", "--tag", "v2"]));
    println!("{mode} release: {}", seen.summary());
    assert_eq!(run.code, 3, "{}", run.explain());
    assert_eq!(run.outcome()["outcome"], "rolled_back");
    assert!(
        seen.failed().is_empty(),
        "requests failed during the deploy:\n{}",
        seen.failures()
    );
    assert!(seen.ok() > 100, "the load loop ran: {}", seen.summary());
    assert_eq!(
        seen.versions(),
        ["v1"],
        "only v1 answered: {}",
        seen.summary()
    );
    assert!(
        events_in(&run, "switched").is_empty(),
        "the proxy never switched to v2: {}",
        run.explain()
    );
    assert_eq!(
        assert_serves(&fleet, 0, port, "v1", &v1),
        old,
        "v1's container kept running"
    );
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
    run
}

#[test]
fn a_crashing_release_is_rolled_back_without_taking_a_request() {
    let run = a_bad_release_never_takes_a_request("sf-crash", "crash");
    let host = &run.outcome()["hosts"][0];
    assert!(
        host["logs"].as_array().is_some_and(|l| l.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("fatal: cannot start")))),
        "the report carries the crashed release's last log lines: {host}"
    );
}

#[test]
fn a_release_answering_down_is_rolled_back_without_taking_a_request() {
    let run = a_bad_release_never_takes_a_request("sf-down", "down");
    // The report's last probe is the restored release's: the new one's
    // answers are its probe events.
    let down = events_in(&run, "verifying")
        .iter()
        .filter(|e| e["kind"] == "probe")
        .all(|e| e["result"]["detail"] == "status is \"DOWN\"");
    assert!(down, "every probe of v2 said DOWN: {}", run.explain());
}

#[test]
fn a_release_dying_inside_stable_for_gives_the_traffic_back_at_once() {
    let _turn = turn();
    let (fleet, port) = one_host("sf-dies", None);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "flaky");
    // v2 is UP as soon as it listens and exits 4 s later, inside stable_for.
    write_config(&fleet, port, "8s", "FLAKY_SECS = \"4\"");
    fleet.deploy_ok("v1");
    let old = assert_serves(&fleet, 0, port, "v1", &v1);

    let (run, seen) = under_load(&fleet, port, || fleet.run(&["deploy", "--tag", "v2"]));
    assert_eq!(run.code, 3, "{}", run.explain());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "rolled_back", "{outcome}");
    let host = &outcome["hosts"][0];
    let switch_back_ms = host["switch_back_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("the host report has switch_back_ms: {host}"));
    // The switch back is done `switch_back_ms` after the failure was seen,
    // which is when the rollback began.
    let failure_seen = events_in(&run, "rolling_back")
        .first()
        .and_then(event_time)
        .unwrap_or_else(|| panic!("a rolling_back event with a time: {}", run.explain()));
    let switched_back = failure_seen + Duration::from_millis(switch_back_ms);
    let during = seen.sent_before(switched_back);
    let after = seen.sent_from(switched_back);
    println!(
        "release dying after 4 s: switch_back_ms {switch_back_ms}; all: {}; \
         before the switch back: {}; after: {}",
        seen.summary(),
        during.summary(),
        after.summary()
    );
    assert!(
        seen.versions().contains(&"v2".to_owned()),
        "v2 took traffic before it died: {}",
        seen.summary()
    );
    assert!(
        during.failed().len() <= 2,
        "at most the odd request is lost while v2 dies:\n{}",
        during.failures()
    );
    assert!(
        after.failed().is_empty(),
        "requests failed after the switch back at {}:\n{}",
        clock_millis(switched_back),
        after.failures()
    );
    assert!(after.ok() > 50, "the loop ran after the switch back");
    assert_eq!(after.versions(), ["v1"], "{}", after.summary());
    assert!(
        run.all_output()
            .contains("traffic switched back to container"),
        "the note on the switch back: {}",
        run.explain()
    );
    assert_eq!(assert_serves(&fleet, 0, port, "v1", &v1), old);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
}

/// `write_config` with `start_period` in `[health]`.
fn write_config_with_start_period(
    fleet: &Fleet,
    port: u16,
    stable_for: &str,
    env: &str,
    start_period: &str,
) {
    write_config(fleet, port, stable_for, env);
    let path = fleet.dir().join("rollback.toml");
    let text = std::fs::read_to_string(&path).expect("read rollback.toml");
    let text = text.replace(
        "[health]\n",
        &format!("[health]\nstart_period = \"{start_period}\"\n"),
    );
    std::fs::write(&path, text).expect("write rollback.toml");
}

#[test]
fn a_down_answer_while_serving_gives_the_traffic_back_inside_the_start_period() {
    let _turn = turn();
    let (fleet, port) = one_host("sf-down-serving", None);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "flap");
    // v2 answers UP for 2 s, then DOWN for 2 s, and so on; the start period
    // covers nearly all of the deadline, but only the time before the
    // first UP counts.
    write_config_with_start_period(&fleet, port, "5s", "FLAP_SECS = \"2\"", "9s");
    fleet.deploy_ok("v1");
    let old = assert_serves(&fleet, 0, port, "v1", &v1);

    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    let why = reasons(&run);
    assert!(
        why.contains("unhealthy after its first healthy answer"),
        "the first DOWN while serving ends it, not the deadline: {why}\n{}",
        run.explain()
    );
    assert!(
        !run.all_output().contains("(start period)"),
        "no DOWN answer is forgiven while serving: {}",
        run.explain()
    );
    // Back at the first DOWN, 2 s after the switch, not at a later one
    // outside the start period or at the deadline.
    let time_of = |phase: &str| {
        events_in(&run, phase)
            .first()
            .and_then(event_time)
            .unwrap_or_else(|| panic!("a {phase} event: {}", run.explain()))
    };
    let served = time_of("rolling_back")
        .duration_since(time_of("switched"))
        .unwrap_or_default();
    assert!(
        served < Duration::from_millis(3500),
        "{served:?}: {}",
        run.explain()
    );
    assert_eq!(assert_serves(&fleet, 0, port, "v1", &v1), old);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
}

#[test]
fn the_stable_window_counts_from_the_traffic_switch() {
    let _turn = turn();
    let (fleet, port) = one_host("sf-window", None);
    push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    write_config(&fleet, port, "2s", "");
    fleet.deploy_ok("v1");
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    // Users are on v2 for all of `stable_for` before it is declared stable.
    let switched = events_in(&run, "switched")
        .first()
        .and_then(event_time)
        .unwrap_or_else(|| panic!("a switched event: {}", run.explain()));
    let verified = events_in(&run, "verified")
        .first()
        .and_then(event_time)
        .unwrap_or_else(|| panic!("a verified event: {}", run.explain()));
    let window = verified.duration_since(switched).unwrap_or_default();
    assert!(
        window >= Duration::from_millis(1990),
        "verified {window:?} after the switch: {}",
        run.explain()
    );
    assert_serves(&fleet, 0, port, "v2", &v2);
}

/// Deploy v1 then v2, SIGKILL the deploy paused at `stage`, then `recover`
/// under load: one healthy release serves afterwards, v2 when `forward`.
fn killed_at_then_recover(stage: &str, recover_code: i32, forward: bool) {
    let _turn = turn();
    let (fleet, port) = one_host(&format!("sf-kill-{}", stage.replace('_', "-")), None);
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    let v2 = push_release(&fleet.repo, "v2", "v2", "healthy");
    write_config(&fleet, port, "2s", "");
    fleet.deploy_ok("v1");
    let old = assert_serves(&fleet, 0, port, "v1", &v1);

    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v2"],
        &[("ROLLBACK_TEST_PAUSE_AT", stage)],
    );
    deploy.wait_for(&format!("paused at {stage} on prod-a"), WAIT);
    let killed = deploy.kill();
    assert_eq!(
        killed.code,
        -1,
        "killed by the signal: {}",
        killed.explain()
    );
    assert!(fleet.lock_exists(0), "the killed deploy left its lock");
    // Before the switch the old release still takes the requests, after it
    // the new one.
    let serving = if stage == "started" { "v1" } else { "v2" };
    assert_eq!(
        via_proxy(&fleet, port, "/version").as_deref(),
        Some(serving),
        "killed at {stage}"
    );
    assert!(
        exists(None, &next_name(&fleet)) && exists(None, &old),
        "killed at {stage}, the new release runs beside the old one"
    );

    let (run, seen) = under_load(&fleet, port, || fleet.run(&["recover"]));
    println!("recover after a kill at {stage}: {}", seen.summary());
    assert_eq!(
        run.code,
        recover_code,
        "recover after a kill at {stage}: {}\nthe killed deploy: {}",
        run.explain(),
        killed.explain()
    );
    assert!(
        seen.failed().is_empty(),
        "requests failed during recover:\n{}",
        seen.failures()
    );
    if forward {
        let new = assert_serves(&fleet, 0, port, "v2", &v2);
        assert_ne!(new, old);
        assert!(!exists(None, &old), "the old container {old} is removed");
        assert_eq!(fleet.tag_digest("latest"), Some(v2));
        assert_eq!(fleet.tag_digest("previous"), Some(v1));
    } else {
        assert_eq!(assert_serves(&fleet, 0, port, "v1", &v1), old);
        assert_eq!(fleet.tag_digest("latest"), Some(v1));
        assert_eq!(fleet.tag_digest("previous"), None);
    }
}

#[test]
fn killed_with_the_new_release_started_recover_removes_it() {
    killed_at_then_recover("started", 3, false);
}

#[test]
fn killed_just_after_the_switch_recover_finishes_forward() {
    killed_at_then_recover("switched", 0, true);
}

#[test]
fn killed_inside_stable_for_recover_finishes_forward() {
    killed_at_then_recover("stable_window", 0, true);
}

#[test]
fn killed_while_draining_recover_finishes_forward() {
    killed_at_then_recover("draining", 0, true);
}

/// `/version` answered inside the app's container, not through the proxy.
fn version_inside(engine: Option<&str>, id: &str) -> String {
    docker(
        engine,
        &[
            "exec",
            id,
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/version",
        ],
    )
}

/// After a deploy that failed for the proxy with exit 4 (the old release
/// not known to be restored): `recover`, once the proxy takes changes again.
fn recover_if_asked(fleet: &Fleet, run: &Run) {
    if run.code != 4 {
        return;
    }
    let names = docker(
        fleet.engine(0),
        &[
            "ps",
            "-a",
            "--format",
            "{{.Names}} {{.Status}}",
            "--filter",
            &format!("name={}", fleet.app),
        ],
    );
    println!("left by the exit 4:\n{names}");
    let recovered = fleet.run(&["recover"]);
    println!("recover: exit {}, {}", recovered.code, recovered.outcome());
    assert!(
        [0, 3].contains(&recovered.code),
        "recover once the proxy is back: {}",
        recovered.explain()
    );
}

/// Deploy v1 on prod-b (the proxy is killed: on the engine where no other
/// app is behind it), then v2 in `v2_mode`, `kill` the proxy when `at` says,
/// and check what a user is promised: the verification ends naming the
/// proxy, the proxy is started again and v1, which never stopped, serves
/// through it (exit 3).
fn proxy_killed(prefix: &str, v2_mode: &str, env: &str, at: impl FnOnce(&mut Spawned)) {
    let _turn = turn();
    let engine = engine_b();
    alone_behind_proxy(Some(&engine));
    let (fleet, port) = one_host(prefix, Some(engine.clone()));
    let engine = Some(engine.as_str());
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", v2_mode);
    write_config(&fleet, port, "2s", env);
    fleet.deploy_ok("v1");
    let old = assert_serves(&fleet, 0, port, "v1", &v1);

    let mut deploy = fleet.spawn(
        &["deploy", "--tag", "v2"],
        &[
            ("ROLLBACK_TEST_PAUSE_AT", "started"),
            ("ROLLBACK_TEST_PAUSE_FOR", "2s"),
        ],
    );
    at(&mut deploy);
    let killed = SystemTime::now();
    docker(engine, &["kill", PROXY]);
    let run = deploy.finish();
    let ended = events_in(&run, "rolling_back")
        .first()
        .and_then(event_time)
        .and_then(|t| t.duration_since(killed).ok());
    println!(
        "{prefix}: exit {}, verification ended {:?} after the kill; reason: {}",
        run.code,
        ended,
        reasons(&run)
    );
    assert!(
        events_in(&run, "switched").is_empty(),
        "v2 never took traffic"
    );
    assert_eq!(run.code, 3, "rolled back: {}", run.explain());
    // Seen stopping, or found stopped when the watch began.
    let reason = reasons(&run);
    assert!(
        reason.contains(&format!("the proxy container {PROXY} stopped"))
            || reason.contains(&format!("the proxy container {PROXY} is not running")),
        "the reason names the proxy: {}",
        run.explain()
    );
    assert!(
        ended.is_some_and(|e| e < Duration::from_secs(3)),
        "the verification ended at once, not at its 10 s deadline: {}",
        run.explain()
    );
    let state = docker(engine, &["inspect", "-f", "{{.State.Status}}", PROXY]);
    assert_eq!(state, "running", "the restore started the proxy again");
    assert_eq!(version_inside(engine, &old), "v1");
    assert_eq!(assert_serves(&fleet, 0, port, "v1", &v1), old);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
}

#[test]
fn a_proxy_killed_while_the_new_release_is_verified_ends_it_naming_the_proxy() {
    // v2 listens only after 6 s: the proxy dies while it is probed.
    proxy_killed("sf-proxy-lost", "slow", "SLOW_SECS = \"6\"", |deploy| {
        deploy.wait_event("prod-a", "verifying", WAIT);
        std::thread::sleep(Duration::from_millis(300));
    });
}

#[test]
fn a_proxy_dead_before_the_verification_ends_it_naming_the_proxy() {
    proxy_killed("sf-proxy-dead", "healthy", "", |deploy| {
        deploy.wait_for("paused at started on prod-a", WAIT);
    });
}

/// Caddy's admin API moved to `to` inside the proxy container; while it is
/// away every config change is refused, and the routes stay as they are.
fn move_admin(engine: Option<&str>, from: &str, to: &str) {
    docker(
        engine,
        &[
            "exec",
            PROXY,
            "wget",
            "-q",
            "-O",
            "-",
            "--header",
            "Content-Type: application/json",
            "--post-data",
            &format!(r#"{{"listen":"{to}"}}"#),
            &format!("http://{from}/config/admin"),
        ],
    );
}

#[test]
fn a_proxy_refusing_the_switch_fails_the_deploy_by_name_and_v1_serves_throughout() {
    let _turn = turn();
    let engine = engine_b();
    alone_behind_proxy(Some(&engine));
    let (fleet, port) = one_host("sf-refused", Some(engine.clone()));
    let engine = Some(engine.as_str());
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    write_config(&fleet, port, "2s", "");
    fleet.deploy_ok("v1");
    let old = assert_serves(&fleet, 0, port, "v1", &v1);

    let (run, seen) = under_load(&fleet, port, || {
        let mut deploy = fleet.spawn(
            &["deploy", "--tag", "v2"],
            &[
                ("ROLLBACK_TEST_PAUSE_AT", "started"),
                ("ROLLBACK_TEST_PAUSE_FOR", "3s"),
            ],
        );
        deploy.wait_for("paused at started on prod-a", WAIT);
        move_admin(engine, "127.0.0.1:2019", "127.0.0.1:2999");
        deploy.finish()
    });
    println!(
        "refused switch: {}; exit {}: {}",
        seen.summary(),
        run.code,
        reasons(&run)
    );
    assert!(
        [1, 3, 4].contains(&run.code),
        "the deploy failed: {}",
        run.explain()
    );
    assert_ne!(run.outcome()["outcome"], "deployed");
    assert!(
        reasons(&run).contains(&format!("the proxy {PROXY} refused")),
        "the deploy says the proxy refused: {}",
        run.explain()
    );
    assert!(
        seen.failed().is_empty(),
        "requests failed during the deploy:\n{}",
        seen.failures()
    );
    assert!(seen.ok() > 100, "the load loop ran: {}", seen.summary());
    assert_eq!(seen.versions(), ["v1"], "{}", seen.summary());
    assert_eq!(fleet.running_id(0), old, "v1's container runs on");
    assert_eq!(fleet.tag_digest("latest"), Some(v1.clone()));

    move_admin(engine, "127.0.0.1:2999", "localhost:2019");
    recover_if_asked(&fleet, &run);
    assert_eq!(assert_serves(&fleet, 0, port, "v1", &v1), old);
    assert_eq!(fleet.tag_digest("latest"), Some(v1));
}

#[test]
fn a_fleet_whose_second_proxy_cannot_boot_fails_naming_it_and_v1_serves_on() {
    let _turn = turn();
    // Both engines publish on this machine's loopback, so prod-b's proxy
    // cannot take the address prod-a's holds: as on a host where another
    // server holds the port.
    let engine = engine_b();
    alone_behind_proxy(Some(&engine));
    let _ = docker_output(Some(&engine), &["rm", "-f", PROXY]);
    let fleet = Fleet::two_hosts("sf-fleet");
    let port = proxy_port(None);
    write_config(&fleet, port, "2s", "");
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    let run = fleet.run(&["deploy", "--tag", "v1", "--host", "prod-a"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    let old = assert_serves(&fleet, 0, port, "v1", &v1);
    let latest = fleet.tag_digest("latest");

    let ((run, ended), seen) = under_load(&fleet, port, || {
        let run = fleet.run(&["deploy", "--tag", "v2"]);
        (run, SystemTime::now())
    });
    println!(
        "fleet with prod-b's proxy unable to boot: {}",
        seen.summary()
    );
    let why = reasons(&run);
    assert!(
        why.contains("prod-b") && why.contains(&format!("127.0.0.1:{port}")),
        "the reason names prod-b and the address: {}",
        run.explain()
    );
    assert!(
        seen.failed().is_empty(),
        "requests failed during the deploy:\n{}",
        seen.failures()
    );
    // prod-b's proxy is booted at prod-b's turn: prod-a, first, may have
    // gone ahead and is then switched back (exit 3); booted before any host
    // changes, nothing moves (exit 1).
    match run.code {
        1 => assert_eq!(seen.versions(), ["v1"], "{}", seen.summary()),
        3 => {
            let a = &run.outcome()["hosts"][0];
            assert_eq!(a["phase"], "rolled_back", "{a}");
            assert!(a["switch_back_ms"].is_u64(), "{a}");
            let after = seen.sent_from(ended);
            assert!(
                after.ok() > 0 && after.versions() == ["v1"],
                "{}",
                after.summary()
            );
        }
        _ => panic!("failed before a change, or rolled back: {}", run.explain()),
    }
    assert_eq!(assert_serves(&fleet, 0, port, "v1", &v1), old);
    assert!(
        fleet.guard.all(Some(&engine)).is_empty(),
        "no container of the app on prod-b"
    );
    assert!(!fleet.lock_exists(1), "no lock left on prod-b");
    assert!(
        !exists(Some(&engine), PROXY),
        "the proxy that could not start is not left on prod-b"
    );
    assert_eq!(fleet.tag_digest("latest"), latest, "the tags did not move");
}

/// The load loop itself: what it counts as answered and as failed, and the
/// `Host` it sends.
#[test]
fn the_load_loop_counts_what_it_sends() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for (n, stream) in listener.incoming().take(20).enumerate() {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 512];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let answer = if !request.contains("\r\nHost: shop.test\r\n") {
                "HTTP/1.0 421 Misdirected Request\r\n\r\nwho\n"
            } else if n % 5 == 4 {
                "HTTP/1.0 502 Bad Gateway\r\n\r\nno\n"
            } else {
                "HTTP/1.0 200 OK\r\n\r\nv9\n"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    let before = SystemTime::now() - Duration::from_secs(1);
    let load = load_loop(port, "shop.test", "/version", 1, Duration::from_millis(5));
    server.join().unwrap();
    let seen = load.stop();
    let sent = seen.samples().count();
    assert!(sent >= 20, "{}", seen.summary());
    assert_eq!(seen.ok(), 16, "{}", seen.summary());
    // Beyond the 20 the server answered, every request was refused.
    assert_eq!(seen.failed().len(), 4 + (sent - 20), "{}", seen.failures());
    assert_eq!(seen.versions(), ["v9"]);
    assert!(seen.failures().contains("502 no"), "{}", seen.failures());
    assert_eq!(seen.sent_from(before).samples().count(), sent);
    assert_eq!(seen.sent_before(before).samples().count(), 0);
}
