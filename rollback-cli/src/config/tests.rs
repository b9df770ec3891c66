//! The config's own tests: every rule, its message, its line and key.

use rollback_core::OnFailure;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "JASYPT_PASSWORD" => Some("s3cr3t-value".into()),
        "OTHER_SECRET" => Some("another-hidden".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("rollback.toml"), &env)
}

fn error(text: &str) -> String {
    let e = parse(text).unwrap_err();
    assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
    assert!(!e.to_string().contains("another-hidden"), "{e}");
    e.to_string()
}

const APP: &str = "[app]\nname = \"ody\"\nrepository = \"127.0.0.1:5000/team/ody\"\n";

fn with_app(rest: &str) -> String {
    format!("{APP}[health]\nhttp = \"http://127.0.0.1:18080/health\"\n{rest}")
}

const FULL: &str = r#"[app]
name = "ody-prod-app"
repository = "127.0.0.1:5000/team/ody"
stable_tag = "latest"
previous_tag = "previous"

[container]
ports = ["127.0.0.1:18080:8080"]
env = { SPRING_PROFILES_ACTIVE = "prod", JASYPT_ENCRYPTOR_PASSWORD = "${JASYPT_PASSWORD}", WORKERS = 4 }
volumes = ["/var/logs/ody:/ody-logs"]
platform = "linux/arm64"
network = "host"
restart = "unless-stopped"
command = ["--flag"]
stop_timeout = "10s"

[health]
http = "http://127.0.0.1:18080/actuator/health"
expect_status = 200
json_pointer = "/status"
expect = "UP"
interval = "1s"
timeout = "2s"
start_period = "0s"
deadline = "60s"
stable_for = "5s"

[rollout]
batch = 2
on_failure = "rollback-host"

[[hosts]]
name = "prod-a"
docker = "unix:///var/run/docker.sock"
health_url = "http://10.0.0.1:80/actuator/health"
ports = ["127.0.0.1:18081:8080"]
env = { REGION = "b", SPRING_PROFILES_ACTIVE = "prod-a" }

[[hosts]]
name = "prod-b"
docker = "tcp://10.0.0.2:2376"
tcp = "10.0.0.2:80"
"#;

#[test]
fn the_design_example_loads() {
    let c = parse(FULL).unwrap();
    let app = c.app().unwrap();
    assert_eq!(app.name, "ody-prod-app");
    assert_eq!(app.repository.to_string(), "127.0.0.1:5000/team/ody");
    assert_eq!(
        (app.stable_tag.as_str(), app.previous_tag.as_str()),
        ("latest", "previous")
    );
    assert_eq!(c.container.ports[0].host_port, Some(18080));
    assert_eq!(c.container.volumes, vec!["/var/logs/ody:/ody-logs"]);
    assert_eq!(c.container.platform.as_deref(), Some("linux/arm64"));
    assert_eq!(c.container.network.as_deref(), Some("host"));
    assert_eq!(c.container.restart, Some(RestartPolicy::UnlessStopped));
    assert_eq!(c.container.command, vec!["--flag"]);
    assert_eq!(c.container.stop_timeout, Some(Duration::from_secs(10)));
    assert_eq!(c.container.env["WORKERS"], EnvValue::Plain("4".into()));
    let secret = &c.container.env["JASYPT_ENCRYPTOR_PASSWORD"];
    assert!(secret.is_secret());
    assert_eq!(secret.expose(), "s3cr3t-value");
    assert!(!format!("{c:?}").contains("s3cr3t-value"));
    assert_eq!(c.health.deadline(), Duration::from_secs(60));
    assert_eq!(c.health.stable_for(), Duration::from_secs(5));
    assert_eq!(
        (c.rollout.batch(), c.rollout.on_failure()),
        (2, OnFailure::RollbackHost)
    );

    assert_eq!(c.hosts.len(), 2);
    let a = &c.hosts[0];
    assert_eq!(a.name.as_str(), "prod-a");
    assert_eq!(a.docker.as_deref(), Some("unix:///var/run/docker.sock"));
    assert_eq!(
        a.health,
        Some(HealthCheck::Http {
            url: "http://10.0.0.1:80/actuator/health".into(),
            expect_status: Some(200),
            expect_json: Some(("/status".into(), "UP".into())),
        })
    );
    assert_eq!(a.ports[0].host_port, Some(18081));
    assert_eq!(a.env["REGION"], EnvValue::Plain("b".into()));
    assert_eq!(
        a.env["SPRING_PROFILES_ACTIVE"],
        EnvValue::Plain("prod-a".into())
    );
    assert!(a.env["JASYPT_ENCRYPTOR_PASSWORD"].is_secret());
    let b = &c.hosts[1];
    assert_eq!(
        b.health,
        Some(HealthCheck::Tcp {
            address: "10.0.0.2:80".into()
        })
    );
    assert_eq!(b.ports, c.container.ports);
    assert_eq!(b.env, c.container.env);
}

#[test]
fn defaults_one_local_host_and_default_policies() {
    let c = parse(&with_app("")).unwrap();
    let app = c.app().unwrap();
    assert_eq!(
        (app.stable_tag.as_str(), app.previous_tag.as_str()),
        ("latest", "previous")
    );
    assert_eq!(c.hosts.len(), 1);
    assert_eq!(c.hosts[0].name.as_str(), DEFAULT_HOST);
    assert_eq!(c.hosts[0].docker, None);
    assert_eq!(c.health, HealthPolicy::default());
    assert_eq!(c.rollout, RolloutPolicy::default());
    let c = parse(&format!("{APP}[health]\ndocker = true\n")).unwrap();
    assert_eq!(c.hosts[0].health, Some(HealthCheck::Docker));
}

