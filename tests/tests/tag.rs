//! `rollback tag` end to end: the binary against the real registries, with
//! credentials from Docker's `config.json` through a credential helper, as
//! CI runners that log in with `docker login` and a helper have them.

use std::path::Path;
use std::process::Command;

use rollback_e2e::*;

const ACCEPT: &str = "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn auth_registry() -> String {
    test_env("ROLLBACK_TEST_AUTH_REGISTRY")
}

fn user() -> String {
    test_env("ROLLBACK_TEST_AUTH_USER")
}

fn password() -> String {
    test_env("ROLLBACK_TEST_AUTH_PASSWORD")
}

/// The digest `repo:tag` has on the auth registry, read with curl and the
/// test credentials.
fn auth_digest_of(repo: &str, tag: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "-I", "-H", ACCEPT, "-u"])
        .arg(format!("{}:{}", user(), password()))
        .arg(format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            auth_registry()
        ))
        .output()
        .expect("run curl");
    content_digest(&String::from_utf8_lossy(&out.stdout))
}

/// Push the healthy fixture as `repo:tag` on the auth registry, logged in
/// through a Docker config of its own.
fn push_to_auth_registry(repo: &str, tag: &str, config: &Path) -> String {
    let image = format!("{}/{repo}:{tag}", auth_registry());
    let config = config.to_str().unwrap();
    let mut login = Command::new("docker")
        .args([
            "--config",
            config,
            "login",
            "-u",
            &user(),
            "--password-stdin",
        ])
        .arg(auth_registry())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run docker login");
    std::io::Write::write_all(login.stdin.as_mut().unwrap(), password().as_bytes()).unwrap();
    drop(login.stdin.take());
    assert!(login.wait().unwrap().success(), "docker login failed");
    docker(None, &["tag", "rollback-fixture:healthy", &image]);
    docker(None, &["--config", config, "push", "-q", &image]);
    docker(None, &["rmi", &image]);
    auth_digest_of(repo, tag).expect("the pushed tag resolves")
}

/// A Docker config naming the helper `rbtest` for the auth registry, and the
/// helper itself: a script that answers `get` with `user` and `secret`, or
/// fails as a helper without the entry does.
fn helper_config(dir: &Path, user: &str, secret: Option<&str>) {
    let config = format!(r#"{{"credHelpers":{{"{}":"rbtest"}}}}"#, auth_registry());
    std::fs::write(dir.join("config.json"), config).unwrap();
    let answer = match secret {
        Some(secret) => format!(
            "read server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\n"
        ),
        // Real helpers read the server URL before they answer, found or not.
        None => "read server\necho 'credentials not found in native keychain'\nexit 1\n".to_owned(),
    };
    let script = dir.join("docker-credential-rbtest");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n[ \"$1\" = get ] || exit 1\n{answer}"),
    )
    .unwrap();
    let chmod = Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    assert!(chmod.success());
}

fn tag_with_helper(dir: &Path, src: &str, dst: &str) -> Run {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    rollback(
        dir,
        &["tag", src, dst],
        &[("DOCKER_CONFIG", dir.to_str().unwrap()), ("PATH", &path)],
    )
}

#[test]
fn tag_copies_on_the_local_registry_with_the_same_digest() {
    let repo = format!("{}/e2e/{}", registry(), unique("tag"));
    let digest = push_release(&repo, "v1", "v1", "healthy");
    let dir = tempfile::tempdir().unwrap();
    let run = rollback(
        dir.path(),
        &["tag", &format!("{repo}:v1"), &format!("{repo}:known-good")],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(
        digest_of(&format!("{repo}:known-good")).as_deref(),
        Some(digest.as_str())
    );
    assert!(run.stdout.contains(&digest[7..19]), "{}", run.explain());
}

#[test]
fn a_bare_destination_tag_copies_within_the_source_repository() {
    let repo = format!("{}/e2e/{}", registry(), unique("tag-bare"));
    let digest = push_release(&repo, "v1", "v1", "healthy");
    // No config file: the destination's repository can only come from the source.
    let dir = tempfile::tempdir().unwrap();
    let run = rollback(dir.path(), &["tag", &format!("{repo}:v1"), "stable"], &[]);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(
        digest_of(&format!("{repo}:stable")).as_deref(),
        Some(digest.as_str())
    );
    assert!(
        run.stdout.contains(&format!("tagged {repo}:stable")),
        "{}",
        run.explain()
    );
}

#[test]
fn tag_on_an_auth_registry_uses_the_credential_helper_named_in_docker_config() {
    let repo = format!("e2e/{}", unique("tag-helper"));
    let login = tempfile::tempdir().unwrap();
    let digest = push_to_auth_registry(&repo, "v1", login.path());
    let src = format!("{}/{repo}:v1", auth_registry());
    let dst = format!("{}/{repo}:previous", auth_registry());

    // The helper answers: the copy is made, digest for digest.
    let dir = tempfile::tempdir().unwrap();
    helper_config(dir.path(), &user(), Some(&password()));
    let run = tag_with_helper(dir.path(), &src, &dst);
    assert_eq!(run.code, 0, "{}", run.explain());
    assert_eq!(
        auth_digest_of(&repo, "previous").as_deref(),
        Some(digest.as_str())
    );
    assert!(!run.all_output().contains(&password()), "{}", run.explain());

    // The helper answers with a wrong secret: refused, named, not shown.
    let wrong = "helper-wrong-secret-51d2";
    let dir = tempfile::tempdir().unwrap();
    helper_config(dir.path(), &user(), Some(wrong));
    let run = tag_with_helper(dir.path(), &src, &format!("{}/{repo}:v2", auth_registry()));
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(run.stderr.contains("were refused"), "{}", run.explain());
    assert!(!run.all_output().contains(wrong), "{}", run.explain());
    assert_eq!(auth_digest_of(&repo, "v2"), None, "nothing was written");

    // The helper has no entry: the error names the helper and the file.
    let dir = tempfile::tempdir().unwrap();
    helper_config(dir.path(), &user(), None);
    let run = tag_with_helper(dir.path(), &src, &format!("{}/{repo}:v2", auth_registry()));
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(
        run.stderr
            .contains("credential helper docker-credential-rbtest"),
        "{}",
        run.explain()
    );
    assert!(
        run.stderr
            .contains(&dir.path().join("config.json").display().to_string()),
        "{}",
        run.explain()
    );
    assert_eq!(auth_digest_of(&repo, "v2"), None, "nothing was written");
}
