//! `deploy`, `undo` and `recover`: the commands that run the engine, and
//! their dry runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use rollback_core::{
    App, CancellationToken, ContainerTemplate, DeployReport, Deployer, DeploymentId, ExitCode,
    HolderCheck, HolderFate, HostId, HostTarget, LockInfo, Outcome, Phase, Plan, PruneReport,
    Release, Scope, Strategy, Target, UndoTarget,
};
use serde::Serialize;

use crate::adapters::start_first;
use crate::cli::{DeployArgs, DeployCommand, RecoverArgs};
use crate::commands::Context;
use crate::config::{Config, HostConfig};
use crate::exit::{self, CliError};
use crate::hooks::{HookRun, Hooks};
use crate::notify::{self, Notified};
use crate::output::{error_outcome, secrets_of, Output};

/// How the app's container runs on `host`; the engine names it and pins the image.
fn container(config: &Config, host: &HostConfig) -> ContainerTemplate {
    let c = &config.container;
    let mut t = ContainerTemplate::new().command(c.command.clone());
    for port in &host.ports {
        t = t.port(port.clone());
    }
    for (name, value) in &host.env {
        t = t.env(name.clone(), value.clone());
    }
    for volume in &c.volumes {
        t = t.volume(volume.clone());
    }
    if let Some(platform) = &c.platform {
        t = t.platform(platform.clone());
    }
    if let Some(network) = &c.network {
        t = t.network(network.clone());
    }
    if let Some(restart) = c.restart {
        t = t.restart(restart);
    }
    if let Some(stop_timeout) = c.stop_timeout {
        t = t.stop_timeout(stop_timeout);
    }
    for (key, value) in &c.labels {
        t = t.label(key.clone(), value.clone());
    }
    t.options(c.options.clone())
}

/// Connect to every host and build the engine.
///
/// With `lenient`, hosts that cannot be reached are returned apart instead
/// of failing the whole command (for `status`).
pub(crate) async fn deployer(
    ctx: &Context,
    lenient: bool,
) -> Result<(Deployer, Vec<(HostId, CliError)>), CliError> {
    let config = ctx.config()?;
    let app = config.app()?;
    let registry = ctx.adapters.registry()?;
    let mut hosts = Vec::new();
    let mut unreachable = Vec::new();
    let connections = config.hosts.iter().map(|h| ctx.adapters.host(h));
    for (host, connected) in config.hosts.iter().zip(join_all(connections).await) {
        if ctx.output.verbose() > 0 && !ctx.output.is_json() {
            ctx.output.line(&format!(
                "[{}] engine {}, health check {}",
                host.name,
                host.docker
                    .as_deref()
                    .unwrap_or("local (DOCKER_HOST or the default socket)"),
                host.health
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), ToString::to_string)
            ));
        }
        match connected {
            Ok(connected) => {
                let strategy = match (&connected.strategy, &host.proxy) {
                    (Some(strategy), _) => strategy.clone(),
                    (None, Some(proxy)) => Strategy::start_first(start_first(
                        connected.runtime.clone(),
                        proxy,
                        &app.name,
                    )?),
                    (None, None) => Strategy::stop_first(),
                };
                hosts.push(
                    HostTarget::new(
                        host.name.clone(),
                        connected.runtime,
                        connected.lock,
                        connected.probe,
                        container(config, host),
                    )
                    .with_strategy(strategy),
                )
            }
            Err(e) if lenient => unreachable.push((host.name.clone(), e)),
            Err(e) => {
                return Err(CliError::failed(format!(
                    "[{}] {}; nothing was changed",
                    host.name,
                    e.message()
                )))
            }
        }
    }
    let deployer = Deployer::new(app.clone(), registry, hosts)
        .with_holder(holder())
        .with_holder_check(Arc::new(LocalHolders { machine: machine() }))
        .with_health(config.health)
        .with_rollout(config.rollout)
        .with_observer(ctx.output.clone());
    #[cfg(feature = "test-checkpoints")]
    let deployer = match crate::checkpoints::EnvCheckpoints::from_env() {
        Some(checkpoints) => deployer.with_checkpoint(Arc::new(checkpoints)),
        None => deployer,
    };
    Ok((deployer, unreachable))
}

