//! `OciRegistry` against the real distribution registries of `scripts/test-env`.

mod common;

use common::*;
use rollback_core::{ErrorKind, ImageRef, Registry};
use rollback_registry::{OciRegistry, RegistryConfig, RequestCounts};

fn anon() -> String {
    test_env("ROLLBACK_TEST_REGISTRY")
}

fn anon_log() -> String {
    test_env("ROLLBACK_TEST_REGISTRY_LOG")
}

fn image(reference: String) -> ImageRef {
    reference.parse().unwrap()
}

/// A client that never reads the user's own Docker config.
fn client_with_config(dir: &std::path::Path) -> OciRegistry {
    let config = RegistryConfig {
        docker_config: Some(dir.to_path_buf()),
        ..RegistryConfig::default()
    };
    OciRegistry::new(config).unwrap()
}

/// Retag `repo:src` to `repo:dst`, check identical bytes and the request budget
/// in the access log, then retag again and check nothing is written.
async fn assert_retag_is_exact(repo: &str, source_digest: &str, what: &str) {
    let registry = anon();
    let pusher = Pusher::new(&registry);
    let config_dir = TempDir::new("noauth");
    let client = client_with_config(&config_dir.0);
    let (_, source_bytes, source_type) = pusher.get_manifest(repo, "src").await.unwrap();

    let window = LogWindow::open(&anon_log());
    let stats = client
        .copy_with_report(
            &image(format!("{registry}/{repo}:src")),
            &image(format!("{registry}/{repo}:dst")),
        )
        .await
        .unwrap();
    let first = window.accesses(repo).await;
    let t = tally(&first);
    eprintln!(
        "{what}: first retag: client {:?}; access log {t:?}",
        stats.requests
    );

    assert!(stats.written);
    assert_eq!(stats.digest.as_str(), source_digest);
    let (dst_digest, dst_bytes, dst_type) = pusher.get_manifest(repo, "dst").await.unwrap();
    assert_eq!(
        dst_digest, source_digest,
        "{what}: Docker-Content-Digest of the destination"
    );
    assert_eq!(
        sha256(&dst_bytes),
        source_digest,
        "{what}: sha256 of the destination bytes"
    );
    assert_eq!(dst_bytes, source_bytes, "{what}: bytes differ");
    assert_eq!(dst_type, source_type, "{what}: media type");
    assert_eq!(
        count(&t, "GET manifests"),
        1,
        "{what}: manifest GETs in {first:?}"
    );
    assert_eq!(
        count(&t, "PUT manifests"),
        1,
        "{what}: manifest PUTs in {first:?}"
    );
    assert_eq!(count(&t, "GET blobs"), 0, "{what}: blob GETs in {first:?}");
    assert_eq!(
        count(&t, "HEAD blobs"),
        0,
        "{what}: blob HEADs in {first:?}"
    );
    assert_eq!(count(&t, "POST uploads"), 0, "{what}: uploads in {first:?}");
    assert_eq!(
        count(&t, "HEAD manifests"),
        1,
        "{what}: the destination HEAD in {first:?}"
    );
    assert_eq!(first.len(), 3, "{what}: HEAD, GET, PUT only: {first:?}");
    assert_eq!(
        stats.requests,
        RequestCounts {
            heads: 1,
            manifest_gets: 1,
            manifest_puts: 1,
            ..RequestCounts::default()
        },
        "{what}: no ping, no authentication, no retry"
    );

    let window = LogWindow::open(&anon_log());
    let again = client
        .copy_with_report(
            &image(format!("{registry}/{repo}:src")),
            &image(format!("{registry}/{repo}:dst")),
        )
        .await
        .unwrap();
    let second = window.accesses(repo).await;
    let t = tally(&second);
    eprintln!(
        "{what}: second retag: client {:?}; access log {t:?}",
        again.requests
    );
    assert!(!again.written, "{what}: second retag wrote");
    assert_eq!(again.digest.as_str(), source_digest);
    assert_eq!(count(&t, "PUT manifests"), 0, "{what}: {second:?}");
    assert_eq!(
        count(&t, "GET manifests"),
        0,
        "{what}: the same digest is seen from two HEADs: {second:?}"
    );
    assert_eq!(count(&t, "HEAD manifests"), 2, "{what}: {second:?}");
    assert_eq!(second.len(), 2, "{what}: {second:?}");
}

