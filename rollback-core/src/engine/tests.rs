//! Engine tests with the in-memory fakes and mockall mocks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::event::{Event, EventKind, Phase, Scope};
use crate::fake::{Behavior, FakeProbe, FakeRegistry, FakeRuntime, FakeSwitch};
use crate::outcome::{DeployReport, Outcome};
use crate::policy::{OnFailure, RolloutPolicy};
use crate::traffic::Upstream;
use crate::types::{labels, ContainerSpec, ContainerState, ImageRef, LockInfo, Workload};

const S: Duration = Duration::from_secs(1);

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

fn repo() -> Repository {
    "127.0.0.1:5000/team/app".parse().unwrap()
}

fn tag(tag: &str) -> Tag {
    tag.parse().unwrap()
}

fn release(name: &str, c: char) -> Release {
    Release::new(repo(), digest(c)).with_tag(tag(name))
}

fn v1() -> Release {
    release("v1", '1')
}

fn v2() -> Release {
    release("v2", '2')
}

fn template() -> ContainerTemplate {
    ContainerTemplate::new()
        .port("127.0.0.1:18080:8080".parse().unwrap())
        .env(
            "SECRET",
            crate::types::EnvValue::Secret(crate::types::Secret::new("hunter2")),
        )
        .label("team", "ody")
}

/// 1 s interval and attempt limit, no start period, 10 s deadline, 3 s stable.
fn health() -> HealthPolicy {
    policy(S, S, Duration::ZERO, 10 * S, 3 * S)
}

/// The policy of interval, timeout, start period, deadline and stable-for.
fn policy(
    interval: Duration,
    timeout: Duration,
    start_period: Duration,
    deadline: Duration,
    stable_for: Duration,
) -> HealthPolicy {
    HealthPolicy::builder()
        .interval(interval)
        .timeout(timeout)
        .start_period(start_period)
        .deadline(deadline)
        .stable_for(stable_for)
        .build()
        .unwrap()
}

struct Fleet {
    registry: Arc<FakeRegistry>,
    hosts: Vec<Arc<FakeRuntime>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Fleet {
    /// `n` hosts running v1 (container `c1` on each), stable tag at v1, tag v2 pushed.
    fn new(n: usize) -> Self {
        let registry = FakeRegistry::new();
        registry.set_tag(&repo(), "latest", &digest('1'));
        registry.set_tag(&repo(), "v1", &digest('1'));
        registry.set_tag(&repo(), "v2", &digest('2'));
        let hosts = (0..n)
            .map(|_| {
                let rt = FakeRuntime::new();
                rt.add_running("app", "app", &v1());
                rt
            })
            .collect();
        Self {
            registry,
            hosts,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn deployer(&self) -> Deployer {
        self.deployer_with(|_| Strategy::stop_first())
    }

    /// The fleet's deployer, host `i` deployed with `strategy(i)`.
    fn deployer_with(&self, strategy: impl Fn(usize) -> Strategy) -> Deployer {
        let app = App::new("app".parse().unwrap(), repo());
        let targets = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, rt)| {
                HostTarget::new(
                    format!("h{}", i + 1),
                    rt.clone(),
                    rt.clone(),
                    FakeProbe::new(rt.clone()),
                    template(),
                )
                .with_strategy(strategy(i))
            })
            .collect();
        let events = self.events.clone();
        Deployer::new(app, self.registry.clone(), targets)
            .with_health(health())
            .with_holder("tester@ci pid 1".into())
            .with_deployment_id(DeploymentId("d-test".into()))
            // The locks these tests leave behind belong to killed deploys.
            .with_holder_check(Arc::new(|_: &LockInfo| crate::holder::HolderFate::Gone))
            .with_observer(Arc::new(move |e: &Event| {
                events.lock().unwrap().push(e.clone())
            }))
    }

    fn behave(&self, host: usize, release: &Release, behavior: Behavior) {
        self.hosts[host].behave(&release.digest, behavior);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The app container's release tag on host `i`, and whether it runs.
    fn running(&self, i: usize) -> Option<(String, bool)> {
        self.hosts[i].named("app").map(|c| {
            (
                c.release
                    .and_then(|r| r.tag)
                    .map(String::from)
                    .unwrap_or_default(),
                c.state.is_running(),
            )
        })
    }
}

async fn deploy(fleet: &Fleet, deployer: Deployer) -> DeployReport {
    let report = deployer
        .deploy(Target::Tag(tag("v2")), CancellationToken::new())
        .await;
    check_events(&fleet.events());
    check_report(&report);
    report
}

fn check_report(report: &DeployReport) {
    let json = serde_json::to_string(report).unwrap();
    assert!(!json.contains("hunter2"), "secret in report {json}");
}

fn check_events(events: &[Event]) {
    assert!(!events.is_empty());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            i as u64 + 1,
            "events arrive numbered from 1 in order"
        );
        assert!(!e.detail.contains("hunter2"), "secret in event {e:?}");
    }
}

/// The container-changing and lock calls, in order.
fn changes(rt: &FakeRuntime) -> Vec<String> {
    rt.calls_of(&[
        "acquire_lock",
        "pull",
        "stop",
        "rename",
        "create",
        "start",
        "remove",
        "release_lock",
    ])
}

/// The calls of a switch from v1 (`c1`) to v2 (`c2`) on one host, then `after`.
fn switch_then(after: &[&str]) -> Vec<String> {
    let mut calls = vec![
        "acquire_lock app".to_owned(),
        format!("pull {}", v2().image()),
        "rename c1 app--rollback-previous".into(),
        "stop c1".into(),
        "create app sha256:222222222222".into(),
        "start c2".into(),
    ];
    calls.extend(after.iter().map(|c| c.to_string()));
    calls
}

/// What a host running v1 in `c1` sees when v2 (`c2`) fails after its start
/// and v1 is put back: `c1` starts as soon as `c2` has stopped, the logs,
/// the removal and the rename come after.
fn reverted_calls() -> Vec<String> {
    switch_then(&[
        "stop c2",
        "start c1",
        "logs c2",
        "remove c2",
        "rename c1 app",
        "release_lock app",
    ])
}

fn changes_and_logs(rt: &FakeRuntime) -> Vec<String> {
    let mut ops = vec!["logs"];
    ops.extend([
        "acquire_lock",
        "pull",
        "stop",
        "rename",
        "create",
        "start",
        "remove",
        "release_lock",
    ]);
    rt.calls_of(&ops)
}

fn assert_nothing_promoted(fleet: &Fleet) {
    assert!(
        fleet.registry.copies().is_empty(),
        "{:?}",
        fleet.registry.copies()
    );
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('1')));
}

#[tokio::test(start_paused = true)]
async fn healthy_release_is_switched_verified_and_promoted() {
    let fleet = Fleet::new(1);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert_eq!(report.exit_code(), 0);
    assert!(report.promoted);
    assert_eq!(
        changes(&fleet.hosts[0]),
        switch_then(&["remove c1", "release_lock app",])
    );
    assert_eq!(
        fleet.registry.copies(),
        [
            format!("{} -> {}", v1().image(), repo().with_tag(&tag("previous"))),
            format!("{} -> {}", v2().image(), repo().with_tag(&tag("latest"))),
        ]
    );
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('2')));
    assert_eq!(fleet.registry.tag(&repo(), "previous"), Some(digest('1')));
    let app = fleet.hosts[0].named("app").unwrap();
    assert_eq!(app.labels[labels::DIGEST], digest('2').to_string());
    assert_eq!(app.labels[labels::TAG], "v2");
    assert_eq!(app.labels[labels::STABLE_BEFORE], digest('1').to_string());
    assert_eq!(app.labels[labels::DEPLOYMENT], "d-test");
    assert_eq!(app.labels["team"], "ody");
    assert!(app.labels.contains_key(labels::DEPLOYED_AT));
    assert_eq!(
        fleet.hosts[0].containers().len(),
        1,
        "retained container removed"
    );
    assert!(fleet.hosts[0].lock_info().is_none());
    let host = &report.hosts[0];
    assert_eq!(host.phase, Phase::Done);
    assert_eq!(host.before, Some(v1()));
    assert_eq!(host.after, Some(v2()));
    assert_eq!(host.container, Some(Workload::from("c2")));
    let events = fleet.events();
    assert!(events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Probe { .. })));
    assert!(events.iter().any(|e| matches!(e.kind, EventKind::Pull(_))));
    let phases: Vec<Phase> = events
        .iter()
        .filter(|e| e.scope != Scope::Fleet && e.kind == EventKind::Transition)
        .map(|e| e.phase)
        .collect();
    assert_eq!(
        phases,
        [
            Phase::Locked,
            Phase::Captured,
            Phase::Pulled,
            Phase::Switched,
            Phase::Verifying,
            Phase::Verified,
            Phase::Done
        ]
    );
    assert!(events.iter().any(|e| e.phase == Phase::Promoted));
}

