//! `rollback proxy boot|status|remove`: the `[proxy]` container on each host.

use rollback_core::TrafficSwitch;
use rollback_proxy::{Booted, Caddy};

use serde::Serialize;

use std::time::SystemTime;

use crate::adapters::{self, proxy_container};
use crate::cli::ProxyCommand;
use crate::commands::{json_done, Context};
use crate::config::ProxyConfig;
use crate::exit::{self, CliError};

#[derive(Serialize, Default)]
struct ProxyLine<'a> {
    host: &'a str,
    container: Option<String>,
    state: Option<String>,
    image: Option<String>,
    listen: Option<&'a str>,
    /// Where the app's requests go now.
    primary: Option<String>,
    /// Tried when `primary` refuses a connection.
    fallback: Option<String>,
    /// The HTTPS address, when the proxy serves it.
    tls_listen: Option<&'a str>,
    /// Every app routed by the proxy, with its certificate.
    apps: Vec<AppLine>,
    action: Option<&'static str>,
    error: Option<String>,
}

/// One app in the proxy.
#[derive(Serialize)]
struct AppLine {
    app: String,
    host: Option<String>,
    primary: String,
    tls: Option<CertLine>,
}

/// The certificate an app is served with.
#[derive(Serialize)]
struct CertLine {
    /// `acme`, `internal` or `files`.
    source: String,
    /// `None` while the proxy has none yet (an ACME order under way).
    issuer: Option<String>,
    not_after: Option<String>,
    days_left: Option<u64>,
    /// Less than 14 days left, or a sixth of a shorter lifetime.
    expires_soon: bool,
}

/// The `[proxy]` table, or an error naming the file.
fn proxy_config(ctx: &Context) -> Result<&ProxyConfig, CliError> {
    let config = ctx.config()?;
    config.hosts[0].proxy.as_ref().ok_or_else(|| {
        CliError::usage(format!(
            "{}: no [proxy] table (listen and app_port are required)",
            config.path.display()
        ))
    })
}

/// Run `proxy boot`, `proxy status` or `proxy remove` on every host.
pub async fn run(ctx: &Context, command: &ProxyCommand) -> Result<i32, CliError> {
    let config = ctx.config()?;
    let app = config.app()?.name.to_string();
    let proxy = proxy_config(ctx)?;
    let out = &ctx.output;
    let mut failed = false;
    for host in &config.hosts {
        let name = host.name.as_str();
        let mut line = ProxyLine {
            host: name,
            listen: Some(&proxy.listen),
            tls_listen: proxy.tls_listen.as_deref(),
            ..ProxyLine::default()
        };
        let result = async {
            let runtime = ctx.adapters.host(host).await?.runtime;
            let container = proxy_container(runtime, proxy)?;
            let caddy = adapters::caddy(container.clone(), proxy, &app);
            let engine =
                |what: &'static str| move |e: rollback_core::Error| CliError::core(what, &e);
            match command {
                ProxyCommand::Boot if ctx.dry_run => {
                    line.action = Some("would boot (dry run)");
                }
                ProxyCommand::Boot => {
                    let booted = container.ensure().await.map_err(engine("boot the proxy"))?;
                    // Waits for the admin API and loads the base config.
                    caddy.ensure().await.map_err(engine("boot the proxy"))?;
                    line.action = Some(match booted {
                        Booted::Created(_) => "created",
                        Booted::Restarted(_) => "started again",
                        Booted::Running(_) => "already running",
                    });
                }
                ProxyCommand::Remove if ctx.dry_run => {
                    line.action = Some("would remove (dry run)");
                }
                ProxyCommand::Remove => {
                    let removed = container
                        .remove()
                        .await
                        .map_err(engine("remove the proxy"))?;
                    line.action = Some(if removed { "removed" } else { "not there" });
                    return Ok(());
                }
                ProxyCommand::Status => {}
            }
            let info = container
                .inspect()
                .await
                .map_err(engine("inspect the proxy"))?;
            if let Some(info) = &info {
                line.container = Some(info.id.to_string());
                line.state = Some(info.state.to_string());
                line.image = Some(container.image().to_string());
                if info.state.is_running() {
                    let route = caddy
                        .route()
                        .await
                        .map_err(engine("read the proxy's route"))?;
                    if let Some(route) = route {
                        line.fallback = (route.fallback != route.primary).then_some(route.fallback);
                        line.primary = Some(route.primary);
                    }
                    line.apps = apps(&caddy)
                        .await
                        .map_err(engine("read the proxy's routes"))?;
                }
            }
            Ok::<_, CliError>(())
        }
        .await;
        if let Err(e) = result {
            failed = true;
            line.error = Some(e.message().to_owned());
        }
        if out.is_json() {
            out.json(&line);
        } else {
            out.line(&human(&line, &app, &proxy.name));
        }
    }
    let code = if failed { exit::FAILED } else { exit::OK };
    json_done(out, if failed { "failed" } else { "ok" }, code);
    Ok(code)
}

