//! Where the engine is and how to speak to it: `unix://`, `tcp://` (plain
//! or TLS by the `DOCKER_TLS_VERIFY` / `DOCKER_CERT_PATH` conventions),
//! `ssh://` (the system `ssh` running `docker system dial-stdio`).

use std::path::{Path, PathBuf};

use rollback_core::{Error, Result};

use crate::ssh::SshTarget;

/// The local socket, used when neither a URL nor `DOCKER_HOST` is given.
pub const DEFAULT_DOCKER_URL: &str = "unix:///var/run/docker.sock";

/// Client certificate files for a TLS engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl TlsFiles {
    fn in_dir(dir: &Path) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// A parsed engine address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A Unix socket path.
    Unix(String),
    /// `host:port` over plain HTTP.
    Http(String),
    /// `host:port` over TLS with client certificates.
    Https(String, TlsFiles),
    /// A host reached over SSH.
    Ssh(SshTarget),
}

/// The environment that decides how to connect, read once so tests can
/// pass their own.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectEnv {
    pub(crate) docker_host: Option<String>,
    pub(crate) tls_verify: Option<String>,
    pub(crate) cert_path: Option<PathBuf>,
    pub(crate) home: Option<PathBuf>,
}

impl ConnectEnv {
    pub(crate) fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        ConnectEnv {
            docker_host: var("DOCKER_HOST"),
            tls_verify: var("DOCKER_TLS_VERIFY"),
            cert_path: var("DOCKER_CERT_PATH").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
        }
    }

    /// The URL to use: the given one, else `DOCKER_HOST`, else the local socket.
    pub(crate) fn url(&self, url: Option<&str>) -> String {
        url.map(str::to_owned)
            .or_else(|| self.docker_host.clone())
            .unwrap_or_else(|| DEFAULT_DOCKER_URL.to_owned())
    }

    fn tls_files(&self) -> Result<TlsFiles> {
        let dir = match (&self.cert_path, &self.home) {
            (Some(dir), _) => dir.clone(),
            (None, Some(home)) => home.join(".docker"),
            (None, None) => {
                return Err(Error::invalid_input(
                    "TLS requested but neither DOCKER_CERT_PATH nor HOME is set",
                ))
            }
        };
        Ok(TlsFiles::in_dir(&dir))
    }

    /// Parse `url` into an endpoint. TLS is used for `https://` and for
    /// `tcp://` when `DOCKER_TLS_VERIFY` is set, as the Docker CLI does.
    pub(crate) fn endpoint(&self, url: &str) -> Result<Endpoint> {
        let shown = without_password(url);
        let bad = |why: &str| Error::invalid_input(format!("invalid docker url {shown:?}: {why}"));
        if let Some(path) = url.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(Endpoint::Unix(path.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("ssh://") {
            return SshTarget::parse(rest).map(Endpoint::Ssh).map_err(bad);
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("expected unix://PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]")
        })?;
        let address = rest.trim_end_matches('/');
        if address.is_empty() || address.contains('/') {
            return Err(bad("expected HOST:PORT after the scheme"));
        }
        match scheme {
            "tcp" | "http" if self.tls_verify.is_none() || scheme == "http" => {
                Ok(Endpoint::Http(address.to_owned()))
            }
            "tcp" | "https" => Ok(Endpoint::Https(address.to_owned(), self.tls_files()?)),
            _ => Err(bad(
                "unsupported scheme (use unix://, tcp://, http://, https:// or ssh://)",
            )),
        }
    }
}

/// `url` with the password of its user info, if any, replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            let at = rest[..authority_end].rfind('@').expect("has @");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollback_core::ErrorKind;

    #[test]
    fn url_falls_back_to_docker_host_then_the_socket() {
        let env = ConnectEnv::default();
        assert_eq!(env.url(None), DEFAULT_DOCKER_URL);
        assert_eq!(env.url(Some("tcp://h:1")), "tcp://h:1");
        let env = ConnectEnv {
            docker_host: Some("tcp://10.0.0.1:2375".into()),
            ..Default::default()
        };
        assert_eq!(env.url(None), "tcp://10.0.0.1:2375");
        assert_eq!(env.url(Some("unix:///x.sock")), "unix:///x.sock");
    }

    #[test]
    fn endpoints_follow_the_docker_conventions() {
        let plain = ConnectEnv {
            home: Some("/home/u".into()),
            ..Default::default()
        };
        assert_eq!(
            plain.endpoint("unix:///var/run/docker.sock").unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            plain.endpoint("tcp://127.0.0.1:2375").unwrap(),
            Endpoint::Http("127.0.0.1:2375".into())
        );
        assert_eq!(
            plain.endpoint("https://h:2376").unwrap(),
            Endpoint::Https(
                "h:2376".into(),
                TlsFiles::in_dir(Path::new("/home/u/.docker"))
            )
        );
        let tls = ConnectEnv {
            tls_verify: Some("1".into()),
            cert_path: Some("/certs".into()),
            home: Some("/home/u".into()),
            ..Default::default()
        };
        let Endpoint::Https(address, files) = tls.endpoint("tcp://h:2376").unwrap() else {
            panic!("DOCKER_TLS_VERIFY must select TLS");
        };
        assert_eq!(address, "h:2376");
        assert_eq!(files.ca, Path::new("/certs/ca.pem"));
        assert_eq!(files.cert, Path::new("/certs/cert.pem"));
        assert_eq!(files.key, Path::new("/certs/key.pem"));
        assert_eq!(
            plain.endpoint("ssh://deploy@prod-a:2222").unwrap(),
            Endpoint::Ssh(SshTarget::parse("deploy@prod-a:2222").unwrap())
        );
        for bad in [
            "npipe:////./pipe/x",
            "h:2375",
            "unix://",
            "tcp://",
            "tcp://h:1/path",
            "ssh://",
        ] {
            let err = plain.endpoint(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
            assert!(err.message().contains(bad), "{}", err.message());
        }
        let err = plain.endpoint("ssh://deploy:hunter2@h/x").unwrap_err();
        assert!(
            err.message().contains("\"ssh://deploy:***@h/x\"")
                && !err.message().contains("hunter2"),
            "{}",
            err.message()
        );
    }
}
