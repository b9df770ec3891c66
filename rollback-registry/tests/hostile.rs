//! `OciRegistry` against an in-process registry that misbehaves on purpose.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{sha256, TempDir, OCI_MANIFEST};
use rollback_core::{ErrorKind, ImageRef, Registry};
use rollback_registry::{OciRegistry, RegistryConfig, RequestCounts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the hostile server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How to answer one request.
enum Answer {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Announce `length` bytes, send `body`, close the connection.
    Truncated {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        length: usize,
    },
    /// No Content-Length: the body runs until the connection closes.
    Unbounded {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

fn answer(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Answer {
    Answer::Full {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
    }
}

type Handler = dyn Fn(&Seen, &[Seen]) -> Answer + Send + Sync;

/// A raw HTTP/1.1 server on 127.0.0.1:0, one request per connection.
struct Hostile {
    address: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    async fn start(handler: impl Fn(&Seen, &[Seen]) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, handler, log).await;
                });
            }
        });
        Hostile {
            address,
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, method: &str, path_part: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.contains(path_part))
            .count()
    }
}

async fn serve(
    mut stream: TcpStream,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_owned();
    let path = request_line.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let request = Seen {
        method,
        path,
        headers,
        body,
    };
    let before = {
        let mut log = log.lock().unwrap();
        let before = log.clone();
        log.push(request.clone());
        before
    };
    let is_head = request.method == "HEAD";
    match handler(&request, &before) {
        Answer::Full {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            stream.write_all(out.as_bytes()).await?;
            if !is_head {
                stream.write_all(&body).await?;
            }
        }
        Answer::Truncated {
            headers,
            body,
            length,
        } => {
            let mut out =
                format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {length}\r\n");
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.flush().await?;
            // Dropping the stream cuts the body short.
        }
        Answer::Unbounded { headers, body } => {
            let mut out = "HTTP/1.1 200 OK\r\nConnection: close\r\n".to_owned();
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            stream.write_all(out.as_bytes()).await?;
            for piece in body.chunks(64 * 1024) {
                stream.write_all(piece).await?;
            }
        }
    }
    stream.shutdown().await
}

/// `METHOD /path` of each request, the query of token requests left out.
fn requests(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| {
            let path = if s.path.starts_with("/token") {
                "/token"
            } else {
                s.path.as_str()
            };
            format!("{} {path}", s.method)
        })
        .collect()
}

fn client(dir: &TempDir) -> OciRegistry {
    OciRegistry::new(RegistryConfig {
        docker_config: Some(dir.0.clone()),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..RegistryConfig::default()
    })
    .unwrap()
}

fn reference(server: &Hostile, rest: &str) -> ImageRef {
    format!("{}/{rest}", server.address).parse().unwrap()
}

/// A small manifest and its digest.
fn manifest() -> (Vec<u8>, String) {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[]}}"#,
        "a".repeat(64)
    );
    let digest = sha256(body.as_bytes());
    (body.into_bytes(), digest)
}

/// The usual answers of a well-behaved registry for `app:src` → `app:dst`.
fn honest(seen: &Seen, body: &[u8], digest: &str) -> Answer {
    let path = seen.path.as_str();
    match seen.method.as_str() {
        "GET" if path == "/v2/" => answer(200, &[], "{}"),
        "HEAD" if path.ends_with("/manifests/dst") => answer(404, &[], ""),
        "HEAD" | "GET" if path.contains("/manifests/") => answer(
            200,
            &[
                ("Content-Type", OCI_MANIFEST),
                ("Docker-Content-Digest", digest),
            ],
            body.to_vec(),
        ),
        "PUT" if path.ends_with("/manifests/dst") => {
            answer(201, &[("Docker-Content-Digest", digest)], "")
        }
        _ => answer(
            404,
            &[],
            r#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#,
        ),
    }
}

