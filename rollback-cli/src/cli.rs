//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rollback_core::Digest;

/// Deploy a container image to Docker hosts, prove it healthy, and put the
/// previous release back by itself when it is not.
#[derive(Debug, Parser)]
#[command(
    name = "rollback",
    version,
    about,
    propagate_version = true,
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Config file [default: ./rollback.toml]
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Output format: human lines, or JSON lines (events, then one outcome object)
    #[arg(long, value_enum, default_value_t = OutputFormat::Human, global = true)]
    pub output: OutputFormat,

    /// Print the plan and change nothing
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// More detail (repeat for more)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "\
Output: reports on stdout (human lines, or JSON lines: events, then one outcome object);
errors on stderr.

Exit codes:
  0  deployed, or the command succeeded
  1  failed before anything changed, or an unexpected error
  2  usage or configuration error
  3  the new release failed; the previous release was restored and is healthy
  4  rollback failed: a host may be without a healthy release
  5  another deploy holds the lock
  130  interrupted twice before any host was switched";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines for people.
    Human,
    /// JSON lines for programs.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a release to every host, verify it, promote it or roll back
    Deploy(DeployCommand),
    /// Deploy the previous release again, with the same checks (after
    /// `deploy --no-promote`: the release that deploy replaced)
    Undo(SubsetArgs),
    /// Move the registry tags to a release, touching no host
    Promote(DeployArgs),
    /// Per host: running release, state, health, lock
    Status(HostSelection),
    /// Releases known from the registry tags and the hosts
    History,
    /// Registry-side copy of a manifest to a tag, moving no layers
    Tag(TagArgs),
    /// Finish or revert a deploy that was interrupted
    Recover(RecoverArgs),
    /// Remove the app's images beyond the newest [app] retain releases on every host
    Prune,
    /// Inspect or break a deploy lock
    #[command(subcommand)]
    Lock(LockCommand),
    /// Boot, inspect or remove the [proxy] container on each host
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Write a commented starter rollback.toml (never over an existing file)
    Init(InitArgs),
    /// Check the config file, or print its JSON Schema
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command to a folder
    Man(ManArgs),
}

/// `man [--out-dir DIR]`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write rollback.1 and a page per command (rollback-deploy.1, ...) to this folder
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `init`: what the starter file says.
#[derive(Debug, Args, Default)]
pub struct InitArgs {
    /// The container name on every host [default: the current folder's name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The image repository, without a tag [default: 127.0.0.1:5000/NAME]
    #[arg(long, value_name = "REPOSITORY")]
    pub repository: Option<String>,
    /// Start-first behind a proxy: add a [proxy] table
    #[arg(long)]
    pub proxy: bool,
    /// A host and its engine, as NAME=URL (unix://, tcp://, ssh://...); repeatable
    #[arg(long = "host", value_name = "NAME=URL", value_parser = parse_host)]
    pub hosts: Vec<(String, String)>,
    /// The port the app listens on inside the container
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub app_port: u16,
    /// The path that answers when the app is healthy
    #[arg(long, value_name = "PATH", default_value = "/health")]
    pub health_path: String,
}

/// `config`: check the file, or print its schema.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file without contacting any host or registry
    Check,
    /// Print the JSON Schema of rollback.toml, for editors
    Schema,
}

/// `deploy`: exactly one of a tag or a digest.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct DeployArgs {
    /// A tag of the app's repository
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// A manifest digest of the app's repository (sha256:...)
    #[arg(long, value_name = "DIGEST", value_parser = parse_digest)]
    pub digest: Option<Digest>,
}

/// `deploy`: the release, the hosts, and whether to promote it.
#[derive(Debug, Args)]
pub struct DeployCommand {
    /// The release.
    #[command(flatten)]
    pub target: DeployArgs,
    /// Verify and keep the release on the hosts, move no tag (`promote` does later)
    #[arg(long, conflicts_with = "promote")]
    pub no_promote: bool,
    /// With --host: move the tags even though some hosts of the config are left out
    #[arg(long)]
    pub promote: bool,
    /// The hosts.
    #[command(flatten)]
    pub hosts: HostSelection,
}

/// `undo`: the hosts, and whether a subset of them moves the tags.
#[derive(Debug, Args, Default, Clone)]
pub struct SubsetArgs {
    /// The hosts.
    #[command(flatten)]
    pub hosts: HostSelection,
    /// With --host: move the tags even though some hosts of the config are left out
    #[arg(long)]
    pub promote: bool,
}

/// `recover`: as `undo`, and whether to take over a lock whose holder may live.
#[derive(Debug, Args, Default, Clone)]
pub struct RecoverArgs {
    /// The hosts, and whether a subset moves the tags.
    #[command(flatten)]
    pub subset: SubsetArgs,
    /// Take over a lock whose holder cannot be proven gone (it may still run)
    #[arg(long)]
    pub force: bool,
}

/// `--host NAME`, repeatable: only these hosts of the config are contacted.
#[derive(Debug, Args, Default, Clone)]
pub struct HostSelection {
    /// Only this host of the config (repeatable) [default: every host]
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
}

/// `tag SRC DST`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// A tag or digest of the app's repository, or a full reference
    #[arg(value_name = "SRC")]
    pub source: String,
    /// A tag of the app's repository, or a full reference with a tag
    #[arg(value_name = "DST")]
    pub destination: String,
}

