//! `tcp://` with `DOCKER_TLS_VERIFY`: a TLS front for the local engine that
//! demands a client certificate, and certificates made by `openssl`.
//!
//! One test in its own binary: it sets `DOCKER_TLS_VERIFY` and
//! `DOCKER_CERT_PATH` for the whole process.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rollback_core::{ErrorKind, Runtime};
use rollback_docker::DockerRuntime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, UnixStream};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.pem`, `cert.pem` and `key.pem` for the client (Docker's names) and
/// `server-cert.pem`, `server-key.pem` for 127.0.0.1.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=rollback test ca",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, subject) in [
        ("server", "/CN=127.0.0.1"),
        ("client", "/CN=rollback test client"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subject,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}-cert.pem"),
            ],
        );
    }
    std::fs::rename(dir.join("client-cert.pem"), dir.join("cert.pem")).unwrap();
    std::fs::rename(dir.join("client-key.pem"), dir.join("key.pem")).unwrap();
}

/// Accepts TLS with a client certificate signed by `ca.pem` and relays to
/// the local engine socket.
async fn tls_front(dir: &Path) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("server-cert.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_uses_the_cert_path_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let port = tls_front(certs.path()).await;
    let url = format!("tcp://127.0.0.1:{port}");
    // Asked before the TLS variables are set: the CLI reads them too.
    let server_api = common::docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);

    std::env::set_var("DOCKER_TLS_VERIFY", "1");
    std::env::set_var("DOCKER_CERT_PATH", certs.path());
    let rt = DockerRuntime::connect(Some(&url), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(rt
        .current(&common::unique("absent"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(rt.api_version(), server_api.trim());

    // Without the TLS variables the same port speaks TLS to a plain client.
    std::env::remove_var("DOCKER_TLS_VERIFY");
    let err = DockerRuntime::connect(Some(&url), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());

    // Certificates missing from the cert path: a configuration error naming the file.
    let empty = tempfile::tempdir().unwrap();
    std::env::set_var("DOCKER_TLS_VERIFY", "1");
    std::env::set_var("DOCKER_CERT_PATH", empty.path());
    let err = DockerRuntime::connect(Some(&url), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.report());
    assert!(err.message().contains("ca.pem"), "{}", err.message());
    assert!(err.message().contains(&url), "{}", err.message());
}
