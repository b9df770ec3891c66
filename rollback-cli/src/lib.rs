//! The `rollback` command line as a library: config file, commands, human
//! and JSON output, exit codes. `main.rs` only parses, runs and exits.

#![warn(missing_docs)]

pub mod adapters;
pub mod cli;
pub mod commands;
pub mod config;
pub mod exit;
pub mod output;