#[tokio::test]
async fn retag_of_an_oci_index_keeps_the_digest_with_one_get_and_one_put() {
    let repo = unique("index");
    let pusher = Pusher::new(&anon());
    let index = push_index(&pusher, &repo, "src", false).await;
    assert_retag_is_exact(&repo, &index.digest, "oci index").await;
}

#[tokio::test]
async fn retag_of_a_docker_manifest_list_keeps_the_digest() {
    let repo = unique("list");
    let pusher = Pusher::new(&anon());
    let list = push_index(&pusher, &repo, "src", true).await;
    assert_retag_is_exact(&repo, &list.digest, "docker manifest list").await;
}

#[tokio::test]
async fn retag_of_a_non_canonical_manifest_keeps_its_exact_bytes() {
    let repo = unique("odd-json");
    let pusher = Pusher::new(&anon());
    let (digest, bytes) = push_non_canonical(&pusher, &repo, "src").await;
    // Re-serialising this JSON would change the digest: the copy must not.
    let reparsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_ne!(sha256(&serde_json::to_vec(&reparsed).unwrap()), digest);
    assert_retag_is_exact(&repo, &digest, "non-canonical manifest").await;
}

#[tokio::test]
async fn retag_of_a_docker_image_manifest_keeps_the_digest() {
    let repo = unique("docker-image");
    let pusher = Pusher::new(&anon());
    let image = push_image(&pusher, &repo, "amd64", true).await;
    pusher
        .manifest(&repo, "src", image.media_type, &image.manifest)
        .await;
    assert_retag_is_exact(&repo, &image.digest, "docker image manifest").await;
}

#[tokio::test]
async fn retag_from_a_digest_already_at_the_destination_makes_no_get_and_no_put() {
    let registry = anon();
    let repo = unique("by-digest");
    let pusher = Pusher::new(&registry);
    let index = push_index(&pusher, &repo, "latest", false).await;
    pusher
        .manifest(
            &repo,
            "previous",
            OCI_INDEX,
            &pusher.get_manifest(&repo, "latest").await.unwrap().1,
        )
        .await;
    let config_dir = TempDir::new("noauth");
    let client = client_with_config(&config_dir.0);
    let window = LogWindow::open(&anon_log());
    let report = client
        .copy(
            &image(format!("{registry}/{repo}@{}", index.digest)),
            &image(format!("{registry}/{repo}:previous")),
        )
        .await
        .unwrap();
    let accesses = window.accesses(&repo).await;
    let t = tally(&accesses);
    eprintln!("digest source, destination up to date: access log {t:?}");
    assert!(!report.written);
    assert_eq!(report.digest.as_str(), index.digest);
    assert_eq!(
        count(&t, "GET manifests") + count(&t, "PUT manifests"),
        0,
        "{accesses:?}"
    );
    assert_eq!(count(&t, "HEAD manifests"), 1, "{accesses:?}");
}

