//! The processes a benchmark run starts: baton in each mode, and etcd.
//! Everything listens on loopback ports picked at start, and is killed
//! when its handle drops.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Error, anyhow, bail};

/// A child process killed on drop.
pub struct Proc {
    child: Child,
    /// Its process id, for RSS readings.
    pub pid: u32,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `baton` binary next to this one.
pub fn baton_binary() -> Result<PathBuf, Error> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("baton");
    if !path.exists() {
        bail!(
            "no baton binary at {} (build with cargo build --release --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// Starts baton with `args` on a free port; returns it and its URL.
pub fn start_baton(args: &[String]) -> Result<(Proc, String), Error> {
    let mut child = Command::new(baton_binary()?)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let Some(stdout) = child.stdout.take() else {
        bail!("no stdout from baton");
    };
    let mut lines = BufReader::new(stdout).lines();
    let proc = Proc { child, pid };
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("baton listening on ") {
                    break url.to_owned();
                }
            }
            _ => bail!("baton exited before listening (args {args:?})"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((proc, url))
}

/// Starts a single-member etcd in `dir`; returns it and its client URL.
pub fn start_etcd(dir: &Path) -> Result<(Proc, String), Error> {
    let etcd = which("etcd").ok_or_else(|| {
        anyhow!(
            "etcd is not installed (apt-get install etcd-server, or scripts/install-test-deps.sh)"
        )
    })?;
    let client = format!("http://127.0.0.1:{}", free_port()?);
    let peer = format!("http://127.0.0.1:{}", free_port()?);
    let child = Command::new(etcd)
        .args(["--name", "bench", "--data-dir"])
        .arg(dir)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("bench={peer}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let proc = Proc { child, pid };
    let start = Instant::now();
    let addr = client.trim_start_matches("http://").to_owned();
    while std::net::TcpStream::connect(&addr).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("etcd did not start listening on {client}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((proc, client))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
