//! Support for the end-to-end tests: the test environment started by
//! `scripts/test-env`, the `rollback` binary, fixture releases pushed to the
//! local registry, and cleanup guards.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A value of the test environment: the process environment first, then
/// `.test-env/env` written by `scripts/test-env`.
pub fn test_env(key: &str) -> String {
    static FILE: OnceLock<HashMap<String, String>> = OnceLock::new();
    if let Ok(value) = std::env::var(key) {
        return value;
    }
    let file = FILE.get_or_init(|| {
        let path = workspace_root().join(".test-env/env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!("{} is missing: run scripts/test-env first", path.display())
        });
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    });
    file.get(key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} is not in .test-env/env: run scripts/test-env first"))
}

/// The anonymous local registry (`127.0.0.1:PORT`).
pub fn registry() -> String {
    test_env("ROLLBACK_TEST_REGISTRY")
}

/// The socket URL of the second engine.
pub fn engine_b() -> String {
    test_env("ROLLBACK_TEST_DOCKER_B")
}

/// The socket URL of the single-node swarm's manager (engine C).
pub fn swarm() -> String {
    test_env("ROLLBACK_TEST_SWARM")
}

/// The `rollback` binary, built once per test process, with the
/// checkpoints (`ROLLBACK_TEST_PAUSE_AT`) that only these tests enable.
pub fn rollback_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "rollback-cli",
                "--features",
                "test-checkpoints",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p rollback-cli failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug/rollback")
    })
    .clone()
}

/// A unique name for this test run: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos & 0xffff)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Run `docker` (with `-H host` when given) and return stdout; panics on failure.
pub fn docker(host: Option<&str>, args: &[&str]) -> String {
    let out = docker_output(host, args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Run `docker` and return its output whatever the exit status.
pub fn docker_output(host: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    if let Some(host) = host {
        cmd.args(["-H", host]);
    }
    cmd.args(args).output().expect("run docker")
}

/// Build a fixture release (see `tests/fixtures/app/app.sh` for the modes),
/// tag it `repo:tag`, push it, and return its manifest digest in the registry.
pub fn push_release(repo: &str, tag: &str, version: &str, mode: &str) -> String {
    let context = test_env("ROLLBACK_TEST_FIXTURE_CONTEXT");
    let image = format!("{repo}:{tag}");
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--build-arg"])
        .arg(format!("VERSION={version}"))
        .arg("--build-arg")
        .arg(format!("MODE={mode}"))
        .args(["-t", &image, &context])
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "building {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker(None, &["push", "-q", &image]);
    digest_of(&image).unwrap_or_else(|| panic!("{image} has no digest after push"))
}

/// The manifest digest a tag points to in the registry (HEAD request), if any.
pub fn digest_of(reference: &str) -> Option<String> {
    let (name, tag) = reference.rsplit_once(':')?;
    let (host, path) = name.split_once('/')?;
    let request = format!(
        "HEAD /v2/{path}/manifests/{tag} HTTP/1.1\r\nHost: {host}\r\nAccept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json\r\nConnection: close\r\n\r\n"
    );
    content_digest(&http_raw(host, &request)?)
}

/// The `Docker-Content-Digest` of a registry's answer head, when it is a 200.
pub fn content_digest(head: &str) -> Option<String> {
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("docker-content-digest")
            .then(|| v.trim().to_owned())
    })
}

/// GET `http://127.0.0.1:port/path` and return the body, or `None` when
/// nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let response = http_raw(
        &format!("127.0.0.1:{port}"),
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

