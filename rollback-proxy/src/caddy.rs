//! [`Caddy`]: the [`TrafficSwitch`] on Caddy 2, driven through its admin API
//! from inside the proxy container.
//!
//! The admin API listens on `localhost:2019` inside the container only;
//! every call is a `wget` run in the container, so no
//! port but the public one is opened and a host reached only through its
//! engine endpoint works the same.
//!
//! # The config
//!
//! One HTTP server, `rollback`, listens on `:80` in the container (the
//! public address is published to it). Its routes are two subroutes, first
//! the apps routed by `Host`, then the apps that take every host, then a
//! `503` for requests no app takes. Each app's route is a `reverse_proxy`
//! with two upstream slots, each with an `@id`:
//!
//! - `primary`: where requests go;
//! - `fallback`: tried when `primary` refuses a connection (Caddy's
//!   `lb_policy first` with a passive health check and `lb_try_duration`).
//!
//! [`TrafficSwitch::switch`] puts the new release in `primary`, the old one
//! staying in `fallback`; [`TrafficSwitch::drain`] waits for the old
//! release's requests in flight and then empties `fallback` (it points at
//! `primary` again). Between the two, a new release that dies has its
//! requests retried on the old one, which still runs, and the switch back
//! points `primary` at the old one again. Each change is one `POST` of a
//! single string to `/id/...`, so apps sharing the proxy never overwrite
//! each other's routes, and Caddy persists the config (`--resume`), so a
//! restarted proxy comes back as it was.
//!
//! A switch forward from a drained route, and a switch back, are one change
//! each: one config reload, one `POST`. (One value is flipped, the dial of
//! `primary`: Caddy's `POST` appends when its path ends in an array, and
//! `PATCH`, which would replace a whole upstream list, is out of the reach
//! of the image's `wget`.) The calls go through one shell kept running in
//! the proxy container ([`ProxyContainer::exec`]), so a call costs a `wget`
//! forked in the container, not an exec through the engine.
//!
//! # HTTPS
//!
//! An app [`Caddy::with_tls`] has its route in a second server,
//! `rollback-tls`, on `:443` in the container (published to the proxy's
//! `tls_listen`), HTTP/1.1 and HTTP/2, matched by its host and the
//! certificate chosen by SNI. The HTTP server keeps, for that host, only a
//! `308` redirect to HTTPS; Caddy answers ACME HTTP challenges before any
//! route. The app's certificate is its own: an automation policy for its
//! host (ACME, with the CA, contact and trusted root given; or Caddy's
//! internal CA) plus the host in `certificates.automate`, or a
//! `load_files` entry naming files written into the container through the
//! shell's standard input ([`ProxyContainer::write_file`]), named by their
//! contents so that new files are a config change and the same ones none.
//! Each part carries an `@id` naming the app, so setting one app up leaves
//! every other app's parts as they are, and a setup that is already in
//! place changes nothing (no reload, no new ACME order). Certificates and
//! ACME accounts are kept under `/data`, the proxy's volume.
//!
//! These parts (and a route's removal) change several places of the
//! config at once, so they are written as a whole config, which could undo
//! a change another app made in between (its switch, its own setup): the
//! whole config is written only with `If-Match` on the `Etag` it was
//! computed from, and computed again when Caddy answers `412`.
//!
//! # Requests in flight and long connections
//!
//! A config change makes Caddy start a new server on the same listener;
//! the old one finishes the requests it has and then stops (the HTTP app's
//! `grace_period` is left unset: no limit, so a change for one app never
//! cuts another app's slow request). Nothing is refused during a change.
//! Upgraded connections (WebSocket) are closed by Caddy 2.6 at every config
//! change (newer Caddy can delay that with `stream_close_delay`); clients
//! reconnect and reach the new release.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rollback_core::{
    ContainerId, Error, ErrorKind, ImageRef, Result, Runtime, TrafficSwitch, Upstream,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::container::{Booted, ProxyContainer};

/// The default proxy image.
pub const DEFAULT_IMAGE: &str = "caddy:2";
/// The port Caddy listens on inside the container.
pub const CONTAINER_PORT: u16 = 80;
const ADMIN: &str = "http://127.0.0.1:2019";
const SERVER: &str = "rollback";
const HOST_ROUTES: &str = "rollback.routes.host";
const ANY_ROUTES: &str = "rollback.routes.any";
/// The port Caddy serves HTTPS on inside the container.
pub const TLS_CONTAINER_PORT: u16 = 443;
const TLS_SERVER: &str = "rollback-tls";
const TLS_ROUTES: &str = "rollback.routes.tls";
/// Files rollback writes into the proxy (certificates, a private CA's root), in its volume.
const TLS_DIR: &str = "/data/rollback/tls";
/// Where Caddy keeps the certificates it obtains.
const CERT_STORE: &str = "/data/caddy/certificates";
/// How long one admin call may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a freshly started Caddy gets to answer its admin API.
const BOOT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a request waits for an upstream that accepts a connection.
const TRY_DURATION: &str = "5s";

/// Caddy's wait before a refused request is tried on the next upstream.
const TRY_INTERVAL: Duration = Duration::from_millis(5);
/// By then no request refused by a dead primary still waits for its retry.
const RETRY_SETTLE: Duration = TRY_INTERVAL.saturating_mul(2);

const POLL: Duration = Duration::from_millis(100);
/// How many times a whole-config change is read and tried again when
/// another change got in between (Caddy's `412 Precondition Failed`).
const UPDATE_TRIES: u32 = 8;

/// One app's route in the proxy, as read back from Caddy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The app.
    pub app: String,
    /// The `Host` it is routed by, if any.
    pub host: Option<String>,
    /// Where its requests go.
    pub primary: String,
    /// Tried when `primary` refuses a connection; equal to `primary` when
    /// nothing is kept as a fallback.
    pub fallback: String,
}

