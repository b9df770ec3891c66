//! Helpers for tests against the real registries of `scripts/test-env`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A value of `.test-env/env`, the environment variable winning.
pub fn test_env(key: &str) -> String {
    if let Ok(value) = std::env::var(key) {
        return value;
    }
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.test-env/env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!(
            "{key} unset and {} missing: run scripts/test-env first",
            file.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
        .unwrap_or_else(|| {
            panic!(
                "{key} missing from {}: run scripts/test-env first",
                file.display()
            )
        })
}

/// A repository name no other test run uses.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "rollback-registry-{}-{nanos:x}-{}/{what}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Pushes content straight through the distribution API.
pub struct Pusher {
    client: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl Pusher {
    pub fn new(registry: &str) -> Self {
        Pusher {
            client: reqwest::Client::new(),
            base: format!("http://{registry}"),
            auth: None,
        }
    }

    pub fn with_basic(registry: &str, user: &str, password: &str) -> Self {
        let mut pusher = Self::new(registry);
        pusher.auth = Some(format!("Basic {}", basic(user, password)));
        pusher
    }

    fn req(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, url);
        match &self.auth {
            Some(auth) => builder.header("Authorization", auth),
            None => builder,
        }
    }

    /// Monolithic upload: `POST` a session, `PUT ?digest=` with the bytes.
    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> Descriptor {
        let digest = sha256(bytes);
        let started = self
            .req(
                reqwest::Method::POST,
                format!("{}/v2/{repo}/blobs/uploads/", self.base),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202, "start upload of {digest} to {repo}");
        let location = started.headers()["Location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .req(
                reqwest::Method::PUT,
                format!("{location}{sep}digest={digest}"),
            )
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "finish upload of {digest} to {repo}");
        Descriptor {
            digest,
            size: bytes.len(),
        }
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let reply = self
            .req(
                reqwest::Method::PUT,
                format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let text = reply.text().await.unwrap();
        assert_eq!(status, 201, "put manifest {repo}:{reference}: {text}");
        sha256(bytes)
    }

    /// `(Docker-Content-Digest, bytes, Content-Type)` of a manifest, or `None` on 404.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Option<(String, Vec<u8>, String)> {
        let reply = self
            .req(
                reqwest::Method::GET,
                format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .header(
                "Accept",
                [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", "),
            )
            .send()
            .await
            .unwrap();
        if reply.status() == 404 {
            return None;
        }
        assert_eq!(reply.status(), 200, "get manifest {repo}:{reference}");
        let digest = reply.headers()["Docker-Content-Digest"]
            .to_str()
            .unwrap()
            .to_owned();
        let content_type = reply.headers()["Content-Type"].to_str().unwrap().to_owned();
        Some((digest, reply.bytes().await.unwrap().to_vec(), content_type))
    }

    /// Status of `HEAD` on a blob.
    pub async fn blob_status(&self, repo: &str, digest: &str) -> u16 {
        self.req(
            reqwest::Method::HEAD,
            format!("{}/v2/{repo}/blobs/{digest}", self.base),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    }
}

pub fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[derive(Debug, Clone)]
pub struct Descriptor {
    pub digest: String,
    pub size: usize,
}

/// One pushed single-platform image: its manifest bytes and blobs.
pub struct Image {
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
    pub digest: String,
    pub blobs: Vec<String>,
}

/// Push a config and a layer for `arch`, then its manifest by digest.
pub async fn push_image(pusher: &Pusher, repo: &str, arch: &str, docker: bool) -> Image {
    let salt = unique(arch);
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Labels":{{"salt":"{salt}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    let config = pusher.blob(repo, config.as_bytes()).await;
    let layer = pusher
        .blob(repo, format!("layer for {arch} {salt}").as_bytes())
        .await;
    let (media_type, config_type, layer_type) = if docker {
        (
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    };
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{config_type}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{layer_type}","digest":"{}","size":{}}}]}}"#,
        config.digest, config.size, layer.digest, layer.size
    );
    let digest = pusher
        .manifest(
            repo,
            &sha256(manifest.as_bytes()),
            media_type,
            manifest.as_bytes(),
        )
        .await;
    Image {
        manifest: manifest.into_bytes(),
        media_type,
        digest,
        blobs: vec![config.digest, layer.digest],
    }
}

/// A two-platform index (OCI) or manifest list (Docker), pushed as `repo:tag`.
pub struct MultiPlatform {
    pub digest: String,
    pub children: Vec<Image>,
}

pub async fn push_index(pusher: &Pusher, repo: &str, tag: &str, docker: bool) -> MultiPlatform {
    let amd64 = push_image(pusher, repo, "amd64", docker).await;
    let arm64 = push_image(pusher, repo, "arm64", docker).await;
    let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
    let entry = |image: &Image, arch: &str| {
        format!(
            r#"{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            image.media_type,
            image.digest,
            image.manifest.len()
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{},{}]}}"#,
        entry(&amd64, "amd64"),
        entry(&arm64, "arm64")
    );
    let digest = pusher
        .manifest(repo, tag, media_type, index.as_bytes())
        .await;
    MultiPlatform {
        digest,
        children: vec![amd64, arm64],
    }
}

