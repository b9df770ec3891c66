//! `DockerRuntime` and `DockerHealthProbe` against the real engine.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use rollback_core::{
    retained_name, ContainerExit, DeployLock, DeploymentId, EnvValue, ErrorKind, HealthProbe,
    LockAttempt, LockInfo, ProbeResult, PullProgress, Repository, RestartPolicy, Runtime, Secret,
};
use rollback_docker::{DockerExecProbe, DockerHealthProbe, DockerRuntime};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn swap_then_rollback_restores_the_same_container() {
    let cleanup = Cleanup::new();
    let rt = runtime().await;
    let app = unique("swap");
    let port = free_port();

    let v1 = rt
        .create(&spec(
            &cleanup,
            &app,
            &app,
            "rollback-fixture:healthy",
            Some(port),
        ))
        .await
        .unwrap();
    rt.start(&v1).await.unwrap();
    let body = tokio::task::spawn_blocking(move || http_get(port, "/health", WAIT))
        .await
        .unwrap();
    assert!(body.contains(r#""version":"v1""#), "{body}");
    let current = rt
        .current(&app)
        .await
        .unwrap()
        .expect("v1 runs under the app name");
    assert_eq!(current.id, v1);
    assert!(current.state.is_running());

    // The swap, as the engine does it.
    rt.stop(&v1, Duration::from_secs(2)).await.unwrap();
    rt.stop(&v1, Duration::from_secs(2))
        .await
        .expect("stopping a stopped container is fine");
    rt.rename(&v1, &retained_name(&app)).await.unwrap();
    let v2 = rt
        .create(&spec(
            &cleanup,
            &app,
            &app,
            "rollback-fixture:crash",
            Some(port),
        ))
        .await
        .unwrap();
    let names: Vec<String> = rt
        .list_app(&app)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec![app.clone(), retained_name(&app)]);
    rt.start(&v2).await.unwrap();

    let exit = tokio::time::timeout(WAIT, rt.wait_exit(&v2))
        .await
        .expect("wait_exit resolves")
        .unwrap();
    assert_eq!(exit, ContainerExit::Exited { code: 1 });
    let logs = rt.logs(&v2, 20).await.unwrap();
    assert!(
        logs.iter().any(|l| l.contains("fatal: cannot start")),
        "{logs:?}"
    );

    // The rollback.
    rt.remove(&v2).await.unwrap();
    rt.rename(&v1, &app).await.unwrap();
    rt.start(&v1).await.unwrap();
    let restored = rt
        .current(&app)
        .await
        .unwrap()
        .expect("restored under the app name");
    assert_eq!(restored.id, v1, "the original container runs again");
    assert!(rt.current(&retained_name(&app)).await.unwrap().is_none());
    let body = tokio::task::spawn_blocking(move || http_get(port, "/health", WAIT))
        .await
        .unwrap();
    assert!(body.contains(r#""version":"v1""#), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_exit_reports_a_crash_within_a_second() {
    let cleanup = Cleanup::new();
    let rt = runtime().await;
    let app = unique("crash");
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
    let returned = SystemTime::now();
    assert_eq!(exit, ContainerExit::Exited { code: 2 });
    let finished = docker_ok(&["inspect", "--format", "{{.State.FinishedAt}}", id.as_str()]);
    let finished = humantime::parse_rfc3339_weak(finished.trim()).unwrap();
    let latency = returned.duration_since(finished).unwrap_or_default();
    eprintln!("wait_exit latency after the container exited: {latency:?}");
    assert!(latency < Duration::from_secs(1), "latency {latency:?}");

    // Exited before anyone watched: reported at once.
    let started = Instant::now();
    let exit = rt.wait_exit(&id).await.unwrap();
    assert_eq!(exit, ContainerExit::Exited { code: 2 });
    assert!(started.elapsed() < Duration::from_secs(1));

    // Removed from outside while watched.
    let hang = rt
        .create(&spec(
            &cleanup,
            &app,
            &unique("hang"),
            "rollback-fixture:hang",
            None,
        ))
        .await
        .unwrap();
    rt.start(&hang).await.unwrap();
    let watcher = {
        let rt = rt.clone();
        let hang = hang.clone();
        tokio::spawn(async move { rt.wait_exit(&hang).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !watcher.is_finished(),
        "a running container is still watched"
    );
    docker_ok(&["rm", "-f", hang.as_str()]);
    let exit = tokio::time::timeout(WAIT, watcher)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(exit, ContainerExit::Gone | ContainerExit::Exited { .. }),
        "{exit:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_exit_reports_a_restart_by_the_engine() {
    let cleanup = Cleanup::new();
    let rt = runtime().await;
    let app = unique("restart");
    let mut flaky = spec(&cleanup, &app, &app, "rollback-fixture:flaky", None);
    flaky
        .env
        .push(("FLAKY_SECS".into(), EnvValue::Plain("1".into())));
    flaky.restart = Some(RestartPolicy::OnFailure);
    let id = rt.create(&flaky).await.unwrap();
    rt.start(&id).await.unwrap();
    let exit = tokio::time::timeout(WAIT, rt.wait_exit(&id))
        .await
        .expect("wait_exit resolves")
        .unwrap();
    let ContainerExit::Restarted { restart_count } = exit else {
        panic!("expected a restart, got {exit:?}");
    };
    assert!(restart_count >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_digest_from_the_auth_registry() {
    let mut cleanup = Cleanup::new();
    let registry = test_env("ROLLBACK_TEST_AUTH_REGISTRY");
    let user = test_env("ROLLBACK_TEST_AUTH_USER");
    let password = test_env("ROLLBACK_TEST_AUTH_PASSWORD");
    let config = tempfile::tempdir().unwrap();
    let config_dir = config.path().to_str().unwrap();

    // Publish a fixture to the auth registry with a throwaway CLI config.
    let mut login = std::process::Command::new("docker")
        .args([
            "--config",
            config_dir,
            "login",
            "-u",
            &user,
            "--password-stdin",
            &registry,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut login.stdin.take().unwrap(), password.as_bytes()).unwrap();
    assert!(login.wait().unwrap().success(), "docker login");
    let repo = format!("{registry}/{}/app", cleanup.run);
    let tagged = format!("{repo}:v1");
    // A release of its own, so the pull has a layer to fetch.
    let built = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "--build-arg",
            &format!("VERSION={}", cleanup.run),
        ])
        .args(["-t", &tagged, &test_env("ROLLBACK_TEST_FIXTURE_CONTEXT")])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let pushed = docker_ok(&["--config", config_dir, "push", &tagged]);
    let digest = pushed
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in push output: {pushed}"))
        .to_owned();
    let by_digest = format!("{repo}@{digest}");
    docker_ok(&["rmi", &tagged]);
    // Untagging may or may not drop the digest reference too.
    docker(&["rmi", &by_digest]);
    cleanup.image(&by_digest);
    assert!(!docker(&["image", "inspect", &by_digest]).status.success());
    let image = by_digest.parse().unwrap();

    // Without credentials the registry refuses.
    let anonymous_config = tempfile::tempdir().unwrap();
    let anonymous = runtime()
        .await
        .with_docker_config(anonymous_config.path().to_owned());
    let err = anonymous.pull(&image, None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{}", err.report());
    assert!(err.message().contains(anonymous.url()), "{}", err.message());

    // With the config written by `docker login`.
    let rt = runtime().await.with_docker_config(config.path().to_owned());
    let seen: Arc<Mutex<Vec<PullProgress>>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        Arc::new(move |p: PullProgress| seen.lock().unwrap().push(p))
    };
    rt.pull(&image, Some("linux/amd64".into()), Some(sink.clone()))
        .await
        .unwrap();
    assert!(docker(&["image", "inspect", &by_digest]).status.success());
    let last = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("progress reported");
    assert!(last.layers_total > 0, "{last:?}");
    assert_eq!(last.layers_done, last.layers_total, "{last:?}");
    eprintln!("pull progress at the end: {last:?}");

    // Present now: a no-op that reports nothing.
    let before = seen.lock().unwrap().len();
    rt.pull(&image, None, Some(sink)).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), before);

    // Without release labels the release is read from what the container
    // was created from: the digest reference, or the image's RepoDigests.
    let app = unique("pulled");
    let mut by_ref = spec(&cleanup, &app, &app, &by_digest, None);
    by_ref.labels.remove(rollback_core::labels::APP);
    rt.create(&by_ref).await.unwrap();
    let release = rt.current(&app).await.unwrap().unwrap().release.unwrap();
    assert_eq!(release.digest.as_str(), digest);
    assert_eq!(release.repository.to_string(), repo);
    docker_ok(&["tag", &by_digest, &tagged]);
    cleanup.image(&tagged);
    let by_tag_name = unique("pulled-tag");
    rt.create(&spec(&cleanup, &app, &by_tag_name, &tagged, None))
        .await
        .unwrap();
    let release = rt
        .current(&by_tag_name)
        .await
        .unwrap()
        .unwrap()
        .release
        .unwrap();
    assert_eq!(release.digest.as_str(), digest);
    assert_eq!(release.repository.to_string(), repo);
    assert_eq!(release.tag.as_deref(), Some("v1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_passes_the_whole_spec_to_the_engine() {
    let mut cleanup = Cleanup::new();
    let rt = runtime().await;
    let app = unique("spec");
    let network = unique("net");
    docker_ok(&[
        "network",
        "create",
        "--label",
        &format!("{TEST_LABEL}={}", cleanup.run),
        &network,
    ]);
    let mount = tempfile::tempdir().unwrap();
    std::fs::write(mount.path().join("marker"), "from the host").unwrap();
    let volume = format!("{app}-data");
    cleanup.volume(&volume);
    let port = free_port();

    let mut full = spec(&cleanup, &app, &app, "rollback-fixture:healthy", Some(port));
    full.ports.push("127.0.0.1::8080".parse().unwrap());
    full.env = vec![
        ("MODE".into(), EnvValue::Plain("prod".into())),
        ("PORT".into(), EnvValue::Plain("8080".into())),
    ];
    full.volumes = vec![
        format!("{}:/host:ro", mount.path().display()),
        format!("{volume}:/data"),
    ];
    full.platform = Some("linux/amd64".into());
    full.network = Some(network.clone());
    full.restart = Some(RestartPolicy::UnlessStopped);
    full.command = vec!["--ignored-by-the-fixture".into()];
    full.stop_timeout = Some(Duration::from_secs(7));
    let id = rt.create(&full).await.unwrap();
    rt.start(&id).await.unwrap();

    let field = |template: &str| {
        docker_ok(&["inspect", "--format", template, id.as_str()])
            .trim()
            .to_owned()
    };
    assert_eq!(field("{{.Name}}"), format!("/{app}"));
    assert_eq!(field("{{.HostConfig.NetworkMode}}"), network);
    assert_eq!(
        field("{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    assert_eq!(field("{{.Config.StopTimeout}}"), "7");
    assert_eq!(
        field("{{json .Config.Cmd}}"),
        r#"["--ignored-by-the-fixture"]"#
    );
    assert!(field("{{json .Config.Env}}").contains("MODE=prod"));
    let mut mounts: Vec<String> =
        field("{{range .Mounts}}{{.Destination}}={{.Type}},{{.RW}} {{end}}")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
    mounts.sort();
    assert_eq!(mounts, ["/data=volume,true", "/host=bind,false"]);
    let bindings = field(
        r#"{{range (index .HostConfig.PortBindings "8080/tcp")}}{{.HostIp}}:{{.HostPort}} {{end}}"#,
    );
    assert_eq!(bindings, format!("127.0.0.1:{port} 127.0.0.1:"));
    let published = field(
        r#"{{range (index .NetworkSettings.Ports "8080/tcp")}}{{.HostIp}}:{{.HostPort}} {{end}}"#,
    );
    let ephemeral: Vec<&str> = published
        .split_whitespace()
        .filter(|b| *b != format!("127.0.0.1:{port}"))
        .collect();
    assert_eq!(ephemeral.len(), 1, "{published}");
    assert!(ephemeral[0].starts_with("127.0.0.1:"), "{published}");

    let body = tokio::task::spawn_blocking(move || http_get(port, "/health", WAIT))
        .await
        .unwrap();
    assert!(body.contains(r#""status":"UP""#), "{body}");
    let exec = docker_ok(&["exec", id.as_str(), "cat", "/host/marker"]);
    assert_eq!(exec, "from the host");
    assert!(
        !docker(&["exec", id.as_str(), "touch", "/host/x"])
            .status
            .success(),
        "read-only bind"
    );

    let info = rt.current(&app).await.unwrap().unwrap();
    assert!(info.state.is_running());
    assert!(info.started_at.is_some());
    assert_eq!(info.labels.get(TEST_LABEL), Some(&cleanup.run));
    rt.remove(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deploy_lock_is_exclusive_per_app() {
    let mut cleanup = Cleanup::new();
    let rt = runtime().await;
    let app = unique("lock");
    cleanup.lock(&app);
    let lock = |holder: &str| LockInfo {
        app: app.clone(),
        deployment: DeploymentId::generate(),
        holder: holder.to_owned(),
        target: "v2".into(),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    };
    let first = lock("alice@ci pid 1");
    assert_eq!(rt.acquire(&first).await.unwrap(), LockAttempt::Acquired);
    assert_eq!(
        DeployLock::status(&rt, &app).await.unwrap(),
        Some(first.clone())
    );
    match rt.acquire(&lock("bob@ci pid 2")).await.unwrap() {
        LockAttempt::Held(held) => {
            assert_eq!(held, first);
            assert_eq!(held.holder, "alice@ci pid 1");
        }
        LockAttempt::Acquired => panic!("a second acquire must not succeed"),
    }
    assert!(
        rt.list_app(&app).await.unwrap().is_empty(),
        "the lock is not a release"
    );

    // Only the holder's deployment frees the lock.
    assert!(!rt
        .release(&app, &DeploymentId("another".into()))
        .await
        .unwrap());
    assert_eq!(
        DeployLock::status(&rt, &app).await.unwrap(),
        Some(first.clone())
    );
    assert!(rt.release(&app, &first.deployment).await.unwrap());

    // Concurrent acquires: exactly one wins.
    let contenders: Vec<_> = (0..4)
        .map(|i| {
            let rt = rt.clone();
            let lock = lock(&format!("racer {i}"));
            tokio::spawn(async move { rt.acquire(&lock).await.unwrap() })
        })
        .collect();
    let mut acquired = 0;
    for c in contenders {
        if c.await.unwrap() == LockAttempt::Acquired {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 1);

    // The break-glass frees whoever holds it.
    assert!(rt.break_lock(&app).await.unwrap());
    assert!(!rt.break_lock(&app).await.unwrap());
    assert_eq!(DeployLock::status(&rt, &app).await.unwrap(), None);
    let second = lock("bob@ci pid 2");
    assert_eq!(rt.acquire(&second).await.unwrap(), LockAttempt::Acquired);
    assert_eq!(
        DeployLock::status(&rt, &app).await.unwrap(),
        Some(second.clone())
    );
    assert!(rt.release(&app, &second.deployment).await.unwrap());
    assert!(!rt.release(&app, &second.deployment).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_env_values_reach_only_the_engine() {
    let mut cleanup = Cleanup::new();
    let rt = runtime().await;
    let app = unique("secret");
    let secret = format!("s3cr3t-{}", cleanup.run);
    let mut with_secret = spec(&cleanup, &app, &app, "rollback-fixture:healthy", None);
    with_secret.env.push((
        "TOKEN".into(),
        EnvValue::Secret(Secret::new(secret.clone())),
    ));
    with_secret.volumes = vec![format!("{app}-data:/data")];
    cleanup.volume(&format!("{app}-data"));
    let id = rt.create(&with_secret).await.unwrap();

    let env = docker_ok(&["inspect", "--format", "{{json .Config.Env}}", id.as_str()]);
    assert!(
        env.contains(&format!("TOKEN={secret}")),
        "the engine gets it"
    );
    let labels = docker_ok(&[
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        id.as_str(),
    ]);
    assert!(!labels.contains(&secret), "{labels}");
    let info = rt.inspect(&id).await.unwrap();
    assert!(!format!("{info:?}").contains(&secret));

    // Errors about the container never quote it.
    let conflict = rt.create(&with_secret).await.unwrap_err();
    assert_eq!(conflict.kind(), ErrorKind::Conflict);
    let mut missing_image = with_secret.clone();
    missing_image.name = unique("secret-img");
    missing_image.image = format!(
        "127.0.0.1:15000/{}/absent@sha256:{}",
        cleanup.run,
        "0".repeat(64)
    )
    .parse()
    .unwrap();
    let missing = rt.create(&missing_image).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{}", missing.report());
    let mut bad_volume = with_secret.clone();
    bad_volume.name = unique("secret-vol");
    bad_volume.volumes = vec![format!("relative/{secret}:/x")];
    let invalid = rt.create(&bad_volume).await.unwrap_err();
    for err in [&conflict, &missing, &invalid] {
        assert!(!err.report().contains(&secret), "{}", err.report());
        assert!(!format!("{err:?}").contains(&secret));
        assert!(err.message().contains(rt.url()), "{}", err.message());
    }

    let seen: Arc<Mutex<String>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        Arc::new(move |p: PullProgress| seen.lock().unwrap().push_str(&format!("{p:?}")))
    };
    rt.pull(
        &"rollback-fixture:healthy".parse().unwrap(),
        None,
        Some(sink),
    )
    .await
    .unwrap();
    assert!(!seen.lock().unwrap().contains(&secret));
    rt.remove(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_probe_reads_the_engine_health_state() {
    let cleanup = Cleanup::new();
    let rt = runtime().await;
    let probe = DockerHealthProbe::new(rt.clone());
    assert!(probe.describe().contains(rt.url()));
    let app = unique("health");

    let healthy = rt
        .create(&spec(
            &cleanup,
            &app,
            &unique("hc"),
            "rollback-fixture:healthcheck",
            None,
        ))
        .await
        .unwrap();
    let down = rt
        .create(&spec(
            &cleanup,
            &app,
            &unique("hcdown"),
            "rollback-fixture:healthcheck-down",
            None,
        ))
        .await
        .unwrap();
    let plain = rt
        .create(&spec(
            &cleanup,
            &app,
            &unique("plain"),
            "rollback-fixture:healthy",
            None,
        ))
        .await
        .unwrap();
    for id in [&healthy, &down, &plain] {
        rt.start(id).await.unwrap();
    }

    let settle = |id| {
        let probe = probe.clone();
        async move {
            let start = Instant::now();
            loop {
                let result = probe.check(&id, Duration::from_secs(2)).await;
                if !matches!(result, ProbeResult::Starting(_)) || start.elapsed() > WAIT {
                    return result;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let result = settle(healthy.clone()).await;
    assert!(result.is_healthy(), "{result:?}");

    let result = settle(down.clone()).await;
    let ProbeResult::Unhealthy(reason) = result else {
        panic!("expected unhealthy, got {result:?}");
    };
    let last_code = docker_ok(&[
        "inspect",
        "--format",
        "{{range .State.Health.Log}}{{.ExitCode}} {{end}}",
        down.as_str(),
    ]);
    let last_code = last_code
        .split_whitespace()
        .last()
        .expect("health log entries");
    assert_ne!(last_code, "0");
    assert!(
        reason.contains(&format!("exited with code {last_code}")),
        "{reason}"
    );

    assert_eq!(
        probe.check(&plain, Duration::from_secs(2)).await,
        ProbeResult::Unhealthy("image has no HEALTHCHECK".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_probe_runs_the_command_in_the_container() {
    let cleanup = Cleanup::new();
    let rt = runtime().await;
    let app = unique("exec");
    let id = rt
        .create(&spec(
            &cleanup,
            &app,
            &unique("exec"),
            "rollback-fixture:healthy",
            None,
        ))
        .await
        .unwrap();
    let argv = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    assert!(DockerExecProbe::new(rt.clone(), vec![]).is_err());

    // Not running yet: the engine refuses the exec, which is unhealthy.
    let probe = DockerExecProbe::new(rt.clone(), argv(&["true"])).unwrap();
    let result = probe.check(&id, Duration::from_secs(5)).await;
    assert!(!result.is_healthy(), "{result:?}");
    rt.start(&id).await.unwrap();

    // The file the fixture writes at start proves the command ran inside.
    let probe = DockerExecProbe::new(rt.clone(), argv(&["cat", "/www/version"])).unwrap();
    assert!(probe.describe().contains("cat /www/version"));
    let start = Instant::now();
    let result = loop {
        let result = probe.check(&id, Duration::from_secs(5)).await;
        if result.is_healthy() || start.elapsed() > WAIT {
            break result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        result,
        ProbeResult::Healthy("exited with code 0: v1".into())
    );

    let probe = DockerExecProbe::new(
        rt.clone(),
        argv(&["sh", "-c", "echo not ready >&2; exit 3"]),
    )
    .unwrap();
    assert_eq!(
        probe.check(&id, Duration::from_secs(5)).await,
        ProbeResult::Unhealthy("exited with code 3: not ready".into())
    );

    let probe = DockerExecProbe::new(rt.clone(), argv(&["sleep", "30"])).unwrap();
    let start = Instant::now();
    let result = probe.check(&id, Duration::from_millis(500)).await;
    assert!(start.elapsed() < Duration::from_secs(5));
    let ProbeResult::Unhealthy(reason) = result else {
        panic!("a hanging command is unhealthy, got {result:?}");
    };
    assert!(reason.contains("not done within 500ms"), "{reason}");

    let probe = DockerExecProbe::new(rt.clone(), argv(&["/no/such/program"])).unwrap();
    let result = probe.check(&id, Duration::from_secs(5)).await;
    assert!(!result.is_healthy(), "{result:?}");
}

/// Build a fixture image of its own id (a unique version) as `reference`.
fn build_image(reference: &str, version: &str) {
    let context = test_env("ROLLBACK_TEST_FIXTURE_CONTEXT");
    let out = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--build-arg"])
        .arg(format!("VERSION={version}"))
        .args(["-t", reference, &context])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_of_a_repository_are_listed_and_removed_never_forced() {
    let mut cleanup = Cleanup::new();
    let rt = runtime().await;
    let repo: Repository = format!("127.0.0.1:5000/e2e/{}", unique("img"))
        .parse()
        .unwrap();
    let (v1, v2, shared) = (
        format!("{repo}:v1"),
        format!("{repo}:v2"),
        format!("{repo}:shared"),
    );
    for reference in [&v1, &v2, &shared] {
        cleanup.image(reference);
    }
    build_image(&v1, &unique("v1"));
    build_image(&v2, &unique("v2"));
    // Also named by the fixture's own tag: removing it by id needs force.
    docker_ok(&["tag", "rollback-fixture:healthy", &shared]);

    let mut images = rt.list_images(&repo).await.unwrap();
    images.sort_by(|a, b| a.tags.cmp(&b.tags));
    let tags: Vec<&[String]> = images.iter().map(|i| i.tags.as_slice()).collect();
    assert_eq!(tags, [["shared"], ["v1"], ["v2"]]);
    let id_of = |r: &str| {
        docker_ok(&["image", "inspect", "-f", "{{.Id}}", r])
            .trim()
            .to_owned()
    };
    assert_eq!(images[1].id, id_of(&v1));
    assert!(images[1].created > 0);
    // Less the layers shared with other images where the engine says so
    // (API 1.42 and later), else the whole size.
    let total: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", &v1])
        .trim()
        .parse()
        .unwrap();
    assert!(images[1].size > 0 && images[1].size <= total, "{images:?}");

    // A container of v2 keeps its image.
    let user = rt
        .create(&spec(&cleanup, &unique("app"), &unique("img"), &v2, None))
        .await
        .unwrap();
    let e = rt.remove_image(&images[2].id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = rt.remove_image(&images[0].id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(docker(&["image", "inspect", "rollback-fixture:healthy"])
        .status
        .success());

    rt.remove_image(&images[1].id).await.unwrap();
    assert!(!docker(&["image", "inspect", &v1]).status.success());
    let e = rt.remove_image(&images[1].id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    rt.remove(&user).await.unwrap();
    rt.remove_image(&images[2].id).await.unwrap();
    let left: Vec<Vec<String>> = rt
        .list_images(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.tags)
        .collect();
    assert_eq!(left, [["shared"]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_probe_admits_only_images_with_a_healthcheck() {
    let rt = runtime().await;
    let probe = DockerHealthProbe::new(rt.clone());
    probe
        .admit(&"rollback-fixture:healthcheck".parse().unwrap())
        .await
        .unwrap();
    let err = probe
        .admit(&"rollback-fixture:healthy".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.report());
    assert!(
        err.message().contains("has no HEALTHCHECK"),
        "{}",
        err.report()
    );
    let err = probe
        .admit(&"rollback-fixture:no-such-tag".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.report());
    assert!(err.message().contains(rt.url()), "{}", err.report());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_engines_are_unavailable_within_the_timeout() {
    // Accepts connections but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("tcp://{}", silent.local_addr().unwrap());
    for url in [
        "unix:///nonexistent.sock",
        "tcp://127.0.0.1:1",
        silent_url.as_str(),
    ] {
        let timeout = Duration::from_secs(1);
        let started = Instant::now();
        let err = DockerRuntime::connect(Some(url), timeout)
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        eprintln!("{url}: {} after {elapsed:?}", err.report());
        assert_eq!(
            err.kind(),
            ErrorKind::Unavailable,
            "{url}: {}",
            err.report()
        );
        assert!(err.message().contains(url), "{}", err.message());
        assert!(
            elapsed < timeout + Duration::from_millis(500),
            "{url}: {elapsed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_to_the_local_engine_with_a_negotiated_api() {
    let rt = runtime().await;
    let server_api = docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(
        rt.api_version(),
        server_api.trim(),
        "negotiated down to the engine's"
    );
    assert!(rt.current(&unique("absent")).await.unwrap().is_none());
    let err = rt
        .inspect(&rollback_core::ContainerId(unique("absent")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains(rt.url()));
}

#[tokio::test(flavor = "multi_thread")]
async fn networks_addresses_and_exec() {
    let mut cleanup = Cleanup::new();
    let rt = runtime().await;
    let network = unique("net");
    cleanup.network(&network);
    assert!(rt.create_network(&network).await.unwrap(), "created");
    assert!(
        !rt.create_network(&network).await.unwrap(),
        "a second create finds it"
    );
    let labels = docker_ok(&["network", "inspect", "-f", "{{json .Labels}}", &network]);
    assert!(
        labels.contains(r#""io.rollback.managed":"true""#),
        "{labels}"
    );

    let app = unique("net-app");
    let mut on_network = spec(&cleanup, &app, &app, "rollback-fixture:healthy", None);
    on_network.network = Some(network.clone());
    let server = rt.create(&on_network).await.unwrap();
    assert_eq!(
        rt.network_address(&server, &network).await.unwrap(),
        None,
        "no address before it starts"
    );
    rt.start(&server).await.unwrap();
    let address = rt
        .network_address(&server, &network)
        .await
        .unwrap()
        .expect("an address once running");
    assert!(address.parse::<std::net::Ipv4Addr>().is_ok(), "{address}");

    let client_name = unique("net-client");
    let client = rt
        .create(&spec(
            &cleanup,
            &app,
            &client_name,
            "rollback-fixture:down",
            None,
        ))
        .await
        .unwrap();
    rt.start(&client).await.unwrap();
    assert_eq!(rt.network_address(&client, &network).await.unwrap(), None);
    rt.connect_network(&client, &network).await.unwrap();
    rt.connect_network(&client, &network)
        .await
        .expect("connecting twice is fine");
    assert!(rt
        .network_address(&client, &network)
        .await
        .unwrap()
        .is_some());

    // The client reaches the server over the network, from inside.
    let argv = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let url = format!("http://{address}:8080/version");
    let mut body = None;
    for _ in 0..50 {
        let out = rt
            .exec(&client, &argv(&["wget", "-q", "-O", "-", &url]), WAIT)
            .await
            .unwrap();
        if out.success() {
            body = Some(out.output);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body.as_deref(), Some("v1\n"));

    let out = rt
        .exec(
            &client,
            &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert!(
        out.output.contains("out") && out.output.contains("err"),
        "{out:?}"
    );

    let started = Instant::now();
    let err = rt
        .exec(&client, &argv(&["sleep", "5"]), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    rt.stop(&client, Duration::from_secs(1)).await.unwrap();
    let err = rt.exec(&client, &argv(&["true"]), WAIT).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
}
