//! The CD pipeline scenario, end to end: the `rollback` binary, a config
//! file, real images in the local registry and the real engine. Every
//! assertion is what a user would check: which release answers on the port,
//! which digest a tag points to, which containers exist.

use std::path::Path;

use rollback_e2e::*;

const SECRET: &str = "e2e-secret-value-7f3a9c";

struct App {
    name: String,
    repo: String,
    port: u16,
    dir: tempfile::TempDir,
    guard: AppGuard,
}

impl App {
    fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        let repo = format!("{}/e2e/{name}", registry());
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let guard = AppGuard::new(&name, &[]);
        let app = App {
            name,
            repo,
            port,
            dir,
            guard,
        };
        app.write_config("");
        app
    }

    fn write_config(&self, extra: &str) {
        let config = format!(
            r#"[app]
name = "{name}"
repository = "{repo}"

[container]
ports = ["127.0.0.1:{port}:8080"]
env = {{ MODE_NOTE = "e2e", APP_SECRET = "${{E2E_SECRET}}" }}
stop_timeout = "1s"

[health]
http = "http://127.0.0.1:{port}/health"
json_pointer = "/status"
expect = "UP"
interval = "200ms"
timeout = "1s"
deadline = "6s"
stable_for = "1s"
{extra}"#,
            name = self.name,
            repo = self.repo,
            port = self.port,
        );
        std::fs::write(self.dir.path().join("rollback.toml"), config).unwrap();
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Run {
        let run = rollback(self.dir(), args, &[("E2E_SECRET", SECRET)]);
        assert!(
            !run.all_output().contains(SECRET),
            "the secret leaked into the output of {args:?}:\n{}",
            run.all_output()
        );
        run
    }

    fn deploy(&self, tag: &str) -> Run {
        self.run(&["deploy", "--tag", tag])
    }

    /// The version the app answers with on its port, if anything answers.
    fn answering(&self) -> Option<String> {
        let body = http_get(self.port, "/health")?;
        let json: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        Some(format!(
            "{} {}",
            json["version"].as_str()?,
            json["status"].as_str()?
        ))
    }

    fn tag_digest(&self, tag: &str) -> Option<String> {
        digest_of(&format!("{}:{tag}", self.repo))
    }

    fn running_id(&self) -> String {
        let running = self.guard.running(None);
        assert_eq!(
            running.len(),
            1,
            "exactly one container runs as {}",
            self.name
        );
        running[0].clone()
    }
}

