//! A deterministic simulation of deploys that die at every effect.
//!
//! Over the in-memory fakes and paused time: for each scenario (strategy ×
//! fleet size × behaviour of the new release × `on_failure` × deploy or
//! undo) a first full run counts the effect calls (engine, lock, proxy and
//! registry); then for each call index the deploy runs again on a fresh
//! world and its future is dropped the moment that call is made, before or
//! after it takes effect. A fresh `Deployer` then runs `recover` on the same
//! world, and the invariants of the design are checked.
//!
//! `cargo test -p rollback-core --test crash_points -- --nocapture` prints
//! how many points were explored; with `CRASH_CLASSES=1` it also prints one
//! example of each kind of violation found.

mod common;

use common::{digest, release, repo};

use std::collections::BTreeMap;
use std::fmt;
use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rollback_core::fake::{Behavior, FakeRegistry, FakeRuntime, FakeSwitch};
use rollback_core::holder::HolderFate;
use rollback_core::{
    async_trait, labels, App, CancellationToken, ContainerExit, ContainerId, ContainerInfo,
    ContainerSpec, ContainerTemplate, CopyReport, DeployLock, Deployer, DeploymentId, Digest,
    ExecOutput, HealthPolicy, HealthProbe, HostTarget, ImageInfo, ImageRef, LockAttempt, LockInfo,
    OnFailure, ProbeResult, ProgressSink, Registry, Release, Repository, Result, RolloutPolicy,
    Runtime, StartFirst, Strategy, Target, TrafficSwitch, Upstream,
};
use tokio::sync::Notify;

const S: Duration = Duration::from_secs(1);
const APP: &str = "app";

/// Where the deploy dies: when the `n`th (1-based) effect call is made,
/// before it takes effect or right after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashAt {
    Never,
    Before(usize),
    After(usize),
}

/// Counts the effect calls of one run and kills it at the chosen one: that
/// call and every later one never answer, and `crashed` is notified.
struct Gate {
    calls: AtomicUsize,
    at: CrashAt,
    dead: AtomicBool,
    crashed: Notify,
    log: Mutex<Vec<String>>,
}