#[tokio::test(start_paused = true)]
async fn lock_held_changes_nothing_and_releases_our_other_locks() {
    let fleet = Fleet::new(2);
    let other = LockInfo {
        app: "app".into(),
        deployment: DeploymentId("d-other".into()),
        holder: "alice@laptop pid 7".into(),
        target: "v9".into(),
        started_at: std::time::SystemTime::UNIX_EPOCH,
    };
    fleet.hosts[1].hold_lock(other.clone());
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Locked);
    assert_eq!(report.exit_code(), 5);
    assert_eq!(report.lock_holder, Some(other.clone()));
    assert!(report.reason.unwrap().contains("alice@laptop"));
    assert_eq!(
        changes(&fleet.hosts[0]),
        ["acquire_lock app", "release_lock app"]
    );
    assert_eq!(changes(&fleet.hosts[1]), ["acquire_lock app"]);
    assert_eq!(
        fleet.hosts[1].lock_info(),
        Some(other),
        "their lock is kept"
    );
    assert!(fleet.hosts[0].lock_info().is_none());
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn pull_failure_fails_with_the_old_container_untouched() {
    let fleet = Fleet::new(1);
    fleet.hosts[0].fail("pull", 1, ErrorKind::NotFound);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(report.exit_code(), 1);
    assert_eq!(
        changes(&fleet.hosts[0]),
        [
            "acquire_lock app",
            &format!("pull {}", v2().image()),
            "release_lock app"
        ]
    );
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_eq!(report.hosts[0].phase, Phase::Failed);
    assert_eq!(report.hosts[0].after, Some(v1()));
    assert!(report.hosts[0].error.as_ref().unwrap().contains("pull"));
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn create_failure_restores_the_old_container() {
    let fleet = Fleet::new(1);
    fleet.hosts[0].fail("create", 1, ErrorKind::InvalidInput);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(report.exit_code(), 3);
    assert_eq!(
        changes(&fleet.hosts[0]),
        [
            "acquire_lock app",
            &format!("pull {}", v2().image()),
            "rename c1 app--rollback-previous",
            "stop c1",
            "create app sha256:222222222222",
            "start c1",
            "rename c1 app",
            "release_lock app",
        ]
    );
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_eq!(report.hosts[0].after, Some(v1()));
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn start_failure_removes_the_new_container_and_restores() {
    let fleet = Fleet::new(1);
    fleet.hosts[0].fail("start", 1, ErrorKind::Conflict);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(
        changes(&fleet.hosts[0]),
        switch_then(&[
            "stop c2",
            "start c1",
            "remove c2",
            "rename c1 app",
            "release_lock app",
        ])
    );
    assert_eq!(fleet.hosts[0].containers().len(), 1);
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn a_failed_container_that_will_not_stop_is_removed_before_the_restore_starts() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::Unhealthy);
    // The second stop is the failed release's: it may still hold the port.
    fleet.hosts[0].fail("stop", 2, ErrorKind::Unavailable);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    assert_eq!(
        changes(&fleet.hosts[0]),
        switch_then(&[
            "stop c2",
            "remove c2",
            "start c1",
            "rename c1 app",
            "release_lock app",
        ])
    );
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
}

#[tokio::test(start_paused = true)]
async fn crash_during_start_period_fails_at_once_and_keeps_logs() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::CrashAfter(Duration::from_millis(2500)));
    let policy = policy(S, S, 8 * S, 10 * S, 3 * S);
    let began = Instant::now();
    let report = deploy(&fleet, fleet.deployer().with_health(policy)).await;
    let elapsed = began.elapsed();
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(report.exit_code(), 3);
    assert_eq!(changes_and_logs(&fleet.hosts[0]), reverted_calls());
    // Noticed from the container's state, within one interval of the crash,
    // though the start period still runs; the rest is the restore's 3 s of stable.
    assert!(
        elapsed < Duration::from_millis(2500) + S + 3 * S + S,
        "{elapsed:?}"
    );
    let host = &report.hosts[0];
    assert!(
        host.error.as_ref().unwrap().contains("exited with code 1"),
        "{host:?}"
    );
    assert!(!host.logs.is_empty());
    assert!(host.logs[0].starts_with("c2 "));
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn crash_is_noticed_within_one_interval() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::CrashAfter(Duration::from_millis(2500)));
    let began = Instant::now();
    let report = deploy(&fleet, fleet.deployer()).await;
    let elapsed = began.elapsed();
    assert_eq!(report.outcome, Outcome::RolledBack);
    // Crash at 2.5 s, seen within one 1 s interval, then 3 s of stable restore.
    let restore = 3 * S;
    assert!(
        elapsed <= Duration::from_millis(2500) + S + restore,
        "{elapsed:?}"
    );
    let events = fleet.events();
    let rolling = events
        .iter()
        .find(|e| e.phase == Phase::RollingBack && e.kind == EventKind::Transition)
        .unwrap();
    assert!(rolling.detail.contains("exited with code 1"), "{rolling:?}");
    let probes_before = events
        .iter()
        .filter(|e| e.seq < rolling.seq && matches!(e.kind, EventKind::Probe { .. }))
        .count();
    assert_eq!(probes_before, 3, "probes at 0, 1 and 2 s, then the crash");
}

#[tokio::test(start_paused = true)]
async fn never_healthy_fails_at_the_deadline() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::Unhealthy);
    let began = Instant::now();
    let report = deploy(&fleet, fleet.deployer()).await;
    let elapsed = began.elapsed();
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(report.exit_code(), 3);
    assert_eq!(changes_and_logs(&fleet.hosts[0]), reverted_calls());
    assert!(
        report.reason.as_ref().unwrap().contains("deadline"),
        "{report:?}"
    );
    // 10 s deadline for v2, then v1 verified stable in 3 s.
    assert_eq!(elapsed, 10 * S + 3 * S);
    assert_eq!(
        report.hosts[0].last_probe.as_deref(),
        Some("200 OK"),
        "the last probe was of the restored release"
    );
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn slow_start_within_the_deadline_is_verified_after_stable_for() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::HealthyAfter(4 * S));
    let began = Instant::now();
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    // First healthy probe at 4 s, stable 3 s later.
    assert_eq!(began.elapsed(), 7 * S);
}

#[tokio::test(start_paused = true)]
async fn a_release_that_answers_soon_is_probed_again_before_a_whole_interval() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::HealthyAfter(Duration::from_millis(100)));
    let began = Instant::now();
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    // Probes at 0, 25, 75 and 175 ms: healthy at 175 ms instead of at the
    // 1 s interval; then stable 3 s later on the interval's cadence.
    assert_eq!(began.elapsed(), Duration::from_millis(175) + 3 * S);
}

#[tokio::test(start_paused = true)]
async fn stable_for_is_waited_out() {
    let fleet = Fleet::new(1);
    let policy = policy(S, S, Duration::ZERO, 20 * S, 5 * S);
    let began = Instant::now();
    let report = deploy(&fleet, fleet.deployer().with_health(policy)).await;
    assert_eq!(report.outcome, Outcome::Deployed);
    assert_eq!(began.elapsed(), 5 * S);
    let probes = fleet
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Probe { .. }))
        .count();
    assert_eq!(probes, 6, "probes at 0..=5 s");
}

#[tokio::test(start_paused = true)]
async fn unhealthy_inside_stable_for_fails_instead_of_resetting() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::HealthyFor(Duration::from_millis(1500)));
    let began = Instant::now();
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(report.exit_code(), 3);
    assert_eq!(changes_and_logs(&fleet.hosts[0]), reverted_calls());
    assert!(
        report.hosts[0]
            .error
            .as_ref()
            .unwrap()
            .contains("after its first healthy answer"),
        "{report:?}"
    );
    // Failed at the 2 s probe, not at the deadline; the restore is 3 s.
    assert_eq!(began.elapsed(), 2 * S + 3 * S);
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn flapping_is_forgiven_inside_the_start_period_only() {
    let flap = Behavior::FlapUntil {
        period: S,
        until: 4 * S,
    };
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), flap);
    let policy = policy(S, S, 5 * S, 15 * S, 3 * S);
    let began = Instant::now();
    let report = deploy(&fleet, fleet.deployer().with_health(policy)).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    // Healthy for good from 4 s, stable 3 s later.
    assert_eq!(began.elapsed(), 7 * S);

    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), flap);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert!(report
        .reason
        .unwrap()
        .contains("after its first healthy answer"));
}