#[test]
fn a_file_without_app_loads_but_app_commands_refuse() {
    let c = parse("[container]\nports = [\"8080\"]\n").unwrap();
    let e = c.app().unwrap_err();
    assert_eq!(
        e.to_string(),
        "rollback.toml: missing [app] table (name and repository are required)"
    );
}

#[test]
fn unknown_fields_name_file_line_and_table() {
    let text = format!("{APP}\n[container]\nprots = [\"80:80\"]\n");
    let e = error(&text);
    assert!(
        e.starts_with("rollback.toml:6: unknown field `prots` in [container], expected one of"),
        "{e}"
    );
    assert!(e.contains("`ports`"), "{e}");
    let e = error(&with_app(
        "[[hosts]]\nname = \"a\"\nhealthurl = \"http://x\"\n",
    ));
    assert!(
        e.starts_with("rollback.toml:8: unknown field `healthurl` in [[hosts]]"),
        "{e}"
    );
    let e = error(&with_app("[healthz]\nx = 1\n"));
    assert!(
        e.starts_with("rollback.toml:6: unknown field `healthz` at the top level, expected one of"),
        "{e}"
    );
    let e = error(&format!("bogus = 1\n{APP}"));
    assert!(
        e.starts_with("rollback.toml:1: unknown field `bogus` at the top level"),
        "{e}"
    );
    let e = error(&with_app("[[hosts]]\nname = \"a\"\n[hosts.extra]\ny = 1\n"));
    assert!(
        e.starts_with("rollback.toml:8: unknown field `extra` in [[hosts]]"),
        "{e}"
    );
    let e = error(&format!(
        "{APP}[health]\nhttp = \"http://a/\"\nretries = 5\n"
    ));
    assert!(
        e.starts_with("rollback.toml:6: unknown field `retries` in [health]"),
        "{e}"
    );
}

#[test]
fn syntax_and_type_errors_have_lines() {
    let e = error(&format!("{APP}[container]\nports = \"80:80\"\n"));
    assert!(e.starts_with("rollback.toml:5: "), "{e}");
    let e = error("[app\nname = \"x\"\n");
    assert_eq!(
        e,
        "rollback.toml:1: invalid table header: expected `.`, `]`"
    );
    let e = error(&format!("{APP}[container\n"));
    assert!(e.starts_with("rollback.toml:4: "), "{e}");
    let e = error("[app]\nname = \"ody\"\n");
    assert!(e.contains("missing field `repository`"), "{e}");
}

#[test]
fn bad_ports_name_the_key_and_line() {
    let e = error(&with_app(
        "[container]\nports = [\"127.0.0.1:80:80\", \"x:80\"]\n",
    ));
    assert!(
        e.starts_with("rollback.toml:7: container.ports[1]: invalid port mapping \"x:80\""),
        "{e}"
    );
    let e = error(&with_app(
        "[[hosts]]\nname = \"a\"\nports = [\"70000:80\"]\n",
    ));
    assert!(
        e.starts_with("rollback.toml:8: hosts[0].ports[0]: invalid port mapping"),
        "{e}"
    );
}

#[test]
fn bad_container_values() {
    let e = error(&with_app("[container]\nrestart = \"sometimes\"\n"));
    assert!(
        e.starts_with("rollback.toml:7: container.restart: invalid restart policy"),
        "{e}"
    );
    let e = error(&with_app("[container]\nstop_timeout = \"ten seconds\"\n"));
    assert!(
        e.starts_with("rollback.toml:7: container.stop_timeout: invalid duration"),
        "{e}"
    );
    let e = error(&with_app("[container]\nplatform = \"arm64\"\n"));
    assert!(e.starts_with("rollback.toml:7: container.platform:"), "{e}");
    let e = error(&with_app("[container]\nvolumes = [\" \"]\n"));
    assert!(
        e.starts_with("rollback.toml:7: container.volumes[0]: must not be empty"),
        "{e}"
    );
}

#[test]
fn variables_become_secrets_and_missing_ones_name_variable_and_key() {
    let c = parse(&with_app(
        "[container]\nenv = { A = \"x-${JASYPT_PASSWORD}-${OTHER_SECRET}\", B = \"$plain\" }\n",
    ))
    .unwrap();
    assert_eq!(
        c.container.env["A"].expose(),
        "x-s3cr3t-value-another-hidden"
    );
    assert!(c.container.env["A"].is_secret());
    assert_eq!(c.container.env["B"], EnvValue::Plain("$plain".into()));
    // Each variable is a secret of its own, by name.
    let substituted: Vec<(&str, &str)> = c
        .substituted
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        substituted,
        [
            ("JASYPT_PASSWORD", "s3cr3t-value"),
            ("OTHER_SECRET", "another-hidden")
        ]
    );
    let secrets = crate::output::secrets_of(&c);
    assert!(secrets.iter().any(|s| s == "s3cr3t-value"), "{secrets:?}");

    let e = error(&with_app(
        "[container]\nenv = { A = \"${OTHER_SECRET}\", DB_PASSWORD = \"${DB_PASS}\", C = \"visible-plain\" }\n",
    ));
    assert_eq!(
        e,
        "rollback.toml:7: container.env.DB_PASSWORD: environment variable DB_PASS is not set"
    );
    let e = error(&with_app(
        "[[hosts]]\nname = \"a\"\nenv = { T = \"${TOKEN}\" }\n",
    ));
    assert_eq!(
        e,
        "rollback.toml:8: hosts[0].env.T: environment variable TOKEN is not set"
    );
    let e = error(&with_app("[container]\nenv = { A = \"${UNCLOSED\" }\n"));
    assert!(
        e.starts_with("rollback.toml:7: container.env.A: malformed ${...}"),
        "{e}"
    );
    let e = error(&with_app("[container]\nenv = { A = \"${1BAD}\" }\n"));
    assert!(
        e.starts_with("rollback.toml:7: container.env.A: malformed"),
        "{e}"
    );
}

