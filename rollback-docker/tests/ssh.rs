//! `DockerRuntime` over `ssh://`, against the sshd of `scripts/test-env`
//! (root on 127.0.0.1, whose `docker` reaches the machine's engine). The
//! `ssh` first in PATH reads the test env's ssh_config (its known_hosts, no
//! key files) and the key comes from the test env's agent.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use rollback_core::{ContainerExit, EnvValue, Runtime};
use rollback_docker::DockerRuntime;

const WAIT: Duration = Duration::from_secs(20);

/// One test at a time, so the ssh processes a test sees are its own.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The ssh URL, after pointing this process's `ssh` at the test env.
fn ssh_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let path = format!(
            "{}:{}",
            test_env("ROLLBACK_TEST_SSH_PATH"),
            std::env::var("PATH").unwrap_or_default()
        );
        // Once, before any test of this binary runs ssh.
        std::env::set_var("PATH", path);
        std::env::set_var("SSH_AUTH_SOCK", test_env("ROLLBACK_TEST_SSH_AUTH_SOCK"));
        test_env("ROLLBACK_TEST_SSH")
    })
    .clone()
}

async fn over_ssh() -> DockerRuntime {
    connect(&ssh_url()).await
}

async fn connect(url: &str) -> DockerRuntime {
    DockerRuntime::connect(Some(url), Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {}", e.report()))
}

/// The same sshd on a port that refuses socket forwarding.
fn no_forwarding_url() -> String {
    ssh_url();
    test_env("ROLLBACK_TEST_SSH_NO_FORWARDING")
}

/// The `ssh … docker system dial-stdio` channels this test process runs.
fn dial_stdio_channels() -> usize {
    children()
        .iter()
        .filter(|l| l.contains("dial-stdio"))
        .count()
}

/// The master `ssh` processes of this test process.
fn masters() -> Vec<String> {
    children()
        .into_iter()
        .filter(|l| l.contains("ControlMaster=yes"))
        .collect()
}

/// This test process's children, `pid args` each.
fn children() -> Vec<String> {
    let out = std::process::Command::new("ps")
        .args([
            "-o",
            "pid=,args=",
            "--ppid",
            &std::process::id().to_string(),
        ])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_engine_over_ssh_is_the_engine_of_the_host() {
    let _serial = SERIAL.lock().await;
    let rt = over_ssh().await;
    assert_eq!(rt.url(), ssh_url());
    the_engine_of_the_host(&rt).await;
    // Every connection was a channel of the forwarded socket.
    assert_eq!(dial_stdio_channels(), 0, "{:?}", children());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_refuses_socket_forwarding_is_reached_through_dial_stdio() {
    let _serial = SERIAL.lock().await;
    let log = test_env("ROLLBACK_TEST_SSH_LOG");
    let denied = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("but the request was denied")
            .count()
    };
    let denied_before = denied();
    let url = no_forwarding_url();
    let rt = connect(&url).await;
    assert_eq!(rt.url(), url);
    the_engine_of_the_host(&rt).await;
    assert!(
        denied() > denied_before,
        "the server refused the forwarding"
    );
    assert!(dial_stdio_channels() > 0, "{:?}", children());
}

/// What a runtime over ssh makes, the local CLI sees, and requests at once
/// all answer.
async fn the_engine_of_the_host(rt: &DockerRuntime) {
    let cleanup = Cleanup::new();
    let server_api = docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(rt.api_version(), server_api.trim());

    // A container made over ssh is seen by the local CLI, and the other way round.
    let app = unique("ssh");
    let id = rt
        .create(&spec(
            &cleanup,
            &app,
            &app,
            "rollback-fixture:healthy",
            None,
        ))
        .await
        .unwrap();
    rt.start(&id).await.unwrap();
    let running = docker_ok(&["inspect", "--format", "{{.State.Running}}", id.as_str()]);
    assert_eq!(running.trim(), "true");
    let info = rt.current(&app).await.unwrap().expect("the app runs");
    assert_eq!(info.id, id);

    // Requests at once: one channel each on the one master.
    let started = Instant::now();
    let reads = (0..8).map(|_| {
        let rt = rt.clone();
        let app = app.clone();
        tokio::spawn(async move { rt.current(&app).await })
    });
    for read in reads {
        let info = read.await.unwrap().unwrap().expect("the app runs");
        assert_eq!(info.id, id);
    }
    eprintln!("8 concurrent inspects over ssh: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_is_seen_over_ssh_through_the_event_stream() {
    let _serial = SERIAL.lock().await;
    let cleanup = Cleanup::new();
    let rt = over_ssh().await;
    let app = unique("ssh-crash");
    let mut flaky = spec(&cleanup, &app, &app, "rollback-fixture:flaky", None);
    flaky
        .env
        .push(("FLAKY_SECS".into(), EnvValue::Plain("2".into())));
    let id = rt.create(&flaky).await.unwrap();
    rt.start(&id).await.unwrap();
    let exit = tokio::time::timeout(WAIT, rt.wait_exit(&id))
        .await
        .expect("wait_exit resolves")
        .unwrap();
    assert_eq!(exit, ContainerExit::Exited { code: 2 });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_master_connection_ends_with_the_last_runtime() {
    let _serial = SERIAL.lock().await;
    let rt = over_ssh().await;
    let copy = rt.clone();
    let masters_now = masters();
    assert_eq!(
        masters_now.len(),
        1,
        "one master per runtime: {masters_now:?}"
    );
    let pid = masters_now[0].split_whitespace().next().unwrap().to_owned();
    drop(rt);
    copy.current("absent").await.unwrap();
    drop(copy);
    // Killed on drop; a zombie until tokio reaps it counts as ended.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            break;
        }
        assert!(Instant::now() < end, "master {pid} still runs: {stat}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
