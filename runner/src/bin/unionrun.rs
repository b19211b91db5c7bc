//! `unionrun`: parse, run, print failures as one line, exit with the payload's code or
//! the documented runner codes (125 runner failure, 126 cannot execute, 127 not found).

use clap::Parser;
use runner::cli::{default_state_root, Args, Command};
use runner::error::{one_line, EXIT_RUNNER};

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "unionrun: {} (see unionrun --help)",
                line.trim_start_matches("error: ")
            );
            std::process::exit(EXIT_RUNNER);
        }
    };
    init_logging(args.verbose);
    let code = match args.command {
        Command::Run(r) => match r.into_spec(args.root, args.verbose) {
            Ok(spec) => report(runner::monitor::run(&spec)),
            Err(e) => report(Err(e.into())),
        },
        Command::Cleanup(c) => {
            let root = args.root.unwrap_or_else(default_state_root);
            report(runner::monitor::cleanup(&root, &c.names, args.verbose))
        }
    };
    std::process::exit(code);
}

fn report(r: Result<i32, runner::error::RunError>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("unionrun: {}", one_line(&e));
            e.exit_code()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