/// Where an app's certificate comes from, with `tls` on.
#[derive(Clone, PartialEq, Eq)]
pub enum Tls {
    /// An ACME CA, through an HTTP challenge on the proxy's port 80.
    Acme {
        /// The account's contact.
        email: Option<String>,
        /// The CA's directory URL; Let's Encrypt's when `None`.
        ca: Option<String>,
        /// The CA's root (PEM), for a CA the proxy does not trust otherwise.
        ca_root_pem: Option<String>,
    },
    /// The proxy's own CA.
    Internal,
    /// A certificate chain and its key (PEM), written into the proxy.
    Files {
        /// The chain, leaf first.
        cert_pem: String,
        /// The private key.
        key_pem: String,
    },
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tls::Acme { email, ca, .. } => f
                .debug_struct("Acme")
                .field("email", email)
                .field("ca", ca)
                .finish_non_exhaustive(),
            Tls::Internal => f.write_str("Internal"),
            Tls::Files { .. } => f.write_str("Files"),
        }
    }
}

/// An app's certificate in the proxy, as `proxy status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCertificate {
    /// The app.
    pub app: String,
    /// The name it is served for.
    pub host: String,
    /// `acme`, `internal` or `files`.
    pub source: String,
    /// The certificate in use, when the proxy has one yet.
    pub info: Option<crate::cert::CertInfo>,
}

/// The traffic switch of one app on one host, through a Caddy 2 proxy.
#[derive(Debug, Clone)]
pub struct Caddy {
    proxy: ProxyContainer,
    app: String,
    host: Option<String>,
    tls: Option<Tls>,
}

impl Caddy {
    /// The proxy container Caddy runs in on the host of `runtime`:
    /// `image` (`caddy:2` by default), publishing `listen`.
    pub fn container(
        runtime: Arc<dyn Runtime>,
        image: Option<ImageRef>,
        listen: &str,
    ) -> Result<ProxyContainer> {
        let image = match image {
            Some(image) => image,
            None => DEFAULT_IMAGE.parse()?,
        };
        // --resume: a restarted proxy loads the config it last had.
        let command = ["caddy", "run", "--resume"].map(str::to_owned).to_vec();
        ProxyContainer::new(runtime, "caddy", image, listen, CONTAINER_PORT, command)
    }

    /// The switch of `app`'s traffic in `proxy`.
    pub fn new(proxy: ProxyContainer, app: &str) -> Self {
        Self {
            proxy,
            app: app.to_owned(),
            host: None,
            tls: None,
        }
    }

