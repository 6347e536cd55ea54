//! Test databases: a SQLite file in a temporary directory, or a database of
//! its own on a real PostgreSQL server that the test starts and stops itself.
//!
//! The server is found through `$EDGE_GATEWAY_PG_BINDIR` if set, else
//! `pg_config --bindir`, else `/usr/lib/postgresql/<newest>/bin`, else `PATH`.
//! PostgreSQL refuses to run as root, so as root it runs as the `postgres`
//! user (created by Debian's `postgresql` package) through `runuser`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use gateway_store::{DatabaseConfig, Dialect, Store};
use sqlx::{Connection, Executor};
use tempfile::TempDir;

/// A fresh, empty database for one test.
pub struct TestDb {
    /// SQLite or PostgreSQL: the same tests run on both, and a few pick their
    /// SQL or expectations by it.
    pub dialect: Dialect,
    /// The data directory passed to `Store::open` (the SQLite file goes here).
    pub data_dir: PathBuf,
    url: Option<String>,
    _tmp: TempDir,
}

impl TestDb {
    /// SQLite: the default, `gateway.db` in a new temporary data directory.
    pub fn sqlite() -> TestDb {
        let tmp = tempfile::tempdir().expect("create a temporary directory");
        TestDb { dialect: Dialect::Sqlite, data_dir: tmp.path().join("data"), url: None, _tmp: tmp }
    }

    /// The `[database]` section that opens this database, with default pool settings.
    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig { url: self.url.clone(), ..DatabaseConfig::default() }
    }

    /// Opens the store with [`TestDb::config`].
    pub async fn open(&self) -> Store {
        self.open_with(self.config()).await
    }

    /// Opens the store with `cfg`.
    pub async fn open_with(&self, cfg: DatabaseConfig) -> Store {
        match Store::open(&cfg, &self.data_dir).await {
            Ok(store) => store,
            Err(e) => panic!("opening the {:?} store failed: {e}", self.dialect),
        }
    }
}

/// A PostgreSQL server in a temporary directory, on a free loopback port,
/// stopped when dropped.
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    next_db: AtomicUsize,
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
    /// Creates a cluster and starts it; panics (failing the test) with
    /// [`SETUP_HINT`] if PostgreSQL is not installed.
    pub fn start() -> PgServer {
        let bin = find_bin_dir().unwrap_or_else(|| panic!("{SETUP_HINT}"));
        let dir = tempfile::Builder::new().prefix("gateway-store-pg-").tempdir().expect("create a temporary directory");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).expect("create the socket directory");
        let as_postgres_user = id(&["-u"]) == 0;
        if as_postgres_user {
            let uid = id(&["-u", "postgres"]);
            let gid = id(&["-g", "postgres"]);
            for path in [dir.path(), &socket_dir] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("hand the directory to postgres");
            }
        }
        let mut server = PgServer { dir, bin, port: 0, as_postgres_user, next_db: AtomicUsize::new(0) };
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
            server.port = gateway_bench::free_port();
            let options = format!(
                "-h 127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                 -c max_connections=300",
                server.port,
                socket_dir.display()
            );
            let out = server
                .command("pg_ctl")
                .args(["-w", "-t", "60", "-o", &options, "-l"])
                .arg(server.log_file())
                .arg("-D")
                .arg(server.data_dir())
                .arg("start")
                .output()
                .expect("run pg_ctl start");
            if out.status.success() || attempt == 3 {
                check("pg_ctl start", out, &server.log_file());
                break;
            }
        }
        server
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

    /// A new, empty database for one test.
    pub async fn test_db(&self) -> TestDb {
        let name = format!("case_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await.expect("connect to the test server");
        admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create a test database");
        admin.close().await.expect("disconnect");
        let tmp = tempfile::tempdir().expect("create a temporary directory");
        TestDb { dialect: Dialect::Postgres, data_dir: tmp.path().join("data"), url: Some(self.url(&name)), _tmp: tmp }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let stopped =
            self.command("pg_ctl").args(["-w", "-m", "immediate", "-D"]).arg(self.data_dir()).arg("stop").output();
        if !matches!(&stopped, Ok(out) if out.status.success()) {
            eprintln!("stopping the test PostgreSQL server failed: {stopped:?}");
        }
    }
}

/// Runs every case once on SQLite (`sqlite::<case>`, one test each) and once
/// on a real PostgreSQL server the test binary starts
/// (`postgres_passes_every_case`, all cases against one server, each in a
/// database of its own: a server per case would cost seconds each).
#[allow(unused_macros)]
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::common::TestDb::sqlite()).await;
                }
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres_passes_every_case() {
            let server = $crate::common::PgServer::start();
            let mut failed: Vec<&str> = Vec::new();
            $(
                let db = server.test_db().await;
                // A case panics on failure; running it as a task turns that
                // into an error, so the remaining cases still run.
                if tokio::spawn($case(db)).await.is_err() {
                    failed.push(stringify!($case));
                }
            )*
            assert!(failed.is_empty(), "cases failed on PostgreSQL (their panics are printed above): {failed:?}");
        }
    };
}
#[allow(unused_imports)]
pub(crate) use suite;