impl Gate {
    fn new(at: CrashAt) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            at,
            dead: AtomicBool::new(false),
            crashed: Notify::new(),
            log: Mutex::new(Vec::new()),
        })
    }

    fn die(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.crashed.notify_one();
    }

    /// Run `effect` as call number n, unless the run dies here.
    async fn pass<T>(&self, what: String, effect: impl std::future::Future<Output = T>) -> T {
        if self.dead.load(Ordering::SeqCst) {
            pending::<()>().await;
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        locked(&self.log).push(what);
        if self.at == CrashAt::Before(n) {
            self.die();
            pending::<()>().await;
        }
        let out = effect.await;
        if self.at == CrashAt::After(n) {
            self.die();
            pending::<()>().await;
        }
        out
    }

    fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the probes and the proxies saw: when each container last started
/// and was last probed healthy (in order of calls), and any switch of the
/// traffic to a container no probe had found healthy.
#[derive(Default)]
struct Witness {
    clock: AtomicUsize,
    started: Mutex<BTreeMap<(usize, ContainerId), usize>>,
    healthy: Mutex<BTreeMap<(usize, ContainerId), usize>>,
    unproven_switches: Mutex<Vec<String>>,
    early_promotions: Mutex<Vec<String>>,
}

impl Witness {
    fn tick(&self) -> usize {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Whether `id` on `host` answered healthy since it last started;
    /// `original` containers were serving, proven, before the deploy.
    fn proven(&self, host: usize, id: &ContainerId, original: bool) -> bool {
        let key = (host, id.clone());
        let started = locked(&self.started).get(&key).copied();
        let healthy = locked(&self.healthy).get(&key).copied();
        match (started, healthy) {
            (None, _) => original,
            (Some(s), Some(h)) => h > s,
            (Some(_), None) => false,
        }
    }
}

/// A host's engine and lock, gated.
struct GatedRuntime {
    host: usize,
    inner: Arc<FakeRuntime>,
    gate: Arc<Gate>,
    witness: Arc<Witness>,
}

macro_rules! gated {
    ($self:ident, $what:expr, $call:expr) => {
        $self
            .gate
            .pass(format!("h{} {}", $self.host, $what), $call)
            .await
    };
}

#[async_trait]
impl Runtime for GatedRuntime {
    async fn current(&self, name: &str) -> Result<Option<ContainerInfo>> {
        gated!(self, "current", self.inner.current(name))
    }
    async fn list_app(&self, app: &str) -> Result<Vec<ContainerInfo>> {
        gated!(self, "list_app", self.inner.list_app(app))
    }
    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo> {
        gated!(self, format!("inspect {id}"), self.inner.inspect(id))
    }
    async fn pull(
        &self,
        image: &ImageRef,
        platform: Option<String>,
        progress: Option<ProgressSink>,
    ) -> Result<()> {
        gated!(self, "pull", self.inner.pull(image, platform, progress))
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId> {
        gated!(
            self,
            format!("create {}", spec.name),
            self.inner.create(spec)
        )
    }
    async fn start(&self, id: &ContainerId) -> Result<()> {
        gated!(self, format!("start {id}"), async {
            let out = self.inner.start(id).await;
            if out.is_ok() {
                let t = self.witness.tick();
                locked(&self.witness.started).insert((self.host, id.clone()), t);
            }
            out
        })
    }
    async fn stop(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        gated!(self, format!("stop {id}"), self.inner.stop(id, timeout))
    }
    async fn rename(&self, id: &ContainerId, new_name: &str) -> Result<()> {
        gated!(
            self,
            format!("rename {id} {new_name}"),
            self.inner.rename(id, new_name)
        )
    }
    async fn remove(&self, id: &ContainerId) -> Result<()> {
        gated!(self, format!("remove {id}"), self.inner.remove(id))
    }
    async fn logs(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>> {
        gated!(self, format!("logs {id}"), self.inner.logs(id, lines))
    }
    async fn wait_exit(&self, id: &ContainerId) -> Result<ContainerExit> {
        // A watch, not an effect.
        self.inner.wait_exit(id).await
    }
    async fn exec(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        gated!(
            self,
            format!("exec {id}"),
            self.inner.exec(id, cmd, timeout)
        )
    }
    async fn list_images(&self, repository: &Repository) -> Result<Vec<ImageInfo>> {
        gated!(self, "list_images", self.inner.list_images(repository))
    }
    async fn remove_image(&self, id: &str) -> Result<()> {
        gated!(
            self,
            format!("remove_image {id}"),
            self.inner.remove_image(id)
        )
    }
    async fn create_network(&self, name: &str) -> Result<bool> {
        gated!(self, "create_network", self.inner.create_network(name))
    }
    async fn connect_network(&self, id: &ContainerId, network: &str) -> Result<()> {
        gated!(
            self,
            format!("connect_network {id}"),
            self.inner.connect_network(id, network)
        )
    }
    async fn network_address(&self, id: &ContainerId, network: &str) -> Result<Option<String>> {
        gated!(
            self,
            format!("network_address {id}"),
            self.inner.network_address(id, network)
        )
    }
}

#[async_trait]
impl DeployLock for GatedRuntime {
    async fn acquire(&self, lock: &LockInfo) -> Result<LockAttempt> {
        gated!(self, "acquire_lock", self.inner.acquire(lock))
    }
    async fn status(&self, app: &str) -> Result<Option<LockInfo>> {
        gated!(self, "lock_status", DeployLock::status(&*self.inner, app))
    }
    async fn release(&self, app: &str, deployment: &DeploymentId) -> Result<bool> {
        gated!(self, "release_lock", self.inner.release(app, deployment))
    }
    async fn break_lock(&self, app: &str) -> Result<bool> {
        gated!(self, "break_lock", self.inner.break_lock(app))
    }
}

/// A host's proxy, gated; a switch to a container no probe found healthy
/// since it started is recorded as a request that could reach an unproven
/// release.
struct GatedSwitch {
    host: usize,
    inner: Arc<FakeSwitch>,
    gate: Arc<Gate>,
    witness: Arc<Witness>,
    original: ContainerId,
}

#[async_trait]
impl TrafficSwitch for GatedSwitch {
    async fn ensure(&self) -> Result<()> {
        gated!(self, "proxy_ensure", self.inner.ensure())
    }
    async fn current(&self) -> Result<Option<Upstream>> {
        gated!(self, "proxy_current", self.inner.current())
    }
    async fn switch(&self, to: &Upstream) -> Result<()> {
        gated!(self, format!("proxy_switch {}", to.container), async {
            let original = to.container == self.original;
            if !self.witness.proven(self.host, &to.container, original) {
                locked(&self.witness.unproven_switches)
                    .push(format!("h{} proxy_switch {}", self.host, to.container));
            }
            self.inner.switch(to).await
        })
    }
    async fn drain(&self, from: &Upstream, drain: Duration) -> Result<()> {
        gated!(
            self,
            format!("proxy_drain {}", from.container),
            self.inner.drain(from, drain)
        )
    }
    async fn wait_stopped(&self) -> Result<rollback_core::Error> {
        self.inner.wait_stopped().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// The host's health check, recording healthy answers per container.
struct WitnessProbe {
    host: usize,
    runtime: Arc<FakeRuntime>,
    witness: Arc<Witness>,
}

#[async_trait]
impl HealthProbe for WitnessProbe {
    async fn check(&self, container: &ContainerId, _timeout: Duration) -> ProbeResult {
        let answer = self.runtime.health(container);
        if answer.is_healthy() {
            let t = self.witness.tick();
            locked(&self.witness.healthy).insert((self.host, container.clone()), t);
        }
        answer
    }
    fn describe(&self) -> String {
        "the witness probe".into()
    }
}

/// The registry, gated; a move of the stable tag to the new release while
/// some host does not run it proven is recorded.
struct GatedRegistry {
    inner: Arc<FakeRegistry>,
    gate: Arc<Gate>,
    world: Arc<WorldView>,
}

/// What the registry's gate needs to judge a promotion.
struct WorldView {
    hosts: Vec<Arc<FakeRuntime>>,
    witness: Arc<Witness>,
    new: Digest,
}

#[async_trait]
impl Registry for GatedRegistry {
    async fn resolve(&self, reference: &ImageRef) -> Result<Digest> {
        self.gate
            .pass(
                format!("resolve {reference}"),
                self.inner.resolve(reference),
            )
            .await
    }
    async fn copy(&self, source: &ImageRef, destination: &ImageRef) -> Result<CopyReport> {
        self.gate
            .pass(format!("copy {source} -> {destination}"), async {
                let to_new =
                    self.inner.resolve(source).await.ok().as_ref() == Some(&self.world.new);
                if destination.tag() == Some("latest") && to_new {
                    for (i, rt) in self.world.hosts.iter().enumerate() {
                        // Start-first promotes before the new container takes the app name.
                        let ok = rt.containers().iter().any(|c| {
                            c.labels.get(labels::APP).map(String::as_str) == Some(APP)
                                && c.state.is_running()
                                && c.release.as_ref().map(|r| &r.digest) == Some(&self.world.new)
                                && self.world.witness.proven(i, &c.id, false)
                        });
                        if !ok {
                            locked(&self.world.witness.early_promotions)
                                .push(format!("latest moved while h{i} does not run it proven"));
                        }
                    }
                }
                self.inner.copy(source, destination).await
            })
            .await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    StopFirst,
    StartFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewRelease {
    Healthy,
    CrashAtStart,
    Down,
    DiesAfterFirstUp,
}

impl NewRelease {
    fn behavior(self) -> Behavior {
        match self {
            NewRelease::Healthy => Behavior::Healthy,
            NewRelease::CrashAtStart => Behavior::CrashAfter(Duration::ZERO),
            NewRelease::Down => Behavior::Unhealthy,
            NewRelease::DiesAfterFirstUp => Behavior::CrashAfter(S + S / 2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Deploy,
    Undo,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    kind: Kind,
    hosts: usize,
    batch: usize,
    new: NewRelease,
    on_failure: OnFailure,
    op: Op,
}

struct Coordinates(Scenario, CrashAt);

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(
            f,
            "{:?} of a {:?} release, {:?}, {} host(s) in batches of {}, {}, crash {:?}",
            s.op,
            s.new,
            s.kind,
            s.hosts,
            s.batch,
            s.on_failure.as_str(),
            self.1
        )
    }
}

/// One fake world: hosts running the old release (`c1` each, behind a
/// proxy for start-first), a registry whose `latest` is v1 and `previous` v0.
struct World {
    scenario: Scenario,
    registry: Arc<FakeRegistry>,
    hosts: Vec<Arc<FakeRuntime>>,
    proxies: Vec<Arc<FakeSwitch>>,
    originals: Vec<ContainerId>,
    witness: Arc<Witness>,
    old: Release,
    new: Release,
}

impl World {
    fn new(scenario: Scenario) -> Self {
        let v0 = release("v0", '0');
        let v1 = release("v1", '1');
        let v2 = release("v2", '2');
        let registry = FakeRegistry::new();
        registry.set_tag(&repo(), "v0", &v0.digest);
        registry.set_tag(&repo(), "v1", &v1.digest);
        registry.set_tag(&repo(), "v2", &v2.digest);
        registry.set_tag(&repo(), "latest", &v1.digest);
        registry.set_tag(&repo(), "previous", &v0.digest);
        let new = match scenario.op {
            Op::Deploy => v2,
            Op::Undo => v0,
        };
        let mut hosts = Vec::new();
        let mut proxies = Vec::new();
        let mut originals = Vec::new();
        for _ in 0..scenario.hosts {
            let rt = FakeRuntime::new();
            let id = rt.add_running(APP, APP, &v1);
            rt.behave(&new.digest, scenario.new.behavior());
            let proxy = FakeSwitch::new(rt.clone(), "rollback");
            proxy.set_target(&id, 8080);
            hosts.push(rt);
            proxies.push(proxy);
            originals.push(id);
        }
        Self {
            scenario,
            registry,
            hosts,
            proxies,
            originals,
            witness: Arc::new(Witness::default()),
            old: v1,
            new,
        }
    }

    fn deployer(&self, gate: &Arc<Gate>, id: &str, on_failure: OnFailure) -> Deployer {
        let targets = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, rt)| {
                let gated = Arc::new(GatedRuntime {
                    host: i,
                    inner: rt.clone(),
                    gate: gate.clone(),
                    witness: self.witness.clone(),
                });
                let probe = Arc::new(WitnessProbe {
                    host: i,
                    runtime: rt.clone(),
                    witness: self.witness.clone(),
                });
                let template = ContainerTemplate::new();
                let target =
                    HostTarget::new(format!("h{i}"), gated.clone(), gated, probe, template);
                match self.scenario.kind {
                    Kind::StopFirst => target.with_strategy(Strategy::stop_first()),
                    Kind::StartFirst => {
                        let switch = Arc::new(GatedSwitch {
                            host: i,
                            inner: self.proxies[i].clone(),
                            gate: gate.clone(),
                            witness: self.witness.clone(),
                            original: self.originals[i].clone(),
                        });
                        target.with_strategy(Strategy::start_first(
                            StartFirst::new(switch, "rollback", 8080).with_drain(5 * S),
                        ))
                    }
                }
            })
            .collect();
        let registry = Arc::new(GatedRegistry {
            inner: self.registry.clone(),
            gate: gate.clone(),
            world: Arc::new(WorldView {
                hosts: self.hosts.clone(),
                witness: self.witness.clone(),
                new: self.new.digest.clone(),
            }),
        });
        let health = HealthPolicy::builder()
            .interval(S)
            .timeout(S)
            .start_period(Duration::ZERO)
            .deadline(10 * S)
            .stable_for(3 * S)
            .build()
            .expect("a valid health policy");
        let rollout =
            RolloutPolicy::new(self.scenario.batch, on_failure).expect("a valid rollout policy");
        Deployer::new(
            App::new(APP.parse().expect("a valid name"), repo()),
            registry,
            targets,
        )
        .with_health(health)
        .with_rollout(rollout)
        .with_holder(format!("{id}@sim pid 1"))
        .with_deployment_id(DeploymentId(id.into()))
    }
}

/// Run the scenario's deploy (or undo), dying at `at`; the number of effect
/// calls it made.
async fn run_until(world: &World, at: CrashAt) -> usize {
    let gate = Gate::new(at);
    let deployer = world.deployer(&gate, "d-crashing", world.scenario.on_failure);
    let run = async {
        let _report = match world.scenario.op {
            Op::Deploy => {
                let target = Target::Tag("v2".parse().expect("a valid tag"));
                deployer.deploy(target, CancellationToken::new()).await
            }
            Op::Undo => deployer.undo(CancellationToken::new()).await,
        };
    };
    tokio::select! {
        biased;
        () = gate.crashed.notified() => {}
        () = run => {}
    }
    gate.count()
}

/// `recover` by a fresh deployer; the invariants then, as violations.
async fn recover_and_check(world: &World) -> Vec<String> {
    let gate = Gate::new(CrashAt::Never);
    // The dropped deploy's holder is gone: recover may take its lock over.
    let deployer = world
        .deployer(&gate, "d-recover", OnFailure::RollbackAll)
        .with_holder_check(Arc::new(|_: &LockInfo| HolderFate::Gone));
    let report = deployer.recover(CancellationToken::new()).await;
    let mut violations = Vec::new();
    let mut everywhere_new = true;
    for (i, rt) in world.hosts.iter().enumerate() {
        let containers = rt.containers();
        let apps: Vec<&ContainerInfo> = containers
            .iter()
            .filter(|c| c.labels.get(labels::APP).map(String::as_str) == Some(APP) || c.name == APP)
            .collect();
        let leftovers: Vec<&str> = containers
            .iter()
            .filter(|c| c.name.contains("--rollback-"))
            .map(|c| c.name.as_str())
            .collect();
        if !leftovers.is_empty() {
            violations.push(format!("h{i}: leftover {leftovers:?}"));
        }
        if rt.lock_info().is_some() {
            violations.push(format!("h{i}: lock left"));
        }
        let running: Vec<&&ContainerInfo> = apps.iter().filter(|c| c.state.is_running()).collect();
        if apps.len() != 1 || running.len() != 1 {
            violations.push(format!(
                "h{i}: {} app containers, {} running: {:?}",
                apps.len(),
                running.len(),
                apps.iter()
                    .map(|c| (&c.id, &c.name, &c.state))
                    .collect::<Vec<_>>()
            ));
            everywhere_new = false;
            continue;
        }
        let app = running[0];
        let digest = app.release.as_ref().map(|r| r.digest.clone());
        if digest.as_ref() != Some(&world.new.digest) {
            everywhere_new = false;
        }
        if digest.as_ref() != Some(&world.new.digest) && digest.as_ref() != Some(&world.old.digest)
        {
            violations.push(format!("h{i}: runs {digest:?}, neither old nor new"));
        }
        if app.name != APP {
            violations.push(format!("h{i}: the app runs as {}", app.name));
        }
        if !rt.health(&app.id).is_healthy() {
            violations.push(format!("h{i}: {} ({digest:?}) is not healthy", app.id));
        } else if !world
            .witness
            .proven(i, &app.id, app.id == world.originals[i])
        {
            violations.push(format!(
                "h{i}: {} runs, never verified since its start",
                app.id
            ));
        }
        if world.scenario.kind == Kind::StartFirst
            && world.proxies[i].target() != Some(app.id.clone())
        {
            violations.push(format!(
                "h{i}: the proxy points at {:?}, the app runs as {}",
                world.proxies[i].target(),
                app.id
            ));
        }
    }
    let stable = world.registry.tag(&repo(), "latest");
    let previous = world.registry.tag(&repo(), "previous");
    let untouched = (Some(digest('1')), Some(digest('0')));
    let moved = (
        Some(world.new.digest.clone()),
        Some(world.old.digest.clone()),
    );
    let tags = (stable, previous);
    if tags == moved {
        if !everywhere_new {
            violations.push("the tags moved while a host does not run the new release".into());
        }
    } else if tags != untouched {
        violations.push(format!(
            "the tags are {tags:?}: neither untouched nor moved together"
        ));
    }
    violations.extend(
        locked(&world.witness.unproven_switches)
            .iter()
            .map(|s| format!("unproven: {s}")),
    );
    violations.extend(locked(&world.witness.early_promotions).iter().cloned());
    if !violations.is_empty() {
        violations.push(format!(
            "recover said {:?}: {:?}",
            report.outcome, report.reason
        ));
    }
    violations
}

fn scenarios() -> Vec<Scenario> {
    let mut all = Vec::new();
    for op in [Op::Deploy, Op::Undo] {
        for kind in [Kind::StopFirst, Kind::StartFirst] {
            for hosts in 1..=3 {
                // One host at a time, and the whole fleet at once.
                let batches = if hosts == 1 { vec![1] } else { vec![1, hosts] };
                for batch in batches {
                    for new in [
                        NewRelease::Healthy,
                        NewRelease::CrashAtStart,
                        NewRelease::Down,
                        NewRelease::DiesAfterFirstUp,
                    ] {
                        for on_failure in [
                            OnFailure::RollbackAll,
                            OnFailure::RollbackHost,
                            OnFailure::Halt,
                        ] {
                            all.push(Scenario {
                                kind,
                                hosts,
                                batch,
                                new,
                                on_failure,
                                op,
                            });
                        }
                    }
                }
            }
        }
    }
    all
}

/// What one share of the scenarios found: points explored, points with a
/// violation, and the first few of them described.
#[derive(Default)]
struct Findings {
    explored: usize,
    failed: usize,
    first: Vec<String>,
    classes: std::collections::BTreeSet<String>,
}

async fn explore(scenarios: Vec<Scenario>) -> Findings {
    let mut found = Findings::default();
    let print_classes = std::env::var_os("CRASH_CLASSES").is_some();
    for scenario in scenarios {
        let world = World::new(scenario);
        let calls = run_until(&world, CrashAt::Never).await;
        let mut points = vec![CrashAt::Never];
        for n in 1..=calls {
            points.push(CrashAt::Before(n));
            points.push(CrashAt::After(n));
        }
        for at in points {
            let world = World::new(scenario);
            run_until(&world, at).await;
            let violations = recover_and_check(&world).await;
            found.explored += 1;
            if violations.is_empty() {
                continue;
            }
            found.failed += 1;
            let described = format!("{}: {}", Coordinates(scenario, at), violations.join("; "));
            // One line per kind of violation, to see them all at once.
            let class = format!("{:?} {:?} {}", scenario.kind, scenario.op, violations[0]);
            if print_classes && found.classes.insert(class) {
                println!("{described}");
            }
            if found.first.len() < 8 {
                found.first.push(described);
            }
        }
    }
    found
}

/// Every crash point of every scenario, each share of them on a thread of
/// its own with its own paused clock.
#[test]
fn every_crash_point_recovers_to_one_verified_release_per_host() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut shares: Vec<Vec<Scenario>> = vec![Vec::new(); threads];
    for (i, scenario) in scenarios().into_iter().enumerate() {
        shares[i % threads].push(scenario);
    }
    let handles: Vec<_> = shares
        .into_iter()
        .map(|share| {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .expect("a runtime")
                    .block_on(explore(share))
            })
        })
        .collect();
    let mut explored = 0;
    let mut failed = 0;
    let mut first = Vec::new();
    for handle in handles {
        let found = handle.join().expect("a share of the simulation panicked");
        explored += found.explored;
        failed += found.failed;
        first.extend(found.first);
    }
    println!("crash points explored: {explored}, invariant violations: {failed}");
    first.truncate(8);
    assert!(
        first.is_empty(),
        "{failed} crash points break an invariant; the first:\n{}",
        first.join("\n")
    );
}
