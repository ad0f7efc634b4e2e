//! Issue 11: a waiter whose client vanished without closing its connection
//! (power loss, a NAT that dropped the connection) must not keep its entry
//! forever. With short keep-alive flags, a real server must withdraw it
//! within seconds:
//!
//! - over HTTP/2 (gRPC), by PINGs: the client process is frozen with
//!   SIGSTOP, so its kernel still acknowledges TCP but nothing answers PINGs;
//! - over HTTP/1.1 (a `/mod/v2` long-poll), by TCP keep-alive: the client
//!   runs in a network namespace this test creates, on private addresses
//!   that exist only inside this machine, and its link is then cut so that
//!   no packet of it comes back.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Server, curl, eventually_sync, queue_len};

const SHORT_KEEPALIVE: &[&str] = &[
    "--memory",
    "--keepalive-interval-secs",
    "1",
    "--keepalive-timeout-secs",
    "1",
];

/// A child process, killed on drop (also when it is stopped).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_frozen_grpc_waiter_is_withdrawn_by_http2_pings() {
    let s = Server::start(SHORT_KEEPALIVE);
    let held = curl(
        &s.addr,
        &["-X", "POST", "http://ADDR/mod/v2/lock/frozen?ttl=60"],
    );
    assert_eq!(held.status, 200, "{held:?}");
    // `baton lock` waits behind the holder over gRPC.
    let waiter = Killed(
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["lock", "frozen", "--ttl", "60", "--endpoint", &s.url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start baton lock"),
    );
    assert!(
        eventually_sync(Duration::from_secs(10), || queue_len(&s.addr, "frozen")
            == 1),
        "the waiter never queued"
    );
    // Alive, it answers the PINGs: its entry stays well past the timeouts.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(queue_len(&s.addr, "frozen"), 1, "a live waiter was dropped");
    signal(waiter.0.id(), "-STOP");
    assert!(
        eventually_sync(Duration::from_secs(8), || queue_len(&s.addr, "frozen") == 0),
        "the frozen waiter's entry is still queued"
    );
}

/// A network namespace with one veth link to this one: `10.213.X.1` here,
/// `10.213.X.2` inside. Deleted on drop.
struct Netns {
    name: String,
    host_if: String,
    client_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e} (iproute2 is needed)"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create() -> Self {
        let id = std::process::id() % 250 + 1;
        let name = format!("batonka{}", std::process::id());
        let host_if = format!("bk{id}h");
        let client_if = format!("bk{id}c");
        let host_ip = format!("10.213.{id}.1");
        let client_ip = format!("10.213.{id}.2");
        let ns = Self {
            name,
            host_if,
            client_if,
            host_ip,
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.client_if,
        ]);
        ip(&["link", "set", &ns.client_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ns.exec_ip(&[
            "addr",
            "add",
            &format!("{client_ip}/30"),
            "dev",
            &ns.client_if,
        ]);
        ns.exec_ip(&["link", "set", &ns.client_if, "up"]);
        ns.exec_ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Cuts the client's link: nothing it would send arrives, nothing sent
    /// to it is answered.
    fn cut(&self) {
        self.exec_ip(&["link", "set", &self.client_if, "down"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_vanished_http1_waiter_is_withdrawn_by_tcp_keepalive() {
    let ns = Netns::create();
    let s = Server::start_on(&format!("{}:0", ns.host_ip), SHORT_KEEPALIVE);
    let held = curl(
        &s.addr,
        &["-X", "POST", "http://ADDR/mod/v2/lock/vanish?ttl=60"],
    );
    assert_eq!(held.status, 200, "{held:?}");
    // A /mod/v2 long-poll from inside the namespace.
    let _client = Killed(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "curl",
                "-s",
                "-X",
                "POST",
                &format!("http://{}/mod/v2/lock/vanish?ttl=60", s.addr),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start curl in the namespace"),
    );
    assert!(
        eventually_sync(Duration::from_secs(10), || queue_len(&s.addr, "vanish")
            == 1),
        "the waiter never queued"
    );
    // Alive, the client's kernel answers the probes: the entry stays.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(queue_len(&s.addr, "vanish"), 1, "a live waiter was dropped");
    ns.cut();
    assert!(
        eventually_sync(Duration::from_secs(10), || queue_len(&s.addr, "vanish")
            == 0),
        "the vanished waiter's entry is still queued"
    );
}
