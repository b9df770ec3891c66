//! The error type shared by every trait of the crate.

use std::fmt;
use std::sync::Arc;

/// What went wrong, as far as retry and rollback decisions care.
///
/// Adapters classify their failures into these kinds (from HTTP status codes,
/// engine error codes, I/O errors); the engine branches on the kind, never on
/// message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The image, tag, container or lock does not exist.
    NotFound,
    /// The thing exists already or is held by someone else (a name, a lock).
    Conflict,
    /// Credentials are missing or refused.
    Unauthorized,
    /// The engine or registry cannot be reached or answered 5xx/429; retrying may help.
    Unavailable,
    /// A step ran past its time limit.
    Timeout,
    /// The request itself is wrong (bad reference, digest mismatch, invalid spec).
    InvalidInput,
    /// A release failed its health check, or its container stopped.
    Unhealthy,
    /// The deploy was cancelled, or a host was sent back because another failed.
    Cancelled,
    /// The engine met a step it does not expect: a bug in rollback, stopped
    /// safely (the host is treated as failed).
    Internal,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// A short lowercase name, as used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unhealthy => "unhealthy",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
            ErrorKind::Other => "other",
        }
    }

    /// Whether repeating the same request later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a registry, runtime or probe, with its [`ErrorKind`].
///
/// Messages are lowercase and do not repeat their source; they never contain
/// secret values. Cloning shares the source. Two errors are equal when kind
/// and message are; serialized, an error is its kind and its [report](Error::report).
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for Error {}

impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Error", 2)?;
        s.serialize_field("kind", &self.kind)?;
        s.serialize_field("message", &self.report())?;
        s.end()
    }
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Shorthand for [`ErrorKind::Unauthorized`].
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    /// Shorthand for [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Shorthand for [`ErrorKind::Timeout`].
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Unhealthy`].
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unhealthy, message)
    }

    /// Shorthand for [`ErrorKind::Cancelled`], with the message `cancelled`.
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "cancelled")
    }

    /// Shorthand for [`ErrorKind::Other`].
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// The kind to branch on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message followed by every source in the chain, joined by `: `.
    pub fn report(&self) -> String {
        let mut out = self.message.clone();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            next = cause.source();
        }
        out
    }

    /// Prefix the message with context (a host, a step), keeping kind and source.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_joins_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Error::unavailable("cannot reach engine at unix:///x").with_source(io);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(
            err.report(),
            "cannot reach engine at unix:///x: connection refused"
        );
        assert!(err.kind().is_retryable());
        assert!(!ErrorKind::NotFound.is_retryable());
    }
}
