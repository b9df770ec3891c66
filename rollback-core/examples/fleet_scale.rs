//! What a fleet costs the engine: one deploy to `--hosts N` fake hosts
//! (paused time, so the health checks' seconds are virtual) in batches of
//! `--batch B`, healthy or with the last host failing (`--fail`); prints one
//! JSON object: CPU time, peak memory, events, virtual time.
//!
//! `cargo run --release -p rollback-core --features mock --example fleet_scale -- --hosts 1000 --batch 1`

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
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        hosts: 1,
        batch: 1,
        fail: false,
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let rss_start = status_kib("VmRSS");
    let cpu_start = cpu_s();
    let wall = std::time::Instant::now();

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
    let json = serde_json::json!({
        "hosts": args.hosts,
        "batch": args.batch,
        "fail": args.fail,
        "outcome": report.outcome,
        "batches": args.hosts.div_ceil(args.batch),
        "cpu_s": cpu_s() - cpu_start,
        "wall_s": wall.elapsed().as_secs_f64(),
        "rss_start_kib": rss_start,
        "rss_peak_kib": status_kib("VmHWM"),
        "events": events.load(Ordering::Relaxed),
        "virtual_s": virtual_s,
    });
    println!("{json}");
    Ok(())
}
