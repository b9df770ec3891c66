use std::time::Duration;

use async_trait::async_trait;
use reqwest::{redirect, Client, StatusCode, Url};

use super::root_cause;
use crate::error::{Error, Result};
use crate::traits::{HealthProbe, ProbeResult};
use crate::types::ContainerId;

/// The largest response body a probe reads; a bigger one is refused.
pub const MAX_BODY: usize = 1024 * 1024;
/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
struct JsonExpectation {
    pointer: String,
    expected: String,
}

/// Healthy when a GET answers the expected status (any 2xx by default) and,
/// optionally, a JSON pointer into the body equals an expected string.
///
/// Bodies are read at most [`MAX_BODY`] bytes; at most 3 redirects are
/// followed; proxies from the environment are ignored (the probe talks to
/// the host directly).
#[derive(Debug, Clone)]
pub struct HttpProbe {
    url: Url,
    client: Client,
    expect_status: Option<StatusCode>,
    json: Option<JsonExpectation>,
}

impl HttpProbe {
    /// A probe of `url` (scheme `http` or `https`).
    pub fn new(url: &str) -> Result<Self> {
        let parsed = Url::parse(url)
            .map_err(|e| Error::invalid_input(format!("invalid health url {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_input(format!(
                "invalid health url {url:?}: scheme must be http or https"
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid_input(format!(
                "invalid health url {url:?}: no host"
            )));
        }
        let client = Client::builder()
            .redirect(redirect::Policy::limited(MAX_REDIRECTS))
            .no_proxy()
            .build()
            .map_err(|e| Error::other("cannot build the http client").with_source(e))?;
        Ok(Self {
            url: parsed,
            client,
            expect_status: None,
            json: None,
        })
    }

    /// Require exactly this status instead of any 2xx.
    pub fn expect_status(mut self, status: u16) -> Result<Self> {
        let status = StatusCode::from_u16(status)
            .map_err(|_| Error::invalid_input(format!("invalid expected status {status}")))?;
        self.expect_status = Some(status);
        Ok(self)
    }

    /// Require the JSON value at `pointer` (RFC 6901, `/status`) to equal
    /// `expected` (strings compare as is, other values by their JSON text).
    pub fn expect_json(mut self, pointer: &str, expected: &str) -> Result<Self> {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(Error::invalid_input(format!(
                "invalid json pointer {pointer:?}: must start with /"
            )));
        }
        self.json = Some(JsonExpectation {
            pointer: pointer.to_owned(),
            expected: expected.to_owned(),
        });
        Ok(self)
    }

    /// The probed URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    async fn attempt(&self) -> ProbeResult {
        let mut response = match self.client.get(self.url.clone()).send().await {
            Ok(r) => r,
            Err(e) if e.is_redirect() => {
                return ProbeResult::Unhealthy(format!("more than {MAX_REDIRECTS} redirects"))
            }
            Err(e) => return ProbeResult::Unhealthy(root_cause(&e)),
        };
        let status = response.status();
        let status_ok = match self.expect_status {
            Some(expected) => status == expected,
            None => status.is_success(),
        };
        if !status_ok {
            return ProbeResult::Unhealthy(status.to_string());
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return ProbeResult::Unhealthy(format!("body larger than {MAX_BODY} bytes"));
        }
        // Read in chunks and stop at the limit: a huge or endless body costs
        // at most MAX_BODY bytes.
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return ProbeResult::Unhealthy(format!(
                            "body larger than {MAX_BODY} bytes"
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return ProbeResult::Unhealthy(format!(
                        "reading the body failed: {}",
                        root_cause(&e)
                    ))
                }
            }
        }
        let Some(json) = &self.json else {
            return ProbeResult::Healthy(status.to_string());
        };
        super::judge_json(&status.to_string(), &body, &json.pointer, &json.expected)
    }
}

