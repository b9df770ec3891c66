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
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing: run scripts/test-env first", path.display()));
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

/// The `rollback` binary, built once per test process.
pub fn rollback_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "rollback-cli"])
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
    let response = http_raw(host, &request)?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    response.lines().find_map(|l| {
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
                let out = docker_output(host, &["ps", "-aq", "--filter", &format!("name=^/{name}$")]);
                ids.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned));
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
