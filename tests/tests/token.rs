//! The CLI against a registry in token mode (Docker Hub's scheme): the
//! registry answers `401 Bearer realm=...`, the test issuer of
//! `scripts/test-env` checks the password, grants each user its actions and
//! logs every token request; credentials come from `DOCKER_CONFIG`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rollback_e2e::*;

fn token_registry() -> String {
    test_env("ROLLBACK_TEST_TOKEN_REGISTRY")
}

fn user() -> String {
    test_env("ROLLBACK_TEST_TOKEN_USER")
}

fn password() -> String {
    test_env("ROLLBACK_TEST_TOKEN_PASSWORD")
}

/// One token request as the issuer logged it.
#[derive(Debug)]
struct TokenRequest {
    user: String,
    scopes: Vec<String>,
    status: u64,
    time: f64,
}

/// Token requests made by `rollback` (not the engine) that name `repo` in a scope.
fn rollback_token_requests(repo: &str) -> Vec<TokenRequest> {
    let log = std::fs::read_to_string(test_env("ROLLBACK_TEST_TOKEN_ISSUER_LOG")).unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["agent"].as_str().unwrap_or("").starts_with("rollback/"))
        .map(|e| TokenRequest {
            user: e["user"].as_str().unwrap_or("").to_owned(),
            scopes: e["scopes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            status: e["status"].as_u64().unwrap_or(0),
            time: e["time"].as_f64().unwrap_or(0.0),
        })
        .filter(|r| {
            r.scopes
                .iter()
                .any(|s| s.starts_with(&format!("repository:{repo}:")))
        })
        .collect()
}

/// Blob GETs the registry served for `repo` (its access log).
fn blob_downloads(repo: &str) -> usize {
    let log = std::fs::read_to_string(test_env("ROLLBACK_TEST_TOKEN_REGISTRY_LOG")).unwrap();
    let needle = format!("\"GET /v2/{repo}/blobs/");
    log.lines().filter(|l| l.contains(&needle)).count()
}

/// A Docker config folder with a plain `auths` entry for the token registry.
fn auths_config(dir: &Path, user: &str, password: &str) {
    let auth = base64(&format!("{user}:{password}"));
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            token_registry()
        ),
    )
    .unwrap();
}

/// A Docker config naming the helper `rbtoken` for the token registry, and
/// the helper: a script answering `get` with `user` and `secret`.
fn helper_config(dir: &Path, user: &str, secret: &str) {
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"rbtoken"}}}}"#, token_registry()),
    )
    .unwrap();
    let script = dir.join("docker-credential-rbtoken");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    assert!(Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap()
        .success());
}

fn base64(s: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The environment that points `rollback` at `dir`'s Docker config (and
/// puts a helper script there on the PATH).
fn env_for(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("DOCKER_CONFIG", dir.display().to_string()),
        (
            "PATH",
            format!(
                "{}:{}",
                dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
    ]
}

fn run_in(dir: &Path, args: &[&str], config: &Path) -> Run {
    let env = env_for(config);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    rollback(dir, args, &env)
}

/// Push the local image `image` as `repo:tag` on the token registry, logged
/// in as the push user through a Docker config of its own.
fn push(image: &str, repo: &str, tag: &str) -> String {
    let login = tempfile::tempdir().unwrap();
    let config = login.path().to_str().unwrap();
    let mut child = Command::new("docker")
        .args([
            "--config",
            config,
            "login",
            "-u",
            &user(),
            "--password-stdin",
        ])
        .arg(token_registry())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run docker login");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), password().as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "docker login failed");
    let target = format!("{}/{repo}:{tag}", token_registry());
    docker(None, &["tag", image, &target]);
    docker(None, &["--config", config, "push", "-q", &target]);
    docker(None, &["rmi", &target]);
    digest(repo, tag).expect("the pushed tag resolves")
}

/// The digest of `repo:tag`, read with a token of the push user.
fn digest(repo: &str, tag: &str) -> Option<String> {
    let token = Command::new("curl")
        .args(["-s", "-u"])
        .arg(format!("{}:{}", user(), password()))
        .arg(format!(
            "http://127.0.0.1:{}/token?service=rollback-test-registry&scope=repository:{repo}:pull",
            issuer_port()
        ))
        .output()
        .expect("run curl");
    let token: serde_json::Value = serde_json::from_slice(&token.stdout).ok()?;
    let token = token["token"].as_str()?.to_owned();
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "-I", "-H"])
        .arg("Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json")
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{}/v2/{repo}/manifests/{tag}", token_registry()))
        .output()
        .expect("run curl");
    content_digest(&String::from_utf8_lossy(&out.stdout))
}

