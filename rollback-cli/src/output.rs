//! Human and JSON output.
//!
//! Where things go: everything a command reports (event lines, the plan,
//! status tables, the final outcome) goes to **stdout**, in human lines or
//! JSON lines. Errors go to **stderr** as `error: ...`; in JSON mode they are
//! also printed to stdout as an outcome object (`failed`, or `invalid` for
//! usage and config errors), so a program reading stdout
//! always gets a last line to parse. The pull progress bar is drawn on
//! stdout only when it is a terminal and the format is human; JSON output
//! carries pull progress events only with `-v`.
//!
//! Every line passes through [`Redactor`], which replaces the value of
//! every `${VAR}` secret of the config by `***`, as a last line of defence
//! behind the engine's own rule of never printing secrets.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rollback_core::{
    ContainerId, DeployReport, EnvValue, Event, EventKind, ExitCode, HostId, Observer, Phase,
    ProbeResult, PruneReport, Release, Scope,
};
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::config::Config;
use crate::exit::CliError;

/// Secrets shorter than this are not searched for: replacing every `1` or
/// `ab` in the output would garble it and reveal the secret by its gaps.
pub const MIN_REDACTED_LEN: usize = 4;

/// Replaces secret values by `***` in text about to be printed.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Collect every secret of the config: secret env values and the webhook URL.
    pub fn from_config(config: &Config) -> Self {
        Self::new(secrets_of(config))
    }

    /// Redact these values.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_REDACTED_LEN)
            .flat_map(|s| {
                // JSON output escapes quotes and backslashes: look for that spelling too.
                let quoted = serde_json::to_string(&s).unwrap_or_default();
                let escaped = quoted
                    .strip_prefix('"')
                    .and_then(|q| q.strip_suffix('"'))
                    .unwrap_or(&s)
                    .to_owned();
                [s, escaped]
            })
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if !s.is_empty() && out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Every secret value of the config: `${VAR}` and `env_file` env values,
/// the value of each variable substituted into them (a secret of its own
/// inside a longer value), the webhook URL and the credentials in it.
pub fn secrets_of(config: &Config) -> Vec<String> {
    let env = config
        .container
        .env
        .values()
        .chain(config.hosts.iter().flat_map(|h| h.env.values()))
        .filter_map(|v| match v {
            EnvValue::Secret(s) => Some(s.expose().to_owned()),
            EnvValue::Plain(_) => None,
        });
    let webhook = config.notify.iter().flat_map(|n| {
        let url = n.webhook.expose().to_owned();
        let password = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned));
        std::iter::once(url).chain(password)
    });
    let substituted = config.substituted.values().map(|s| s.expose().to_owned());
    // A private key's base64 lines: never printed even if an engine or
    // proxy message quoted one.
    let key = config.proxy.iter().flat_map(|p| match &p.tls {
        Some(crate::config::TlsConfig::Files(f)) => f
            .key_pem
            .expose()
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    });
    env.chain(substituted).chain(webhook).chain(key).collect()
}

/// The printer every command writes through.
pub struct Output {
    format: OutputFormat,
    verbose: u8,
    redactor: Redactor,
    out: Mutex<Box<dyn Write + Send>>,
    err: Mutex<Box<dyn Write + Send>>,
    multi: MultiProgress,
    bars: Mutex<HashMap<HostId, ProgressBar>>,
    phases: Mutex<Vec<(Scope, Phase)>>,
    verifying_probes: Mutex<HashMap<HostId, String>>,
}

impl Output {
    /// Output to the process's stdout and stderr.
    pub fn stdio(format: OutputFormat, verbose: u8) -> Self {
        let draw = if format == OutputFormat::Human && std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self::new(
            format,
            verbose,
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
            draw,
        )
    }