#[test]
fn the_pipeline_scenario_keeps_a_healthy_release_and_honest_tags() {
    let app = App::new("e2e-pipeline");
    let v1 = push_release(&app.repo, "v1", "v1", "healthy");
    push_release(&app.repo, "v2", "v2", "crash");
    push_release(&app.repo, "v3", "v3", "down");
    let v4 = push_release(&app.repo, "v4", "v4", "healthy");

    // v1: the first deploy.
    let run = app.deploy("v1");
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(app.answering().as_deref(), Some("v1 UP"));
    assert_eq!(app.tag_digest("latest"), Some(v1.clone()));
    let v1_container = app.running_id();

    // v2 crashes at start: rolled back to v1, the same container, tags untouched.
    let run = app.deploy("v2");
    assert_eq!(run.code, 3, "{}", run.explain());
    assert!(
        run.all_output().contains("fatal: cannot start"),
        "the failed container's last log lines are shown:\n{}",
        run.explain()
    );
    assert_eq!(app.answering().as_deref(), Some("v1 UP"));
    assert_eq!(
        app.running_id(),
        v1_container,
        "the original container runs again"
    );
    assert_eq!(app.tag_digest("latest"), Some(v1.clone()));

    // v3 answers DOWN: rolled back to v1.
    let run = app.deploy("v3");
    assert_eq!(run.code, 3, "{}", run.explain());
    assert!(
        run.all_output().contains("DOWN"),
        "the last probe answer is shown:\n{}",
        run.explain()
    );
    assert_eq!(app.answering().as_deref(), Some("v1 UP"));
    assert_eq!(app.running_id(), v1_container);
    assert_eq!(app.tag_digest("latest"), Some(v1.clone()));

    // v4 is healthy: deployed and promoted; the retained v1 container is gone.
    let run = app.run(&["deploy", "--tag", "v4", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(app.answering().as_deref(), Some("v4 UP"));
    assert_eq!(app.tag_digest("latest"), Some(v4.clone()));
    assert_eq!(app.tag_digest("previous"), Some(v1.clone()));
    assert_eq!(
        app.guard.all(None).len(),
        1,
        "no retained container is left over after promotion"
    );
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "deployed");
    assert_eq!(outcome["exit_code"], 0);
    let events = run.json_lines();
    let seqs: Vec<u64> = events[..events.len() - 1]
        .iter()
        .map(|e| e["seq"].as_u64().expect("every event has a seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq increases: {seqs:?}"
    );
    assert!(events.iter().any(|e| e["phase"] == "verified"));

    // undo puts v1 back, verified, and swaps the tags.
    let run = app.run(&["undo"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout
            .contains(&format!("deployed v1 ({})", &v1[7..19])),
        "undo names the release by its tag:\n{}",
        run.explain()
    );
    assert_eq!(app.answering().as_deref(), Some("v1 UP"));
    assert_eq!(app.tag_digest("latest"), Some(v1.clone()));
    assert_eq!(app.tag_digest("previous"), Some(v4.clone()));
    assert_eq!(app.guard.all(None).len(), 1);

    // status names the running release.
    let run = app.run(&["status"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.all_output().contains(&format!("v1 ({})", &v1[7..19])),
        "status shows v1's tag and digest:\n{}",
        run.explain()
    );
}

#[test]
fn a_failed_first_deploy_leaves_nothing_running_and_says_why() {
    let app = App::new("e2e-first");
    push_release(&app.repo, "bad", "v2", "crash");
    let run = app.run(&["deploy", "--tag", "bad", "--output", "json"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    let outcome = run.outcome();
    assert_eq!(outcome["outcome"], "rolled_back");
    let reason = outcome["reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        reason.contains("no previous release"),
        "the reason says there was no previous release: {outcome}"
    );
    assert!(app.guard.running(None).is_empty(), "nothing runs");
    assert!(app.guard.all(None).is_empty(), "no container is left");
    assert_eq!(app.tag_digest("latest"), None, "no tag was created");
    assert_eq!(app.answering(), None);
}

#[test]
fn bad_input_changes_nothing_and_names_the_cause() {
    let app = App::new("e2e-bad");
    push_release(&app.repo, "v1", "v1", "healthy");
    let run = app.deploy("v1");
    assert_eq!(run.code, 0, "{}", run.explain());
    let before = app.running_id();
    let latest = app.tag_digest("latest");

    let check_unchanged = |what: &str| {
        assert_eq!(
            app.running_id(),
            before,
            "{what}: the running container changed"
        );
        assert_eq!(app.answering().as_deref(), Some("v1 UP"), "{what}");
        assert_eq!(app.tag_digest("latest"), latest, "{what}: latest moved");
    };

    // An unknown key: exit 2, file, line and key named.
    app.write_config("\n[rollout]\nbatch = 1\nstrategy = \"fast\"\n");
    let run = app.deploy("v1");
    assert_eq!(run.code, 2, "{}", run.explain());
    assert!(run.stderr.contains("rollback.toml:"), "{}", run.explain());
    assert!(run.stderr.contains("strategy"), "{}", run.explain());
    check_unchanged("unknown key");

    // Malformed TOML: exit 2 with a line.
    std::fs::write(app.dir().join("rollback.toml"), "[app\nname = \"x\"\n").unwrap();
    let run = app.deploy("v1");
    assert_eq!(run.code, 2, "{}", run.explain());
    assert!(run.stderr.contains("rollback.toml:1"), "{}", run.explain());
    check_unchanged("malformed toml");

    // A missing ${VAR}: exit 2 naming the variable.
    app.write_config("");
    let run = rollback(app.dir(), &["deploy", "--tag", "v1"], &[]);
    assert_eq!(run.code, 2, "{}", run.explain());
    assert!(run.stderr.contains("E2E_SECRET"), "{}", run.explain());
    check_unchanged("missing variable");

    // A tag that does not exist: exit 1 naming the tag.
    let run = app.deploy("no-such-tag");
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(
        run.all_output().contains("no-such-tag"),
        "{}",
        run.explain()
    );
    check_unchanged("missing tag");

    // The image's own HEALTHCHECK as the check, and a release without one:
    // exit 1 before the switch, naming the image and what is missing.
    let no_healthcheck = format!("{}:no-healthcheck", app.repo);
    docker(None, &["tag", "rollback-fixture:healthy", &no_healthcheck]);
    docker(None, &["push", "-q", &no_healthcheck]);
    let config = std::fs::read_to_string(app.dir().join("rollback.toml")).unwrap();
    let http_check = format!(
        "http = \"http://127.0.0.1:{}/health\"\njson_pointer = \"/status\"\nexpect = \"UP\"\n",
        app.port
    );
    assert!(config.contains(&http_check), "{config}");
    std::fs::write(
        app.dir().join("rollback.toml"),
        config.replace(&http_check, "docker = true\n"),
    )
    .unwrap();
    let run = app.deploy("no-healthcheck");
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(
        run.all_output().contains("has no HEALTHCHECK"),
        "{}",
        run.explain()
    );
    check_unchanged("image without HEALTHCHECK");
    app.write_config("");

    // An unreachable engine: exit 1 naming the host.
    app.write_config("\n[[hosts]]\nname = \"far-away\"\ndocker = \"tcp://127.0.0.1:1\"\n");
    let run = app.deploy("v1");
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(run.all_output().contains("far-away"), "{}", run.explain());
    check_unchanged("unreachable engine");

    // An unreachable registry: exit 1 naming it.
    let dead_port = free_port();
    let config = std::fs::read_to_string(app.dir().join("rollback.toml")).unwrap();
    let config = config
        .replace(&app.repo, &format!("127.0.0.1:{dead_port}/e2e/nothing"))
        .replace(
            "\n[[hosts]]\nname = \"far-away\"\ndocker = \"tcp://127.0.0.1:1\"\n",
            "",
        );
    std::fs::write(app.dir().join("rollback.toml"), config).unwrap();
    let run = app.deploy("v1");
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(
        run.all_output().contains(&format!("127.0.0.1:{dead_port}")),
        "{}",
        run.explain()
    );
    check_unchanged("unreachable registry");
}