    /// Serve the app over HTTPS on the proxy's TLS address (see
    /// [`ProxyContainer::with_tls_listen`]), with a certificate for its
    /// [`Caddy::with_host`] name from `tls`; plain HTTP requests for the
    /// name are redirected to HTTPS.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Route only requests for this `Host` to the app, so that several
    /// apps share one proxy.
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_ascii_lowercase());
        self
    }

    /// The proxy container.
    pub fn proxy(&self) -> &ProxyContainer {
        &self.proxy
    }

    /// The upstream Caddy dials for `container` listening on `port`: the
    /// container's short id, which the engine's DNS resolves on the shared
    /// network and which, unlike an IP address, survives a restart.
    pub fn upstream(container: &ContainerId, port: u16) -> Upstream {
        Upstream::of(container, port)
    }

    fn route_id(&self) -> String {
        route_id(&self.app)
    }

    /// Every app's route in the proxy.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        let config = self.admin_get("/config/").await?.unwrap_or(Value::Null);
        let mut routes = Vec::new();
        let servers = &config["apps"]["http"]["servers"];
        let groups = [SERVER, TLS_SERVER]
            .into_iter()
            .flat_map(|s| servers[s]["routes"].as_array().into_iter().flatten());
        for group in groups {
            for route in group["handle"][0]["routes"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(r) = parse_route(route) {
                    routes.push(r);
                }
            }
        }
        Ok(routes)
    }

    /// This app's route, if it has one.
    pub async fn route(&self) -> Result<Option<Route>> {
        match self.admin_get(&format!("/id/{}", self.route_id())).await? {
            Some(route) => Ok(parse_route(&route)),
            None => Ok(None),
        }
    }

    /// Take this app's route out of the proxy. Returns whether it had one.
    pub async fn remove_route(&self) -> Result<bool> {
        let routes = self.routes().await?;
        if !routes.iter().any(|r| r.app == self.app) {
            return Ok(false);
        }
        // The admin API's DELETE is out of wget's reach: write the groups back without it.
        let id = self.route_id();
        self.update_config("remove the route", |config| {
            let mut config = without_tls(config, &self.app);
            take_route(&mut config, &id).map(|_| config)
        })
        .await?;
        Ok(true)
    }

    async fn wait_admin(&self, booted: &Booted) -> Result<Value> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            match self.admin_get("/config/").await {
                Ok(config) => return Ok(config.unwrap_or(Value::Null)),
                Err(e) if Instant::now() < deadline && e.kind() != ErrorKind::InvalidInput => {
                    if self.proxy.running().await.is_err() {
                        return Err(self.died(booted.id(), e).await);
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e.context("the proxy's admin API does not answer")),
            }
        }
    }

    async fn died(&self, id: &ContainerId, cause: Error) -> Error {
        let logs = self
            .proxy
            .runtime()
            .logs(id, 5)
            .await
            .unwrap_or_default()
            .join("\n");
        Error::unavailable(format!(
            "the proxy container {} stopped while booting: {}\n{logs}",
            self.proxy.name(),
            cause.message()
        ))
    }

    /// GET an admin path: `None` when Caddy says the path or id is unknown.
    async fn admin_get(&self, path: &str) -> Result<Option<Value>> {
        let cmd = wget(&[], &format!("{ADMIN}{path}"));
        let out = self.proxy.exec(&cmd, ADMIN_TIMEOUT).await?;
        if !out.success() {
            if is_not_found(&out.output) {
                return Ok(None);
            }
            return Err(admin_error(&self.proxy, "GET", path, &out.output));
        }
        let text = out.output.trim();
        if text.is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_str(text).map(Some).map_err(|e| {
            Error::other(format!(
                "the proxy's admin API answered {path} with something not JSON: {e}"
            ))
        })
    }

    async fn admin_post(&self, path: &str, body: &Value) -> Result<()> {
        self.admin_post_with(path, body, &[]).await
    }

    /// POST with more `wget` options (headers).
    async fn admin_post_with(&self, path: &str, body: &Value, options: &[&str]) -> Result<()> {
        let body = body.to_string();
        let mut all = vec![
            "--header",
            "Content-Type: application/json",
            "--post-data",
            &body,
        ];
        all.extend_from_slice(options);
        let cmd = wget(&all, &format!("{ADMIN}{path}"));
        let out = self.proxy.exec(&cmd, ADMIN_TIMEOUT).await?;
        if out.success() {
            return Ok(());
        }
        let mut err = admin_error(&self.proxy, "POST", path, &out.output);
        // Caddy logs why it refused a config; wget does not show the body.
        if let Ok(id) = self.proxy.running().await {
            let logs = self.proxy.runtime().logs(&id, 20).await.unwrap_or_default();
            if let Some(reason) = logs.iter().rev().find_map(|l| refusal(l)) {
                err = Error::new(err.kind(), format!("{}: {reason}", err.message()));
            }
        }
        Err(err)
    }

    async fn set_dial(&self, slot: &str, address: &str) -> Result<()> {
        let path = format!("/id/{}.{slot}/dial", self.route_id());
        self.admin_post(&path, &json!(address)).await
    }

    async fn ensure_base(&self, config: &Value) -> Result<()> {
        if has_base(config) {
            return Ok(());
        }
        self.update_config("load the proxy's base config", |config| {
            if has_base(config) {
                return None;
            }
            let mut config = if config.is_object() {
                config.clone()
            } else {
                json!({})
            };
            config["apps"]["http"]["servers"][SERVER] = base_server();
            Some(config)
        })
        .await
        .map(|_| ())
    }

    /// The whole config and its `Etag`, read in one request. Caddy 2.6
    /// sends the `Etag` of `GET /config/` as an HTTP trailer, which the
    /// image's `wget` drops: the request goes through `nc` and the answer
    /// is read here. `None` for the tag when the image has no `nc`, or
    /// the Caddy no `Etag`.
    async fn config_tagged(&self) -> Result<(Value, Option<String>)> {
        let script = format!(
            "printf 'GET /config/ HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n' | nc {addr}",
            host = ADMIN.trim_start_matches("http://"),
            addr = ADMIN.trim_start_matches("http://").replace(':', " "),
        );
        let cmd = ["sh", "-c", &script].map(str::to_owned);
        let out = self.proxy.exec(&cmd, ADMIN_TIMEOUT).await?;
        if let Some((200, body, etag)) = out.success().then(|| parse_http(&out.output)).flatten() {
            let text = body.trim();
            let config = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(text).map_err(|e| {
                    Error::other(format!(
                        "the proxy's admin API answered /config/ with something not JSON: {e}"
                    ))
                })?
            };
            return Ok((config, etag));
        }
        let config = self.admin_get("/config/").await?.unwrap_or(Value::Null);
        Ok((config, None))
    }

    /// Change the whole config as `change` says (`None`: nothing to
    /// change), on the config as it is: a change that another one
    /// overtook between the read and the write (two apps set up at once
    /// on one proxy) is refused by Caddy (`If-Match`) and made again on
    /// the new config, so that neither is lost. Returns whether the
    /// config was changed.
    async fn update_config(
        &self,
        what: &str,
        change: impl Fn(&Value) -> Option<Value>,
    ) -> Result<bool> {
        for _ in 0..UPDATE_TRIES {
            let (config, etag) = self.config_tagged().await?;
            let Some(desired) = change(&config) else {
                return Ok(false);
            };
            let Some(etag) = etag else {
                // No tag to check against: as before, the last writer wins.
                self.admin_post("/load", &desired)
                    .await
                    .map_err(|e| e.context(what.to_owned()))?;
                return Ok(true);
            };
            match self
                .admin_post_with(
                    "/config/",
                    &desired,
                    &["--header", &format!("If-Match: {etag}")],
                )
                .await
            {
                Ok(()) => return Ok(true),
                Err(e) if e.message().contains(" 412 ") => {
                    // Another change got in: read again, after a pause
                    // that differs between callers so that they part.
                    let pause = 20 + u64::from(std::process::id() % 7) * 15;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e.context(what.to_owned())),
            }
        }
        Err(Error::conflict(format!(
            "{what}: the proxy's config kept changing under {UPDATE_TRIES} tries"
        )))
    }
}