/// Who deploys, as the lock records it: `user@machine pid 123`.
fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{} pid {}", machine(), std::process::id())
}

/// This machine's name, as locks record it.
fn machine() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Proves a lock's holder running or gone when it ran on this machine, by
/// its process id; a holder elsewhere is unknown.
struct LocalHolders {
    machine: String,
}

impl HolderCheck for LocalHolders {
    fn fate(&self, lock: &LockInfo) -> HolderFate {
        holder_fate(&lock.holder, &self.machine, |pid| {
            // Without /proc nothing about a process can be proven.
            let proc = std::path::Path::new("/proc");
            proc.join("self")
                .exists()
                .then(|| proc.join(pid.to_string()).exists())
        })
    }
}

/// The fate of `holder` (`user@machine pid N`) seen from `machine`, where
/// `alive(pid)` says whether a process runs (`None`: cannot tell).
fn holder_fate(holder: &str, machine: &str, alive: impl Fn(u32) -> Option<bool>) -> HolderFate {
    let Some((who, pid)) = holder.rsplit_once(" pid ") else {
        return HolderFate::Unknown;
    };
    let here = who.split_once('@').is_some_and(|(_, m)| m == machine);
    match (here, pid.trim().parse::<u32>().ok().map(&alive)) {
        (true, Some(Some(true))) => HolderFate::Running,
        (true, Some(Some(false))) => HolderFate::Gone,
        _ => HolderFate::Unknown,
    }
}

/// Which engine command to run, and whether the tags move once every host
/// is verified.
/// `Recover` also says whether to take over a lock whose holder may live.
enum Run {
    Deploy(Target, bool),
    Undo(bool),
    Recover { promote: bool, force: bool },
}

impl Run {
    fn promote(&self) -> bool {
        match self {
            Run::Deploy(_, promote) | Run::Undo(promote) | Run::Recover { promote, .. } => *promote,
        }
    }

    fn force(&self) -> bool {
        matches!(self, Run::Recover { force: true, .. })
    }
}

/// Whether a run on the chosen hosts may move the tags: always with every
/// host of the config, with some only when `--promote` says so, since the
/// hosts left out may run another release.
pub fn subset_promotes(left_out: &[String], promote_flag: bool) -> bool {
    left_out.is_empty() || promote_flag
}

/// Whether the tags may move; when a subset holds them back, say why.
fn promotion_allowed(ctx: &Context, promote_flag: bool) -> bool {
    let allowed = subset_promotes(&ctx.left_out, promote_flag);
    if !allowed {
        let stable = ctx
            .config()
            .ok()
            .and_then(|c| c.app().ok())
            .map_or_else(|| "latest".to_owned(), |a| a.stable_tag.to_string());
        ctx.output.aside(&format!(
            "{stable} is not moved: --host leaves out {}, which may run another release; give --promote to move it",
            ctx.left_out.join(", ")
        ));
    }
    allowed
}

/// `deploy --tag | --digest [--no-promote]`.
pub async fn deploy(ctx: &Context, args: &DeployCommand) -> Result<i32, CliError> {
    let target = target(&args.target)?;
    let promote = !args.no_promote && promotion_allowed(ctx, args.promote);
    if ctx.dry_run {
        let (deployer, _) = deployer(ctx, false).await?;
        let deployer = deployer.with_promote(promote);
        return plan(ctx, &deployer, &target, "deploy", promote).await;
    }
    let (tag, digest) = match &target {
        Target::Tag(tag) => (Some(tag.to_string()), None),
        Target::Digest(digest) => (None, Some(digest.to_string())),
    };
    around(ctx, "deploy", tag, digest, Run::Deploy(target, promote)).await
}

/// The release `--tag` or `--digest` names.
fn target(args: &DeployArgs) -> Result<Target, CliError> {
    Ok(match (&args.tag, &args.digest) {
        (Some(tag), None) => {
            let tag = tag
                .parse()
                .map_err(|_| CliError::usage(format!("--tag {tag:?} is not a valid tag")))?;
            Target::Tag(tag)
        }
        (None, Some(digest)) => Target::Digest(digest.clone()),
        _ => return Err(CliError::usage("give exactly one of --tag or --digest")),
    })
}

