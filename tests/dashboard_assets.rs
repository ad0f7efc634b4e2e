//! The dashboard's files as a real `baton` serves them: content types,
//! caching headers (`ETag` + `If-None-Match` → 304), the redirect, 404s, and
//! `BATON_DASHBOARD_DIR` serving from disk, read again on every request.
//!
//! A tiny HTTP/1.1 client over `TcpStream` keeps this free of extra
//! dependencies: each request is one connection with `Connection: close`.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A `baton --memory` on port 0, killed on drop.
struct Baton {
    child: Child,
    addr: String,
}

impl Baton {
    /// Serves the compiled-in dashboard (`BATON_DASHBOARD_DIR` removed).
    fn compiled() -> Self {
        Self::start(None)
    }

    /// Serves the dashboard from `dir`.
    fn from_dir(dir: &Path) -> Self {
        Self::start(Some(dir))
    }

    fn start(dir: Option<&Path>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.args(["--memory", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env_remove("BATON_DASHBOARD_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(dir) = dir {
            cmd.env("BATON_DASHBOARD_DIR", dir);
        }
        let mut child = cmd.spawn().expect("start baton");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("baton listening on http://") {
                        break url.to_owned();
                    }
                }
                _ => panic!("baton exited before listening"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[])
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(&self.addr, method, path, headers)
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP answer: status, headers (names lower-cased), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    parse(&raw, method == "HEAD")
}

fn parse(raw: &[u8], head: bool) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head_text = std::str::from_utf8(&raw[..split]).expect("ascii headers");
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let body = if head {
        Vec::new()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size_text = std::str::from_utf8(&data[..eol]).expect("chunk size text");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size hex");
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn source(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dashboard")
            .join(name),
    )
    .expect("dashboard source file")
}

#[test]
fn mod_dashboard_redirects_to_the_page() {
    let baton = Baton::compiled();
    let r = baton.get("/mod/dashboard");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), "/mod/dashboard/");
}

#[test]
fn every_file_has_its_content_type_and_caching_headers() {
    let baton = Baton::compiled();
    for (path, file, content_type) in [
        ("/mod/dashboard/", "index.html", "text/html; charset=utf-8"),
        (
            "/mod/dashboard/index.html",
            "index.html",
            "text/html; charset=utf-8",
        ),
        (
            "/mod/dashboard/app.js",
            "app.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/mod/dashboard/style.css",
            "style.css",
            "text/css; charset=utf-8",
        ),
        ("/mod/dashboard/favicon.svg", "favicon.svg", "image/svg+xml"),
    ] {
        let r = baton.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), content_type, "{path}");
        assert_eq!(r.header("cache-control"), "no-cache", "{path}");
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{path}");
        let etag = r.header("etag");
        assert!(
            etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
            "{path}: strong ETag, got {etag:?}"
        );
        assert_eq!(r.body, source(file), "{path}: the compiled-in bytes");
    }
    let html = baton.get("/mod/dashboard/");
    let csp = html.header("content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(
        !baton
            .get("/mod/dashboard/app.js")
            .headers
            .contains_key("content-security-policy"),
        "the policy is for the page"
    );
}

#[test]
fn if_none_match_answers_304_until_the_file_differs() {
    let baton = Baton::compiled();
    let first = baton.get("/mod/dashboard/app.js");
    let etag = first.header("etag").to_owned();
    assert_ne!(
        etag,
        baton.get("/mod/dashboard/style.css").header("etag"),
        "each file has its own ETag"
    );
    assert_eq!(
        etag,
        baton.get("/mod/dashboard/app.js").header("etag"),
        "stable"
    );

    let cached = baton.request("GET", "/mod/dashboard/app.js", &[("If-None-Match", &etag)]);
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), etag);
    assert_eq!(cached.header("cache-control"), "no-cache");

    let weak = format!("\"nope\", W/{etag}");
    let cached = baton.request("GET", "/mod/dashboard/app.js", &[("If-None-Match", &weak)]);
    assert_eq!(cached.status, 304, "weak comparison, lists");

    let stale = baton.request(
        "GET",
        "/mod/dashboard/app.js",
        &[("If-None-Match", "\"0000000000000000\"")],
    );
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body);

    let other = baton.request(
        "GET",
        "/mod/dashboard/style.css",
        &[("If-None-Match", &etag)],
    );
    assert_eq!(
        other.status, 200,
        "another file's ETag does not match this one"
    );
}

