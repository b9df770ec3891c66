//! The `rollback` command line as a library: config file, commands, human
//! and JSON output, exit codes. `main.rs` only parses, runs and exits.
//!
//! - [`config`] reads and validates `rollback.toml` (errors name file, line
//!   and key; `${VAR}` values become secrets);
//! - [`cli`] is the clap definition; [`commands`] run it against
//!   [`adapters::Adapters`] ([`adapters::RealAdapters`] in the binary);
//! - [`output`] prints human lines or JSON lines and redacts secrets;
//! - [`exit`] holds the exit codes and the one error type.
//!
//! Layers: `commands` calls `output`, `adapters`, `hooks` and `notify`;
//! none of those calls a command.
//!
//! ```
//! use std::path::Path;
//! use rollback_cli::config::{Config, HealthCheck};
//!
//! let text = r#"
//! [app]
//! name = "ody"
//! repository = "127.0.0.1:5000/team/ody"
//! [container]
//! env = { PASSWORD = "${DB_PASSWORD}" }
//! [health]
//! tcp = "127.0.0.1:18080"
//! "#;
//! let config = Config::parse(text, Path::new("rollback.toml"), &|var| {
//!     (var == "DB_PASSWORD").then(|| "hunter22".to_owned())
//! })
//! .unwrap();
//! assert_eq!(config.hosts[0].name.as_str(), "local");
//! assert!(config.container.env["PASSWORD"].is_secret());
//! assert_eq!(
//!     config.hosts[0].health,
//!     Some(HealthCheck::Tcp { address: "127.0.0.1:18080".into() })
//! );
//!
//! let err = Config::parse("[app]\nname = \"ody\"\nrepo = \"x\"\n", Path::new("rollback.toml"), &|_| None)
//!     .unwrap_err();
//! assert!(err.to_string().starts_with("rollback.toml:3: unknown field `repo` in [app]"));
//! ```

#![warn(missing_docs)]

pub mod adapters;
#[cfg(feature = "test-checkpoints")]
pub mod checkpoints;
pub mod cli;
pub mod commands;
pub mod config;
pub mod exit;
pub mod hooks;
pub mod notify;
pub mod output;
