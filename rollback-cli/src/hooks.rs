//! `[hooks]`: commands run before and after `deploy`, `undo` and `recover`.
//!
//! A hook is `sh -c COMMAND` in the config file's folder, with the CLI's
//! environment less every variable the config substituted (`${DB_PASS}`
//! withholds `DB_PASS`) and every variable that holds a secret, plus `ROLLBACK_*`
//! variables describing the run. Its output is shown line by line, prefixed
//! `[hook NAME]`. It is killed (with everything it started) after the
//! timeout.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::config::HooksConfig;
use crate::output::Output;

/// What a run is about, as the hooks see it.
#[derive(Debug, Clone)]
pub struct HookRun {
    /// `deploy`, `undo` or `recover`.
    pub command: &'static str,
    /// The app name.
    pub app: String,
    /// The tag deployed, when known.
    pub tag: Option<String>,
    /// The digest deployed, when known.
    pub digest: Option<String>,
    /// Host names, in config order.
    pub hosts: Vec<String>,
    /// The deployment id recorded in locks and labels.
    pub deployment_id: String,
    /// When the command started, for `ROLLBACK_RUNTIME`.
    pub started: Instant,
}

impl HookRun {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ROLLBACK_COMMAND", self.command.to_owned()),
            ("ROLLBACK_APP", self.app.clone()),
            ("ROLLBACK_TAG", self.tag.clone().unwrap_or_default()),
            ("ROLLBACK_DIGEST", self.digest.clone().unwrap_or_default()),
            ("ROLLBACK_HOSTS", self.hosts.join(",")),
            ("ROLLBACK_DEPLOYMENT_ID", self.deployment_id.clone()),
        ]
    }
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResult {
    /// It exited with this code.
    Exited(i32),
    /// It did not exit within the timeout and was killed.
    TimedOut(Duration),
    /// It could not be started, or was ended by a signal.
    Failed(String),
}

impl HookResult {
    /// Whether the hook succeeded.
    pub fn is_success(&self) -> bool {
        *self == HookResult::Exited(0)
    }

    /// Why it failed, for a message; `None` on success.
    pub fn failure(&self) -> Option<String> {
        match self {
            HookResult::Exited(0) => None,
            HookResult::Exited(code) => Some(format!("exited with code {code}")),
            HookResult::TimedOut(limit) => Some(format!(
                "did not finish within {} and was killed",
                humantime::format_duration(*limit)
            )),
            HookResult::Failed(why) => Some(why.clone()),
        }
    }
}

/// Runs the configured hooks of one command.
pub struct Hooks {
    config: HooksConfig,
    /// Secret values of the config: variables holding one are not passed on.
    secrets: Vec<String>,
    /// Variables the config substituted: never passed on, whatever they hold.
    substituted: Vec<String>,
    output: Arc<Output>,
}

impl Hooks {
    /// Hooks of `config`, never passing on a variable named in `substituted`
    /// or one that holds one of `secrets`.
    pub fn new(
        config: HooksConfig,
        secrets: Vec<String>,
        substituted: Vec<String>,
        output: Arc<Output>,
    ) -> Self {
        Hooks {
            config,
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
            substituted,
            output,
        }
    }

    /// Run `pre_deploy`, if configured. `None` when there is none.
    pub async fn pre_deploy(&self, run: &HookRun) -> Option<HookResult> {
        let command = self.config.pre_deploy.as_ref()?;
        Some(self.run("pre_deploy", command, run.env()).await)
    }

    /// Run `post_deploy`, if configured, with the outcome and exit code.
    pub async fn post_deploy(
        &self,
        run: &HookRun,
        outcome: &str,
        exit_code: i32,
    ) -> Option<HookResult> {
        let command = self.config.post_deploy.as_ref()?;
        let mut env = run.env();
        env.push(("ROLLBACK_OUTCOME", outcome.to_owned()));
        env.push(("ROLLBACK_EXIT_CODE", exit_code.to_string()));
        env.push((
            "ROLLBACK_RUNTIME",
            run.started.elapsed().as_secs().to_string(),
        ));
        Some(self.run("post_deploy", command, env).await)
    }

    async fn run(&self, name: &str, command: &str, env: Vec<(&'static str, String)>) -> HookResult {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&self.config.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in std::env::vars_os() {
            let holds_secret = value
                .to_str()
                .is_some_and(|v| self.secrets.iter().any(|s| v.contains(s.as_str())));
            let substituted = key
                .to_str()
                .is_some_and(|k| self.substituted.iter().any(|s| s == k));
            if holds_secret || substituted {
                cmd.env_remove(&key);
            }
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        // Its own process group, so a timeout kills what the script started too.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => return HookResult::Failed(format!("cannot run sh: {e}")),
        };
        let prefix = format!("[hook {name}]");
        let out = child
            .stdout
            .take()
            .map(|s| tokio::spawn(show(s, prefix.clone(), self.output.clone())));
        let err = child
            .stderr
            .take()
            .map(|s| tokio::spawn(show(s, prefix.clone(), self.output.clone())));
        let limit = self.config.timeout;
        let result = match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => match status.code() {
                Some(code) => HookResult::Exited(code),
                None => HookResult::Failed(format!("ended by a signal ({status})")),
            },
            Ok(Err(e)) => HookResult::Failed(format!("cannot wait for it: {e}")),
            Err(_) => {
                kill_group(&mut child).await;
                HookResult::TimedOut(limit)
            }
        };
        // What it printed before it ended is shown; a grandchild that keeps
        // the pipe open does not hold the deploy.
        for reader in [out, err].into_iter().flatten() {
            let abort = reader.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), reader)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        result
    }
}

