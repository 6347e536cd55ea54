//! `edge-gateway user ...` and `edge-gateway token ...`: users and API tokens
//! managed from a shell on the gateway's machine, through the same store
//! and the same rules as the API (`gateway_api::Auth`), so they work before
//! the first start, while the gateway runs (a revoked token stops working
//! within seconds there) and after a lost admin password. Every change is
//! audited with the actor `cli:$USER`. Passwords are read from the terminal
//! without echo, or as one line from standard input when it is not a
//! terminal (for scripts); they never appear on the command line, where
//! `ps` would show them.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use gateway_api::{Auth, Principal};
use gateway_store::{Role, Store};

use crate::config;

/// Where the gateway keeps its data: the same options as `run`.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// The gateway's configuration file (its `[database]` and `data_dir` say
    /// where users and tokens are kept); without it, the built-in default.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The data directory; overrides `data_dir` of the configuration.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `edge-gateway user ...`.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is asked for (or read from standard input).
    Add {
        /// Login name: 1-64 of A-Z a-z 0-9 _ - . @.
        name: String,
        /// viewer (reads), operator (also writes set-points) or admin (everything).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// List users and their roles.
    List {
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Remove a user and end its sessions (not the last admin).
    Remove {
        /// The user.
        name: String,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Set a user's password (asked for, or read from standard input); ends its sessions.
    Passwd {
        /// The user.
        name: String,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Give a user another role (not the last admin).
    Role {
        /// The user.
        name: String,
        /// The new role.
        #[arg(value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        at: StoreArgs,
    },
}

/// `edge-gateway token ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it (only this once).
    Create {
        /// What uses it, e.g. scada-reader: 1-64 of A-Z a-z 0-9 _ - . @.
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// List tokens (names, roles, creation times; never the secrets).
    List {
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Revoke a token.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        at: StoreArgs,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: use viewer, operator or admin"))
}

/// Who the CLI acts as, for the audit trail.
fn cli_principal() -> Principal {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    Principal { actor: format!("cli:{user}"), role: Some(Role::Admin), source: "cli".into(), session: None }
}

async fn open(at: &StoreArgs) -> anyhow::Result<(Store, Auth)> {
    let cfg = config::load(at.config.as_deref(), at.data_dir.as_deref())
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    std::fs::create_dir_all(&cfg.gateway.data_dir)
        .with_context(|| format!("cannot create the data directory {}", cfg.gateway.data_dir.display()))?;
    let store = Store::open(&cfg.database, &cfg.gateway.data_dir).await.context("cannot open the database")?;
    let auth = Auth::new(store.clone(), cfg.api.auth.clone(), cfg.api.bind);
    Ok((store, auth))
}

/// Reads a new password: twice without echo at a terminal, else one line of stdin.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).context("cannot read the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = prompt_hidden(&format!("{prompt}: "))?;
    let second = prompt_hidden("Again: ")?;
    anyhow::ensure!(first == second, "the two passwords differ");
    Ok(first)
}

fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn off the terminal's echo")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    read.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn date(ms: i64) -> String {
    gateway_model::format_rfc3339_ns(ms.max(0) as u64 * 1_000_000)
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edge-gateway: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs `edge-gateway user ...`.
pub fn user(cmd: UserCommand) -> ExitCode {
    block_on(async move {
        let who = cli_principal();
        match cmd {
            UserCommand::Add { name, role, at } => {
                let (store, auth) = open(&at).await?;
                let password = read_password(&format!("Password for {name}"))?;
                let r = auth.create_user(&name, role, &password).await;
                audit(&auth, &who, "user.create", &name, &r, serde_json::json!({ "role": role })).await;
                store.close().await;
                r?;
                println!("Added user {name} ({role}).");
            }
            UserCommand::List { at } => {
                let (store, _) = open(&at).await?;
                for u in store.list_users().await? {
                    println!(
                        "{}\t{}\tcreated {}\tchanged {}",
                        u.name,
                        u.role,
                        date(u.created_at_ms),
                        date(u.updated_at_ms)
                    );
                }
                store.close().await;
            }
            UserCommand::Remove { name, at } => {
                let (store, auth) = open(&at).await?;
                let r = auth.delete_user(&name).await;
                audit(&auth, &who, "user.delete", &name, &r, serde_json::json!({})).await;
                store.close().await;
                r?;
                println!("Removed user {name}.");
            }
            UserCommand::Passwd { name, at } => {
                let (store, auth) = open(&at).await?;
                let password = read_password(&format!("New password for {name}"))?;
                let r = auth.update_user(&name, None, Some(&password)).await;
                audit(&auth, &who, "user.password", &name, &r, serde_json::json!({})).await;
                store.close().await;
                r?;
                println!("Changed the password of {name}; its sessions ended.");
            }
            UserCommand::Role { name, role, at } => {
                let (store, auth) = open(&at).await?;
                let r = auth.update_user(&name, Some(role), None).await;
                audit(&auth, &who, "user.update", &name, &r, serde_json::json!({ "role": role })).await;
                store.close().await;
                r?;
                println!("{name} is now {role}.");
            }
        }
        Ok(())
    })
}

/// Runs `edge-gateway token ...`.
pub fn token(cmd: TokenCommand) -> ExitCode {
    block_on(async move {
        let who = cli_principal();
        match cmd {
            TokenCommand::Create { name, role, at } => {
                let (store, auth) = open(&at).await?;
                let r = auth.create_token(&name, role).await;
                audit(&auth, &who, "token.create", &name, &r, serde_json::json!({ "role": role })).await;
                store.close().await;
                let token = r?;
                // Only the token on stdout, so scripts can capture it; the advice on stderr.
                eprintln!(
                    "Token {name} ({role}) created; it is shown only now. Use it as: Authorization: Bearer TOKEN"
                );
                println!("{token}");
            }
            TokenCommand::List { at } => {
                let (store, _) = open(&at).await?;
                for t in store.list_tokens().await? {
                    println!("{}\t{}\tcreated {}", t.name, t.role, date(t.created_at_ms));
                }
                store.close().await;
            }
            TokenCommand::Revoke { name, at } => {
                let (store, auth) = open(&at).await?;
                let r = auth.revoke_token(&name).await;
                audit(&auth, &who, "token.revoke", &name, &r, serde_json::json!({})).await;
                store.close().await;
                r?;
                println!("Revoked token {name} (a running gateway refuses it within seconds).");
            }
        }
        Ok(())
    })
}

async fn audit<T, E: std::fmt::Display>(
    auth: &Auth,
    who: &Principal,
    action: &str,
    target: &str,
    r: &Result<T, E>,
    detail: serde_json::Value,
) {
    let outcome = match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("refused: {e}"),
    };
    auth.audit(who.audit(action, target, outcome, detail.to_string())).await;
}