#[tokio::test(start_paused = true)]
async fn rollback_start_failure_is_rollback_failed() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::CrashAfter(S));
    fleet.hosts[0].fail("start", 2, ErrorKind::Unavailable);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RollbackFailed);
    assert_eq!(report.exit_code(), 4);
    assert_eq!(
        changes(&fleet.hosts[0]),
        switch_then(&["stop c2", "start c1", "release_lock app",])
    );
    // Both containers stay, stopped, for `recover` or a human; the failed
    // one's logs are in the report.
    let names = |name: &str| fleet.hosts[0].named(name).map(|c| c.id.to_string());
    assert_eq!(names("app").as_deref(), Some("c2"));
    assert_eq!(names("app--rollback-previous").as_deref(), Some("c1"));
    assert!(fleet.hosts[0].calls().contains(&"logs c2".to_owned()));
    let error = report.hosts[0].error.clone().unwrap();
    assert!(
        error.contains("restoring the previous release failed"),
        "{error}"
    );
    assert_eq!(report.hosts[0].phase, Phase::RollbackFailed);
    assert!(fleet.hosts[0].lock_info().is_none());
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn unhealthy_restored_release_is_rollback_failed() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::Unhealthy);
    fleet.behave(0, &v1(), Behavior::Unhealthy);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RollbackFailed);
    assert_eq!(report.exit_code(), 4);
    assert_eq!(changes_and_logs(&fleet.hosts[0]), reverted_calls());
    assert!(report.hosts[0]
        .error
        .as_ref()
        .unwrap()
        .contains("restored release is not healthy"));
    assert_nothing_promoted(&fleet);
}

/// Moves the stable tag to v3 when the fleet reaches promotion, as another
/// actor would.
struct MovesStable(Arc<FakeRegistry>);

#[async_trait::async_trait]
impl crate::checkpoint::Checkpoint for MovesStable {
    async fn reached(&self, stage: crate::checkpoint::Stage, _scope: &Scope) {
        if stage == crate::checkpoint::Stage::Promoting {
            self.0.set_tag(&repo(), "latest", &digest('3'));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stable_tag_moved_during_the_deploy_is_not_overwritten() {
    let fleet = Fleet::new(2);
    fleet.registry.set_tag(&repo(), "previous", &digest('0'));
    let deployer = fleet
        .deployer()
        .with_checkpoint(Arc::new(MovesStable(fleet.registry.clone())));
    let report = deploy(&fleet, deployer).await;
    assert_eq!(report.outcome, Outcome::StableMoved, "{report:?}");
    assert_eq!(report.exit_code(), 1);
    assert!(!report.promoted);
    let reason = report.reason.as_deref().unwrap();
    assert!(
        reason.contains("latest was moved by someone else"),
        "{reason}"
    );
    assert!(
        reason.contains("from 111111111111 to 333333333333"),
        "{reason}"
    );
    assert!(fleet.registry.copies().is_empty(), "no tag was written");
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('3')));
    assert_eq!(fleet.registry.tag(&repo(), "previous"), Some(digest('0')));
    for i in 0..2 {
        // The hosts keep the verified release, cleaned up as after a
        // deploy without promotion.
        assert_eq!(fleet.running(i), Some(("v2".into(), true)));
        assert!(fleet.hosts[i].named("app--rollback-previous").is_none());
        assert!(fleet.hosts[i].lock_info().is_none());
        assert_eq!(report.hosts[i].phase, Phase::Done);
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_previous_copy_leaves_the_stable_tag_and_says_so() {
    let fleet = Fleet::new(1);
    fleet.registry.fail_copy(1, ErrorKind::Unavailable);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::PromotionFailed);
    let reason = report.reason.as_deref().unwrap();
    assert!(
        reason.contains("app:latest not moved, 127.0.0.1:5000/team/app:previous could not be set"),
        "{reason}"
    );
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('1')));
}

#[tokio::test(start_paused = true)]
async fn promotion_failure_keeps_hosts_and_retained_containers() {
    let fleet = Fleet::new(1);
    fleet.registry.fail_copy(1, ErrorKind::Unauthorized);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::PromotionFailed);
    assert_eq!(report.exit_code(), 1);
    assert!(!report.promoted);
    assert_eq!(
        changes(&fleet.hosts[0]),
        switch_then(&["release_lock app",]),
        "the retained c1 is not removed"
    );
    assert_eq!(
        fleet.registry.copies().len(),
        1,
        "stopped at the first failed copy"
    );
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('1')));
    assert_eq!(fleet.running(0), Some(("v2".into(), true)));
    assert!(fleet.hosts[0].named("app--rollback-previous").is_some());
    assert_eq!(report.hosts[0].phase, Phase::Verified);
    assert!(fleet.hosts[0].lock_info().is_none());
}