/// `undo [--promote]`.
pub async fn undo(ctx: &Context, promote_flag: bool) -> Result<i32, CliError> {
    let promote = promotion_allowed(ctx, promote_flag);
    if ctx.dry_run {
        let (deployer, _) = deployer(ctx, false).await?;
        let deployer = deployer.with_promote(promote);
        let undo = deployer
            .undo_target()
            .await
            .map_err(|e| CliError::core("plan undo", &e))?;
        return match undo {
            UndoTarget::Deploy {
                digest, promote, ..
            } => plan(ctx, &deployer, &Target::Digest(digest), "undo", promote).await,
            UndoTarget::Refused(reason) => Err(CliError::failed(reason)),
            _ => Err(CliError::failed("undo: nothing to deploy")),
        };
    }
    let previous = ctx.config()?.app()?.previous_tag.clone();
    around(
        ctx,
        "undo",
        Some(previous.to_string()),
        None,
        Run::Undo(promote),
    )
    .await
}

/// `promote --tag | --digest`: the registry tags only, no host contacted.
pub async fn promote(ctx: &Context, args: &DeployArgs) -> Result<i32, CliError> {
    let target = target(args)?;
    let config = ctx.config()?;
    let deployer = Deployer::new(config.app()?.clone(), ctx.adapters.registry()?, Vec::new())
        .with_observer(ctx.output.clone());
    let app = deployer.app().clone();
    let (release, moves) = if ctx.dry_run {
        deployer.promote_plan(&target).await
    } else {
        deployer.promote(&target).await
    }
    .map_err(|e| CliError::core(format_args!("promote {target}"), &e))?;
    let changed = moves.stable.is_some();
    let out = &ctx.output;
    if out.is_json() {
        out.json(&serde_json::json!({
            "outcome": match (ctx.dry_run, changed) {
                (true, _) => "planned",
                (false, true) => "promoted",
                (false, false) => "unchanged",
            },
            "exit_code": exit::OK,
            "command": "promote",
            "dry_run": ctx.dry_run,
            "target": &release,
            "moves": {
                app.previous_tag.as_str(): moves.previous.as_ref(),
                app.stable_tag.as_str(): moves.stable.as_ref(),
            },
        }));
        return Ok(exit::OK);
    }
    if !changed {
        out.line(&format!(
            "{} already points at {} ({}): nothing to move",
            app.stable_tag,
            release.display_name(),
            release.digest
        ));
        return Ok(exit::OK);
    }
    let verb = if ctx.dry_run { "would move" } else { "moved" };
    if let Some(previous) = &moves.previous {
        out.line(&format!("{verb}: {} <- {previous}", app.previous_tag));
    }
    out.line(&format!(
        "{verb}: {} <- {} ({})",
        app.stable_tag,
        release.digest,
        release.display_name()
    ));
    if ctx.dry_run {
        out.line("nothing changed (dry run)");
    }
    Ok(exit::OK)
}

/// `recover [--promote]`.
pub async fn recover(ctx: &Context, args: &RecoverArgs) -> Result<i32, CliError> {
    let promote = promotion_allowed(ctx, args.subset.promote);
    if ctx.dry_run {
        let (deployer, _) = deployer(ctx, false).await?;
        return recover_plan(ctx, &deployer).await;
    }
    let run = Run::Recover {
        promote,
        force: args.force,
    };
    around(ctx, "recover", None, None, run).await
}

/// How the engine command ended.
enum Driven {
    /// With a report (printed already) and what retention did after it.
    Report(Box<DeployReport>, Option<PruneReport>),
    /// The user gave up waiting (second signal): exit with this code at once.
    Abandoned(i32),
}

