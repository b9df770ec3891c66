//! `status` and `history`: read-only views of the hosts and the registry tags.

use std::time::SystemTime;

use rollback_core::{ContainerInfo, HostId, HostStatus, LockInfo, ProbeResult, Release};
use serde::Serialize;

use crate::commands::deploy::deployer;
use crate::commands::{json_done, Context};
use crate::exit::{self, CliError};
use crate::output::probe_text;

fn time(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

#[derive(Serialize)]
struct ContainerJson<'a> {
    id: &'a str,
    name: &'a str,
    release: Option<&'a Release>,
    state: String,
    running: bool,
    restart_count: u64,
    started_at: Option<String>,
    deployment: Option<String>,
}

impl<'a> From<&'a ContainerInfo> for ContainerJson<'a> {
    fn from(c: &'a ContainerInfo) -> Self {
        Self {
            id: c.id.as_str(),
            name: &c.name,
            release: c.release.as_ref(),
            state: c.state.to_string(),
            running: c.state.is_running(),
            restart_count: c.restart_count,
            started_at: time(c.started_at),
            deployment: c.deployment().map(|d| d.0),
        }
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    host: &'a HostId,
    container: Option<ContainerJson<'a>>,
    probe: Option<&'a ProbeResult>,
    lock: Option<&'a LockInfo>,
    error: Option<&'a str>,
}

fn release_name(c: &ContainerInfo) -> String {
    c.release
        .as_ref()
        .map_or_else(|| format!("image {}", c.image_id), Release::display_name)
}

/// `status`: exit 0 when every host could be read, else 1.
pub async fn status(ctx: &Context) -> Result<i32, CliError> {
    let (deployer, unreachable) = deployer(ctx, true).await?;
    let statuses = deployer.status().await;
    let out = &ctx.output;
    let mut failed = !unreachable.is_empty();
    let config = ctx.config()?;
    // Keep config order, reachable or not.
    for host in &config.hosts {
        if let Some((_, e)) = unreachable.iter().find(|(h, _)| *h == host.name) {
            if out.is_json() {
                out.json(&StatusJson {
                    host: &host.name,
                    container: None,
                    probe: None,
                    lock: None,
                    error: Some(e.message()),
                });
            } else {
                out.line(&format!("[{}] error: {}", host.name, e.message()));
            }
            continue;
        }
        let Some(s) = statuses.iter().find(|s| s.host == host.name) else {
            continue;
        };
        failed |= s.error.is_some();
        print_status(ctx, s);
    }
    let code = if failed { exit::FAILED } else { exit::OK };
    json_done(out, if failed { "failed" } else { "ok" }, code);
    Ok(code)
}

fn print_status(ctx: &Context, s: &HostStatus) {
    let out = &ctx.output;
    if out.is_json() {
        out.json(&StatusJson {
            host: &s.host,
            container: s.container.as_ref().map(ContainerJson::from),
            probe: s.probe.as_ref(),
            lock: s.lock.as_ref(),
            error: s.error.as_deref(),
        });
        return;
    }
    let head = match &s.container {
        Some(c) => format!(
            "[{}] {} {} ({}{}), container {}",
            s.host,
            c.name,
            release_name(c),
            c.state,
            if c.restart_count > 0 {
                format!(", restarted {} times", c.restart_count)
            } else {
                String::new()
            },
            &c.id.as_str()[..c.id.as_str().len().min(12)]
        ),
        None => format!("[{}] no app container", s.host),
    };
    out.line(&head);
    if let Some(p) = &s.probe {
        out.line(&format!("  health: {}", probe_text(p)));
    }
    out.line(&format!(
        "  lock: {}",
        s.lock
            .as_ref()
            .map_or_else(|| "free".to_owned(), |l| l.to_string())
    ));
    if let Some(e) = &s.error {
        out.line(&format!("  error: {e}"));
    }
}

/// `history`.
pub async fn history(ctx: &Context) -> Result<i32, CliError> {
    let (deployer, _) = deployer(ctx, false).await?;
    let history = deployer
        .history()
        .await
        .map_err(|e| CliError::core("read the history", &e))?;
    let app = deployer.app();
    let out = &ctx.output;
    if out.is_json() {
        let hosts: Vec<_> = history
            .hosts
            .iter()
            .map(|(h, cs)| {
                serde_json::json!({
                    "host": h,
                    "containers": cs.iter().map(ContainerJson::from).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.json(&serde_json::json!({
            "outcome": "ok",
            "exit_code": exit::OK,
            "repository": app.repository,
            "tags": {
                app.stable_tag.clone(): history.stable,
                app.previous_tag.clone(): history.previous,
            },
            "hosts": hosts,
        }));
        return Ok(exit::OK);
    }
    let tag_line = |tag: &str, d: &Option<rollback_core::Digest>| {
        format!(
            "{}:{tag} -> {}",
            app.repository,
            d.as_ref()
                .map_or_else(|| "(not set)".to_owned(), |d| d.to_string())
        )
    };
    out.line(&tag_line(&app.stable_tag, &history.stable));
    out.line(&tag_line(&app.previous_tag, &history.previous));
    for (host, containers) in &history.hosts {
        if containers.is_empty() {
            out.line(&format!("[{host}] no containers of {}", app.name));
        }
        let mut containers: Vec<&ContainerInfo> = containers.iter().collect();
        // Newest first.
        containers.sort_by_key(|c| std::cmp::Reverse(c.started_at));
        for c in containers {
            let digest = c.release.as_ref().map(|r| &r.digest);
            let mut marks = Vec::new();
            if digest.is_some() && digest == history.stable.as_ref() {
                marks.push(app.stable_tag.as_str());
            }
            if digest.is_some() && digest == history.previous.as_ref() {
                marks.push(app.previous_tag.as_str());
            }
            out.line(&format!(
                "[{host}] {} {} ({}){}{}",
                c.name,
                release_name(c),
                c.state,
                time(c.started_at)
                    .map(|t| format!(", started {t}"))
                    .unwrap_or_default(),
                if marks.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", marks.join(", "))
                }
            ));
        }
    }
    Ok(exit::OK)
}
