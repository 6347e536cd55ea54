//! `edge-gateway`: the command line. `main` parses arguments and hands over
//! to one function per subcommand; configuration errors exit with status 2
//! and name the field, runtime failures exit with status 1.

mod bench;
mod config;
mod format;
mod health;
mod malloc;
mod masked;
mod pages;
mod reload;
mod run;
mod tls;
mod tuning;
mod users;
mod waltool;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `0.1.0 (lean)`: the package version and the profile it was built with.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("EDGE_GATEWAY_PROFILE"), ")");

/// An industrial IoT edge gateway.
#[derive(Debug, Parser)]
// The version says which cargo profile made the binary (build.rs): `lean`
// is what the package ships; deploy/build-deb.sh reads it.
#[command(name = "edge-gateway", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (with no --config: the built-in default, simulated devices).
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory (WAL, SQLite); overrides [gateway] data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the default configuration, or check a configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write-ahead log tools (read-only; safe on a running gateway's log).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Measure the performance budget on this machine and print it with pass / fail.
    Bench(bench::BenchArgs),
    /// Users (people, with a password): add, list, remove, passwd, role.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// API tokens (machines): create (printed once), list, revoke.
    Token {
        #[command(subcommand)]
        command: users::TokenCommand,
    },
    /// Certificates for HTTPS ([api.tls]).
    Tls {
        #[command(subcommand)]
        command: tls::TlsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the default configuration, with comments.
    Default,
    /// Check a configuration file; exit status 2 and the bad field's path if it is wrong.
    Check {
        /// The configuration file (TOML) to check; no device, database or log is opened.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Show segments, records, cursors and damage.
    Inspect {
        /// The WAL directory (e.g. ./data/wal).
        dir: PathBuf,
        /// Also print the frames from this sequence number on, as JSON lines.
        #[arg(long)]
        from: Option<u64>,
        /// How many frames to print with --from.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Check every record and that no sequence numbers are missing; exit status 1 if anything is damaged or lost.
    Verify {
        /// The WAL directory (e.g. ./data/wal), read without taking its lock.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // A benchmark scenario, or the north scenario's Modbus servers, running
    // in a child process of `bench`.
    if let Some(code) = gateway_bench::north::farm_entry() {
        return code;
    }
    if let Some(code) = bench::child_entry() {
        return code;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, data_dir } => {
            let cfg = match config::load(config.as_deref(), data_dir.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("edge-gateway: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            run::init_logging(&cfg.gateway.log_level, cfg.gateway.log_format);
            for note in &cfg.notes {
                tracing::warn!("{note}.");
            }
            match run::run(cfg, config.clone()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "The gateway stopped with an error.");
                    eprintln!("edge-gateway: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Config { command: ConfigCommand::Default } => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::Config { command: ConfigCommand::Check { file } } => match config::load(Some(&file), None) {
            Ok(c) => {
                let tags: usize = c.devices.iter().map(|d| d.tags.len()).sum();
                println!(
                    "{}: OK ({} devices, {tags} tags, bus preset {}, API on {})",
                    file.display(),
                    c.devices.len(),
                    c.bus.preset,
                    c.api.bind
                );
                for note in &c.notes {
                    println!("note: {note}.");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        },
        Command::Wal { command: WalCommand::Inspect { dir, from, limit } } => waltool::inspect(&dir, from, limit),
        Command::Wal { command: WalCommand::Verify { dir } } => waltool::verify(&dir),
        Command::Bench(args) => bench::main(args),
        Command::User { command } => users::user(command),
        Command::Token { command } => users::token(command),
        Command::Tls { command } => tls::main(command),
    }
}
