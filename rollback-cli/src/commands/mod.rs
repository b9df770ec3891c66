//! The commands: each takes a [`Context`] and returns an exit code or a [`CliError`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::adapters::Adapters;
use crate::cli::{Cli, Command, ConfigCommand, OutputFormat};
use crate::config::{Config, DEFAULT_FILE};
use crate::exit::{self, CliError};
use crate::output::{Output, Redactor};

pub mod config;
pub mod deploy;
pub mod lock;
pub mod man;
pub mod proxy;
pub mod prune;
pub mod status;
pub mod tag;

/// What every command gets.
pub struct Context {
    /// The config, when one was read.
    pub config: Option<Config>,
    /// The printer, also the observer of deploy events.
    pub output: Arc<Output>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Registry, engines and probes.
    pub adapters: Arc<dyn Adapters>,
    /// The hosts of the config that `--host` left out, in config order.
    pub left_out: Vec<String>,
}

impl Context {
    /// The config, or the error of a command that needs one.
    pub fn config(&self) -> Result<&Config, CliError> {
        self.config
            .as_ref()
            .ok_or_else(|| CliError::usage(format!("{DEFAULT_FILE}: no config file")))
    }
}

/// Whether the command reads the config file, and whether it must exist.
enum ConfigNeed {
    None,
    IfPresent,
    Required,
}

fn config_need(command: &Command) -> ConfigNeed {
    match command {
        Command::Completions { .. }
        | Command::Man(_)
        | Command::Init(_)
        | Command::Config(ConfigCommand::Schema) => ConfigNeed::None,
        // `tag` with two full references needs no [app].
        Command::Tag(_) => ConfigNeed::IfPresent,
        _ => ConfigNeed::Required,
    }
}

/// Read the config the command needs: `-c FILE`, else `./rollback.toml`.
fn load_config(cli: &Cli) -> Result<Option<Config>, CliError> {
    let need = config_need(&cli.command);
    let path: PathBuf = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
    match need {
        ConfigNeed::None => Ok(None),
        ConfigNeed::IfPresent if cli.config.is_none() && !Path::new(&path).exists() => Ok(None),
        _ => Ok(Some(Config::load(&path)?)),
    }
}

/// Run the parsed command line; returns the process exit code.
///
/// Every failure is printed once, by [`Output::error`].
pub async fn run(cli: Cli, adapters: Arc<dyn Adapters>) -> i32 {
    let mut output = Output::stdio(cli.output, cli.verbose);
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            output.error(&e);
            return e.exit_code();
        }
    };
    if let Some(c) = &config {
        output.set_redactor(Redactor::from_config(c));
        for warning in &c.warnings {
            output.warn(warning);
        }
    }
    run_with(cli, config, Arc::new(output), adapters).await
}

/// Run with an already loaded config and a given output (tests use this).
pub async fn run_with(
    cli: Cli,
    config: Option<Config>,
    output: Arc<Output>,
    adapters: Arc<dyn Adapters>,
) -> i32 {
    let all: Vec<String> = config
        .iter()
        .flat_map(|c| c.hosts.iter().map(|h| h.name.to_string()))
        .collect();
    let config = match (config, selection(&cli.command)) {
        (Some(config), Some(names)) if !names.is_empty() => match select_hosts(config, names) {
            Ok(config) => Some(config),
            Err(e) => {
                output.error(&e);
                return e.exit_code();
            }
        },
        (config, _) => config,
    };
    let left_out = all
        .into_iter()
        .filter(|name| {
            config
                .iter()
                .all(|c| !c.hosts.iter().any(|h| h.name.as_str() == name))
        })
        .collect();
    let ctx = Context {
        config,
        output: output.clone(),
        dry_run: cli.dry_run,
        adapters,
        left_out,
    };
    let result = match &cli.command {
        Command::Completions { shell } => {
            completions(*shell);
            Ok(exit::OK)
        }
        Command::Man(args) => man::run(args.out_dir.as_deref()),
        Command::Init(args) => {
            let path = cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
            config::init(&output, &path, args, cli.dry_run)
        }
        Command::Config(command) => config::run(&ctx, command),
        Command::Tag(args) => tag::run(&ctx, args).await,
        Command::Lock(command) => lock::run(&ctx, command).await,
        Command::Proxy(command) => proxy::run(&ctx, command).await,
        Command::Deploy(args) => deploy::deploy(&ctx, args).await,
        Command::Undo(args) => deploy::undo(&ctx, args.promote).await,
        Command::Promote(args) => deploy::promote(&ctx, args).await,
        Command::Recover(args) => deploy::recover(&ctx, args).await,
        Command::Prune => prune::run(&ctx).await,
        Command::Status(_) => status::status(&ctx).await,
        Command::History => status::history(&ctx).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output.error(&e);
            e.exit_code()
        }
    }
}

/// The `--host` names of a command that takes them.
fn selection(command: &Command) -> Option<&[String]> {
    match command {
        Command::Deploy(args) => Some(&args.hosts.hosts),
        Command::Undo(args) => Some(&args.hosts.hosts),
        Command::Recover(args) => Some(&args.subset.hosts.hosts),
        Command::Status(h) => Some(&h.hosts),
        _ => None,
    }
}

/// The config with only the hosts `names`, in config order, so no other
/// host is ever contacted; an unknown name is a usage error naming the
/// known ones.
pub fn select_hosts(mut config: Config, names: &[String]) -> Result<Config, CliError> {
    if let Some(unknown) = names
        .iter()
        .find(|n| !config.hosts.iter().any(|h| h.name.as_str() == n.as_str()))
    {
        let known: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(CliError::usage(format!(
            "--host {unknown:?}: no such host in the config (hosts: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    config
        .hosts
        .retain(|h| names.iter().any(|n| n.as_str() == h.name.as_str()));
    Ok(config)
}

fn completions(shell: clap_complete::Shell) {
    use clap::CommandFactory;
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "rollback", &mut std::io::stdout());
}

/// `{"outcome": "ok", "exit_code": N}` closing JSON output of non-deploy commands.
pub(crate) fn json_done(output: &Output, outcome: &str, code: i32) {
    if output.format() == OutputFormat::Json {
        output.json(&serde_json::json!({ "outcome": outcome, "exit_code": code }));
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
