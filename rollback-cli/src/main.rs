//! The `rollback` binary: parse, run, exit.

use std::sync::Arc;

use clap::Parser;
use rollback_cli::{adapters::RealAdapters, cli::Cli, commands, exit};

fn main() {
    // Usage errors exit 2 (clap's own code), --help and --version exit 0.
    let cli = Cli::parse();
    let code = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(commands::run(cli, Arc::new(RealAdapters))),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::FAILED
        }
    };
    std::process::exit(code);
}
