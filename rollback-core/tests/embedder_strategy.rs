//! A deploy strategy brought by an embedder: implemented outside the
//! crate against the public [`DeployStrategy`] trait, and driven by the
//! engine like the built-in ones.

mod common;

use common::{digest, release, repo};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollback_core::fake::{Behavior, FakeProbe, FakeRegistry, FakeRuntime};
use rollback_core::machine::{CapturedRelease, Input};
use rollback_core::{
    async_trait, App, CancellationToken, ContainerInfo, ContainerTemplate, DeployStrategy,
    Deployer, Digest, Error, HealthPolicy, HostTarget, Outcome, Phase, Release, StopFirst,
    Strategy, StrategyCx, Target, Workload,
};

const S: Duration = Duration::from_secs(1);

/// Stop-first, with every effect written to an audit trail first, and a
/// plan that says so: what a team with a change log of its own might bring.
#[derive(Default)]
struct Audited {
    trail: Arc<Mutex<Vec<&'static str>>>,
}

impl Audited {
    fn log(&self, cx: &StrategyCx<'_>, effect: &'static str) {
        self.trail.lock().unwrap().push(effect);
        cx.note(Phase::Planned, format!("audit: {effect}"));
    }
}

#[async_trait]
impl DeployStrategy for Audited {
    fn describe(&self) -> String {
        "audited stop-first".to_owned()
    }

    fn plan(
        &self,
        cx: &StrategyCx<'_>,
        current: Option<&ContainerInfo>,
        release: &Release,
    ) -> Vec<String> {
        let mut steps = vec!["write each step to the audit trail".to_owned()];
        steps.extend(StopFirst.plan(cx, current, release));
        steps
    }

    async fn check(&self, cx: &StrategyCx<'_>) -> Result<(), Error> {
        self.log(cx, "check");
        StopFirst.check(cx).await
    }

    async fn prepare(
        &self,
        cx: &StrategyCx<'_>,
        previous: Option<&CapturedRelease>,
    ) -> Result<(), Error> {
        self.log(cx, "prepare");
        StopFirst.prepare(cx, previous).await
    }

    async fn switch(
        &self,
        cx: &StrategyCx<'_>,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Input {
        self.log(cx, "switch");
        StopFirst
            .switch(cx, previous, target, stable_before, cancel)
            .await
    }

    async fn release_failed(
        &self,
        cx: &StrategyCx<'_>,
        failed: Workload,
    ) -> Result<Option<Workload>, Error> {
        self.log(cx, "release_failed");
        StopFirst.release_failed(cx, failed).await
    }

    async fn restart_previous(
        &self,
        cx: &StrategyCx<'_>,
        failed: Option<&Workload>,
        retained: &CapturedRelease,
    ) -> Result<(), Error> {
        self.log(cx, "restart_previous");
        StopFirst.restart_previous(cx, failed, retained).await
    }

    async fn tidy(
        &self,
        cx: &StrategyCx<'_>,
        failed: Option<&Workload>,
        retained: &CapturedRelease,
    ) -> (Option<Vec<String>>, Result<(), Error>) {
        self.log(cx, "tidy");
        StopFirst.tidy(cx, failed, retained).await
    }

    async fn retire(
        &self,
        cx: &StrategyCx<'_>,
        retained: Option<&Workload>,
        new: &Workload,
    ) -> Result<(), Error> {
        self.log(cx, "retire");
        StopFirst.retire(cx, retained, new).await
    }
}

/// One host running v1, v2 pushed; deployed with [`Audited`].
fn setup() -> (Arc<FakeRuntime>, Deployer, Arc<Mutex<Vec<&'static str>>>) {
    let registry = FakeRegistry::new();
    registry.set_tag(&repo(), "latest", &digest('1'));
    registry.set_tag(&repo(), "v2", &digest('2'));
    let rt = FakeRuntime::new();
    rt.add_running("app", "app", &release("v1", '1'));
    let audited = Audited::default();
    let trail = audited.trail.clone();
    let host = HostTarget::new(
        "h1",
        rt.clone(),
        rt.clone(),
        FakeProbe::new(rt.clone()),
        ContainerTemplate::new(),
    )
    .with_strategy(Strategy::new(audited));
    let health = HealthPolicy::builder()
        .interval(S)
        .timeout(S)
        .deadline(10 * S)
        .stable_for(3 * S)
        .build()
        .expect("a valid policy");
    let deployer = Deployer::new(
        App::new("app".parse().expect("a valid name"), repo()),
        registry,
        vec![host],
    )
    .with_health(health);
    (rt, deployer, trail)
}

fn running(rt: &FakeRuntime) -> Option<String> {
    rt.containers()
        .into_iter()
        .find(|c| c.name == "app" && c.state.is_running())
        .and_then(|c| c.release)
        .and_then(|r| r.tag)
        .map(|t| t.to_string())
}

#[tokio::test(start_paused = true)]
async fn an_embedders_strategy_deploys_a_healthy_release() {
    let (rt, deployer, trail) = setup();
    let plan = deployer
        .plan(&Target::Tag("v2".parse().unwrap()))
        .await
        .unwrap();
    assert!(
        plan.hosts[0]
            .steps
            .iter()
            .any(|s| s == "write each step to the audit trail"),
        "{plan:?}"
    );
    let report = deployer
        .deploy(Target::Tag("v2".parse().unwrap()), CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
    assert_eq!(running(&rt).as_deref(), Some("v2"));
    assert_eq!(
        *trail.lock().unwrap(),
        ["check", "prepare", "switch", "retire"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_embedders_strategy_puts_the_previous_release_back() {
    let (rt, deployer, trail) = setup();
    rt.behave(&digest('2'), Behavior::CrashAfter(S));
    let report = deployer
        .deploy(Target::Tag("v2".parse().unwrap()), CancellationToken::new())
        .await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    assert_eq!(report.exit_code(), 3);
    assert_eq!(running(&rt).as_deref(), Some("v1"));
    assert_eq!(
        *trail.lock().unwrap(),
        [
            "check",
            "prepare",
            "switch",
            "release_failed",
            "restart_previous",
            "tidy"
        ]
    );
}
