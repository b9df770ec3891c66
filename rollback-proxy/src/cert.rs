//! Certificate files checked before anything changes.
//!
//! With `tls = { cert, key }` the files are read where rollback runs and
//! written into the proxy container through the engine. A bad pair is
//! refused here, before a deploy touches a host, with the file and the
//! reason; Caddy would otherwise refuse the config half way through a
//! deploy, or serve a certificate every client rejects.
//!
//! Nothing here ever puts key material into a message: errors about the
//! key name the file and what is wrong with it, never its bytes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What counts as expiring soon for a long-lived certificate: 14 days.
pub const EXPIRES_SOON: Duration = Duration::from_secs(14 * 24 * 3600);

/// A certificate file and its key, read and checked.
pub struct CertFiles {
    /// The certificate chain as read, PEM, leaf first.
    pub cert_pem: String,
    /// The private key as read, PEM. Never shown: [`fmt::Debug`] hides it.
    pub key_pem: String,
    /// The leaf certificate.
    pub info: CertInfo,
    /// Things worth saying that do not stop a deploy (a key file others
    /// can read).
    pub warnings: Vec<String>,
}

impl fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertFiles")
            .field("info", &self.info)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, as `CN=...` and so on.
    pub subject: String,
    /// The issuer's name.
    pub issuer: String,
    /// The DNS names it covers (subject alternative names).
    pub names: Vec<String>,
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

impl CertInfo {
    /// How long until it expires (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// Whether it expires soon: less than [`EXPIRES_SOON`] left, or for a
    /// short-lived certificate less than a sixth of its lifetime. Caddy
    /// renews an ACME certificate when a third of its lifetime is left
    /// (30 days of Let's Encrypt's 90), so one this close failed to renew;
    /// a certificate from files is renewed by nobody.
    pub fn expires_soon(&self, now: SystemTime) -> bool {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.remaining(now) < EXPIRES_SOON.min(lifetime / 6)
    }

    /// Whether it is valid for `host` (an exact name, or a `*.` name
    /// covering one label).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| name_covers(n, host))
    }
}

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    /// The file.
    pub file: PathBuf,
    /// Why, in a phrase with no key material in it.
    pub reason: String,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for CertError {}

fn error(file: &Path, reason: impl Into<String>) -> CertError {
    CertError {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

/// Read `cert` and `key` and check that they can serve `host` at `now`:
/// both readable PEM, the certificate valid now and covering `host`, the
/// key the certificate's own.
pub fn check_files(
    cert: &Path,
    key: &Path,
    host: &str,
    now: SystemTime,
) -> Result<CertFiles, CertError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| error(cert, "not a PEM certificate file"))?;
    let Some(leaf) = chain.first() else {
        return Err(error(cert, "holds no PEM certificate"));
    };
    let (_, parsed) = X509Certificate::from_der(leaf)
        .map_err(|e| error(cert, format!("the certificate does not parse: {e}")))?;
    let info = info_of(&parsed);
    if now < info.not_before {
        return Err(error(
            cert,
            format!(
                "not valid yet: valid from {}",
                humantime::format_rfc3339_seconds(info.not_before)
            ),
        ));
    }
    if now > info.not_after {
        return Err(error(
            cert,
            format!(
                "expired on {}",
                humantime::format_rfc3339_seconds(info.not_after)
            ),
        ));
    }
    if !info.covers(host) {
        let names = if info.names.is_empty() {
            "no DNS names".to_owned()
        } else {
            info.names.join(", ")
        };
        return Err(error(
            cert,
            format!("does not cover the host {host:?}: it names {names}"),
        ));
    }
    // A PEM error could quote the key's text: say only what is wrong.
    let private = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| error(key, "not a PEM private key"))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&private)
        .map_err(|_| error(key, "not a supported private key (RSA, ECDSA or Ed25519)"))?;
    let matches = signing
        .public_key()
        .is_some_and(|public| public.as_ref() == parsed.public_key().raw);
    if !matches {
        return Err(error(
            key,
            format!("does not match the certificate in {}", cert.display()),
        ));
    }
    let mut warnings = Vec::new();
    if let Some(mode) = group_or_other_access(key) {
        warnings.push(format!(
            "{}: the private key is readable by others (mode {mode:o}); chmod 600 it",
            key.display()
        ));
    }
    Ok(CertFiles {
        cert_pem,
        key_pem,
        info,
        warnings,
    })
}

/// What the first certificate in `pem` says about itself.
pub fn inspect_pem(pem: &[u8]) -> Option<CertInfo> {
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, parsed) = X509Certificate::from_der(&der).ok()?;
    Some(info_of(&parsed))
}

