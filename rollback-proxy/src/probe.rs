//! [`DirectProbe`]: the HTTP health check of a new container, run from
//! inside the proxy container through the engine.

use std::time::Duration;

use async_trait::async_trait;
use rollback_core::probe::judge_json;
use rollback_core::{ContainerId, Error, HealthProbe, ProbeResult, Result};

use crate::container::ProxyContainer;

/// The largest response body judged; a bigger one is unhealthy.
pub const MAX_BODY: usize = 1024 * 1024;

/// Healthy when `GET http://<container>:<port><path>` answers the expected
/// status (any 2xx by default) and, optionally, a JSON pointer into the
/// body equals an expected string, as the core's HTTP probe judges.
///
/// The request is sent by `wget` in the proxy container to the probed
/// container's address on the shared network: straight to the new
/// release, never through the proxy's routing, and through the host's
/// engine only, so it works for a remote host whose app port is not
/// reachable from where rollback runs. Redirects are followed by wget.
#[derive(Debug, Clone)]
pub struct DirectProbe {
    proxy: ProxyContainer,
    port: u16,
    path: String,
    expect_status: Option<u16>,
    json: Option<(String, String)>,
}

impl DirectProbe {
    /// A probe of `path` on `port` of the probed container.
    pub fn new(proxy: ProxyContainer, port: u16, path: &str) -> Result<Self> {
        if !path.starts_with('/') {
            return Err(Error::invalid_input(format!(
                "invalid health path {path:?}: must start with /"
            )));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid_input(format!(
                "invalid health path {path:?}: no spaces or control characters"
            )));
        }
        Ok(Self {
            proxy,
            port,
            path: path.to_owned(),
            expect_status: None,
            json: None,
        })
    }

    /// Require exactly this status instead of any 2xx.
    pub fn expect_status(mut self, status: u16) -> Result<Self> {
        if !(100..=599).contains(&status) {
            return Err(Error::invalid_input(format!(
                "invalid expected status {status}"
            )));
        }
        self.expect_status = Some(status);
        Ok(self)
    }

    /// Require the JSON value at `pointer` (`/status`) to equal `expected`.
    pub fn expect_json(mut self, pointer: &str, expected: &str) -> Result<Self> {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(Error::invalid_input(format!(
                "invalid json pointer {pointer:?}: must start with /"
            )));
        }
        self.json = Some((pointer.to_owned(), expected.to_owned()));
        Ok(self)
    }

    async fn attempt(&self, container: &ContainerId, timeout: Duration) -> ProbeResult {
        let runtime = self.proxy.runtime();
        let address = match runtime
            .network_address(container, self.proxy.network())
            .await
        {
            Ok(Some(address)) => address,
            Ok(None) => {
                return ProbeResult::Unhealthy(format!(
                    "not running on network {}",
                    self.proxy.network()
                ))
            }
            Err(e) => return ProbeResult::Unhealthy(e.message().to_owned()),
        };
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address
        };
        let url = format!("http://{host}:{}{}", self.port, self.path);
        let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
        // One stream for headers (stderr) and body (stdout), in the order written.
        let cmd: Vec<String> = [
            "sh",
            "-c",
            "timeout -s KILL \"$1\" wget -S -q -O - \"$2\" 2>&1",
            "sh",
            &secs.to_string(),
            &url,
        ]
        .map(str::to_owned)
        .to_vec();
        match self
            .proxy
            .exec(&cmd, timeout + Duration::from_secs(5))
            .await
        {
            Ok(out) => self.judge(&parse_wget(&out.output, out.exit_code, timeout)),
            Err(e) => ProbeResult::Unhealthy(format!("cannot probe: {}", e.message())),
        }
    }

    fn judge(&self, answer: &std::result::Result<Answer, String>) -> ProbeResult {
        let answer = match answer {
            Ok(answer) => answer,
            Err(why) => return ProbeResult::Unhealthy(why.clone()),
        };
        let status_ok = match self.expect_status {
            Some(expected) => answer.status == expected,
            None => (200..300).contains(&answer.status),
        };
        if !status_ok {
            return ProbeResult::Unhealthy(answer.status_line.clone());
        }
        if answer.body.len() > MAX_BODY {
            return ProbeResult::Unhealthy(format!("body larger than {MAX_BODY} bytes"));
        }
        let Some((pointer, expected)) = &self.json else {
            return ProbeResult::Healthy(answer.status_line.clone());
        };
        judge_json(
            &answer.status_line,
            answer.body.as_bytes(),
            pointer,
            expected,
        )
    }
}