/// Run an engine command inside its hooks: `pre_deploy` before anything is
/// contacted (a failure stops here, exit 1), then the command, retention
/// after a deployed release, then `post_deploy` and the webhook, whose
/// failures are reported and never change the exit code.
async fn around(
    ctx: &Context,
    command: &'static str,
    tag: Option<String>,
    digest: Option<String>,
    run: Run,
) -> Result<i32, CliError> {
    let config = ctx.config()?;
    let app = config.app()?;
    let deployment = DeploymentId::generate();
    let mut hook_run = HookRun {
        command,
        app: app.name.to_string(),
        tag,
        digest,
        hosts: config.hosts.iter().map(|h| h.name.to_string()).collect(),
        deployment_id: deployment.to_string(),
        started: Instant::now(),
    };
    let hooks = Hooks::new(
        config.hooks.clone(),
        secrets_of(config),
        config.substituted.keys().cloned().collect(),
        ctx.output.clone(),
    );
    if let Some(why) = hooks.pre_deploy(&hook_run).await.and_then(|r| r.failure()) {
        return Err(CliError::failed(format!(
            "hooks.pre_deploy {why}; nothing was changed"
        )));
    }
    let result = async {
        let (deployer, _) = deployer(ctx, false).await?;
        let deployer = deployer.with_deployment_id(deployment);
        let deployer = deployer
            .with_promote(run.promote())
            .with_forced_takeover(run.force());
        let prune = matches!(run, Run::Deploy(..));
        let mut driven = drive(ctx, &deployer, run).await;
        if let Driven::Report(report, pruned) = &mut driven {
            if prune && report.outcome == Outcome::Deployed {
                *pruned = super::prune::after_deploy(ctx, &deployer, config.retain).await;
            }
            ctx.output.report_pruned(report, pruned.as_ref());
        }
        Ok::<_, CliError>(driven)
    }
    .await;
    let (outcome, code, body) = match &result {
        Ok(Driven::Abandoned(code)) => return Ok(*code),
        Ok(Driven::Report(report, pruned)) => {
            if let Some(target) = &report.target {
                hook_run.tag = target
                    .tag
                    .as_ref()
                    .map(ToString::to_string)
                    .or(hook_run.tag);
                hook_run.digest = Some(target.digest.to_string());
            }
            (
                report.outcome.as_str(),
                report_code(report),
                ctx.output.outcome_text(report, pruned.as_ref()),
            )
        }
        Err(e) => (error_outcome(e), e.exit_code(), ctx.output.error_text(e)),
    };
    if let Some(why) = hooks
        .post_deploy(&hook_run, outcome, code)
        .await
        .and_then(|r| r.failure())
    {
        ctx.output.warn(&format!(
            "hooks.post_deploy {why}; the exit code stays {code}"
        ));
    }
    if let Some(target) = &config.notify {
        match notify::post(target, body).await {
            Notified::Posted(status) => ctx.output.aside(&format!(
                "notify: posted the outcome to {} ({status})",
                target.webhook_origin
            )),
            Notified::Failed(why) => ctx.output.warn(&format!(
                "notify: webhook {}: {why}; the exit code stays {code}",
                target.webhook_origin
            )),
        }
    }
    result.map(|_| code)
}

/// Run the engine until it reports, turning signals into cancellation.
async fn drive(ctx: &Context, deployer: &Deployer, run: Run) -> Driven {
    let cancel = CancellationToken::new();
    let work = async {
        match run {
            Run::Deploy(target, _) => deployer.deploy(target, cancel.clone()).await,
            Run::Undo(_) => deployer.undo(cancel.clone()).await,
            Run::Recover { .. } => deployer.recover(cancel.clone()).await,
        }
    };
    match until_second_signal(work, &cancel, &ctx.output).await {
        Ok(report) => Driven::Report(Box::new(report), None),
        Err(code) => Driven::Abandoned(code),
    }
}

fn report_code(report: &DeployReport) -> i32 {
    exit::for_outcome(report.outcome)
}

/// Whether a host last seen in `phase` may be left without a healthy
/// release, or with a retained container for `recover`: once the image is
/// pulled the engine goes on to stop the running container, so only the
/// phases before that and the settled ones are safe.
fn at_risk(phase: Phase) -> bool {
    !matches!(
        phase,
        Phase::Planned
            | Phase::Locked
            | Phase::Captured
            | Phase::Failed
            | Phase::RolledBack
            | Phase::Done
    )
}

/// Exit code when the user gives up waiting after a second signal.
pub const INTERRUPTED: i32 = ExitCode::Interrupted.code();