#[async_trait]
impl HealthProbe for HttpProbe {
    async fn check(&self, _container: &ContainerId, timeout: Duration) -> ProbeResult {
        tokio::time::timeout(timeout, self.attempt())
            .await
            .unwrap_or_else(|_| {
                ProbeResult::Unhealthy(format!(
                    "no answer within {}",
                    humantime::format_duration(timeout)
                ))
            })
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::*;

    const T: Duration = Duration::from_secs(3);

    #[derive(Clone)]
    enum Reply {
        Raw(&'static str, String),
        /// 200 with a chunked body of `n` bytes; counts bytes the client took.
        Huge(usize, Arc<AtomicUsize>),
        /// Headers and half a body, then nothing.
        Stall,
        Redirect,
    }

    async fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&byte[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A server on 127.0.0.1:0 answering every connection with `reply`.
    async fn serve(reply: Reply) -> String {
        let socket = TcpSocket::new_v4().unwrap();
        // A small send buffer so an unread body stays on this side.
        socket.set_send_buffer_size(64 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = socket.listen(16).unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let reply = reply.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut stream).await;
                    match reply {
                        Reply::Raw(status, body) => {
                            let head = format!(
                                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            );
                            let _ = stream.write_all(head.as_bytes()).await;
                            let _ = stream.write_all(body.as_bytes()).await;
                        }
                        Reply::Huge(total, written) => {
                            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                            let _ = stream.write_all(head.as_bytes()).await;
                            let chunk = vec![b'x'; 64 * 1024];
                            let mut sent = 0;
                            while sent < total {
                                let frame = format!("{:x}\r\n", chunk.len());
                                if stream.write_all(frame.as_bytes()).await.is_err()
                                    || stream.write_all(&chunk).await.is_err()
                                    || stream.write_all(b"\r\n").await.is_err()
                                {
                                    break;
                                }
                                sent += chunk.len();
                                written.store(sent, Ordering::SeqCst);
                            }
                            let _ = stream.write_all(b"0\r\n\r\n").await;
                        }
                        Reply::Stall => {
                            let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"status\":";
                            let _ = stream.write_all(head.as_bytes()).await;
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        Reply::Redirect => {
                            // /r/N redirects to /r/N+1; /r/1 is where we start.
                            let path = request.split(' ').nth(1).unwrap_or("/r/1").to_owned();
                            let n: usize = path.trim_start_matches("/r/").parse().unwrap_or(1);
                            let head = format!(
                                "HTTP/1.1 302 Found\r\nlocation: /r/{}\r\ncontent-length: 0\r\n\r\n",
                                n + 1
                            );
                            let _ = stream.write_all(head.as_bytes()).await;
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        format!("http://{address}")
    }

    fn id() -> ContainerId {
        ContainerId("ignored".into())
    }

    async fn check_json(reply: Reply) -> ProbeResult {
        let url = serve(reply).await;
        let probe = HttpProbe::new(&format!("{url}/health"))
            .unwrap()
            .expect_json("/status", "UP")
            .unwrap();
        probe.check(&id(), T).await
    }

    #[tokio::test]
    async fn up_is_healthy() {
        let result = check_json(Reply::Raw(
            "200 OK",
            r#"{"status":"UP","version":"v1"}"#.into(),
        ))
        .await;
        assert_eq!(
            result,
            ProbeResult::Healthy("200 OK, status is \"UP\"".into())
        );
    }

    #[tokio::test]
    async fn down_is_unhealthy() {
        let result = check_json(Reply::Raw("200 OK", r#"{"status":"DOWN"}"#.into())).await;
        assert_eq!(result, ProbeResult::Unhealthy("status is \"DOWN\"".into()));
    }

    #[tokio::test]
    async fn a_503_is_unhealthy() {
        let result = check_json(Reply::Raw(
            "503 Service Unavailable",
            r#"{"status":"UP"}"#.into(),
        ))
        .await;
        assert_eq!(
            result,
            ProbeResult::Unhealthy("503 Service Unavailable".into())
        );
    }

    #[tokio::test]
    async fn expected_status_replaces_any_2xx() {
        let url = serve(Reply::Raw("204 No Content", String::new())).await;
        let any = HttpProbe::new(&url).unwrap();
        assert!(any.check(&id(), T).await.is_healthy());
        let strict = HttpProbe::new(&url).unwrap().expect_status(200).unwrap();
        assert_eq!(
            strict.check(&id(), T).await,
            ProbeResult::Unhealthy("204 No Content".into())
        );
    }

    #[tokio::test]
    async fn invalid_json_is_unhealthy() {
        let result = check_json(Reply::Raw("200 OK", "<html>UP</html>".into())).await;
        assert!(!result.is_healthy());
        assert!(
            result.detail().starts_with("body is not JSON"),
            "{result:?}"
        );
        let result = check_json(Reply::Raw("200 OK", r#"{"health":"UP"}"#.into())).await;
        assert_eq!(
            result,
            ProbeResult::Unhealthy("no /status in the body".into())
        );
    }

    #[tokio::test]
    async fn a_10_mib_body_is_refused_without_reading_it_all() {
        let total = 10 * 1024 * 1024;
        let written = Arc::new(AtomicUsize::new(0));
        let result = check_json(Reply::Huge(total, written.clone())).await;
        assert_eq!(
            result,
            ProbeResult::Unhealthy(format!("body larger than {MAX_BODY} bytes"))
        );
        // Let the server notice the closed connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = written.load(Ordering::SeqCst);
        assert!(sent < total, "the server could send all {sent} bytes");
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let url = serve(Reply::Stall).await;
        let probe = HttpProbe::new(&url)
            .unwrap()
            .expect_json("/status", "UP")
            .unwrap();
        let began = std::time::Instant::now();
        let result = probe.check(&id(), Duration::from_millis(500)).await;
        assert_eq!(
            result,
            ProbeResult::Unhealthy("no answer within 500ms".into())
        );
        assert!(began.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn connection_refused_is_unhealthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let probe = HttpProbe::new(&format!("http://{address}/health")).unwrap();
        let result = probe.check(&id(), T).await;
        assert!(!result.is_healthy());
        assert!(
            result.detail().to_lowercase().contains("refused"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn at_most_three_redirects_are_followed() {
        let url = serve(Reply::Redirect).await;
        let probe = HttpProbe::new(&format!("{url}/r/1")).unwrap();
        assert_eq!(
            probe.check(&id(), T).await,
            ProbeResult::Unhealthy("more than 3 redirects".into())
        );
    }

    #[test]
    fn constructors_validate() {
        for bad in [
            "ftp://x/health",
            "not a url",
            "file:///etc/passwd",
            "http://",
        ] {
            let err = HttpProbe::new(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad}");
        }
        let probe = HttpProbe::new("https://example.invalid/actuator/health").unwrap();
        assert_eq!(probe.describe(), "https://example.invalid/actuator/health");
        assert!(probe.clone().expect_json("status", "UP").is_err());
        assert!(probe.clone().expect_status(42).is_err());
    }
}