fn http_raw(addr: &str, request: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Removes every container of an app (active, retained, lock) on drop, on
/// each engine given.
pub struct AppGuard {
    /// The app name.
    pub app: String,
    /// Engines to clean (`None` is the default engine).
    pub hosts: Vec<Option<String>>,
}

impl AppGuard {
    /// A guard for `app` on the default engine and the given extra engines.
    pub fn new(app: &str, extra_hosts: &[String]) -> Self {
        let mut hosts = vec![None];
        hosts.extend(extra_hosts.iter().cloned().map(Some));
        Self {
            app: app.to_owned(),
            hosts,
        }
    }

    /// Ids of the running containers named exactly like the app, per engine.
    pub fn running(&self, host: Option<&str>) -> Vec<String> {
        let filter = format!("name=^/{}$", self.app);
        docker(host, &["ps", "-q", "--filter", &filter])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Ids of every container labelled with the app, running or not.
    pub fn all(&self, host: Option<&str>) -> Vec<String> {
        let filter = format!("label=io.rollback.app={}", self.app);
        docker(host, &["ps", "-aq", "--filter", &filter])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for AppGuard {
    fn drop(&mut self) {
        for host in &self.hosts {
            let host = host.as_deref();
            let mut ids = self.all(host);
            for name in [self.app.clone(), format!("rollback-lock-{}", self.app)] {
                let out =
                    docker_output(host, &["ps", "-aq", "--filter", &format!("name=^/{name}$")]);
                ids.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(str::to_owned),
                );
            }
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker_output(host, &args);
            }
        }
    }
}

/// The result of one CLI run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Exit code and both streams, for assertion messages.
    pub fn explain(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Both streams, for secret scans.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The JSON lines of stdout (with `--output json`).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// The final outcome object (the last JSON line).
    pub fn outcome(&self) -> serde_json::Value {
        self.json_lines()
            .pop()
            .unwrap_or_else(|| panic!("no JSON output: {self:?}"))
    }
}

/// Run `rollback` in `dir` with extra environment variables.
pub fn rollback(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(rollback_bin());
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run rollback");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `rollback` process running in the background; both output streams
/// are collected as they come, so a test can wait for a line and then
/// signal or kill the process at that point.
pub struct Spawned {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Start `rollback` in `dir` with extra environment variables, without waiting.
pub fn spawn_rollback(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Spawned {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    let mut cmd = Command::new(rollback_bin());
    cmd.current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn rollback");
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    type Pipe = Box<dyn Read + Send>;
    let pipes: [(Pipe, &Arc<Mutex<String>>); 2] = [
        (Box::new(child.stdout.take().unwrap()), &stdout),
        (Box::new(child.stderr.take().unwrap()), &stderr),
    ];
    for (pipe, sink) in pipes {
        let sink = sink.clone();
        readers.push(std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        }));
    }
    Spawned {
        child,
        stdout,
        stderr,
        readers,
    }
}

impl Spawned {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Both streams so far.
    pub fn output_so_far(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Wait until a line of either stream contains `needle`; panics with the
    /// output after `limit` or when the process ends first.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) {
        self.wait_until(&format!("{needle:?}"), limit, |out, err| {
            out.contains(needle) || err.contains(needle)
        });
    }

    /// Wait until a JSON event of `host` in `phase` was printed (`--output json`).
    pub fn wait_event(&mut self, host: &str, phase: &str, limit: Duration) {
        self.wait_until(
            &format!("an event of {host} in {phase}"),
            limit,
            |out, _| {
                out.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .any(|e| e["host"] == host && e["phase"] == phase)
            },
        );
    }

    /// Wait until `seen(stdout, stderr)`; panics with the output after
    /// `limit` or when the process ends first.
    pub fn wait_until(&mut self, what: &str, limit: Duration, seen: impl Fn(&str, &str) -> bool) {
        let end = std::time::Instant::now() + limit;
        let check = |s: &Self| seen(&s.stdout.lock().unwrap(), &s.stderr.lock().unwrap());
        loop {
            if check(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the readers a moment to drain the pipes.
                std::thread::sleep(Duration::from_millis(200));
                if check(self) {
                    return;
                }
                panic!(
                    "rollback ended ({status}) before {what}\n{}",
                    self.output_so_far()
                );
            }
            assert!(
                std::time::Instant::now() < end,
                "no {what} within {limit:?}\n{}",
                self.output_so_far()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Send a signal by name (`INT`, `TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// SIGKILL the process and reap it.
    pub fn kill(mut self) -> Run {
        let _ = self.child.kill();
        self.finish_inner()
    }

    /// Wait for the process to end.
    pub fn finish(mut self) -> Run {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Run {
        let status = self.child.wait().expect("wait for rollback");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // A test that failed half way must not leave a deploy running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One host of a [`Fleet`].
pub struct TestHost {
    /// Host name in the config.
    pub name: String,
    /// Engine URL; `None` is the default engine.
    pub docker: Option<String>,
    /// The loopback port the app is published on.
    pub port: u16,
    /// The body of the host's `env` inline table (`APP_MODE = "crash"`), or empty.
    pub env: String,
}

/// An app deployed to several hosts through the CLI, with a config file,
/// its own repository and a cleanup guard on every engine.
pub struct Fleet {
    /// App (container) name.
    pub app: String,
    /// Repository, no tag.
    pub repo: String,
    /// The hosts, in config order.
    pub hosts: Vec<TestHost>,
    /// Removes the app's containers on every engine.
    pub guard: AppGuard,
    dir: tempfile::TempDir,
}

/// The `(version, status)` of a fixture app's `/health` answer.
pub fn health_of(port: u16) -> Option<(String, String)> {
    let body = http_get(port, "/health")?;
    let json: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    Some((
        json["version"].as_str()?.to_owned(),
        json["status"].as_str()?.to_owned(),
    ))
}

impl Fleet {
    /// `prod-a` on the default engine and `prod-b` on engine B.
    pub fn two_hosts(prefix: &str) -> Self {
        Fleet::new(prefix, &[("prod-a", None), ("prod-b", Some(engine_b()))])
    }

    /// Deploy `tag` and insist on exit 0.
    pub fn deploy_ok(&self, tag: &str) {
        let run = self.run(&["deploy", "--tag", tag]);
        assert_eq!(run.code, 0, "deploy {tag}: {}", run.explain());
    }

    /// A fleet in the shared registry; `engines` are `(host name, engine)`.
    pub fn new(prefix: &str, engines: &[(&str, Option<String>)]) -> Self {
        Self::in_registry(prefix, &registry(), engines)
    }

    /// A fleet whose repository lives in `registry` (`127.0.0.1:PORT`).
    pub fn in_registry(prefix: &str, registry: &str, engines: &[(&str, Option<String>)]) -> Self {
        let app = unique(prefix);
        let repo = format!("{registry}/e2e/{app}");
        let extra: Vec<String> = engines.iter().filter_map(|(_, e)| e.clone()).collect();
        let guard = AppGuard::new(&app, &extra);
        let hosts = engines
            .iter()
            .map(|(name, docker)| TestHost {
                name: (*name).to_owned(),
                docker: docker.clone(),
                port: free_port(),
                env: String::new(),
            })
            .collect();
        Fleet {
            app,
            repo,
            hosts,
            guard,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The folder holding `rollback.toml`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Write `rollback.toml`: short health timings, one `[[hosts]]` per
    /// host with its own port and health URL; `extra` goes before the hosts
    /// (`[rollout]` and the like).
    pub fn write_config(&self, extra: &str) {
        let first = self.hosts[0].port;
        let mut config = format!(
            r#"[app]
name = "{app}"
repository = "{repo}"

[container]
ports = ["127.0.0.1:{first}:8080"]
stop_timeout = "1s"

[health]
http = "http://127.0.0.1:{first}/health"
json_pointer = "/status"
expect = "UP"
interval = "200ms"
timeout = "1s"
deadline = "5s"
stable_for = "1s"
{extra}
"#,
            app = self.app,
            repo = self.repo,
        );
        for host in &self.hosts {
            config.push_str(&format!(
                "\n[[hosts]]\nname = \"{}\"\nports = [\"127.0.0.1:{port}:8080\"]\nhealth_url = \"http://127.0.0.1:{port}/health\"\n",
                host.name,
                port = host.port
            ));
            if let Some(docker) = &host.docker {
                config.push_str(&format!("docker = \"{docker}\"\n"));
            }
            if !host.env.is_empty() {
                config.push_str(&format!("env = {{ {} }}\n", host.env));
            }
        }
        std::fs::write(self.dir().join("rollback.toml"), config).expect("write rollback.toml");
    }

    /// Run `rollback` with `--output json` appended.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Run `rollback` with `--output json` and extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        rollback(self.dir(), &args, env)
    }

    /// Start `rollback` with `--output json` in the background.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Spawned {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        spawn_rollback(self.dir(), &args, env)
    }

    /// The engine of host `i`, for `docker -H`.
    pub fn engine(&self, i: usize) -> Option<&str> {
        self.hosts[i].docker.as_deref()
    }

    /// Ids of the running containers named like the app on host `i`.
    pub fn running(&self, i: usize) -> Vec<String> {
        self.guard.running(self.engine(i))
    }

    /// The one running app container on host `i`; panics unless exactly one runs.
    pub fn running_id(&self, i: usize) -> String {
        let running = self.running(i);
        assert_eq!(
            running.len(),
            1,
            "exactly one container runs as {} on {}",
            self.app,
            self.hosts[i].name
        );
        running[0].clone()
    }

    /// The `(version, status)` host `i` answers with.
    pub fn answering(&self, i: usize) -> Option<(String, String)> {
        health_of(self.hosts[i].port)
    }

    /// The digest label of the app container on host `i`.
    pub fn running_digest(&self, i: usize) -> String {
        let id = self.running_id(i);
        docker(
            self.engine(i),
            &[
                "inspect",
                "-f",
                "{{index .Config.Labels \"io.rollback.release.digest\"}}",
                &id,
            ],
        )
    }

    /// The digest `tag` points to in the app's repository.
    pub fn tag_digest(&self, tag: &str) -> Option<String> {
        digest_of(&format!("{}:{tag}", self.repo))
    }

    /// Whether host `i` has a lock container for the app.
    pub fn lock_exists(&self, i: usize) -> bool {
        let filter = format!("name=^/rollback-lock-{}$", self.app);
        !docker(self.engine(i), &["ps", "-aq", "--filter", &filter]).is_empty()
    }

    /// The version each host answers with, after checking on every host:
    /// exactly one container runs under the app name, it answers `UP` with
    /// one of `versions`, no lock is left, and `latest` is the digest that
    /// runs.
    pub fn assert_invariant(&self, versions: &[&str]) -> Vec<String> {
        let latest = self.tag_digest("latest");
        let mut answers = Vec::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let name = &host.name;
            self.running_id(i);
            let (version, status) = self
                .answering(i)
                .unwrap_or_else(|| panic!("[{name}] nothing answers on port {}", host.port));
            assert_eq!(status, "UP", "[{name}] answers {version} {status}");
            assert!(
                versions.contains(&version.as_str()),
                "[{name}] runs {version}, not one of {versions:?}"
            );
            assert_eq!(
                latest.as_deref(),
                Some(self.running_digest(i).as_str()),
                "[{name}] runs {version} but latest points elsewhere"
            );
            assert!(!self.lock_exists(i), "[{name}] a deploy lock is left");
            answers.push(version);
        }
        answers
    }
}

/// Status and body of `GET path` on `127.0.0.1:port` with this `Host`, on
/// a fresh connection with short timeouts; `Err` says what went wrong.
pub fn http_status(port: u16, host: &str, path: &str) -> Result<(u16, String), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(2))))
        .map_err(|e| e.to_string())?;
    // One write: a request in pieces may meet a server that answered and
    // closed after the first one.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("{e} after {} bytes", response.len()))?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Err(format!(
            "the connection closed after {} bytes of response: {response:?}",
            response.len()
        ));
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// One request of a [`LoadLoop`].
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent.
    pub sent: std::time::SystemTime,
    /// When its answer (or failure) was complete.
    pub done: std::time::SystemTime,
    /// The trimmed body of a 200 answer, or what went wrong.
    pub answer: Result<String, String>,
}

/// What a [`LoadLoop`] saw: each thread's requests in order.
#[derive(Debug, Default)]
pub struct Load {
    /// The requests of each thread.
    pub threads: Vec<Vec<Sample>>,
}

impl Load {
    /// Every request, thread by thread.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.threads.iter().flatten()
    }

    /// How many requests got a 200.
    pub fn ok(&self) -> usize {
        self.samples().filter(|s| s.answer.is_ok()).count()
    }

    /// The requests that did not get a 200.
    pub fn failed(&self) -> Vec<&Sample> {
        self.samples().filter(|s| s.answer.is_err()).collect()
    }

    /// The bodies answered, each once, in the order first sent.
    pub fn versions(&self) -> Vec<String> {
        let mut ok: Vec<&Sample> = self.samples().filter(|s| s.answer.is_ok()).collect();
        ok.sort_by_key(|s| s.sent);
        let mut versions: Vec<String> = Vec::new();
        for sample in ok {
            let v = sample.answer.as_ref().unwrap();
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
        versions
    }

    /// The longest time a thread went without a 200 answer.
    pub fn longest_gap(&self) -> Duration {
        let mut longest = Duration::ZERO;
        for thread in &self.threads {
            let Some(first) = thread.first() else {
                continue;
            };
            let mut last_ok = first.sent;
            for sample in thread {
                if sample.answer.is_ok() {
                    let gap = sample.done.duration_since(last_ok).unwrap_or_default();
                    longest = longest.max(gap);
                    last_ok = sample.done;
                }
            }
            if let Some(end) = thread.last() {
                longest = longest.max(end.done.duration_since(last_ok).unwrap_or_default());
            }
        }
        longest
    }

    /// The requests sent at or after `from`, as a load of their own.
    pub fn sent_from(&self, from: std::time::SystemTime) -> Load {
        Load {
            threads: self
                .threads
                .iter()
                .map(|t| t.iter().filter(|s| s.sent >= from).cloned().collect())
                .collect(),
        }
    }

    /// The requests sent before `until`, as a load of their own.
    pub fn sent_before(&self, until: std::time::SystemTime) -> Load {
        Load {
            threads: self
                .threads
                .iter()
                .map(|t| t.iter().filter(|s| s.sent < until).cloned().collect())
                .collect(),
        }
    }

    /// Counts, versions and the longest gap in one line.
    pub fn summary(&self) -> String {
        format!(
            "{} requests, {} failed, versions {:?}, longest gap {} ms",
            self.samples().count(),
            self.failed().len(),
            self.versions(),
            self.longest_gap().as_millis()
        )
    }

    /// What the failed requests got, for assertion messages (the first 10).
    pub fn failures(&self) -> String {
        let failed = self.failed();
        let mut lines: Vec<String> = failed
            .iter()
            .take(10)
            .map(|s| {
                format!(
                    "{}: {}",
                    clock_millis(s.sent),
                    s.answer.as_ref().unwrap_err()
                )
            })
            .collect();
        if failed.len() > 10 {
            lines.push(format!("... and {} more", failed.len() - 10));
        }
        lines.join("\n")
    }
}

/// Requests running in the background until [`LoadLoop::stop`].
pub struct LoadLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<std::thread::JoinHandle<Vec<Sample>>>,
}

/// GET `path` on `127.0.0.1:port` with this `Host` from `threads` threads,
/// each on a fresh connection at most once per `every`, until stopped: a
/// bounded load, so a 2-core machine still runs the deploy beside it. A 200
/// is a success, anything else (status, refused, timeout, cut answer) a
/// failure.
pub fn load_loop(port: u16, host: &str, path: &str, threads: usize, every: Duration) -> LoadLoop {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};
    let stop = Arc::new(AtomicBool::new(false));
    let workers = (0..threads)
        .map(|_| {
            let stop = stop.clone();
            let (host, path) = (host.to_owned(), path.to_owned());
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let sent = SystemTime::now();
                    let answer = match http_status(port, &host, &path) {
                        Ok((200, body)) => Ok(body.trim().to_owned()),
                        Ok((status, body)) => Err(format!("{status} {}", body.trim())),
                        Err(e) => Err(e),
                    };
                    samples.push(Sample {
                        sent,
                        done: SystemTime::now(),
                        answer,
                    });
                    if let Some(rest) = every.checked_sub(began.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
                samples
            })
        })
        .collect();
    LoadLoop { stop, workers }
}

impl LoadLoop {
    /// Stop the threads and collect what they saw.
    pub fn stop(self) -> Load {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Load {
            threads: self
                .workers
                .into_iter()
                .map(|w| w.join().expect("a load thread panicked"))
                .collect(),
        }
    }
}

/// The `time` of a JSON event (`2026-01-02T03:04:05.678Z`, UTC).
pub fn event_time(event: &serde_json::Value) -> Option<std::time::SystemTime> {
    parse_rfc3339(event["time"].as_str()?)
}

/// A UTC RFC 3339 time with optional fractional seconds.
pub fn parse_rfc3339(text: &str) -> Option<std::time::SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        digits.parse::<u32>().ok()?
    };
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A time as `HH:MM:SS.mmm` UTC, for messages.
pub fn clock_millis(time: std::time::SystemTime) -> String {
    let d = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_read_as_the_clock_they_were_written_by() {
        let at = |s: &str| {
            parse_rfc3339(s)
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        };
        assert_eq!(at("1970-01-01T00:00:00Z"), Duration::ZERO);
        assert_eq!(
            at("2026-12-02T01:25:57.123Z"),
            Duration::from_millis(1_796_174_757_123)
        );
        assert_eq!(
            at("2024-02-29T23:59:59.5Z"),
            Duration::from_millis(1_709_251_199_500)
        );
        assert!(parse_rfc3339("2026-12-02 01:25:57").is_none());
        assert_eq!(
            clock_millis(std::time::UNIX_EPOCH + Duration::from_millis(3_723_004)),
            "01:02:03.004"
        );
    }
}