    /// Output to the given writers (tests capture it this way).
    pub fn new(
        format: OutputFormat,
        verbose: u8,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        draw: ProgressDrawTarget,
    ) -> Self {
        Self {
            format,
            verbose,
            redactor: Redactor::default(),
            out: Mutex::new(out),
            err: Mutex::new(err),
            multi: MultiProgress::with_draw_target(draw),
            bars: Mutex::new(HashMap::new()),
            phases: Mutex::new(Vec::new()),
            verifying_probes: Mutex::new(HashMap::new()),
        }
    }

    /// Redact these secrets from now on.
    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = redactor;
    }

    /// The format.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Whether the format is JSON.
    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// The `-v` count.
    pub fn verbose(&self) -> u8 {
        self.verbose
    }

    /// One line on stdout, redacted, above any progress bar.
    pub fn line(&self, text: &str) {
        let text = self.redactor.redact(text);
        self.multi.suspend(|| {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            // A closed stdout (a pipe to `head`) must not turn into a panic.
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        });
    }

    /// One JSON line on stdout.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) {
        match serde_json::to_string(value) {
            Ok(text) => self.line(&text),
            Err(e) => self.error(&CliError::failed(format!("cannot encode output: {e}"))),
        }
    }

    /// The one formatter of failures: `error: ...` on stderr, and in JSON mode an
    /// outcome object on stdout too.
    pub fn error(&self, err: &CliError) {
        let message = self.redactor.redact(err.message());
        self.multi.suspend(|| {
            let mut e = self.err.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(e, "error: {message}");
            let _ = e.flush();
        });
        if self.is_json() {
            self.json(&ErrorJson {
                outcome: error_outcome(err),
                exit_code: err.exit_code(),
                reason: &message,
            });
        }
    }

    /// A line beside the report, such as a hook's output: on stdout for
    /// people, on stderr with JSON output so stdout stays JSON lines.
    pub fn aside(&self, text: &str) {
        if self.is_json() {
            let text = self.redactor.redact(text);
            self.multi.suspend(|| {
                let mut e = self.err.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(e, "{text}");
            });
        } else {
            self.line(text);
        }
    }

    /// `text` with every secret of the config replaced.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The outcome object `--output json` prints last for `report`, as JSON text, redacted.
    pub fn outcome_text(&self, report: &DeployReport, prune: Option<&PruneReport>) -> String {
        let outcome = OutcomeJson::from(report).with_prune(prune);
        self.redact(&serde_json::to_string(&outcome).unwrap_or_default())
    }

    /// The object `--output json` prints last for `err`, as JSON text, redacted.
    pub fn error_text(&self, err: &CliError) -> String {
        let message = self.redactor.redact(err.message());
        let json = serde_json::to_string(&ErrorJson {
            outcome: error_outcome(err),
            exit_code: err.exit_code(),
            reason: &message,
        });
        self.redact(&json.unwrap_or_default())
    }

    /// A warning on stderr.
    pub fn warn(&self, text: &str) {
        let text = self.redactor.redact(text);
        self.multi.suspend(|| {
            let mut e = self.err.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(e, "warning: {text}");
        });
    }

    /// The last phase seen for each host (and the fleet), in first-seen order.
    pub fn last_phases(&self) -> Vec<(Scope, Phase)> {
        self.phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember(&self, event: &Event) {
        if let (EventKind::Probe { result, .. }, Scope::Host(host), Phase::Verifying) =
            (&event.kind, &event.scope, event.phase)
        {
            // The report's last probe may be the restored release's; keep the new one's.
            self.verifying_probes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(host.clone(), probe_text(result));
        }
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        match phases.iter_mut().find(|(s, _)| *s == event.scope) {
            Some(entry) => entry.1 = event.phase,
            None => phases.push((event.scope.clone(), event.phase)),
        }
    }

    fn pull_bar(&self, host: &HostId, progress: &rollback_core::PullProgress) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(host.clone()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(0));
            if let Ok(style) = ProgressStyle::with_template(
                "[{prefix}] pulling {bar:30} {bytes}/{total_bytes} {msg}",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(host.to_string());
            bar
        });
        bar.set_length(progress.bytes_total.max(progress.bytes_done));
        bar.set_position(progress.bytes_done);
        bar.set_message(format!(
            "({}/{} layers)",
            progress.layers_done, progress.layers_total
        ));
    }

    fn finish_bar(&self, host: Option<&HostId>) {
        if let Some(host) = host {
            if let Some(bar) = self
                .bars
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(host)
            {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
        }
    }

    /// Print the final report of a deploy, undo or recover.
    pub fn report(&self, report: &DeployReport) {
        self.report_pruned(report, None);
    }

    /// Print the final report with what retention did after it.
    pub fn report_pruned(&self, report: &DeployReport, prune: Option<&PruneReport>) {
        if self.is_json() {
            self.json(&OutcomeJson::from(report).with_prune(prune));
            return;
        }
        let probes = self
            .verifying_probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for line in human_report(report, &probes) {
            self.line(&line);
        }
        for line in prune.map(prune_lines).unwrap_or_default() {
            self.line(&line);
        }
    }
}

