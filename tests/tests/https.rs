//! HTTPS behind `[proxy]` end to end: the `caddy:2` stand-in as the proxy,
//! a second Caddy as a local ACME CA (its `acme_server`), certificates
//! obtained through a real HTTP challenge, and clients (`curl --resolve`,
//! SNI set, no /etc/hosts) that verify against the CA's root.
//!
//! Each test runs a proxy of its own (`[proxy] name`) on ports of its own,
//! so they run beside each other and beside the other proxy tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use rollback_e2e::*;

/// The network rollback puts the proxy and the apps on.
const NETWORK: &str = "rollback";
const WAIT: Duration = Duration::from_secs(60);

/// Containers (and the proxy's volume) removed on drop.
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker_output(None, &["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = docker_output(None, &["volume", "rm", "-f", v]);
        }
    }
}

/// A test's proxy: its name, HTTP and HTTPS ports, and the cleanup of it.
struct Proxy {
    name: String,
    http: u16,
    https: u16,
    _cleanup: Cleanup,
}

impl Proxy {
    fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        Proxy {
            http: free_port(),
            https: free_port(),
            _cleanup: Cleanup {
                containers: vec![name.clone()],
                volumes: vec![format!("{name}-data")],
            },
            name,
        }
    }

    /// Give the proxy container `hosts` as names on the network, so the
    /// CA's HTTP challenge for them reaches it (what public DNS does for a
    /// real host).
    fn answer_for(&self, hosts: &[&str]) {
        let _ = docker_output(None, &["network", "disconnect", NETWORK, &self.name]);
        let mut args = vec!["network", "connect"];
        for h in hosts {
            args.extend(["--alias", h]);
        }
        args.extend([NETWORK, self.name.as_str()]);
        docker(None, &args);
    }
}

/// A local ACME CA: Caddy's `acme_server` on the proxy's network, its root
/// copied out for the clients and the proxy.
struct Ca {
    name: String,
    root: PathBuf,
    _cleanup: Cleanup,
}