#[test]
fn head_answers_headers_without_a_body() {
    let baton = Baton::compiled();
    let r = baton.request("HEAD", "/mod/dashboard/style.css", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/css; charset=utf-8");
    assert!(!r.header("etag").is_empty());
}

#[test]
fn unknown_files_are_404() {
    let baton = Baton::compiled();
    for path in [
        "/mod/dashboard/nope.js",
        "/mod/dashboard/README.md",
        "/mod/dashboard/e2e/package.json",
        "/mod/dashboard/%2e%2e/Cargo.toml",
        "/mod/dashboard/..%2fCargo.toml",
        "/mod/dashboard/app.js/x",
        "/mod/dashboard/index",
    ] {
        let r = baton.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.header("content-type").starts_with("text/plain"), "{path}");
    }
}

#[test]
fn every_file_the_page_references_is_served() {
    let baton = Baton::compiled();
    let html = baton.get("/mod/dashboard/").text();
    let mut referenced = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let target = part.split('"').next().unwrap_or("");
            if !target.starts_with('#') && !target.is_empty() {
                referenced.push(target.to_owned());
            }
        }
    }
    assert!(
        referenced.iter().any(|t| t == "app.js") && referenced.iter().any(|t| t == "style.css"),
        "{referenced:?}"
    );
    for target in referenced {
        assert!(
            !target.contains("//"),
            "{target}: the page must not load anything from elsewhere (offline, no CDN)"
        );
        let r = baton.get(&format!("/mod/dashboard/{target}"));
        assert_eq!(r.status, 200, "{target}");
    }
}

#[test]
fn dashboard_dir_serves_from_disk_and_rereads_each_request() {
    let root = tempfile::tempdir().expect("tempdir");
    // A file next to the served directory, that no request may reach.
    std::fs::write(root.path().join("secret.html"), "secret").expect("write");
    let dir = root.path().join("dash");
    std::fs::create_dir(&dir).expect("mkdir");
    let index = dir.join("index.html");
    std::fs::write(&index, "<!doctype html><title>one</title>").expect("write");
    std::fs::write(dir.join("extra.css"), "body{}").expect("write");
    let baton = Baton::from_dir(&dir);

    let one = baton.get("/mod/dashboard/");
    assert_eq!(one.status, 200);
    assert_eq!(one.text(), "<!doctype html><title>one</title>");
    assert_eq!(one.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(one.header("cache-control"), "no-cache");
    let etag_one = one.header("etag").to_owned();
    assert!(!etag_one.is_empty());
    assert_eq!(
        baton
            .request("GET", "/mod/dashboard/", &[("If-None-Match", &etag_one)])
            .status,
        304
    );

    std::fs::write(&index, "<!doctype html><title>two</title>").expect("rewrite");
    let two = baton.request("GET", "/mod/dashboard/", &[("If-None-Match", &etag_one)]);
    assert_eq!(two.status, 200, "an edit shows on the next request");
    assert_eq!(two.text(), "<!doctype html><title>two</title>");
    assert_ne!(two.header("etag"), etag_one);

    let css = baton.get("/mod/dashboard/extra.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
    // Nothing falls back to the compiled-in files, and nothing leaves the directory.
    assert_eq!(baton.get("/mod/dashboard/app.js").status, 404);
    for path in [
        "/mod/dashboard/%2e%2e/secret.html",
        "/mod/dashboard/..%2fsecret.html",
        "/mod/dashboard/%2fetc%2fhostname.txt",
    ] {
        let r = baton.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    assert_eq!(baton.get("/mod/dashboard").status, 302);
}
