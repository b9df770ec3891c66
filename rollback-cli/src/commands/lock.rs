//! `rollback lock status` and `rollback lock release`.

use rollback_core::LockInfo;
use serde::Serialize;

use crate::cli::{LockArgs, LockCommand};
use crate::commands::{json_done, Context};
use crate::config::HostConfig;
use crate::exit::{self, CliError};

#[derive(Serialize)]
struct LockLine<'a> {
    host: &'a str,
    lock: Option<&'a LockInfo>,
    released: Option<bool>,
    error: Option<String>,
}

fn selected<'a>(ctx: &'a Context, args: &LockArgs) -> Result<Vec<&'a HostConfig>, CliError> {
    let config = ctx.config()?;
    match &args.host {
        None => Ok(config.hosts.iter().collect()),
        Some(name) => {
            let host = config
                .hosts
                .iter()
                .find(|h| h.name.as_str() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
                    CliError::usage(format!(
                        "--host {name:?}: no such host in {} (hosts: {})",
                        config.path.display(),
                        known.join(", ")
                    ))
                })?;
            Ok(vec![host])
        }
    }
}

/// Run `lock status` or `lock release`.
pub async fn run(ctx: &Context, command: &LockCommand) -> Result<i32, CliError> {
    let app = ctx.config()?.app()?.name.clone();
    let (args, release) = match command {
        LockCommand::Status(args) => (args, false),
        LockCommand::Release(args) => (args, !ctx.dry_run),
    };
    let out = &ctx.output;
    let mut failed = false;
    for host in selected(ctx, args)? {
        let name = host.name.as_str();
        let result = async {
            let locks = ctx.adapters.lock(host).await?;
            let lock = locks
                .status(&app)
                .await
                .map_err(|e| CliError::core("read the lock", &e))?;
            let released = if release && lock.is_some() {
                Some(
                    locks
                        .break_lock(&app)
                        .await
                        .map_err(|e| CliError::core("release the lock", &e))?,
                )
            } else {
                None
            };
            Ok::<_, CliError>((lock, released))
        }
        .await;
        match result {
            Ok((lock, released)) => {
                if out.is_json() {
                    out.json(&LockLine {
                        host: name,
                        lock: lock.as_ref(),
                        released,
                        error: None,
                    });
                    continue;
                }
                let line = match (&lock, released, command) {
                    (None, _, _) => format!("[{name}] no lock held on {app}"),
                    (Some(l), Some(true), _) => format!("[{name}] released the lock: {l}"),
                    (Some(l), Some(false), _) => {
                        format!("[{name}] the lock was gone before release: {l}")
                    }
                    (Some(l), None, LockCommand::Release(_)) => {
                        format!("[{name}] would release the lock: {l} (dry run)")
                    }
                    (Some(l), None, LockCommand::Status(_)) => format!("[{name}] locked: {l}"),
                };
                out.line(&line);
            }
            Err(e) => {
                failed = true;
                if out.is_json() {
                    out.json(&LockLine {
                        host: name,
                        lock: None,
                        released: None,
                        error: Some(e.message().to_owned()),
                    });
                } else {
                    out.line(&format!("[{name}] error: {}", e.message()));
                }
            }
        }
    }
    let code = if failed { exit::FAILED } else { exit::OK };
    json_done(out, if failed { "failed" } else { "ok" }, code);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OutputFormat;
    use crate::commands::testing::{context, FakeAdapters};
    use crate::config::Config;
    use rollback_core::{LockInfo, MockDeployLock};
    use std::path::Path;
    use std::sync::Arc;

    fn config() -> Config {
        Config::parse(
            "[app]\nname = \"app\"\nrepository = \"127.0.0.1:5000/team/app\"\n[health]\ndocker = true\n\
             [[hosts]]\nname = \"a\"\n[[hosts]]\nname = \"b\"\n",
            Path::new("rollback.toml"),
            &|_| None,
        )
        .unwrap()
    }

    fn held() -> LockInfo {
        LockInfo {
            app: "app".into(),
            deployment: "d42".into(),
            holder: "ci@runner pid 9".into(),
            target: "v2".into(),
            started_at: std::time::UNIX_EPOCH,
        }
    }

    fn locks(lock: Option<LockInfo>, releases: usize) -> Arc<MockDeployLock> {
        let mut mock = MockDeployLock::new();
        mock.expect_status()
            .withf(|app| app == "app")
            .returning(move |_| Ok(lock.clone()));
        // `lock release` is the break-glass: it frees whoever holds the lock.
        mock.expect_break_lock()
            .times(releases)
            .returning(|_| Ok(true));
        mock.expect_release().never();
        Arc::new(mock)
    }

    #[tokio::test]
    async fn status_lists_every_host() {
        let adapters = FakeAdapters::default()
            .lock("a", locks(Some(held()), 0))
            .lock("b", locks(None, 0));
        let (ctx, out, _) = context(Some(config()), OutputFormat::Human, false, adapters);
        let code = run(&ctx, &LockCommand::Status(LockArgs { host: None }))
            .await
            .unwrap();
        assert_eq!(code, exit::OK);
        let text = out.text();
        assert!(
            text.contains("[a] locked: deployment d42 of v2 by ci@runner pid 9"),
            "{text}"
        );
        assert!(text.contains("[b] no lock held on app"), "{text}");
    }

    #[tokio::test]
    async fn release_removes_only_held_locks_and_dry_run_none() {
        let adapters = FakeAdapters::default()
            .lock("a", locks(Some(held()), 1))
            .lock("b", locks(None, 0));
        let (ctx, out, _) = context(Some(config()), OutputFormat::Json, false, adapters);
        let code = run(&ctx, &LockCommand::Release(LockArgs { host: None }))
            .await
            .unwrap();
        assert_eq!(code, exit::OK);
        let lines: Vec<serde_json::Value> = out
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["host"], "a");
        assert_eq!(lines[0]["released"], true);
        assert_eq!(lines[0]["lock"]["deployment"], "d42");
        assert!(lines[1]["lock"].is_null());
        assert_eq!(lines[2]["outcome"], "ok");

        let adapters = FakeAdapters::default().lock("a", locks(Some(held()), 0));
        let (ctx, out, _) = context(Some(config()), OutputFormat::Human, true, adapters);
        let code = run(
            &ctx,
            &LockCommand::Release(LockArgs {
                host: Some("a".into()),
            }),
        )
        .await
        .unwrap();
        assert_eq!(code, exit::OK);
        assert!(
            out.text().contains("[a] would release the lock"),
            "{}",
            out.text()
        );
    }

    #[tokio::test]
    async fn unknown_host_is_a_usage_error_and_unreachable_engine_exit_1() {
        let adapters = FakeAdapters::default();
        let (ctx, _, _) = context(Some(config()), OutputFormat::Human, false, adapters);
        let e = run(
            &ctx,
            &LockCommand::Status(LockArgs {
                host: Some("zz".into()),
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(e.message().contains("hosts: a, b"), "{e}");

        // No lock for "b": the fake refuses to connect.
        let adapters = FakeAdapters::default().lock("a", locks(None, 0));
        let (ctx, out, _) = context(Some(config()), OutputFormat::Human, false, adapters);
        let code = run(&ctx, &LockCommand::Status(LockArgs { host: None }))
            .await
            .unwrap();
        assert_eq!(code, exit::FAILED);
        assert!(
            out.text().contains("[b] error: cannot reach"),
            "{}",
            out.text()
        );
    }
}
