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
    /// Runs [`curl`](super::curl) with `args` as a client that trusts the
    /// test CA and shows the client certificate (mutual TLS).
    pub fn curl(&self, addr: &str, args: &[&str]) -> super::Reply {
        let (ca, cert, key) = (
            self.ca.display().to_string(),
            self.client_cert.display().to_string(),
            self.client_key.display().to_string(),
        );
        let mut all = vec!["--cacert", &ca, "--cert", &cert, "--key", &key];
        all.extend_from_slice(args);
        super::curl(addr, &all)
    }

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

/// A real etcd cluster of several members on loopback, each on its own
/// ports and data directory, killed (and its data removed) on drop. A
/// member can be killed (`kill -9`) and started again, or frozen
/// (`SIGSTOP`: it keeps accepting connections and never answers).
pub struct EtcdCluster {
    bin: PathBuf,
    members: Vec<ClusterMember>,
    initial: String,
    token: String,
}

struct ClusterMember {
    name: String,
    url: String,
    peer: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each serves.
    pub fn start(n: usize) -> Self {
        let bin = which("etcd").unwrap_or_else(|| {
            panic!(
                "the etcd backend's tests need a real etcd: `etcd` is not on PATH. \
                 Run scripts/install-test-deps.sh (it installs Debian's etcd-server)."
            )
        });
        let members: Vec<ClusterMember> = (0..n)
            .map(|i| ClusterMember {
                name: format!("m{i}"),
                url: format!("http://127.0.0.1:{}", free_port()),
                peer: format!("http://127.0.0.1:{}", free_port()),
                dir: tempfile::tempdir().expect("temp dir for etcd"),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            bin,
            members,
            initial,
            token: format!("baton-test-{}", free_port()),
        };
        // A quorum is needed before any member serves: start them all,
        // then wait.
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new(&self.bin)
            .args(["--name", &m.name, "--data-dir"])
            .arg(m.dir.path().join("data"))
            .args(["--listen-client-urls", &m.url])
            .args(["--advertise-client-urls", &m.url])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Quick elections, as in the one-member fixture.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    fn wait_healthy(&self, i: usize) {
        let m = &self.members[i];
        let addr = m.url.trim_start_matches("http://").to_owned();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if health(&addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "etcd member {} did not become healthy on {} (log: {})",
            m.name,
            m.url,
            std::fs::read_to_string(m.dir.path().join("etcd.log")).unwrap_or_default()
        );
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Member `i`'s client URL.
    pub fn url(&self, i: usize) -> &str {
        &self.members[i].url
    }

    /// Every member's client URL, comma-separated, for `--etcd-endpoints`.
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| m.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills member `i` (`kill -9`); its data stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its ports and data after
    /// [`kill`](Self::kill), and waits until it serves.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Kills every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts every member again after [`kill_all`](Self::kill_all), and
    /// waits until they serve.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i);
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to member `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        if let Some(c) = &self.members[i].child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &c.id().to_string()])
                .status();
        }
    }

    /// The index of the member that is raft leader now, as the live
    /// members say (10 s at most).
    pub async fn leader(&self) -> usize {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                let Ok(Ok(mut c)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    etcd_client::Client::connect([m.url.as_str()], None),
                )
                .await
                else {
                    continue;
                };
                let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(1), c.status()).await
                else {
                    continue;
                };
                let leader = status.leader();
                if leader == 0 {
                    continue;
                }
                // Ask each member its id to find the leader's index.
                for (j, other) in self.members.iter().enumerate() {
                    if other.child.is_none() {
                        continue;
                    }
                    let Ok(Ok(mut oc)) = tokio::time::timeout(
                        Duration::from_secs(1),
                        etcd_client::Client::connect([other.url.as_str()], None),
                    )
                    .await
                    else {
                        continue;
                    };
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(1), oc.status()).await
                        && s.header().map(|h| h.member_id()) == Some(leader)
                    {
                        return j;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no etcd member is leader");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            // A frozen member must be thawed to die promptly.
            self.signal(i, "CONT");
            self.kill(i);
        }
    }
}

impl Server {
    /// Starts `baton --backend etcd` over every member of `cluster`, under
    /// `prefix`, with `extra` flags.
    pub fn etcd_cluster(cluster: &EtcdCluster, prefix: &str, extra: &[&str]) -> Self {
        let urls = cluster.urls();
        let mut args = vec![
            "--backend",
            "etcd",
            "--etcd-endpoints",
            urls.as_str(),
            "--etcd-prefix",
            prefix,
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }
}