#[tokio::test]
async fn wrong_content_digest_is_invalid_input_and_writes_nothing() {
    let (body, _) = manifest();
    // Announce the digest of other bytes.
    let lie = sha256(b"something else");
    let announced = lie.clone();
    let server = Hostile::start(move |seen, _| honest(seen, &body, &announced)).await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .copy(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap_err();
    eprintln!(
        "wrong digest: {} ; requests {:?}",
        err.report(),
        server
            .seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.report());
    assert!(err.report().contains(&lie), "{}", err.report());
    assert_eq!(server.count("PUT", ""), 0);
}

#[tokio::test]
async fn bytes_not_matching_the_source_digest_are_invalid_input() {
    let (body, digest) = manifest();
    let pinned = sha256(b"what the user asked for");
    let server = Hostile::start(move |seen, _| honest(seen, &body, &digest)).await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .copy(
            &reference(&server, &format!("app@{pinned}")),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.report());
    assert_eq!(server.count("PUT", ""), 0);
}

#[tokio::test]
async fn manifest_over_4_mib_with_content_length_is_refused_unread() {
    let big = vec![b' '; 5 * 1024 * 1024];
    let digest = sha256(&big);
    let server = Hostile::start(move |seen, _| honest(seen, &big, &digest)).await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .copy(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap_err();
    eprintln!("4 MiB cap (Content-Length): {}", err.report());
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.report());
    assert!(err.report().contains("refusing"), "{}", err.report());
    assert_eq!(
        server.count("GET", "/manifests/"),
        1,
        "no retry of a refusal"
    );
    assert_eq!(server.count("PUT", ""), 0);
}

#[tokio::test]
async fn manifest_over_4_mib_without_content_length_is_cut_off() {
    let big = vec![b' '; 6 * 1024 * 1024];
    let digest = sha256(&big);
    let server = Hostile::start(move |seen, before| {
        if seen.method == "GET" && seen.path.contains("/manifests/") {
            return Answer::Unbounded {
                headers: vec![
                    ("Content-Type".into(), OCI_MANIFEST.into()),
                    ("Docker-Content-Digest".into(), digest.clone()),
                ],
                body: big.clone(),
            };
        }
        let _ = before;
        honest(seen, b"", &digest)
    })
    .await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .copy(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap_err();
    eprintln!("4 MiB cap (streamed): {}", err.report());
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.report());
    assert_eq!(server.count("PUT", ""), 0);
}

#[tokio::test]
async fn too_many_requests_then_success_is_retried() {
    let (body, digest) = manifest();
    let server = Hostile::start(move |seen, before| {
        let earlier = |m: &str| {
            before
                .iter()
                .filter(|s| s.method == m && s.path.contains("/manifests/"))
                .count()
        };
        if seen.method == "HEAD" && seen.path.ends_with("/manifests/dst") && earlier("HEAD") == 0 {
            return answer(
                429,
                &[("Retry-After", "0")],
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
            );
        }
        if seen.method == "GET" && seen.path.contains("/manifests/") && earlier("GET") == 0 {
            return answer(503, &[], "");
        }
        honest(seen, &body, &digest)
    })
    .await;
    let dir = TempDir::new("hostile");
    let stats = client(&dir)
        .copy_with_report(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap();
    eprintln!("429 then 200, 503 then 200: {:?}", stats.requests);
    assert!(stats.written);
    assert_eq!(stats.requests.retries, 2);
    let puts: Vec<Seen> = server
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].body, manifest().0, "exact bytes written");
    assert_eq!(puts[0].header("Content-Type"), Some(OCI_MANIFEST));
}

