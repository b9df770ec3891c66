//! `rollback man`: the manual pages, generated from the command line's own definition.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::{self, CliError};

/// Print rollback(1) on stdout, or with `out_dir` write one page per command
/// there (`rollback.1`, `rollback-deploy.1`, ...), as packagers install them.
pub fn run(out_dir: Option<&Path>) -> Result<i32, CliError> {
    let command = Cli::command();
    let written = match out_dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command, dir))
            .map_err(|e| {
                CliError::failed(format!(
                    "{}: cannot write the manual pages: {e}",
                    dir.display()
                ))
            }),
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout().lock())
            .map_err(|e| CliError::failed(format!("cannot print the manual page: {e}"))),
    };
    written.map(|()| exit::OK)
}