impl Caddy {
    /// Bring the app's HTTPS setup in the proxy to what `self.tls` says:
    /// the files it needs written, then (only when something differs) the
    /// config, in one change. A redeploy with the same setup changes
    /// nothing here, so the CA is not asked again.
    async fn ensure_tls(&self) -> Result<()> {
        let Some(tls) = &self.tls else {
            self.update_config(&format!("take HTTPS off {}", self.app), |config| {
                let desired = without_tls(config, &self.app);
                (desired != *config).then_some(desired)
            })
            .await?;
            return self.remove_old_files(&[]).await;
        };
        let host = self.host.as_deref().ok_or_else(|| {
            Error::invalid_input(format!("HTTPS for {} needs its host name", self.app))
        })?;
        let port = self.proxy.tls_port().ok_or_else(|| {
            Error::invalid_input(format!(
                "HTTPS for {} needs the proxy's HTTPS address",
                self.app
            ))
        })?;
        let mut files = TlsFiles::default();
        match tls {
            Tls::Files { cert_pem, key_pem } => {
                // Named by their contents: new files are a config change
                // Caddy loads, the same files are none.
                let tag = digest(&[cert_pem, key_pem]);
                let cert = format!("{TLS_DIR}/{}-{tag}.crt", self.app);
                let key = format!("{TLS_DIR}/{}-{tag}.key", self.app);
                self.proxy
                    .write_file(&cert, cert_pem, ADMIN_TIMEOUT)
                    .await?;
                self.proxy.write_file(&key, key_pem, ADMIN_TIMEOUT).await?;
                files.cert = Some((cert, key));
            }
            Tls::Acme {
                ca_root_pem: Some(pem),
                ..
            } => {
                let root = format!("{TLS_DIR}/{}-ca-{}.pem", self.app, digest(&[pem]));
                self.proxy.write_file(&root, pem, ADMIN_TIMEOUT).await?;
                files.ca_root = Some(root);
            }
            _ => {}
        }
        self.update_config(&format!("set up HTTPS for {host}"), |config| {
            let desired = with_tls(config, &self.app, host, port, tls, &files);
            (desired != *config).then_some(desired)
        })
        .await?;
        let mut keep: Vec<&str> = files.ca_root.iter().map(String::as_str).collect();
        if let Some((cert, key)) = &files.cert {
            keep.extend([cert.as_str(), key.as_str()]);
        }
        self.remove_old_files(&keep).await
    }

    /// Remove the files written for this app into the proxy but `keep`, once
    /// the config names them no more: replaced certificates, keys and CA
    /// roots are not left in the volume.
    async fn remove_old_files(&self, keep: &[&str]) -> Result<()> {
        let app = &self.app;
        // The tag's exact length keeps an app whose name begins with this
        // one's out of the patterns.
        let tag = "[0-9a-f]".repeat(12);
        let keep: Vec<&str> = keep.iter().filter_map(|k| k.rsplit('/').next()).collect();
        let keep = if keep.is_empty() {
            "''".to_owned()
        } else {
            keep.join("|")
        };
        let script = format!(
            "cd {TLS_DIR} 2>/dev/null || exit 0; \
             for f in {app}-{tag}.crt {app}-{tag}.key {app}-ca-{tag}.pem; do \
             [ -e \"$f\" ] || continue; case \"$f\" in {keep}) ;; *) rm -f -- \"$f\" ;; esac; done"
        );
        let cmd = ["sh", "-c", &script].map(str::to_owned);
        let out = self.proxy.exec(&cmd, ADMIN_TIMEOUT).await?;
        if !out.success() {
            return Err(Error::other(format!(
                "remove the replaced certificate files of {app} in the proxy {}: {}",
                self.proxy.name(),
                out.output.trim()
            )));
        }
        Ok(())
    }

    /// Every app served over HTTPS by the proxy, with the certificate it
    /// has for the app's name (none yet while an ACME order is under way).
    pub async fn certificates(&self) -> Result<Vec<AppCertificate>> {
        let config = self.admin_get("/config/").await?.unwrap_or(Value::Null);
        let mut found = Vec::new();
        let redirects = config
            .pointer(&format!("/apps/http/servers/{SERVER}/routes"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|g| g["@id"] == HOST_ROUTES)
            .flat_map(|g| g["handle"][0]["routes"].as_array().into_iter().flatten());
        for route in redirects {
            let Some(app) = route["@id"]
                .as_str()
                .and_then(|id| id.strip_prefix("rollback.redirect."))
            else {
                continue;
            };
            let Some(host) = route["match"][0]["host"][0].as_str() else {
                continue;
            };
            let loaded = config["apps"]["tls"]["certificates"]["load_files"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| f["@id"] == format!("rollback.cert.{app}").as_str());
            let policy = config["apps"]["tls"]["automation"]["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["@id"] == format!("rollback.tls.{app}").as_str());
            let (source, pem) = if let Some(file) = loaded {
                let path = file["certificate"].as_str().unwrap_or_default();
                (
                    "files",
                    self.read(&["cat".to_owned(), path.to_owned()]).await?,
                )
            } else {
                let source = if policy.is_some_and(|p| p["issuers"][0]["module"] == "internal") {
                    "internal"
                } else {
                    "acme"
                };
                // The newest of the issuers' folders: a changed CA leaves the old one behind.
                let newest = format!(
                    "ls -t {CERT_STORE}/*/{host}/{host}.crt 2>/dev/null | head -n 1 | xargs -r cat"
                );
                (
                    source,
                    self.read(&["sh".into(), "-c".into(), newest]).await?,
                )
            };
            found.push(AppCertificate {
                app: app.to_owned(),
                host: host.to_owned(),
                source: source.to_owned(),
                info: pem
                    .as_deref()
                    .and_then(|p| crate::cert::inspect_pem(p.as_bytes())),
            });
        }
        Ok(found)
    }

    /// The output of `cmd` in the proxy, `None` when it fails or prints nothing.
    async fn read(&self, cmd: &[String]) -> Result<Option<String>> {
        let out = self.proxy.exec(cmd, ADMIN_TIMEOUT).await?;
        Ok((out.success() && !out.output.trim().is_empty()).then_some(out.output))
    }
}

/// Files written into the proxy that the config names.
#[derive(Default)]
struct TlsFiles {
    cert: Option<(String, String)>,
    ca_root: Option<String>,
}

fn digest(parts: &[&String]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..6])
}

/// Take the route with `id` out of every group of both servers; returns it.
fn take_route(config: &mut Value, id: &str) -> Option<Value> {
    let mut taken = None;
    for server in [SERVER, TLS_SERVER] {
        let groups = config
            .pointer_mut(&format!("/apps/http/servers/{server}/routes"))
            .and_then(Value::as_array_mut);
        for group in groups.into_iter().flatten() {
            if let Some(list) = group
                .pointer_mut("/handle/0/routes")
                .and_then(Value::as_array_mut)
            {
                if let Some(at) = list.iter().position(|r| r["@id"] == id) {
                    taken = Some(list.remove(at));
                }
            }
        }
    }
    taken
}