/// A single-platform OCI manifest written with odd whitespace and key order.
pub async fn push_non_canonical(pusher: &Pusher, repo: &str, tag: &str) -> (String, Vec<u8>) {
    let config = pusher
        .blob(
            repo,
            format!("{{\"os\":\"linux\",\"salt\":\"{}\"}}", unique("c")).as_bytes(),
        )
        .await;
    let layer = pusher.blob(repo, unique("layer").as_bytes()).await;
    let manifest = format!(
        "{{\n   \"layers\" : [ {{ \"size\":{},  \"digest\": \"{}\",\n\t\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\" }} ],\n\n  \"config\":{{\"size\" :{} ,\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{}\"}},\r\n \"mediaType\":  \"{OCI_MANIFEST}\" ,  \"schemaVersion\" : 2 }}\n\n",
        layer.size, layer.digest, config.size, config.digest
    );
    let digest = pusher
        .manifest(repo, tag, OCI_MANIFEST, manifest.as_bytes())
        .await;
    (digest, manifest.into_bytes())
}

/// Lines appended to a registry access log from now on.
pub struct LogWindow {
    path: String,
    start: u64,
}

/// One access-log line: method, path (with query) and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl LogWindow {
    pub fn open(path: &str) -> Self {
        let start = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("registry log {path}: {e}: run scripts/test-env first"))
            .len();
        LogWindow {
            path: path.to_owned(),
            start,
        }
    }

    /// Access lines appended since `open` whose path mentions `needle`.
    pub async fn accesses(&self, needle: &str) -> Vec<Access> {
        // The registry writes its log line after the answer is sent.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(SeekFrom::Start(self.start)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text.lines()
            .filter_map(parse_access)
            .filter(|a| a.path.contains(needle))
            .collect()
    }
}

/// `127.0.0.1 - - [..] "GET /v2/x HTTP/1.1" 200 ...`
fn parse_access(line: &str) -> Option<Access> {
    let (_, rest) = line.split_once(" \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = rest.split(' ').next()?.parse().ok()?;
    Some(Access {
        method,
        path,
        status,
    })
}

/// Counts of accesses by (method, "manifests" | "blobs" | "uploads").
pub fn tally(accesses: &[Access]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for a in accesses {
        let what = if a.path.contains("/blobs/uploads/") {
            "uploads"
        } else if a.path.contains("/blobs/") {
            "blobs"
        } else if a.path.contains("/manifests/") {
            "manifests"
        } else {
            "other"
        };
        *out.entry(format!("{} {what}", a.method)).or_default() += 1;
    }
    out
}

pub fn count(tally: &HashMap<String, usize>, key: &str) -> usize {
    tally.get(key).copied().unwrap_or(0)
}

/// A temporary Docker config directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(what).replace('/', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