#[async_trait]
impl HealthProbe for DirectProbe {
    async fn check(&self, container: &ContainerId, timeout: Duration) -> ProbeResult {
        tokio::time::timeout(
            timeout + Duration::from_secs(5),
            self.attempt(container, timeout),
        )
        .await
        .unwrap_or_else(|_| {
            ProbeResult::Unhealthy(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
    }

    fn describe(&self) -> String {
        format!(
            "http://<new container>:{}{} from {}",
            self.port,
            self.path,
            self.proxy.name()
        )
    }
}

/// What wget saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// `200 OK`
    status_line: String,
    body: String,
}

/// Reads `wget -S -q -O - URL 2>&1`: response headers indented by two
/// spaces (one block per redirect), then the body; on an error status the
/// body is not printed and wget says `server returned error: HTTP/1.1 503 ...`.
fn parse_wget(
    output: &str,
    exit_code: i64,
    timeout: Duration,
) -> std::result::Result<Answer, String> {
    let status_of = |line: &str| -> Option<(u16, String)> {
        let rest = line.trim().strip_prefix("HTTP/")?;
        let (_, status_line) = rest.split_once(' ')?;
        let code = status_line.get(..3)?.parse().ok()?;
        Some((code, status_line.trim().to_owned()))
    };
    if exit_code != 0 {
        if let Some(line) = output
            .lines()
            .find(|l| l.contains("server returned error:"))
        {
            let after = line.split("server returned error:").nth(1).unwrap_or("");
            if let Some((status, status_line)) = status_of(after) {
                return Ok(Answer {
                    status,
                    status_line,
                    body: String::new(),
                });
            }
        }
        // Killed by `timeout`.
        if exit_code == 137 || exit_code == 143 {
            return Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ));
        }
        let why = output
            .lines()
            .rev()
            .find(|l| l.starts_with("wget: "))
            .map(|l| l.trim_start_matches("wget: ").trim().to_owned())
            .unwrap_or_else(|| format!("wget exited with {exit_code}"));
        return Err(why);
    }
    // The last header block: from the last status line to the first blank line after it.
    let mut status = None;
    let mut body_start = 0;
    let mut offset = 0;
    let mut in_headers = false;
    for line in output.split_inclusive('\n') {
        let next = offset + line.len();
        if line.starts_with("  ") && status_of(line).is_some() {
            status = status_of(line);
            in_headers = true;
        } else if in_headers && line.trim().is_empty() {
            in_headers = false;
            body_start = next;
        }
        offset = next;
    }
    let (status, status_line) = status.ok_or_else(|| "no HTTP answer".to_owned())?;
    Ok(Answer {
        status,
        status_line,
        body: output[body_start..].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn reads_status_and_body() {
        let out = "  HTTP/1.1 200 OK\n  Content-Type: application/json\n  Content-Length: 16\n  \n{\"status\":\"UP\"}\n";
        let answer = parse_wget(out, 0, T).unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.status_line, "200 OK");
        assert_eq!(answer.body, "{\"status\":\"UP\"}\n");
    }

    #[test]
    fn a_redirect_is_judged_by_its_last_answer() {
        let out = "  HTTP/1.1 302 Found\n  Location: /b\n  \n  HTTP/1.1 200 OK\n  \nbody";
        let answer = parse_wget(out, 0, T).unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "body"));
    }

    #[test]
    fn error_statuses_refusals_and_timeouts() {
        let out = "  HTTP/1.1 503 Service Unavailable\nwget: server returned error: HTTP/1.1 503 Service Unavailable\n";
        let answer = parse_wget(out, 1, T).unwrap();
        assert_eq!(answer.status, 503);
        assert_eq!(answer.status_line, "503 Service Unavailable");
        assert_eq!(
            parse_wget(
                "wget: can't connect to remote host (172.18.0.3): Connection refused\n",
                1,
                T
            ),
            Err("can't connect to remote host (172.18.0.3): Connection refused".into())
        );
        assert_eq!(parse_wget("", 137, T), Err("no answer within 2s".into()));
        assert_eq!(parse_wget("", 0, T), Err("no HTTP answer".into()));
    }
}