#[tokio::test(start_paused = true)]
async fn cancel_during_verify_restores_the_previous_release() {
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::HealthyAfter(100 * S));
    let cancel = CancellationToken::new();
    let deployer = fleet.deployer();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(3 * S).await;
        trigger.cancel();
    });
    let began = Instant::now();
    let report = deployer.deploy(Target::Tag(tag("v2")), cancel).await;
    check_events(&fleet.events());
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(report.exit_code(), 3);
    assert_eq!(changes_and_logs(&fleet.hosts[0]), reverted_calls());
    assert_eq!(report.reason.as_deref(), Some("host h1: cancelled"));
    assert_eq!(
        began.elapsed(),
        3 * S + 3 * S,
        "cancelled at 3 s, restore stable 3 s"
    );
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_eq!(fleet.hosts[0].containers().len(), 1);
    assert!(fleet.hosts[0].lock_info().is_none());
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn first_deploy_failure_leaves_nothing_running() {
    let mut fleet = Fleet::new(1);
    fleet.hosts[0] = FakeRuntime::new();
    fleet.behave(0, &v2(), Behavior::Unhealthy);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(report.exit_code(), 3);
    let host = &report.hosts[0];
    assert_eq!(host.after, None);
    assert!(host.error.as_ref().unwrap().contains("no previous release"));
    assert!(report
        .reason
        .as_ref()
        .unwrap()
        .contains("no previous release to restore on"));
    assert!(fleet.hosts[0].containers().is_empty());
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn first_deploy_success_promotes_only_the_stable_tag() {
    let mut fleet = Fleet::new(1);
    fleet.hosts[0] = FakeRuntime::new();
    let registry = FakeRegistry::new();
    registry.set_tag(&repo(), "v2", &digest('2'));
    let fleet = Fleet { registry, ..fleet };
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Deployed);
    assert_eq!(
        fleet.registry.copies(),
        [format!(
            "{} -> {}",
            v2().image(),
            repo().with_tag(&tag("latest"))
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn leftover_retained_container_is_removed_only_when_the_app_runs() {
    let fleet = Fleet::new(2);
    fleet.hosts[0].add_running("app--rollback-previous", "app", &release("v0", '0'));
    let stale = fleet.hosts[0].named("app--rollback-previous").unwrap().id;
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Deployed);
    assert!(fleet.hosts[0].calls().contains(&format!("remove {stale}")));

    let fleet = Fleet::new(1);
    let app = fleet.hosts[0].named("app").unwrap().id;
    fleet.hosts[0].set_state(&app, ContainerState::Exited { code: 0 });
    fleet.hosts[0].add_running("app--rollback-previous", "app", &release("v0", '0'));
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.reason.unwrap().contains("rollback recover"));
    assert_eq!(
        changes(&fleet.hosts[0]),
        ["acquire_lock app", "release_lock app"]
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_tag_and_unreachable_registry_fail_before_anything() {
    let fleet = Fleet::new(1);
    let report = fleet
        .deployer()
        .deploy(Target::Tag(tag("nope")), CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::Failed);
    let reason = report.reason.unwrap();
    assert!(
        reason.contains("nope") && reason.contains("127.0.0.1:5000/team/app"),
        "{reason}"
    );
    assert!(fleet.hosts[0].calls().is_empty());

    fleet.registry.set_unreachable(true);
    fleet.events.lock().unwrap().clear();
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.reason.unwrap().contains("unreachable"));
    assert!(fleet.hosts[0].calls().is_empty());
}

fn three_hosts_host_two_fails() -> Fleet {
    let fleet = Fleet::new(3);
    fleet.behave(1, &v2(), Behavior::Unhealthy);
    fleet
}

fn rollout(on_failure: OnFailure) -> RolloutPolicy {
    RolloutPolicy::new(1, on_failure).unwrap()
}

#[tokio::test(start_paused = true)]
async fn fleet_rollback_all_reverts_verified_hosts_and_skips_the_rest() {
    let fleet = three_hosts_host_two_fails();
    let deployer = fleet
        .deployer()
        .with_rollout(rollout(OnFailure::RollbackAll));
    let report = deploy(&fleet, deployer).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(report.exit_code(), 3);
    assert!(report.reason.as_ref().unwrap().starts_with("host h2:"));
    let phases: Vec<Phase> = report.hosts.iter().map(|h| h.phase).collect();
    assert_eq!(
        phases,
        [Phase::RolledBack, Phase::RolledBack, Phase::Planned]
    );
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_eq!(fleet.running(1), Some(("v1".into(), true)));
    assert_eq!(fleet.running(2), Some(("v1".into(), true)));
    assert!(fleet.hosts[0].calls().contains(&"remove c2".to_owned()));
    assert_eq!(
        fleet.hosts[2].calls(),
        ["acquire_lock app", "release_lock app"],
        "host 3 never touched"
    );
    for rt in &fleet.hosts {
        assert!(rt.lock_info().is_none());
        assert_eq!(rt.containers().len(), 1);
    }
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn fleet_rollback_host_keeps_verified_hosts() {
    let fleet = three_hosts_host_two_fails();
    let deployer = fleet
        .deployer()
        .with_rollout(rollout(OnFailure::RollbackHost));
    let report = deploy(&fleet, deployer).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(report.exit_code(), 3);
    let phases: Vec<Phase> = report.hosts.iter().map(|h| h.phase).collect();
    assert_eq!(phases, [Phase::Done, Phase::RolledBack, Phase::Planned]);
    assert_eq!(fleet.running(0), Some(("v2".into(), true)));
    assert_eq!(fleet.running(1), Some(("v1".into(), true)));
    assert_eq!(fleet.running(2), Some(("v1".into(), true)));
    assert_eq!(
        fleet.hosts[2].calls(),
        ["acquire_lock app", "release_lock app"]
    );
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn fleet_pull_failure_on_a_later_host_is_not_reported_as_nothing_changed() {
    let fleet = Fleet::new(3);
    fleet.hosts[1].fail("pull", 1, ErrorKind::Unavailable);
    let deployer = fleet
        .deployer()
        .with_rollout(rollout(OnFailure::RollbackHost));
    let report = deploy(&fleet, deployer).await;
    // Host 1 runs the verified new release: something changed, nobody is broken.
    assert_eq!(report.outcome, Outcome::RolledBack);
    let phases: Vec<Phase> = report.hosts.iter().map(|h| h.phase).collect();
    assert_eq!(phases, [Phase::Done, Phase::Failed, Phase::Planned]);
    assert_eq!(fleet.running(0), Some(("v2".into(), true)));
    assert_eq!(fleet.running(1), Some(("v1".into(), true)));
    assert_nothing_promoted(&fleet);

    let fleet = Fleet::new(3);
    fleet.hosts[1].fail("pull", 1, ErrorKind::Unavailable);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(
        fleet.running(0),
        Some(("v1".into(), true)),
        "host 1 reverted"
    );
    assert_nothing_promoted(&fleet);

    let fleet = Fleet::new(3);
    fleet.hosts[0].fail("pull", 1, ErrorKind::Unavailable);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Failed, "nothing changed anywhere");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn fleet_halt_leaves_the_failed_host_as_it_is() {
    let fleet = three_hosts_host_two_fails();
    let deployer = fleet.deployer().with_rollout(rollout(OnFailure::Halt));
    let report = deploy(&fleet, deployer).await;
    assert_eq!(report.outcome, Outcome::RollbackFailed);
    assert_eq!(report.exit_code(), 4);
    assert!(report.reason.as_ref().unwrap().starts_with("halted"));
    let phases: Vec<Phase> = report.hosts.iter().map(|h| h.phase).collect();
    assert_eq!(
        phases,
        [Phase::Verified, Phase::RollbackFailed, Phase::Planned]
    );
    // The failed host keeps the new container and the retained one, and
    // its report says the new release is what is there now.
    assert_eq!(fleet.running(1), Some(("v2".into(), true)));
    let halted = &report.hosts[1];
    assert_eq!(halted.after.as_ref().map(|r| &r.digest), Some(&digest('2')));
    assert_eq!(
        halted.container.as_ref(),
        Some(&fleet.hosts[1].named("app").unwrap().id.into())
    );
    assert!(fleet.hosts[1].named("app--rollback-previous").is_some());
    assert_eq!(
        fleet.hosts[2].calls(),
        ["acquire_lock app", "release_lock app"]
    );
    for rt in &fleet.hosts {
        assert!(rt.lock_info().is_none(), "locks are released on halt too");
    }
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn fleet_batches_run_concurrently() {
    let fleet = Fleet::new(4);
    let began = Instant::now();
    let deployer = fleet
        .deployer()
        .with_rollout(RolloutPolicy::new(2, OnFailure::RollbackAll).unwrap());
    let report = deploy(&fleet, deployer).await;
    assert_eq!(report.outcome, Outcome::Deployed);
    assert_eq!(began.elapsed(), 2 * 3 * S, "two batches of 3 s each");
}

#[tokio::test(start_paused = true)]
async fn undo_deploys_the_previous_tag_and_swaps_the_tags() {
    let fleet = Fleet::new(1);
    fleet.registry.set_tag(&repo(), "previous", &digest('0'));
    let report = fleet.deployer().undo(CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert_eq!(report.target.as_ref().unwrap().digest, digest('0'));
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('0')));
    assert_eq!(fleet.registry.tag(&repo(), "previous"), Some(digest('1')));

    let fleet = Fleet::new(1);
    let report = fleet.deployer().undo(CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.reason.unwrap().contains("previous"));
}

#[tokio::test(start_paused = true)]
async fn undo_names_the_release_by_the_tag_it_was_deployed_as() {
    let fleet = Fleet::new(2);
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    let v2_container = fleet.hosts[0].named("app").unwrap();
    assert_eq!(
        v2_container.labels[labels::REPLACED_DIGEST],
        digest('1').to_string()
    );
    assert_eq!(v2_container.labels[labels::REPLACED_TAG], "v1");

    let report = fleet.deployer().undo(CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    let target = report.target.unwrap();
    assert_eq!(
        (target.tag.as_deref(), &target.digest),
        (Some("v1"), &digest('1'))
    );
    assert_eq!(fleet.running(1), Some(("v1".into(), true)));

    // And back again: v2 by name.
    let report = fleet.deployer().undo(CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert_eq!(report.target.unwrap().tag.as_deref(), Some("v2"));
}

/// A running container of `release` named `name`, labelled as a deploy
/// labels it while the stable tag named v1.
fn running_labelled(rt: &FakeRuntime, name: &str, release: &Release) -> ContainerId {
    let probe = rt.add_running(name, "app", release);
    let mut spec_labels = rt.named(name).unwrap().labels;
    spec_labels.insert(labels::STABLE_BEFORE.into(), digest('1').to_string());
    futures_util::FutureExt::now_or_never(rt.remove(&probe))
        .unwrap()
        .unwrap();
    let mut spec = ContainerSpec::new(name, release.image(), template());
    spec.labels = spec_labels;
    let id = futures_util::FutureExt::now_or_never(rt.create(&spec))
        .unwrap()
        .unwrap();
    futures_util::FutureExt::now_or_never(rt.start(&id))
        .unwrap()
        .unwrap();
    id
}

/// A host as a deploy leaves it when its runner dies after the switch:
/// v1 stopped and retained, v2 running, lock held.
fn interrupted(fleet: &Fleet, host: usize) {
    let rt = &fleet.hosts[host];
    let old = rt.named("app").unwrap().id;
    rt.set_state(&old, ContainerState::Exited { code: 0 });
    futures_util::FutureExt::now_or_never(rt.rename(&old, "app--rollback-previous"))
        .unwrap()
        .unwrap();
    let new = rt.add_running("app", "app", &v2());
    let mut spec_labels = rt.named("app").unwrap().labels;
    spec_labels.insert(labels::STABLE_BEFORE.into(), digest('1').to_string());
    // Re-create with the stable-before label, as the engine writes it.
    futures_util::FutureExt::now_or_never(rt.remove(&new))
        .unwrap()
        .unwrap();
    let mut spec = ContainerSpec::new("app", v2().image(), template());
    spec.labels = spec_labels;
    let id = futures_util::FutureExt::now_or_never(rt.create(&spec))
        .unwrap()
        .unwrap();
    futures_util::FutureExt::now_or_never(rt.start(&id))
        .unwrap()
        .unwrap();
    rt.hold_lock(LockInfo {
        app: "app".into(),
        deployment: DeploymentId("d-dead".into()),
        holder: "ci@runner pid 9".into(),
        target: "v2".into(),
        started_at: std::time::SystemTime::UNIX_EPOCH,
    });
}

#[tokio::test(start_paused = true)]
async fn recover_finishes_a_healthy_interrupted_deploy() {
    let fleet = Fleet::new(2);
    interrupted(&fleet, 0);
    interrupted(&fleet, 1);
    let report = fleet.deployer().recover(CancellationToken::new()).await;
    check_events(&fleet.events());
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert!(report.promoted);
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('2')));
    assert_eq!(fleet.registry.tag(&repo(), "previous"), Some(digest('1')));
    for (i, rt) in fleet.hosts.iter().enumerate() {
        assert_eq!(fleet.running(i), Some(("v2".into(), true)));
        assert!(rt.named("app--rollback-previous").is_none());
        assert!(rt.lock_info().is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn a_deploy_dropped_while_it_puts_the_old_container_aside_is_recovered() {
    // Dropped in the rename, then in the stop: either way the old release
    // runs again under the app name once `recover` has run.
    for slow in ["rename", "stop"] {
        let fleet = Fleet::new(1);
        fleet.hosts[0].delay(slow, 60 * S);
        let deployer = fleet.deployer();
        let deploy = deployer.deploy(Target::Tag(tag("v2")), CancellationToken::new());
        assert!(tokio::time::timeout(10 * S, deploy).await.is_err());
        fleet.hosts[0].delay(slow, Duration::ZERO);
        let report = fleet.deployer().recover(CancellationToken::new()).await;
        assert_ne!(
            report.outcome,
            Outcome::RollbackFailed,
            "{slow}: {report:?}"
        );
        assert_eq!(fleet.running(0), Some(("v1".into(), true)), "{slow}");
        assert_eq!(fleet.hosts[0].containers().len(), 1, "{slow}");
        assert!(fleet.hosts[0].lock_info().is_none(), "{slow}");
    }
}

#[tokio::test(start_paused = true)]
async fn recover_restores_when_the_new_release_is_unhealthy() {
    let fleet = Fleet::new(2);
    interrupted(&fleet, 0);
    interrupted(&fleet, 1);
    fleet.behave(1, &v2(), Behavior::Unhealthy);
    let report = fleet.deployer().recover(CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    for (i, rt) in fleet.hosts.iter().enumerate() {
        assert_eq!(fleet.running(i), Some(("v1".into(), true)), "host {i}");
        assert_eq!(rt.containers().len(), 1);
        assert!(rt.lock_info().is_none());
    }
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn recover_finishes_or_removes_an_interrupted_first_deploy() {
    for (behavior, outcome, left) in [
        (Behavior::Healthy, Outcome::Deployed, 1),
        (Behavior::Unhealthy, Outcome::RolledBack, 0),
    ] {
        let mut fleet = Fleet::new(1);
        fleet.hosts[0] = FakeRuntime::new();
        fleet.registry = FakeRegistry::new();
        let rt = &fleet.hosts[0];
        rt.behave(&v2().digest, behavior);
        let mut spec = ContainerSpec::new("app", v2().image(), template());
        spec.labels.insert(labels::APP.into(), "app".into());
        spec.labels
            .insert(labels::DIGEST.into(), digest('2').to_string());
        spec.labels
            .insert(labels::DEPLOYMENT.into(), "d-dead".into());
        let id = futures_util::FutureExt::now_or_never(rt.create(&spec))
            .unwrap()
            .unwrap();
        futures_util::FutureExt::now_or_never(rt.start(&id))
            .unwrap()
            .unwrap();
        rt.hold_lock(LockInfo {
            app: "app".into(),
            deployment: DeploymentId("d-dead".into()),
            holder: "ci@runner pid 9".into(),
            target: "v2".into(),
            started_at: std::time::SystemTime::UNIX_EPOCH,
        });
        let report = fleet.deployer().recover(CancellationToken::new()).await;
        assert_eq!(report.outcome, outcome, "{report:?}");
        assert_eq!(rt.containers().len(), left);
        assert!(rt.lock_info().is_none());
        let promoted = outcome == Outcome::Deployed;
        assert_eq!(report.promoted, promoted);
        assert_eq!(
            fleet.registry.tag(&repo(), "latest"),
            promoted.then(|| digest('2'))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_lock_held_on_the_first_host_stops_before_the_others_are_locked() {
    let fleet = Fleet::new(2);
    fleet.hosts[0].hold_lock(LockInfo {
        app: "app".into(),
        deployment: DeploymentId("d-other".into()),
        holder: "alice@laptop pid 7".into(),
        target: "v9".into(),
        started_at: std::time::SystemTime::UNIX_EPOCH,
    });
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Locked);
    assert_eq!(changes(&fleet.hosts[0]), ["acquire_lock app"]);
    // Of two deploys started at once, the one refused on the first host
    // must not hold a later host the winner needs.
    assert!(
        changes(&fleet.hosts[1]).is_empty(),
        "the second host was never locked"
    );
    assert_eq!(report.hosts[1].phase, Phase::Planned);
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn recover_reverts_when_a_host_never_got_the_release() {
    // Killed in batch 1 of 2: host 1 still runs v1, so v2 cannot be promoted.
    let fleet = Fleet::new(2);
    interrupted(&fleet, 0);
    let report = fleet.deployer().recover(CancellationToken::new()).await;
    check_events(&fleet.events());
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    assert!(
        report.reason.as_deref().unwrap_or_default().contains("h2"),
        "{report:?}"
    );
    for (i, rt) in fleet.hosts.iter().enumerate() {
        assert_eq!(fleet.running(i), Some(("v1".into(), true)), "host {i}");
        assert_eq!(rt.containers().len(), 1);
        assert!(rt.lock_info().is_none());
    }
    assert_eq!(report.hosts[1].phase, Phase::Planned, "host 1 untouched");
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn recover_promotes_when_the_other_hosts_already_run_the_release() {
    // Killed while removing retained containers after verification: host 1
    // is done, host 0 still has its retained container.
    let mut fleet = Fleet::new(2);
    interrupted(&fleet, 0);
    fleet.hosts[1] = FakeRuntime::new();
    fleet.hosts[1].add_running("app", "app", &v2());
    let report = fleet.deployer().recover(CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert!(report.promoted);
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('2')));
    for (i, rt) in fleet.hosts.iter().enumerate() {
        assert_eq!(fleet.running(i), Some(("v2".into(), true)), "host {i}");
        assert_eq!(rt.containers().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn recover_with_nothing_to_do_changes_nothing() {
    let fleet = Fleet::new(1);
    let report = fleet.deployer().recover(CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Deployed);
    assert!(!report.promoted);
    assert_eq!(
        changes(&fleet.hosts[0]),
        ["acquire_lock app", "release_lock app"],
        "only its own lock, held while it looks"
    );
    assert_nothing_promoted(&fleet);
}

#[tokio::test(start_paused = true)]
async fn recover_beside_a_live_deploy_changes_nothing_and_is_exit_5() {
    let fleet = Fleet::new(2);
    interrupted(&fleet, 0);
    let before: Vec<_> = fleet.hosts.iter().map(|rt| rt.containers()).collect();
    let calls_before: Vec<_> = fleet.hosts.iter().map(|rt| changes(rt)).collect();
    for (fate, force) in [
        (crate::holder::HolderFate::Running, false),
        (crate::holder::HolderFate::Running, true),
        (crate::holder::HolderFate::Unknown, false),
    ] {
        let check = fate.clone();
        let report = fleet
            .deployer()
            .with_holder_check(Arc::new(move |_: &LockInfo| check.clone()))
            .with_forced_takeover(force)
            .recover(CancellationToken::new())
            .await;
        assert_eq!(
            report.outcome,
            Outcome::Locked,
            "{fate:?} {force}: {report:?}"
        );
        assert_eq!(report.exit_code(), 5);
        let reason = report.reason.as_deref().unwrap();
        for part in ["d-dead", "of v2", "ci@runner pid 9", "taken ", "holder"] {
            assert!(reason.contains(part), "{part} in {reason}");
        }
        assert_eq!(
            report.lock_holder.as_ref().map(|l| l.deployment.clone()),
            Some(DeploymentId("d-dead".into()))
        );
        for (i, rt) in fleet.hosts.iter().enumerate() {
            assert_eq!(rt.containers(), before[i], "host {i} untouched");
            assert_eq!(
                changes(rt),
                calls_before[i],
                "host {i}: no change, no lock call"
            );
        }
        assert_eq!(
            fleet.hosts[0].lock_info().map(|l| l.deployment),
            Some(DeploymentId("d-dead".into())),
            "the live deploy keeps its lock"
        );
    }
    // Forced, a holder that cannot be proven gone is taken over.
    let report = fleet
        .deployer()
        .with_holder_check(Arc::new(|_: &LockInfo| crate::holder::HolderFate::Unknown))
        .with_forced_takeover(true)
        .recover(CancellationToken::new())
        .await;
    // h2 never got the release, so the interrupted deploy is reverted.
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    assert!(fleet.hosts[0].lock_info().is_none());
    assert_eq!(
        fleet.hosts[0].calls_of(&["break_lock", "acquire_lock", "release_lock"]),
        ["break_lock app", "acquire_lock app", "release_lock app"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_lock_is_released_only_by_its_own_deployment() {
    let fleet = Fleet::new(1);
    fleet.hosts[0].hold_lock(LockInfo {
        app: "app".into(),
        deployment: DeploymentId("d-live".into()),
        holder: "ci@runner pid 9".into(),
        target: "v3".into(),
        started_at: std::time::SystemTime::UNIX_EPOCH,
    });
    let report = deploy(&fleet, fleet.deployer()).await;
    assert_eq!(report.outcome, Outcome::Locked);
    let lock = fleet.hosts[0].clone();
    assert!(
        !DeployLock::release(&*lock, "app", &DeploymentId("d-test".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        fleet.hosts[0].lock_info().map(|l| l.deployment),
        Some(DeploymentId("d-live".into())),
        "neither the refused deploy nor another id frees it"
    );
    assert!(DeployLock::break_lock(&*lock, "app").await.unwrap());
    assert!(fleet.hosts[0].lock_info().is_none());
}

#[tokio::test(start_paused = true)]
async fn plan_status_and_history_change_nothing() {
    let fleet = Fleet::new(1);
    let deployer = fleet.deployer();
    let plan = deployer.plan(&Target::Tag(tag("v2"))).await.unwrap();
    assert_eq!(plan.target, v2());
    assert_eq!(plan.stable_before, Some(digest('1')));
    assert_eq!(plan.hosts[0].current, Some(v1()));
    assert_eq!(plan.hosts[0].container, Some(ContainerId("c1".into())));
    assert!(plan.hosts[0]
        .steps
        .iter()
        .any(|s| s.contains("stop container c1")));
    assert!(!serde_json::to_string(&plan).unwrap().contains("hunter2"));

    let status = deployer.status().await;
    assert_eq!(status[0].container.as_ref().unwrap().id.as_str(), "c1");
    assert!(status[0].probe.as_ref().unwrap().is_healthy());
    assert_eq!(status[0].error, None);

    let history = deployer.history().await.unwrap();
    assert_eq!(history.stable, Some(digest('1')));
    assert_eq!(history.previous, None);
    assert_eq!(history.hosts[0].1.len(), 1);
    assert_eq!(
        changes(&fleet.hosts[0]),
        Vec::<String>::new(),
        "read-only calls only"
    );
    assert!(fleet.registry.copies().is_empty());
}

#[tokio::test(start_paused = true)]
async fn status_reports_host_errors_without_failing() {
    let fleet = Fleet::new(2);
    fleet.hosts[1].fail("current", 1, ErrorKind::Unavailable);
    let status = fleet.deployer().status().await;
    assert_eq!(status[0].error, None);
    assert!(status[1]
        .error
        .as_ref()
        .unwrap()
        .contains("scripted current failure"));
}

#[tokio::test]
async fn a_slow_observer_neither_slows_the_engine_nor_misses_events() {
    let fleet = Fleet::new(1);
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sink = seen.clone();
    let ms = Duration::from_millis;
    let policy = policy(ms(10), ms(10), Duration::ZERO, S, ms(50));
    let probe = FakeProbe::new(fleet.hosts[0].clone());
    let mut deployer = fleet.deployer();
    deployer.hosts[0].probe = probe.clone();
    let report = deployer
        .with_health(policy)
        .with_observer(Arc::new(move |e: &Event| {
            std::thread::sleep(ms(30));
            sink.lock().unwrap().push(e.seq);
        }))
        .deploy(Target::Tag(tag("v2")), CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::Deployed);
    // Every event was delivered, in order, before deploy returned.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 10);
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
    // Probes kept their 10 ms cadence although each one's event took 30 ms to observe.
    let checks = probe.checks();
    assert!(checks.len() >= 6, "{}", checks.len());
    let span = *checks.last().unwrap() - checks[0];
    assert!(span < ms(150), "probes spread over {span:?}");
}

mod mocked {
    use super::*;
    use crate::traits::{MockDeployLock, MockHealthProbe, MockRegistry, MockRuntime};
    use crate::types::LockAttempt;
    use mockall::predicate::eq;
    use mockall::Sequence;

    #[tokio::test(start_paused = true)]
    async fn an_image_the_probe_refuses_fails_the_host_before_the_switch() {
        let fleet = Fleet::new(1);
        let mut probe = MockHealthProbe::new();
        probe
            .expect_admit()
            .withf(|image: &ImageRef| image.digest() == Some(digest('2')))
            .times(1)
            .returning(|_| Err(Error::invalid_input("has no HEALTHCHECK")));
        probe.expect_check().never();
        probe.expect_describe().return_const("docker HEALTHCHECK");
        let mut deployer = fleet.deployer();
        deployer.hosts[0].probe = Arc::new(probe);
        let report = deploy(&fleet, deployer).await;

        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!(report.exit_code(), 1);
        let reason = report.reason.as_deref().unwrap();
        assert!(reason.contains("has no HEALTHCHECK"), "{reason}");
        assert_eq!(report.hosts[0].phase, Phase::Failed);
        // v1 still runs in its own container, nothing was created or stopped.
        assert_eq!(fleet.running(0), Some(("v1".into(), true)));
        assert_eq!(
            fleet.hosts[0].calls_of(&["create", "stop", "rename", "remove"]),
            Vec::<String>::new()
        );
        assert!(fleet.hosts[0].lock_info().is_none());
        assert_nothing_promoted(&fleet);
    }

    #[tokio::test(start_paused = true)]
    async fn pull_failure_calls_in_order_and_never_copies() {
        let mut seq = Sequence::new();
        let mut rt = MockRuntime::new();
        let mut lock = MockDeployLock::new();
        lock.expect_acquire()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(LockAttempt::Acquired));
        let running = FakeRuntime::new();
        running.add_running("app", "app", &v1());
        let info = running.named("app").unwrap();
        rt.expect_current()
            .with(eq("app"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_| Ok(Some(info.clone())));
        rt.expect_current()
            .with(eq("app--rollback-previous"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        rt.expect_pull()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Err(Error::unauthorized("pull access denied")));
        lock.expect_release()
            .with(eq("app"), eq(DeploymentId("d-test".into())))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(true));
        rt.expect_stop().never();
        rt.expect_create().never();

        let mut registry = MockRegistry::new();
        registry
            .expect_resolve()
            .returning(|r: &ImageRef| match r.tag() {
                Some("v2") => Ok(digest('2')),
                _ => Ok(digest('1')),
            });
        registry.expect_copy().never();
        let probe = MockHealthProbe::new();

        let app = App::new("app".parse().unwrap(), repo());
        let host = HostTarget::new(
            "h1",
            Arc::new(rt),
            Arc::new(lock),
            Arc::new(probe),
            template(),
        );
        let report = Deployer::new(app, Arc::new(registry), vec![host])
            .with_deployment_id(DeploymentId("d-test".into()))
            .deploy(Target::Tag(tag("v2")), CancellationToken::new())
            .await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!(report.exit_code(), 1);
        assert!(report.reason.unwrap().contains("pull access denied"));
    }
}

#[tokio::test(start_paused = true)]
async fn timed_passes_adapter_errors_and_names_what_ran_out_of_time() {
    let what = "remove container c1";
    let e = timed(S, what, async {
        Err::<(), _>(Error::unavailable(
            "remove container c1 on unix:///x: engine down",
        ))
    })
    .await
    .unwrap_err();
    assert_eq!(e.message(), "remove container c1 on unix:///x: engine down");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let e = timed(S, what, std::future::pending::<Result<()>>())
        .await
        .unwrap_err();
    assert_eq!(e.message(), "remove container c1: no answer within 1s");
    assert_eq!(e.kind(), ErrorKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn recover_verifies_the_hosts_at_once() {
    let fleet = Fleet::new(3);
    for host in 0..3 {
        interrupted(&fleet, host);
    }
    let began = Instant::now();
    let report = fleet.deployer().recover(CancellationToken::new()).await;
    let took = began.elapsed();
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    // One host needs stable_for (3 s); three in turn would need 9 s.
    assert!(took >= 3 * S && took < 5 * S, "recover took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unpromoted_deploy_keeps_the_release_and_undo_puts_back_what_it_replaced() {
    let fleet = Fleet::new(2);
    fleet.registry.set_tag(&repo(), "previous", &digest('0'));
    let report = deploy(&fleet, fleet.deployer().with_promote(false)).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert!(!report.promoted);
    assert_nothing_promoted(&fleet);
    for i in 0..2 {
        assert_eq!(fleet.running(i), Some(("v2".into(), true)));
        assert_eq!(
            fleet.hosts[i].containers().len(),
            1,
            "the replaced container is removed"
        );
    }

    // Not the `previous` tag's release: the one the deploy replaced, no tag moved.
    let report = fleet.deployer().undo(CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    let target = report.target.unwrap();
    assert_eq!(
        (target.tag.as_deref(), &target.digest),
        (Some("v1"), &digest('1'))
    );
    assert!(!report.promoted);
    assert_nothing_promoted(&fleet);
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert_eq!(fleet.running(1), Some(("v1".into(), true)));
}

#[tokio::test(start_paused = true)]
async fn promote_moves_the_tags_once_and_touches_no_host() {
    let fleet = Fleet::new(1);
    let calls = fleet.hosts[0].calls().len();
    let d = fleet.deployer();
    let (release, moves) = d.promote(&Target::Tag(tag("v2"))).await.unwrap();
    assert_eq!(release.digest, digest('2'));
    assert_eq!(moves.previous, Some(digest('1')));
    assert_eq!(fleet.registry.tag(&repo(), "latest"), Some(digest('2')));
    assert_eq!(fleet.registry.tag(&repo(), "previous"), Some(digest('1')));
    let copies = fleet.registry.copies().len();
    let (_, moves) = d.promote(&Target::Tag(tag("v2"))).await.unwrap();
    assert_eq!((moves.previous, moves.stable), (None, None));
    assert_eq!(fleet.registry.copies().len(), copies);
    assert_eq!(fleet.registry.tag(&repo(), "previous"), Some(digest('1')));
    assert_eq!(fleet.hosts[0].calls().len(), calls, "no host was contacted");
}

// --- Start-first behind a proxy -------------------------------------------

/// The engine's and the proxy's calls that change something, in order.
fn start_first_calls(rt: &FakeRuntime) -> Vec<String> {
    rt.calls_of(&[
        "acquire_lock",
        "pull",
        "proxy_ensure",
        "proxy_switch",
        "proxy_drain",
        "connect_network",
        "stop",
        "rename",
        "create",
        "start",
        "remove",
        "release_lock",
    ])
}

impl Fleet {
    /// One proxy per host, sending the traffic to `c1` (v1) as an earlier
    /// start-first deploy left it.
    fn proxies(&self) -> Vec<Arc<FakeSwitch>> {
        self.hosts
            .iter()
            .map(|rt| {
                let switch = FakeSwitch::new(rt.clone(), "rollback");
                switch.set_target(&ContainerId("c1".into()), 8080);
                switch
            })
            .collect()
    }

    fn start_first(&self, proxies: &[Arc<FakeSwitch>]) -> Deployer {
        self.deployer_with(|i| {
            Strategy::start_first(
                StartFirst::new(proxies[i].clone(), "rollback", 8080)
                    .with_drain(Duration::from_secs(5)),
            )
        })
    }

    /// The host phases in the order their events came.
    fn phases(&self, host: &str) -> Vec<&'static str> {
        let mut phases: Vec<&'static str> = Vec::new();
        for e in self.events() {
            if e.scope == Scope::Host(host.into()) && phases.last() != Some(&e.phase.as_str()) {
                phases.push(e.phase.as_str());
            }
        }
        phases
    }
}

/// The calls of v2 (`c2`) starting beside v1 (`c1`) on one host, then `after`.
fn beside_then(after: &[&str]) -> Vec<String> {
    let mut calls = vec![
        "acquire_lock app".to_owned(),
        format!("pull {}", v2().image()),
        "proxy_ensure".into(),
        "connect_network c1 rollback".into(),
        "create app--rollback-next sha256:222222222222".into(),
        "start c2".into(),
    ];
    calls.extend(after.iter().map(|c| c.to_string()));
    calls
}

#[tokio::test(start_paused = true)]
async fn start_first_moves_the_traffic_once_healthy_and_retires_the_old_release_after_the_window() {
    let fleet = Fleet::new(1);
    let proxies = fleet.proxies();
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert!(report.promoted);
    // The old container never stops before the new one serves and is stable.
    assert_eq!(
        start_first_calls(&fleet.hosts[0]),
        beside_then(&[
            "proxy_switch c2",
            "proxy_drain c1",
            "stop c1",
            "remove c1",
            "rename c2 app",
            "release_lock app",
        ])
    );
    assert_eq!(proxies[0].target(), Some(ContainerId("c2".into())));
    assert_eq!(fleet.running(0), Some(("v2".into(), true)));
    assert_eq!(
        fleet.phases("h1"),
        [
            "locked",
            "captured",
            "pulled",
            "started",
            "verifying",
            "switched",
            "verified",
            "done"
        ]
    );
    let host = &report.hosts[0];
    assert_eq!(host.switch_back_ms, None);
    assert_eq!(host.container, Some(Workload::from("c2")));
    // The new container publishes nothing and joins the proxy's network.
    let created = fleet.hosts[0]
        .containers()
        .into_iter()
        .find(|c| c.id.as_str() == "c2")
        .unwrap();
    assert_eq!(created.name, "app");
}

#[tokio::test(start_paused = true)]
async fn start_first_never_sends_a_request_to_a_release_that_crashes_or_stays_down() {
    // A crash at start, and a release answering DOWN until the deadline.
    for behavior in [Behavior::CrashAfter(Duration::ZERO), Behavior::Unhealthy] {
        let fleet = Fleet::new(1);
        fleet.behave(0, &v2(), behavior);
        let proxies = fleet.proxies();
        let report = deploy(&fleet, fleet.start_first(&proxies)).await;
        assert_eq!(
            report.outcome,
            Outcome::RolledBack,
            "{behavior:?}: {report:?}"
        );
        assert_eq!(report.exit_code(), 3);
        // No switch of the traffic at all, no stop or start of the old one.
        assert_eq!(
            start_first_calls(&fleet.hosts[0]),
            beside_then(&[
                "proxy_switch c1",
                "proxy_drain c2",
                "remove c2",
                "release_lock app"
            ]),
            "{behavior:?}"
        );
        assert_eq!(proxies[0].target(), Some(ContainerId("c1".into())));
        assert_eq!(fleet.running(0), Some(("v1".into(), true)));
        assert!(fleet.hosts[0].named("app--rollback-next").is_none());
        assert_eq!(
            report.hosts[0].switch_back_ms, None,
            "nothing to switch back"
        );
        assert!(!fleet.phases("h1").contains(&"switched"), "{behavior:?}");
        assert_nothing_promoted(&fleet);
    }
}

#[tokio::test(start_paused = true)]
async fn start_first_switches_back_at_once_when_the_release_fails_inside_the_window() {
    let fleet = Fleet::new(1);
    // Healthy at once, unhealthy 2 s later: inside the 3 s window.
    fleet.behave(0, &v2(), Behavior::HealthyFor(2 * S));
    let proxies = fleet.proxies();
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    assert_eq!(
        start_first_calls(&fleet.hosts[0]),
        beside_then(&[
            "proxy_switch c2",
            "proxy_switch c1",
            "proxy_drain c2",
            "remove c2",
            "release_lock app"
        ])
    );
    assert_eq!(proxies[0].target(), Some(ContainerId("c1".into())));
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    // The paused clock does not move while the engine works: the switch
    // back took no time after the failing answer.
    assert_eq!(report.hosts[0].switch_back_ms, Some(0));
    let note = fleet
        .events()
        .into_iter()
        .find(|e| e.detail.starts_with("traffic switched back"))
        .expect("the switch back is reported");
    assert!(note.detail.contains("0 ms after the failure"), "{note:?}");
}

#[tokio::test(start_paused = true)]
async fn start_first_proxy_failures_leave_the_old_release_serving() {
    // The proxy cannot boot: nothing changes on the host.
    let fleet = Fleet::new(1);
    fleet.hosts[0].fail("proxy_ensure", 1, ErrorKind::Unavailable);
    let proxies = fleet.proxies();
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert_eq!(report.exit_code(), 1);
    assert!(
        report.hosts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("the fake proxy"),
        "{report:?}"
    );
    assert!(fleet.hosts[0].calls_of(&["create", "stop"]).is_empty());

    // The proxy refuses the switch to the healthy new release: it goes.
    let fleet = Fleet::new(1);
    fleet.hosts[0].fail("proxy_switch", 1, ErrorKind::Conflict);
    let proxies = fleet.proxies();
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    let error = report.hosts[0].error.as_deref().unwrap();
    assert!(error.contains("switch the proxy the fake proxy"), "{error}");
    assert_eq!(proxies[0].target(), Some(ContainerId("c1".into())));
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert!(fleet.hosts[0].calls_of(&["stop"]).is_empty());
}

#[tokio::test(start_paused = true)]
async fn start_first_fleet_reverts_a_serving_host_by_moving_its_traffic_back() {
    let fleet = Fleet::new(2);
    fleet.behave(1, &v2(), Behavior::Unhealthy);
    let proxies = fleet.proxies();
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    for (i, proxy) in proxies.iter().enumerate() {
        assert_eq!(proxy.target(), Some(ContainerId("c1".into())), "h{}", i + 1);
        assert_eq!(fleet.running(i), Some(("v1".into(), true)));
        assert!(fleet.hosts[i].calls_of(&["stop"]).is_empty());
    }
    // h1 served v2, verified, and went back with one proxy change.
    assert!(start_first_calls(&fleet.hosts[0]).contains(&"proxy_switch c2".to_owned()));
    assert!(report.hosts[0].switch_back_ms.is_some(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn start_first_recover_finishes_a_serving_release_and_removes_one_that_never_served() {
    // Interrupted after the switch: the proxy sends the traffic to c2.
    let fleet = Fleet::new(1);
    let proxies = fleet.proxies();
    let mut v2_labels = v2();
    v2_labels.tag = Some(tag("v2"));
    let next = running_labelled(&fleet.hosts[0], "app--rollback-next", &v2_labels);
    proxies[0].set_target(&next, 8080);
    fleet.hosts[0].hold_lock(LockInfo {
        app: "app".into(),
        deployment: DeploymentId("d-old".into()),
        holder: "someone".into(),
        target: "v2".into(),
        started_at: std::time::SystemTime::UNIX_EPOCH,
    });
    let report = fleet
        .start_first(&proxies)
        .recover(CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert_eq!(proxies[0].target(), Some(next.clone()));
    assert_eq!(fleet.running(0), Some(("v2".into(), true)));
    assert!(fleet.hosts[0].named("app--rollback-next").is_none());
    assert!(fleet.hosts[0].lock_info().is_none());
    assert_eq!(fleet.hosts[0].containers().len(), 1, "c1 is removed");

    // Interrupted before it: c2 goes, c1 keeps the traffic.
    let fleet = Fleet::new(1);
    let proxies = fleet.proxies();
    let next = fleet.hosts[0].add_running("app--rollback-next", "app", &v2());
    let report = fleet
        .start_first(&proxies)
        .recover(CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    assert_eq!(proxies[0].target(), Some(ContainerId("c1".into())));
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert!(
        fleet.hosts[0].named("app--rollback-next").is_none(),
        "{next} stays"
    );
    assert!(fleet.hosts[0].calls_of(&["stop"]).is_empty());
}

#[tokio::test(start_paused = true)]
async fn start_first_refuses_to_deploy_over_an_interrupted_deploy() {
    let fleet = Fleet::new(1);
    fleet.hosts[0].add_running("app--rollback-next", "app", &v2());
    let proxies = fleet.proxies();
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.hosts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("run `rollback recover` first"),
        "{report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn start_first_order_with_a_mocked_proxy() {
    use crate::traffic::MockTrafficSwitch;
    use mockall::Sequence;
    let fleet = Fleet::new(1);
    let mut seq = Sequence::new();
    let mut mock = MockTrafficSwitch::new();
    let up = |c: &str| Upstream::of(&ContainerId(c.into()), 8080);
    mock.expect_describe().returning(|| "mock proxy".into());
    mock.expect_wait_stopped()
        .returning(|| Err(Error::other("this proxy cannot be watched")));
    mock.expect_ensure()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|| Ok(()));
    let c1 = up("c1");
    mock.expect_current()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move || Ok(Some(c1.clone())));
    let c2 = up("c2");
    mock.expect_switch()
        .withf(move |to| *to == c2)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let c1 = up("c1");
    mock.expect_drain()
        .withf(move |from, drain| *from == c1 && *drain == Duration::from_secs(5))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    let app = App::new("app".parse().unwrap(), repo());
    let rt = fleet.hosts[0].clone();
    let target = HostTarget::new(
        "h1",
        rt.clone(),
        rt.clone(),
        FakeProbe::new(rt.clone()),
        template(),
    )
    .with_strategy(Strategy::start_first(
        StartFirst::new(Arc::new(mock), "rollback", 8080).with_drain(Duration::from_secs(5)),
    ));
    rt.create_network("rollback").await.unwrap();
    let report = Deployer::new(app, fleet.registry.clone(), vec![target])
        .with_health(health())
        .deploy(Target::Tag(tag("v2")), CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn start_first_a_proxy_that_stops_ends_the_verification_and_comes_back_for_the_restore() {
    let fleet = Fleet::new(1);
    // v2 would be healthy only after 5 s; the proxy stops after 1 s.
    fleet.behave(0, &v2(), Behavior::HealthyAfter(5 * S));
    let proxies = fleet.proxies();
    proxies[0].stop_after(S);
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    let error = report.hosts[0].error.as_deref().unwrap();
    assert!(error.contains("the fake proxy stopped"), "{error}");
    // Booted again for the restore; the old release kept the traffic.
    let calls = start_first_calls(&fleet.hosts[0]);
    assert_eq!(
        calls.iter().filter(|c| *c == "proxy_ensure").count(),
        2,
        "{calls:?}"
    );
    assert_eq!(proxies[0].target(), Some(ContainerId("c1".into())));
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
    assert!(fleet.hosts[0].named("app--rollback-next").is_none());
}

#[tokio::test(start_paused = true)]
async fn start_first_a_serving_host_goes_back_without_waiting_for_its_batch() {
    let fleet = Fleet::new(2);
    // h1 fails 2 s after its first healthy answer; h2 verifies much later.
    fleet.behave(0, &v2(), Behavior::HealthyFor(2 * S));
    fleet.behave(1, &v2(), Behavior::HealthyAfter(6 * S));
    let proxies = fleet.proxies();
    let deployer = fleet
        .start_first(&proxies)
        .with_rollout(RolloutPolicy::new(2, OnFailure::RollbackAll).unwrap());
    let report = deploy(&fleet, deployer).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    // Switched back the moment it failed, not 7 s later when h2 was done.
    assert_eq!(report.hosts[0].switch_back_ms, Some(0), "{report:?}");
    for (i, proxy) in proxies.iter().enumerate() {
        assert_eq!(proxy.target(), Some(ContainerId("c1".into())), "h{}", i + 1);
        assert_eq!(fleet.running(i), Some(("v1".into(), true)));
    }
}

#[tokio::test(start_paused = true)]
async fn start_first_counts_the_stable_window_from_the_traffic_switch() {
    // Healthy at once, DOWN from 4.5 s; the switch takes 2 s. Counted from
    // the healthy answer, 3 s of health would pass at 3 s with users on it
    // for 1 s; counted from the switch, the answer at 5 s is DOWN.
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::HealthyFor(4 * S + S / 2));
    fleet.hosts[0].delay("proxy_switch", 2 * S);
    let proxies = fleet.proxies();
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    assert_eq!(proxies[0].target(), Some(ContainerId("c1".into())));
    assert_eq!(fleet.running(0), Some(("v1".into(), true)));
}

#[tokio::test(start_paused = true)]
async fn start_first_an_unhealthy_answer_while_serving_switches_back_inside_the_start_period() {
    // A 10 s start period, DOWN 1.5 s after its first healthy answer: the
    // traffic goes back at the first DOWN, not at the deadline.
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::HealthyFor(S + S / 2));
    let proxies = fleet.proxies();
    let deployer = fleet
        .start_first(&proxies)
        .with_health(policy(S, S, 10 * S, 20 * S, 3 * S));
    let began = Instant::now();
    let report = deploy(&fleet, deployer).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    let error = report.hosts[0].error.as_deref().unwrap();
    assert!(
        error.contains("unhealthy after its first healthy answer"),
        "{error}"
    );
    assert!(
        !fleet
            .events()
            .iter()
            .any(|e| e.phase == Phase::Switched && e.detail.contains("(start period)")),
        "a DOWN answer while serving is not forgiven"
    );
    // The first DOWN answer is at 2 s; the restore takes its own 3 s window.
    assert!(began.elapsed() < 8 * S, "{:?}", began.elapsed());
    assert_eq!(proxies[0].target(), Some(ContainerId("c1".into())));
}

#[tokio::test(start_paused = true)]
async fn start_first_a_proxy_that_stops_during_the_restore_is_reported() {
    // v2 crashes at 0.5 s; the proxy stops 1 s into the restore's watch,
    // before the restored release has been stable for 3 s.
    let fleet = Fleet::new(1);
    fleet.behave(0, &v2(), Behavior::CrashAfter(S / 2));
    let proxies = fleet.proxies();
    proxies[0].stop_after(S);
    let report = deploy(&fleet, fleet.start_first(&proxies)).await;
    assert_eq!(report.outcome, Outcome::RollbackFailed, "{report:?}");
    let error = format!("{report:?}");
    assert!(error.contains("the proxy stopped"), "{error}");
    assert!(error.contains("the fake proxy stopped"), "{error}");
}

#[tokio::test]
async fn an_invalid_transition_is_an_error_event_and_a_safe_stop() {
    use crate::machine::{CapturedRelease, HostState, Input};
    let fleet = Fleet::new(1);
    let deployer = fleet.deployer();
    let pump = super::emit::Pump::start(deployer.observer.clone());
    let mut run = super::host::HostRun::new(0);
    run.state = HostState::Verified {
        new_container: Workload::from("c2"),
        retained: Some(CapturedRelease {
            container: Workload::from("c1"),
            release: Some(v1()),
        }),
        traffic_moved: false,
    };
    // A lock taken twice is a bug of the driver's, in every build.
    deployer.advance(
        pump.emitter(),
        &deployer.hosts[0],
        &mut run,
        Input::LockAcquired,
    );
    pump.finish().await;
    let HostState::RollingBack {
        failed_container,
        retained,
        reason,
        ..
    } = &run.state
    else {
        panic!("expected rolling back, got {:?}", run.state);
    };
    assert_eq!(failed_container, &Some(Workload::from("c2")));
    assert_eq!(
        retained.as_ref().map(|r| &r.container),
        Some(&Workload::from("c1"))
    );
    assert_eq!(reason.kind(), crate::error::ErrorKind::Internal);
    let events = fleet.events();
    let error = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Error))
        .expect("an error event");
    assert!(
        error.detail.contains("lock_acquired in state verified"),
        "{error:?}"
    );
    assert!(run.failed_at.is_some(), "the restore's clock starts");
    assert!(events
        .iter()
        .any(|e| e.phase == Phase::RollingBack && matches!(e.kind, EventKind::Transition)));
}
