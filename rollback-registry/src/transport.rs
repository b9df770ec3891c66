//! HTTP to one registry: bounded retries, body caps, and authentication
//! (anonymous, Basic, Bearer tokens covering every repository an operation touches).
//!
//! Authentication is lazy: a request goes out with what is known of its
//! host (nothing at first), and only a `401` with a `WWW-Authenticate`
//! challenge starts the Basic or Bearer flow, after which the request is
//! sent once more. What a host asked for is remembered, so later requests
//! carry credentials up front.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use rollback_core::{Error, Result};

use crate::auth::{challenge_error, Challenge, CredentialSource};
use crate::config::RegistryConfig;
use crate::credentials::{self, Credential};

/// The lifetime of a token whose answer gives none (the token protocol's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Rate-limit headers quoted when a registry keeps answering 429 (Docker Hub's among them).
const RATE_LIMIT_HEADERS: [&str; 4] = [
    "ratelimit-limit",
    "ratelimit-remaining",
    "docker-ratelimit-source",
    "retry-after",
];

/// A Bearer token and when to stop using it.
#[derive(Clone)]
struct CachedToken {
    header: HeaderValue,
    renew_at: Instant,
}

/// Bodies of error answers are read up to this size, for their message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// How a registry host wants to be spoken to, learnt from its first `401`
/// (a host that never sent one is spoken to anonymously).
#[derive(Debug, Clone)]
enum HostAuth {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One HTTP request, replayable for retries.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Vec<u8>>,
    /// How much of a successful answer's body may be read.
    pub(crate) body_limit: usize,
}

impl Request {
    pub(crate) fn new(method: Method, url: String) -> Self {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: None,
            body_limit: ERROR_BODY_LIMIT,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }
}

/// A complete answer: status, headers and the (capped) body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The registry's own error codes and messages (`MANIFEST_UNKNOWN: manifest unknown`).
    pub(crate) fn registry_errors(&self) -> String {
        #[derive(serde::Deserialize)]
        struct Body {
            errors: Vec<Item>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            code: Option<String>,
            message: Option<String>,
        }
        match serde_json::from_slice::<Body>(&self.body) {
            Ok(body) if !body.errors.is_empty() => body
                .errors
                .iter()
                .map(|e| match (&e.code, &e.message) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.clone(),
                    (None, Some(m)) => m.clone(),
                    (None, None) => String::new(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        }
    }

    /// "status 400 (MANIFEST_INVALID: ...)" for messages.
    pub(crate) fn describe(&self) -> String {
        let errors = self.registry_errors();
        if errors.is_empty() {
            format!("status {}", self.status.as_u16())
        } else {
            format!("status {} ({errors})", self.status.as_u16())
        }
    }
}

/// Counts of the requests an operation made, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `HEAD` of manifests and blobs.
    pub heads: u32,
    /// `GET` of manifests.
    pub manifest_gets: u32,
    /// `PUT` of manifests.
    pub manifest_puts: u32,
    /// Cross-repository mount requests (`POST .../blobs/uploads/?mount=`).
    pub blob_mounts: u32,
    /// Requests that serve authentication: token requests, and requests the
    /// registry answered `401` before credentials were sent (each is sent
    /// again with them, counted under its own kind).
    pub auth: u32,
    /// Repeats after a 429, a 5xx or a broken connection.
    pub retries: u32,
}

/// State shared by every operation of one client.
pub(crate) struct Transport {
    /// For `http://` URLs: built without root certificates, so speaking to a
    /// plain-HTTP registry never reads the system's certificate store.
    plain: OnceLock<reqwest::Client>,
    /// For `https://` URLs: verifies with the platform's roots; built on first use.
    tls: OnceLock<reqwest::Client>,
    config: RegistryConfig,
    source: CredentialSource,
    hosts: Mutex<HashMap<String, HostAuth>>,
    credentials: Mutex<HashMap<String, Option<Credential>>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

impl Transport {
    pub(crate) fn new(config: RegistryConfig) -> Result<Self> {
        let source = CredentialSource {
            config_file: config.docker_config_file(),
        };
        Ok(Transport {
            plain: OnceLock::new(),
            tls: OnceLock::new(),
            config,
            source,
            hosts: Mutex::default(),
            credentials: Mutex::default(),
            tokens: Mutex::default(),
        })
    }

