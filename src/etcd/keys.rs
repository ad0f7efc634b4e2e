//! Where the etcd backend keeps things: the key layout under `--etcd-prefix`.
//!
//! ```text
//! P l/<lock>/e/<entry>            an entry of <lock>'s queue; its etcd create
//!                                 revision is its index, so the queue's order
//!                                 is create-revision order
//! P l/<lock>/w/<entry>/<reg>      "a gateway has requests waiting on <entry>"
//!                                 (a registration), on that gateway's lease
//! P l/<lock>/t/<index>            a tombstone: why entry <index> was removed
//!                                 (released, expired, cancelled), written in
//!                                 the same transaction as the delete, on a
//!                                 short lease
//! ```
//!
//! `<lock>` is the lock's name with `%`, `/`, control and non-ASCII bytes
//! percent-encoded. The encoding maps every byte on its own, so it is
//! prefix-preserving in both directions: lock `a` (`l/a/`) never sees the keys
//! of lock `a/b` (`l/a%2Fb/`), and every lock whose name starts with `jobs/`
//! lives under `l/jobs%2F`, which is what a prefix watch or listing ranges
//! over. The encoding does not keep the names' sort order, so listings sort
//! the decoded names themselves.
//!
//! `<entry>` is `v<value>` (the value encoded like a lock name) for entries
//! with a value, which makes "one entry per value" a matter of creating the
//! key only if it does not exist (`create_revision == 0` in a transaction),
//! race-free across gateways; and `n<gateway>-<n>` for entries without one,
//! which never join.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Bytes escaped in lock names and values: `/` separates key segments, `%`
/// is the escape itself; control bytes are escaped for readable keys.
const ESCAPED: &AsciiSet = &CONTROLS.add(b'/').add(b'%');

/// Encodes a lock name or value as one key segment (see the module docs).
pub fn escape(s: &str) -> String {
    utf8_percent_encode(s, ESCAPED).to_string()
}

/// Decodes a segment made by [`escape`]; `None` if it is not valid.
pub fn unescape(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The key layout under one prefix. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The normalised prefix followed by `l/`.
    root: String,
}

/// What a key under the prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// An entry of a lock's queue.
    Entry {
        /// The lock's name.
        lock: String,
    },
    /// A gateway's registration of waiting requests.
    Registration {
        /// The lock's name.
        lock: String,
    },
    /// A tombstone for a removed entry.
    Tombstone {
        /// The lock's name.
        lock: String,
        /// The removed entry's index.
        index: u64,
    },
}

impl Keys {
    /// The layout under `prefix`; a non-empty prefix without a trailing `/`
    /// gets one, so `/baton` and `/baton/` mean the same.
    pub fn new(prefix: &str) -> Self {
        let mut root = prefix.to_owned();
        if !root.is_empty() && !root.ends_with('/') {
            root.push('/');
        }
        root.push_str("l/");
        Self { root }
    }

    /// Everything of every lock: `P l/`.
    pub fn all(&self) -> String {
        self.root.clone()
    }

    /// Everything of one lock (entries, registrations, tombstones).
    pub fn lock(&self, lock: &str) -> String {
        format!("{}{}/", self.root, escape(lock))
    }

    /// Everything of every lock whose name starts with `prefix`; a range
    /// given to etcd as a prefix.
    pub fn locks_with_prefix(&self, prefix: &str) -> String {
        format!("{}{}", self.root, escape(prefix))
    }

    /// The prefix of one lock's entries: its queue.
    pub fn entries(&self, lock: &str) -> String {
        format!("{}e/", self.lock(lock))
    }

    /// The entry `entry_id` of `lock`.
    pub fn entry(&self, lock: &str, entry_id: &str) -> String {
        format!("{}e/{}", self.lock(lock), entry_id)
    }

    /// The prefix of the registrations on the entry `entry_id` of `lock`.
    pub fn registrations(&self, lock: &str, entry_id: &str) -> String {
        format!("{}w/{}/", self.lock(lock), entry_id)
    }

    /// One registration on the entry `entry_id` of `lock`.
    pub fn registration(&self, lock: &str, entry_id: &str, reg_id: &str) -> String {
        format!("{}{}", self.registrations(lock, entry_id), reg_id)
    }

    /// The tombstone of entry `index` of `lock`.
    pub fn tombstone(&self, lock: &str, index: u64) -> String {
        format!("{}t/{}", self.lock(lock), index)
    }

    /// What `key` is, or `None` if it is not one of ours.
    pub fn parse(&self, key: &[u8]) -> Option<KeyKind> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.root)?;
        let (lock, rest) = rest.split_once('/')?;
        let lock = unescape(lock)?;
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "e" if !rest.is_empty() => Some(KeyKind::Entry { lock }),
            "w" if !rest.is_empty() => Some(KeyKind::Registration { lock }),
            "t" => Some(KeyKind::Tombstone {
                lock,
                index: rest.parse().ok()?,
            }),
            _ => None,
        }
    }

    /// The entry id within an entry key of `lock` (the part after `e/`).
    pub fn entry_id<'k>(&self, lock: &str, entry_key: &'k str) -> Option<&'k str> {
        let prefix = self.entries(lock);
        entry_key.strip_prefix(prefix.as_str())
    }
}

/// The entry id of an entry with `value`.
pub fn value_entry_id(value: &str) -> String {
    format!("v{}", escape(value))
}

/// The entry id of an entry without a value, unique to this gateway.
pub fn anonymous_entry_id(gateway: &str, n: u64) -> String {
    format!("n{gateway}-{n}")
}

/// The smallest key greater than every key that starts with `prefix`, as
/// etcd's ranges want their end (`[prefix, end)`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): the range runs to the end of the keyspace.
    vec![0]
}

/// The key that sorts right after `key` (to exclude `key` from a range).
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_prefixes_never_overlap_and_name_prefixes_carry_over() {
        let k = Keys::new("/baton");
        assert_eq!(k.lock("a"), "/baton/l/a/");
        assert_eq!(k.lock("a/b"), "/baton/l/a%2Fb/");
        assert!(!k.lock("a/b").starts_with(&k.lock("a")));
        assert!(k.lock("jobs/x").starts_with(&k.locks_with_prefix("jobs/")));
        assert!(!k.lock("jobsx").starts_with(&k.locks_with_prefix("jobs/")));
        assert!(k.lock("50%/x").starts_with(&k.locks_with_prefix("50%")));
        assert!(!k.lock("50").starts_with(&k.locks_with_prefix("50%")));
    }

    #[test]
    fn parse_round_trips() {
        let k = Keys::new("/p/");
        let lock = "we/ird %2F näme";
        let e = k.entry(lock, &value_entry_id("a/b"));
        assert_eq!(
            k.parse(e.as_bytes()),
            Some(KeyKind::Entry {
                lock: lock.to_owned()
            })
        );
        assert_eq!(
            k.parse(k.tombstone(lock, 42).as_bytes()),
            Some(KeyKind::Tombstone {
                lock: lock.to_owned(),
                index: 42
            })
        );
        let r = k.registration(lock, "n1-2", "g-3");
        assert_eq!(
            k.parse(r.as_bytes()),
            Some(KeyKind::Registration {
                lock: lock.to_owned()
            })
        );
        assert_eq!(k.entry_id(lock, &e), Some("va%2Fb"));
        assert_eq!(k.parse(b"/other/key"), None);
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
