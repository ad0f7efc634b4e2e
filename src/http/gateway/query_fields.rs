//! Which fields of a request message are booleans, read from the same
//! descriptor set the code is generated from, so that a `GET` query value
//! is typed by its field instead of by how it looks.

use std::{
    collections::{HashMap, HashSet},
    sync::OnceLock,
};

use prost::Message;
use prost_types::{FileDescriptorSet, field_descriptor_proto::Type};

use crate::proto::FILE_DESCRIPTOR_SET;

/// Every message's bool fields by full name (`baton.v1.WatchRequest`), each
/// under its proto name and its JSON (camelCase) name, as pbjson accepts
/// both.
fn table() -> &'static HashMap<String, HashSet<String>> {
    static TABLE: OnceLock<HashMap<String, HashSet<String>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = HashMap::new();
        // A descriptor set that does not decode is a build problem, and the
        // OpenAPI test would fail on it; here it only means no bools.
        let Ok(fds) = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
            return table;
        };
        for file in &fds.file {
            for m in &file.message_type {
                let names = m
                    .field
                    .iter()
                    .filter(|f| f.r#type() == Type::Bool)
                    .flat_map(|f| [f.name().to_owned(), f.json_name().to_owned()])
                    .filter(|n| !n.is_empty())
                    .collect();
                table.insert(format!("{}.{}", file.package(), m.name()), names);
            }
        }
        table
    })
}

/// The bool fields of `message` (empty for an unknown message).
pub fn bool_fields(message: &str) -> &'static HashSet<String> {
    static EMPTY: OnceLock<HashSet<String>> = OnceLock::new();
    table()
        .get(message)
        .unwrap_or_else(|| EMPTY.get_or_init(HashSet::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_prefix_is_a_bool_and_get_key_is_not() {
        let watch = bool_fields("baton.v1.WatchRequest");
        assert!(watch.contains("prefix"), "{watch:?}");
        assert!(bool_fields("baton.v1.GetRequest").is_empty());
    }
}
