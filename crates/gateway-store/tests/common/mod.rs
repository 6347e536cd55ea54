//! Test databases: a SQLite file in a temporary directory, or a database of
//! its own on a real PostgreSQL server that the test starts and stops itself
//! (`gateway_bench::postgres`, which says how the server is found).

#![allow(dead_code)]

use std::path::PathBuf;

use gateway_store::{DatabaseConfig, Dialect, Store};
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

/// The PostgreSQL server the suite starts (gateway-bench's, shared with the
/// benchmarks and the outage tests).
pub use gateway_bench::postgres::PgServer;

/// A new, empty database of its own on `server`, for one test case.
pub async fn pg_test_db(server: &PgServer) -> TestDb {
    let url = server.create_db().await;
    let tmp = tempfile::tempdir().expect("create a temporary directory");
    TestDb { dialect: Dialect::Postgres, data_dir: tmp.path().join("data"), url: Some(url), _tmp: tmp }
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
                let db = $crate::common::pg_test_db(&server).await;
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
