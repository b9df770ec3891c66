//! `WWW-Authenticate` challenges and the wording of refusals.

use std::path::PathBuf;

use rollback_core::Error;

/// Where credentials come from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct CredentialSource {
    pub(crate) config_file: PathBuf,
}

impl CredentialSource {
    pub(crate) fn missing(&self, host: &str) -> Error {
        Error::unauthorized(format!(
            "no credentials for {host} in {} and anonymous access was refused",
            self.config_file.display()
        ))
    }

    pub(crate) fn refused(&self, host: &str) -> Error {
        Error::unauthorized(format!(
            "credentials from {} were refused by {host}",
            self.config_file.display()
        ))
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// Parse `Basic realm="x"` or `Bearer realm="..",service="..",scope=".."`.
    pub(crate) fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
        })
    }
}

/// The `error` parameter of a Bearer challenge (`insufficient_scope`,
/// `invalid_token`), if any.
pub(crate) fn challenge_error(header: &str) -> Option<String> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    parse_params(rest)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("error"))
        .map(|(_, v)| v)
}

/// `k1="v, with comma",k2=token` into pairs.
fn parse_params(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
    }

    #[test]
    fn parses_basic_and_rejects_unknown_schemes() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="rollback-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None);
    }

    #[test]
    fn reads_the_error_of_a_bearer_challenge() {
        assert_eq!(
            challenge_error(
                r#"Bearer realm="http://i/token",service="r",scope="repository:a:pull,push",error="insufficient_scope""#
            )
            .as_deref(),
            Some("insufficient_scope")
        );
        assert_eq!(challenge_error(r#"Bearer realm="http://i/token""#), None);
        assert_eq!(challenge_error(r#"Basic realm="x""#), None);
    }
}