    pub(crate) fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The client for `url`: the plain one for `http://`, the TLS one otherwise.
    fn client_for(&self, url: &str) -> Result<&reqwest::Client> {
        let plain = url.starts_with("http://");
        let cell = if plain { &self.plain } else { &self.tls };
        if let Some(client) = cell.get() {
            return Ok(client);
        }
        let client = self.build_client(plain)?;
        // Another request may have won the race: either client is as good.
        Ok(cell.get_or_init(|| client))
    }

    fn build_client(&self, plain: bool) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("rollback/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.config.request_timeout.min(Duration::from_secs(10)))
            .timeout(self.config.request_timeout);
        if plain {
            // No roots: an `https://` redirect is not followed but handed back,
            // and `try_once` sends the request again with the TLS client.
            builder = builder.tls_certs_only(std::iter::empty()).redirect(
                reqwest::redirect::Policy::custom(|attempt| {
                    if attempt.url().scheme() == "https" {
                        attempt.stop()
                    } else if attempt.previous().len() >= 10 {
                        attempt.error("too many redirects")
                    } else {
                        attempt.follow()
                    }
                }),
            );
        }
        builder
            .build()
            .map_err(|e| Error::other("cannot build the http client").with_source(e))
    }

    /// `http://host` for loopback and configured insecure hosts, else `https://host`.
    pub(crate) fn base_url(&self, host: &str) -> String {
        let name = host_name(host);
        let insecure = is_loopback(name)
            || self
                .config
                .insecure
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(name));
        let scheme = if insecure { "http" } else { "https" };
        format!("{scheme}://{host}")
    }

    /// Send `request`, repeating it after 429, 5xx and broken connections
    /// (bodies included) up to `max_retries` times. Other statuses are returned.
    async fn round_trip(
        &self,
        request: &Request,
        auth: Option<&HeaderValue>,
        counts: &mut RequestCounts,
    ) -> Result<Reply> {
        let mut attempt = 0u32;
        loop {
            let outcome = self.try_once(request, auth).await;
            let (retryable_error, retry_after) = match outcome {
                Ok(reply)
                    if reply.status == StatusCode::TOO_MANY_REQUESTS
                        || reply.status.is_server_error() =>
                {
                    let retry_after = reply
                        .header(RETRY_AFTER.as_str())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let limits = rate_limits(&reply);
                    let error = Error::unavailable(format!(
                        "{} {} answered {}{}",
                        request.method,
                        request.url,
                        reply.describe(),
                        if limits.is_empty() {
                            String::new()
                        } else {
                            format!(" [{limits}]")
                        }
                    ));
                    (error, retry_after)
                }
                Ok(reply) => return Ok(reply),
                Err(e) if e.kind().is_retryable() => (e, None),
                Err(e) => return Err(e),
            };
            let tries = attempt + 1;
            if attempt >= self.config.max_retries {
                return Err(retryable_error.context(format!("gave up after {tries} tries")));
            }
            // A wait longer than the bound is not worth holding a deploy for.
            if let Some(wait) = retry_after.filter(|w| *w > self.config.max_backoff) {
                return Err(retryable_error.context(format!(
                    "gave up after {tries} tries: the registry asks to wait {}s, more than the {}ms allowed",
                    wait.as_secs(),
                    self.config.max_backoff.as_millis()
                )));
            }
            let backoff = self
                .config
                .initial_backoff
                .saturating_mul(2u32.saturating_pow(attempt))
                .max(retry_after.unwrap_or_default())
                .min(self.config.max_backoff);
            tokio::time::sleep(backoff).await;
            attempt += 1;
            counts.retries += 1;
        }
    }

