//! The `farsight` binary: parses the command line, runs one command, maps errors to exit codes
//! (0 success, 1 failure with a message on stderr, 2 bad usage).

mod cli;
mod commands;
mod live;

use clap::Parser;

/// Big blocks (tract's per-run buffers and weights) in a heap of their own, the rest in glibc's:
/// see `farsight::heap`.
#[global_allocator]
static ALLOC: farsight::heap::Segregated = farsight::heap::Segregated;

fn main() -> std::process::ExitCode {
    one_malloc_arena();
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
    if let Some(v) = std::env::var_os("FARSIGHT_BIG_HEAP").filter(|v| v != "off") {
        log::warn!("FARSIGHT_BIG_HEAP={} is ignored: only \"off\" turns the big-block heap off", v.to_string_lossy());
    }
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Asks glibc's malloc for one arena instead of up to eight per core, unless `MALLOC_ARENA_MAX` is
/// set (then glibc's own reading of it stands). Each worker, camera and GStreamer thread otherwise
/// gets an arena of its own, and tract's per-run buffers freed in one arena are not reused by
/// another: peak RSS of `farsight run` on the bench videos fell from 399 to 292 MiB (640x480) and
/// from 510 to 415 MiB (1920x1080) with it (scripts/bench/README.md, "Memory").
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