fn read(file: &Path) -> Result<String, CertError> {
    let bytes = std::fs::read(file).map_err(|e| error(file, format!("cannot be read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| error(file, "not a PEM file (not text)"))
}

fn info_of(cert: &X509Certificate<'_>) -> CertInfo {
    let time = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        names,
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
    }
}

fn name_covers(name: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match name.strip_prefix("*.") {
        // A wildcard covers exactly one label, never the bare domain.
        Some(domain) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == domain),
        None => name == host,
    }
}

#[cfg(unix)]
fn group_or_other_access(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn group_or_other_access(_: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use std::os::unix::fs::PermissionsExt;

    struct Pair {
        dir: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn pair(name: &str, names: &[&str], from_days: i64, to_days: i64) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let cert = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!("rollback-cert-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pair = Pair {
            cert: dir.join("shop.crt"),
            key: dir.join("shop.key"),
            dir,
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&pair.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        pair
    }

    fn check(p: &Pair, host: &str) -> Result<CertFiles, CertError> {
        check_files(&p.cert, &p.key, host, SystemTime::now())
    }

    #[test]
    fn a_good_pair_passes_and_says_what_it_is() {
        let p = pair("good", &["shop.example.com"], -1, 30);
        let files = check(&p, "shop.example.com").unwrap();
        assert!(files.warnings.is_empty());
        assert_eq!(files.info.names, ["shop.example.com"]);
        let left = files.info.remaining(SystemTime::now());
        assert!(left > Duration::from_secs(29 * 86400) && left <= Duration::from_secs(30 * 86400));
        assert!(!format!("{files:?}").contains("PRIVATE KEY"));
        assert!(!files.info.expires_soon(SystemTime::now()));
    }

    #[test]
    fn soon_is_two_weeks_or_a_sixth_of_a_short_lifetime() {
        let day = Duration::from_secs(86400);
        let now = SystemTime::now();
        let info = |from: Duration, left: Duration| CertInfo {
            subject: String::new(),
            issuer: String::new(),
            names: Vec::new(),
            not_before: now - from,
            not_after: now + left,
        };
        assert!(info(80 * day, 5 * day).expires_soon(now));
        assert!(!info(60 * day, 30 * day).expires_soon(now));
        // A 12-hour certificate from a local CA halfway through: not soon.
        assert!(!info(
            6 * 3600 * Duration::from_secs(1),
            Duration::from_secs(6 * 3600)
        )
        .expires_soon(now));
        assert!(info(Duration::from_secs(11 * 3600), Duration::from_secs(3600)).expires_soon(now));
    }

    #[test]
    fn wildcards_cover_one_label() {
        let p = pair("wild", &["*.example.com"], -1, 30);
        assert!(check(&p, "shop.example.com").is_ok());
        let e = check(&p, "example.com").unwrap_err();
        assert_eq!(e.file, p.cert);
        assert!(e.reason.contains("does not cover"), "{e}");
        assert!(check(&p, "a.shop.example.com").is_err());
    }

    #[test]
    fn expired_and_not_yet_valid_are_refused() {
        let p = pair("expired", &["shop.example.com"], -30, -1);
        let e = check(&p, "shop.example.com").unwrap_err();
        assert_eq!(e.file, p.cert);
        assert!(e.reason.starts_with("expired on "), "{e}");
        let p = pair("future", &["shop.example.com"], 2, 30);
        let e = check(&p, "shop.example.com").unwrap_err();
        assert!(e.reason.starts_with("not valid yet"), "{e}");
    }

    #[test]
    fn another_certificates_key_is_refused_without_showing_it() {
        let a = pair("key-a", &["shop.example.com"], -1, 30);
        let b = pair("key-b", &["shop.example.com"], -1, 30);
        let e = check_files(&a.cert, &b.key, "shop.example.com", SystemTime::now()).unwrap_err();
        assert_eq!(e.file, b.key);
        assert!(e.reason.contains("does not match the certificate"), "{e}");
        assert!(!e.to_string().contains("PRIVATE"));
    }

    #[test]
    fn unreadable_and_not_pem_files_are_named() {
        let p = pair("bad", &["shop.example.com"], -1, 30);
        let missing = p.dir.join("missing.crt");
        let e = check_files(&missing, &p.key, "shop.example.com", SystemTime::now()).unwrap_err();
        assert_eq!(e.file, missing);
        assert!(e.reason.starts_with("cannot be read"), "{e}");

        std::fs::write(&p.cert, "hello\n").unwrap();
        let e = check(&p, "shop.example.com").unwrap_err();
        assert_eq!(e.file, p.cert);
        assert!(e.reason.contains("no PEM certificate"), "{e}");

        let p = pair("badkey", &["shop.example.com"], -1, 30);
        std::fs::write(
            &p.key,
            "-----BEGIN PRIVATE KEY-----\nnot base64 secret!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = check(&p, "shop.example.com").unwrap_err();
        assert_eq!(e.file, p.key);
        assert_eq!(e.reason, "not a PEM private key");
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn a_key_others_can_read_is_a_warning() {
        let p = pair("mode", &["shop.example.com"], -1, 30);
        std::fs::set_permissions(&p.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let files = check(&p, "shop.example.com").unwrap();
        assert_eq!(files.warnings.len(), 1);
        assert!(files.warnings[0].contains("readable by others (mode 644)"));
    }

    #[test]
    fn inspect_reads_the_first_certificate() {
        let p = pair("inspect", &["a.example.com", "b.example.com"], -1, 30);
        let pem = std::fs::read(&p.cert).unwrap();
        let info = inspect_pem(&pem).unwrap();
        assert_eq!(info.names, ["a.example.com", "b.example.com"]);
        assert!(inspect_pem(b"nothing").is_none());
    }
}
