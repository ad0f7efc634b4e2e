//! The gateway's OpenAPI 3 document, generated from the same descriptor set
//! the code is generated from, so it cannot drift from the proto. Served at
//! `/v1/openapi.json`; a copy is committed as `docs/openapi.json` and a
//! test checks that the copy is current.

use prost::Message;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet, SourceCodeInfo,
    field_descriptor_proto::{Label, Type},
};
use serde_json::{Map, Value, json};

use crate::proto::FILE_DESCRIPTOR_SET;

/// The descriptor set could not be decoded (a build problem).
#[derive(Debug, thiserror::Error)]
#[error("cannot decode the embedded descriptor set: {0}")]
pub struct OpenApiError(#[from] prost::DecodeError);

/// The OpenAPI document as pretty JSON with a trailing newline.
pub fn document() -> Result<String, OpenApiError> {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)?;
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.insert(
        "Status".into(),
        json!({
            "type": "object",
            "description": "An error: the gRPC status code and a message.",
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}}
            }
        }),
    );
    // `baton.v1.Forward` is between gateways only; the JSON gateway does not
    // serve it (a client-streaming call has no JSON form here).
    for file in fds
        .file
        .iter()
        .filter(|f| f.name() != "baton/v1/forward.proto")
    {
        let package = file.package();
        let comments = Comments(file.source_code_info.as_ref());
        for (i, m) in file.message_type.iter().enumerate() {
            schemas.insert(
                format!("{package}.{}", m.name()),
                message_schema(m, &comments, &[4, i as i32]),
            );
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            let values: Vec<Value> = e.value.iter().map(|v| json!(v.name())).collect();
            schemas.insert(
                format!("{package}.{}", e.name()),
                json!({
                    "type": "string",
                    "enum": values,
                    "description": comments.at(&[5, i as i32]),
                }),
            );
        }
        for (si, s) in file.service.iter().enumerate() {
            for (mi, m) in s.method.iter().enumerate() {
                let path = format!(
                    "/v1/{}/{}",
                    s.name().to_lowercase(),
                    m.name().to_lowercase()
                );
                let input = schema_ref(m.input_type());
                let output = schema_ref(m.output_type());
                let ok = if m.server_streaming() {
                    json!({
                        "description": "A stream: one JSON object per line, or Server-Sent Events for Accept: text/event-stream.",
                        "content": {
                            "application/x-ndjson": {"schema": {
                                "type": "object",
                                "properties": {"result": output, "error": {"$ref": "#/components/schemas/Status"}}
                            }},
                            "text/event-stream": {"schema": {"type": "string"}}
                        }
                    })
                } else {
                    json!({"description": "OK", "content": {"application/json": {"schema": output}}})
                };
                paths.insert(
                    path,
                    json!({"post": {
                        "operationId": format!("{}_{}", s.name(), m.name()),
                        "summary": format!("{package}.{}/{}", s.name(), m.name()),
                        "description": comments.at(&[6, si as i32, 2, mi as i32]),
                        "requestBody": {"required": false, "content": {"application/json": {"schema": input}}},
                        "responses": {
                            "200": ok,
                            "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}
                        }
                    }}),
                );
            }
        }
    }
    let doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "baton HTTP/JSON gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every RPC of baton.v1.Lock, baton.v1.Election and baton.v1.Status as JSON over HTTP, in the canonical proto3 JSON mapping (64-bit integers are strings). GET with the request's fields as query parameters works too."
        },
        "paths": paths,
        "components": {"schemas": schemas}
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    Ok(text)
}

fn schema_ref(type_name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", type_name.trim_start_matches('.'))})
}

fn message_schema(m: &DescriptorProto, comments: &Comments, path: &[i32]) -> Value {
    let mut props = Map::new();
    for (i, f) in m.field.iter().enumerate() {
        let mut field_path = path.to_vec();
        field_path.extend([2, i as i32]);
        let mut schema = field_schema(f);
        if let (Some(obj), Some(doc)) = (schema.as_object_mut(), comments.at(&field_path).as_str())
        {
            if obj.contains_key("$ref") {
                // OpenAPI 3.0 ignores siblings of $ref; wrap it.
                schema = json!({"allOf": [schema], "description": doc});
            } else {
                obj.insert("description".into(), json!(doc));
            }
        }
        props.insert(json_name(f), schema);
    }
    json!({"type": "object", "description": comments.at(path), "properties": props})
}

fn field_schema(f: &FieldDescriptorProto) -> Value {
    let single = match f.r#type() {
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::Uint64 | Type::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Type::Uint32 | Type::Fixed32 => json!({"type": "integer", "format": "uint32"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Double => json!({"type": "number", "format": "double"}),
        Type::Float => json!({"type": "number", "format": "float"}),
        Type::Enum | Type::Message | Type::Group => schema_ref(f.type_name()),
    };
    if f.label() == Label::Repeated {
        json!({"type": "array", "items": single})
    } else {
        single
    }
}

fn json_name(f: &FieldDescriptorProto) -> String {
    if let Some(j) = &f.json_name {
        return j.clone();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in f.name().chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Leading comments from the proto source, by descriptor path.
struct Comments<'a>(Option<&'a SourceCodeInfo>);

impl Comments<'_> {
    fn at(&self, path: &[i32]) -> Value {
        self.0
            .and_then(|info| info.location.iter().find(|l| l.path == path))
            .and_then(|l| l.leading_comments.as_deref())
            .map(|c| {
                let text: Vec<&str> = c.lines().map(str::trim).collect();
                json!(text.join(" ").trim())
            })
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_openapi_document_is_current() {
        let generated = super::document().expect("generate");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        if std::env::var_os("BATON_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run `BATON_WRITE_OPENAPI=1 cargo test --lib openapi`"
        );
    }
}
