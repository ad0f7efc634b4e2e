//! Test support: a real single-member etcd (Debian's `etcd-server`) on free
//! loopback ports with a temporary data directory, and baton gateways over
//! it.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::Server;

/// A running etcd, killed (and its data removed) on drop. It can be stopped
/// and started again on the same ports and data, as an outage.
pub struct Etcd {
    bin: PathBuf,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (`https://` with TLS), the client URL.
    pub url: String,
    peer: String,
    dir: tempfile::TempDir,
    tls: Option<Certs>,
}

/// PEM files of a throw-away CA, an etcd server certificate for 127.0.0.1
/// and a client certificate, made with the `openssl` command.
#[derive(Clone, Debug)]
pub struct Certs {
    /// The CA certificate.
    pub ca: PathBuf,
    /// etcd's certificate and key.
    pub server_cert: PathBuf,
    /// etcd's key.
    pub server_key: PathBuf,
    /// The client's certificate.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
}

impl Certs {
    /// Makes the certificates in `dir`.
    pub fn make(dir: &std::path::Path) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the TLS test needs the openssl command (scripts/install-test-deps.sh)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=baton test CA",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("write client.ext");
        for who in ["server", "client"] {
            let key = format!("{who}.key");
            let csr = format!("{who}.csr");
            let pem = format!("{who}.pem");
            let ext = format!("{who}.ext");
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={who}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

impl Etcd {
    /// Starts etcd and waits until it serves.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts etcd serving clients over TLS only, with client certificates
    /// required, and waits until it serves. [`certs`](Self::certs) has the
    /// files.
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let bin = which("etcd").unwrap_or_else(|| {
            panic!(
                "the etcd backend's tests need a real etcd: `etcd` is not on PATH. \
                 Run scripts/install-test-deps.sh (it installs Debian's etcd-server)."
            )
        });
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let scheme = if tls { "https" } else { "http" };
        let mut etcd = Self {
            bin,
            child: None,
            url: format!("{scheme}://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
            tls: tls.then(|| Certs::make(dir.path())),
            dir,
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log");
        let mut cmd = Command::new(&self.bin);
        if let Some(c) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&c.server_cert)
                .arg("--key-file")
                .arg(&c.server_key)
                .arg("--trusted-ca-file")
                .arg(&c.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("test={}", self.peer)])
            // A quick election, so that start and restart take well under
            // a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(30));
    }

    fn wait_healthy(&self, within: Duration) {
        let addr = self
            .url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        let start = Instant::now();
        while start.elapsed() < within {
            // Over TLS, listening is enough: clients wait for the election.
            let ready = if self.tls.is_some() {
                TcpStream::connect(&addr).is_ok()
            } else {
                health(&addr)
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "etcd did not become healthy on {} (log: {})",
            self.url,
            std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
        );
    }

    /// Kills etcd (`kill -9`): an outage. Its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The certificates, when started with [`start_tls`](Self::start_tls).
    pub fn certs(&self) -> Option<&Certs> {
        self.tls.as_ref()
    }

    /// The data directory (for debugging a failed test).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    /// Starts `baton --backend etcd` over `etcd`, under `prefix`, with
    /// `extra` flags.
    pub fn etcd(etcd: &Etcd, prefix: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "--backend",
            "etcd",
            "--etcd-endpoints",
            etcd.url.as_str(),
            "--etcd-prefix",
            prefix,
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }
}

/// The role `GET /v1/status` reports (`primary`, `follower`, ...).
pub fn role(server: &Server) -> String {
    let r = super::curl(&server.addr, &["--max-time", "5", "http://ADDR/v1/status"]);
    serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["role"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Waits (10 s at most) until `server` reports `want` as its role.
pub fn wait_for_role(server: &Server, want: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if role(server) == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} did not become {want} within 10 s (it says {:?})",
        server.addr,
        role(server)
    );
}

impl Server {
    /// Two gateways over `etcd`: the first elected primary, the second
    /// following it (started once the first leads, so the roles are known).
    pub fn etcd_pair(etcd: &Etcd, prefix: &str, extra: &[&str]) -> (Server, Server) {
        let primary = Server::etcd(etcd, prefix, extra);
        wait_for_role(&primary, "primary");
        let follower = Server::etcd(etcd, prefix, extra);
        wait_for_role(&follower, "follower");
        (primary, follower)
    }
}

/// Whether etcd answers `/health` with `"health":"true"`.
fn health(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
