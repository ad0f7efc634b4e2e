//! The credential a request carries in its `Authorization` header: gRPC
//! metadata `authorization: Bearer SECRET` and HTTP's
//! `Authorization: Bearer SECRET` are the same header, and on `/mod/v2`
//! HTTP Basic (`curl -u NAME:SECRET`) as etcd v2's auth took it.

use base64::Engine as _;
use http::{HeaderMap, header::AUTHORIZATION};

/// A request's credential, before it is matched against the tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// No `Authorization` header.
    None,
    /// `Bearer SECRET`.
    Bearer(String),
    /// `Basic base64(NAME:SECRET)`.
    Basic {
        /// The user name (a token's name).
        user: String,
        /// The secret.
        password: String,
    },
    /// A header that cannot be a credential, and why.
    Malformed(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer(_) => f.write_str("Bearer(..)"),
            Self::Basic { user, .. } => write!(f, "Basic({user:?}, ..)"),
            Self::Malformed(why) => write!(f, "Malformed({why:?})"),
        }
    }
}

impl Credential {
    /// The credential in `headers`; HTTP Basic only when `basic` (the
    /// `/mod/v2` routes), so that elsewhere a browser never offers its
    /// saved passwords.
    pub fn from_headers(headers: &HeaderMap, basic: bool) -> Self {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Self::None;
        };
        if values.next().is_some() {
            return Self::Malformed("more than one authorization header".into());
        }
        let Ok(value) = value.to_str() else {
            return Self::Malformed("the authorization header is not ASCII".into());
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Self::Bearer(rest.to_owned());
        }
        if scheme.eq_ignore_ascii_case("basic") && basic {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            return match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((user, password)) => Self::Basic {
                    user: user.to_owned(),
                    password: password.to_owned(),
                },
                None => Self::Malformed("the Basic credential is not base64 of NAME:SECRET".into()),
            };
        }
        if scheme.eq_ignore_ascii_case("basic") {
            return Self::Malformed(
                "HTTP Basic is accepted on /mod/v2 only; send `Authorization: Bearer TOKEN`".into(),
            );
        }
        Self::Malformed("the authorization header must be `Bearer TOKEN`".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn schemes() {
        assert_eq!(
            Credential::from_headers(&HeaderMap::new(), true),
            Credential::None
        );
        assert_eq!(
            Credential::from_headers(&headers("Bearer abc"), false),
            Credential::Bearer("abc".into())
        );
        assert_eq!(
            Credential::from_headers(&headers("bearer  abc "), false),
            Credential::Bearer("abc".into())
        );
        // "deployer:s3cr:et" in base64.
        assert_eq!(
            Credential::from_headers(&headers("Basic ZGVwbG95ZXI6czNjcjpldA=="), true),
            Credential::Basic {
                user: "deployer".into(),
                password: "s3cr:et".into()
            }
        );
        assert!(matches!(
            Credential::from_headers(&headers("Basic ZGVwbG95ZXI6czNjcjpldA=="), false),
            Credential::Malformed(_)
        ));
        assert!(matches!(
            Credential::from_headers(&headers("Token abc"), true),
            Credential::Malformed(_)
        ));
        assert!(!format!("{:?}", Credential::Bearer("s3cret".into())).contains("s3cret"));
    }
}
