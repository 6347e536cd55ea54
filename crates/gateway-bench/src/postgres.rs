//! A real PostgreSQL server for tests and benchmarks: a cluster in a
//! temporary directory, on a free loopback port, that can be stopped and
//! started again on the same port (an outage the history writer must
//! survive), and a fresh database per test case.
//!
//! The server is found through `$EDGE_GATEWAY_PG_BINDIR` if set, else
//! `pg_config --bindir`, else `/usr/lib/postgresql/<newest>/bin`, else `PATH`.
//! PostgreSQL refuses to run as root, so as root it runs as the `postgres`
//! user (created by Debian's `postgresql` package) through `runuser`. Tests
//! fail (they do not skip) when PostgreSQL is missing: `scripts/setup-test-peers`
//! installs it. It must never touch a server it did not start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{Connection, Executor};
use tempfile::TempDir;

/// What tests run with: no fsync (the tests check logic, not power loss),
/// room for many connections.
pub const TEST_SETTINGS: &[&str] =
    &["fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=300"];

/// A PostgreSQL server in a temporary directory, stopped when dropped.
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    settings: Vec<String>,
    next_db: AtomicUsize,
    running: bool,
}

const SETUP_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl) were not found; run scripts/setup-test-peers \
     (CI installs Debian's `postgresql` package), or point EDGE_GATEWAY_PG_BINDIR at their directory";

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// The directory holding `initdb` and `pg_ctl`.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("EDGE_GATEWAY_PG_BINDIR") {
        // An explicit choice is not second-guessed.
        return Some(PathBuf::from(dir)).filter(|d| has_server(d));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Some(dir);
        }
    }
    // Debian: /usr/lib/postgresql/<major>/bin; prefer the newest major version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has_server(d))
}

/// Whether a PostgreSQL server can be started here (for benchmarks, which
/// skip with the reason rather than fail).
pub fn available() -> Result<(), String> {
    find_bin_dir().map(drop).ok_or_else(|| SETUP_HINT.to_owned())
}

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run `id`");
    assert!(out.status.success(), "`id {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("`id` prints a number")
}

fn check(what: &str, out: Output, log: &Path) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- server log\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

impl PgServer {
    /// Creates a cluster and starts it with [`TEST_SETTINGS`]; panics
    /// (failing the test) with a hint if PostgreSQL is not installed.
    pub fn start() -> PgServer {
        Self::start_with(TEST_SETTINGS)
    }

    /// The same with these `-c` settings (`name=value`).
    pub fn start_with(settings: &[&str]) -> PgServer {
        let bin = find_bin_dir().unwrap_or_else(|| panic!("{SETUP_HINT}"));
        let dir = tempfile::Builder::new().prefix("gateway-pg-").tempdir().expect("create a temporary directory");
        std::fs::create_dir(dir.path().join("sock")).expect("create the socket directory");
        let as_postgres_user = id(&["-u"]) == 0;
        if as_postgres_user {
            let uid = id(&["-u", "postgres"]);
            let gid = id(&["-g", "postgres"]);
            for path in [dir.path().to_path_buf(), dir.path().join("sock")] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("hand the directory to postgres");
            }
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            as_postgres_user,
            settings: settings.iter().map(|s| s.to_string()).collect(),
            next_db: AtomicUsize::new(0),
            running: false,
        };
        let out = server
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "-D"])
            .arg(server.data_dir())
            .output()
            .expect("run initdb");
        check("initdb", out, &server.log_file());
        // The port is free when checked; another process taking it in the
        // instant before the server binds is possible but rare, so retry.
        for attempt in 1..=3 {
            server.port = crate::free_port();
            let out = server.pg_ctl_start();
            if out.status.success() || attempt == 3 {
                check("pg_ctl start", out, &server.log_file());
                break;
            }
        }
        server.running = true;
        server
    }

    fn pg_ctl_start(&self) -> Output {
        let mut options = format!("-h 127.0.0.1 -p {} -k {}", self.port, self.dir.path().join("sock").display());
        for s in &self.settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        self.command("pg_ctl")
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.log_file())
            .arg("-D")
            .arg(self.data_dir())
            .arg("start")
            .output()
            .expect("run pg_ctl start")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `program` from the server's bin directory, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // The postgres user may not be allowed into the current directory.
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Makes a new, empty database; returns its URL.
    pub async fn create_db(&self) -> String {
        let name = format!("case_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await.expect("connect to the test server");
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create a test database");
        admin.close().await.expect("disconnect");
        self.url(&name)
    }

    /// Stops the server (`fast`: clients are disconnected, as when a
    /// database host goes down); [`PgServer::resume`] starts it again.
    pub fn stop(&mut self) {
        let out = self.command("pg_ctl").args(["-w", "-m", "fast", "-D"]).arg(self.data_dir()).arg("stop").output();
        match out {
            Ok(out) => check("pg_ctl stop", out, &self.log_file()),
            Err(e) => panic!("run pg_ctl stop: {e}"),
        }
        self.running = false;
    }

    /// Starts the stopped server again on the same port.
    pub fn resume(&mut self) {
        let out = self.pg_ctl_start();
        check("pg_ctl start (again)", out, &self.log_file());
        self.running = true;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let stopped =
            self.command("pg_ctl").args(["-w", "-m", "immediate", "-D"]).arg(self.data_dir()).arg("stop").output();
        if !matches!(&stopped, Ok(out) if out.status.success()) {
            eprintln!("stopping the test PostgreSQL server failed: {stopped:?}");
        }
    }
}