#[test]
fn day_two_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.env"),
        "# comment\nDB_PASSWORD=from-file\nMODE=file\n\nJASYPT_PASSWORD\nUNSET_ONE\n",
    )
    .unwrap();
    let text = "[app]\nname = \"ody\"\nrepository = \"127.0.0.1:5000/team/ody\"\nretain = 3\n\
         [container]\nenv = { MODE = \"env\" }\nenv_file = \"app.env\"\n\
         labels = { team = \"shop\" }\nmemory = \"512m\"\ncpus = 1.5\nuser = \"1000:1000\"\n\
         entrypoint = [\"/bin/sh\", \"/app.sh\"]\nhostname = \"web-1\"\nadd_hosts = [\"db:10.0.0.5\"]\n\
         log_driver = \"json-file\"\nlog_options = { max-size = \"10m\" }\nnetworks = [\"backend\"]\n\
         cap_add = [\"cap_net_admin\"]\n\
         [health]\nexec = [\"true\"]\n\
         [hooks]\npre_deploy = \"./check\"\npost_deploy = \"./announce\"\ntimeout = \"30s\"\n\
         [notify]\nwebhook = \"https://user:${JASYPT_PASSWORD}@hooks.example.com:8443/x\"\n"
    .to_owned();
    let path = dir.path().join("rollback.toml");
    let c = Config::parse(&text, &path, &env).unwrap();
    assert_eq!(c.retain.get(), 3);
    let o = &c.container.options;
    assert_eq!(o.memory, Some(512 << 20));
    assert_eq!(o.nano_cpus, Some(1_500_000_000));
    assert_eq!(o.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        o.entrypoint.as_deref(),
        Some(&["/bin/sh".to_owned(), "/app.sh".to_owned()][..])
    );
    assert_eq!(o.hostname.as_deref(), Some("web-1"));
    assert_eq!(o.add_hosts, ["db:10.0.0.5"]);
    assert_eq!(o.log_driver.as_deref(), Some("json-file"));
    assert_eq!(o.log_options["max-size"], "10m");
    assert_eq!(o.networks, ["backend"]);
    assert_eq!(o.cap_add, ["NET_ADMIN"]);
    assert_eq!(c.container.labels["team"], "shop");
    let env = &c.container.env;
    assert_eq!(env["MODE"].expose(), "env", "env wins over env_file");
    assert!(env["DB_PASSWORD"].is_secret());
    assert_eq!(env["DB_PASSWORD"].expose(), "from-file");
    assert_eq!(env["JASYPT_PASSWORD"].expose(), "s3cr3t-value");
    assert!(!env.contains_key("UNSET_ONE"));
    assert_eq!(c.hooks.pre_deploy.as_deref(), Some("./check"));
    assert_eq!(c.hooks.timeout, Duration::from_secs(30));
    assert_eq!(c.hooks.dir, dir.path());
    let notify = c.notify.as_ref().unwrap();
    assert_eq!(notify.webhook_origin, "https://hooks.example.com:8443");
    assert!(notify.webhook.expose().contains("s3cr3t-value"));
    assert!(!format!("{notify:?}").contains("s3cr3t"), "{notify:?}");

    let c = parse(&with_app("")).unwrap();
    assert_eq!(c.retain.get(), 5);
    assert_eq!(c.hooks.timeout, DEFAULT_HOOK_TIMEOUT);
    assert_eq!(c.hooks.dir, Path::new("."));
    assert!(c.notify.is_none() && c.hooks.pre_deploy.is_none());
}

