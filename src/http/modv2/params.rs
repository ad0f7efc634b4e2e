//! Parameters of a `/mod/v2` request: the query string and a form body, as
//! curl sends them (`?ttl=60 -d value=bar`). When both carry a name, the
//! body wins. Decoding is strict: bytes that are not UTF-8 after
//! percent-decoding are an error, not a replacement character.

use std::collections::HashMap;

use percent_encoding::percent_decode;

use super::error::{Cause, ModError};

/// The merged parameters.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses the query string, then the body over it.
    pub fn parse(query: Option<&str>, body: &[u8], cause: Cause) -> Result<Self, ModError> {
        let mut map = HashMap::new();
        for source in [query.unwrap_or("").as_bytes(), body] {
            for pair in source.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
                let mut kv = pair.splitn(2, |&b| b == b'=');
                let name = decode(kv.next().unwrap_or_default(), cause)?;
                let value = decode(kv.next().unwrap_or_default(), cause)?;
                map.insert(name, value);
            }
        }
        Ok(Self(map))
    }

    /// The parameter, if given (an empty value counts as given).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The parameter, if given and not empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

/// Decodes a path segment or form component strictly.
pub fn decode(raw: &[u8], cause: Cause) -> Result<String, ModError> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    decode_path(&plus_as_space, cause)
}

/// Percent-decodes `raw` (no `+` rule, as in paths) into UTF-8.
pub fn decode_path(raw: &[u8], cause: Cause) -> Result<String, ModError> {
    let bytes: Vec<u8> = percent_decode(raw).collect();
    String::from_utf8(bytes).map_err(|_| ModError::invalid_form(cause, "not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_wins_over_query_and_plus_is_space() {
        let p = Params::parse(Some("ttl=5&value=a"), b"value=b+c&x=%2F", Cause::Acquire).unwrap();
        assert_eq!(p.get("ttl"), Some("5"));
        assert_eq!(p.get("value"), Some("b c"));
        assert_eq!(p.get("x"), Some("/"));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert!(Params::parse(Some("value=%FF"), b"", Cause::Acquire).is_err());
    }
}
