//! The `farsight` binary: parses the command line, runs one command, maps errors to exit codes
//! (0 success, 1 failure with a message on stderr, 2 bad usage).

mod cli;
mod commands;
mod live;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if !cli.version && cli.command.is_none() {
        use clap::CommandFactory;
        let _ = cli::Cli::command().print_help();
        return std::process::ExitCode::from(2);
    }
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).format_timestamp(None).init();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