#[tokio::test]
async fn connection_dropped_mid_body_is_retried() {
    let (body, digest) = manifest();
    let server = Hostile::start(move |seen, before| {
        let gets = before
            .iter()
            .filter(|s| s.method == "GET" && s.path.contains("/manifests/"))
            .count();
        if seen.method == "GET" && seen.path.contains("/manifests/") && gets == 0 {
            return Answer::Truncated {
                headers: vec![
                    ("Content-Type".into(), OCI_MANIFEST.into()),
                    ("Docker-Content-Digest".into(), digest.clone()),
                ],
                body: body[..body.len() / 2].to_vec(),
                length: body.len(),
            };
        }
        honest(seen, &body, &digest)
    })
    .await;
    let dir = TempDir::new("hostile");
    let stats = client(&dir)
        .copy_with_report(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap();
    eprintln!("dropped mid-body once: {:?}", stats.requests);
    assert_eq!(stats.requests.retries, 1);
    assert_eq!(stats.requests.manifest_gets, 1);
    assert_eq!(server.count("GET", "/manifests/"), 2);
    assert_eq!(server.count("PUT", ""), 1);
}

#[tokio::test]
async fn connection_always_dropped_is_unavailable_and_writes_nothing() {
    let (body, digest) = manifest();
    let server = Hostile::start(move |seen, _| {
        if seen.method == "GET" && seen.path.contains("/manifests/") {
            return Answer::Truncated {
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                body: body[..10].to_vec(),
                length: body.len(),
            };
        }
        honest(seen, &body, &digest)
    })
    .await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .copy(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap_err();
    eprintln!("dropped every time: {}", err.report());
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert_eq!(
        server.count("GET", "/manifests/"),
        3,
        "one try and two retries"
    );
    assert_eq!(server.count("PUT", ""), 0);
}

#[tokio::test]
async fn server_errors_exhaust_retries_as_unavailable() {
    let server = Hostile::start(|seen, _| {
        if seen.path == "/v2/" {
            return answer(200, &[], "{}");
        }
        answer(502, &[], "bad gateway")
    })
    .await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .resolve(&reference(&server, "app:v1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert_eq!(server.count("HEAD", "/manifests/"), 3);
}

/// A registry behind a token server that wants one token for every scope.
#[tokio::test]
async fn bearer_token_covers_source_and_destination_and_a_refused_mount_is_cancelled() {
    let (body, digest) = manifest();
    let blob = format!("sha256:{}", "a".repeat(64));
    let server = Hostile::start(move |seen, _| {
        let path = seen.path.as_str();
        if path.starts_with("/token") {
            return answer(
                200,
                &[("Content-Type", "application/json")],
                r#"{"token":"t0ken"}"#,
            );
        }
        if seen.header("Authorization") != Some("Bearer t0ken") {
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="hostile",scope="repository:x:pull""#,
                seen.header("Host").unwrap_or("")
            );
            return answer(
                401,
                &[("WWW-Authenticate", challenge.as_str())],
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
        }
        match seen.method.as_str() {
            "HEAD" if path.starts_with("/v2/src/manifests/") => answer(
                200,
                &[
                    ("Content-Type", OCI_MANIFEST),
                    ("Docker-Content-Digest", digest.as_str()),
                ],
                body.clone(),
            ),
            "GET" if path.starts_with("/v2/src/manifests/") => answer(
                200,
                &[
                    ("Content-Type", OCI_MANIFEST),
                    ("Docker-Content-Digest", digest.as_str()),
                ],
                body.clone(),
            ),
            "POST" if path.contains("mount=") => {
                answer(202, &[("Location", "/v2/dst/blobs/uploads/session-1")], "")
            }
            "DELETE" => answer(204, &[], ""),
            _ => answer(404, &[], ""),
        }
    })
    .await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .copy(&reference(&server, "src:v1"), &reference(&server, "dst:v1"))
        .await
        .unwrap_err();
    let seen = server.seen();
    eprintln!(
        "bearer + refused mount: {} ; {:?}",
        err.report(),
        seen.iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect::<Vec<_>>()
    );
    let tokens: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.starts_with("/token"))
        .collect();
    assert_eq!(tokens.len(), 1, "one token for the whole copy");
    assert!(
        tokens[0].path.contains("scope=repository%3Asrc%3Apull&"),
        "{}",
        tokens[0].path
    );
    assert!(
        tokens[0]
            .path
            .contains("scope=repository%3Adst%3Apull%2Cpush"),
        "{}",
        tokens[0].path
    );
    assert!(
        tokens[0].path.contains("service=hostile"),
        "{}",
        tokens[0].path
    );
    assert!(err.report().contains(&blob), "{}", err.report());
    assert!(
        err.report().contains("refused to mount"),
        "{}",
        err.report()
    );
    assert_eq!(
        server.count("DELETE", "/v2/dst/blobs/uploads/session-1"),
        1,
        "upload session cancelled"
    );
    assert_eq!(server.count("PUT", ""), 0);
    assert_eq!(server.count("PATCH", ""), 0);
}

/// Basic credentials from `config.json` go to the token endpoint, never to the registry.
#[tokio::test]
async fn bearer_token_is_fetched_with_docker_config_credentials() {
    let (body, digest) = manifest();
    let manifest_digest = digest.clone();
    let server = Hostile::start(move |seen, _| {
        let path = seen.path.as_str();
        if path.starts_with("/token") {
            if seen.header("Authorization")
                != Some(format!("Basic {}", common::basic("ci", "pa55")).as_str())
            {
                return answer(401, &[], "");
            }
            return answer(
                200,
                &[("Content-Type", "application/json")],
                r#"{"access_token":"t0ken"}"#,
            );
        }
        if seen.header("Authorization") != Some("Bearer t0ken") {
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="hostile""#,
                seen.header("Host").unwrap_or("")
            );
            return answer(401, &[("WWW-Authenticate", challenge.as_str())], "");
        }
        match seen.method.as_str() {
            "HEAD" | "GET" if path.starts_with("/v2/src/manifests/") => answer(
                200,
                &[
                    ("Content-Type", OCI_MANIFEST),
                    ("Docker-Content-Digest", manifest_digest.as_str()),
                ],
                body.clone(),
            ),
            "POST" if path.contains("mount=") => answer(201, &[], ""),
            "PUT" if path == "/v2/dst/manifests/v1" => answer(201, &[], ""),
            _ => answer(404, &[], ""),
        }
    })
    .await;
    let dir = TempDir::new("hostile-creds");
    std::fs::write(
        dir.0.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            server.address,
            common::basic("ci", "pa55")
        ),
    )
    .unwrap();
    let stats = client(&dir)
        .copy_with_report(&reference(&server, "src:v1"), &reference(&server, "dst:v1"))
        .await
        .unwrap();
    let seen = server.seen();
    eprintln!("bearer with credentials: {:?}", stats.requests);
    assert!(stats.written);
    assert_eq!(stats.blobs_mounted, 1);
    let blob = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        requests(&seen),
        vec![
            "HEAD /v2/dst/manifests/v1".to_owned(),
            "GET /token".to_owned(),
            "HEAD /v2/dst/manifests/v1".to_owned(),
            "GET /v2/src/manifests/v1".to_owned(),
            format!("HEAD /v2/dst/blobs/{blob}"),
            format!("POST /v2/dst/blobs/uploads/?mount={blob}&from=src"),
            "PUT /v2/dst/manifests/v1".to_owned(),
        ],
        "no ping: the first request learns the challenge"
    );
    assert_eq!(stats.requests.auth, 2, "the 401 and the token request");
    assert_eq!(seen[0].header("Authorization"), None, "anonymous first");
    assert!(
        seen[2..]
            .iter()
            .filter(|s| s.path.starts_with("/v2/"))
            .all(|s| s.header("Authorization") == Some("Bearer t0ken")),
        "registry requests carry the token only, never the password"
    );
    let put = seen.iter().find(|s| s.method == "PUT").unwrap();
    assert_eq!(sha256(&put.body), digest);
}