    async fn try_once(&self, request: &Request, auth: Option<&HeaderValue>) -> Result<Reply> {
        let unreachable = |e: reqwest::Error| {
            Error::unavailable(format!("{} {} failed", request.method, request.url)).with_source(e)
        };
        let send = |client: &reqwest::Client| {
            let mut builder = client.request(request.method.clone(), &request.url);
            for (name, value) in &request.headers {
                builder = builder.header(*name, value.as_str());
            }
            if let Some(auth) = auth {
                builder = builder.header(AUTHORIZATION, auth.clone());
            }
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            builder.send()
        };
        let client = self.client_for(&request.url)?;
        let mut response = send(client).await.map_err(unreachable)?;
        if response.status().is_redirection() && request.url.starts_with("http://") {
            let to_tls = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|l| l.starts_with("https://"));
            if to_tls {
                // The plain client stops there; the TLS one follows the redirect.
                let tls = self.client_for("https://")?;
                response = send(tls).await.map_err(unreachable)?;
            }
        }
        let status = response.status();
        let headers = response.headers().clone();
        let limit = if status.is_success() {
            request.body_limit
        } else {
            ERROR_BODY_LIMIT
        };
        if request.method != Method::HEAD {
            let declared = headers
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if status.is_success() && declared.is_some_and(|len| len > limit as u64) {
                return Err(too_large(request, limit));
            }
        }
        let mut body = Vec::new();
        if request.method != Method::HEAD {
            while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
                if body.len() + chunk.len() > limit {
                    if status.is_success() {
                        return Err(too_large(request, limit));
                    }
                    // An error page only serves the message: keep its start.
                    body.extend_from_slice(&chunk[..limit - body.len()]);
                    break;
                }
                body.extend_from_slice(&chunk);
            }
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    async fn credential(&self, host: &str) -> Result<Option<Credential>> {
        if let Some(found) = lock(&self.credentials).get(host) {
            return Ok(found.clone());
        }
        let file = self.source.config_file.clone();
        let key = host.to_owned();
        // A credential helper is a process: keep it off the async workers.
        let found = tokio::task::spawn_blocking(move || credentials::lookup(&file, &key))
            .await
            .map_err(|e| Error::other("credential lookup panicked").with_source(e))??;
        lock(&self.credentials).insert(host.to_owned(), found.clone());
        Ok(found)
    }
}

