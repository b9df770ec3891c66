//! Shared helpers for the tests against the real engine and registries.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rollback_core::{labels, ContainerSpec, ContainerTemplate, PortMapping};
use rollback_docker::DockerRuntime;

/// Label that marks everything a test run created.
pub const TEST_LABEL: &str = "io.rollback.test";

/// A value from the test environment: the process env, else
/// `<workspace>/.test-env/env`.
pub fn test_env(key: &str) -> String {
    if let Ok(value) = std::env::var(key) {
        return value;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.test-env/env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{key} is not set and {} is missing: run scripts/test-env first",
            path.display()
        )
    });
    let entries: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    entries
        .get(key)
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| {
            panic!(
                "{key} missing from {}: run scripts/test-env first",
                path.display()
            )
        })
}

/// A name unique to this process and call: `rbdocker-<what>-<pid>-<n>`.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "rbdocker-{what}-{}-{}{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos & 0xfff
    )
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes every container and network labelled with its run id, and the
/// images, volumes and locks it was told about, when dropped (also when the test fails).
pub struct Cleanup {
    pub run: String,
    images: Vec<String>,
    locks: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Self {
        Cleanup {
            run: unique("run"),
            images: Vec::new(),
            locks: Vec::new(),
            volumes: Vec::new(),
            networks: Vec::new(),
        }
    }

    pub fn network(&mut self, name: &str) {
        self.networks.push(name.to_owned());
    }

    pub fn image(&mut self, reference: &str) {
        self.images.push(reference.to_owned());
    }

    pub fn volume(&mut self, name: &str) {
        self.volumes.push(name.to_owned());
    }

    /// A container created outside a spec of this module, removed by name.
    pub fn container(&mut self, name: &str) {
        self.locks.push(name.to_owned());
    }

    pub fn lock(&mut self, app: &str) {
        self.locks.push(rollback_docker::lock::container_name(app));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={TEST_LABEL}={}", self.run);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
        let mut args: Vec<&str> = vec!["rm", "-f"];
        args.extend(ids.split_whitespace());
        args.extend(self.locks.iter().map(String::as_str));
        if args.len() > 2 {
            docker(&args);
        }
        let networks = docker(&["network", "ls", "-q", "--filter", &filter]);
        for network in String::from_utf8_lossy(&networks.stdout).split_whitespace() {
            docker(&["network", "rm", network]);
        }
        for network in &self.networks {
            docker(&["network", "rm", network]);
        }
        for volume in &self.volumes {
            docker(&["volume", "rm", volume]);
        }
        for image in &self.images {
            docker(&["rmi", image]);
        }
    }
}

pub async fn runtime() -> DockerRuntime {
    DockerRuntime::connect(None, Duration::from_secs(10))
        .await
        .expect("the local engine answers (run scripts/test-env first)")
}

/// A spec for `image` under `name`, labelled as part of `app` and the run.
pub fn spec(
    cleanup: &Cleanup,
    app: &str,
    name: &str,
    image: &str,
    port: Option<u16>,
) -> ContainerSpec {
    let mut template = ContainerTemplate::new()
        .label(TEST_LABEL, cleanup.run.clone())
        .label(labels::APP, app)
        .stop_timeout(Duration::from_secs(1));
    if let Some(p) = port {
        template = template.port(
            format!("127.0.0.1:{p}:8080")
                .parse::<PortMapping>()
                .unwrap(),
        );
    }
    ContainerSpec::new(name, image.parse().unwrap(), template)
}

/// The body of `GET path` on 127.0.0.1:port, once it answers 200, polling
/// until `deadline`.
pub fn http_get(port: u16, path: &str, deadline: Duration) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut response = String::new();
                if stream.read_to_string(&mut response).is_ok() && response.contains(" 200 ") {
                    return response
                        .split_once("\r\n\r\n")
                        .map(|(_, body)| body.to_owned())
                        .unwrap_or_default();
                }
                last = response;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET 127.0.0.1:{port}{path} did not answer 200 within {deadline:?}; last: {last:?}");
}
