//! `GET /metrics` of a real `baton`, scraped with real `curl` after calls
//! through `/mod/v2`, the JSON gateway and gRPC; and `GET /health`.

mod common;

use std::time::{Duration, Instant};

use common::{Server, curl, wait_req};

/// The value of the sample named exactly `series` (name and labels), if the
/// scrape has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(s: &Server) -> String {
    let r = curl(&s.addr, &["http://ADDR/metrics"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "{r:?}"
    );
    assert!(r.body.ends_with("# EOF\n"), "{r:?}");
    r.body
}

/// Scrapes until `series` reads `want`, or fails after 10 s.
fn scrape_until(s: &Server, series: &str, want: f64) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(s);
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{series} never became {want}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_surface_is_counted_once_with_its_outcome() {
    let s = Server::memory();
    let r = curl(&s.addr, &["http://ADDR/health"]);
    assert_eq!(
        (r.status, r.content_type.as_str(), r.body.as_str()),
        (200, "application/json", r#"{"health":"true","reason":""}"#),
        "{r:?}"
    );
    let before = scrape(&s);
    assert_eq!(sample(&before, "baton_keys"), Some(0.0), "{before}");
    assert!(
        before.contains(r#"baton_build_info{version=""#)
            && before.contains(r#"backend="embedded""#),
        "{before}"
    );

    // /mod/v2: acquire, then a try-once that cannot acquire, then release.
    let r = curl(&s.addr, &["-X", "POST", "http://ADDR/mod/v2/lock/m?ttl=60"]);
    assert_eq!((r.status, r.body.as_str()), (200, "1"), "{r:?}");
    let r = curl(
        &s.addr,
        &["-X", "POST", "http://ADDR/mod/v2/lock/m?ttl=60&timeout=0"],
    );
    assert_eq!(r.status, 500, "{r:?}");
    let held = scrape(&s);
    assert_eq!(sample(&held, "baton_keys"), Some(1.0), "{held}");
    assert_eq!(sample(&held, "baton_entries"), Some(1.0), "{held}");

    // A waiter that hangs up before it is granted is withdrawn.
    let r = curl(
        &s.addr,
        &[
            "--max-time",
            "1",
            "-X",
            "POST",
            "http://ADDR/mod/v2/lock/m?ttl=60",
        ],
    );
    assert_eq!(r.status, 0, "curl should have given up: {r:?}");
    scrape_until(&s, r#"baton_waits_total{outcome="withdrawn"}"#, 1.0);

    let r = curl(
        &s.addr,
        &["-X", "DELETE", "http://ADDR/mod/v2/lock/m?index=1"],
    );
    assert_eq!(r.status, 200, "{r:?}");

    // The JSON gateway: renewing an unknown index is NOT_FOUND.
    let r = curl(
        &s.addr,
        &[
            "http://ADDR/v1/lock/renew",
            "-d",
            r#"{"key":"m","index":"99","ttlMs":"1000"}"#,
        ],
    );
    assert_eq!(r.status, 404, "{r:?}");

    // gRPC: a wait that is granted at once.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut lock = s.lock().await;
        let mut stream = lock
            .wait(wait_req("g", "", 0, None))
            .await
            .expect("wait")
            .into_inner();
        let first = stream.message().await.expect("event").expect("an event");
        assert!(
            matches!(
                first.event,
                Some(baton::proto::v1::wait_event::Event::Acquired(_))
            ),
            "{first:?}"
        );
    });

    let text = scrape_until(&s, r#"baton_waits_total{outcome="acquired"}"#, 2.0);
    for (series, want) in [
        (r#"baton_waits_total{outcome="FailedPrecondition"}"#, 1.0),
        (r#"baton_waits_total{outcome="withdrawn"}"#, 1.0),
        ("baton_wait_seconds_count", 2.0),
        (
            r#"baton_calls_total{service="baton.v1.Lock",method="Release",code="Ok"}"#,
            1.0,
        ),
        (
            r#"baton_calls_total{service="baton.v1.Lock",method="Renew",code="NotFound"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    // Four waits started (granted, refused, withdrawn, granted), whatever
    // code each call itself ended with.
    let waits: f64 = text
        .lines()
        .filter(|l| l.starts_with(r#"baton_calls_total{service="baton.v1.Lock",method="Wait""#))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(waits, 4.0, "{text}");
}

/// The durable store's commits are counted: a hold taken and released is
/// two commits of one record each, and the time they took is summed; in
/// memory nothing is committed.
#[test]
fn a_durable_servers_journal_commits_are_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().display().to_string();
    let s = Server::start(&["--data-dir", &data]);
    let before = scrape(&s);
    let commits = sample(&before, "baton_journal_commits_total").expect("commits");
    let records = sample(&before, "baton_journal_records_total").expect("records");
    let r = curl(&s.addr, &["-X", "POST", "http://ADDR/mod/v2/lock/j?ttl=60"]);
    assert_eq!(r.status, 200, "{r:?}");
    let index = r.body.clone();
    let r = curl(
        &s.addr,
        &[
            "-X",
            "DELETE",
            &format!("http://ADDR/mod/v2/lock/j?index={index}"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let after = scrape_until(&s, "baton_journal_commits_total", commits + 2.0);
    assert_eq!(
        sample(&after, "baton_journal_records_total"),
        Some(records + 2.0),
        "{after}"
    );
    let busy = sample(&after, "baton_journal_commit_seconds_total").expect("seconds");
    assert!(busy > 0.0, "{after}");

    let m = Server::memory();
    let text = scrape(&m);
    assert_eq!(
        sample(&text, "baton_journal_commits_total"),
        Some(0.0),
        "{text}"
    );
}