impl Observer for Output {
    fn on_event(&self, event: &Event) {
        self.remember(event);
        if let EventKind::Pull(progress) = &event.kind {
            if let Scope::Host(host) = &event.scope {
                self.pull_bar(host, progress);
            }
            if self.is_json() && self.verbose == 0 {
                // Pull progress is frequent; JSON consumers ask for it with -v.
                return;
            }
        } else {
            self.finish_bar(event.scope.host());
        }
        if self.is_json() {
            self.json(event);
        } else if let Some(line) = human_event(event, self.verbose) {
            self.line(&line);
        }
    }
}

/// `[host]`, or `[fleet]` for events about the whole deploy.
pub fn scope_label(scope: &Scope) -> String {
    scope
        .host()
        .map_or_else(|| "fleet".to_owned(), ToString::to_string)
}

/// The human line of an event; `None` for events shown only with `-v`.
pub fn human_event(event: &Event, verbose: u8) -> Option<String> {
    human_event_full(event, verbose).map(|line| short_container_ids(&line))
}

fn human_event_full(event: &Event, verbose: u8) -> Option<String> {
    let host = scope_label(&event.scope);
    match &event.kind {
        EventKind::Transition => Some(if event.detail.is_empty() {
            format!("[{host}] {}", event.phase)
        } else {
            format!("[{host}] {}: {}", event.phase, event.detail)
        }),
        EventKind::Probe { attempt, result } => {
            Some(format!("[{host}] probe #{attempt}: {}", probe_text(result)))
        }
        EventKind::Pull(p) if verbose >= 2 => Some(format!(
            "[{host}] pulling: {}/{} layers, {} of {} bytes",
            p.layers_done, p.layers_total, p.bytes_done, p.bytes_total
        )),
        EventKind::Pull(_) => None,
        _ => Some(format!("[{host}] {}", event.detail)),
    }
}

/// `healthy: 200 OK`, `unhealthy: status is "DOWN"`.
pub fn probe_text(result: &ProbeResult) -> String {
    let status = match result {
        ProbeResult::Healthy(_) => "healthy",
        ProbeResult::Unhealthy(_) => "unhealthy",
        ProbeResult::Starting(_) => "starting",
    };
    if result.detail().is_empty() {
        status.to_owned()
    } else {
        format!("{status}: {}", result.detail())
    }
}

fn release_text(release: Option<&Release>) -> String {
    release.map_or_else(|| "nothing".to_owned(), Release::display_name)
}

