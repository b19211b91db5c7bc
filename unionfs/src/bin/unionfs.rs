//! `unionfs`: parse, validate, mount, and report failures as one line plus an exit code
//! (0 mounted, 1 failure at run time, 2 bad input).

use clap::Parser;
use unionfs::cli::{args::Args, CliError, MountConfig};

fn main() {
    // Tools are subcommands; anything else is the mount command line (whose first
    // argument may be a branch list or a mount point, so it cannot be a clap subcommand).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match argv.get(1).and_then(|a| a.to_str()) {
        Some("ctl") => {
            init_logging(0);
            std::process::exit(unionfs::ctl::client::main(&argv[1..]));
        }
        Some("diff" | "merge" | "export" | "import") => {
            init_logging(0);
            std::process::exit(unionfs::offline::main(&argv[1..]));
        }
        _ => {}
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let first = e.to_string();
            let line = first.lines().next().unwrap_or("bad arguments");
            let line = line.trim_start_matches("error: ");
            eprintln!("unionfs: {line} (see unionfs --help)");
            std::process::exit(2);
        }
    };
    init_logging(args.verbose);
    if let Err(e) = run(args) {
        eprintln!("unionfs: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run(args: Args) -> Result<(), CliError> {
    let cfg = MountConfig::from_args(args)?;
    if let Some(n) = cfg.max_files {
        raise_nofile(n);
    }
    unionfs::daemon::preflight(&cfg)?;
    let union = unionfs::daemon::build_union(&cfg)?;
    if cfg.foreground {
        unionfs::daemon::serve(&cfg, union, None)
    } else {
        unionfs::daemon::daemonize(&cfg, union)
    }
}

/// unionfs-fuse's `max_files=N`: RLIMIT_NOFILE to N. Above the hard limit only with
/// CAP_SYS_RESOURCE; otherwise (as unionfs-fuse does) a warning, and the mount goes on
/// with the hard limit.
fn raise_nofile(n: u64) {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) != 0 {
            return;
        }
        let hard = cur.rlim_max;
        let want = libc::rlimit {
            rlim_cur: n,
            rlim_max: n.max(hard),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            eprintln!(
                "unionfs: warning: max_files={n}: cannot raise the open-file limit above {hard}; using {hard}"
            );
            let h = libc::rlimit {
                rlim_cur: hard,
                rlim_max: hard,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &h);
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