/// What to print and exit with when a second signal arrives: the last phase
/// of each host, and 4 when a host may be left without a healthy release.
pub fn abandon(phases: &[(Scope, Phase)]) -> (Vec<String>, i32) {
    let mut lines = vec!["second interrupt: exiting without waiting for the rollback".to_owned()];
    let mut code = INTERRUPTED;
    for (scope, phase) in phases {
        let Scope::Host(host) = scope else {
            continue;
        };
        let risk = at_risk(*phase);
        if risk {
            code = exit::ROLLBACK_FAILED;
        }
        lines.push(format!(
            "  [{host}] last seen {phase}{}",
            if risk {
                ": may be without a healthy release"
            } else {
                ""
            }
        ));
    }
    if code == exit::ROLLBACK_FAILED {
        lines.push(
            "run `rollback recover` to finish or revert, `rollback lock status` to see the locks"
                .to_owned(),
        );
    } else {
        lines.push("no host was switched; `rollback lock status` shows any lock left".to_owned());
    }
    (lines, code)
}

/// Await `work`; the first SIGINT/SIGTERM cancels it (the engine rolls
/// back), the second abandons it and returns the exit code to use.
async fn until_second_signal(
    work: impl Future<Output = DeployReport>,
    cancel: &CancellationToken,
    output: &Arc<Output>,
) -> Result<DeployReport, i32> {
    let mut signals = Signals::new();
    tokio::pin!(work);
    let mut interrupts = 0;
    loop {
        tokio::select! {
            report = &mut work => return Ok(report),
            _ = signals.next() => {}
        }
        interrupts += 1;
        if interrupts == 1 {
            output.warn(
                "interrupted: cancelling; switched hosts get their previous release back (interrupt again to exit at once)",
            );
            cancel.cancel();
        } else {
            let (lines, code) = abandon(&output.last_phases());
            for line in lines {
                output.warn(&line);
            }
            return Err(code);
        }
    }
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match &mut self.term {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[derive(Serialize)]
struct PlanJson<'a> {
    outcome: &'static str,
    exit_code: i32,
    command: &'a str,
    dry_run: bool,
    promote: bool,
    target: &'a Release,
    stable_before: Option<&'a rollback_core::Digest>,
    hosts: Vec<HostPlanJson<'a>>,
}

#[derive(Serialize)]
struct HostPlanJson<'a> {
    host: &'a HostId,
    current: Option<&'a Release>,
    container: Option<&'a rollback_core::ContainerId>,
    lock: Option<&'a LockInfo>,
    steps: &'a [String],
}

async fn plan(
    ctx: &Context,
    deployer: &Deployer,
    target: &Target,
    command: &str,
    promote: bool,
) -> Result<i32, CliError> {
    let plan: Plan = deployer
        .plan(target)
        .await
        .map_err(|e| CliError::core(format_args!("plan {command} of {target}"), &e))?;
    print_plan(&ctx.output, &plan, command, deployer.app(), promote);
    Ok(exit::OK)
}

/// Print a plan: what `command` would do, changing nothing.
pub fn print_plan(out: &Output, plan: &Plan, command: &str, app: &App, promote: bool) {
    if out.is_json() {
        out.json(&PlanJson {
            outcome: "planned",
            exit_code: exit::OK,
            command,
            dry_run: true,
            promote,
            target: &plan.target,
            stable_before: plan.stable_before.as_ref(),
            hosts: plan
                .hosts
                .iter()
                .map(|h| HostPlanJson {
                    host: &h.host,
                    current: h.current.as_ref(),
                    container: h.container.as_ref(),
                    lock: h.lock.as_ref(),
                    steps: &h.steps,
                })
                .collect(),
        });
        return;
    }
    out.line(&format!(
        "plan: {command} {} ({}) to {} host(s); {} is now {}",
        plan.target.display_name(),
        plan.target.digest,
        plan.hosts.len(),
        app.stable_tag,
        plan.stable_before
            .as_ref()
            .map_or_else(|| "not set".to_owned(), |d| d.to_string())
    ));
    for h in &plan.hosts {
        out.line(&format!(
            "[{}] running {}{}",
            h.host,
            h.current
                .as_ref()
                .map_or_else(|| "nothing".to_owned(), Release::display_name),
            h.lock
                .as_ref()
                .map(|l| format!("; LOCKED by {l}"))
                .unwrap_or_default()
        ));
        for (i, step) in h.steps.iter().enumerate() {
            out.line(&format!("  {}. {step}", i + 1));
        }
    }
    if !promote {
        out.line(&format!(
            "then, when every host is verified: no tag moves ({} stays at {})",
            app.stable_tag,
            plan.stable_before
                .as_ref()
                .map_or_else(|| "nothing".to_owned(), |d| d.to_string())
        ));
        out.line("nothing changed (dry run)");
        return;
    }
    out.line(&format!(
        "then, when every host is verified: {} <- {}, {} <- {}",
        app.previous_tag,
        plan.stable_before.as_ref().map_or_else(
            || "(unchanged: no stable release yet)".to_owned(),
            |d| d.to_string()
        ),
        app.stable_tag,
        plan.target.digest
    ));
    out.line("nothing changed (dry run)");
}