impl Ca {
    fn start(dir: &Path) -> Self {
        let name = unique("tls-ca");
        let cleanup = Cleanup {
            containers: vec![name.clone()],
            volumes: Vec::new(),
        };
        let _ = docker_output(None, &["network", "create", NETWORK]);
        // `log`: every ACME request is an access log line, so orders can be counted.
        let caddyfile = format!(
            "{{\n  skip_install_trust\n  admin off\n}}\n{name} {{\n  tls internal\n  log\n  acme_server\n}}\n"
        );
        docker(
            None,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                NETWORK,
                "-e",
                &format!("CADDYFILE={caddyfile}"),
                "caddy:2",
                "sh",
                "-c",
                "printf '%s' \"$CADDYFILE\" > /tmp/Caddyfile && exec caddy run --config /tmp/Caddyfile",
            ],
        );
        let root = dir.join("ca.pem");
        let end = Instant::now() + WAIT;
        loop {
            let out = docker_output(
                None,
                &[
                    "exec",
                    &name,
                    "cat",
                    "/data/caddy/pki/authorities/local/root.crt",
                ],
            );
            if out.status.success() && !out.stdout.is_empty() {
                std::fs::write(&root, &out.stdout).unwrap();
                break;
            }
            assert!(Instant::now() < end, "the CA {name} made no root");
            std::thread::sleep(Duration::from_millis(200));
        }
        Ca {
            name,
            root,
            _cleanup: cleanup,
        }
    }

    fn directory(&self) -> String {
        format!("https://{}/acme/local/directory", self.name)
    }

    /// How many certificate orders the CA has taken.
    fn orders(&self) -> usize {
        let out = docker_output(None, &["logs", &self.name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        text.lines()
            .filter(|l| l.contains("\"uri\":\"/acme/local/new-order"))
            .count()
    }
}

/// `rollback.toml` for `fleet` behind `proxy`, served over HTTPS for
/// `host`; `tls` holds the `tls` key and its companions.
fn write_config(fleet: &Fleet, proxy: &Proxy, host: &str, tls: &str) {
    write_config_with(
        fleet,
        proxy,
        host,
        &format!("tls_listen = \"127.0.0.1:{}\"\n{tls}", proxy.https),
    );
}

/// `rollback.toml` for `fleet` behind `proxy` for `host`, with `extra`
/// as the rest of `[proxy]` (`tls_listen`, `tls`, ...).
fn write_config_with(fleet: &Fleet, proxy: &Proxy, host: &str, extra: &str) {
    let text = format!(
        r#"[app]
name = "{app}"
repository = "{repo}"

[container]
stop_timeout = "1s"

[proxy]
name = "{name}"
listen = "127.0.0.1:{http}"
app_port = 8080
drain = "1s"
host = "{host}"
{extra}

[health]
path = "/health"
json_pointer = "/status"
expect = "UP"
interval = "200ms"
timeout = "1s"
deadline = "10s"
stable_for = "1s"

[[hosts]]
name = "prod-a"
"#,
        app = fleet.app,
        repo = fleet.repo,
        name = proxy.name,
        http = proxy.http,
    );
    std::fs::write(fleet.dir().join("rollback.toml"), text).unwrap();
}

/// GET `https://host:port/path` with `curl`, verifying against `root`:
/// the status and body, or what went wrong.
fn https_get(port: u16, host: &str, path: &str, root: &Path) -> Result<(u16, String), String> {
    https_get_with(port, host, path, root, &[])
}

/// [`https_get`] with more `curl` arguments.
fn https_get_with(
    port: u16,
    host: &str,
    path: &str,
    root: &Path,
    extra: &[&str],
) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "3",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(extra)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(root)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = status
        .split(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    Ok((code, body.trim().to_owned()))
}

/// The HTTP version and body of a 200 answer over HTTPS, waiting up to
/// `WAIT` for one (a certificate may still be on its way).
fn wait_https(port: u16, host: &str, root: &Path, want: &str) -> String {
    let end = Instant::now() + WAIT;
    loop {
        let last = https_get(port, host, "/version", root);
        if let Ok((200, body)) = &last {
            if body == want {
                return body.clone();
            }
        }
        assert!(
            Instant::now() < end,
            "https://{host}:{port}/version never answered {want}: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The status and `Location` of a plain HTTP GET.
fn http_redirect(port: u16, host: &str, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, location) = text.split_once(' ').unwrap_or((&text, ""));
    (code.to_owned(), location.to_owned())
}

fn http_version(port: u16, host: &str, root: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_version}"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(root)
        .arg(format!("https://{host}:{port}/version"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn acme_issues_redirects_and_reuses_the_certificate_after_a_restart() {
    let fleet = Fleet::new("tls-acme", &[("prod-a", None)]);
    let ca = Ca::start(fleet.dir());
    let proxy = Proxy::new("tls-px");
    let host = format!("{}.test", fleet.app);
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    let tls = format!(
        "tls = \"acme\"\nacme_email = \"ops@example.com\"\nacme_ca = \"{}\"\nacme_ca_root = \"ca.pem\"\n",
        ca.directory()
    );
    write_config(&fleet, &proxy, &host, &tls);

    let run = fleet.run(&["proxy", "boot"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    proxy.answer_for(&[&host]);
    fleet.deploy_ok("v1");
    assert_eq!(wait_https(proxy.https, &host, &ca.root, "v1"), "v1");
    assert_eq!(http_version(proxy.https, &host, &ca.root), "2");
    // A config change while the first order runs (the switch) may start it again.
    let orders = ca.orders();
    assert!(orders >= 1, "the CA took no order");

    // Plain HTTP goes to HTTPS, path and query kept.
    let (code, location) = http_redirect(proxy.http, &host, "/version?x=1");
    assert_eq!(code, "308");
    assert_eq!(
        location,
        format!("https://{host}:{}/version?x=1", proxy.https)
    );

    // The certificate outlives the proxy container: a restart and a
    // redeploy ask the CA for nothing.
    docker(None, &["restart", &proxy.name]);
    fleet.deploy_ok("v2");
    assert_eq!(wait_https(proxy.https, &host, &ca.root, "v2"), "v2");
    assert_eq!(
        ca.orders(),
        orders,
        "no new order after a restart and a redeploy"
    );

    let run = rollback(fleet.dir(), &["proxy", "status"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout.contains(&format!("{} ({host})", fleet.app))
            && run.stdout.contains("https, certificate (acme) from"),
        "{}",
        run.explain()
    );
    let run = fleet.run(&["proxy", "status"]);
    let line = &run.json_lines()[0];
    let app = &line["apps"][0];
    assert_eq!(app["host"], host.as_str(), "{line}");
    assert_eq!(app["tls"]["source"], "acme", "{line}");
    assert!(app["tls"]["issuer"].as_str().is_some(), "{line}");
}

/// A CA of the test's own, signing certificate files.
struct FileCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl FileCa {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rollback test files CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        FileCa { cert, key }
    }

    /// A certificate for `name` valid from `from` to `to` days from now,
    /// and its key, both PEM.
    fn issue(&self, name: &str, from: i64, to: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(to);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    use std::os::unix::fs::PermissionsExt;
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("shop.crt"), cert).unwrap();
    let key_file = certs.join("shop.key");
    let _ = std::fs::remove_file(&key_file);
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn certificate_files_good_bad_and_expiring_soon() {
    let fleet = Fleet::new("tls-files", &[("prod-a", None)]);
    let proxy = Proxy::new("tls-px");
    let host = format!("{}.test", fleet.app);
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    let ca = FileCa::new();
    let root = fleet.dir().join("files-ca.pem");
    std::fs::write(&root, ca.cert.pem()).unwrap();
    // Valid, but for 5 more days of 85: `proxy status` flags it.
    let (cert, key) = ca.issue(&host, -80, 5);
    write_pair(fleet.dir(), &cert, &key);
    write_config(
        &fleet,
        &proxy,
        &host,
        "tls = { cert = \"certs/shop.crt\", key = \"certs/shop.key\" }\n",
    );

    let run = rollback(fleet.dir(), &["config", "check"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout
            .contains("certs/shop.crt (issuer CN=rollback test files CA"),
        "{}",
        run.explain()
    );
    fleet.deploy_ok("v1");
    assert_eq!(wait_https(proxy.https, &host, &root, "v1"), "v1");
    let key_body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();

    let run = rollback(fleet.dir(), &["proxy", "status"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout
            .contains("certificate (files) from CN=rollback test files CA")
            && run.stdout.contains("EXPIRES SOON"),
        "{}",
        run.explain()
    );
    let run = fleet.run(&["proxy", "status"]);
    let app = &run.json_lines()[0]["apps"][0];
    assert_eq!(app["tls"]["expires_soon"], true, "{app}");
    assert_eq!(app["tls"]["days_left"], 4, "{app}");

    // A key others can read: a warning, and the deploy goes on.
    {
        use std::os::unix::fs::PermissionsExt;
        let key_file = fleet.dir().join("certs/shop.key");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let run = rollback(fleet.dir(), &["config", "check"], &[]);
        assert_eq!(run.code, 0, "{}", run.explain());
        assert!(
            run.stderr
                .contains("certs/shop.key: the private key is readable by others (mode 644)"),
            "{}",
            run.explain()
        );
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Each bad pair: exit 2 naming the file and the reason, no key in the
    // output, and the release and certificate served are left as they were.
    let proxy_id = docker(None, &["inspect", "-f", "{{.Id}}", &proxy.name]);
    let (other_cert, other_key) = ca.issue(&host, -1, 30);
    let cases: Vec<(&str, String, String, &str)> = vec![
        {
            let (c, k) = ca.issue(&host, -30, -1);
            ("certs/shop.crt", c, k, "expired on ")
        },
        {
            let (c, k) = ca.issue(&host, 2, 30);
            ("certs/shop.crt", c, k, "not valid yet")
        },
        {
            let (c, k) = ca.issue("other.test", -1, 30);
            ("certs/shop.crt", c, k, "does not cover the host")
        },
        (
            "certs/shop.key",
            other_cert.clone(),
            key.clone(),
            "does not match the certificate",
        ),
        (
            "certs/shop.crt",
            "not a certificate\n".to_owned(),
            other_key.clone(),
            "holds no PEM certificate",
        ),
        (
            "certs/shop.key",
            other_cert.clone(),
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n".to_owned(),
            "not a supported private key",
        ),
    ];
    for (file, c, k, reason) in cases {
        write_pair(fleet.dir(), &c, &k);
        let run = fleet.run(&["deploy", "--tag", "v2"]);
        assert_eq!(run.code, 2, "{reason}: {}", run.explain());
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains(file) && said.contains(reason),
            "{reason}: {}",
            run.explain()
        );
        for line in k.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!said.contains(line), "key material in the output");
        }
        for line in &key_body {
            assert!(!said.contains(line), "key material in the output");
        }
        assert_eq!(wait_https(proxy.https, &host, &root, "v1"), "v1");
    }
    std::fs::remove_file(fleet.dir().join("certs/shop.key")).unwrap();
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 2, "{}", run.explain());
    assert!(
        run.stdout.contains("certs/shop.key: cannot be read")
            || run.stderr.contains("certs/shop.key: cannot be read"),
        "{}",
        run.explain()
    );
    assert_eq!(
        docker(None, &["inspect", "-f", "{{.Id}}", &proxy.name]),
        proxy_id,
        "the proxy was left alone"
    );

    // A good new pair: deployed, and the proxy serves the new certificate.
    write_pair(fleet.dir(), &other_cert, &other_key);
    fleet.deploy_ok("v2");
    assert_eq!(wait_https(proxy.https, &host, &root, "v2"), "v2");
    let run = fleet.run(&["proxy", "status"]);
    let app = &run.json_lines()[0]["apps"][0];
    assert_eq!(app["tls"]["expires_soon"], false, "{app}");
    // The replaced pair is gone from the proxy's volume.
    let listed = docker(None, &["exec", &proxy.name, "ls", "/data/rollback/tls"]);
    let kept: Vec<&str> = listed
        .lines()
        .filter(|f| f.starts_with(&format!("{}-", fleet.app)))
        .collect();
    assert_eq!(kept.len(), 2, "{listed}");
}

/// GET `/version` over HTTPS (HTTP/1.1) from `threads` threads until
/// stopped, each request a new `curl`, so a new TLS connection: what failed (status,
/// TLS, refused, timeout), and the versions answered in order.
struct HttpsLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<std::thread::JoinHandle<Vec<Result<String, String>>>>,
}

impl HttpsLoad {
    fn start(port: u16, host: &str, root: &Path, threads: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                let (host, root) = (host.to_owned(), root.to_owned());
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // HTTP/1.1: each Caddy config load ends the
                        // HTTP/2 connections it had with GOAWAY, and a
                        // request racing that frame can fail in curl
                        // ("Error in the HTTP2 framing layer", 1 of 316
                        // once); HTTP/1.1 connections are drained whole.
                        let got = https_get_with(port, &host, "/version", &root, &["--http1.1"]);
                        seen.push(match got {
                            Ok((200, body)) => Ok(body),
                            Ok((code, body)) => Err(format!("{code} {body}")),
                            Err(e) => Err(e),
                        });
                        std::thread::sleep(Duration::from_millis(30));
                    }
                    seen
                })
            })
            .collect();
        HttpsLoad { stop, workers }
    }

    /// (requests, failures, versions in the order first seen)
    fn stop(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        let mut failed = Vec::new();
        let mut versions: Vec<String> = Vec::new();
        for w in self.workers {
            for r in w.join().unwrap() {
                total += 1;
                match r {
                    Ok(v) if !versions.contains(&v) => versions.push(v),
                    Ok(_) => {}
                    Err(e) => failed.push(e),
                }
            }
        }
        (total, failed, versions)
    }
}

#[test]
fn two_apps_on_one_proxy_each_deployed_under_the_others_load() {
    let a = Fleet::new("tls-a", &[("prod-a", None)]);
    let b = Fleet::new("tls-b", &[("prod-a", None)]);
    let ca = Ca::start(a.dir());
    std::fs::copy(&ca.root, b.dir().join("ca.pem")).unwrap();
    let proxy = Proxy::new("tls-px");
    let tls = format!(
        "tls = \"acme\"\nacme_ca = \"{}\"\nacme_ca_root = \"ca.pem\"\n",
        ca.directory()
    );
    let (host_a, host_b) = (format!("{}.test", a.app), format!("{}.test", b.app));
    for (fleet, host) in [(&a, &host_a), (&b, &host_b)] {
        push_release(&fleet.repo, "v1", "v1", "healthy");
        push_release(&fleet.repo, "v2", "v2", "healthy");
        write_config(fleet, &proxy, host, &tls);
    }
    let run = a.run(&["proxy", "boot"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    proxy.answer_for(&[&host_a, &host_b]);
    a.deploy_ok("v1");
    b.deploy_ok("v1");
    wait_https(proxy.https, &host_a, &ca.root, "v1");
    wait_https(proxy.https, &host_b, &ca.root, "v1");

    let load_a = HttpsLoad::start(proxy.https, &host_a, &ca.root, 2);
    let load_b = HttpsLoad::start(proxy.https, &host_b, &ca.root, 2);
    std::thread::sleep(Duration::from_secs(1));
    a.deploy_ok("v2");
    std::thread::sleep(Duration::from_secs(1));
    b.deploy_ok("v2");
    std::thread::sleep(Duration::from_secs(1));
    let (total_a, failed_a, versions_a) = load_a.stop();
    let (total_b, failed_b, versions_b) = load_b.stop();
    assert!(
        total_a > 20 && total_b > 20,
        "{total_a} and {total_b} requests"
    );
    assert!(
        failed_a.is_empty(),
        "{} of {total_a} failed on {host_a}: {:?}",
        failed_a.len(),
        &failed_a[..failed_a.len().min(5)]
    );
    assert!(
        failed_b.is_empty(),
        "{} of {total_b} failed on {host_b}: {:?}",
        failed_b.len(),
        &failed_b[..failed_b.len().min(5)]
    );
    assert_eq!(versions_a, ["v1", "v2"]);
    assert_eq!(versions_b, ["v1", "v2"]);

    // Each app has its own route and certificate in the one proxy.
    let run = a.run(&["proxy", "status"]);
    let apps = run.json_lines()[0]["apps"].clone();
    let hosts: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["host"].as_str())
        .collect();
    assert!(
        hosts.contains(&host_a.as_str()) && hosts.contains(&host_b.as_str()),
        "{apps}"
    );
    assert!(
        apps.as_array()
            .unwrap()
            .iter()
            .all(|x| x["tls"]["issuer"].is_string()),
        "{apps}"
    );
}

#[test]
fn the_proxys_own_ca_serves_internal_names() {
    let fleet = Fleet::new("tls-int", &[("prod-a", None)]);
    let proxy = Proxy::new("tls-px");
    let host = format!("{}.internal", fleet.app);
    push_release(&fleet.repo, "v1", "v1", "healthy");
    write_config(&fleet, &proxy, &host, "tls = \"internal\"\n");
    fleet.deploy_ok("v1");
    // Clients trust the proxy's own root, kept in its volume.
    let root = fleet.dir().join("proxy-root.pem");
    let end = Instant::now() + WAIT;
    loop {
        let out = docker_output(
            None,
            &[
                "exec",
                &proxy.name,
                "cat",
                "/data/caddy/pki/authorities/local/root.crt",
            ],
        );
        if out.status.success() && !out.stdout.is_empty() {
            std::fs::write(&root, &out.stdout).unwrap();
            break;
        }
        assert!(Instant::now() < end, "the proxy made no root");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(wait_https(proxy.https, &host, &root, "v1"), "v1");
    let run = fleet.run(&["proxy", "status"]);
    let app = &run.json_lines()[0]["apps"][0];
    assert_eq!(app["tls"]["source"], "internal", "{app}");
    // A 12-hour certificate just issued is not expiring soon.
    assert_eq!(app["tls"]["expires_soon"], false, "{app}");
}

/// GET `http://host:port/version` (Host `host`): the status and body.
fn http_get_host(port: u16, host: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "3", "-w", "\n%{http_code}"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("http://{host}:{port}/version"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.trim().to_owned())
}

#[test]
fn a_plain_http_app_and_an_https_app_share_one_proxy() {
    let plain = Fleet::new("tls-plain", &[("prod-a", None)]);
    let secure = Fleet::new("tls-mix", &[("prod-a", None)]);
    let ca = Ca::start(secure.dir());
    let proxy = Proxy::new("tls-px");
    let (host_p, host_s) = (
        format!("{}.test", plain.app),
        format!("{}.test", secure.app),
    );
    for fleet in [&plain, &secure] {
        push_release(&fleet.repo, "v1", "v1", "healthy");
        push_release(&fleet.repo, "v2", "v2", "healthy");
    }
    // The plain app names the proxy's HTTPS address without serving HTTPS
    // itself, so the proxy it boots publishes it for the other app.
    write_config_with(
        &plain,
        &proxy,
        &host_p,
        &format!("tls_listen = \"127.0.0.1:{}\"\n", proxy.https),
    );
    write_config(
        &secure,
        &proxy,
        &host_s,
        &format!(
            "tls = \"acme\"\nacme_ca = \"{}\"\nacme_ca_root = \"ca.pem\"\n",
            ca.directory()
        ),
    );
    plain.deploy_ok("v1");
    assert_eq!(
        http_get_host(proxy.http, &host_p),
        ("200".into(), "v1".into())
    );
    proxy.answer_for(&[&host_s]);
    secure.deploy_ok("v1");
    assert_eq!(wait_https(proxy.https, &host_s, &ca.root, "v1"), "v1");
    let (code, _) = http_redirect(proxy.http, &host_s, "/version");
    assert_eq!(code, "308");

    // A plain app's redeploy leaves the other's certificate and route alone;
    // an app without tls_listen (written before HTTPS) deploys to that proxy too.
    write_config_with(&plain, &proxy, &host_p, "");
    plain.deploy_ok("v2");
    assert_eq!(
        http_get_host(proxy.http, &host_p),
        ("200".into(), "v2".into())
    );
    assert_eq!(wait_https(proxy.https, &host_s, &ca.root, "v1"), "v1");
    secure.deploy_ok("v2");
    assert_eq!(wait_https(proxy.https, &host_s, &ca.root, "v2"), "v2");
    assert_eq!(
        http_get_host(proxy.http, &host_p),
        ("200".into(), "v2".into())
    );

    let run = secure.run(&["proxy", "status"]);
    let apps = run.json_lines()[0]["apps"].clone();
    let tls: Vec<_> = apps
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["tls"].is_object())
        .collect();
    assert_eq!(tls.len(), 1, "{apps}");
    assert_eq!(tls[0]["host"], host_s.as_str(), "{apps}");
    assert!(tls[0]["tls"]["issuer"].is_string(), "{apps}");
}

/// The proxy's own root, once it made one.
fn proxy_root(proxy: &Proxy, dir: &Path) -> PathBuf {
    let root = dir.join("proxy-root.pem");
    let end = Instant::now() + WAIT;
    loop {
        let out = docker_output(
            None,
            &[
                "exec",
                &proxy.name,
                "cat",
                "/data/caddy/pki/authorities/local/root.crt",
            ],
        );
        if out.status.success() && !out.stdout.is_empty() {
            std::fs::write(&root, &out.stdout).unwrap();
            return root;
        }
        assert!(Instant::now() < end, "the proxy made no root");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn apps_set_up_at_once_on_one_proxy_are_all_routed() {
    let fleets: Vec<Fleet> = (0..3)
        .map(|i| Fleet::new(&format!("tls-cc{i}"), &[("prod-a", None)]))
        .collect();
    let proxy = Proxy::new("tls-px");
    let hosts: Vec<String> = fleets
        .iter()
        .map(|f| format!("{}.internal", f.app))
        .collect();
    for (fleet, host) in fleets.iter().zip(&hosts) {
        push_release(&fleet.repo, "v1", "v1", "healthy");
        write_config(fleet, &proxy, host, "tls = \"internal\"\n");
    }
    let run = fleets[0].run(&["proxy", "boot"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    // Each deploy reads the proxy's whole config and writes it back with
    // its own HTTPS parts; at once, a write made on a config that another
    // changed in between must not undo that other's parts.
    let deploys: Vec<Spawned> = fleets
        .iter()
        .map(|f| f.spawn(&["deploy", "--tag", "v1"], &[]))
        .collect();
    for (deploy, fleet) in deploys.into_iter().zip(&fleets) {
        let run = deploy.finish();
        assert_eq!(run.code, 0, "{}: {}", fleet.app, run.explain());
    }
    let root = proxy_root(&proxy, fleets[0].dir());
    for host in &hosts {
        assert_eq!(wait_https(proxy.https, host, &root, "v1"), "v1");
    }
    let run = fleets[0].run(&["proxy", "status"]);
    let apps = run.json_lines()[0]["apps"].clone();
    for host in &hosts {
        assert!(
            apps.as_array()
                .unwrap()
                .iter()
                .any(|a| a["host"] == host.as_str() && a["tls"]["source"] == "internal"),
            "{host} in {apps}"
        );
    }
}