/// The routes of the group `group` of `server`, created empty if missing.
fn group_routes<'a>(
    config: &'a mut Value,
    server: &str,
    group: &str,
) -> Option<&'a mut Vec<Value>> {
    config
        .pointer_mut(&format!("/apps/http/servers/{server}/routes"))?
        .as_array_mut()?
        .iter_mut()
        .find(|g| g["@id"] == group)?
        .pointer_mut("/handle/0/routes")?
        .as_array_mut()
}

/// `config` with nothing of `app`'s HTTPS: no redirect, policy, certificate
/// files or automated name; its route back among the plain HTTP ones.
fn without_tls(config: &Value, app: &str) -> Value {
    let mut config = config.clone();
    take_route(&mut config, &format!("rollback.redirect.{app}"));
    let route = config
        .pointer(&format!("/apps/http/servers/{TLS_SERVER}/routes"))
        .and_then(Value::as_array)
        .is_some_and(|groups| {
            groups.iter().any(|g| {
                g["handle"][0]["routes"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|r| r["@id"] == route_id(app).as_str()))
            })
        })
        .then(|| take_route(&mut config, &route_id(app)))
        .flatten();
    if let Some(route) = route {
        let group = if route.get("match").is_some() {
            HOST_ROUTES
        } else {
            ANY_ROUTES
        };
        if let Some(list) = group_routes(&mut config, SERVER, group) {
            list.push(route);
        }
    }
    // Indexing a Value mutably inserts a null: look before touching.
    let Some(tls) = config.pointer_mut("/apps/tls").filter(|t| t.is_object()) else {
        return config;
    };
    let policy_id = format!("rollback.tls.{app}");
    let mut names: Vec<Value> = Vec::new();
    if let Some(policies) = tls
        .pointer_mut("/automation/policies")
        .and_then(Value::as_array_mut)
    {
        for p in policies.iter().filter(|p| p["@id"] == policy_id.as_str()) {
            names.extend(p["subjects"].as_array().cloned().unwrap_or_default());
        }
        policies.retain(|p| p["@id"] != policy_id.as_str());
    }
    if let Some(automate) = tls
        .pointer_mut("/certificates/automate")
        .and_then(Value::as_array_mut)
    {
        automate.retain(|n| !names.contains(n));
    }
    if let Some(loaded) = tls
        .pointer_mut("/certificates/load_files")
        .and_then(Value::as_array_mut)
    {
        loaded.retain(|f| f["@id"] != format!("rollback.cert.{app}").as_str());
    }
    config
}

/// `config` with `app` served over HTTPS for `host` as `tls` says: the TLS
/// server, the app's route in it, a redirect from plain HTTP, and its
/// certificate's policy or files. Other apps' parts are left as they are,
/// and what is already as wanted keeps its place, so that the same setup
/// gives back the same config (no change, no reload).
fn with_tls(
    config: &Value,
    app: &str,
    host: &str,
    port: u16,
    tls: &Tls,
    files: &TlsFiles,
) -> Value {
    let mut config = if config.is_object() {
        config.clone()
    } else {
        json!({})
    };
    let has_tls_server = config
        .pointer(&format!("/apps/http/servers/{TLS_SERVER}/routes"))
        .and_then(Value::as_array)
        .is_some_and(|groups| groups.iter().any(|g| g["@id"] == TLS_ROUTES));
    if !has_tls_server {
        config["apps"]["http"]["servers"][TLS_SERVER] = tls_server();
    }
    let id = route_id(app);
    let in_tls = group_routes(&mut config, TLS_SERVER, TLS_ROUTES)
        .is_some_and(|l| l.iter().any(|r| r["@id"] == id.as_str()));
    if !in_tls {
        if let Some(route) = take_route(&mut config, &id) {
            if let Some(list) = group_routes(&mut config, TLS_SERVER, TLS_ROUTES) {
                list.push(route);
            }
        }
    }
    if let Some(list) = group_routes(&mut config, SERVER, HOST_ROUTES) {
        upsert(list, redirect_route(app, host, port));
    }
    let tls_app = &mut config["apps"]["tls"];
    if !tls_app.is_object() {
        *tls_app = json!({});
    }
    let policy_id = format!("rollback.tls.{app}");
    let cert_id = format!("rollback.cert.{app}");
    let policy = match tls {
        Tls::Acme { email, ca, .. } => {
            let mut issuer = json!({
                "module": "acme",
                // The HTTP challenge on port 80, which the proxy always serves.
                "challenges": {"tls-alpn": {"disabled": true}}
            });
            if let Some(email) = email {
                issuer["email"] = json!(email);
            }
            if let Some(ca) = ca {
                issuer["ca"] = json!(ca);
            }
            if let Some(root) = &files.ca_root {
                issuer["trusted_roots_pem_files"] = json!([root]);
            }
            Some(json!({"@id": policy_id, "subjects": [host], "issuers": [issuer]}))
        }
        Tls::Internal => {
            Some(json!({"@id": policy_id, "subjects": [host], "issuers": [{"module": "internal"}]}))
        }
        Tls::Files { .. } => None,
    };
    // The names an earlier policy of this app had, if not this one.
    let old_names: Vec<Value> = array(tls_app, "/automation/policies")
        .iter()
        .filter(|p| p["@id"] == policy_id.as_str())
        .flat_map(|p| p["subjects"].as_array().cloned().unwrap_or_default())
        .filter(|n| n != host)
        .collect();
    let automate = array(tls_app, "/certificates/automate");
    automate.retain(|n| !old_names.contains(n));
    if policy.is_some() && !automate.iter().any(|n| n == host) {
        automate.push(json!(host));
    }
    let policies = array(tls_app, "/automation/policies");
    match policy {
        Some(policy) => upsert(policies, policy),
        None => policies.retain(|p| p["@id"] != policy_id.as_str()),
    }
    let loaded = array(tls_app, "/certificates/load_files");
    match &files.cert {
        Some((cert, key)) => upsert(
            loaded,
            json!({"@id": cert_id, "certificate": cert, "key": key, "format": "pem"}),
        ),
        None => loaded.retain(|f| f["@id"] != cert_id.as_str()),
    }
    config
}

