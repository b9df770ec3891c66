//! The Caddy switch and the direct probe against the real engine and the
//! `caddy:2` image (the stand-in scripts/test-env builds).

#[path = "../../rollback-docker/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rollback_core::{ContainerId, ErrorKind, HealthProbe, ProbeResult, Runtime, TrafficSwitch};
use rollback_docker::DockerRuntime;
use rollback_proxy::{Caddy, DirectProbe, ProxyContainer};

const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    cleanup: Cleanup,
    rt: Arc<DockerRuntime>,
    proxy: ProxyContainer,
    port: u16,
}

async fn setup(what: &str) -> Setup {
    let mut cleanup = Cleanup::new();
    let rt = Arc::new(runtime().await);
    let network = unique(&format!("{what}-net"));
    let name = unique(&format!("{what}-proxy"));
    cleanup.container(&name);
    cleanup.network(&network);
    let port = free_port();
    let proxy = Caddy::container(rt.clone(), None, &format!("127.0.0.1:{port}"))
        .unwrap()
        .with_name(&name)
        .with_network(&network);
    Setup {
        cleanup,
        rt,
        proxy,
        port,
    }
}

impl Setup {
    /// The proxy's error log lines (why Caddy answered a failure).
    fn proxy_errors(&self) -> String {
        let out = docker(&["logs", self.proxy.name()]);
        let all = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        all.lines()
            .filter(|l| l.contains("\"error\"") || l.contains("\"warn\""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A running fixture container on the proxy's network, with no host port.
    async fn release(&self, image: &str) -> ContainerId {
        let app = unique("rel");
        let mut spec = spec(&self.cleanup, &app, &app, image, None);
        spec.network = Some(self.proxy.network().to_owned());
        let id = self.rt.create(&spec).await.unwrap();
        self.rt.start(&id).await.unwrap();
        id
    }
}

/// Status line and body of `GET path` through the proxy, on a fresh connection.
fn get(port: u16, path: &str, host: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.contains("\r\n\r\n") {
        return Err(std::io::Error::other(format!(
            "the connection closed after {} bytes of response: {response:?}",
            response.len()
        )));
    }
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn version(port: u16) -> String {
    let (status, body) = get(port, "/version", "127.0.0.1").unwrap();
    assert_eq!(status, 200, "{body}");
    body.trim().to_owned()
}

/// What a bounded load loop saw.
#[derive(Debug, Default)]
struct Load {
    ok: usize,
    failed: Vec<String>,
    versions: Vec<String>,
    longest_gap: Duration,
}

/// Requests `/version` on `port` from `threads` threads until `stop`.
fn load(port: u16, threads: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Load> {
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut seen = Load::default();
                    let mut last_ok = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        match get(port, "/version", "127.0.0.1") {
                            Ok((200, body)) => {
                                seen.ok += 1;
                                seen.longest_gap = seen.longest_gap.max(last_ok.elapsed());
                                last_ok = Instant::now();
                                let v = body.trim().to_owned();
                                if seen.versions.last() != Some(&v) {
                                    seen.versions.push(v);
                                }
                            }
                            Ok((status, body)) => seen.failed.push(format!("{status} {body}")),
                            Err(e) => seen.failed.push(e.to_string()),
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    seen
                })
            })
            .collect();
        let mut all = Load::default();
        for w in workers {
            let seen = w.join().unwrap();
            all.ok += seen.ok;
            all.failed.extend(seen.failed);
            all.longest_gap = all.longest_gap.max(seen.longest_gap);
            for v in seen.versions {
                if !all.versions.contains(&v) {
                    all.versions.push(v);
                }
            }
        }
        all
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_reach_the_release_switched_to() {
    let s = setup("switch").await;
    let caddy = Caddy::new(s.proxy.clone(), "shop");
    caddy.ensure().await.unwrap();
    caddy
        .ensure()
        .await
        .expect("a second boot finds it running");

    let inspect = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}} {{index .Config.Labels \"io.rollback.managed\"}} {{.Config.Image}}",
        s.proxy.name(),
    ]);
    assert_eq!(
        inspect.trim(),
        "unless-stopped true docker.io/library/caddy:2"
    );
    let (status, _) = get(s.port, "/version", "127.0.0.1").unwrap();
    assert_eq!(status, 503, "nothing is routed yet");
    assert_eq!(caddy.current().await.unwrap(), None);

    let v1 = s.release("rollback-fixture:healthy").await;
    let v3 = s.release("rollback-fixture:down").await;
    let up1 = Caddy::upstream(&v1, 8080);
    let up3 = Caddy::upstream(&v3, 8080);

    caddy.switch(&up1).await.unwrap();
    assert_eq!(version(s.port), "v1");
    assert_eq!(caddy.current().await.unwrap(), Some(up1.clone()));

    caddy.switch(&up3).await.unwrap();
    caddy.switch(&up3).await.expect("switching twice is fine");
    assert_eq!(version(s.port), "v3");
    assert_eq!(caddy.current().await.unwrap(), Some(up3.clone()));
    let route = caddy.route().await.unwrap().unwrap();
    assert_eq!(
        (route.primary.as_str(), route.fallback.as_str()),
        (up3.address.as_str(), up1.address.as_str()),
        "the old release stays the fallback until drained"
    );
    caddy.drain(&up1, Duration::from_secs(5)).await.unwrap();
    let route = caddy.route().await.unwrap().unwrap();
    assert_eq!(route.fallback, up3.address);

    // A second app on the same proxy, routed by Host.
    let other = Caddy::new(s.proxy.clone(), "blog").with_host("blog.example.com");
    other.ensure().await.unwrap();
    other.switch(&up1).await.unwrap();
    let (_, body) = get(s.port, "/version", "blog.example.com").unwrap();
    assert_eq!(body.trim(), "v1");
    assert_eq!(version(s.port), "v3", "other hosts still reach shop");
    assert_eq!(caddy.routes().await.unwrap().len(), 2);

    // A restarted proxy comes back with the same routes.
    docker_ok(&["restart", "-t", "1", s.proxy.name()]);
    caddy.ensure().await.unwrap();
    assert_eq!(version(s.port), "v3");
    let (_, body) = get(s.port, "/version", "blog.example.com").unwrap();
    assert_eq!(body.trim(), "v1");

    assert!(other.remove_route().await.unwrap());
    assert_eq!(caddy.routes().await.unwrap().len(), 1);
    assert_eq!(version(s.port), "v3");
}

#[tokio::test(flavor = "multi_thread")]
async fn switches_under_load_lose_no_request() {
    let s = setup("load").await;
    let caddy = Caddy::new(s.proxy.clone(), "shop");
    caddy.ensure().await.unwrap();
    // Connections queued on the listener a config change closes are handed
    // to the new one (Caddy binds with SO_REUSEPORT).
    let sysctls = docker_ok(&[
        "inspect",
        "-f",
        "{{json .HostConfig.Sysctls}}",
        s.proxy.name(),
    ]);
    assert!(
        sysctls.contains(r#""net.ipv4.tcp_migrate_req":"1""#),
        "{sysctls}"
    );
    let v1 = Caddy::upstream(&s.release("rollback-fixture:healthy").await, 8080);
    let v3 = Caddy::upstream(&s.release("rollback-fixture:down").await, 8080);
    caddy.switch(&v1).await.unwrap();
    assert_eq!(version(s.port), "v1");

    let stop = Arc::new(AtomicBool::new(false));
    let loop_ = load(s.port, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut longest_switch = Duration::ZERO;
    for (to, from) in [(&v3, &v1), (&v1, &v3), (&v3, &v1), (&v1, &v3)] {
        let started = Instant::now();
        caddy.switch(to).await.unwrap();
        longest_switch = longest_switch.max(started.elapsed());
        caddy.drain(from, Duration::from_secs(5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = tokio::task::spawn_blocking(move || loop_.join().unwrap())
        .await
        .unwrap();
    eprintln!(
        "{} requests, {} failed, longest gap {:?}, longest switch {:?}",
        seen.ok,
        seen.failed.len(),
        seen.longest_gap,
        longest_switch
    );
    assert!(
        seen.failed.is_empty(),
        "failed: {:?}\n{}",
        seen.failed,
        s.proxy_errors()
    );
    assert!(seen.ok > 100, "the loop ran: {seen:?}");
    assert!(
        seen.versions.contains(&"v1".to_owned()) && seen.versions.contains(&"v3".to_owned()),
        "{:?}",
        seen.versions
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_release_that_dies_has_its_requests_retried_on_the_old_one() {
    let s = setup("fallback").await;
    let caddy = Caddy::new(s.proxy.clone(), "shop");
    caddy.ensure().await.unwrap();
    let v1 = Caddy::upstream(&s.release("rollback-fixture:healthy").await, 8080);
    let v3_id = s.release("rollback-fixture:down").await;
    let v3 = Caddy::upstream(&v3_id, 8080);
    caddy.switch(&v1).await.unwrap();
    caddy.switch(&v3).await.unwrap();
    assert_eq!(version(s.port), "v3");

    let stop = Arc::new(AtomicBool::new(false));
    let loop_ = load(s.port, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    docker_ok(&["kill", v3_id.as_str()]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The switch back, as a deploy does it when the new release fails.
    caddy.switch(&v1).await.unwrap();
    caddy.drain(&v3, Duration::from_secs(1)).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let dying = tokio::task::spawn_blocking(move || loop_.join().unwrap())
        .await
        .unwrap();
    eprintln!(
        "while the new release died: {} requests, {} failed, longest gap {:?}",
        dying.ok,
        dying.failed.len(),
        dying.longest_gap
    );
    // Caddy retries a refused request on the fallback (the old release), so
    // the kill costs at most the odd request caught mid-response; without
    // the fallback every request of those 1.5 s would fail.
    assert!(
        dying.failed.len() <= 2 && dying.ok > 50,
        "failed: {:?}\n{}",
        dying.failed,
        s.proxy_errors()
    );

    // Once switched back, the old release serves everything.
    let stop = Arc::new(AtomicBool::new(false));
    let loop_ = load(s.port, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = tokio::task::spawn_blocking(move || loop_.join().unwrap())
        .await
        .unwrap();
    assert!(
        seen.failed.is_empty(),
        "failed after the switch back: {:?}\n{}",
        seen.failed,
        s.proxy_errors()
    );
    assert!(
        seen.versions.iter().all(|v| v == "v1"),
        "{:?}",
        seen.versions
    );
    assert_eq!(version(s.port), "v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_direct_probe_judges_the_container_itself() {
    let s = setup("probe").await;
    Caddy::new(s.proxy.clone(), "shop").ensure().await.unwrap();
    let healthy = s.release("rollback-fixture:healthy").await;
    let down = s.release("rollback-fixture:down").await;
    let probe = DirectProbe::new(s.proxy.clone(), 8080, "/health")
        .unwrap()
        .expect_json("/status", "UP")
        .unwrap();
    let t = Duration::from_secs(2);

    let mut result = ProbeResult::Unhealthy(String::new());
    let started = Instant::now();
    while !result.is_healthy() && started.elapsed() < WAIT {
        result = probe.check(&healthy, t).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        result,
        ProbeResult::Healthy("200 OK, status is \"UP\"".into())
    );
    let mut result = probe.check(&down, t).await;
    while result.detail().contains("connect") && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = probe.check(&down, t).await;
    }
    assert_eq!(result, ProbeResult::Unhealthy("status is \"DOWN\"".into()));

    let missing = DirectProbe::new(s.proxy.clone(), 8080, "/nope").unwrap();
    assert_eq!(
        missing.check(&healthy, t).await,
        ProbeResult::Unhealthy("404 Not Found".into())
    );
    let closed = DirectProbe::new(s.proxy.clone(), 9999, "/health").unwrap();
    let result = closed.check(&healthy, t).await;
    assert!(
        !result.is_healthy() && result.detail().contains("refused"),
        "{result:?}"
    );

    // Not on the proxy's network: nothing to dial.
    let app = unique("outside");
    let outside =
        s.rt.create(&spec(
            &s.cleanup,
            &app,
            &app,
            "rollback-fixture:healthy",
            None,
        ))
        .await
        .unwrap();
    s.rt.start(&outside).await.unwrap();
    let result = probe.check(&outside, t).await;
    assert!(
        result.detail().contains("not running on network"),
        "{result:?}"
    );
    s.rt.stop(&healthy, Duration::from_secs(1)).await.unwrap();
    assert!(!probe.check(&healthy, t).await.is_healthy());
    assert!(DirectProbe::new(s.proxy.clone(), 8080, "health").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_proxy_or_a_refused_change_is_a_clear_error() {
    let s = setup("fail").await;
    let caddy = Caddy::new(s.proxy.clone(), "shop");
    caddy.ensure().await.unwrap();
    let v1 = Caddy::upstream(&s.release("rollback-fixture:healthy").await, 8080);
    caddy.switch(&v1).await.unwrap();

    // Caddy's admin API moved away: every change is refused, the routes stay.
    let moved = r#"{"listen":"127.0.0.1:2999"}"#;
    docker_ok(&[
        "exec",
        s.proxy.name(),
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        "Content-Type: application/json",
        "--post-data",
        moved,
        "http://127.0.0.1:2019/config/admin",
    ]);
    let v3 = Caddy::upstream(&s.release("rollback-fixture:down").await, 8080);
    let err = caddy.switch(&v3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains(s.proxy.name()) && err.message().contains("can't connect"),
        "{err}"
    );
    assert_eq!(version(s.port), "v1", "the old release keeps serving");

    docker_ok(&["stop", "-t", "1", s.proxy.name()]);
    let err = caddy.switch(&v1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("not running"), "{err}");

    // A port already taken: the proxy cannot boot, and says why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let name = unique("taken-proxy");
    let mut cleanup = Cleanup::new();
    cleanup.container(&name);
    let busy = Caddy::container(s.rt.clone(), None, &format!("127.0.0.1:{port}"))
        .unwrap()
        .with_name(&name)
        .with_network(s.proxy.network());
    let err = Caddy::new(busy.clone(), "shop").ensure().await.unwrap_err();
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert_eq!(
        busy.inspect().await.unwrap(),
        None,
        "nothing is left behind"
    );
}

/// The second engine stands for a remote host: the switch and the probe go
/// through its endpoint only.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_reached_only_through_its_engine() {
    let engine_b = test_env("ROLLBACK_TEST_DOCKER_B");
    let rt = Arc::new(
        DockerRuntime::connect(Some(&engine_b), Duration::from_secs(10))
            .await
            .unwrap(),
    );
    let on_b = |args: &[&str]| {
        let mut all = vec!["-H", engine_b.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    };
    let network = unique("b-net");
    let name = unique("b-proxy");
    let app = unique("b-app");
    let port = free_port();
    struct Gone<F: Fn()>(F);
    impl<F: Fn()> Drop for Gone<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _gone = Gone(|| {
        on_b(&["rm", "-f", &name, &app]);
        on_b(&["network", "rm", &network]);
    });
    let proxy = Caddy::container(rt.clone(), None, &format!("127.0.0.1:{port}"))
        .unwrap()
        .with_name(&name)
        .with_network(&network);
    let caddy = Caddy::new(proxy.clone(), "shop");
    caddy.ensure().await.unwrap();

    let cleanup = Cleanup::new();
    let mut release = spec(&cleanup, &app, &app, "rollback-fixture:healthy", None);
    release.network = Some(network.clone());
    let id = rt.create(&release).await.unwrap();
    rt.start(&id).await.unwrap();
    let probe = DirectProbe::new(proxy, 8080, "/health")
        .unwrap()
        .expect_json("/status", "UP")
        .unwrap();
    let started = Instant::now();
    let mut result = probe.check(&id, Duration::from_secs(2)).await;
    while !result.is_healthy() && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = probe.check(&id, Duration::from_secs(2)).await;
    }
    assert!(result.is_healthy(), "{result:?}");
    caddy.switch(&Caddy::upstream(&id, 8080)).await.unwrap();
    let started = Instant::now();
    let mut seen = get(port, "/version", "127.0.0.1");
    while !matches!(&seen, Ok((200, _))) && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
        seen = get(port, "/version", "127.0.0.1");
    }
    assert_eq!(seen.unwrap().1.trim(), "v1");
}

#[tokio::test]
async fn one_proxy_per_host_refuses_another_listen_address_but_can_be_removed() {
    let s = setup("listen").await;
    let caddy = Caddy::new(s.proxy.clone(), "shop");
    caddy.ensure().await.unwrap();
    let other_port = free_port();
    let other = Caddy::container(s.rt.clone(), None, &format!("127.0.0.1:{other_port}"))
        .unwrap()
        .with_name(s.proxy.name())
        .with_network(s.proxy.network());
    let e = Caddy::new(other.clone(), "blog")
        .ensure()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let message = e.message();
    assert!(
        message.contains(&format!("publishes 127.0.0.1:{}", s.port))
            && message.contains(&format!("not 127.0.0.1:{other_port}")),
        "{message}"
    );
    // The proxy that runs is untouched, and `proxy remove` still works.
    assert!(s.proxy.running().await.is_ok());
    assert!(other.remove().await.unwrap());
    assert!(s.proxy.inspect().await.unwrap().is_none());
}

/// The admin requests of one method the proxy has logged so far.
fn admin_requests(proxy: &str, method: &str) -> usize {
    let out = docker(&["logs", proxy]);
    let all =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let method = format!("\"method\":\"{method}\"");
    all.lines()
        .filter(|l| l.contains("\"admin.api\"") && l.contains(&method))
        .count()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_and_a_switch_back_are_one_change_each() {
    let s = setup("fast").await;
    let caddy = Caddy::new(s.proxy.clone(), "shop");
    caddy.ensure().await.unwrap();
    let v1 = Caddy::upstream(&s.release("rollback-fixture:healthy").await, 8080);
    let v3 = Caddy::upstream(&s.release("rollback-fixture:down").await, 8080);
    caddy.switch(&v1).await.unwrap();

    let (mut forward, mut back) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let posts = admin_requests(s.proxy.name(), "POST");
        let t = Instant::now();
        caddy.switch(&v3).await.unwrap();
        forward.push(t.elapsed());
        assert_eq!(version(s.port), "v3");
        assert_eq!(
            admin_requests(s.proxy.name(), "POST"),
            posts + 1,
            "a switch from a drained route is one change"
        );
        let t = Instant::now();
        caddy.switch(&v1).await.unwrap();
        back.push(t.elapsed());
        assert_eq!(version(s.port), "v1");
        assert_eq!(
            admin_requests(s.proxy.name(), "POST"),
            posts + 2,
            "a switch back is one change"
        );
        let route = caddy.route().await.unwrap().unwrap();
        assert_eq!(
            (route.primary.as_str(), route.fallback.as_str()),
            (v1.address.as_str(), v1.address.as_str()),
            "after the switch back nothing names the release left"
        );
    }
    // A slow command in the container (a health probe of a hanging
    // release) does not hold up a switch.
    let slow = {
        let proxy = s.proxy.clone();
        tokio::spawn(async move {
            proxy
                .exec(&["sleep".into(), "2".into()], Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    caddy.switch(&v3).await.unwrap();
    let beside_slow = t.elapsed();
    assert!(
        beside_slow < Duration::from_secs(1),
        "a switch beside a slow command took {beside_slow:?}"
    );
    assert!(slow.await.unwrap().unwrap().success());

    let (forward, back) = (median(forward), median(back));
    println!("switch: median {forward:?}; switch back: median {back:?}");
    // The goal is 50 ms; the bound leaves room for a loaded machine.
    assert!(
        forward < Duration::from_millis(150) && back < Duration::from_millis(150),
        "switch {forward:?}, switch back {back:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_setups_made_at_once_on_one_proxy_keep_every_app() {
    let s = setup("at-once").await;
    let proxy = s
        .proxy
        .clone()
        .with_tls_listen(
            &format!("127.0.0.1:{}", free_port()),
            rollback_proxy::caddy::TLS_CONTAINER_PORT,
        )
        .unwrap();
    let apps: Vec<Caddy> = (0..8)
        .map(|i| {
            Caddy::new(proxy.clone(), &format!("app{i}"))
                .with_host(&format!("app{i}.internal"))
                .with_tls(rollback_proxy::Tls::Internal)
        })
        .collect();
    apps[0].ensure().await.unwrap();
    // Another app's switches change the config all along: a whole-config
    // write computed before one of them would undo it.
    let busy = Caddy::new(proxy.clone(), "busy");
    busy.ensure().await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let switches = {
        let (busy, done) = (busy.clone(), done.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !done.load(Ordering::Relaxed) || n < 10 {
                n += 1;
                let to = rollback_core::Upstream::new(
                    ContainerId(format!("busy{n}")),
                    format!("busy{n}:8080"),
                );
                busy.switch(&to).await?;
            }
            Ok::<_, rollback_core::Error>(n)
        })
    };
    // Each setup reads the whole config and writes it back with its own
    // parts: at once, a write on a config another changed in between
    // would undo that other's parts, unless Caddy refuses it (If-Match).
    let start = Arc::new(tokio::sync::Barrier::new(apps.len()));
    let tasks: Vec<_> = apps
        .iter()
        .cloned()
        .map(|c| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                c.ensure().await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let n = switches.await.unwrap().unwrap();
    assert_eq!(
        busy.route().await.unwrap().map(|r| r.primary),
        Some(format!("busy{n}:8080")),
        "no switch undone"
    );
    let mut set_up: Vec<String> = apps[0]
        .certificates()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.app)
        .collect();
    set_up.sort();
    let want: Vec<String> = (0..8).map(|i| format!("app{i}")).collect();
    assert_eq!(set_up, want, "{}", s.proxy_errors());
    // The whole-config changes went the checked way (POST /config/ with
    // If-Match), not the unchecked /load kept for a proxy without `nc`.
    let out = docker(&["logs", s.proxy.name()]);
    let logs =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let posts = |uri: &str| {
        logs.lines()
            .filter(|l| {
                l.contains("\"method\":\"POST\"") && l.contains(&format!("\"uri\":\"{uri}\""))
            })
            .count()
    };
    assert!(posts("/config/") >= 8, "{logs}");
    assert_eq!(posts("/load"), 0, "{logs}");
}
