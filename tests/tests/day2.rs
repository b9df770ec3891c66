//! Day-two operations end to end: hooks, the outcome webhook, image
//! retention, the exec health check and the docker run options, with the
//! binary against the real engine and registry.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rollback_e2e::*;

/// One host on the local engine, with a config written by the test.
fn fleet(prefix: &str) -> Fleet {
    Fleet::new(prefix, &[("local", None)])
}

/// `rollback.toml` for `fleet`: the app, `[container]` with `container`
/// lines, an HTTP check on the host's port unless `health` replaces it,
/// and `rest` (more tables) at the end.
fn write(fleet: &Fleet, app: &str, container: &str, health: Option<&str>, rest: &str) {
    let port = fleet.hosts[0].port;
    let health = health.map_or_else(
        || format!("http = \"http://127.0.0.1:{port}/health\"\njson_pointer = \"/status\"\nexpect = \"UP\"\ntimeout = \"1s\"\n"),
        str::to_owned,
    );
    let config = format!(
        "[app]\nname = \"{name}\"\nrepository = \"{repo}\"\n{app}\n\
         [container]\nports = [\"127.0.0.1:{port}:8080\"]\nstop_timeout = \"1s\"\n{container}\n\
         [health]\n{health}interval = \"200ms\"\ndeadline = \"8s\"\nstable_for = \"1s\"\n\n{rest}\n",
        name = fleet.app,
        repo = fleet.repo,
    );
    std::fs::write(fleet.dir().join("rollback.toml"), config).unwrap();
}

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    let ok = std::process::Command::new("chmod")
        .arg("755")
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// `NAME=value` lines of a file a hook wrote with `env`.
fn env_of(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// No 64-hex run outside a `sha256:` digest: containers go by 12 characters.
fn assert_short_ids(text: &str) {
    for (at, _) in text.match_indices(|c: char| c.is_ascii_hexdigit()) {
        let before = &text[..at];
        if before.ends_with(|c: char| c.is_ascii_hexdigit()) || before.ends_with("sha256:") {
            continue;
        }
        let run = text[at..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .count();
        assert!(run < 64, "a full id in human output: {text}");
    }
}

#[test]
fn hooks_run_around_a_deploy_and_a_failing_pre_deploy_changes_nothing() {
    let fleet = fleet("hooks");
    let v1 = push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "healthy");
    let dir = fleet.dir();
    script(
        dir,
        "check",
        "echo checking \"$ROLLBACK_TAG\"\nenv > pre.env\ntest ! -f blocked\n",
    );
    script(
        dir,
        "announce",
        "env > post.env\necho announcing >&2\nexit 1\n",
    );
    write(
        &fleet,
        "",
        "env = { TOKEN = \"${DAY2_SECRET}\" }",
        None,
        "[hooks]\npre_deploy = \"./check\"\npost_deploy = \"./announce\"\ntimeout = \"20s\"\n",
    );
    let secret = "day2-secret-value-31337";
    let env = [("DAY2_SECRET", secret)];

    let run = rollback(dir, &["deploy", "--tag", "v1"], &env);
    // post_deploy fails: reported, and the exit code stays 0.
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout.contains("[hook pre_deploy] checking v1"),
        "{}",
        run.explain()
    );
    assert!(
        run.stdout.contains("[hook post_deploy] announcing"),
        "{}",
        run.explain()
    );
    assert!(
        run.stderr
            .contains("warning: hooks.post_deploy exited with code 1; the exit code stays 0"),
        "{}",
        run.explain()
    );
    assert!(!run.all_output().contains(secret));
    assert_short_ids(&run.stdout);

    let pre = env_of(&dir.join("pre.env"));
    let post = env_of(&dir.join("post.env"));
    assert_eq!(var(&pre, "ROLLBACK_COMMAND"), Some("deploy"));
    assert_eq!(var(&pre, "ROLLBACK_APP"), Some(fleet.app.as_str()));
    assert_eq!(var(&pre, "ROLLBACK_TAG"), Some("v1"));
    assert_eq!(var(&pre, "ROLLBACK_HOSTS"), Some("local"));
    assert_eq!(var(&post, "ROLLBACK_OUTCOME"), Some("deployed"));
    assert_eq!(var(&post, "ROLLBACK_EXIT_CODE"), Some("0"));
    assert_eq!(var(&post, "ROLLBACK_DIGEST"), Some(v1.as_str()));
    let deployment = var(&post, "ROLLBACK_DEPLOYMENT_ID").unwrap().to_owned();
    assert_eq!(
        var(&pre, "ROLLBACK_DEPLOYMENT_ID"),
        Some(deployment.as_str())
    );
    let label = docker(
        None,
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.rollback.deployment\"}}",
            &fleet.running_id(0),
        ],
    );
    assert_eq!(
        label, deployment,
        "the id the hooks got is the deployment's"
    );
    // The secret reached the container, never a hook.
    for env in [&pre, &post] {
        assert!(env.iter().all(|(_, v)| !v.contains(secret)));
        assert_eq!(var(env, "DAY2_SECRET"), None);
    }

    // A real failing command in pre_deploy: exit 1, nothing touched.
    let before = fleet.running_id(0);
    std::fs::write(dir.join("blocked"), "").unwrap();
    std::fs::remove_file(dir.join("post.env")).unwrap();
    let run = rollback(dir, &["deploy", "--tag", "v2"], &env);
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(
        run.stderr
            .contains("error: hooks.pre_deploy exited with code 1; nothing was changed"),
        "{}",
        run.explain()
    );
    assert_eq!(fleet.running_id(0), before);
    assert_eq!(fleet.answering(0).unwrap().0, "v1");
    assert_eq!(fleet.tag_digest("latest").as_deref(), Some(v1.as_str()));
    assert!(!fleet.lock_exists(0));
    assert!(
        !dir.join("post.env").exists(),
        "post_deploy runs only after the command ran"
    );
}

