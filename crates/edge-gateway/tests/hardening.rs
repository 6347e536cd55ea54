//! The real binary against what an attacker or a bad day does to its files
//! and limits: a second gateway on the same data directory, a malformed or
//! empty database file, a WAL with a segment missing, and a file-size limit
//! (`ulimit -f`) that used to kill it silently with SIGXFSZ.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Gateway, http, run};
use gateway_bench::{free_port, wait_until_blocking};
use gateway_wal::{CursorStart, Wal, WalOptions};

/// Runs `cmd` to its end, which must come within 60 s: a gateway that keeps
/// running where it should have refused to start fails the test.
fn run_to_exit(mut cmd: Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("it kept running instead of refusing to start: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn gateway_cmd(data: &Path, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--data-dir"])
        .arg(data)
        .env("GATEWAY__API__BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn");
    cmd
}

#[test]
fn a_second_gateway_on_the_same_data_dir_with_another_wal_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let g = Gateway::start(&data, free_port());

    let mut second = gateway_cmd(&data, free_port());
    second.env("GATEWAY__BUS__WAL_DIR", dir.path().join("other-wal"));
    let out = run_to_exit(second);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("another edge-gateway is using {}", data.display())), "{err}");
    assert!(!dir.path().join("other-wal").exists(), "the data directory is locked before the WAL is opened");
    g.stop();
}

#[test]
fn a_malformed_database_file_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("gateway.db");
    std::fs::write(&db, "definitely not SQLite ".repeat(200)).unwrap();
    let out = run_to_exit(gateway_cmd(&data, free_port()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&db.display().to_string()) && err.contains("move it aside"), "{err}");
}

/// Starts the gateway with its stderr in `log`; waits until it answers.
fn start_logging(cmd: &mut Command, log: &Path, port: u16) -> Child {
    let mut child = cmd.stdout(Stdio::null()).stderr(File::create(log).unwrap()).spawn().unwrap();
    wait_until_blocking(60, "the gateway to answer", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway exited early ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

#[test]
fn a_zero_byte_database_file_starts_with_a_warning_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("gateway.db");
    std::fs::write(&db, b"").unwrap();
    let log = dir.path().join("stderr.log");
    let port = free_port();
    let mut child = start_logging(&mut gateway_cmd(&data, port), &log, port);
    assert_eq!(http(port, "GET", "/api/v1/system/health", None).0, 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let warning = text.lines().find(|l| l.contains("empty (0 bytes)")).unwrap_or_else(|| panic!("no warning: {text}"));
    assert!(warning.contains("WARN") && warning.contains(&db.display().to_string()), "{warning}");
}

#[test]
fn wal_verify_reports_a_deleted_middle_segment_with_its_lost_range() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
    let wal = Wal::open(dir.path(), opts).unwrap();
    wal.cursor("uplink", CursorStart::Oldest).unwrap();
    for i in 0..200u32 {
        wal.append_blocking(format!("record {i:04} ").repeat(8).as_bytes(), 1).unwrap();
    }
    wal.close().unwrap();
    let out = run(&["wal", "verify", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let base = |p: &Path| p.file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap();
    let (from, to) = (base(&segs[1]), base(&segs[2]));
    std::fs::remove_file(&segs[1]).unwrap();

    let out = run(&["wal", "verify", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("MISSING seq {from}..{to}: {} sequence numbers lost", to - from)), "{stdout}");
    assert!(stdout.contains(&format!("DAMAGED: {} sequence numbers lost", to - from)), "{stdout}");
}

#[test]
fn under_a_file_size_limit_the_gateway_keeps_running_and_reports_the_wal_failing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gateway.toml");
    // About 50,000 readings a second: the first WAL segment (64 MiB at most)
    // passes the 2 MiB limit within seconds.
    std::fs::write(
        &config,
        "[[devices]]\nname = \"bulk\"\ndriver = \"sim\"\npoll_interval_ms = 20\n\
         [devices.generate]\ncount = 1000\nsignal = \"sine\"\n",
    )
    .unwrap();
    let port = free_port();
    let script = format!(
        "ulimit -f 4096 && exec \"{BIN}\" run --config \"{}\" --data-dir \"{}\"",
        config.display(),
        data.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env("GATEWAY__API__BIND", format!("127.0.0.1:{port}")).env("RUST_LOG", "warn");
    let log = dir.path().join("stderr.log");
    let mut child = start_logging(&mut cmd, &log, port);

    let mut last = (0, serde_json::Value::Null);
    wait_until_blocking(120, "the health check to report the WAL failing", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway died ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        last = http(port, "GET", "/api/v1/system/health", None);
        last.1["checks"]["wal"].as_str().is_some_and(|w| w.starts_with("failing (disk full"))
    });
    assert_eq!(last.0, 503, "{}", last.1);
    assert_eq!(last.1["status"], "degraded");
    // Still alive and answering.
    assert!(child.try_wait().unwrap().is_none());
    assert_eq!(http(port, "GET", "/api/v1/system/info", None).0, 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("file-size limit"), "{text}");
}