/// Every app in the proxy with its host and, over HTTPS, its certificate.
async fn apps(caddy: &Caddy) -> rollback_core::Result<Vec<AppLine>> {
    let certs = caddy.certificates().await?;
    let now = SystemTime::now();
    Ok(caddy
        .routes()
        .await?
        .into_iter()
        .map(|r| {
            let tls = certs.iter().find(|c| c.app == r.app).map(|c| {
                let left = c.info.as_ref().map(|i| i.remaining(now));
                CertLine {
                    source: c.source.clone(),
                    issuer: c.info.as_ref().map(|i| i.issuer.clone()),
                    not_after: c
                        .info
                        .as_ref()
                        .map(|i| humantime::format_rfc3339_seconds(i.not_after).to_string()),
                    days_left: left.map(|l| l.as_secs() / 86400),
                    expires_soon: c.info.as_ref().is_some_and(|i| i.expires_soon(now)),
                }
            });
            AppLine {
                app: r.app,
                host: r.host,
                primary: r.primary,
                tls,
            }
        })
        .collect())
}

fn app_human(a: &AppLine) -> String {
    let host = a.host.as_deref().unwrap_or("any host");
    let mut text = format!("  {} ({host}) -> {}", a.app, a.primary);
    match &a.tls {
        None => text.push_str(", http"),
        Some(CertLine {
            source,
            issuer: Some(issuer),
            not_after: Some(until),
            days_left,
            expires_soon,
        }) => {
            text.push_str(&format!(
                ", https, certificate ({source}) from {issuer}, expires {until} ({} days)",
                days_left.unwrap_or_default()
            ));
            if *expires_soon {
                text.push_str(" EXPIRES SOON");
            }
        }
        Some(c) => text.push_str(&format!(", https, no certificate yet ({})", c.source)),
    }
    text
}

fn human(line: &ProxyLine<'_>, app: &str, name: &str) -> String {
    let host = line.host;
    if let Some(e) = &line.error {
        return format!("[{host}] error: {e}");
    }
    let mut text = format!("[{host}] proxy {name}");
    if let Some(action) = line.action {
        text.push_str(&format!(": {action}"));
    }
    match (&line.state, &line.container) {
        (Some(state), Some(id)) => text.push_str(&format!(
            "; container {} {state}, {} on {}",
            &id[..id.len().min(12)],
            line.image.as_deref().unwrap_or("?"),
            match line.tls_listen {
                Some(tls) => format!("{} and {tls}", line.listen.unwrap_or("?")),
                None => line.listen.unwrap_or("?").to_owned(),
            }
        )),
        _ if line.action == Some("removed") || line.action == Some("not there") => {}
        _ => text.push_str("; no proxy container"),
    }
    match (&line.primary, &line.fallback) {
        (Some(p), Some(f)) => text.push_str(&format!("; {app} -> {p} (fallback {f})")),
        (Some(p), None) => text.push_str(&format!("; {app} -> {p}")),
        _ if line.state.is_some() => text.push_str(&format!("; no route for {app}")),
        _ => {}
    }
    for a in &line.apps {
        text.push('\n');
        text.push_str(&app_human(a));
    }
    text
}