async fn recover_plan(ctx: &Context, deployer: &Deployer) -> Result<i32, CliError> {
    let history = deployer
        .history()
        .await
        .map_err(|e| CliError::core("read the hosts", &e))?;
    let retained = rollback_core::retained_name(&deployer.app().name);
    let out = &ctx.output;
    let mut hosts = Vec::new();
    for (host, containers) in &history.hosts {
        let kept = containers.iter().find(|c| c.name == retained);
        let line = match kept {
            Some(c) => format!(
                "[{host}] interrupted deploy: retained container {} ({}); recover would verify the app container and finish the deploy, or restore the retained release",
                c.name,
                c.release
                    .as_ref()
                    .map_or_else(|| "unknown release".to_owned(), Release::display_name)
            ),
            None => format!("[{host}] nothing to recover"),
        };
        hosts.push(serde_json::json!({
            "host": host,
            "interrupted": kept.is_some(),
            "retained": kept.and_then(|c| c.release.as_ref()),
        }));
        if !out.is_json() {
            out.line(&line);
        }
    }
    if out.is_json() {
        out.json(&serde_json::json!({
            "outcome": "planned",
            "exit_code": exit::OK,
            "command": "recover",
            "dry_run": true,
            "hosts": hosts,
        }));
    } else {
        out.line("nothing changed (dry run)");
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use rollback_core::Observer;

    #[test]
    fn a_holder_on_this_machine_is_proven_by_its_process() {
        let alive = |pid: u32| Some(pid == 7);
        // (holder, fate seen from machine "ci")
        for (holder, fate) in [
            ("u@ci pid 7", HolderFate::Running),
            ("u@ci pid 8", HolderFate::Gone),
            ("u@other pid 7", HolderFate::Unknown),
            ("u@other pid 8", HolderFate::Unknown),
            ("u@ci pid x", HolderFate::Unknown),
            ("pid 7", HolderFate::Unknown),
            ("unknown", HolderFate::Unknown),
        ] {
            assert_eq!(holder_fate(holder, "ci", alive), fate, "{holder}");
        }
        assert_eq!(
            holder_fate("u@ci pid 7", "ci", |_| None),
            HolderFate::Unknown
        );
    }

    #[test]
    fn a_subset_of_the_hosts_promotes_only_when_asked() {
        let left_out = ["prod-b".to_owned()];
        // (hosts left out, --promote) -> tags move
        for (left_out, flag, promotes) in [
            (&[][..], false, true),
            (&[][..], true, true),
            (&left_out[..], false, false),
            (&left_out[..], true, true),
        ] {
            assert_eq!(
                subset_promotes(left_out, flag),
                promotes,
                "{left_out:?} {flag}"
            );
        }
        let both = crate::cli::Cli::try_parse_from([
            "rollback",
            "deploy",
            "--tag",
            "v2",
            "--promote",
            "--no-promote",
        ]);
        assert!(
            both.is_err(),
            "--promote and --no-promote exclude each other"
        );
    }

    #[test]
    fn the_spec_merges_host_overrides_and_keeps_secrets_marked() {
        let config = Config::parse(
            r#"
[app]
name = "app"
repository = "127.0.0.1:5000/team/app"
[container]
ports = ["127.0.0.1:18080:8080"]
env = { MODE = "prod", TOKEN = "${T}" }
volumes = ["/data:/data"]
restart = "always"
stop_timeout = "3s"
[health]
docker = true
[[hosts]]
name = "a"
ports = ["127.0.0.1:18081:8080"]
env = { MODE = "canary" }
"#,
            std::path::Path::new("rollback.toml"),
            &|_| Some("tok-secret".into()),
        )
        .unwrap();
        let spec = container(&config, &config.hosts[0]);
        assert_eq!(spec.ports[0].host_port, Some(18081));
        let env: std::collections::HashMap<_, _> = spec.env.iter().cloned().collect();
        assert_eq!(env["MODE"].expose(), "canary");
        assert!(env["TOKEN"].is_secret());
        assert_eq!(env["TOKEN"].expose(), "tok-secret");
        assert_eq!(spec.volumes, vec!["/data:/data"]);
        assert_eq!(spec.restart, Some(rollback_core::RestartPolicy::Always));
        assert_eq!(spec.stop_timeout, Some(std::time::Duration::from_secs(3)));
        assert!(!format!("{spec:?}").contains("tok-secret"));
    }

    fn report(outcome: rollback_core::Outcome) -> DeployReport {
        DeployReport::new(outcome)
    }

    /// Send SIGTERM to this test process after `delay`.
    fn sigterm_after(delay: std::time::Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let status = tokio::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .await
                .unwrap();
            assert!(status.success());
        })
    }

    // One test for both cases: the signal reaches every listener of the process.
    #[cfg(unix)]
    #[tokio::test]
    async fn signals_cancel_first_and_abandon_second() {
        use std::time::Duration;
        let (output, _, err) = Output::captured(crate::cli::OutputFormat::Human, 0);
        let output = Arc::new(output);

        // First signal: the token is cancelled and the engine's report is awaited.
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let work = async move {
            token.cancelled().await;
            report(rollback_core::Outcome::RolledBack)
        };
        let kill = sigterm_after(Duration::from_millis(300));
        let result = until_second_signal(work, &cancel, &output).await;
        kill.await.unwrap();
        assert_eq!(result.unwrap().outcome, rollback_core::Outcome::RolledBack);
        assert!(
            err.text().contains("interrupted: cancelling"),
            "{}",
            err.text()
        );

        // Second signal: give up waiting; a host last seen switched means exit 4.
        output.on_event(&rollback_core::Event {
            seq: 1,
            time: std::time::SystemTime::now(),
            scope: Scope::Host("a".into()),
            phase: Phase::Switched,
            kind: rollback_core::EventKind::Transition,
            detail: String::new(),
        });
        let cancel = CancellationToken::new();
        let work = std::future::pending::<DeployReport>();
        let kills = tokio::spawn(async {
            sigterm_after(Duration::from_millis(300)).await.unwrap();
            sigterm_after(Duration::from_millis(300)).await.unwrap();
        });
        let result = until_second_signal(work, &cancel, &output).await;
        kills.await.unwrap();
        assert_eq!(result.unwrap_err(), exit::ROLLBACK_FAILED);
        assert!(cancel.is_cancelled());
        assert!(
            err.text()
                .contains("[a] last seen switched: may be without a healthy release"),
            "{}",
            err.text()
        );
    }

    #[test]
    fn a_second_signal_exits_4_only_when_a_host_is_at_risk() {
        let host = |name: &str| Scope::Host(name.into());
        let (lines, code) = abandon(&[
            (host("a"), Phase::Verified),
            (host("b"), Phase::Captured),
            (Scope::Fleet, Phase::Planned),
        ]);
        assert_eq!(code, exit::ROLLBACK_FAILED);
        assert!(lines
            .iter()
            .any(|l| l.contains("[a] last seen verified: may be without")));
        assert!(lines.iter().any(|l| l == "  [b] last seen captured"));
        assert!(lines.last().unwrap().contains("rollback recover"));
        let (_, code) = abandon(&[(host("a"), Phase::Pulled)]);
        assert_eq!(code, exit::ROLLBACK_FAILED, "the switch follows the pull");

        let (_, code) = abandon(&[(host("a"), Phase::Locked), (host("b"), Phase::RolledBack)]);
        assert_eq!(code, INTERRUPTED);

        // A host may be called `fleet`: it is a host like any other.
        let (lines, code) = abandon(&[
            (Scope::Fleet, Phase::Promoted),
            (host("fleet"), Phase::Switched),
        ]);
        assert_eq!(code, exit::ROLLBACK_FAILED, "{lines:?}");
        assert!(lines
            .iter()
            .any(|l| l.contains("[fleet] last seen switched")));
    }
}
