//! A real mosquitto broker for tests and benchmarks, on a free loopback port,
//! with an optional TLS listener ([`TestCerts`]) and persistence, that can be
//! stopped and started again on the same port (an outage the client must
//! survive). Tests fail (they do not skip) when mosquitto is missing:
//! `scripts/setup-test-peers` installs it.
//!
//! It must never touch a broker it did not start: every broker gets its own
//! temporary directory, its own ports, and is killed on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::free_port;

/// Files of a test certificate authority and a server certificate for 127.0.0.1/localhost.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
}

impl TestCerts {
    /// Makes them with the `openssl` command.
    pub fn generate(dir: &Path) -> TestCerts {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl runs (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=edge-gateway test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("write ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        TestCerts { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
    }
}

/// A mosquitto broker for one test.
#[derive(Debug)]
pub struct Mosquitto {
    /// Plain MQTT port.
    pub port: u16,
    /// TLS port, if configured.
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Where mosquitto is installed, or why it cannot be used.
pub fn binary() -> Result<PathBuf, String> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| "mosquitto is not installed: run scripts/setup-test-peers (Debian package mosquitto)".to_owned())
}

impl Mosquitto {
    /// Starts a broker with persistence (so sessions survive a graceful restart).
    pub fn start() -> Mosquitto {
        Self::start_with(None)
    }

    /// Starts a broker, with a TLS listener too if `certs` are given.
    pub fn start_with(certs: Option<&TestCerts>) -> Mosquitto {
        // A port picked free may be taken before mosquitto binds it (by
        // another test or process); mosquitto then exits at once: try others.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_launch(free_port(), certs) {
                Ok(m) => return m,
                Err(e) => last = e,
            }
        }
        panic!("mosquitto did not start on 5 free ports; the last: {last}")
    }

    /// Starts a broker on `port`: for a client that was told the address
    /// before any broker listened there (`free_port` picks it).
    pub fn start_on(port: u16) -> Mosquitto {
        Self::launch(port, None)
    }

    fn launch(port: u16, certs: Option<&TestCerts>) -> Mosquitto {
        Self::try_launch(port, certs).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_launch(port: u16, certs: Option<&TestCerts>) -> Result<Mosquitto, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls_port = certs.map(|_| free_port());
        let mut conf = format!(
            "user root\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\n\
             max_queued_messages 1000000\nmax_inflight_messages 0\nlog_dest none\nset_tcp_nodelay true\nlistener {port} 127.0.0.1\n",
            dir.path().display()
        );
        if let (Some(c), Some(tp)) = (certs, tls_port) {
            conf.push_str(&format!(
                "listener {tp} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                c.ca.display(),
                c.cert.display(),
                c.key.display()
            ));
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("write config");
        let mut m = Mosquitto { port, tls_port, dir, child: None };
        m.try_resume()?;
        Ok(m)
    }

    /// (Re)starts the broker on the same ports and waits until it accepts connections.
    pub fn resume(&mut self) {
        self.try_resume().unwrap_or_else(|e| panic!("{e}"));
    }

    /// [`Mosquitto::resume`], or why the broker did not listen: it exited
    /// (a port taken, for one) or 20 s passed.
    fn try_resume(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let binary = binary()?;
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto: {e}"))?;
        let port = self.port;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("mosquitto exited ({status}) instead of listening on port {port}"));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out waiting for mosquitto to listen on port {port}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the broker: SIGTERM (it saves its sessions) or SIGKILL.
    pub fn stop(&mut self, kill: bool) {
        if let Some(mut c) = self.child.take() {
            let sig = if kill { "-KILL" } else { "-TERM" };
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `mqtt://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
