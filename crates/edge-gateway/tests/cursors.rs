//! WAL cursors of readers that the configuration no longer has (a connector
//! removed from the file, history turned off) are forgotten at start, so
//! they cannot hold the log's data forever; a connector still in the file
//! but disabled keeps its place, to send its backlog when it runs again.

mod common;

use common::Gateway;
use gateway_bench::free_port;

/// The cursors `edge-gateway wal inspect` lists for the data directory.
fn cursors(data: &std::path::Path) -> Vec<String> {
    let out = common::run(&["wal", "inspect", data.join("wal").to_str().unwrap()]);
    assert!(out.status.success(), "wal inspect: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("cursor "))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn run_once(dir: &std::path::Path, config: &str) -> Vec<String> {
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config).unwrap();
    let data = dir.join("data");
    Gateway::start_with(&data, free_port(), Some(&file)).stop();
    cursors(&data)
}

#[test]
fn cursors_nothing_reads_any_more_are_forgotten_and_a_disabled_connectors_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // No broker listens there: the connector still subscribes (and retries).
    let connector = |enabled: bool| {
        format!(
            "[[connectors]]\nname = \"up\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\nenabled = {enabled}\n",
            free_port()
        )
    };
    let first = run_once(dir.path(), &connector(true));
    assert!(["history", "mqtt-up"].iter().all(|c| first.iter().any(|n| n == c)), "{first:?}");

    let second = run_once(dir.path(), &format!("[history]\nenabled = false\n\n{}", connector(false)));
    assert!(second.iter().any(|n| n == "mqtt-up"), "a disabled connector keeps its place: {second:?}");
    assert!(!second.iter().any(|n| n == "history"), "history turned off: {second:?}");

    let third = run_once(dir.path(), "");
    assert!(!third.iter().any(|n| n == "mqtt-up"), "the connector was removed: {third:?}");
    assert!(third.iter().any(|n| n == "history"), "history is on again (from now on): {third:?}");
}