/// The human lines of a final report; `verifying_probes` holds the last
/// probe answer of the new release per host, shown for failed hosts.
pub fn human_report(
    report: &DeployReport,
    verifying_probes: &HashMap<HostId, String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let target = report
        .target
        .as_ref()
        .map(|t| format!(" {}", t.display_name()))
        .unwrap_or_default();
    let headline = match report.outcome {
        rollback_core::Outcome::Deployed => format!("deployed{target}"),
        rollback_core::Outcome::Failed => format!("failed{target}: nothing was changed"),
        rollback_core::Outcome::PromotionFailed => {
            format!("deployed{target} on every host, but the registry tags were not moved")
        }
        rollback_core::Outcome::StableMoved => format!(
            "deployed{target} on every host, but the registry tags were not moved: someone else moved them"
        ),
        // A first deploy has no previous release: then nothing runs.
        rollback_core::Outcome::RolledBack if report.hosts.iter().all(|h| h.after.is_none()) => {
            format!("rolled back{target}: there was no previous release, nothing runs")
        }
        rollback_core::Outcome::RolledBack => {
            format!("rolled back{target}: the previous release runs and is healthy")
        }
        rollback_core::Outcome::RollbackFailed => {
            format!("ROLLBACK FAILED{target}: a host may be without a healthy release; act now")
        }
        rollback_core::Outcome::Locked => format!("locked{target}: another deploy is running"),
        other => format!("{other}{target}"),
    };
    lines.push(headline);
    if let Some(reason) = &report.reason {
        lines.push(format!("  reason: {reason}"));
    }
    if let Some(lock) = &report.lock_holder {
        lines.push(format!("  lock: {lock}"));
    }
    if report.promoted {
        lines.push("  registry tags moved".to_owned());
    }
    for h in &report.hosts {
        let unread = h.before.is_none() && h.after.is_none() && h.container.is_none();
        if unread && matches!(h.phase, Phase::Planned | Phase::Failed) {
            // Failed before the host was read (lock held, engine down):
            // "before nothing" would claim the host runs nothing.
            let what = if h.phase == Phase::Planned {
                "untouched"
            } else {
                "failed: nothing changed"
            };
            lines.push(format!("  [{}] {what}", h.host));
            if let Some(error) = &h.error {
                lines.push(format!("    error: {error}"));
            }
            continue;
        }
        lines.push(format!(
            "  [{}] {}: before {}, now {}{}",
            h.host,
            h.phase,
            release_text(h.before.as_ref()),
            release_text(h.after.as_ref()),
            h.container
                .as_ref()
                .map(|w| match w.container() {
                    Some(c) => format!(" (container {})", short_id(c)),
                    None => format!(" ({w})"),
                })
                .unwrap_or_default()
        ));
        if let Some(error) = &h.error {
            lines.push(format!("    error: {error}"));
        }
        if let Some(probe) = &h.last_probe {
            lines.push(format!("    last probe: {probe}"));
        }
        if h.error.is_some() {
            if let Some(probe) = verifying_probes.get(&h.host) {
                lines.push(format!("    last probe of the new release: {probe}"));
            }
        }
        if !h.logs.is_empty() {
            lines.push("    last log lines of the failed container:".to_owned());
            lines.extend(h.logs.iter().map(|l| format!("    | {l}")));
        }
    }
    lines
}

/// Container ids in their 12-character form, as the docker CLI prints them.
///
/// A run of exactly 64 lowercase hex digits is an engine id unless it follows
/// `sha256:`, which makes it a digest; digests keep their full form.
fn short_container_ids(line: &str) -> String {
    let bytes = line.as_bytes();
    let is_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < bytes.len() {
        if !is_hex(bytes[i]) || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            let next = line[i..]
                .char_indices()
                .nth(1)
                .map_or(line.len(), |(n, _)| i + n);
            out.push_str(&line[i..next]);
            i = next;
            continue;
        }
        let end = i + bytes[i..].iter().take_while(|&&b| is_hex(b)).count();
        let word_ends = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        let digest = line[..i].ends_with("sha256:");
        if end - i == 64 && word_ends && !digest {
            out.push_str(&line[i..i + 12]);
        } else {
            out.push_str(&line[i..end]);
        }
        i = end;
    }
    out
}

fn short_id(id: &ContainerId) -> &str {
    let s = id.as_str();
    &s[..s.len().min(12)]
}