#[tokio::test]
async fn overwriting_an_existing_previous_tag_needs_no_delete() {
    let registry = anon();
    let repo = unique("overwrite");
    let pusher = Pusher::new(&registry);
    let v1 = push_image(&pusher, &repo, "amd64", false).await;
    let v2 = push_image(&pusher, &repo, "amd64", false).await;
    pusher
        .manifest(&repo, "previous", v1.media_type, &v1.manifest)
        .await;
    pusher
        .manifest(&repo, "latest", v2.media_type, &v2.manifest)
        .await;
    let config_dir = TempDir::new("noauth");
    let client = client_with_config(&config_dir.0);
    let previous = image(format!("{registry}/{repo}:previous"));
    assert_eq!(client.resolve(&previous).await.unwrap().as_str(), v1.digest);

    let window = LogWindow::open(&anon_log());
    let report = client
        .copy(&image(format!("{registry}/{repo}:latest")), &previous)
        .await
        .unwrap();
    let accesses = window.accesses(&repo).await;
    assert!(report.written);
    assert_eq!(client.resolve(&previous).await.unwrap().as_str(), v2.digest);
    assert!(
        accesses.iter().all(|a| a.method != "DELETE"),
        "{accesses:?}"
    );
    // The old release stays reachable by digest.
    let v1_ref = image(format!("{registry}/{repo}@{}", v1.digest));
    assert_eq!(client.resolve(&v1_ref).await.unwrap().as_str(), v1.digest);
}

#[tokio::test]
async fn cross_repository_copy_of_an_index_mounts_every_blob() {
    let registry = anon();
    let src = unique("mount-src");
    let dst = unique("mount-dst");
    let pusher = Pusher::new(&registry);
    let index = push_index(&pusher, &src, "v1", false).await;
    let config_dir = TempDir::new("noauth");
    let client = client_with_config(&config_dir.0);

    let window = LogWindow::open(&anon_log());
    let stats = client
        .copy_with_report(
            &image(format!("{registry}/{src}:v1")),
            &image(format!("{registry}/{dst}:latest")),
        )
        .await
        .unwrap();
    let accesses = window.accesses(&dst).await;
    let source_side = window.accesses(&src).await;
    eprintln!(
        "cross-repo index copy: client {:?}, {} mounted, {} present, {} manifests written; access log dst {:?} src {:?}",
        stats.requests,
        stats.blobs_mounted,
        stats.blobs_present,
        stats.manifests_written,
        tally(&accesses),
        tally(&source_side)
    );

    let blobs: Vec<&String> = index.children.iter().flat_map(|c| &c.blobs).collect();
    assert_eq!(stats.blobs_mounted as usize, blobs.len());
    assert_eq!(stats.manifests_written, 3, "two children and the index");
    for blob in &blobs {
        let mounted = accesses.iter().any(|a| {
            a.method == "POST"
                && a.path.starts_with(&format!("/v2/{dst}/blobs/uploads/?"))
                && a.path.contains(&format!("mount={blob}"))
                && a.status == 201
        });
        assert!(mounted, "blob {blob} not mounted with 201: {accesses:?}");
        assert_eq!(pusher.blob_status(&dst, blob).await, 200);
    }
    let all: Vec<&Access> = accesses.iter().chain(&source_side).collect();
    assert!(
        all.iter()
            .all(|a| !(a.method == "GET" && a.path.contains("/blobs/"))),
        "a blob was downloaded: {all:?}"
    );
    assert!(
        all.iter()
            .all(|a| !(a.method == "PATCH" || (a.method == "PUT" && a.path.contains("/blobs/")))),
        "a blob was uploaded: {all:?}"
    );
    for child in &index.children {
        let by_digest = image(format!("{registry}/{dst}@{}", child.digest));
        assert_eq!(
            client.resolve(&by_digest).await.unwrap().as_str(),
            child.digest
        );
    }
    let (digest, bytes, _) = pusher.get_manifest(&dst, "latest").await.unwrap();
    assert_eq!(digest, index.digest);
    assert_eq!(sha256(&bytes), index.digest);

    // Copying again finds everything in place.
    let again = client
        .copy_with_report(
            &image(format!("{registry}/{src}:v1")),
            &image(format!("{registry}/{dst}:latest")),
        )
        .await
        .unwrap();
    assert!(!again.written);
    assert_eq!(again.requests.blob_mounts, 0);
}

