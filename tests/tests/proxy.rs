//! `[proxy]` end to end: the binary boots, reports and removes the proxy
//! container (the `caddy:2` stand-in scripts/test-env builds) on the real
//! engine, and refuses a bad `[proxy]` table naming file, line and key;
//! `start_first.rs` deploys behind it.

use std::path::Path;

use rollback_e2e::*;

/// The proxy container `[proxy]` manages.
const PROXY: &str = "rollback-proxy";

/// Removes the proxy container on drop.
struct ProxyGuard;

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        let _ = docker_output(None, &["rm", "-f", PROXY]);
    }
}

fn config(dir: &Path, app: &str, port: u16) {
    let text = format!(
        "[app]\nname = \"{app}\"\nrepository = \"{}/e2e/{app}\"\n\n\
         [proxy]\nlisten = \"127.0.0.1:{port}\"\napp_port = 8080\ndrain = \"2s\"\n\n\
         [health]\npath = \"/health\"\njson_pointer = \"/status\"\nexpect = \"UP\"\n",
        registry()
    );
    std::fs::write(dir.join("rollback.toml"), text).unwrap();
}

#[test]
fn proxy_boot_status_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let app = unique("px");
    let _app = AppGuard::new(&app, &[]);
    let _proxy = ProxyGuard;
    let _ = docker_output(None, &["rm", "-f", PROXY]);
    let port = free_port();
    config(dir.path(), &app, port);

    let run = rollback(dir.path(), &["proxy", "status"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout.contains("no proxy container"),
        "{}",
        run.explain()
    );

    let run = rollback(dir.path(), &["--dry-run", "proxy", "boot"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(docker_output(None, &["inspect", PROXY]).status.code() != Some(0));

    let run = rollback(dir.path(), &["proxy", "boot"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(run.stdout.contains(": created"), "{}", run.explain());
    let state = docker(
        None,
        &[
            "inspect",
            "-f",
            "{{.State.Running}} {{.HostConfig.RestartPolicy.Name}} {{.Config.Image}}",
            PROXY,
        ],
    );
    // The engine spells the default image out in full.
    assert!(
        state.trim().starts_with("true unless-stopped ") && state.trim().ends_with("caddy:2"),
        "{state}"
    );
    let sysctls = docker(
        None,
        &["inspect", "-f", "{{json .HostConfig.Sysctls}}", PROXY],
    );
    assert!(sysctls.contains("net.ipv4.tcp_migrate_req"), "{sysctls}");
    // The public address answers; no release is routed yet.
    let body = http_get(port, "/").expect("the proxy answers on listen");
    assert!(
        body.contains("no release of an app is routed here"),
        "{body}"
    );

    let run = rollback(dir.path(), &["proxy", "boot"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(run.stdout.contains("already running"), "{}", run.explain());

    let run = rollback(dir.path(), &["--output", "json", "proxy", "status"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    let line = &run.json_lines()[0];
    assert_eq!(line["state"], "running", "{line}");
    assert_eq!(line["listen"], format!("127.0.0.1:{port}"), "{line}");
    assert_eq!(line["primary"], serde_json::Value::Null, "{line}");

    let run = rollback(dir.path(), &["proxy", "remove"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(run.stdout.contains("removed"), "{}", run.explain());
    assert!(docker_output(None, &["inspect", PROXY]).status.code() != Some(0));
    assert!(http_get(port, "/").is_none(), "nothing listens any more");
}

#[test]
fn bad_proxy_config_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[container]\nports = [\"127.0.0.1:18080:8080\"]\n",
            "rollback.toml:5: container.ports[0]: publishes proxy.app_port 8080",
        ),
        (
            "",
            "rollback.toml:10: health.path: \"health\" must start with /",
        ),
    ];
    for (extra, expected) in cases {
        let path = if extra.is_empty() {
            "health"
        } else {
            "/health"
        };
        let text = format!(
            "[app]\nname = \"x\"\nrepository = \"127.0.0.1:5000/x\"\n{extra}\
             [proxy]\nlisten = \"127.0.0.1:18080\"\napp_port = 8080\n\n\
             [health]\nexpect_status = 200\npath = \"{path}\"\n"
        );
        std::fs::write(dir.path().join("rollback.toml"), text).unwrap();
        let run = rollback(dir.path(), &["proxy", "status"], &[]);
        assert_eq!(run.code, 2, "{}", run.explain());
        assert!(run.stderr.contains(expected), "{}", run.explain());
    }
    let text = "[app]\nname = \"x\"\nrepository = \"127.0.0.1:5000/x\"\n\
                [proxy]\nlisten = \"80\"\napp_port = 8080\ntls = true\n\
                [health]\npath = \"/up\"\n";
    std::fs::write(dir.path().join("rollback.toml"), text).unwrap();
    let run = rollback(dir.path(), &["proxy", "status"], &[]);
    assert_eq!(run.code, 2, "{}", run.explain());
    assert!(
        run.stderr.contains("rollback.toml:7:") && run.stderr.contains("tls"),
        "{}",
        run.explain()
    );
}
