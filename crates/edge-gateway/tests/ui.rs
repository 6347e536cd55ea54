//! The web UI in a real browser: Debian's headless Chromium, driven over
//! WebDriver (chromedriver) by a small client here, against the real binary
//! with a simulated tank (a level over its alarm limit and a writable
//! set-point). It signs in as an admin, reads the overview, creates a device
//! (after the API's field error is shown at the field), sees its values
//! arrive, writes a set-point and sees the device's acknowledgement,
//! acknowledges an alarm, reads the audit trail, and then checks that a
//! viewer gets no write control and the server's 403 when forcing one. Each
//! page's screenshot is saved (to `docs/screenshots/` with `UPDATE_SCREENSHOTS=1`); the first load's bytes and
//! time are printed from the browser's Performance API. Waits are for
//! conditions with deadlines, never for a fixed time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Gateway};
use gateway_bench::{free_port, wait_until_blocking};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a chromedriver we started; both end on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup-test-peers installs chromium-driver)");
        let mut b = Browser { driver, port, session: String::new() };
        wait_until_blocking(30, "chromedriver to answer", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/status", None).0 == 200
        });
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},{height}"), "--hide-scrollbars"],
        }}}});
        let (s, v) = http(port, "POST", "/session", Some(&caps));
        assert_eq!(s, 200, "new session: {v}");
        b.session = v["value"]["sessionId"].as_str().unwrap().to_owned();
        b
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = http(self.port, method, &format!("/session/{}{path}", self.session), body.as_ref());
        assert_eq!(s, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` as in WebDriver) and returns its result;
    /// a returned promise is awaited by the browser.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Waits until the expression `cond` is truthy; returns its value.
    fn wait(&self, what: &str, cond: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(&format!("try {{ return ({cond}) || null; }} catch (e) {{ return null; }}"), json!([]));
            if !v.is_null() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; page text: {}", self.text("body"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn find(&self, css: &str) -> String {
        self.wait(&format!("{css} to exist"), &format!("document.querySelector({})", json!(css)));
        let v = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Types `text` with real key events, after clearing the field.
    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({ "text": text })));
    }

    fn text(&self, css: &str) -> String {
        self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", json!([css]))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn screenshot(&self, name: &str) {
        // Let a pending animation frame paint first, so the picture shows what the DOM holds.
        self.js("return new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));", json!([]));
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().unwrap());
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({ "width": width, "height": height })));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver call. chromedriver keeps the connection open whatever the request
/// says, so the body is read by its `Content-Length`, not to the end of the stream.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let (mut status, mut len) = (0u16, 0usize);
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        if status == 0 {
            status = line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        } else if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
        line.clear();
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).unwrap();
    (status, serde_json::from_slice(&buf).unwrap_or(Value::Null))
}

/// Where the screenshots go: the test's scratch directory, so that a test
/// run leaves the checkout as it was; `UPDATE_SCREENSHOTS=1` writes them to
/// `docs/screenshots/`, which the README shows.
fn screenshots() -> PathBuf {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        return Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    }
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// Standard base64 (the screenshot); a dependency for twenty lines would be more to review.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, c)| n | (u32::from(val(*c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn add_user(data: &Path, name: &str, role: &str, password: &str) {
    let mut add = Command::new(BIN)
        .args(["user", "add", name, "--role", role, "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
}

fn sign_in(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/#/login"));
    b.type_into("#login-user", user);
    b.type_into("#login-password", password);
    b.click("#login-submit");
    b.wait("the overview after sign-in", "document.querySelector('#overview-devices')");
}

#[test]
fn an_operator_drives_the_gateway_through_the_web_ui_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        r#"
[[devices]]
name = "tank"
driver = "sim"
poll_interval_ms = 200
tags = [
  { name = "level", signal = "constant", offset = 95.0 },
  { name = "temperature", signal = "sine", amplitude = 5.0, offset = 40.0, period_ms = 60000 },
  { name = "setpoint", signal = "constant", offset = 50.0, writable = true },
]

[[alarms.rules]]
name = "overfill"
tag = "tank.level"
kind = "high_high"
limit = 90.0
deadband = 1.0
message = "Tank level {value} % over {limit} %"
"#,
    )
    .unwrap();
    add_user(&data, "admin", "admin", "control-room-admin");
    add_user(&data, "watch", "viewer", "control-room-viewer");
    let port = free_port();
    let gw = Gateway::start_with(&data, port, Some(&config));
    let base = format!("http://127.0.0.1:{port}");
    let b = Browser::start(1280, 900);

    // Sign-in, then the overview with the device, its state in words, and the raised alarm.
    sign_in(&b, &base, "admin", "control-room-admin");
    b.wait(
        "the tank polling",
        "document.querySelector('#overview-devices tr[data-device=tank]')?.innerText.includes('polling')",
    );
    b.wait("the active alarm counted", "/1 active/.test(document.querySelector('#alarm-counts')?.innerText)");
    b.wait("bus figures", "document.querySelector('#bus-figures')?.innerText.includes('Ring fill')");
    b.screenshot("overview");

    // The load, measured by the browser: the first (cold cache; sign-in was a hash change, so
    // the entries are still those of the first navigation), then a reload that revalidates.
    let perf_js = "const nav = performance.getEntriesByType('navigation')[0];
         const res = performance.getEntriesByType('resource').filter((r) => new URL(r.name).pathname.startsWith('/ui/'));
         return { files: res.length + 1, body: nav.encodedBodySize + res.reduce((n, r) => n + r.encodedBodySize, 0),
                  wire: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
                  load_ms: Math.round(nav.loadEventEnd), now_ms: Math.round(performance.now()) };";
    let cold = b.js(perf_js, json!([]));
    println!(
        "UI first load (cold cache): {} files, {} bytes of bodies (uncompressed), {} bytes on the wire, load event at {} ms",
        cold["files"], cold["body"], cold["wire"], cold["load_ms"]
    );
    // A query string makes it a real navigation (a hash alone would not reload the page).
    b.goto(&format!("{base}/?fresh#/overview"));
    b.wait("the overview again", "document.querySelector('#overview-devices tr[data-device=tank]')");
    let warm = b.js(perf_js, json!([]));
    println!(
        "UI reload (revalidating, 304s): {} bytes on the wire, load event at {} ms, overview with its devices by {} ms",
        warm["wire"], warm["load_ms"], warm["now_ms"]
    );

    // Devices: a refused field is named at the field; then the device is created.
    b.goto(&format!("{base}/#/devices"));
    b.click("#device-new");
    b.type_into("#dev-name", "pump");
    b.js(
        "document.querySelector('#dev-tags').value = JSON.stringify([{name: 'speed', signal: 'no-such-signal'}]);",
        json!([]),
    );
    b.click("#dev-save");
    b.wait("the field error at the tags", "document.querySelector('#err-tags')?.innerText.includes('signal')");
    b.js(
        "document.querySelector('#dev-tags').value = JSON.stringify([
           {name: 'speed', signal: 'ramp', min: 0, max: 1500, step: 25},
           {name: 'target', signal: 'constant', offset: 0, writable: true}]);",
        json!([]),
    );
    b.click("#dev-save");
    b.wait("the new device listed", "document.querySelector('#devices tr[data-device=pump]')");
    b.click("#devices tr[data-device=pump] th button");
    b.wait("its tags shown", "document.querySelector('#device-tags')?.innerText.includes('target')");
    b.screenshot("devices");

    // Tags: the new device's values arrive live; a set-point is written and acknowledged.
    b.goto(&format!("{base}/#/tags?pattern=pump.*"));
    b.wait(
        "pump.speed to show a good value",
        "[...document.querySelectorAll('#tag-list .row')].some((r) => r.dataset.tag === 'pump.speed' && r.innerText.includes('good'))",
    );
    b.click("#tag-list .row[data-tag='pump.target']");
    b.type_into("#setpoint-value", "42");
    b.click("#setpoint-write");
    b.wait(
        "the device's acknowledgement",
        "document.querySelector('#setpoint-result')?.innerText.includes('Acknowledged')",
    );
    b.wait(
        "the new value read back",
        "document.querySelector('#tag-list .row[data-tag=\"pump.target\"]')?.innerText.includes('42')",
    );
    b.goto(&format!("{base}/#/tags?pattern=tank.*"));
    b.click("#tag-list .row[data-tag='tank.temperature']");
    b.wait("the trend drawn from history", "Number(document.querySelector('#trend')?.dataset.points) > 0");
    b.js("document.querySelector('#tag-detail').scrollIntoView();", json!([]));
    b.screenshot("tags");

    // Alarms: the raised alarm is acknowledged with a comment, and the journal shows it.
    b.goto(&format!("{base}/#/alarms"));
    let row = "#alarms-active tr[data-alarm='overfill:tank.level']";
    b.wait("the alarm unacknowledged", &format!("document.querySelector(\"{row}\")?.innerText.includes('unacked')"));
    b.click(&format!("{row} input[type=checkbox]"));
    b.type_into("#ack-comment", "operator on the way");
    b.click("#ack-selected");
    b.wait("the acknowledgement", "document.querySelector('#ack-result')?.innerText.includes('Acknowledged 1 of 1')");
    b.wait(
        "the alarm acknowledged",
        &format!(
            "(t => t && !t.includes('unacked') && t.includes('admin'))(document.querySelector(\"{row}\")?.innerText)"
        ),
    );
    b.wait("the journal entry", "document.querySelector('#alarm-journal')?.innerText.includes('operator on the way')");
    b.screenshot("alarms");

    b.goto(&format!("{base}/#/audit"));
    b.wait("the audit trail", "document.querySelector('#audit')?.innerText.includes('alarm.ack')");
    b.screenshot("audit");
    b.goto(&format!("{base}/#/system"));
    b.wait("the system page", "document.querySelector('#system-info')?.innerText.includes('Version')");
    b.screenshot("system");

    // A viewer on a phone: no Audit page, no write control, and the server refuses a forced write.
    b.click("#logout");
    b.wait("the sign-in page", "document.querySelector('#login-user')");
    b.resize(390, 844);
    sign_in(&b, &base, "watch", "control-room-viewer");
    assert!(b.js("return document.querySelector('#nav a[href=\"#/audit\"]').hidden;", json!([])).as_bool().unwrap());
    b.goto(&format!("{base}/#/tags?pattern=tank.*"));
    b.click("#tag-list .row[data-tag='tank.setpoint']");
    b.wait("the set-point form", "document.querySelector('#setpoint-write')");
    assert!(b.js("return document.querySelector('#setpoint-write').disabled;", json!([])).as_bool().unwrap());
    assert!(b.text("#setpoint-note").contains("operator role"), "{}", b.text("#setpoint-note"));
    let forced = b.js(
        "const s = JSON.parse(sessionStorage.getItem('egw.session'));
         return fetch('/api/v1/commands', {method: 'POST', headers: {'Content-Type': 'application/json',
           Authorization: 'Bearer ' + s.token}, body: JSON.stringify({tag: 'tank.setpoint', value: 1})}).then((r) => r.status);",
        json!([]),
    );
    assert_eq!(forced, 403, "a viewer's forced write");
    b.screenshot("tags-viewer-phone");

    drop(b);
    gw.stop();
}