/// `ratelimit-limit: 100;w=21600, ratelimit-remaining: 0;w=21600, ...` of an answer.
fn rate_limits(reply: &Reply) -> String {
    RATE_LIMIT_HEADERS
        .iter()
        .filter_map(|name| reply.header(name).map(|v| format!("{name}: {}", v.trim())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn too_large(request: &Request, limit: usize) -> Error {
    Error::invalid_input(format!(
        "{} {} returned more than {limit} bytes; refusing to read it",
        request.method, request.url
    ))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `host` without its port; brackets of IPv6 literals removed.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_loopback(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Requests of one operation against one registry host, authorised for a
/// fixed set of scopes (`repository:a:pull`, `repository:b:pull,push`).
pub(crate) struct Session<'a> {
    transport: &'a Transport,
    host: String,
    base: String,
    scopes: Vec<String>,
    auth: Option<HeaderValue>,
    /// Whether `auth` came from the user's credentials (for error messages).
    used_credentials: bool,
    /// Whether `auth` is a token fetched by this session (not from the cache):
    /// a refusal of it is final.
    fresh_token: bool,
    ready: bool,
    pub(crate) counts: RequestCounts,
}

impl<'a> Session<'a> {
    pub(crate) fn new(transport: &'a Transport, host: &str, scopes: Vec<String>) -> Self {
        Session {
            transport,
            host: host.to_owned(),
            base: transport.base_url(host),
            scopes,
            auth: None,
            used_credentials: false,
            fresh_token: false,
            ready: false,
            counts: RequestCounts::default(),
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// `base` + `path` (path starts with `/v2/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A `Location` header made absolute.
    pub(crate) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// Send `request` authorised for the session's scopes. 401 and 403 become
    /// [`ErrorKind::Unauthorized`](rollback_core::ErrorKind::Unauthorized)
    /// naming the credential source; every other status is returned.
    pub(crate) async fn send(&mut self, request: Request) -> Result<Reply> {
        if !self.ready {
            // What an earlier operation learnt of the host; nothing is asked up front.
            let known = lock(&self.transport.hosts).get(&self.host).cloned();
            if let Some(host_auth) = known {
                self.authorize(&host_auth, false).await?;
            }
            self.ready = true;
        }
        let reply = self
            .transport
            .round_trip(&request, self.auth.as_ref(), &mut self.counts)
            .await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return self.check_forbidden(&request, reply);
        }
        self.counts.auth += 1;
        let header = reply.header(WWW_AUTHENTICATE.as_str()).unwrap_or("");
        if self.fresh_token && insufficient_scope(header) {
            // A token just issued for this very scope set: asking again gets the same.
            return Err(self.refused_action(&request, &reply));
        }
        // The host wants credentials, its challenge changed, or a cached token
        // expired: learn the challenge and send the request once more.
        let host_auth = match Challenge::parse(header) {
            Some(challenge) => host_auth_from(challenge),
            None => return Err(self.unauthorized()),
        };
        lock(&self.transport.hosts).insert(self.host.clone(), host_auth.clone());
        self.authorize(&host_auth, true).await?;
        let reply = self
            .transport
            .round_trip(&request, self.auth.as_ref(), &mut self.counts)
            .await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            let header = reply.header(WWW_AUTHENTICATE.as_str()).unwrap_or("");
            if insufficient_scope(header) {
                return Err(self.refused_action(&request, &reply));
            }
            return Err(self.unauthorized());
        }
        self.check_forbidden(&request, reply)
    }

    fn check_forbidden(&self, request: &Request, reply: Reply) -> Result<Reply> {
        if reply.status == StatusCode::FORBIDDEN {
            return Err(self.refused_action(request, &reply));
        }
        Ok(reply)
    }

    /// The registry authenticated the request but refused its action:
    /// "push to repository team/app refused by host for the credentials from FILE".
    fn refused_action(&self, request: &Request, reply: &Reply) -> Error {
        let action = if request.method == Method::GET || request.method == Method::HEAD {
            "pull"
        } else {
            "push"
        };
        let repository = repository_of(&request.url).unwrap_or("?");
        let whom = if self.used_credentials {
            format!(
                "the credentials from {}",
                self.transport.source.config_file.display()
            )
        } else {
            format!(
                "anonymous access (no credentials for {} in {})",
                self.host,
                self.transport.source.config_file.display()
            )
        };
        let errors = reply.registry_errors();
        let detail = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({errors})")
        };
        Error::unauthorized(format!(
            "{action} to repository {repository} refused by {} for {whom}{detail}",
            self.host
        ))
    }

    fn unauthorized(&self) -> Error {
        if self.used_credentials {
            self.transport.source.refused(&self.host)
        } else {
            self.transport.source.missing(&self.host)
        }
    }

    /// Set the `Authorization` header for `host_auth`; `refresh` skips cached tokens.
    async fn authorize(&mut self, host_auth: &HostAuth, refresh: bool) -> Result<()> {
        match host_auth {
            HostAuth::Basic => match self.transport.credential(&self.host).await? {
                Some(Credential::UsernamePassword { username, password }) => {
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{}", password.expose()));
                    self.auth = Some(sensitive(&format!("Basic {encoded}"))?);
                    self.used_credentials = true;
                }
                Some(Credential::IdentityToken(_)) => {
                    return Err(Error::unauthorized(format!(
                        "{} holds an identity token for {}, which asks for a username and password",
                        self.transport.source.config_file.display(),
                        self.host
                    )))
                }
                None => return Err(self.transport.source.missing(&self.host)),
            },
            HostAuth::Bearer { realm, service } => {
                let key = format!("{}|{}", self.host, self.scopes.join(" "));
                if !refresh {
                    let cached = lock(&self.transport.tokens).get(&key).cloned();
                    if let Some(token) = cached.filter(|t| t.renew_at > Instant::now()) {
                        self.auth = Some(token.header);
                        self.used_credentials = true;
                        self.fresh_token = false;
                        return Ok(());
                    }
                }
                let token = self.fetch_token(realm, service.as_deref()).await?;
                self.auth = Some(token.header.clone());
                self.fresh_token = true;
                lock(&self.transport.tokens).insert(key, token);
            }
        }
        Ok(())
    }

    /// One token for every scope of the session (the distribution token protocol).
    async fn fetch_token(&mut self, realm: &str, service: Option<&str>) -> Result<CachedToken> {
        let credential = self.transport.credential(&self.host).await?;
        self.used_credentials = credential.is_some();
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            params.push(("service", service));
        }
        let request = match &credential {
            Some(Credential::IdentityToken(token)) => {
                let scope = self.scopes.join(" ");
                params.push(("scope", &scope));
                params.push(("grant_type", "refresh_token"));
                params.push(("client_id", "rollback"));
                params.push(("refresh_token", token.expose()));
                Request::new(Method::POST, realm.to_owned())
                    .header(CONTENT_TYPE.as_str(), "application/x-www-form-urlencoded")
                    .body(form_encode(&params).into_bytes())
            }
            _ => {
                for scope in &self.scopes {
                    params.push(("scope", scope));
                }
                let separator = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{separator}{}", form_encode(&params));
                let mut request = Request::new(Method::GET, url);
                if let Some(Credential::UsernamePassword { username, password }) = &credential {
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{}", password.expose()));
                    request = request.header(AUTHORIZATION.as_str(), format!("Basic {encoded}"));
                }
                request
            }
        };
        self.counts.auth += 1;
        let reply = self
            .transport
            .round_trip(&request, None, &mut self.counts)
            .await
            .map_err(|e| e.context(format!("token request to {realm}")))?;
        if matches!(
            reply.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self.unauthorized());
        }
        if !reply.status.is_success() {
            return Err(Error::unauthorized(format!(
                "token endpoint {realm} answered {}",
                reply.describe()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let parsed: TokenReply = serde_json::from_slice(&reply.body).map_err(|_| {
            Error::unauthorized(format!("token endpoint {realm} answered no json token"))
        })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::unauthorized(format!("token endpoint {realm} answered no token"))
            })?;
        let lifetime = parsed
            .expires_in
            .filter(|s| *s > 0)
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        // Renew a little before the end, so a request never leaves with a token
        // that expires on the way.
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        Ok(CachedToken {
            header: sensitive(&format!("Bearer {token}"))?,
            renew_at: Instant::now() + lifetime - margin,
        })
    }
}

fn insufficient_scope(challenge: &str) -> bool {
    challenge_error(challenge).is_some_and(|e| e.eq_ignore_ascii_case("insufficient_scope"))
}

/// `team/app` of `https://host/v2/team/app/manifests/v1` (or `/blobs/...`).
fn repository_of(url: &str) -> Option<&str> {
    let path = url.split_once("/v2/")?.1;
    let end = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| path.rfind(m))
        .max()?;
    Some(&path[..end])
}

fn host_auth_from(challenge: Challenge) -> HostAuth {
    match challenge {
        Challenge::Basic => HostAuth::Basic,
        Challenge::Bearer { realm, service } => HostAuth::Bearer { realm, service },
    }
}

fn sensitive(value: &str) -> Result<HeaderValue> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| Error::unauthorized("credential holds characters not allowed in a header"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// `application/x-www-form-urlencoded` (also fine for query strings).
fn form_encode(params: &[(&str, &str)]) -> String {
    fn encode(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(k, &mut out);
        out.push('=');
        encode(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_plain_http_and_others_tls() {
        let mut config = RegistryConfig::default();
        config.insecure.push("registry.lan:5000".into());
        let transport = Transport::new(config).unwrap();
        assert_eq!(
            transport.base_url("127.0.0.1:15000"),
            "http://127.0.0.1:15000"
        );
        assert_eq!(transport.base_url("127.9.0.1"), "http://127.9.0.1");
        assert_eq!(
            transport.base_url("localhost:5000"),
            "http://localhost:5000"
        );
        assert_eq!(transport.base_url("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(
            transport.base_url("registry.lan:5000"),
            "http://registry.lan:5000"
        );
        assert_eq!(
            transport.base_url("registry.lan:5001"),
            "https://registry.lan:5001"
        );
        assert_eq!(
            transport.base_url("index.docker.io"),
            "https://index.docker.io"
        );
        assert_eq!(transport.base_url("10.0.0.1:5000"), "https://10.0.0.1:5000");
    }

    #[test]
    fn plain_http_never_builds_the_tls_client() {
        let transport = Transport::new(RegistryConfig::default()).unwrap();
        transport.client_for("http://127.0.0.1:15000/v2/").unwrap();
        transport.client_for("http://localhost:5000/v2/").unwrap();
        assert!(transport.plain.get().is_some());
        assert!(
            transport.tls.get().is_none(),
            "reading the system's roots is left to https registries"
        );
        transport
            .client_for("https://registry.example/v2/")
            .unwrap();
        assert!(transport.tls.get().is_some());
    }

    #[test]
    fn repositories_are_read_from_request_urls() {
        assert_eq!(
            repository_of("http://r:5000/v2/team/app/manifests/v1"),
            Some("team/app")
        );
        assert_eq!(
            repository_of("https://r/v2/a/blobs/uploads/?mount=sha256:x&from=b"),
            Some("a")
        );
        assert_eq!(repository_of("https://r/v2/"), None);
    }

    #[test]
    fn form_encoding_escapes_scopes() {
        assert_eq!(
            form_encode(&[("scope", "repository:a/b:pull,push"), ("service", "x y")]),
            "scope=repository%3Aa%2Fb%3Apull%2Cpush&service=x%20y"
        );
    }
}
