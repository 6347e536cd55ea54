//! Users and tokens on the real binary: the first start's administrator,
//! the `user` and `token` commands against a running gateway, and secrets
//! that never reach the disk in clear.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{BIN, http, http_as, start_logged, stop_logged as stop, token};
use gateway_bench::{free_port, wait_until_blocking};
use serde_json::json;

fn field<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    log.lines().find_map(|l| l.trim().strip_prefix(name)).map(str::trim)
}

/// Whether `needle` appears anywhere under `dir` (the database, the WAL, anything).
fn anywhere_on_disk(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            anywhere_on_disk(&p, needle)
        } else {
            let bytes = std::fs::read(&p).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        }
    })
}

#[test]
fn the_first_start_creates_an_admin_and_prints_its_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let log1 = dir.path().join("first.log");
    let g = start_logged(&data, port, &log1, &[]);
    let text = std::fs::read_to_string(&log1).unwrap();
    let user = field(&text, "user:").expect("the admin's name is printed").to_owned();
    let password = field(&text, "password:").expect("the admin's password is printed").to_owned();
    assert_eq!(user, "admin");
    assert!(password.len() >= 20, "{password}");
    assert_eq!(text.matches(&password).count(), 1, "printed once, and not in a log line as well");

    let (s, v) = http(port, "POST", "/api/v1/auth/login", Some(&json!({"user": user, "password": password})));
    assert_eq!(s, 200, "{v}");
    let session = v["token"].as_str().unwrap().to_owned();
    let (s, v) = http_as(port, Some(&session), "GET", "/api/v1/users", None);
    assert_eq!(s, 200, "{v}");
    stop(g);

    let log2 = dir.path().join("second.log");
    let g = start_logged(&data, port, &log2, &[]);
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(field(&text, "password:").is_none(), "an admin exists: nothing is printed again\n{text}");
    stop(g);
    assert!(!anywhere_on_disk(&data, &password), "the password is stored only as a hash");
    assert!(!anywhere_on_disk(&data, &session), "a session id is stored only as a hash");
}

#[test]
fn tokens_and_users_made_with_the_cli_work_on_a_running_gateway_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let g = start_logged(&data, port, &dir.path().join("gw.log"), &[("GATEWAY__API__AUTH__ANONYMOUS_READ", "false")]);
    let (s, _) = http(port, "GET", "/api/v1/values", None);
    assert_eq!(s, 401, "anonymous reads are off");

    let viewer = token(&data, "panel", "viewer");
    assert!(viewer.starts_with("egw_") && viewer.len() == 68, "{viewer}");
    let (s, _) = http_as(port, Some(&viewer), "GET", "/api/v1/values", None);
    assert_eq!(s, 200);
    let (s, _) = http_as(
        port,
        Some(&viewer),
        "POST",
        "/api/v1/commands",
        Some(&json!({"tag": "line1.speed_setpoint", "value": 1})),
    );
    assert_eq!(s, 403);

    // A user added from a script: the password comes on stdin, never on the command line.
    let mut add = Command::new(BIN)
        .args(["user", "add", "oper", "--role", "operator", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"night-shift-password\n").unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (s, v) =
        http(port, "POST", "/api/v1/auth/login", Some(&json!({"user": "oper", "password": "night-shift-password"})));
    assert_eq!(s, 200, "{v}");
    let session = v["token"].as_str().unwrap().to_owned();
    let (s, v) = http_as(
        port,
        Some(&session),
        "POST",
        "/api/v1/commands",
        Some(&json!({"tag": "line1.speed_setpoint", "value": 2})),
    );
    assert_eq!(s, 200, "{v}");

    // Revoked from another process: refused within the cache's lifetime.
    let out = Command::new(BIN).args(["token", "revoke", "panel", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success());
    wait_until_blocking(60, "the revoked token to be refused", || {
        http_as(port, Some(&viewer), "GET", "/api/v1/values", None).0 == 401
    });

    // The CLI's changes are in the audit trail, with the CLI as their actor.
    let admin = token(&data, "auditor", "admin");
    let (s, v) = http_as(port, Some(&admin), "GET", "/api/v1/audit?limit=1000", None);
    assert_eq!(s, 200);
    let entries = v["entries"].as_array().unwrap();
    for (action, target) in [("token.create", "panel"), ("user.create", "oper"), ("token.revoke", "panel")] {
        let e = entries
            .iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("{action}: {v}"));
        assert!(e["actor"].as_str().unwrap().starts_with("cli:"), "{e}");
    }
    let login = entries.iter().find(|e| e["action"] == "auth.login").unwrap();
    assert_eq!(login["source"], "127.0.0.1", "the client's address is recorded");
    stop(g);
    assert!(!anywhere_on_disk(&data, "night-shift-password"));
    assert!(!anywhere_on_disk(&data, &viewer));
}

#[test]
fn the_last_admin_cannot_be_removed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut add = Command::new(BIN)
        .args(["user", "add", "boss", "--role", "admin", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .output_with_stdin(b"the-boss-password\n");
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    add = Command::new(BIN).args(["user", "remove", "boss", "--data-dir"]).arg(&data).output().unwrap();
    assert_eq!(add.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&add.stderr).contains("last admin"), "{}", String::from_utf8_lossy(&add.stderr));
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output;
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output {
        let mut child = self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}
