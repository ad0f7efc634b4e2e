//! The `--auth-file`: TOML `[[token]]` entries, each a name, a secret (or
//! its SHA-256), the key prefixes it may touch and its rights. Parsing turns
//! every mistake into an error that names the file and the line, so an
//! operator who breaks the file on a SIGHUP is told where, while the rules
//! already loaded stay in force.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::{Right, Rights, Token};

/// The shortest secret accepted, in bytes: a short secret is guessable.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why an auth or cluster-secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid, at this line.
    #[error("{path}, line {line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the mistake.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    token: Vec<Spanned<TokenToml>>,
}

/// One `[[token]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenToml {
    name: Spanned<String>,
    secret: Option<Spanned<String>>,
    secret_sha256: Option<Spanned<String>>,
    #[serde(default)]
    prefixes: Vec<Spanned<String>>,
    rights: Spanned<Vec<Spanned<String>>>,
}

/// Reads and checks an auth file: its tokens, in file order.
pub fn load(path: &Path) -> Result<Vec<Token>, AuthFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the text of an auth file read from `path` (named in errors).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Token>, AuthFileError> {
    let at = |offset: usize, message: String| AuthFileError::Invalid {
        path: path.to_owned(),
        line: line_of(text, offset),
        message,
    };
    let file: FileToml = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(offset, e.message().trim().to_owned())
    })?;
    let mut tokens = Vec::with_capacity(file.token.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut digests: HashMap<[u8; 32], String> = HashMap::new();
    for entry in file.token {
        let start = entry.span().start;
        let t = entry.into_inner();
        let name = t.name.get_ref().trim().to_owned();
        if name.is_empty() || name.chars().any(char::is_control) || name.contains(':') {
            return Err(at(
                t.name.span().start,
                "name must be non-empty, without control characters or ':'".into(),
            ));
        }
        if let Some(first) = names.insert(name.clone(), line_of(text, start)) {
            return Err(at(
                t.name.span().start,
                format!("token {name:?} is named twice (first on line {first})"),
            ));
        }
        let (digest, offset) = match (&t.secret, &t.secret_sha256) {
            (Some(s), None) => (
                secret_digest(s.get_ref()).map_err(|m| at(s.span().start, m))?,
                s.span().start,
            ),
            (None, Some(h)) => (
                hex_digest(h.get_ref()).map_err(|m| at(h.span().start, m))?,
                h.span().start,
            ),
            (Some(s), Some(_)) => {
                return Err(at(
                    s.span().start,
                    format!("token {name:?} has both secret and secret_sha256; give one"),
                ));
            }
            (None, None) => {
                return Err(at(
                    start,
                    format!("token {name:?} needs secret or secret_sha256"),
                ));
            }
        };
        if let Some(other) = digests.insert(digest, name.clone()) {
            return Err(at(
                offset,
                format!("token {name:?} has the same secret as token {other:?}"),
            ));
        }
        let mut rights = Rights::default();
        if t.rights.get_ref().is_empty() {
            return Err(at(
                t.rights.span().start,
                format!("token {name:?} has no rights (read, write, metrics)"),
            ));
        }
        for r in t.rights.get_ref() {
            let right = match r.get_ref().as_str() {
                "read" => Right::Read,
                "write" => Right::Write,
                "metrics" => Right::Metrics,
                other => {
                    return Err(at(
                        r.span().start,
                        format!("unknown right {other:?} (read, write, metrics)"),
                    ));
                }
            };
            rights.insert(right);
        }
        tokens.push(Token {
            name,
            prefixes: t.prefixes.into_iter().map(Spanned::into_inner).collect(),
            rights,
            digest,
            revoked: Default::default(),
        });
    }
    Ok(tokens)
}

/// The digest a secret is matched by, once checked: at least
/// [`MIN_SECRET_BYTES`] of visible ASCII (what an `Authorization` header
/// can carry).
pub fn secret_digest(secret: &str) -> Result<[u8; 32], String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "secret is {} bytes, shorter than {MIN_SECRET_BYTES} (make one with `openssl rand -hex 32`)",
            secret.len()
        ));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("secret must be visible ASCII, without spaces".into());
    }
    Ok(Sha256::digest(secret.as_bytes()).into())
}