/// The array at `pointer` (`/a/b`) under `value`, created empty if missing.
fn array<'a>(value: &'a mut Value, pointer: &str) -> &'a mut Vec<Value> {
    let mut at = value;
    for key in pointer.trim_start_matches('/').split('/') {
        if !at.is_object() {
            *at = json!({});
        }
        at = &mut at[key];
    }
    if !at.is_array() {
        *at = json!([]);
    }
    match at {
        Value::Array(list) => list,
        _ => unreachable!("made an array above"),
    }
}

/// Replace the entry with `item`'s `@id` in place, or append `item`.
fn upsert(list: &mut Vec<Value>, item: Value) {
    match list.iter_mut().find(|e| e["@id"] == item["@id"]) {
        Some(entry) => *entry = item,
        None => list.push(item),
    }
}

fn tls_server() -> Value {
    json!({
        "listen": [format!(":{TLS_CONTAINER_PORT}")],
        // Names and certificates are set per app below, never guessed from routes.
        "automatic_https": {"disable": true},
        "tls_connection_policies": [{}],
        // HTTP/3 would need UDP published as well.
        "protocols": ["h1", "h2"],
        "routes": [
            {"@id": TLS_ROUTES, "handle": [{"handler": "subroute", "routes": []}]},
            {"handle": [{
                "handler": "static_response",
                "status_code": 503,
                "body": "no release of an app is routed here\n"
            }]}
        ]
    })
}

/// Plain HTTP for `host` goes to HTTPS; the ACME challenge is answered by
/// Caddy before any route.
fn redirect_route(app: &str, host: &str, port: u16) -> Value {
    let authority = if port == 443 {
        "{http.request.host}".to_owned()
    } else {
        format!("{{http.request.host}}:{port}")
    };
    json!({
        "@id": format!("rollback.redirect.{app}"),
        "match": [{"host": [host]}],
        "handle": [{
            "handler": "static_response",
            "status_code": 308,
            "headers": {"Location": [format!("https://{authority}{{http.request.uri}}")]}
        }],
        "terminal": true
    })
}

#[async_trait]
impl TrafficSwitch for Caddy {
    async fn ensure(&self) -> Result<()> {
        let booted = self.proxy.ensure().await?;
        let config = self.wait_admin(&booted).await?;
        self.ensure_base(&config).await?;
        self.ensure_tls().await
    }

    async fn current(&self) -> Result<Option<Upstream>> {
        let Some(route) = self.route().await? else {
            return Ok(None);
        };
        let host = route
            .primary
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&route.primary);
        // The dial names the container by its short id; name it by its full one.
        let container = match self
            .proxy
            .runtime()
            .inspect(&ContainerId(host.to_owned()))
            .await
        {
            Ok(info) => info.id,
            Err(e) if e.kind() == ErrorKind::NotFound => ContainerId(host.to_owned()),
            Err(e) => return Err(e),
        };
        Ok(Some(Upstream::new(container, route.primary)))
    }

    async fn switch(&self, to: &Upstream) -> Result<()> {
        match self.route().await? {
            None => {
                let group = if self.tls.is_some() {
                    TLS_ROUTES
                } else if self.host.is_some() {
                    HOST_ROUTES
                } else {
                    ANY_ROUTES
                };
                let route = app_route(&self.app, self.host.as_deref(), &to.address);
                self.admin_post(&format!("/id/{group}/handle/0/routes"), &route)
                    .await?;
            }
            Some(route) if route.primary == to.address => {}
            Some(route) if route.fallback == to.address => {
                // Back to the fallback (a switch back): one change. The
                // release being left is named nowhere after it, which is
                // what a drain would end with anyway. Requests that found
                // the primary just dead wait TRY_INTERVAL before their retry
                // on the fallback, and the change's reload would end that
                // wait with a 502: let them go first.
                tokio::time::sleep(RETRY_SETTLE).await;
                self.set_dial("primary", &to.address).await?;
            }
            Some(route) => {
                // Keep the old release as the fallback, then move primary.
                if route.fallback != route.primary {
                    self.set_dial("fallback", &route.primary).await?;
                }
                self.set_dial("primary", &to.address).await?;
            }
        }
        match self.route().await? {
            Some(route) if route.primary == to.address => Ok(()),
            other => Err(Error::conflict(format!(
                "the proxy did not take the switch of {} to {}: its route is {other:?}",
                self.app, to.address
            ))),
        }
    }

    async fn drain(&self, from: &Upstream, drain: Duration) -> Result<()> {
        let deadline = Instant::now() + drain;
        // Caddy counts requests in flight per upstream while its config
        // names it: `from` stays the fallback until the count is zero.
        loop {
            let stats = self
                .admin_get("/reverse_proxy/upstreams")
                .await?
                .unwrap_or(Value::Null);
            let in_flight = stats
                .as_array()
                .into_iter()
                .flatten()
                .filter(|u| u["address"] == from.address.as_str())
                .filter_map(|u| u["num_requests"].as_u64())
                .sum::<u64>();
            if in_flight == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL.min(deadline - Instant::now())).await;
        }
        if let Some(route) = self.route().await? {
            if route.fallback == from.address && route.primary != from.address {
                self.set_dial("fallback", &route.primary).await?;
            }
        }
        Ok(())
    }

    async fn wait_stopped(&self) -> Result<Error> {
        let id = match self.proxy.running().await {
            Ok(id) => id,
            // Stopped already: that is the answer.
            Err(e) if e.kind() == ErrorKind::Unavailable => return Ok(e),
            Err(e) => return Err(e),
        };
        let name = self.proxy.name().to_owned();
        match self.proxy.runtime().wait_exit(&id).await {
            Ok(exit) => Ok(Error::unavailable(format!(
                "the proxy container {name} stopped: {exit}"
            ))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Error::unavailable(format!(
                "the proxy container {name} was removed"
            ))),
            Err(e) => Err(e),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} in container {} on {}",
            self.proxy.image(),
            self.proxy.name(),
            self.proxy.listen()
        )
    }
}