#[tokio::test]
async fn cross_repository_copy_reuses_blobs_already_there() {
    let registry = anon();
    let src = unique("reuse-src");
    let dst = unique("reuse-dst");
    let pusher = Pusher::new(&registry);
    let list = push_index(&pusher, &src, "v1", true).await;
    // The destination already holds the amd64 image.
    let amd64 = &list.children[0];
    let config_dir = TempDir::new("noauth");
    let client = client_with_config(&config_dir.0);
    let seeded = client
        .copy(
            &image(format!("{registry}/{src}@{}", amd64.digest)),
            &image(format!("{registry}/{dst}@{}", amd64.digest)),
        )
        .await
        .unwrap();
    assert!(seeded.written);
    let stats = client
        .copy_with_report(
            &image(format!("{registry}/{src}:v1")),
            &image(format!("{registry}/{dst}:v1")),
        )
        .await
        .unwrap();
    eprintln!("manifest list copy with one child present: {stats:?}");
    assert_eq!(stats.blobs_mounted, 2, "only the arm64 config and layer");
    assert_eq!(stats.manifests_written, 2, "the arm64 child and the list");
    assert_eq!(
        pusher.get_manifest(&dst, "v1").await.unwrap().0,
        list.digest
    );
}

#[tokio::test]
async fn resolve_reports_missing_tags_and_repositories_as_not_found() {
    let registry = anon();
    let repo = unique("missing");
    let pusher = Pusher::new(&registry);
    let image_pushed = push_image(&pusher, &repo, "amd64", false).await;
    pusher
        .manifest(&repo, "v1", image_pushed.media_type, &image_pushed.manifest)
        .await;
    let config_dir = TempDir::new("noauth");
    let client = client_with_config(&config_dir.0);

    let found = client
        .resolve(&image(format!("{registry}/{repo}:v1")))
        .await
        .unwrap();
    assert_eq!(found.as_str(), image_pushed.digest);
    let missing_tag = client
        .resolve(&image(format!("{registry}/{repo}:nope")))
        .await
        .unwrap_err();
    assert_eq!(
        missing_tag.kind(),
        ErrorKind::NotFound,
        "{}",
        missing_tag.report()
    );
    let missing_repo = client
        .resolve(&image(format!("{registry}/{}:v1", unique("never-pushed"))))
        .await
        .unwrap_err();
    assert_eq!(
        missing_repo.kind(),
        ErrorKind::NotFound,
        "{}",
        missing_repo.report()
    );
    let copy_missing = client
        .copy(
            &image(format!("{registry}/{repo}:nope")),
            &image(format!("{registry}/{repo}:dst")),
        )
        .await
        .unwrap_err();
    assert_eq!(
        copy_missing.kind(),
        ErrorKind::NotFound,
        "{}",
        copy_missing.report()
    );
    assert!(pusher.get_manifest(&repo, "dst").await.is_none());
}

