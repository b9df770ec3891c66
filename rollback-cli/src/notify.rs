//! `[notify] webhook`: POST the outcome object to a URL after deploy, undo
//! and recover.
//!
//! The body is the object `--output json` prints last, redacted like every
//! output. Each attempt has a time limit; a failed attempt (no answer, a
//! 5xx or 429) is retried once. Only the URL's `scheme://host:port` is ever
//! shown: its path or user part may hold a token.

use std::time::Duration;

use reqwest::StatusCode;

use crate::config::NotifyConfig;

/// Pause before the one retry.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What posting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notified {
    /// The webhook answered 2xx (or 3xx) with this status.
    Posted(StatusCode),
    /// Both attempts failed; the reason names what the last one saw.
    Failed(String),
}

/// POST `body` (JSON text) to the webhook, retrying once.
pub async fn post(config: &NotifyConfig, body: String) -> Notified {
    let client = match reqwest::Client::builder().timeout(config.timeout).build() {
        Ok(client) => client,
        Err(e) => {
            return Notified::Failed(format!("cannot build an HTTP client: {}", e.without_url()))
        }
    };
    let mut last = String::new();
    for attempt in 1..=2 {
        if attempt == 2 {
            tokio::time::sleep(RETRY_DELAY).await;
        }
        let sent = client
            .post(config.webhook.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::USER_AGENT,
                concat!("rollback/", env!("CARGO_PKG_VERSION")),
            )
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                if !status.is_client_error() && !status.is_server_error() {
                    return Notified::Posted(status);
                }
                last = format!("answered {status}");
                // Another try cannot fix a refused request.
                if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                    break;
                }
            }
            Err(e) if e.is_timeout() => {
                last = format!(
                    "no answer within {}",
                    humantime::format_duration(config.timeout)
                );
            }
            // Without the URL: reqwest's messages quote it, credentials and all.
            Err(e) => last = describe(&e.without_url()),
        }
    }
    Notified::Failed(last)
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollback_core::Secret;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server on 127.0.0.1 that answers the given statuses in turn and
    /// keeps each request it read.
    async fn server(statuses: Vec<u16>) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        tokio::spawn(async move {
            for status in statuses {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length || n == 0 {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                keep.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).into_owned());
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (port, seen)
    }

    fn config(url: String) -> NotifyConfig {
        NotifyConfig {
            webhook: Secret::new(url),
            webhook_origin: "http://127.0.0.1".into(),
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn posts_the_body_as_json() {
        let (port, seen) = server(vec![204]).await;
        let result = post(
            &config(format!("http://127.0.0.1:{port}/hook?t=1")),
            "{\"outcome\":\"deployed\"}".into(),
        )
        .await;
        assert_eq!(result, Notified::Posted(StatusCode::NO_CONTENT));
        let requests = seen.lock().unwrap();
        assert!(
            requests[0].starts_with("POST /hook?t=1 HTTP/1.1"),
            "{}",
            requests[0]
        );
        assert!(requests[0]
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        assert!(requests[0].ends_with("{\"outcome\":\"deployed\"}"));
    }

    #[tokio::test]
    async fn a_server_error_is_retried_once() {
        let (port, seen) = server(vec![503, 200]).await;
        let result = post(&config(format!("http://127.0.0.1:{port}/")), "{}".into()).await;
        assert_eq!(result, Notified::Posted(StatusCode::OK));
        assert_eq!(seen.lock().unwrap().len(), 2);

        let (port, seen) = server(vec![500, 502]).await;
        let result = post(&config(format!("http://127.0.0.1:{port}/")), "{}".into()).await;
        assert_eq!(result, Notified::Failed("answered 502 Bad Gateway".into()));
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_refused_request_is_not_retried() {
        let (port, seen) = server(vec![404, 200]).await;
        let result = post(&config(format!("http://127.0.0.1:{port}/")), "{}".into()).await;
        assert_eq!(result, Notified::Failed("answered 404 Not Found".into()));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn failures_never_quote_the_url() {
        // Nothing listens on the port of a listener just dropped.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://user:hunter2-secret@127.0.0.1:{port}/t0ken-path");
        let Notified::Failed(why) = post(&config(url), "{}".into()).await else {
            panic!("nothing listens there");
        };
        assert!(!why.contains("hunter2") && !why.contains("t0ken"), "{why}");
        assert!(!why.is_empty());
    }
}
