//! `unionrun`: parse, run, print failures as one line, exit with the payload's code or
//! the documented runner codes (125 runner failure, 126 cannot execute, 127 not found).

use clap::Parser;
use runner::cli::{default_state_root, Args, Command};
use runner::error::{one_line, EXIT_RUNNER};
use runner::oci::args::OciGlobal;
use runner::oci::lifecycle;
use runner::oci::store::Store;

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
    let oci_root = || runner::oci::lifecycle::store_root(args.root.clone());
    let oci = |r: Result<(), runner::oci::OciError>| oci_report(&args.oci, r.map(|()| 0));
    let code = match &args.command {
        Command::Create(a) => oci(lifecycle::create(
            &Store::new(&oci_root()),
            a,
            args.oci.systemd_cgroup,
        )),
        Command::Start(a) => oci(lifecycle::start(&Store::new(&oci_root()), &a.id)),
        Command::State(a) => oci(lifecycle::state(&Store::new(&oci_root()), &a.id)),
        Command::Kill(a) => oci(lifecycle::kill(&Store::new(&oci_root()), a)),
        Command::Delete(a) => oci(lifecycle::delete(&Store::new(&oci_root()), a)),
        Command::List(a) => oci(lifecycle::list(&Store::new(&oci_root()), a)),
        Command::Exec(a) => oci_report(
            &args.oci,
            runner::oci::exec::exec(&Store::new(&oci_root()), a),
        ),
        Command::Spec(a) => oci(lifecycle::spec(a)),
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&lifecycle::features()).unwrap_or_default()
            );
            0
        }
        Command::Other(v) => oci(Err(runner::oci::OciError::Usage(format!(
            "{} is not supported by unionrun (see docs/oci.md)",
            v.first().map(String::as_str).unwrap_or("that command")
        )))),
        _ => run_or_cleanup(args),
    };
    std::process::exit(code);
}

/// Prints an OCI command's failure as one line (and to --log, as conmon reads it).
fn oci_report(g: &OciGlobal, r: Result<i32, runner::oci::OciError>) -> i32 {
    match r {
        Ok(code) => code,
        Err(e) => {
            let msg = runner::error::one_line(&e);
            eprintln!("unionrun: {msg}");
            if let Some(log) = &g.log {
                let line = if g.log_format == "json" {
                    serde_json::json!({
                        "level": "error",
                        "msg": msg,
                        "time": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                    })
                    .to_string()
                } else {
                    format!("unionrun: {msg}")
                };
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                {
                    let _ = writeln!(f, "{line}");
                }
            }
            runner::oci::EXIT_FAILURE
        }
    }
}

fn run_or_cleanup(args: Args) -> i32 {
    match args.command {
        Command::Run(r) => match r.into_spec(args.root, args.verbose) {
            Ok(spec) => report(runner::monitor::run(&spec)),
            Err(e) => report(Err(e.into())),
        },
        Command::Cleanup(c) => {
            let root = args.root.unwrap_or_else(default_state_root);
            report(runner::monitor::cleanup(&root, &c.names, args.verbose))
        }
        _ => unreachable!("OCI commands are dispatched in main"),
    }
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