#[tokio::test]
async fn copy_between_registries_is_refused_before_any_request() {
    let config_dir = TempDir::new("noauth");
    let client = client_with_config(&config_dir.0);
    let err = client
        .copy(
            &image("127.0.0.1:1/a:v1".into()),
            &image("127.0.0.2:1/a:v1".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.report());
}

#[tokio::test]
async fn unreachable_registry_is_unavailable_after_bounded_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_dir = TempDir::new("noauth");
    let config = RegistryConfig {
        docker_config: Some(config_dir.0.clone()),
        initial_backoff: std::time::Duration::from_millis(20),
        ..RegistryConfig::default()
    };
    let client = OciRegistry::new(config).unwrap();
    let started = std::time::Instant::now();
    let err = client
        .resolve(&image(format!("127.0.0.1:{port}/a:v1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.message().contains("3 tries"), "{}", err.report());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

mod auth {
    use super::*;

    fn auth_registry() -> String {
        test_env("ROLLBACK_TEST_AUTH_REGISTRY")
    }

    fn pusher() -> Pusher {
        Pusher::with_basic(
            &auth_registry(),
            &test_env("ROLLBACK_TEST_AUTH_USER"),
            &test_env("ROLLBACK_TEST_AUTH_PASSWORD"),
        )
    }

    fn write_config(dir: &std::path::Path, user: &str, password: &str) {
        let config = format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            auth_registry(),
            basic(user, password)
        );
        std::fs::write(dir.join("config.json"), config).unwrap();
    }

    #[tokio::test]
    async fn credentials_from_docker_config_open_the_auth_registry() {
        let registry = auth_registry();
        let repo = unique("auth-ok");
        let index = push_index(&pusher(), &repo, "v1", false).await;
        let dir = TempDir::new("auth");
        write_config(
            &dir.0,
            &test_env("ROLLBACK_TEST_AUTH_USER"),
            &test_env("ROLLBACK_TEST_AUTH_PASSWORD"),
        );
        let client = client_with_config(&dir.0);

        let digest = client
            .resolve(&image(format!("{registry}/{repo}:v1")))
            .await
            .unwrap();
        assert_eq!(digest.as_str(), index.digest);
        let window = LogWindow::open(&test_env("ROLLBACK_TEST_AUTH_REGISTRY_LOG"));
        let stats = client
            .copy_with_report(
                &image(format!("{registry}/{repo}:v1")),
                &image(format!("{registry}/{repo}:previous")),
            )
            .await
            .unwrap();
        let accesses = window.accesses(&repo).await;
        eprintln!(
            "retag on the auth registry: client {:?}; access log {:?}",
            stats.requests,
            tally(&accesses)
        );
        assert!(stats.written);
        assert!(
            accesses.iter().all(|a| a.status != 401),
            "credentials sent up front: {accesses:?}"
        );
        assert_eq!(
            pusher().get_manifest(&repo, "previous").await.unwrap().0,
            index.digest
        );

        let other = unique("auth-copy");
        let copied = client
            .copy_with_report(
                &image(format!("{registry}/{repo}:v1")),
                &image(format!("{registry}/{other}:v1")),
            )
            .await
            .unwrap();
        assert_eq!(copied.blobs_mounted, 4);
        assert_eq!(
            pusher().get_manifest(&other, "v1").await.unwrap().0,
            index.digest
        );
    }

    #[tokio::test]
    async fn missing_credentials_are_unauthorized_and_say_where_they_were_looked_for() {
        let registry = auth_registry();
        let repo = unique("auth-none");
        let dir = TempDir::new("auth-none");
        let client = client_with_config(&dir.0);
        let err = client
            .resolve(&image(format!("{registry}/{repo}:v1")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{}", err.report());
        let expected = format!(
            "no credentials for {registry} in {}",
            dir.0.join("config.json").display()
        );
        assert!(err.report().contains(&expected), "{}", err.report());
    }

    #[tokio::test]
    async fn refused_credentials_are_unauthorized_without_the_password() {
        let registry = auth_registry();
        let repo = unique("auth-bad");
        let index = push_index(&pusher(), &repo, "v1", false).await;
        let dir = TempDir::new("auth-bad");
        let wrong = "wrong-password-f00d";
        write_config(&dir.0, &test_env("ROLLBACK_TEST_AUTH_USER"), wrong);
        let client = client_with_config(&dir.0);
        let err = client
            .copy(
                &image(format!("{registry}/{repo}:v1")),
                &image(format!("{registry}/{repo}:v2")),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{}", err.report());
        let report = format!("{} {err:?}", err.report());
        let expected = format!(
            "credentials from {} were refused",
            dir.0.join("config.json").display()
        );
        assert!(report.contains(&expected), "{report}");
        assert!(!report.contains(wrong), "password leaked: {report}");
        assert!(!report.contains(&basic(&test_env("ROLLBACK_TEST_AUTH_USER"), wrong)));
        assert!(pusher().get_manifest(&repo, "v2").await.is_none());
        let _ = index;
    }
}