fn route_id(app: &str) -> String {
    format!("rollback.app.{app}")
}

/// Whether the HTTP server has both groups of routes.
fn has_base(config: &Value) -> bool {
    let routes = &config["apps"]["http"]["servers"][SERVER]["routes"];
    let has = |id: &str| {
        routes
            .as_array()
            .is_some_and(|groups| groups.iter().any(|g| g["@id"] == id))
    };
    has(HOST_ROUTES) && has(ANY_ROUTES)
}

/// The status, body and `Etag` (a header or a trailer) of a raw HTTP/1.1
/// answer, its body whole or chunked.
fn parse_http(raw: &str) -> Option<(u16, String, Option<String>)> {
    let (head, rest) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut etag = header("etag");
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        let body = match header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            Some(len) => rest.get(..len)?.to_owned(),
            None => rest.to_owned(),
        };
        return Some((status, body, etag));
    }
    let mut body = String::new();
    let mut rest = rest;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // The trailers, up to the empty line.
            for line in after.split("\r\n").take_while(|l| !l.is_empty()) {
                if let Some((k, v)) = line.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("etag") {
                        etag = Some(v.trim().to_owned());
                    }
                }
            }
            return Some((status, body, etag));
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

fn base_server() -> Value {
    json!({
        "listen": [format!(":{CONTAINER_PORT}")],
        // Names and certificates are set per app (with_tls), never guessed from routes.
        "automatic_https": {"disable": true},
        "routes": [
            {"@id": HOST_ROUTES, "handle": [{"handler": "subroute", "routes": []}]},
            {"@id": ANY_ROUTES, "handle": [{"handler": "subroute", "routes": []}]},
            {"handle": [{
                "handler": "static_response",
                "status_code": 503,
                "body": "no release of an app is routed here\n"
            }]}
        ]
    })
}

fn app_route(app: &str, host: Option<&str>, address: &str) -> Value {
    let id = route_id(app);
    let mut route = json!({
        "@id": id,
        "handle": [{
            "handler": "reverse_proxy",
            "load_balancing": {
                "selection_policy": {"policy": "first"},
                "try_duration": TRY_DURATION,
                // Short: a config change (the switch back comes within
                // milliseconds of a crash) ends the waits of requests
                // retrying at that moment with a 502. The passive check has
                // marked `primary` down by then, so the retry goes to
                // `fallback` at once.
                "try_interval": format!("{}ms", TRY_INTERVAL.as_millis())
            },
            // One refused connection sends the next requests to the fallback.
            "health_checks": {"passive": {"fail_duration": "10s", "max_fails": 1}},
            "upstreams": [
                {"@id": format!("{id}.primary"), "dial": address},
                {"@id": format!("{id}.fallback"), "dial": address}
            ]
        }],
        "terminal": true
    });
    if let Some(host) = host {
        route["match"] = json!([{"host": [host]}]);
    }
    route
}

fn parse_route(route: &Value) -> Option<Route> {
    let app = route["@id"]
        .as_str()?
        .strip_prefix("rollback.app.")?
        .to_owned();
    let upstreams = route["handle"][0]["upstreams"].as_array()?;
    let dial = |slot: &str| {
        let id = format!("rollback.app.{app}.{slot}");
        upstreams
            .iter()
            .find(|u| u["@id"] == id.as_str())
            .and_then(|u| u["dial"].as_str())
            .map(str::to_owned)
    };
    let primary = dial("primary")?;
    let fallback = dial("fallback").unwrap_or_else(|| primary.clone());
    let host = route["match"][0]["host"][0].as_str().map(str::to_owned);
    Some(Route {
        app,
        host,
        primary,
        fallback,
    })
}

/// `wget` printing the body on stdout and, on failure, one line on stderr.
fn wget(options: &[&str], url: &str) -> Vec<String> {
    let mut cmd = vec!["wget", "-q", "-O", "-"];
    cmd.extend_from_slice(options);
    cmd.push(url);
    cmd.into_iter().map(str::to_owned).collect()
}

fn is_not_found(output: &str) -> bool {
    // Unknown ids are 404; paths through missing objects are 400 with "invalid traversal path".
    output.contains("HTTP/1.1 404") || output.contains("HTTP/1.0 404")
}

fn admin_error(proxy: &ProxyContainer, method: &str, path: &str, output: &str) -> Error {
    let line = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .trim_start_matches("wget: ");
    let kind = if output.contains("can't connect") || output.contains("Connection refused") {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Conflict
    };
    Error::new(
        kind,
        format!("the proxy {} refused {method} {path}: {line}", proxy.name()),
    )
}

