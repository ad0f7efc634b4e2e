//! The guard against web pages (issue 12): browsers can reach a baton on
//! loopback, so every request, gRPC and HTTP alike, passes two checks before
//! anything acts on it.
//!
//! - **Host** (DNS rebinding, etcd's CVE-2018-1099): the name the request
//!   was addressed to must be in `--allowed-hosts`, else 421. On a loopback
//!   listener the default allows only `localhost`, `127.0.0.1`, `[::1]` and
//!   the listen address, any port; elsewhere any host. HTTP/1.1 carries the
//!   name in `Host`, HTTP/2 (gRPC) in `:authority`, which hyper puts in the
//!   request URI; both are checked when present. A request with neither
//!   (HTTP/1.0) cannot come from a browser and passes.
//! - **Origin** (CSRF, etcd's CVE-2018-1098): a request whose `Origin` is
//!   neither the server's own (`scheme://Host`) nor in `--cors`, or that says
//!   `Sec-Fetch-Site: cross-site`/`same-site` without such an origin, is
//!   refused with 403. curl, grpcurl and gRPC clients send neither header;
//!   the dashboard's own requests are same-origin.
//!
//! `/mod/v2` refusals carry etcd's JSON error body; others the gateway's.

use std::{net::SocketAddr, str::FromStr, sync::Arc};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode, Uri, header, uri::Authority};
use tonic::Code;

use super::{
    gateway::error::GatewayError,
    modv2::error::{Cause, ModError},
};

/// An `--allowed-hosts` entry that is not a host name or host:port.
#[derive(Debug, thiserror::Error)]
#[error("invalid --allowed-hosts entry {0:?} (expected a host name, host:port, or *)")]
pub struct HostListError(String);

/// One allowed host: a name (lower case; IPv6 in brackets) and, if given,
/// the one port it may be reached on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern {
    host: String,
    port: Option<u16>,
}

/// The two checks, as configured at start.
#[derive(Clone, Debug)]
pub struct Guard {
    /// `None`: any host.
    hosts: Option<Vec<HostPattern>>,
    /// `None`: any origin (`--cors *`).
    cors: Option<Vec<String>>,
    /// `http` or `https`: the scheme of the server's own origin.
    scheme: &'static str,
}

impl Guard {
    /// The guard for a server listening on `listen` (TLS or not) with
    /// `--allowed-hosts allowed_hosts` and `--cors cors`.
    pub fn new(
        allowed_hosts: &[String],
        cors: &[String],
        listen: SocketAddr,
        tls: bool,
    ) -> Result<Self, HostListError> {
        let given: Vec<&str> = allowed_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .collect();
        let hosts = if given.contains(&"*") {
            None
        } else if given.is_empty() {
            if listen.ip().is_loopback() {
                let own = match listen {
                    SocketAddr::V4(a) => a.ip().to_string(),
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                };
                let mut list: Vec<HostPattern> = ["localhost", "127.0.0.1", "[::1]"]
                    .iter()
                    .map(|h| HostPattern {
                        host: (*h).to_owned(),
                        port: None,
                    })
                    .collect();
                list.push(HostPattern {
                    host: own,
                    port: None,
                });
                Some(list)
            } else {
                None
            }
        } else {
            Some(
                given
                    .iter()
                    .map(|h| parse_host(h).ok_or_else(|| HostListError((*h).to_owned())))
                    .collect::<Result<_, _>>()?,
            )
        };
        let cors: Vec<String> = cors
            .iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        let cors = if cors.iter().any(|o| o == "*") {
            None
        } else {
            Some(cors)
        };
        Ok(Self {
            hosts,
            cors,
            scheme: if tls { "https" } else { "http" },
        })
    }