#[test]
fn day_two_keys_are_validated_with_lines() {
    let app = |extra: &str| {
        format!("[app]\nname = \"ody\"\nrepository = \"127.0.0.1:5000/team/ody\"\n{extra}[health]\ndocker = true\n")
    };
    for (text, want) in [
        (
            app("retain = 1\n"),
            "rollback.toml:4: app.retain: must be at least 2",
        ),
        (
            app("retain = -3\n"),
            "rollback.toml:4: app.retain: must be at least 2",
        ),
        (
            with_app("[container]\nmemory = \"lots\"\n"),
            "rollback.toml:7: container.memory: expected bytes",
        ),
        (
            with_app("[container]\nmemory = \"1k\"\n"),
            "rollback.toml:7: container.memory: is below",
        ),
        (
            with_app("[container]\ncpus = 0\n"),
            "rollback.toml:7: container.cpus: must be a number",
        ),
        (
            with_app("[container]\nuser = \"a b\"\n"),
            "rollback.toml:7: container.user:",
        ),
        (
            with_app("[container]\nhostname = \"-x\"\n"),
            "rollback.toml:7: container.hostname:",
        ),
        (
            with_app("[container]\nadd_hosts = [\"db\"]\n"),
            "rollback.toml:7: container.add_hosts[0]: \"db\" is not name:ip",
        ),
        (
            with_app("[container]\nadd_hosts = [\"db:nope\"]\n"),
            "rollback.toml:7: container.add_hosts[0]:",
        ),
        (
            with_app("[container]\nnetworks = [\"a\", \"a\"]\n"),
            "rollback.toml:7: container.networks[1]: \"a\" is listed twice",
        ),
        (
            with_app("[container]\nnetwork = \"host\"\nnetworks = [\"a\"]\n"),
            "rollback.toml:8: container.networks: a container with network = \"host\"",
        ),
        (
            with_app("[container]\ncap_add = [\"NET ADMIN\"]\n"),
            "rollback.toml:7: container.cap_add[0]:",
        ),
        (
            with_app("[container]\nlabels = { \"io.rollback.app\" = \"x\" }\n"),
            "rollback.toml:7: container.labels.io.rollback.app:",
        ),
        (
            with_app("[container]\nenv_file = \"no-such.env\"\n"),
            "rollback.toml:7: container.env_file: cannot read",
        ),
        (
            with_app("[container]\nlog_driver = \"\"\n"),
            "rollback.toml:7: container.log_driver:",
        ),
        (
            with_app("[hooks]\npre_deploy = \" \"\n"),
            "rollback.toml:7: hooks.pre_deploy: must not be empty",
        ),
        (
            with_app("[hooks]\ntimeout = \"soon\"\n"),
            "rollback.toml:7: hooks.timeout: invalid duration",
        ),
        (
            with_app("[hooks]\npre = \"x\"\n"),
            "rollback.toml:7: unknown field `pre` in [hooks]",
        ),
        (
            with_app("[notify]\nwebhook = \"ftp://u:p@x/\"\n"),
            "rollback.toml:7: notify.webhook: must be an http:// or https:// URL",
        ),
        (
            with_app("[notify]\nwebhook = \"${NOPE}\"\n"),
            "rollback.toml:7: notify.webhook: environment variable NOPE is not set",
        ),
    ] {
        let e = error(&text);
        assert!(e.starts_with(want), "{text}\n{e}");
    }
    // A bad env file line is named by file and line, never quoted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.env"), "A=1\nsecret value here\n").unwrap();
    let text = with_app("[container]\nenv_file = \"bad.env\"\n");
    let e = Config::parse(&text, &dir.path().join("rollback.toml"), &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.env:2: expected NAME=value"), "{e}");
    assert!(!e.contains("secret value"), "{e}");
    // A webhook URL's credentials never reach an error.
    let e = error(&with_app("[notify]\nwebhook = \"https://user:pa ss@\"\n"));
    assert!(!e.contains("pa ss"), "{e}");
}

#[test]
fn health_check_choice_is_validated() {
    let c = parse(&format!(
        "{APP}[health]\nexec = [\"curl\", \"-f\", \"x\"]\n"
    ))
    .unwrap();
    assert_eq!(
        c.hosts[0].health,
        Some(HealthCheck::Exec {
            command: vec!["curl".into(), "-f".into(), "x".into()]
        })
    );
    for bad in ["\"curl -f x\"", "[]", "[1, 2]", "[\"\"]"] {
        let e = error(&format!("{APP}[health]\nexec = {bad}\n"));
        assert!(
            e.starts_with("rollback.toml:5: health.exec: expected ["),
            "{bad}: {e}"
        );
    }
    let e = error(&format!(
        "{APP}[health]\nexec = [\"true\"]\ndocker = true\n"
    ));
    assert!(
        e.contains("set only one of http, tcp, docker, exec (found docker, exec)"),
        "{e}"
    );
    let e = error(&format!(
        "{APP}[health]\nhttp = \"http://a/\"\ntcp = \"a:80\"\n"
    ));
    assert!(
        e.starts_with("rollback.toml:4: health: set only one of http, tcp, docker"),
        "{e}"
    );
    let e = error(APP);
    assert!(e.contains("no health check"), "{e}");
    let e = error(&format!("{APP}[health]\nhttp = \"ftp://a/\"\n"));
    assert!(
        e.starts_with("rollback.toml:5: health.http: \"ftp://a/\" is not an http"),
        "{e}"
    );
    let e = error(&format!("{APP}[health]\nhttp = \"not a url\"\n"));
    assert!(
        e.starts_with("rollback.toml:5: health.http: invalid URL"),
        "{e}"
    );
    let e = error(&format!("{APP}[health]\ntcp = \"localhost\"\n"));
    assert!(
        e.starts_with("rollback.toml:5: health.tcp: \"localhost\" is not a host:port"),
        "{e}"
    );
    let e = error(&format!("{APP}[health]\ndocker = false\n"));
    assert!(e.starts_with("rollback.toml:5: health.docker:"), "{e}");
    let e = error(&format!(
        "{APP}[health]\ntcp = \"a:80\"\nexpect_status = 200\n"
    ));
    assert!(
        e.starts_with(
            "rollback.toml:6: health: expect_status, json_pointer and expect apply to http checks"
        ),
        "{e}"
    );
    let e = error(&with_app("expect = \"UP\"\n"));
    assert!(
        e.starts_with("rollback.toml:6: health.expect: needs health.json_pointer"),
        "{e}"
    );
    let e = error(&with_app("json_pointer = \"/status\"\n"));
    assert!(
        e.starts_with("rollback.toml:6: health.json_pointer: needs health.expect"),
        "{e}"
    );
    let e = error(&with_app("json_pointer = \"status\"\nexpect = \"UP\"\n"));
    assert!(
        e.starts_with("rollback.toml:6: health.json_pointer: \"status\" must start with /"),
        "{e}"
    );
    let e = error(&with_app("expect_status = 42\n"));
    assert!(
        e.starts_with("rollback.toml:6: health.expect_status: 42 is not an HTTP status"),
        "{e}"
    );
}

#[test]
fn health_policy_errors_name_the_field_and_line() {
    let e = error(&with_app("timeout = \"10s\"\ndeadline = \"5s\"\n"));
    assert!(
        e.starts_with("rollback.toml:7: health.deadline: 5s is shorter than one attempt"),
        "{e}"
    );
    let e = error(&with_app("interval = \"0s\"\n"));
    assert_eq!(
        e,
        "rollback.toml:6: health.interval: must be greater than zero"
    );
    let e = error(&with_app("stable_for = \"2m\"\n"));
    assert!(e.starts_with("rollback.toml:6: health.stable_for:"), "{e}");
    let e = error(&with_app("start_period = \"5 parsecs\"\n"));
    assert!(
        e.starts_with("rollback.toml:6: health.start_period: invalid duration"),
        "{e}"
    );
}

#[test]
fn rollout_errors_name_the_field() {
    let e = error(&with_app("[rollout]\nbatch = 0\n"));
    assert_eq!(e, "rollback.toml:7: rollout.batch: must be at least 1");
    let e = error(&with_app("[rollout]\nbatch = -3\n"));
    assert_eq!(e, "rollback.toml:7: rollout.batch: must be at least 1");
    let e = error(&with_app("[rollout]\non_failure = \"panic\"\n"));
    assert!(
        e.starts_with("rollback.toml:7: rollout.on_failure: \"panic\" is not one of"),
        "{e}"
    );
}

#[test]
fn hosts_are_validated() {
    let e = error(&with_app(
        "[[hosts]]\nname = \"a\"\n[[hosts]]\nname = \"a\"\n",
    ));
    assert_eq!(
        e,
        "rollback.toml:9: hosts[1].name: host name \"a\" is used twice"
    );
    let e = error(&with_app("[[hosts]]\nname = \" \"\n"));
    assert_eq!(e, "rollback.toml:7: hosts[0].name: must not be empty");
    let e = error(&with_app(
        "[[hosts]]\nname = \"a\"\ndocker = \"/var/run/docker.sock\"\n",
    ));
    assert!(
        e.starts_with(
            "rollback.toml:8: hosts[0].docker: \"/var/run/docker.sock\" is not an engine address"
        ),
        "{e}"
    );
    let e = error(&with_app(
        "[[hosts]]\nname = \"a\"\ndocker = \"npipe:////./pipe/docker_engine\"\n",
    ));
    assert!(
        e.starts_with("rollback.toml:8: hosts[0].docker: \"npipe:////./pipe/docker_engine\": npipe:// engines are not supported"),
        "{e}"
    );
    let e = error(&with_app(
        "[[hosts]]\nname = \"a\"\nhealth_url = \"10.0.0.1/health\"\n",
    ));
    assert!(
        e.starts_with("rollback.toml:8: hosts[0].health_url: invalid URL"),
        "{e}"
    );
    let e = error(&with_app(
        "[[hosts]]\nname = \"a\"\nhealth_url = \"http://a/\"\ntcp = \"a:1\"\n",
    ));
    assert!(
        e.starts_with("rollback.toml:8: hosts[0]: set either health_url or tcp"),
        "{e}"
    );
    let e = error(&format!("{APP}[[hosts]]\nname = \"a\"\n"));
    assert!(
        e.starts_with("rollback.toml:4: hosts[0]: no health check"),
        "{e}"
    );
    // A host's own check is enough when [health] has none.
    let c = parse(&format!(
        "{APP}[health]\nexpect_status = 204\n[[hosts]]\nname = \"a\"\nhealth_url = \"http://a:1/h\"\n[[hosts]]\nname = \"b\"\ntcp = \"b:1\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.hosts[0].health,
        Some(HealthCheck::Http {
            url: "http://a:1/h".into(),
            expect_status: Some(204),
            expect_json: None
        })
    );
    assert_eq!(
        c.hosts[1].health,
        Some(HealthCheck::Tcp {
            address: "b:1".into()
        })
    );
}

#[test]
fn app_values_are_validated() {
    let e = error("[app]\nname = \"-bad name\"\nrepository = \"r\"\n[health]\ndocker = true\n");
    assert!(
        e.starts_with("rollback.toml:2: app.name: \"-bad name\" is not a valid container name"),
        "{e}"
    );
    let e = error("[app]\nname = \"a\"\nrepository = \"127.0.0.1:5000/team/ody:latest\"\n[health]\ndocker = true\n");
    assert!(
        e.starts_with("rollback.toml:3: app.repository: invalid repository"),
        "{e}"
    );
    let e = error(&format!(
        "{APP}stable_tag = \"bad tag\"\n[health]\ndocker = true\n"
    ));
    assert!(
        e.starts_with("rollback.toml:4: app.stable_tag: \"bad tag\" is not a valid tag"),
        "{e}"
    );
    let e = error(&format!(
        "{APP}previous_tag = \"latest\"\n[health]\ndocker = true\n"
    ));
    assert!(
        e.starts_with("rollback.toml:4: app.previous_tag: must differ from app.stable_tag"),
        "{e}"
    );
}

const PROXY: &str = "[app]\nname = \"ody\"\nrepository = \"127.0.0.1:5000/team/ody\"\n[proxy]\nlisten = \"127.0.0.1:18080\"\napp_port = 8080\n[health]\npath = \"/health\"\njson_pointer = \"/status\"\nexpect = \"UP\"\n";

#[test]
fn proxy_defaults_and_the_direct_check() {
    let c = parse(PROXY).unwrap();
    let p = c.proxy.clone().unwrap();
    assert_eq!(
        p,
        ProxyConfig {
            listen: "127.0.0.1:18080".into(),
            app_port: 8080,
            image: "caddy:2".into(),
            drain: Duration::from_secs(30),
            host: None,
            name: "rollback-proxy".into(),
            tls_listen: None,
            tls: None,
        }
    );
    assert_eq!(c.hosts[0].proxy.as_ref(), Some(&p));
    assert_eq!(
        c.hosts[0].health,
        Some(HealthCheck::Direct {
            path: "/health".into(),
            port: 8080,
            expect_status: None,
            expect_json: Some(("/status".into(), "UP".into())),
        })
    );
    let text = PROXY.replace(
        "app_port = 8080\n",
        "app_port = 8080\nimage = \"127.0.0.1:5000/caddy:2\"\ndrain = \"5s\"\nhost = \"Shop.Example.com\"\n",
    );
    let p = parse(&text).unwrap().proxy.unwrap();
    assert_eq!(p.image, "127.0.0.1:5000/caddy:2");
    assert_eq!(p.drain, Duration::from_secs(5));
    assert_eq!(p.host.as_deref(), Some("shop.example.com"));
    assert!(parse(&PROXY.replace("127.0.0.1:18080", "80")).is_ok());
}

#[test]
fn proxy_refuses_a_network_mode_it_cannot_reach() {
    for mode in ["host", "none", "container:db"] {
        let text = PROXY.replace(
            "[proxy]",
            &format!("[container]\nnetwork = \"{mode}\"\n[proxy]"),
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("rollback.toml:6: proxy: the proxy reaches the app on its network"),
            "{e}"
        );
        assert!(e.contains(mode), "{e}");
    }
    // A network of the user's own is joined beside the proxy's.
    let text = PROXY.replace("[proxy]", "[container]\nnetwork = \"backend\"\n[proxy]");
    assert!(parse(&text).is_ok());
}

#[test]
fn proxy_errors_name_file_line_and_key() {
    // A [container] port publishing app_port or listen.
    let e = error(&PROXY.replace(
        "[proxy]",
        "[container]\nports = [\"127.0.0.1:18081:8080\"]\n[proxy]",
    ));
    assert!(
        e.starts_with("rollback.toml:5: container.ports[0]: publishes proxy.app_port 8080"),
        "{e}"
    );
    let e = error(&PROXY.replace(
        "[proxy]",
        "[container]\nports = [\"127.0.0.1:18080:9000\"]\n[proxy]",
    ));
    assert!(
        e.starts_with("rollback.toml:5: container.ports[0]: publishes proxy.listen"),
        "{e}"
    );
    // The entry's own line, not the first text that looks like it.
    let e = error(&PROXY.replace(
        "[proxy]",
        "# was \"127.0.0.1:18081:8080\" before [proxy]\n[container]\nports = [\n  \"127.0.0.1:9000:9000\",\n  \"127.0.0.1:18081:8080\",\n]\n[proxy]",
    ));
    assert!(
        e.starts_with("rollback.toml:8: container.ports[1]: publishes proxy.app_port 8080"),
        "{e}"
    );
    // A host's own ports too.
    let e = error(&format!(
        "{PROXY}[[hosts]]\nname = \"a\"\nports = [\"18080:8080\"]\n"
    ));
    assert!(
        e.contains("hosts[0].ports[0]: publishes proxy.app_port"),
        "{e}"
    );
    // Another port of the app stays allowed.
    assert!(parse(&PROXY.replace(
        "[proxy]",
        "[container]\nports = [\"127.0.0.1:19090:9090\"]\n[proxy]"
    ))
    .is_ok());
    // A path without '/'.
    let e = error(&PROXY.replace("path = \"/health\"", "path = \"health\""));
    assert!(
        e.starts_with("rollback.toml:8: health.path: \"health\" must start with /"),
        "{e}"
    );
    // An unknown key.
    let e = error(&PROXY.replace("app_port = 8080", "app_port = 8080\nport = 80"));
    assert!(e.starts_with("rollback.toml:7: "), "{e}");
    assert!(e.contains("proxy") && e.contains("port"), "{e}");
    // Missing, bad or conflicting values.
    let e = error(&PROXY.replace("app_port = 8080\n", ""));
    assert!(e.contains("app_port"), "{e}");
    let e = error(&PROXY.replace("app_port = 8080", "app_port = 70000"));
    assert!(
        e.starts_with("rollback.toml:6: proxy.app_port: 70000 is not a port"),
        "{e}"
    );
    let e = error(&PROXY.replace("127.0.0.1:18080", "127.0.0.1:x"));
    assert!(e.starts_with("rollback.toml:5: proxy.listen:"), "{e}");
    let e = error(&PROXY.replace(
        "path = \"/health\"",
        "http = \"http://127.0.0.1:18080/health\"",
    ));
    assert!(
        e.contains("health: with [proxy] or [swarm] the new release is probed directly"),
        "{e}"
    );
    let e = error(&with_app("path = \"/health\"\n"));
    assert!(e.contains("health.path: applies with [proxy]"), "{e}");
    let e = error(&format!(
        "{PROXY}[[hosts]]\nname = \"a\"\nhealth_url = \"http://a:8080/health\"\n"
    ));
    assert!(e.contains("hosts[0]: with [proxy]"), "{e}");
}

#[test]
fn load_names_a_missing_file() {
    let e = Config::load(Path::new("/nonexistent/rollback.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/rollback.toml: cannot read the config file"),
        "{e}"
    );
}

/// A folder holding a config's certificate files, made with `openssl`.
struct CertDir(std::path::PathBuf);

impl CertDir {
    fn new(name: &str, san: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rollback-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
            .args([
                "-subj",
                "/CN=shop",
                "-addext",
                &format!("subjectAltName=DNS:{san}"),
            ])
            .arg("-keyout")
            .arg(dir.join("certs/shop.key"))
            .arg("-out")
            .arg(dir.join("certs/shop.crt"))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("certs/shop.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        CertDir(dir)
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &self.0.join("rollback.toml"), &env)
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls(keys: &str) -> String {
    PROXY.replace(
        "app_port = 8080\n",
        &format!("app_port = 8080\nhost = \"shop.example.com\"\n{keys}"),
    )
}

#[test]
fn tls_acme_and_internal_with_their_defaults() {
    let p = parse(&tls("tls = \"acme\"\nacme_email = \"ops@example.com\"\n"))
        .unwrap()
        .proxy
        .unwrap();
    assert_eq!(p.tls_listen.as_deref(), Some("443"));
    assert_eq!(
        p.tls,
        Some(TlsConfig::Acme {
            email: Some("ops@example.com".into()),
            ca: None,
            ca_root: None
        })
    );
    let p = parse(&tls(
        "tls = \"internal\"\ntls_listen = \"127.0.0.1:18443\"\nname = \"edge\"\n",
    ))
    .unwrap()
    .proxy
    .unwrap();
    assert_eq!(p.tls, Some(TlsConfig::Internal));
    assert_eq!(p.tls_listen.as_deref(), Some("127.0.0.1:18443"));
    assert_eq!(p.name, "edge");
    // A plain HTTP app on a proxy that serves others over HTTPS.
    let p = parse(&tls("tls_listen = \"127.0.0.1:18443\"\n"))
        .unwrap()
        .proxy
        .unwrap();
    assert_eq!(p.tls, None);
    assert_eq!(p.tls_listen.as_deref(), Some("127.0.0.1:18443"));
    let e = error(&tls("tls_listen = \"127.0.0.1:18080\"\n"));
    assert!(e.contains("port of proxy.listen"), "{e}");
}

#[test]
fn tls_errors_name_line_and_key() {
    let e = error(&PROXY.replace("app_port = 8080\n", "app_port = 8080\ntls = \"acme\"\n"));
    assert!(
        e.starts_with("rollback.toml:7: proxy.tls: needs proxy.host"),
        "{e}"
    );
    let e = error(&tls("tls = \"letsencrypt\"\n"));
    assert!(
        e.starts_with("rollback.toml:8: proxy.tls: \"letsencrypt\" is not one of"),
        "{e}"
    );
    let e = error(&tls("acme_email = \"ops@example.com\"\n"));
    assert!(
        e.starts_with("rollback.toml:8: proxy: this key applies with proxy.tls"),
        "{e}"
    );
    let e = error(&tls(
        "tls = \"internal\"\nacme_email = \"ops@example.com\"\n",
    ));
    assert!(
        e.contains(":9: proxy: acme_email, acme_ca and acme_ca_root apply with tls = \"acme\""),
        "{e}"
    );
    let e = error(&tls("tls = \"acme\"\nacme_email = \"ops\"\n"));
    assert!(
        e.contains(":9: proxy.acme_email: \"ops\" is not an email"),
        "{e}"
    );
    let e = error(&tls(
        "tls = \"acme\"\nacme_ca = \"http://ca.internal/dir\"\n",
    ));
    assert!(e.contains(":9: proxy.acme_ca:"), "{e}");
    let e = error(&tls("tls = \"acme\"\nacme_ca_root = \"nowhere.pem\"\n"));
    assert!(e.contains("nowhere.pem: cannot be read"), "{e}");
    let e = error(&tls("tls = \"acme\"\ntls_listen = \"127.0.0.1:18080\"\n"));
    assert!(
        e.contains(":9: proxy.tls_listen:") && e.contains("port of proxy.listen"),
        "{e}"
    );
    let e = error(&tls("tls = { cert = \"certs/shop.crt\" }\n"));
    assert!(
        e.contains(":8:") && e.contains("missing field `key`"),
        "{e}"
    );
    let e = error(&tls("name = \"bad name\"\n"));
    assert!(
        e.contains(":8: proxy.name: \"bad name\" is not a container name"),
        "{e}"
    );
}

#[test]
fn tls_files_are_read_and_checked_from_the_config_folder() {
    let dir = CertDir::new("good", "shop.example.com");
    let text = tls("tls = { cert = \"certs/shop.crt\", key = \"certs/shop.key\" }\n");
    let c = dir.parse(&text).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let Some(TlsConfig::Files(files)) = c.proxy.unwrap().tls else {
        panic!("not files");
    };
    assert_eq!(files.cert, dir.0.join("certs/shop.crt"));
    assert_eq!(files.info.names, ["shop.example.com"]);
    assert!(files.key_pem.expose().contains("PRIVATE KEY"));
    assert!(!format!("{files:?}").contains("PRIVATE KEY"));

    use std::os::unix::fs::PermissionsExt;
    let key = dir.0.join("certs/shop.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let c = dir.parse(&text).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("shop.key: the private key is readable by others"));

    let other = CertDir::new("other", "other.example.com");
    let e = other.parse(&text).unwrap_err().to_string();
    assert!(e.contains(":8: proxy.tls: "), "{e}");
    assert!(
        e.contains("certs/shop.crt: does not cover the host \"shop.example.com\": it names other.example.com"),
        "{e}"
    );
    // Another pair's key: named, never shown.
    std::fs::copy(other.0.join("certs/shop.key"), &key).unwrap();
    let e = dir.parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("certs/shop.key: does not match the certificate"),
        "{e}"
    );
    assert!(!e.contains("PRIVATE"), "{e}");
}

const SWARM: &str = "[app]\nname = \"shop\"\nrepository = \"127.0.0.1:5000/team/shop\"\n[health]\npath = \"/health\"\njson_pointer = \"/status\"\nexpect = \"UP\"\n[swarm]\nport = 8080\n";

#[test]
fn swarm_defaults_and_the_healthcheck_built_from_health() {
    let c = parse(SWARM).unwrap();
    let s = c.swarm.clone().unwrap();
    assert_eq!(s.service, "shop");
    assert_eq!(s.network, "shop-net");
    assert_eq!((s.replicas, s.parallelism, s.port), (1, 1, 8080));
    assert_eq!(s.probe_image, DEFAULT_PROBE_IMAGE);
    assert_eq!(
        s.healthcheck,
        Some(vec![
            "CMD-SHELL".to_owned(),
            "wget -q -O - 'http://127.0.0.1:8080/health' | grep -qF 'UP'".to_owned()
        ])
    );
    assert_eq!(c.hosts[0].swarm.as_ref(), Some(&s));
    assert!(matches!(
        c.hosts[0].health,
        Some(HealthCheck::Direct { port: 8080, .. })
    ));
    let s = parse(&format!(
        "{SWARM}service = \"web\"\nnetwork = \"front\"\nreplicas = 3\nparallelism = 2\npublish = [\"18080:8080\"]\nhealthcheck = []\nprobe_image = \"reg/probe:1\"\n"
    ))
    .unwrap()
    .swarm
    .unwrap();
    assert_eq!((s.service.as_str(), s.network.as_str()), ("web", "front"));
    assert_eq!((s.replicas, s.parallelism), (3, 2));
    assert_eq!(s.publish, vec![(18080, 8080)]);
    assert_eq!(s.healthcheck, None, "[] keeps the image's own");
    assert_eq!(s.probe_image, "reg/probe:1");
}

#[test]
fn swarm_errors_name_file_line_and_key() {
    let e = error(&format!("{SWARM}publish = [\"80\"]\n"));
    assert!(
        e.starts_with("rollback.toml:10: swarm.publish[0]: \"80\" is not \"PUBLISHED:TARGET\""),
        "{e}"
    );
    let e = error(&format!("{SWARM}replicas = 0\n"));
    assert!(
        e.starts_with("rollback.toml:10: swarm.replicas: 0 is not between 1 and 1000"),
        "{e}"
    );
    let e = error(&format!("{SWARM}service = \"no spaces\"\n"));
    assert!(
        e.contains("swarm.service: \"no spaces\" is not a valid name"),
        "{e}"
    );
    let e = error(&SWARM.replace(
        "path = \"/health\"\n",
        "http = \"http://127.0.0.1:1/health\"\n",
    ));
    assert!(
        e.contains("health: with [proxy] or [swarm] the new release is probed directly"),
        "{e}"
    );
    let e = error(&SWARM.replace(
        "path = \"/health\"\njson_pointer = \"/status\"\nexpect = \"UP\"\n",
        "docker = true\n",
    ));
    assert!(
        e.contains("swarm: each task is probed directly: set health.path"),
        "{e}"
    );
    let e = error(&format!(
        "{SWARM}[proxy]\nlisten = \"80\"\napp_port = 8080\n"
    ));
    assert!(e.contains("remove one of [proxy] and [swarm]"), "{e}");
    let e = error(&format!(
        "{SWARM}[[hosts]]\nname = \"m\"\nhealth_url = \"http://127.0.0.1:1/\"\n"
    ));
    assert!(
        e.contains("hosts[0]: with [swarm] every task is probed directly"),
        "{e}"
    );
    let e = error(&SWARM.replace("[swarm]", "[container]\nports = [\"8080:8080\"]\n[swarm]"));
    assert!(
        e.starts_with(
            "rollback.toml:9: container.ports: not applied to a Swarm service: use swarm.publish"
        ),
        "{e}"
    );
    let e = error(&SWARM.replace(
        "[swarm]",
        "[container]\nvolumes = [\"/data:/data\"]\n[swarm]",
    ));
    assert!(
        e.contains("container.volumes: not applied to a Swarm service"),
        "{e}"
    );
    assert!(parse(&SWARM.replace(
        "[swarm]",
        "[container]\nenv = { A = \"1\" }\ncommand = [\"serve\"]\nstop_timeout = \"3s\"\n[swarm]"
    ))
    .is_ok());
    let e = error(&format!("{SWARM}mode = \"global\"\n"));
    assert!(e.contains("mode"), "an unknown key is named: {e}");
}
