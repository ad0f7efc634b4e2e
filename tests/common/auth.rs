//! Test support for `--auth-file`: writing secret files the server accepts,
//! and calls that present a token on gRPC and HTTP. Shared by the memory
//! backend's auth tests and the etcd gateways' auth tests so both speak to
//! the server the same way.

use std::path::Path;

use baton::proto::v1::{self as pb, lock_client::LockClient};
use tonic::transport::Channel;

use super::{Reply, curl};

/// Writes `text` to `path` readable by the owner only: the server refuses
/// an auth or cluster-secret file that others may read.
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write secret file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

/// `message` with `authorization: Bearer SECRET` when a secret is given.
pub fn req<T>(message: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(s) = secret {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {s}").parse().unwrap());
    }
    r
}

/// `Lock.Get` for `key`, as `secret` (or with no token).
pub async fn get(
    c: &mut LockClient<Channel>,
    key: &str,
    secret: Option<&str>,
) -> Result<pb::GetResponse, tonic::Status> {
    c.get(req(pb::GetRequest { key: key.into() }, secret))
        .await
        .map(tonic::Response::into_inner)
}

/// curl `method url` with `extra` arguments; `-X` only when not a GET, so a
/// GET is sent exactly as plain curl sends it.
fn curl_with(addr: &str, mut args: Vec<String>, method: &str, url: &str) -> Reply {
    if method != "GET" {
        args.extend(["-X".to_owned(), method.to_owned()]);
    }
    args.push(url.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(addr, &args)
}

/// curl `method url` with HTTP Basic `user` (`name:secret`).
pub fn basic(addr: &str, user: &str, method: &str, url: &str) -> Reply {
    curl_with(addr, vec!["-u".to_owned(), user.to_owned()], method, url)
}

/// curl `method url` with `Authorization: Bearer SECRET`.
pub fn bearer(addr: &str, secret: &str, method: &str, url: &str) -> Reply {
    curl_with(
        addr,
        vec!["-H".to_owned(), format!("Authorization: Bearer {secret}")],
        method,
        url,
    )
}
