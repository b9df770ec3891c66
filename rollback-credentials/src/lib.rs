//! Registry credentials from Docker's `config.json`, as `docker` finds them:
//! `auths` entries (`auth`, `username`/`password`, `identitytoken`),
//! `credHelpers` per registry and the `credsStore` for the rest.
//!
//! The one lookup of the workspace: `rollback-registry` uses it for its
//! requests, and `rollback-docker` for the credentials it hands an engine
//! to pull with. It is a crate of its own so that neither adapter depends on
//! the other.

use std::fmt;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};
use rollback_core::{Error, Result, Secret};

/// The key Docker files Docker Hub's credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A credential found for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `auths.<host>.auth`, `username`/`password`, or a helper's answer.
    UsernamePassword {
        /// The user name.
        username: String,
        /// The password or access token.
        password: Secret,
    },
    /// A refresh token (`identitytoken`, or a helper answering `<token>` as user).
    IdentityToken(Secret),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::UsernamePassword { username, .. } => {
                write!(f, "UsernamePassword({username}, ***)")
            }
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// The key Docker files credentials under for `registry` (a host as written
/// in a reference, or the host spoken to): Docker Hub's names all map to
/// [`DOCKER_HUB_KEY`].
pub fn credential_key(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY,
        other => other,
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_config_file() -> PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .unwrap_or_else(|| PathBuf::from(".docker"))
        .join("config.json")
}

/// `path` itself, or `path/config.json` when `path` is a folder.
pub fn config_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_owned()
    }
}

/// Look `registry` up in `config_file`, running a credential helper when
/// the file names one. `Ok(None)` when the file or an entry for the
/// registry is missing (the caller goes anonymous).
///
/// Errors: [`ErrorKind::InvalidInput`](rollback_core::ErrorKind::InvalidInput)
/// for a file that cannot be read or parsed, or entries that make no sense;
/// [`ErrorKind::Unauthorized`](rollback_core::ErrorKind::Unauthorized) for a
/// helper that fails, cannot run or answers nonsense. A helper's output is
/// never repeated: it may hold the secret.
///
/// Blocking: reads a file and may run a process.
pub fn lookup(config_file: &Path, registry: &str) -> Result<Option<Credential>> {
    let shown = config_file.display();
    let file = match std::fs::File::open(config_file) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(
                Error::invalid_input(format!("cannot read docker config {shown}")).with_source(e),
            )
        }
    };
    let key = credential_key(registry);
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), key) {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credential::UsernamePassword {
                username,
                password: Secret::new(password),
            }))
        }
        Ok(DockerCredential::IdentityToken(token)) => {
            Ok(Some(Credential::IdentityToken(Secret::new(token))))
        }
        Err(CredentialRetrievalError::NoCredentialConfigured)
        | Err(CredentialRetrievalError::ConfigNotFound) => Ok(None),
        Err(CredentialRetrievalError::HelperFailure { helper, .. }) => Err(Error::unauthorized(
            format!("credential helper {helper} named in {shown} failed for {registry}"),
        )),
        Err(CredentialRetrievalError::HelperCommunicationError) => Err(Error::unauthorized(
            format!("cannot run the credential helper named in {shown} for {registry}"),
        )),
        Err(CredentialRetrievalError::MalformedHelperResponse) => {
            Err(Error::unauthorized(format!(
                "the credential helper named in {shown} gave a malformed answer for {registry}"
            )))
        }
        Err(CredentialRetrievalError::ConfigReadError) => Err(Error::invalid_input(format!(
            "docker config {shown} is not valid JSON"
        ))),
        Err(CredentialRetrievalError::CredentialDecodingError) => Err(Error::invalid_input(
            format!("the auth entry for {registry} in {shown} is not base64 of user:password"),
        )),
        Err(CredentialRetrievalError::CredentialMismatchError) => Err(Error::invalid_input(
            format!("the auth and username/password entries for {registry} in {shown} disagree"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollback_core::ErrorKind;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "rollback-credentials-{name}-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn config(&self, json: &str) -> PathBuf {
            let file = self.0.join("config.json");
            std::fs::write(&file, json).unwrap();
            file
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn docker_hub_credentials_use_the_legacy_key_as_docker_does() {
        for name in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(credential_key(name), "https://index.docker.io/v1/");
        }
        assert_eq!(credential_key("127.0.0.1:15001"), "127.0.0.1:15001");
        assert_eq!(credential_key("ghcr.io"), "ghcr.io");
        let dir = Dir::new("hub");
        // base64("hub:pw")
        let file = dir.config(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnB3"}}}"#);
        let nginx: rollback_core::ImageRef = "nginx".parse().unwrap();
        match lookup(&file, nginx.registry()).unwrap() {
            Some(Credential::UsernamePassword { username, password }) => {
                assert_eq!(username, "hub");
                assert_eq!(password.expose(), "pw");
            }
            other => panic!("expected Docker Hub's entry, got {other:?}"),
        }
    }

    #[test]
    fn reads_auth_entries_and_reports_missing_hosts_as_none() {
        let dir = Dir::new("auth");
        // base64("alice:s3:cret")
        let file = dir.config(r#"{"auths":{"reg.example:5000":{"auth":"YWxpY2U6czM6Y3JldA=="}}}"#);
        let found = lookup(&file, "reg.example:5000").unwrap();
        assert_eq!(
            found,
            Some(Credential::UsernamePassword {
                username: "alice".into(),
                password: Secret::new("s3:cret"),
            })
        );
        assert!(!format!("{found:?}").contains("s3:cret"));
        assert!(lookup(&file, "other.example").unwrap().is_none());
        assert!(lookup(&dir.0.join("absent.json"), "reg.example:5000")
            .unwrap()
            .is_none());
        assert_eq!(config_file(&dir.0), file, "a folder means its config.json");
        assert_eq!(config_file(&file), file);
    }

    #[test]
    fn bad_files_are_invalid_input_and_failing_helpers_unauthorized() {
        let dir = Dir::new("bad");
        let file = dir.config("{not json");
        let e = lookup(&file, "reg.example").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains(&file.display().to_string()), "{e}");

        let file = dir.config(r#"{"auths":{"reg.example":{"auth":"%%%"}}}"#);
        assert_eq!(
            lookup(&file, "reg.example").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );

        let file = dir.config(r#"{"credHelpers":{"reg.example":"rollback-test-missing-helper"}}"#);
        let e = lookup(&file, "reg.example").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert!(e.message().contains("reg.example"), "{e}");
    }
}