#[tokio::test]
async fn resolve_hashes_the_manifest_when_head_has_no_digest_header() {
    let (body, digest) = manifest();
    let server = Hostile::start(move |seen, _| match seen.method.as_str() {
        "HEAD" => answer(200, &[("Content-Type", OCI_MANIFEST)], body.clone()),
        "GET" if seen.path.contains("/manifests/") => {
            answer(200, &[("Content-Type", OCI_MANIFEST)], body.clone())
        }
        _ => answer(200, &[], "{}"),
    })
    .await;
    let dir = TempDir::new("hostile");
    let resolved = client(&dir)
        .resolve(&reference(&server, "app:v1"))
        .await
        .unwrap();
    assert_eq!(resolved.as_str(), digest);
}

#[tokio::test]
async fn unauthorized_anonymous_access_names_the_config_file() {
    let server = Hostile::start(|seen, _| {
        if seen.path.starts_with("/token") {
            return answer(401, &[], "");
        }
        let challenge = format!(
            r#"Bearer realm="http://{}/token",service="hostile""#,
            seen.header("Host").unwrap_or("")
        );
        answer(401, &[("WWW-Authenticate", challenge.as_str())], "")
    })
    .await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .resolve(&reference(&server, "app:v1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{}", err.report());
    let expected = format!(
        "no credentials for {} in {}",
        server.address,
        dir.0.join("config.json").display()
    );
    assert!(err.report().contains(&expected), "{}", err.report());
}

/// A registry where `app:dst` exists once it was written.
fn remembering(seen: &Seen, before: &[Seen], body: &[u8], digest: &str) -> Answer {
    let written = before
        .iter()
        .any(|s| s.method == "PUT" && s.path == "/v2/app/manifests/dst");
    if seen.method == "HEAD" && seen.path == "/v2/app/manifests/dst" && written {
        return answer(
            200,
            &[
                ("Content-Type", OCI_MANIFEST),
                ("Docker-Content-Digest", digest),
            ],
            body.to_vec(),
        );
    }
    honest(seen, body, digest)
}

#[tokio::test]
async fn retag_is_head_get_put_and_again_two_heads_without_a_ping() {
    let (body, digest) = manifest();
    let expected = digest.clone();
    let server =
        Hostile::start(move |seen, before| remembering(seen, before, &body, &digest)).await;
    let dir = TempDir::new("hostile");
    let client = client(&dir);
    let source = reference(&server, "app:src");
    let destination = reference(&server, "app:dst");

    let first = client
        .copy_with_report(&source, &destination)
        .await
        .unwrap();
    assert!(first.written);
    assert_eq!(first.digest.as_str(), expected);
    assert_eq!(
        first.requests,
        RequestCounts {
            heads: 1,
            manifest_gets: 1,
            manifest_puts: 1,
            ..RequestCounts::default()
        }
    );
    assert_eq!(
        requests(&server.seen()),
        [
            "HEAD /v2/app/manifests/dst",
            "GET /v2/app/manifests/src",
            "PUT /v2/app/manifests/dst",
        ]
    );
    let put = &server.seen()[2];
    assert_eq!(put.body, manifest().0, "exact bytes written");
    assert_eq!(put.header("Content-Type"), Some(OCI_MANIFEST));

    let again = client
        .copy_with_report(&source, &destination)
        .await
        .unwrap();
    assert!(!again.written, "the destination already had the digest");
    assert_eq!(again.digest.as_str(), expected);
    assert_eq!(
        again.requests,
        RequestCounts {
            heads: 2,
            ..RequestCounts::default()
        },
        "a copy onto the same digest spends no GET"
    );
    assert_eq!(
        requests(&server.seen()[3..]),
        ["HEAD /v2/app/manifests/dst", "HEAD /v2/app/manifests/src"]
    );
}

#[tokio::test]
async fn source_pinned_by_digest_already_at_the_destination_costs_one_head() {
    let (body, digest) = manifest();
    let pinned = digest.clone();
    let server = Hostile::start(move |seen, _| {
        if seen.method == "HEAD" && seen.path == "/v2/app/manifests/dst" {
            return answer(200, &[("Docker-Content-Digest", digest.as_str())], "");
        }
        honest(seen, &body, &digest)
    })
    .await;
    let dir = TempDir::new("hostile");
    let stats = client(&dir)
        .copy_with_report(
            &reference(&server, &format!("app@{pinned}")),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap();
    assert!(!stats.written);
    assert_eq!(stats.digest.as_str(), pinned);
    assert_eq!(requests(&server.seen()), ["HEAD /v2/app/manifests/dst"]);
}

/// Basic credentials are sent after the first 401 and up front afterwards.
#[tokio::test]
async fn basic_challenge_is_answered_once_and_remembered_by_the_client() {
    let (body, digest) = manifest();
    let expected_auth = format!("Basic {}", common::basic("ci", "pa55"));
    let server = Hostile::start(move |seen, before| {
        if seen.header("Authorization") != Some(expected_auth.as_str()) {
            return answer(
                401,
                &[("WWW-Authenticate", r#"Basic realm="hostile""#)],
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
        }
        remembering(seen, before, &body, &digest)
    })
    .await;
    let dir = TempDir::new("hostile-basic");
    std::fs::write(
        dir.0.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            server.address,
            common::basic("ci", "pa55")
        ),
    )
    .unwrap();
    let client = client(&dir);
    let first = client
        .copy_with_report(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap();
    assert!(first.written);
    assert_eq!(first.requests.auth, 1, "one 401, no token endpoint");
    assert_eq!(
        requests(&server.seen()),
        [
            "HEAD /v2/app/manifests/dst",
            "HEAD /v2/app/manifests/dst",
            "GET /v2/app/manifests/src",
            "PUT /v2/app/manifests/dst",
        ]
    );
    let seen_before = server.seen().len();
    let resolved = client
        .resolve(&reference(&server, "app:dst"))
        .await
        .unwrap();
    assert_eq!(resolved, first.digest);
    let later = &server.seen()[seen_before..];
    assert_eq!(requests(later), ["HEAD /v2/app/manifests/dst"]);
    assert!(later[0].header("Authorization").is_some(), "sent up front");
}

#[tokio::test]
async fn plain_http_redirects_are_followed() {
    let (body, digest) = manifest();
    let server = Hostile::start(move |seen, _| {
        if seen.method == "GET" && seen.path == "/v2/app/manifests/src" {
            return answer(307, &[("Location", "/v2/app/manifests/moved")], "");
        }
        honest(seen, &body, &digest)
    })
    .await;
    let dir = TempDir::new("hostile");
    let stats = client(&dir)
        .copy_with_report(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap();
    assert!(stats.written);
    assert_eq!(
        requests(&server.seen()),
        [
            "HEAD /v2/app/manifests/dst",
            "GET /v2/app/manifests/src",
            "GET /v2/app/manifests/moved",
            "PUT /v2/app/manifests/dst",
        ]
    );
}

/// Docker Hub's answer to a client over its pull limit.
fn rate_limited() -> Answer {
    answer(
        429,
        &[
            ("Retry-After", "1"),
            ("RateLimit-Limit", "100;w=21600"),
            ("RateLimit-Remaining", "0;w=21600"),
            ("Docker-RateLimit-Source", "203.0.113.7"),
        ],
        r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#,
    )
}

#[tokio::test]
async fn rate_limit_is_retried_within_the_bound_and_reported_with_its_headers() {
    let server = Hostile::start(|_, _| rate_limited()).await;
    let dir = TempDir::new("hostile");
    let client = OciRegistry::new(RegistryConfig {
        docker_config: Some(dir.0.clone()),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(1500),
        max_retries: 2,
        ..RegistryConfig::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = client
        .resolve(&reference(&server, "app:v1"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    let shown = err.report();
    eprintln!("429 every time, {took:?}: {shown}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{shown}");
    assert_eq!(
        server.count("HEAD", "/manifests/"),
        3,
        "the first try and two retries"
    );
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After was honoured: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "bounded: {took:?}");
    for needle in [
        "gave up after 3 tries",
        "status 429",
        "ratelimit-limit: 100;w=21600",
        "ratelimit-remaining: 0;w=21600",
        "docker-ratelimit-source: 203.0.113.7",
    ] {
        assert!(shown.contains(needle), "{needle:?} in {shown}");
    }
}

#[tokio::test]
async fn retry_after_beyond_the_bound_gives_up_at_once() {
    let server = Hostile::start(|_, _| {
        answer(
            429,
            &[
                ("Retry-After", "3600"),
                ("RateLimit-Remaining", "0;w=21600"),
            ],
            "",
        )
    })
    .await;
    let dir = TempDir::new("hostile");
    let started = std::time::Instant::now();
    let err = client(&dir)
        .resolve(&reference(&server, "app:v1"))
        .await
        .unwrap_err();
    let shown = err.report();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{shown}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.count("HEAD", "/manifests/"), 1);
    assert!(shown.contains("asks to wait 3600s"), "{shown}");
    assert!(shown.contains("ratelimit-remaining: 0;w=21600"), "{shown}");
}

/// A token registry: `/token` issues `tok-N` (N counts the requests) valid
/// `lifetime` seconds by its answer; the registry refuses token N as
/// `invalid_token` when `expired(N, requests seen before)`, and pushes with
/// `pull_only` tokens as `insufficient_scope`.
async fn token_registry(
    lifetime: u64,
    expired: fn(usize, usize) -> bool,
    pull_only: bool,
) -> Hostile {
    let (body, digest) = manifest();
    Hostile::start(move |seen, before| {
        let host = seen.header("Host").unwrap_or("").to_owned();
        let tokens = before
            .iter()
            .filter(|s| s.path.starts_with("/token"))
            .count();
        if seen.path.starts_with("/token") {
            return answer(
                200,
                &[("Content-Type", "application/json")],
                format!(
                    r#"{{"token":"tok-{}","expires_in":{lifetime}}}"#,
                    tokens + 1
                ),
            );
        }
        let challenge =
            |error: &str| format!(r#"Bearer realm="http://{host}/token",service="hostile"{error}"#);
        let Some(token) = seen
            .header("Authorization")
            .and_then(|a| a.strip_prefix("Bearer tok-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return answer(401, &[("WWW-Authenticate", challenge("").as_str())], "");
        };
        if expired(token, before.len()) {
            return answer(
                401,
                &[(
                    "WWW-Authenticate",
                    challenge(r#",error="invalid_token""#).as_str(),
                )],
                "",
            );
        }
        if pull_only && seen.method == "PUT" {
            return answer(
                401,
                &[(
                    "WWW-Authenticate",
                    challenge(r#",scope="repository:app:pull,push",error="insufficient_scope""#)
                        .as_str(),
                )],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
        honest(seen, &body, &digest)
    })
    .await
}

#[tokio::test]
async fn a_token_is_kept_for_its_lifetime_and_renewed_after_it() {
    let server = token_registry(300, |_, _| false, false).await;
    let dir = TempDir::new("hostile");
    let client = client(&dir);
    let src = reference(&server, "app:src");
    for _ in 0..3 {
        client.resolve(&src).await.unwrap();
    }
    assert_eq!(
        server.count("GET", "/token"),
        1,
        "one token for one scope set"
    );

    let server = token_registry(1, |_, _| false, false).await;
    let src = reference(&server, "app:src");
    client.resolve(&src).await.unwrap();
    client.resolve(&src).await.unwrap();
    assert_eq!(server.count("GET", "/token"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.resolve(&src).await.unwrap();
    assert_eq!(
        server.count("GET", "/token"),
        2,
        "an expired token is renewed before use"
    );
    let heads: Vec<Seen> = server
        .seen()
        .into_iter()
        .filter(|s| s.method == "HEAD")
        .collect();
    assert_eq!(
        heads.last().unwrap().header("Authorization"),
        Some("Bearer tok-2")
    );
    assert_eq!(
        heads
            .iter()
            .filter(|s| s.header("Authorization") == Some("Bearer tok-1"))
            .count(),
        2,
        "no request left with the expired token"
    );
}

#[tokio::test]
async fn a_token_the_registry_calls_expired_is_renewed_once() {
    // The registry stops honouring tok-1 before its announced end (clock
    // skew, a key rotation): after the first resolve (401, token, HEAD).
    let server = token_registry(300, |n, seen| n == 1 && seen >= 3, false).await;
    let dir = TempDir::new("hostile");
    let client = client(&dir);
    let src = reference(&server, "app:src");
    client.resolve(&src).await.unwrap();
    let digest = client.resolve(&src).await.unwrap();
    assert_eq!(digest.as_str(), manifest().1);
    assert_eq!(
        requests(&server.seen()),
        [
            "HEAD /v2/app/manifests/src",
            "GET /token",
            "HEAD /v2/app/manifests/src",
            "HEAD /v2/app/manifests/src",
            "GET /token",
            "HEAD /v2/app/manifests/src",
        ]
    );

    // A registry that refuses every token: a clear refusal, no loop.
    let server = token_registry(300, |_, _| true, false).await;
    let err = client
        .resolve(&reference(&server, "app:src"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{}", err.report());
    assert_eq!(
        server.count("GET", "/token"),
        1,
        "no loop of token requests"
    );
}

#[tokio::test]
async fn a_push_refused_for_its_scope_names_the_repository_and_asks_no_second_token() {
    let server = token_registry(300, |_, _| false, true).await;
    let dir = TempDir::new("hostile");
    let err = client(&dir)
        .copy(
            &reference(&server, "app:src"),
            &reference(&server, "app:dst"),
        )
        .await
        .unwrap_err();
    let shown = err.report();
    eprintln!("pull-only push: {shown}");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{shown}");
    assert!(
        shown.contains(&format!(
            "push to repository app refused by {}",
            server.address
        )),
        "{shown}"
    );
    assert_eq!(server.count("PUT", "/manifests/"), 1);
    assert_eq!(server.count("GET", "/token"), 1);
}