/// A server on 127.0.0.1 answering `statuses` in turn; each request's
/// head and body come out of the channel.
fn webhook_server(statuses: Vec<u16>) -> (u16, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for status in statuses {
            let Ok((mut socket, _)) = listener.accept() else {
                return;
            };
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 8192];
            let (head, body) = loop {
                let n = socket.read(&mut buf).unwrap_or(0);
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if text.len() >= end + 4 + length || n == 0 {
                        break (text[..end].to_owned(), text[end + 4..].to_owned());
                    }
                }
                if n == 0 {
                    break (text, String::new());
                }
            };
            let _ = write!(
                socket,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = tx.send((head, body));
        }
    });
    (port, rx)
}

#[test]
fn the_webhook_receives_the_outcome_object_and_its_failure_keeps_the_exit_code() {
    let fleet = fleet("notify");
    push_release(&fleet.repo, "v1", "v1", "healthy");
    let (port, requests) = webhook_server(vec![200]);
    let secret = "hook-pass-271828";
    write(
        &fleet,
        "",
        "",
        None,
        &format!("[notify]\nwebhook = \"http://deploy:{secret}@127.0.0.1:{port}/deploys?channel=ops\"\ntimeout = \"5s\"\n"),
    );
    let run = fleet.run(&["deploy", "--tag", "v1"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    let (head, body) = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("a POST");
    assert!(
        head.starts_with("POST /deploys?channel=ops HTTP/1.1"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let posted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        posted,
        run.outcome(),
        "the body is the outcome object the JSON output ends with"
    );
    assert_eq!(posted["outcome"], "deployed");
    assert!(
        run.stderr.contains(&format!(
            "notify: posted the outcome to http://127.0.0.1:{port} (200 OK)"
        )),
        "{}",
        run.explain()
    );
    assert!(!run.all_output().contains(secret), "{}", run.explain());

    // Failing twice: one retry, a warning, the exit code unchanged.
    let (port, requests) = webhook_server(vec![500, 503]);
    write(
        &fleet,
        "",
        "",
        None,
        &format!("[notify]\nwebhook = \"http://deploy:{secret}@127.0.0.1:{port}/deploys\"\n"),
    );
    let run = fleet.run(&["deploy", "--tag", "v1"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    for _ in 0..2 {
        requests
            .recv_timeout(Duration::from_secs(10))
            .expect("two attempts");
    }
    assert!(
        run.stderr.contains(&format!(
            "warning: notify: webhook http://127.0.0.1:{port}: answered 503 Service Unavailable; the exit code stays 0"
        )),
        "{}",
        run.explain()
    );
    assert!(!run.all_output().contains(secret));
}

fn local_images(repo: &str) -> Vec<String> {
    let mut tags: Vec<String> = docker(None, &["images", repo, "--format", "{{.Tag}}"])
        .lines()
        .map(str::to_owned)
        .collect();
    tags.sort();
    tags
}

#[test]
fn retention_keeps_the_newest_releases_and_never_forces_an_image_away() {
    let fleet = fleet("retain");
    let _images = ImagesGuard(fleet.repo.clone());
    write(&fleet, "retain = 2", "", None, "");
    let mut last = None;
    for n in 1..=3 {
        // Releases are ordered by build time, in seconds.
        std::thread::sleep(Duration::from_millis(1100));
        let tag = format!("v{n}");
        // A version of its own: a build cached from another test's would
        // be one image named in two repositories, which prune never forces.
        push_release(
            &fleet.repo,
            &tag,
            &format!("{tag}-{}", fleet.app),
            "healthy",
        );
        let run = fleet.run(&["deploy", "--tag", &tag]);
        assert_eq!(run.code, 0, "{}", run.explain());
        last = Some(run);
    }
    // v3 runs and is latest, v2 is previous and among the newest two; v1 went.
    let last = last.unwrap();
    assert_eq!(
        local_images(&fleet.repo),
        ["v2", "v3"],
        "{}",
        last.explain()
    );
    let outcome = last.outcome();
    let removed = outcome["prune"]["hosts"][0]["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{outcome}");
    assert_eq!(removed[0]["tags"][0], "v1");
    assert!(removed[0]["size"].as_u64().unwrap() > 0);

    // An image a container outside the app uses stays: the engine is never forced.
    let stray = unique("stray");
    docker(
        None,
        &["create", "--name", &stray, &format!("{}:v2", fleet.repo)],
    );
    let _stray = StrayGuard(stray.clone());
    std::thread::sleep(Duration::from_millis(1100));
    push_release(&fleet.repo, "v4", &format!("v4-{}", fleet.app), "healthy");
    let run = fleet.run(&["deploy", "--tag", "v4"]);
    assert_eq!(
        run.code,
        0,
        "a removal the engine refuses is no deploy failure: {}",
        run.explain()
    );
    assert!(run.stderr.contains("prune: kept "), "{}", run.explain());
    assert_eq!(local_images(&fleet.repo), ["v2", "v3", "v4"]);

    // On demand: the dry run says what would go, then prune removes it.
    let run = rollback(fleet.dir(), &["prune", "--dry-run"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout.contains("would remove 1 image"),
        "{}",
        run.explain()
    );
    assert!(run.stdout.contains("(v2)"), "{}", run.explain());
    assert_eq!(local_images(&fleet.repo), ["v2", "v3", "v4"]);
    let run = rollback(fleet.dir(), &["prune"], &[]);
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(run.stdout.contains("kept "), "{}", run.explain());
    assert_eq!(local_images(&fleet.repo), ["v2", "v3", "v4"]);
    docker(None, &["rm", &stray]);
    let run = fleet.run(&["prune"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(run.outcome()["outcome"], "pruned");
    assert!(run.outcome()["bytes_freed"].as_u64().unwrap() > 0);
    // v4 runs and is latest, v3 is previous: undo needs no pull.
    assert_eq!(local_images(&fleet.repo), ["v3", "v4"]);
    let run = fleet.run(&["undo"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(fleet.answering(0).unwrap().0, format!("v3-{}", fleet.app));
}

#[test]
fn retention_frees_releases_another_repository_names_too() {
    let fleet = fleet("retain-shared");
    let other = format!("{}-mirror", fleet.repo);
    let _images = ImagesGuard(fleet.repo.clone());
    let _mirror = ImagesGuard(other.clone());
    write(&fleet, "retain = 2", "", None, "");
    for n in 1..=4 {
        // Releases are ordered by build time, in seconds.
        std::thread::sleep(Duration::from_millis(1100));
        let tag = format!("v{n}");
        push_release(
            &fleet.repo,
            &tag,
            &format!("{tag}-{}", fleet.app),
            "healthy",
        );
        // Another repository names the same image: the engine refuses to
        // remove it by id without force.
        docker(
            None,
            &[
                "tag",
                &format!("{}:{tag}", fleet.repo),
                &format!("{other}:{tag}"),
            ],
        );
    }
    let run = fleet.run(&["deploy", "--tag", "v4"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    let outcome = run.outcome();
    let prune = &outcome["prune"]["hosts"][0];
    assert_eq!(prune["failed"], serde_json::json!([]), "{outcome}");
    assert_eq!(prune["removed"].as_array().unwrap().len(), 2, "{outcome}");
    // This repository's names of v1 and v2 are gone; the other
    // repository keeps all of its own.
    assert_eq!(local_images(&fleet.repo), ["v3", "v4"], "{}", run.explain());
    assert_eq!(local_images(&other), ["v1", "v2", "v3", "v4"]);
    let digests = docker(
        None,
        &[
            "images",
            "--digests",
            &fleet.repo,
            "--format",
            "{{.Tag}} {{.Digest}}",
        ],
    );
    assert_eq!(digests.lines().count(), 2, "{digests}");
}

/// Removes the local images of a repository when dropped.
struct ImagesGuard(String);

impl Drop for ImagesGuard {
    fn drop(&mut self) {
        let ids = docker(None, &["images", "-q", &self.0]);
        for id in ids.lines().collect::<std::collections::BTreeSet<_>>() {
            let _ = docker_output(None, &["rmi", "-f", id]);
        }
    }
}

struct StrayGuard(String);

impl Drop for StrayGuard {
    fn drop(&mut self) {
        let _ = docker_output(None, &["rm", "-f", &self.0]);
    }
}

#[test]
fn the_exec_check_runs_inside_the_new_container() {
    let fleet = fleet("exec");
    push_release(&fleet.repo, "v1", "v1", "healthy");
    push_release(&fleet.repo, "v2", "v2", "down");
    write(
        &fleet,
        "",
        "",
        Some(
            // An exec goes through the engine: slower than a GET on a busy host.
            "exec = [\"sh\", \"-c\", \"wget -q -O - http://127.0.0.1:8080/health | grep -q UP\"]\ntimeout = \"5s\"\n",
        ),
        "",
    );
    let run = fleet.run(&["deploy", "--tag", "v1"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(fleet.answering(0).unwrap(), ("v1".into(), "UP".into()));
    // v2 answers DOWN: grep exits 1 inside the container, v1 comes back.
    let run = fleet.run(&["deploy", "--tag", "v2"]);
    assert_eq!(run.code, 3, "{}", run.explain());
    assert_eq!(fleet.answering(0).unwrap(), ("v1".into(), "UP".into()));
    let failed_probe = run.json_lines().into_iter().any(|e| {
        e["kind"] == "probe"
            && e["phase"] == "verifying"
            && e["result"]["detail"] == "exited with code 1"
    });
    assert!(failed_probe, "{}", run.explain());
}

#[test]
fn every_run_option_shows_in_docker_inspect() {
    let fleet = fleet("options");
    push_release(&fleet.repo, "v1", "v1", "healthy");
    let network = unique("net");
    docker(None, &["network", "create", &network]);
    let _network = NetworkGuard(network.clone());
    let secret = "env-file-secret-4242";
    std::fs::write(
        fleet.dir().join("app.env"),
        format!("# from the vault\nDB_PASSWORD={secret}\nMODE=file\n"),
    )
    .unwrap();
    write(
        &fleet,
        "",
        &format!(
            "env = {{ MODE = \"env\" }}\nenv_file = \"app.env\"\nlabels = {{ team = \"shop\" }}\n\
             memory = \"64m\"\ncpus = 0.5\nuser = \"0:0\"\nentrypoint = [\"/bin/busybox\", \"sh\", \"/app.sh\"]\n\
             hostname = \"day2-web\"\nadd_hosts = [\"db.internal:10.1.2.3\"]\nlog_driver = \"json-file\"\n\
             log_options = {{ max-size = \"1m\" }}\nnetworks = [\"{network}\"]\ncap_add = [\"NET_ADMIN\"]\n"
        ),
        None,
        "",
    );
    let run = fleet.run(&["deploy", "--tag", "v1"]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(!run.all_output().contains(secret));
    let id = fleet.running_id(0);
    let inspect = |format: &str| docker(None, &["inspect", "-f", format, &id]);
    assert_eq!(inspect("{{index .Config.Labels \"team\"}}"), "shop");
    assert_eq!(inspect("{{.HostConfig.Memory}}"), "67108864");
    assert_eq!(inspect("{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(inspect("{{.Config.User}}"), "0:0");
    assert_eq!(
        inspect("{{json .Config.Entrypoint}}"),
        r#"["/bin/busybox","sh","/app.sh"]"#
    );
    assert_eq!(inspect("{{.Config.Hostname}}"), "day2-web");
    assert_eq!(
        inspect("{{json .HostConfig.ExtraHosts}}"),
        r#"["db.internal:10.1.2.3"]"#
    );
    assert_eq!(inspect("{{.HostConfig.LogConfig.Type}}"), "json-file");
    assert_eq!(
        inspect("{{index .HostConfig.LogConfig.Config \"max-size\"}}"),
        "1m"
    );
    assert_eq!(inspect("{{json .HostConfig.CapAdd}}"), r#"["NET_ADMIN"]"#);
    let networks = inspect("{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}");
    assert!(
        networks.split_whitespace().any(|n| n == network),
        "{networks}"
    );
    assert!(
        networks.split_whitespace().any(|n| n == "bridge"),
        "{networks}"
    );
    let env = inspect("{{json .Config.Env}}");
    assert!(env.contains(&format!("DB_PASSWORD={secret}")), "{env}");
    assert!(
        env.contains("\"MODE=env\""),
        "env wins over env_file: {env}"
    );
    // Still the app: it answers on its port.
    assert_eq!(fleet.answering(0).unwrap(), ("v1".into(), "UP".into()));

    // A bad option is refused with the file and line, before anything changes.
    write(&fleet, "", "memory = \"lots\"", None, "");
    let run = fleet.run(&["deploy", "--tag", "v1"]);
    assert_eq!(run.code, 2, "{}", run.explain());
    assert!(
        run.stderr.contains("rollback.toml:8: container.memory:"),
        "{}",
        run.explain()
    );
    assert_eq!(fleet.running_id(0), id);
}

struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let _ = docker_output(None, &["network", "rm", &self.0]);
    }
}

#[test]
fn a_variable_inside_a_value_is_a_secret_of_its_own() {
    let fleet = fleet("secret-part");
    push_release(&fleet.repo, "v1", "v1", "healthy");
    let dir = fleet.dir();
    let (port, requests) = webhook_server(vec![200]);
    script(
        dir,
        "check",
        "echo \"pass is [$DB_PASS]\"\necho \"copy is [$DB_URL_COPY]\"\necho \"file has $(cat pass.txt)\"\nenv\nenv > pre.env\n",
    );
    write(
        &fleet,
        "",
        "env = { DATABASE_URL = \"postgres://app:${DB_PASS}@db:5432/shop\" }",
        None,
        &format!(
            "[hooks]\npre_deploy = \"./check\"\ntimeout = \"20s\"\n\n\
             [notify]\nwebhook = \"http://127.0.0.1:{port}/deploys\"\ntimeout = \"5s\"\n"
        ),
    );
    let secret = "db-pass-secret-16180";
    let copy = format!("postgres://other:{secret}@replica:5432/shop");
    let env = [("DB_PASS", secret), ("DB_URL_COPY", copy.as_str())];
    // A hook may still find the value elsewhere: what it prints is redacted.
    std::fs::write(dir.join("pass.txt"), secret).unwrap();

    let run = rollback(dir, &["deploy", "--tag", "v1", "--output", "json"], &env);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(run.all_output().contains("pass is []"), "{}", run.explain());
    assert!(run.all_output().contains("copy is []"), "{}", run.explain());
    assert!(
        run.all_output().contains("file has ***"),
        "{}",
        run.explain()
    );
    assert!(!run.all_output().contains(secret), "{}", run.explain());
    assert_eq!(run.outcome()["outcome"], "deployed");

    let (_, body) = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("a POST");
    assert!(!body.contains(secret), "{body}");

    // Neither the variable nor a variable holding its value reaches a hook.
    let pre = env_of(&dir.join("pre.env"));
    assert!(pre.iter().all(|(_, v)| !v.contains(secret)), "{pre:?}");
    assert_eq!(var(&pre, "DB_PASS"), None);
    assert_eq!(var(&pre, "DB_URL_COPY"), None);

    // The container gets the whole value; its labels hold no part of it.
    let id = fleet.running_id(0);
    let labels = docker(None, &["inspect", "-f", "{{json .Config.Labels}}", &id]);
    assert!(!labels.contains(secret), "{labels}");
    let container_env = docker(None, &["inspect", "-f", "{{json .Config.Env}}", &id]);
    assert!(
        container_env.contains(&format!(
            "DATABASE_URL=postgres://app:{secret}@db:5432/shop"
        )),
        "{container_env}"
    );
}