/// `lock status` / `lock release`.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the deploy lock on each host
    Status(LockArgs),
    /// Remove the deploy lock (after making sure its deploy is dead)
    Release(LockArgs),
}

/// `proxy boot` / `proxy status` / `proxy remove`.
#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Start the proxy on every host where it does not run
    Boot,
    /// The proxy container and where it sends the app's requests, per host
    Status,
    /// Stop and remove the proxy container (the app stops being served)
    Remove,
}

/// Options of the lock commands.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Only this host [default: every host]
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

fn parse_host(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, url)) if !name.trim().is_empty() && !url.trim().is_empty() => {
            Ok((name.trim().to_owned(), url.trim().to_owned()))
        }
        _ => Err(format!(
            "{s:?} is not NAME=URL (e.g. prod-a=ssh://deploy@prod-a)"
        )),
    }
}

fn parse_digest(s: &str) -> Result<Digest, String> {
    s.parse::<Digest>().map_err(|e| e.message().to_owned())
}

impl Command {
    /// Whether the command changes anything (and so honours `--dry-run`).
    pub fn is_changing(&self) -> bool {
        matches!(
            self,
            Command::Deploy(_)
                | Command::Undo(_)
                | Command::Promote(_)
                | Command::Tag(_)
                | Command::Recover(_)
                | Command::Init(_)
                | Command::Lock(LockCommand::Release(_))
                | Command::Proxy(ProxyCommand::Boot | ProxyCommand::Remove)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rollback").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn deploy_takes_a_tag_or_a_digest() {
        let cli = parse(&["deploy", "--tag", "v2", "-c", "x.toml", "--output", "json"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
        assert_eq!(cli.output, OutputFormat::Json);
        match cli.command {
            Command::Deploy(DeployCommand {
                target: DeployArgs { tag, digest },
                no_promote,
                promote,
                hosts,
            }) => {
                assert_eq!(tag.as_deref(), Some("v2"));
                assert!(digest.is_none());
                assert!(!no_promote);
                assert!(!promote);
                assert!(hosts.hosts.is_empty());
            }
            other => panic!("parsed as {other:?}"),
        }
        let d = format!("sha256:{}", "a".repeat(64));
        let cli = parse(&["--dry-run", "deploy", "--digest", &d]).unwrap();
        assert!(cli.dry_run);
        match cli.command {
            Command::Deploy(args) => assert_eq!(args.target.digest.unwrap().as_str(), d),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn hosts_are_chosen_by_repeating_host() {
        let cli = parse(&[
            "deploy",
            "--tag",
            "v2",
            "--host",
            "a",
            "--host",
            "b",
            "--no-promote",
        ])
        .unwrap();
        match cli.command {
            Command::Deploy(args) => {
                assert_eq!(args.hosts.hosts, ["a", "b"]);
                assert!(args.no_promote);
            }
            other => panic!("parsed as {other:?}"),
        }
        for (args, want) in [
            (vec!["undo", "--host", "a"], vec!["a"]),
            (vec!["status", "--host", "b"], vec!["b"]),
            (
                vec!["recover", "--host", "a", "--host", "b"],
                vec!["a", "b"],
            ),
        ] {
            let hosts = match parse(&args).unwrap().command {
                Command::Undo(a) => a.hosts.hosts,
                Command::Recover(a) => a.subset.hosts.hosts,
                Command::Status(h) => h.hosts,
                other => panic!("parsed as {other:?}"),
            };
            assert_eq!(hosts, want, "{args:?}");
        }
        match parse(&["recover", "--host", "a", "--promote", "--force"])
            .unwrap()
            .command
        {
            Command::Recover(args) => {
                assert!(args.force && args.subset.promote);
                assert_eq!(args.subset.hosts.hosts, ["a"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["undo", "--host", "a", "--promote"])
            .unwrap()
            .command
        {
            Command::Undo(args) => assert!(args.promote),
            other => panic!("parsed as {other:?}"),
        }
        let cli = parse(&["--dry-run", "promote", "--tag", "v3"]).unwrap();
        assert!(cli.command.is_changing());
        match cli.command {
            Command::Promote(args) => assert_eq!(args.tag.as_deref(), Some("v3")),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn usage_errors_are_exit_code_2() {
        let d = format!("sha256:{}", "a".repeat(64));
        for args in [
            vec!["deploy"],
            vec!["deploy", "--tag", "v1", "--digest", d.as_str()],
            vec!["deploy", "--digest", "sha256:abc"],
            vec!["tag", "only-one"],
            vec!["--output", "xml", "status"],
            vec!["frobnicate"],
            vec!["lock"],
            vec!["promote"],
            vec!["promote", "--tag", "v1", "--digest", d.as_str()],
            vec!["deploy", "--tag", "v1", "--host"],
            vec!["completions", "tcsh"],
        ] {
            let err = parse(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn flags_are_global_and_counted() {
        let cli = parse(&["status", "-vv", "--config", "a.toml"]).unwrap();
        assert_eq!(cli.verbose, 2);
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        let cli = parse(&["lock", "release", "--host", "prod-a", "--dry-run"]).unwrap();
        assert!(cli.dry_run);
        assert!(cli.command.is_changing());
        match cli.command {
            Command::Lock(LockCommand::Release(a)) => assert_eq!(a.host.as_deref(), Some("prod-a")),
            other => panic!("parsed as {other:?}"),
        }
        assert!(!parse(&["history"]).unwrap().command.is_changing());
    }
}