async fn show(stream: impl AsyncRead + Unpin, prefix: String, output: Arc<Output>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        output.aside(&format!("{prefix} {line}"));
    }
}

async fn kill_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // The group id is the shell's pid (process_group(0)).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OutputFormat;

    fn run() -> HookRun {
        HookRun {
            command: "deploy",
            app: "shop".into(),
            tag: Some("v2".into()),
            digest: None,
            hosts: vec!["a".into(), "b".into()],
            deployment_id: "d1".into(),
            started: Instant::now(),
        }
    }

    fn hooks(pre: &str, post: &str, timeout: Duration, dir: &std::path::Path) -> HooksConfig {
        HooksConfig {
            pre_deploy: Some(pre.into()),
            post_deploy: Some(post.into()),
            timeout,
            dir: dir.to_owned(),
        }
    }

    #[tokio::test]
    async fn hooks_get_the_run_in_their_env_in_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (output, text, _) = Output::captured(OutputFormat::Human, 0);
        let output = Arc::new(output);
        let h = Hooks::new(
            hooks(
                "echo \"$ROLLBACK_COMMAND $ROLLBACK_APP $ROLLBACK_TAG [$ROLLBACK_DIGEST] $ROLLBACK_HOSTS $ROLLBACK_DEPLOYMENT_ID\"; pwd",
                "echo \"$ROLLBACK_OUTCOME $ROLLBACK_EXIT_CODE\" >&2; exit 7",
                Duration::from_secs(10),
                dir.path(),
            ),
            vec![],
            vec![],
            output,
        );
        assert_eq!(h.pre_deploy(&run()).await, Some(HookResult::Exited(0)));
        let post = h.post_deploy(&run(), "rolled_back", 3).await.unwrap();
        assert_eq!(post, HookResult::Exited(7));
        assert_eq!(post.failure().as_deref(), Some("exited with code 7"));
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            text.text(),
            format!(
                "[hook pre_deploy] deploy shop v2 [] a,b d1\n[hook pre_deploy] {}\n[hook post_deploy] rolled_back 3\n",
                dir.display()
            )
        );
    }

    #[tokio::test]
    async fn a_variable_holding_a_secret_is_not_passed_on() {
        // Cargo's CARGO_MANIFEST_DIR stands in for a variable holding a secret.
        let secret = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (output, text, _) = Output::captured(OutputFormat::Human, 0);
        let output = Arc::new(output);
        let h = Hooks::new(
            hooks(
                "echo \"dir=[${CARGO_MANIFEST_DIR:-}] app=[${ROLLBACK_APP}]\"",
                "true",
                Duration::from_secs(10),
                dir.path(),
            ),
            vec![secret[1..].to_owned()],
            vec![],
            output,
        );
        assert_eq!(h.pre_deploy(&run()).await, Some(HookResult::Exited(0)));
        assert_eq!(text.text(), "[hook pre_deploy] dir=[] app=[shop]\n");
    }

    #[tokio::test]
    async fn a_substituted_variable_is_not_passed_on_whatever_it_holds() {
        // CARGO_PKG_NAME stands in for a variable the config substituted.
        let dir = tempfile::tempdir().unwrap();
        let (output, text, _) = Output::captured(OutputFormat::Human, 0);
        let h = Hooks::new(
            hooks(
                "echo \"name=[${CARGO_PKG_NAME:-}]\"",
                "true",
                Duration::from_secs(10),
                dir.path(),
            ),
            vec![],
            vec!["CARGO_PKG_NAME".to_owned()],
            Arc::new(output),
        );
        assert_eq!(h.pre_deploy(&run()).await, Some(HookResult::Exited(0)));
        assert_eq!(text.text(), "[hook pre_deploy] name=[]\n");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let (output, text, _) = Output::captured(OutputFormat::Human, 0);
        let output = Arc::new(output);
        let h = Hooks::new(
            hooks(
                "echo started; sleep 30 & sleep 30",
                "true",
                Duration::from_millis(300),
                dir.path(),
            ),
            vec![],
            vec![],
            output,
        );
        let start = Instant::now();
        let result = h.pre_deploy(&run()).await.unwrap();
        assert_eq!(result, HookResult::TimedOut(Duration::from_millis(300)));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(result.failure().unwrap().contains("within 300ms"));
        assert_eq!(text.text(), "[hook pre_deploy] started\n");
    }

    #[tokio::test]
    async fn no_hook_configured_runs_nothing() {
        let (output, text, _) = Output::captured(OutputFormat::Human, 0);
        let output = Arc::new(output);
        let h = Hooks::new(
            HooksConfig {
                pre_deploy: None,
                post_deploy: None,
                timeout: Duration::from_secs(1),
                dir: ".".into(),
            },
            vec![],
            vec![],
            output,
        );
        assert_eq!(h.pre_deploy(&run()).await, None);
        assert_eq!(h.post_deploy(&run(), "deployed", 0).await, None);
        assert_eq!(text.text(), "");
    }
}