/// The outcome object closing JSON output: the core report and its exit code.
#[derive(Debug, Serialize)]
pub struct OutcomeJson<'a> {
    /// The process exit code.
    pub exit_code: ExitCode,
    /// The report, its fields inline.
    #[serde(flatten)]
    pub report: &'a DeployReport,
    /// What retention did after a deployed release, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<&'a PruneReport>,
}

impl<'a> From<&'a DeployReport> for OutcomeJson<'a> {
    fn from(report: &'a DeployReport) -> Self {
        Self {
            exit_code: report.exit_code(),
            report,
            prune: None,
        }
    }
}

impl<'a> OutcomeJson<'a> {
    /// With what retention did after a deployed release.
    pub fn with_prune(mut self, prune: Option<&'a PruneReport>) -> Self {
        self.prune = prune;
        self
    }
}

/// The outcome name of a command that ended in `err`.
pub fn error_outcome(err: &CliError) -> &'static str {
    match err.exit_code() {
        crate::exit::USAGE => "invalid",
        crate::exit::LOCKED => "locked",
        _ => "failed",
    }
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    outcome: &'static str,
    exit_code: i32,
    reason: &'a str,
}

/// A writer that keeps what is written, for tests and for capturing output.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Output {
    /// An output whose stdout and stderr are captured.
    pub fn captured(format: OutputFormat, verbose: u8) -> (Self, Captured, Captured) {
        let (out, err) = (Captured::default(), Captured::default());
        let output = Self::new(
            format,
            verbose,
            Box::new(out.clone()),
            Box::new(err.clone()),
            ProgressDrawTarget::hidden(),
        );
        (output, out, err)
    }
}

