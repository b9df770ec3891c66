//! What one Caddy costs per app: `--apps N` apps routed by `Host` on one
//! proxy, one of them switched forward and back `--switches K` times while
//! load loops run on up to four of the others; prints one JSON object with
//! every switch's time, the failed requests of the load loops, and the
//! reference: one admin API change timed from inside the proxy container,
//! under the same load loops and idle.
//!
//! `cargo run --release -p rollback-proxy --example proxy_apps -- --apps 10 --port 19510`
//! (`--engine ssh://...` for another engine; the fixture image
//! `rollback-fixture:healthy` and `caddy:2` must be on it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollback_core::{
    ContainerId, ContainerSpec, ContainerTemplate, Runtime, TrafficSwitch, Upstream,
};
use rollback_docker::DockerRuntime;
use rollback_proxy::Caddy;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    engine: Option<String>,
    apps: usize,
    switches: usize,
    port: u16,
    name: String,
}

fn args() -> Result<Args, Error> {
    let mut args = Args {
        engine: None,
        apps: 1,
        switches: 10,
        port: 19510,
        name: format!("rollback-bench-{}", std::process::id()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--engine" => args.engine = Some(value),
            "--apps" => args.apps = value.parse()?,
            "--switches" => args.switches = value.parse()?,
            "--port" => args.port = value.parse()?,
            "--name" => args.name = value,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// GET / for `host` on a fresh connection: whether a 2xx came back.
fn get(port: u16, host: &str) -> bool {
    let answer = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /health HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text.starts_with("HTTP/1.1 2") || text.starts_with("HTTP/1.0 2"))
    };
    answer().unwrap_or(false)
}

struct Load {
    requests: AtomicU64,
    failed: AtomicU64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args = args()?;
    let rt =
        Arc::new(DockerRuntime::connect(args.engine.as_deref(), Duration::from_secs(30)).await?);
    let network = format!("{}-net", args.name);
    let proxy = Caddy::container(rt.clone(), None, &format!("127.0.0.1:{}", args.port))?
        .with_name(&format!("{}-proxy", args.name))
        .with_network(&network);
    let result = run(&args, rt.clone(), proxy.clone(), &network).await;
    // Whatever happened, nothing is left behind.
    let _ = proxy.remove().await;
    for release in ["a", "b"] {
        if let Ok(Some(c)) = rt.current(&format!("{}-{release}", args.name)).await {
            let _ = rt.remove(&c.id).await;
        }
    }
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &network])
        .output();
    println!("{}", result?);
    Ok(())
}

async fn run(
    args: &Args,
    rt: Arc<DockerRuntime>,
    proxy: rollback_proxy::ProxyContainer,
    network: &str,
) -> Result<serde_json::Value, Error> {
    let switches: Vec<Caddy> = (0..args.apps)
        .map(|i| Caddy::new(proxy.clone(), &format!("app{i}")).with_host(&format!("app{i}.bench")))
        .collect();
    switches[0].ensure().await?;
    let mut upstreams: Vec<Upstream> = Vec::new();
    for release in ["a", "b"] {
        let template = ContainerTemplate::new()
            .network(network.to_owned())
            .label("io.rollback.bench", args.name.clone());
        let spec = ContainerSpec::new(
            format!("{}-{release}", args.name),
            "rollback-fixture:healthy".parse()?,
            template,
        );
        let id: ContainerId = rt.create(&spec).await?;
        rt.start(&id).await?;
        upstreams.push(Caddy::upstream(&id, 8080));
    }
    let (a, b) = (&upstreams[0], &upstreams[1]);
    for s in &switches {
        s.switch(a).await?;
    }
    // The releases answer before anything is measured.
    let ready = Instant::now();
    while !get(args.port, "app0.bench") {
        if ready.elapsed() > Duration::from_secs(20) {
            return Err("app0 does not answer through the proxy".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load {
        requests: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let loaded: Vec<String> = (1..args.apps.min(5))
        .map(|i| format!("app{i}.bench"))
        .collect();
    let mut threads: Vec<_> = loaded
        .iter()
        .map(|host| {
            let (stop, load, host, port) = (stop.clone(), load.clone(), host.clone(), args.port);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    load.requests.fetch_add(1, Ordering::Relaxed);
                    if !get(port, &host) {
                        load.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let (mut forward, mut back) = (Vec::new(), Vec::new());
    for _ in 0..args.switches {
        let t = Instant::now();
        switches[0].switch(b).await?;
        forward.push(ms(t.elapsed()));
        let t = Instant::now();
        switches[0].switch(a).await?;
        back.push(ms(t.elapsed()));
    }
    // The reference: admin changes timed inside the container, 20 in a row
    // (busybox's `time` counts hundredths), each a real change of app0's
    // fallback, which ends where it began.
    let dial = "http://127.0.0.1:2019/id/rollback.app.app0.fallback/dial";
    let post = |to: &str| {
        format!("wget -q -O - --header 'Content-Type: application/json' --post-data '\"{to}\"' {dial} >/dev/null")
    };
    let script = format!(
        "time -p sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do {}; {}; done' 2>&1 >/dev/null",
        post(&b.address).replace('\'', "'\\''"),
        post(&a.address).replace('\'', "'\\''")
    );
    // Measured twice: under the load loops, as the switches were, and idle.
    let (mut loaded_reference, mut reference) = (Vec::new(), Vec::new());
    for round in 0..6 {
        if round == 3 {
            stop.store(true, Ordering::Relaxed);
            for t in std::mem::take(&mut threads) {
                let _ = t.join();
            }
        }
        let out = proxy
            .exec(
                &["sh".into(), "-c".into(), script.clone()],
                Duration::from_secs(60),
            )
            .await?;
        let real = out
            .output
            .lines()
            .find_map(|l| l.strip_prefix("real "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or(format!("no time from the proxy container: {}", out.output))?;
        let each = (real * 1e3 / 20.0 * 1e3).round() / 1e3;
        if round < 3 {
            loaded_reference.push(each);
        } else {
            reference.push(each);
        }
    }
    let route = switches[0].route().await?.ok_or("app0 has no route")?;
    if route.primary != a.address {
        return Err(format!("app0 ends on {}, not {}", route.primary, a.address).into());
    }
    Ok(serde_json::json!({
        "engine": rt.url(),
        "apps": args.apps,
        "switch_ms": forward,
        "switch_back_ms": back,
        "admin_change_ms": reference,
        "admin_change_loaded_ms": loaded_reference,
        "load_hosts": loaded.len(),
        "load_requests": load.requests.load(Ordering::Relaxed),
        "load_failed": load.failed.load(Ordering::Relaxed),
    }))
}