/// The issuer's port, from the registry's challenge.
fn issuer_port() -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-"])
        .arg(format!("http://{}/v2/", token_registry()))
        .output()
        .expect("run curl");
    let head = String::from_utf8_lossy(&out.stdout).to_string();
    let realm = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate"))
        .and_then(|l| l.split("realm=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .expect("a Bearer challenge")
        .to_owned();
    realm
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn pull_only_tokens_are_refused_on_a_manifest_put() {
    let repo = format!("e2e/{}", unique("token-scope"));
    let digest_v1 = push("rollback-fixture:healthy", &repo, "v1");
    assert!(digest_v1.starts_with("sha256:"));
    let reader = test_env("ROLLBACK_TEST_TOKEN_READER");
    let reader_password = test_env("ROLLBACK_TEST_TOKEN_READER_PASSWORD");
    let token = Command::new("curl")
        .args(["-s", "-u"])
        .arg(format!("{reader}:{reader_password}"))
        .arg(format!(
            "http://127.0.0.1:{}/token?service=rollback-test-registry&scope=repository:{repo}:pull,push",
            issuer_port()
        ))
        .output()
        .unwrap();
    let token: serde_json::Value = serde_json::from_slice(&token.stdout).unwrap();
    let token = token["token"].as_str().unwrap();
    let base = format!("http://{}/v2/{repo}/manifests", token_registry());
    let auth = format!("Authorization: Bearer {token}");
    let accept = "Accept: application/vnd.docker.distribution.manifest.v2+json";
    let get = Command::new("curl")
        .args(["-s", "-H", &auth, "-H", accept])
        .arg(format!("{base}/v1"))
        .output()
        .unwrap();
    assert!(get.status.success());
    let manifest = get.stdout;
    assert!(!manifest.is_empty(), "the reader may pull");
    let mut put = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", &auth, "-H"])
        .arg("Content-Type: application/vnd.docker.distribution.manifest.v2+json")
        .args(["--data-binary", "@-"])
        .arg(format!("{base}/stolen"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(put.stdin.as_mut().unwrap(), &manifest).unwrap();
    drop(put.stdin.take());
    let status = String::from_utf8(put.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(status, "401", "a pull-only token cannot write a manifest");
    assert_eq!(digest(&repo, "stolen"), None);
}

#[test]
fn tag_in_one_repository_and_across_repositories_with_plain_auths_and_a_helper() {
    let repo = format!("e2e/{}", unique("token-tag"));
    let other = format!("{repo}-copy");
    let pushed = push("rollback-fixture:healthy", &repo, "v1");
    let host = token_registry();
    let work = tempfile::tempdir().unwrap();

    // Plain `auths`: a retag in the repository, one token for its scope.
    let config = tempfile::tempdir().unwrap();
    auths_config(config.path(), &user(), &password());
    let downloads = blob_downloads(&repo);
    let run = run_in(
        work.path(),
        &[
            "tag",
            &format!("{host}/{repo}:v1"),
            &format!("{host}/{repo}:known-good"),
        ],
        config.path(),
    );
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(
        digest(&repo, "known-good").as_deref(),
        Some(pushed.as_str())
    );
    let tokens = rollback_token_requests(&repo);
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0].scopes, [format!("repository:{repo}:pull,push")]);
    assert_eq!(tokens[0].user, user());

    // A credential helper: a copy into another repository, one token
    // covering pull on the source and push on the destination, blobs mounted.
    let helper = tempfile::tempdir().unwrap();
    helper_config(helper.path(), &user(), &password());
    let run = run_in(
        work.path(),
        &[
            "tag",
            &format!("{host}/{repo}:v1"),
            &format!("{host}/{other}:v1"),
        ],
        helper.path(),
    );
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(digest(&other, "v1").as_deref(), Some(pushed.as_str()));
    let tokens = rollback_token_requests(&other);
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(
        tokens[0].scopes,
        [
            format!("repository:{repo}:pull"),
            format!("repository:{other}:pull,push")
        ]
    );
    assert_eq!(
        blob_downloads(&repo),
        downloads,
        "no blob left the registry"
    );
    assert_eq!(blob_downloads(&other), 0);
    assert!(!run.all_output().contains(&password()), "{}", run.explain());
}

#[test]
fn a_wrong_password_is_refused_and_never_shown() {
    let repo = format!("e2e/{}", unique("token-wrong"));
    push("rollback-fixture:healthy", &repo, "v1");
    let host = token_registry();
    let work = tempfile::tempdir().unwrap();
    let wrong = "token-wrong-password-7c1e";
    for (kind, config) in [
        ("auths", tempfile::tempdir().unwrap()),
        ("helper", tempfile::tempdir().unwrap()),
    ] {
        if kind == "auths" {
            auths_config(config.path(), &user(), wrong);
        } else {
            helper_config(config.path(), &user(), wrong);
        }
        let run = run_in(
            work.path(),
            &[
                "tag",
                &format!("{host}/{repo}:v1"),
                &format!("{host}/{repo}:v2"),
            ],
            config.path(),
        );
        assert_eq!(run.code, 1, "{kind}: {}", run.explain());
        assert!(run.stderr.contains("refused"), "{kind}: {}", run.explain());
        assert!(
            !run.all_output().contains(wrong),
            "{kind}: {}",
            run.explain()
        );
        assert_eq!(digest(&repo, "v2"), None, "{kind}: nothing was written");
    }
    let tokens = rollback_token_requests(&repo);
    assert_eq!(
        tokens.len(),
        2,
        "one refused token request each: {tokens:?}"
    );
    assert!(tokens.iter().all(|t| t.status == 401), "{tokens:?}");
}

#[test]
fn a_user_who_may_only_pull_is_told_the_push_was_refused_on_which_repository() {
    let repo = format!("e2e/{}", unique("token-reader"));
    let pushed = push("rollback-fixture:healthy", &repo, "v1");
    let host = token_registry();
    let work = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let reader_password = test_env("ROLLBACK_TEST_TOKEN_READER_PASSWORD");
    auths_config(
        config.path(),
        &test_env("ROLLBACK_TEST_TOKEN_READER"),
        &reader_password,
    );
    // Reading is allowed.
    let run = run_in(
        work.path(),
        &[
            "tag",
            "--dry-run",
            &format!("{host}/{repo}:v1"),
            &format!("{host}/{repo}:v2"),
        ],
        config.path(),
    );
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(run.stdout.contains(&pushed), "{}", run.explain());
    // Writing is not, and the message says what and where.
    let run = run_in(
        work.path(),
        &[
            "tag",
            &format!("{host}/{repo}:v1"),
            &format!("{host}/{repo}:v2"),
        ],
        config.path(),
    );
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(
        run.stderr
            .contains(&format!("push to repository {repo} refused by {host}")),
        "{}",
        run.explain()
    );
    assert!(!run.all_output().contains(&reader_password));
    assert_eq!(digest(&repo, "v2"), None, "nothing was written");
}

/// A one-host fleet whose repository lives on the token registry, with
/// `latest` at v1 (healthy) and `v2` pushed (healthy too, another digest).
fn token_fleet(prefix: &str, stable_for: &str) -> (Fleet, String, String) {
    let fleet = Fleet::in_registry(prefix, &token_registry(), &[("prod-a", None)]);
    let repo = fleet.repo.split_once('/').unwrap().1.to_owned();
    let v1 = push("rollback-fixture:healthy", &repo, "v1");
    let v2 = push("rollback-fixture:healthcheck", &repo, "v2");
    assert_ne!(v1, v2);
    fleet.write_config("");
    let config = std::fs::read_to_string(fleet.dir().join("rollback.toml")).unwrap();
    std::fs::write(
        fleet.dir().join("rollback.toml"),
        config
            .replace(
                "stable_for = \"1s\"",
                &format!("stable_for = \"{stable_for}\""),
            )
            .replace("deadline = \"5s\"", "deadline = \"30s\""),
    )
    .unwrap();
    (fleet, v1, v2)
}

fn deploy(fleet: &Fleet, tag: &str, config: &Path) -> Run {
    let env = env_for(config);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fleet.run_env(&["deploy", "--tag", tag], &env)
}

#[test]
fn a_deploy_moves_the_tags_with_one_token_request_per_scope_set() {
    let (fleet, v1, v2) = token_fleet("token-deploy", "1s");
    let repo = fleet.repo.split_once('/').unwrap().1.to_owned();
    let config = tempfile::tempdir().unwrap();
    auths_config(config.path(), &user(), &password());

    let run = deploy(&fleet, "v1", config.path());
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(digest(&repo, "latest").as_deref(), Some(v1.as_str()));

    let before = rollback_token_requests(&repo).len();
    let run = deploy(&fleet, "v2", config.path());
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(digest(&repo, "latest").as_deref(), Some(v2.as_str()));
    assert_eq!(digest(&repo, "previous").as_deref(), Some(v1.as_str()));
    assert_eq!(fleet.answering(0), Some(("v8".to_owned(), "UP".to_owned())));
    let tokens: Vec<TokenRequest> = rollback_token_requests(&repo)
        .into_iter()
        .skip(before)
        .collect();
    let scope_sets: Vec<&Vec<String>> = tokens.iter().map(|t| &t.scopes).collect();
    assert_eq!(
        scope_sets,
        [
            &vec![format!("repository:{repo}:pull")],
            &vec![format!("repository:{repo}:pull,push")],
        ],
        "one token to read the tags at the start, one to move both at the end"
    );
    assert!(tokens.iter().all(|t| t.status == 200));
    assert!(!run.all_output().contains(&password()));
}

/// A deploy reads the tags at its start (pull), reads `latest` again right
/// before promotion (pull), then moves them (pull, push): with tokens
/// shorter-lived than the deploy, the first pull token has expired by the
/// second read and is renewed, once.
#[test]
fn a_deploy_outliving_its_tokens_moves_the_tags_and_renews_the_expired_one() {
    let lifetime: f64 = test_env("ROLLBACK_TEST_TOKEN_SHORT_LIFETIME")
        .parse()
        .unwrap();
    let (fleet, v1, v2) = token_fleet("token-expiry", &format!("{}s", lifetime as u64 + 2));
    let repo = fleet.repo.split_once('/').unwrap().1.to_owned();
    let config = tempfile::tempdir().unwrap();
    auths_config(
        config.path(),
        &test_env("ROLLBACK_TEST_TOKEN_SHORT_USER"),
        &test_env("ROLLBACK_TEST_TOKEN_SHORT_PASSWORD"),
    );
    let run = deploy(&fleet, "v1", config.path());
    assert_eq!(run.code, 0, "{}", run.explain());

    let before = rollback_token_requests(&repo).len();
    let started = Instant::now();
    let run = deploy(&fleet, "v2", config.path());
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(started.elapsed() > Duration::from_secs_f64(lifetime));
    assert_eq!(digest(&repo, "latest").as_deref(), Some(v2.as_str()));
    assert_eq!(digest(&repo, "previous").as_deref(), Some(v1.as_str()));
    let tokens: Vec<TokenRequest> = rollback_token_requests(&repo)
        .into_iter()
        .skip(before)
        .collect();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    // The expired pull token, renewed for the read of `latest` before promotion.
    assert_eq!(tokens[1].scopes, tokens[0].scopes, "{tokens:?}");
    assert!(
        tokens[1].time - tokens[0].time > lifetime,
        "the tags were read again after the first token had expired: {tokens:?}"
    );
    assert_eq!(tokens[2].scopes, [format!("repository:{repo}:pull,push")]);
}
