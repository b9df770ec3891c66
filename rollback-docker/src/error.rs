//! Classification of engine failures into the core's error kinds.

use bollard::errors::Error as EngineError;
use rollback_core::{Error, ErrorKind};

/// Turn a bollard error into a core error whose message names `what` was
/// attempted and the engine `url`.
///
/// Server errors keep the engine's message (it never contains request
/// bodies, so no secret value); transport errors are attached as source.
pub(crate) fn classify(url: &str, what: &str, err: EngineError) -> Error {
    match err {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let kind = kind_for_status(status_code);
            Error::new(kind, format!("{what} on {url}: {}", message.trim()))
        }
        EngineError::DockerStreamError { error } => Error::new(
            kind_for_text(&error),
            format!("{what} on {url}: {}", error.trim()),
        ),
        EngineError::RequestTimeoutError => Error::timeout(format!(
            "{what} on {url}: the engine did not answer in time"
        )),
        err @ (EngineError::IOError { .. }
        | EngineError::HyperResponseError { .. }
        | EngineError::HyperLegacyError { .. }
        | EngineError::SocketNotFoundError(_)) => {
            Error::unavailable(format!("{what}: cannot reach docker engine at {url}"))
                .with_source(err)
        }
        err @ (EngineError::CertPathError { .. }
        | EngineError::CertParseError { .. }
        | EngineError::CertMultipleKeys { .. }
        | EngineError::UnsupportedURISchemeError { .. }
        | EngineError::NoHomePathError) => Error::invalid_input(format!("{what} on {url}: {err}")),
        other => Error::other(format!("{what} on {url}: {other}")),
    }
}

/// The kind of an engine answer by its HTTP status.
pub(crate) fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        401 | 403 => ErrorKind::Unauthorized,
        400 => ErrorKind::InvalidInput,
        408 | 504 => ErrorKind::Timeout,
        429 | 500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    }
}

/// The kind of a registry failure the engine reports only as text (pull
/// errors arrive as 500 or mid-stream).
pub(crate) fn kind_for_text(text: &str) -> ErrorKind {
    let text = text.to_ascii_lowercase();
    if [
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
        "denied",
        "incorrect username or password",
    ]
    .iter()
    .any(|needle| text.contains(needle))
    {
        ErrorKind::Unauthorized
    } else if ["not found", "manifest unknown", "no such image"]
        .iter()
        .any(|needle| text.contains(needle))
    {
        ErrorKind::NotFound
    } else if text.contains("timeout") || text.contains("deadline exceeded") {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    }
}

/// Classify a pull failure: the engine answers 500 for registry
/// authentication failures, so the text decides among server errors.
pub(crate) fn classify_pull(url: &str, what: &str, err: EngineError) -> Error {
    match err {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } if status_code >= 500 => Error::new(
            kind_for_text(&message),
            format!("{what} on {url}: {}", message.trim()),
        ),
        other => classify(url, what, other),
    }
}

/// Replace every secret value in `text` by `***`.
pub(crate) fn redact(mut text: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> EngineError {
        EngineError::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn status_codes_map_to_kinds_and_name_the_host() {
        let url = "unix:///run/docker.sock";
        for (status, kind) in [
            (404, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
            (401, ErrorKind::Unauthorized),
            (403, ErrorKind::Unauthorized),
            (400, ErrorKind::InvalidInput),
            (500, ErrorKind::Unavailable),
            (503, ErrorKind::Unavailable),
        ] {
            let err = classify(url, "start container x", server(status, "boom"));
            assert_eq!(err.kind(), kind, "{status}");
            assert_eq!(
                err.message(),
                "start container x on unix:///run/docker.sock: boom"
            );
        }
        let err = classify(url, "inspect", EngineError::RequestTimeoutError);
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.message().contains(url));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = classify(url, "ping", EngineError::IOError { err: io });
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.message().contains(url));
        assert!(err.report().contains("refused"));
    }

    #[test]
    fn pull_failures_are_classified_by_text() {
        let url = "tcp://h:2375";
        let err = classify_pull(
            url,
            "pull r/a@sha256:x",
            server(
                500,
                "Head \"http://r/v2/a/manifests/x\": no basic auth credentials",
            ),
        );
        assert_eq!(err.kind(), ErrorKind::Unauthorized);
        let err = classify_pull(url, "pull", server(404, "manifest unknown"));
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = classify_pull(
            url,
            "pull",
            EngineError::DockerStreamError {
                error: "unauthorized: authentication required".into(),
            },
        );
        assert_eq!(err.kind(), ErrorKind::Unauthorized);
        let err = classify_pull(url, "pull", server(500, "connection reset by peer"));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn redact_hides_every_secret() {
        let text = "invalid env FOO=hunter2 and BAR=hunter2x".to_owned();
        let out = redact(text, &["hunter2", ""]);
        assert!(!out.contains("hunter2"));
        assert_eq!(out, "invalid env FOO=*** and BAR=***x");
    }
}