fn hex_digest(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    let bad = || {
        format!(
            "secret_sha256 must be 64 hex digits (`printf %s SECRET | sha256sum`), not {} characters",
            hex.len()
        )
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Reads a `--cluster-secret-file`: one secret per non-empty line (lines
/// starting with `#` are comments). Gateways send the first and accept
/// every one, so a secret is rotated by adding the new one second, then
/// moving it first, gateway by gateway.
pub fn load_cluster_secrets(path: &Path) -> Result<Vec<String>, AuthFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut secrets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        secret_digest(line).map_err(|message| AuthFileError::Invalid {
            path: path.to_owned(),
            line: i + 1,
            message,
        })?;
        secrets.push(line.to_owned());
    }
    if secrets.is_empty() {
        return Err(AuthFileError::Invalid {
            path: path.to_owned(),
            line: 1,
            message: "no secret in the file".into(),
        });
    }
    Ok(secrets)
}

/// Warns when a file of secrets can be read or written by other users.
pub fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{mode:04o}"),
                    "the file of secrets is readable by other users; chmod 600 it"
                );
            }
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Token>, AuthFileError> {
        parse(Path::new("auth.toml"), text)
    }

    fn line(e: AuthFileError) -> (usize, String) {
        match e {
            AuthFileError::Invalid { line, message, .. } => (line, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_good_file_parses() {
        let hex = format!("{:x}", Sha256::digest(b"0123456789abcdefXYZ"));
        let tokens = parse_str(&format!(
            "[[token]]\nname = \"deployer\"\nsecret = \"0123456789abcdef\"\nprefixes = [\"jobs/\", \"leader/web\"]\nrights = [\"read\", \"write\"]\n\n[[token]]\nname = \"prom\"\nsecret_sha256 = \"{hex}\"\nrights = [\"metrics\"]\n"
        ))
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].name, "deployer");
        assert_eq!(tokens[0].prefixes, ["jobs/", "leader/web"]);
        assert!(tokens[0].rights.has(Right::Write) && !tokens[0].rights.has(Right::Metrics));
        assert_eq!(
            tokens[1].digest,
            <[u8; 32]>::from(Sha256::digest(b"0123456789abcdefXYZ"))
        );
        assert!(tokens[1].prefixes.is_empty());
    }

    #[test]
    fn mistakes_name_their_line() {
        let bad_right = "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\nrights = [\"read\", \"admin\"]\n";
        let (l, m) = line(parse_str(bad_right).unwrap_err());
        assert_eq!(l, 4);
        assert!(m.contains("admin"), "{m}");

        let short = "\n[[token]]\nname = \"a\"\nsecret = \"short\"\nrights = [\"read\"]\n";
        let (l, m) = line(parse_str(short).unwrap_err());
        assert_eq!(l, 4);
        assert!(m.contains("shorter"), "{m}");

        let syntax = "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\nrights = [\"read\"]\n";
        assert_eq!(line(parse_str(syntax).unwrap_err()).0, 3);

        let twice = "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\nrights = [\"read\"]\n[[token]]\nname = \"a\"\nsecret = \"0123456789abcdeg\"\nrights = [\"read\"]\n";
        let (l, m) = line(parse_str(twice).unwrap_err());
        assert_eq!(l, 6);
        assert!(m.contains("twice"), "{m}");

        let unknown = "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\nrights = [\"read\"]\nprefix = [\"x\"]\n";
        assert_eq!(line(parse_str(unknown).unwrap_err()).0, 5);

        let same = "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\nrights = [\"read\"]\n[[token]]\nname = \"b\"\nsecret = \"0123456789abcdef\"\nrights = [\"read\"]\n";
        assert_eq!(line(parse_str(same).unwrap_err()).0, 7);

        let hex = "[[token]]\nname = \"a\"\nsecret_sha256 = \"abc\"\nrights = [\"read\"]\n";
        assert_eq!(line(parse_str(hex).unwrap_err()).0, 3);
    }
}
