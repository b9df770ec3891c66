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
/// How long one admin call may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a freshly started Caddy gets to answer its admin API.
const BOOT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a request waits for an upstream that accepts a connection.
const TRY_DURATION: &str = "5s";
const POLL: Duration = Duration::from_millis(100);

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

/// The traffic switch of one app on one host, through a Caddy 2 proxy.
#[derive(Debug, Clone)]
pub struct Caddy {
    proxy: ProxyContainer,
    app: String,
    host: Option<String>,
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
        }
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
        let server = &config["apps"]["http"]["servers"][SERVER]["routes"];
        for group in server.as_array().into_iter().flatten() {
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
        let mut config = self.admin_get("/config/").await?.unwrap_or(Value::Null);
        let groups = config
            .pointer_mut(&format!("/apps/http/servers/{SERVER}/routes"))
            .and_then(Value::as_array_mut);
        for group in groups.into_iter().flatten() {
            if let Some(list) = group
                .pointer_mut("/handle/0/routes")
                .and_then(Value::as_array_mut)
            {
                list.retain(|r| r["@id"] != self.route_id());
            }
        }
        self.admin_post("/load", &config).await?;
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
        let body = body.to_string();
        let cmd = wget(
            &[
                "--header",
                "Content-Type: application/json",
                "--post-data",
                &body,
            ],
            &format!("{ADMIN}{path}"),
        );
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
        let routes = &config["apps"]["http"]["servers"][SERVER]["routes"];
        let has = |id: &str| {
            routes
                .as_array()
                .is_some_and(|groups| groups.iter().any(|g| g["@id"] == id))
        };
        if has(HOST_ROUTES) && has(ANY_ROUTES) {
            return Ok(());
        }
        let mut config = if config.is_object() {
            config.clone()
        } else {
            json!({})
        };
        config["apps"]["http"]["servers"][SERVER] = base_server();
        self.admin_post("/load", &config)
            .await
            .map_err(|e| e.context("load the proxy's base config"))
    }
}

#[async_trait]
impl TrafficSwitch for Caddy {
    async fn ensure(&self) -> Result<()> {
        let booted = self.proxy.ensure().await?;
        let config = self.wait_admin(&booted).await?;
        self.ensure_base(&config).await
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
                let group = if self.host.is_some() {
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
                // what a drain would end with anyway.
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

fn base_server() -> Value {
    json!({
        "listen": [format!(":{CONTAINER_PORT}")],
        // Certificates are not rollback's business; Caddy must not fetch any.
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
                "try_interval": "100ms"
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