    /// Why `headers`/`uri` may not be served, if they may not.
    fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        let host_header = headers.get(header::HOST);
        let host = match (uri.authority(), host_header) {
            (Some(a), _) => Some(a.as_str().to_owned()),
            (None, Some(h)) => Some(
                h.to_str()
                    .map_err(|_| Refusal::Host("(not text)".into()))?
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if let Some(hosts) = &self.hosts {
            for name in [
                uri.authority().map(Authority::as_str),
                host_header.and_then(|h| h.to_str().ok()),
            ]
            .into_iter()
            .flatten()
            {
                let ok = parse_host(name).is_some_and(|p| {
                    hosts
                        .iter()
                        .any(|a| a.host == p.host && a.port.is_none_or(|port| Some(port) == p.port))
                });
                if !ok {
                    return Err(Refusal::Host(name.to_owned()));
                }
            }
        }
        let origin = headers.get(header::ORIGIN);
        let allowed = |origin: &str| {
            self.cors
                .as_ref()
                .is_none_or(|list| list.iter().any(|o| o == origin))
                || host
                    .as_deref()
                    .is_some_and(|h| same_origin(origin, self.scheme, h))
        };
        match origin {
            Some(o) => {
                let o = o.to_str().unwrap_or("(not text)");
                if !allowed(o) {
                    return Err(Refusal::Origin(format!(
                        "origin {o} may not use this server"
                    )));
                }
            }
            None => {
                let site = headers
                    .get("sec-fetch-site")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")
                {
                    return Err(Refusal::Origin(format!(
                        "a {site} request without an allowed origin"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Why a request was refused.
#[derive(Debug)]
enum Refusal {
    /// The host it was addressed to (421).
    Host(String),
    /// A cross-origin request (403).
    Origin(String),
}

/// `host[:port]` parsed and normalised: lower case, no trailing dot.
fn parse_host(s: &str) -> Option<HostPattern> {
    let a = Authority::from_str(s).ok()?;
    if a.as_str().contains('@') {
        return None;
    }
    let host = a.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some(HostPattern {
        host,
        port: a.port_u16(),
    })
}

/// Whether `origin` is `scheme://host` (ports compared with defaults
/// filled in, host names case-insensitively).
fn same_origin(origin: &str, scheme: &str, host: &str) -> bool {
    let Ok(o) = Uri::from_str(origin) else {
        return false;
    };
    let (Some(o_scheme), Some(o_auth)) = (o.scheme_str(), o.authority()) else {
        return false;
    };
    let default_port = |s: &str| {
        if s.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        }
    };
    let Some(h) = parse_host(host) else {
        return false;
    };
    let Some(oh) = parse_host(o_auth.as_str()) else {
        return false;
    };
    o_scheme.eq_ignore_ascii_case(scheme)
        && oh.host == h.host
        && oh.port.unwrap_or(default_port(o_scheme)) == h.port.unwrap_or(default_port(scheme))
}

/// The middleware: refuses what [`Guard`] refuses, before routing.
pub async fn guard(State(guard): State<Arc<Guard>>, req: Request<Body>, next: Next) -> Response {
    match guard.check(req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(Refusal::Host(host)) => {
            tracing::debug!(%host, "refused a request for a host not in --allowed-hosts");
            (
                StatusCode::MISDIRECTED_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("host {host} is not served here (see --allowed-hosts)\n"),
            )
                .into_response()
        }
        Err(Refusal::Origin(reason)) => {
            tracing::debug!(%reason, "refused a cross-origin request");
            let reason = format!("cross-origin request refused: {reason} (see --cors)");
            let path = req.uri().path();
            if path == "/mod/v2" || path.starts_with("/mod/v2/") {
                ModError::forbidden(Cause::of(req.method(), path), &reason).into_response()
            } else {
                GatewayError::new(Code::PermissionDenied, reason).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Guard {
        Guard::new(&[], &[], "127.0.0.1:4001".parse().unwrap(), false).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn loopback_hosts_only_by_default() {
        let g = loopback();
        let path: Uri = "/v1/status".parse().unwrap();
        for ok in [
            "localhost:4001",
            "127.0.0.1",
            "[::1]:9",
            "LOCALHOST.",
            "127.0.0.1:4001",
        ] {
            assert!(g.check(&path, &headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:4001",
            "127.0.0.2",
            "localhost.attacker.example",
        ] {
            assert!(g.check(&path, &headers(&[("host", bad)])).is_err(), "{bad}");
        }
        // HTTP/2: the authority is in the URI.
        let h2: Uri = "http://attacker.example:4001/baton.v1.Lock/Get"
            .parse()
            .unwrap();
        assert!(g.check(&h2, &HeaderMap::new()).is_err());
        let h2: Uri = "http://localhost:4001/baton.v1.Lock/Get".parse().unwrap();
        assert!(g.check(&h2, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn any_host_off_loopback_and_lists_with_ports() {
        let g = Guard::new(&[], &[], "0.0.0.0:4001".parse().unwrap(), false).unwrap();
        let path: Uri = "/".parse().unwrap();
        assert!(g.check(&path, &headers(&[("host", "anything:1")])).is_ok());
        let g = Guard::new(
            &["baton.internal:4001".into(), "other".into()],
            &[],
            "127.0.0.1:4001".parse().unwrap(),
            false,
        )
        .unwrap();
        assert!(
            g.check(&path, &headers(&[("host", "baton.internal:4001")]))
                .is_ok()
        );
        assert!(
            g.check(&path, &headers(&[("host", "baton.internal:4002")]))
                .is_err()
        );
        assert!(g.check(&path, &headers(&[("host", "other:7")])).is_ok());
        assert!(g.check(&path, &headers(&[("host", "localhost")])).is_err());
        assert!(Guard::new(&["a b".into()], &[], "127.0.0.1:1".parse().unwrap(), false).is_err());
    }

    #[test]
    fn origins() {
        let g = loopback();
        let path: Uri = "/v1/lock/release".parse().unwrap();
        let own = headers(&[
            ("host", "localhost:4001"),
            ("origin", "http://localhost:4001"),
        ]);
        assert!(g.check(&path, &own).is_ok());
        for bad in [
            "http://attacker.example",
            "null",
            "https://localhost:4001",
            "http://localhost:4002",
        ] {
            let h = headers(&[("host", "localhost:4001"), ("origin", bad)]);
            assert!(
                matches!(g.check(&path, &h), Err(Refusal::Origin(_))),
                "{bad}"
            );
        }
        for site in ["cross-site", "same-site"] {
            let h = headers(&[("host", "localhost:4001"), ("sec-fetch-site", site)]);
            assert!(g.check(&path, &h).is_err(), "{site}");
        }
        for site in ["same-origin", "none"] {
            let h = headers(&[("host", "localhost:4001"), ("sec-fetch-site", site)]);
            assert!(g.check(&path, &h).is_ok(), "{site}");
        }
        let g = Guard::new(
            &[],
            &["http://app.example".into()],
            "127.0.0.1:4001".parse().unwrap(),
            false,
        )
        .unwrap();
        let h = headers(&[
            ("host", "localhost:4001"),
            ("origin", "http://app.example"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(g.check(&path, &h).is_ok());
        let h = headers(&[
            ("host", "localhost:4001"),
            ("origin", "http://other.example"),
        ]);
        assert!(g.check(&path, &h).is_err());
    }
}