/// The reason in a Caddy log line about a refused admin request.
fn refusal(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line).ok()?;
    if value["level"] != "error" {
        return None;
    }
    let msg = value["msg"].as_str().unwrap_or_default();
    let error = value["error"].as_str().unwrap_or_default();
    Some(format!("{msg} {error}").trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_reads_back_as_written() {
        let route = app_route("shop", Some("shop.example.com"), "abc:8080");
        let parsed = parse_route(&route).unwrap();
        assert_eq!(
            parsed,
            Route {
                app: "shop".into(),
                host: Some("shop.example.com".into()),
                primary: "abc:8080".into(),
                fallback: "abc:8080".into(),
            }
        );
        let route = app_route("shop", None, "abc:8080");
        assert_eq!(parse_route(&route).unwrap().host, None);
    }

    fn base() -> Value {
        let mut config = json!({});
        config["apps"]["http"]["servers"][SERVER] = base_server();
        config
    }

    fn acme() -> Tls {
        Tls::Acme {
            email: Some("ops@example.com".into()),
            ca: Some("https://ca.test/acme/local/directory".into()),
            ca_root_pem: Some("pem".into()),
        }
    }

    fn files(root: &str) -> TlsFiles {
        TlsFiles {
            cert: None,
            ca_root: Some(root.into()),
        }
    }

    #[test]
    fn the_same_https_setup_is_no_change() {
        let mut config = base();
        let route = app_route("shop", Some("shop.test"), "abc:8080");
        config
            .pointer_mut(&format!(
                "/apps/http/servers/{SERVER}/routes/0/handle/0/routes"
            ))
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(route);
        let once = with_tls(
            &config,
            "shop",
            "shop.test",
            18443,
            &acme(),
            &files("/r.pem"),
        );
        assert_ne!(once, config);
        let twice = with_tls(&once, "shop", "shop.test", 18443, &acme(), &files("/r.pem"));
        assert_eq!(once, twice);
        // The route moved to the TLS server; plain HTTP redirects.
        let tls_routes =
            &once["apps"]["http"]["servers"][TLS_SERVER]["routes"][0]["handle"][0]["routes"];
        assert_eq!(tls_routes[0]["@id"], "rollback.app.shop");
        let http_routes =
            &once["apps"]["http"]["servers"][SERVER]["routes"][0]["handle"][0]["routes"];
        assert_eq!(http_routes.as_array().unwrap().len(), 1);
        assert_eq!(
            http_routes[0]["handle"][0]["headers"]["Location"][0],
            "https://{http.request.host}:18443{http.request.uri}"
        );
        let policy = &once["apps"]["tls"]["automation"]["policies"][0];
        assert_eq!(policy["subjects"], json!(["shop.test"]));
        assert_eq!(
            policy["issuers"][0]["trusted_roots_pem_files"],
            json!(["/r.pem"])
        );
        assert_eq!(
            once["apps"]["tls"]["certificates"]["automate"],
            json!(["shop.test"])
        );
    }

    #[test]
    fn a_proxy_without_https_is_left_as_it_is() {
        assert_eq!(without_tls(&base(), "shop"), base());
        assert_eq!(without_tls(&Value::Null, "shop"), Value::Null);
    }

    #[test]
    fn apps_keep_their_own_https_parts() {
        let a = with_tls(&base(), "shop", "shop.test", 443, &acme(), &files("/r.pem"));
        let cert = TlsFiles {
            cert: Some(("/c.crt".into(), "/c.key".into())),
            ca_root: None,
        };
        let files_tls = Tls::Files {
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        let ab = with_tls(&a, "blog", "blog.test", 443, &files_tls, &cert);
        assert_eq!(
            ab["apps"]["tls"]["automation"]["policies"],
            a["apps"]["tls"]["automation"]["policies"]
        );
        assert_eq!(
            ab["apps"]["tls"]["certificates"]["load_files"][0]["certificate"],
            "/c.crt"
        );
        let redirect = &ab["apps"]["http"]["servers"][SERVER]["routes"][0]["handle"][0]["routes"];
        assert_eq!(redirect.as_array().unwrap().len(), 2);
        assert_eq!(
            redirect[0]["handle"][0]["headers"]["Location"][0],
            "https://{http.request.host}{http.request.uri}"
        );
        // Taking one app's HTTPS off leaves the other's.
        let b = without_tls(&ab, "shop");
        assert_eq!(b["apps"]["tls"]["automation"]["policies"], json!([]));
        assert_eq!(b["apps"]["tls"]["certificates"]["automate"], json!([]));
        assert_eq!(
            b["apps"]["tls"]["certificates"]["load_files"],
            ab["apps"]["tls"]["certificates"]["load_files"]
        );
        assert_eq!(
            without_tls(&b, "blog"),
            without_tls(&without_tls(&b, "blog"), "blog")
        );
    }

    #[test]
    fn an_answer_with_its_etag_in_a_trailer() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTrailer: ETag\r\n\
                   Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n1}\n\r\n0\r\n\
                   Etag: \"/config/ 87d98e07\"\r\n\r\n\n";
        let (status, body, etag) = parse_http(raw).unwrap();
        assert_eq!((status, body.as_str()), (200, "{\"a\":1}\n"));
        assert_eq!(etag.as_deref(), Some("\"/config/ 87d98e07\""));
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nEtag: \"x\"\r\n\r\nnull\n";
        let (_, body, etag) = parse_http(raw).unwrap();
        assert_eq!((body.as_str(), etag.as_deref()), ("null\n", Some("\"x\"")));
        assert_eq!(parse_http("sh: nc: not found\n"), None);
    }

    #[test]
    fn tls_debug_hides_the_key() {
        let tls = Tls::Files {
            cert_pem: "CERT".into(),
            key_pem: "SECRET KEY".into(),
        };
        assert!(!format!("{tls:?}").contains("SECRET"));
    }

    #[test]
    fn the_upstream_dials_the_short_id() {
        let id = ContainerId("0123456789abcdef0123".into());
        assert_eq!(Caddy::upstream(&id, 8080).address, "0123456789ab:8080");
    }

    #[test]
    fn refusals_come_from_error_lines() {
        let line = r#"{"level":"error","ts":1,"logger":"admin.api","msg":"request error","error":"loading config: bad dial","status_code":400}"#;
        assert_eq!(
            refusal(line).as_deref(),
            Some("request error loading config: bad dial")
        );
        assert_eq!(refusal(r#"{"level":"info","msg":"x"}"#), None);
        assert_eq!(refusal("not json"), None);
    }
}
