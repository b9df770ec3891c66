//! What a fleet costs the engine: one deploy to `--hosts N` fake hosts
//! (paused time, so the health checks' seconds are virtual) in batches of
//! `--batch B`, healthy or with the last host failing (`--fail`); prints one
//! JSON object: CPU time, peak memory, events, virtual time.
//!
//! `--reference` runs no rollback code: N bare futures of a host's shape in
//! the same batches under the same runtime (see [`bare_host`]), so the cost
//! of N live futures with that heap and those wake-ups is measured beside
//! the engine's. It accepts `--fail` and ignores it: the bare hosts have no
//! release to fail. Its JSON has the same keys plus `"reference": true`.
//!
//! `cargo run --release -p rollback-core --features mock --example fleet_scale -- --hosts 1000 --batch 1`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rollback_core::fake::{Behavior, FakeProbe, FakeRegistry, FakeRuntime};
use rollback_core::{
    App, CancellationToken, ContainerTemplate, Deployer, Event, HealthPolicy, HostTarget,
    OnFailure, Release, Repository, RolloutPolicy, Tag, Target,
};

struct Args {
    hosts: usize,
    batch: usize,
    fail: bool,
    reference: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        hosts: 1,
        batch: 1,
        fail: false,
        reference: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |name: &str| {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--hosts" => args.hosts = number("--hosts")?,
            "--batch" => args.batch = number("--batch")?,
            "--fail" => args.fail = true,
            "--reference" => args.reference = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// CPU time of the process so far, in seconds: the sum over its threads of
/// the nanoseconds `/proc/self/task/*/schedstat` counts, or else user plus
/// system time in `/proc/self/stat`'s hundredths.
fn cpu_s() -> f64 {
    let threads: Option<u64> = std::fs::read_dir("/proc/self/task").ok().map(|tasks| {
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    });
    if let Some(ns) = threads.filter(|&ns| ns > 0) {
        return ns as f64 / 1e9;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends at the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/self/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What a run is measured from: its start's resident set, CPU and clock.
struct Meter {
    rss_start: u64,
    cpu_start: f64,
    wall: std::time::Instant,
}

impl Meter {
    fn start() -> Self {
        Self {
            rss_start: status_kib("VmRSS"),
            cpu_start: cpu_s(),
            wall: std::time::Instant::now(),
        }
    }

    /// The run's figures, as one JSON object; `extra` adds or overrides keys.
    fn figures(
        &self,
        args: &Args,
        events: u64,
        virtual_s: f64,
        extra: serde_json::Value,
    ) -> serde_json::Value {
        let mut json = serde_json::json!({
            "hosts": args.hosts,
            "batch": args.batch,
            "fail": args.fail,
            "batches": args.hosts.div_ceil(args.batch.max(1)),
            "cpu_s": cpu_s() - self.cpu_start,
            "wall_s": self.wall.elapsed().as_secs_f64(),
            "rss_start_kib": self.rss_start,
            "rss_peak_kib": status_kib("VmHWM"),
            "events": events,
            "virtual_s": virtual_s,
        });
        if let (Some(json), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
            json.extend(extra);
        }
        json
    }
}

/// The observer's shape in the reference: a shared callback per event.
type Observer = Arc<dyn Fn(&str) + Send + Sync>;

/// One host of the reference: about what a healthy host's deploy holds and
/// awaits, with no rollback code. The heap (~14 KiB in a handful of
/// allocations, the non-reference runs' peak memory per host at 1000 hosts
/// and more) lives from the host's start to its end; 13 events, each a
/// short-lived string handed to the observer; 4 probes at 0, 1, 2 and 3 s
/// (a 1 s interval until 3 s stable), each awaited against a fresh 10 s
/// deadline timer as the engine's probe loop does.
async fn bare_host(i: usize, observe: &Observer) {
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(10);
    let mut emitted = 0;
    let mut emit = |what: &str| {
        emitted += 1;
        observe(&format!("h{} {what} {emitted}", i + 1));
    };
    let logs = vec![b'.'; 8 * 1024];
    let labels: HashMap<String, String> = (0..16)
        .map(|k| {
            (
                format!("label.{k}"),
                format!("value of h{} number {k}", i + 1),
            )
        })
        .collect();
    let mut probes: Vec<String> = Vec::with_capacity(8);
    let mut record = String::with_capacity(2 * 1024);
    for what in ["locking", "locked", "pulling", "starting"] {
        emit(what);
    }
    for attempt in 0..4u64 {
        let next = start + Duration::from_secs(attempt);
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let detail = format!("probe {}: healthy (200)", attempt + 1);
        emit(&detail);
        probes.push(detail);
    }
    for what in ["switching", "switched", "stable", "tidying", "done"] {
        emit(what);
    }
    record.push_str(&probes.join("; "));
    std::hint::black_box((&logs, &labels, &record));
}

/// The reference run: `bare_host` for every host, joined over each batch in
/// turn as the engine's rollout joins its hosts (`join_all` outside tokio's
/// budget), so what grows with hosts is the cost of N live futures alone.
fn reference(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let meter = Meter::start();
    let events = Arc::new(AtomicU64::new(0));
    let seen = events.clone();
    let observe: Observer = Arc::new(move |_: &str| {
        seen.fetch_add(1, Ordering::Relaxed);
    });
    let hosts: Vec<usize> = (0..args.hosts).collect();
    let virtual_s = runtime.block_on(async {
        let began = tokio::time::Instant::now();
        for batch in hosts.chunks(args.batch.max(1)) {
            let hosts =
                futures_util::future::join_all(batch.iter().map(|&i| bare_host(i, &observe)));
            tokio::task::unconstrained(hosts).await;
        }
        began.elapsed().as_secs_f64()
    });
    Ok(meter.figures(
        args,
        events.load(Ordering::Relaxed),
        virtual_s,
        serde_json::json!({"reference": true, "outcome": "reference"}),
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    if args.reference {
        println!("{}", reference(&args, &runtime)?);
        return Ok(());
    }
    let meter = Meter::start();

    let repo: Repository = "127.0.0.1:5000/team/app".parse()?;
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64)).parse();
    let (v1, v2) = (digest('1')?, digest('2')?);
    let registry = FakeRegistry::new();
    registry.set_tag(&repo, "latest", &v1);
    registry.set_tag(&repo, "v2", &v2);
    let release = Release::new(repo.clone(), v1).with_tag("v1".parse::<Tag>()?);
    let events = Arc::new(AtomicU64::new(0));
    let seen = events.clone();
    let health = HealthPolicy::builder()
        .interval(Duration::from_secs(1))
        .timeout(Duration::from_secs(1))
        .deadline(Duration::from_secs(10))
        .stable_for(Duration::from_secs(3))
        .build()?;
    let targets = (0..args.hosts)
        .map(|i| {
            let rt = FakeRuntime::new();
            rt.add_running("app", "app", &release);
            if args.fail && i + 1 == args.hosts {
                rt.behave(&v2, Behavior::CrashAfter(Duration::from_secs(1)));
            }
            HostTarget::new(
                format!("h{}", i + 1),
                rt.clone(),
                rt.clone(),
                FakeProbe::new(rt),
                ContainerTemplate::new(),
            )
        })
        .collect();
    let deployer = Deployer::new(App::new("app".parse()?, repo), registry, targets)
        .with_health(health)
        .with_rollout(RolloutPolicy::new(args.batch, OnFailure::RollbackAll)?)
        .with_observer(Arc::new(move |_: &Event| {
            seen.fetch_add(1, Ordering::Relaxed);
        }));
    let (report, virtual_s) = runtime.block_on(async {
        let began = tokio::time::Instant::now();
        let report = deployer
            .deploy(Target::Tag("v2".parse()?), CancellationToken::new())
            .await;
        Ok::<_, Box<dyn std::error::Error>>((report, began.elapsed().as_secs_f64()))
    })?;
    let json = meter.figures(
        &args,
        events.load(Ordering::Relaxed),
        virtual_s,
        serde_json::json!({"outcome": report.outcome}),
    );
    println!("{json}");
    Ok(())
}
