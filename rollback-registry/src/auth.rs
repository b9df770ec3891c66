//! Credentials from Docker's `config.json` and `WWW-Authenticate` challenges.

use std::fmt;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};
use rollback_core::{Error, Result, Secret};

/// A credential found for one registry host.
#[derive(Clone)]
pub(crate) enum Credential {
    /// `auths.<host>.auth`, `username`/`password`, or a helper's answer.
    UsernamePassword(String, Secret),
    /// A refresh token (`identitytoken`, or a helper answering `<token>`).
    IdentityToken(Secret),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::UsernamePassword(user, _) => write!(f, "UsernamePassword({user}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// The key Docker files credentials under for `host` (the resolved registry host).
pub(crate) fn credential_key(host: &str) -> String {
    if host == "index.docker.io" || host == "docker.io" || host == "registry-1.docker.io" {
        "https://index.docker.io/v1/".to_owned()
    } else {
        host.to_owned()
    }
}

/// Look `host` up in `config_file`, running a credential helper when the
/// file names one. `Ok(None)` when the file or an entry for the host is
/// missing. Blocking: call it from `spawn_blocking`.
pub(crate) fn lookup(config_file: &Path, host: &str) -> Result<Option<Credential>> {
    let file = match std::fs::File::open(config_file) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::unauthorized(format!(
                "cannot read docker config {}",
                config_file.display()
            ))
            .with_source(e))
        }
    };
    let key = credential_key(host);
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), &key) {
        Ok(DockerCredential::UsernamePassword(user, password)) => Ok(Some(
            Credential::UsernamePassword(user, Secret::new(password)),
        )),
        Ok(DockerCredential::IdentityToken(token)) => {
            Ok(Some(Credential::IdentityToken(Secret::new(token))))
        }
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
        // The helper's own output may hold secrets: never pass it on.
        Err(CredentialRetrievalError::HelperFailure { helper, .. }) => {
            Err(Error::unauthorized(format!(
                "credential helper {helper} named in {} failed for {host}",
                config_file.display()
            )))
        }
        Err(CredentialRetrievalError::HelperCommunicationError) => {
            Err(Error::unauthorized(format!(
                "cannot run the credential helper named in {} for {host}",
                config_file.display()
            )))
        }
        Err(CredentialRetrievalError::MalformedHelperResponse) => {
            Err(Error::unauthorized(format!(
                "the credential helper named in {} gave a malformed answer for {host}",
                config_file.display()
            )))
        }
        Err(CredentialRetrievalError::ConfigReadError) => Err(Error::invalid_input(format!(
            "cannot parse docker config {}",
            config_file.display()
        ))),
        Err(CredentialRetrievalError::CredentialDecodingError) => {
            Err(Error::invalid_input(format!(
                "the auth entry for {host} in {} is not base64 of user:password",
                config_file.display()
            )))
        }
        Err(CredentialRetrievalError::CredentialMismatchError) => {
            Err(Error::invalid_input(format!(
                "the auth and username/password entries for {host} in {} disagree",
                config_file.display()
            )))
        }
        Err(CredentialRetrievalError::ConfigNotFound) => Ok(None),
    }
}

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
    fn docker_hub_credentials_use_the_legacy_key() {
        assert_eq!(
            credential_key("index.docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(credential_key("127.0.0.1:15001"), "127.0.0.1:15001");
    }

    #[test]
    fn reads_auth_entry_and_reports_missing_hosts() {
        let dir =
            std::env::temp_dir().join(format!("rollback-registry-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        // base64("alice:s3cret")
        std::fs::write(
            &file,
            r#"{"auths":{"reg.example:5000":{"auth":"YWxpY2U6czNjcmV0"}}}"#,
        )
        .unwrap();
        match lookup(&file, "reg.example:5000").unwrap() {
            Some(Credential::UsernamePassword(user, password)) => {
                assert_eq!(user, "alice");
                assert_eq!(password.expose(), "s3cret");
            }
            other => panic!("expected a username and password, got {other:?}"),
        }
        assert!(lookup(&file, "other.example").unwrap().is_none());
        assert!(lookup(&dir.join("absent.json"), "reg.example:5000")
            .unwrap()
            .is_none());
        let shown = format!("{:?}", lookup(&file, "reg.example:5000").unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