/// One line per host: what went (or would go), what stays.
pub fn prune_lines(report: &PruneReport) -> Vec<String> {
    let mut lines = Vec::new();
    for host in &report.hosts {
        if host.error.is_some() {
            continue;
        }
        let verb = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let kept = format!(
            "kept {} (retain = {})",
            count(host.kept.len(), "image"),
            report.retain.get()
        );
        if host.removed.is_empty() {
            lines.push(format!("[{}] prune: nothing to remove; {kept}", host.host));
            continue;
        }
        let names: Vec<String> = host.removed.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "[{}] prune: {verb} {}, {} freed: {}; {kept}",
            host.host,
            count(host.removed.len(), "image"),
            bytes(host.bytes_freed()),
            names.join(", ")
        ));
    }
    if report.dry_run {
        lines.push("nothing removed (dry run)".to_owned());
    }
    lines
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `3.8 MiB`, as `docker system df` rounds sizes.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollback_core::{Digest, HostReport, LockInfo, Outcome, PullProgress};
    use std::time::{Duration, UNIX_EPOCH};

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn release(tag: &str, c: char) -> Release {
        Release::new("127.0.0.1:5000/team/app".parse().unwrap(), digest(c))
            .with_tag(tag.parse::<rollback_core::Tag>().unwrap())
    }

    fn rolled_back_report() -> DeployReport {
        DeployReport::new(Outcome::RolledBack)
            .with_target(Some(release("v2", 'b')))
            .with_hosts(vec![HostReport::new("prod-a".into(), Phase::RolledBack)
                .with_releases(Some(release("v1", 'a')), Some(release("v1", 'a')))
                .with_container(Some(ContainerId("0123456789abcdef".into()).into()))
                .with_error(Some("container exited with code 1".into()))
                .with_trail(
                    vec!["starting v2".into(), "fatal: no config".into()],
                    Some("unhealthy: connection refused".into()),
                )])
            .with_reason(Some("prod-a: container exited with code 1".into()))
    }

    #[test]
    fn outcome_json_has_the_documented_shape() {
        let report = rolled_back_report();
        let v = serde_json::to_value(OutcomeJson::from(&report)).unwrap();
        assert_eq!(v["outcome"], "rolled_back");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["target"]["tag"], "v2");
        assert_eq!(v["target"]["digest"], digest('b').as_str());
        assert_eq!(v["promoted"], false);
        assert_eq!(v["reason"], "prod-a: container exited with code 1");
        assert!(v["lock_holder"].is_null());
        let host = &v["hosts"][0];
        let mut keys: Vec<&str> = host
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "after",
                "before",
                "container",
                "error",
                "host",
                "last_probe",
                "logs",
                "phase",
                "switch_back_ms"
            ]
        );
        assert!(
            host["switch_back_ms"].is_null(),
            "stop-first switches no traffic back"
        );
        assert_eq!(host["host"], "prod-a");
        assert_eq!(host["phase"], "rolled_back");
        assert_eq!(host["after"]["digest"], digest('a').as_str());
        assert_eq!(host["before"]["tag"], "v1");
        assert_eq!(host["logs"][1], "fatal: no config");
        assert_eq!(host["last_probe"], "unhealthy: connection refused");

        let locked = DeployReport::new(Outcome::Locked)
            .with_reason(Some("locked".into()))
            .with_lock_holder(Some(LockInfo {
                app: "app".into(),
                deployment: "d1".into(),
                holder: "ci@runner pid 7".into(),
                target: "v3".into(),
                started_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            }));
        let v = serde_json::to_value(OutcomeJson::from(&locked)).unwrap();
        assert_eq!(v["exit_code"], 5);
        assert_eq!(v["lock_holder"]["holder"], "ci@runner pid 7");
        assert_eq!(v["lock_holder"]["started_at"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn hosts_a_failed_deploy_never_reached_are_untouched() {
        let report = DeployReport::new(Outcome::Failed)
            .with_hosts(vec![HostReport::untouched("prod-b".into())])
            .with_reason(Some("tag v9 not found".into()));
        assert_eq!(
            human_report(&report, &HashMap::new()),
            [
                "failed: nothing was changed",
                "  reason: tag v9 not found",
                "  [prod-b] untouched"
            ]
        );
    }

    #[test]
    fn hosts_that_failed_before_being_read_say_nothing_changed() {
        let host = HostReport::new("prod-a".into(), Phase::Failed)
            .with_error(Some("lock held by deployment d1".into()));
        let report = DeployReport::new(Outcome::Locked)
            .with_hosts(vec![host])
            .with_reason(Some("host prod-a: lock held by deployment d1".into()));
        let lines = human_report(&report, &HashMap::new());
        assert_eq!(
            lines[2..],
            [
                "  [prod-a] failed: nothing changed",
                "    error: lock held by deployment d1"
            ],
            "{lines:?}"
        );
    }

    #[test]
    fn human_report_shows_reason_logs_and_last_probe() {
        let probes = HashMap::from([(
            HostId::from("prod-a"),
            "unhealthy: status is \"DOWN\"".to_owned(),
        )]);
        let lines = human_report(&rolled_back_report(), &probes).join("\n");
        assert!(
            lines.contains("last probe of the new release: unhealthy: status is \"DOWN\""),
            "{lines}"
        );
        assert!(
            lines.starts_with(
                "rolled back v2 (bbbbbbbbbbbb): the previous release runs and is healthy"
            ),
            "{lines}"
        );
        assert!(
            lines.contains("reason: prod-a: container exited with code 1"),
            "{lines}"
        );
        assert!(lines.contains("[prod-a] rolled_back: before v1 (aaaaaaaaaaaa), now v1 (aaaaaaaaaaaa) (container 0123456789ab)"), "{lines}");
        assert!(
            lines.contains("last probe: unhealthy: connection refused"),
            "{lines}"
        );
        assert!(lines.contains("| fatal: no config"), "{lines}");
    }

    fn event(seq: u64, host: Option<&str>, phase: Phase, kind: EventKind, detail: &str) -> Event {
        Event {
            seq,
            time: UNIX_EPOCH,
            scope: host.map_or(Scope::Fleet, |h| Scope::Host(h.into())),
            phase,
            kind,
            detail: detail.into(),
        }
    }

    #[test]
    fn human_event_lines_shorten_container_ids_and_keep_digests() {
        let id = "3f2a1c".repeat(10) + "abcd";
        let digest = format!("sha256:{}", "a".repeat(64));
        let detail = format!(
            "started container {id}; previous container {id} kept ({digest}) x{}",
            "b".repeat(65)
        );
        let e = event(
            1,
            Some("prod-a"),
            Phase::Switched,
            EventKind::Transition,
            &detail,
        );
        let line = human_event(&e, 0).unwrap();
        assert_eq!(
            line,
            format!(
                "[prod-a] switched: started container 3f2a1c3f2a1c; previous container 3f2a1c3f2a1c kept ({digest}) x{}",
                "b".repeat(65)
            )
        );
        let (json, out, _) = Output::captured(OutputFormat::Json, 0);
        json.on_event(&e);
        assert!(out.text().contains(&id), "{}", out.text());
    }

    #[test]
    fn events_print_as_lines_or_json_lines() {
        let events = [
            event(
                1,
                Some("prod-a"),
                Phase::Switched,
                EventKind::Transition,
                "started 3f2a1c (v2)",
            ),
            event(
                2,
                Some("prod-a"),
                Phase::Verifying,
                EventKind::Probe {
                    attempt: 3,
                    result: ProbeResult::Unhealthy("status is \"DOWN\"".into()),
                },
                "",
            ),
            event(
                3,
                Some("prod-a"),
                Phase::Pulled,
                EventKind::Pull(PullProgress {
                    layers_total: 2,
                    layers_done: 1,
                    bytes_done: 10,
                    bytes_total: 20,
                }),
                "",
            ),
            event(
                4,
                None,
                Phase::Promoted,
                EventKind::Transition,
                "latest -> v2",
            ),
        ];
        let (human, out, _) = Output::captured(OutputFormat::Human, 0);
        for e in &events {
            human.on_event(e);
        }
        assert_eq!(
            out.text(),
            "[prod-a] switched: started 3f2a1c (v2)\n[prod-a] probe #3: unhealthy: status is \"DOWN\"\n[fleet] promoted: latest -> v2\n"
        );
        assert_eq!(
            human.last_phases(),
            vec![
                (Scope::Host("prod-a".into()), Phase::Pulled),
                (Scope::Fleet, Phase::Promoted)
            ]
        );

        let (json, out, _) = Output::captured(OutputFormat::Json, 0);
        for e in &events {
            json.on_event(e);
        }
        let lines: Vec<serde_json::Value> = out
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "pull progress only with -v");
        assert_eq!(lines[0]["seq"], 1);
        assert_eq!(lines[0]["host"], "prod-a");
        assert_eq!(lines[0]["phase"], "switched");
        assert_eq!(lines[0]["kind"], "transition");
        assert_eq!(lines[1]["result"]["status"], "unhealthy");
        assert!(lines[2]["host"].is_null());
    }

    #[test]
    fn sizes_read_as_docker_system_df_writes_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn secrets_are_redacted_from_every_line() {
        let (mut output, out, err) = Output::captured(OutputFormat::Json, 0);
        output.set_redactor(Redactor::new([
            "hunter2-secret".to_owned(),
            "q\"uote".to_owned(),
            "ab".to_owned(),
        ]));
        output.line("value hunter2-secret here, ab stays");
        output.json(&serde_json::json!({ "detail": "x q\"uote y" }));
        output.error(&CliError::failed("engine said hunter2-secret"));
        let all = format!("{}{}", out.text(), err.text());
        assert!(!all.contains("hunter2-secret"), "{all}");
        assert!(!all.contains("uote"), "{all}");
        assert!(all.contains("value *** here, ab stays"), "{all}");
        assert!(err.text().starts_with("error: engine said ***"), "{all}");
        let last: serde_json::Value =
            serde_json::from_str(out.text().lines().last().unwrap()).unwrap();
        assert_eq!(last["outcome"], "failed");
        assert_eq!(last["exit_code"], 1);
    }
}
