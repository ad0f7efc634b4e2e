//! The layers of DESIGN.md, checked: nothing imports upward.
//!
//! Every file of the library (`src/**/*.rs` but the binaries) is read as
//! tokens by proc-macro2, so comments, doc comments and their intra-doc
//! links (which are string literals by then) never count, while paths in
//! code and in macro calls do. Each `crate::x…` and `super::…` path that
//! leaves the top-level module it is written in is an edge between two
//! layers; every edge must be in [`ALLOWED`] unless it starts at the [`TOP`].
//! A new top-level module must be added to the table, with its place in the
//! layers, before its files may use another module.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    str::FromStr,
};

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// The top: the command line and the listener that assemble everything.
/// They may use any module (as may `lib.rs`, `main.rs` and the binaries,
/// which are not scanned).
const TOP: &[&str] = &["config", "server"];

/// Which top-level modules each other top-level module of `src/` may use,
/// top to bottom as DESIGN.md draws the layers:
///
/// ```text
/// config · server (tls)      the command line and the one listener
/// grpc · http                the surfaces: they call the service layer
/// service                    validation, limits, requests -> engine calls
/// engine │ etcd              the contract; etcd is a backend beside the
///                            embedded one (the same engine on a primary)
/// store                      durability, and the records it stores
/// cli -> client -> proto     the client side: subcommands, library, API
/// auth                       who may touch which keys, for every surface
/// ```
///
/// `proto` (the generated API) is shared and low. The lists are what the
/// code uses today: widening one is a design decision, to make here and in
/// DESIGN.md together.
const ALLOWED: &[(&str, &[&str])] = &[
    ("tls", &[]),
    ("grpc", &["auth", "proto", "service"]),
    ("http", &["auth", "proto", "service"]),
    ("service", &["auth", "engine", "proto"]),
    // engine::remote forwards to the primary over the API (proto).
    ("engine", &["proto", "store"]),
    ("etcd", &["engine", "store"]),
    ("store", &[]),
    ("auth", &[]),
    ("cli", &["client"]),
    ("client", &["proto"]),
    ("proto", &[]),
];

/// One path that leaves its top-level module.
#[derive(Debug)]
struct Edge {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

#[test]
fn no_module_imports_a_layer_it_may_not() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(from, to)| (*from, to.iter().copied().collect()))
        .collect();

    let edges = library_edges(&root);
    assert!(
        edges.iter().any(|e| e.from == "engine" && e.to == "store"),
        "the scan found no engine -> store edge, which the code has: it is broken"
    );

    let mut forbidden = Vec::new();
    for e in edges.iter().filter(|e| !TOP.contains(&e.from.as_str())) {
        match allowed.get(e.from.as_str()) {
            None => forbidden.push(format!(
                "{}:{}: module `{}` is not in tests/layering.rs's ALLOWED table; \
                 add it with its place in DESIGN.md's layers",
                e.file.display(),
                e.line,
                e.from
            )),
            Some(ok) if !ok.contains(e.to.as_str()) => forbidden.push(format!(
                "{}:{}: `{}` uses `{}`, which its layer may not (it may use: {})",
                e.file.display(),
                e.line,
                e.from,
                e.to,
                if ok.is_empty() {
                    "nothing".to_string()
                } else {
                    ok.iter().copied().collect::<Vec<_>>().join(", ")
                }
            )),
            Some(_) => {}
        }
    }
    assert!(
        forbidden.is_empty(),
        "imports against the layers of DESIGN.md:\n{}",
        forbidden.join("\n")
    );
}

/// The scan itself, on a made-up file `src/engine/x.rs`: paths in code and
/// macros count, comments and doc links do not, a test module's `super`
/// stays home, and `crate::{…}` groups count per item.
#[test]
fn the_scan_sees_code_not_comments() {
    let source = r#"
        //! See [`server`](crate::server) and [`grpc`](crate::grpc::lock).
        use super::table::LockTable;
        use crate::{engine::types, store::{Journal, Record}, proto::v1};
        /// Not [`crate::http`], nor `crate::client`.
        pub(crate) fn f() {
            // crate::cli::run();
            let s = "crate::config::Cli";
            tracing::info!("{:?}", crate::service::Service::new());
            super::super::auth::check();
        }
        #[cfg(test)]
        mod tests {
            use super::*;
            use super::super::clock::Clock;
        }
    "#;
    let tokens: Vec<TokenTree> = TokenStream::from_str(source)
        .expect("tokenizes")
        .into_iter()
        .collect();
    let module = ["engine".to_string(), "x".to_string()];
    let mut edges = Vec::new();
    scan(&tokens, &module, Path::new("src/engine/x.rs"), &mut edges);
    let found: Vec<(&str, usize)> = edges.iter().map(|e| (e.to.as_str(), e.line)).collect();
    assert_eq!(
        found,
        [("store", 4), ("proto", 4), ("service", 9), ("auth", 10)],
        "{edges:#?}"
    );
}

/// Every edge between top-level modules in the library's files.
fn library_edges(src: &Path) -> Vec<Edge> {
    let mut edges = Vec::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).expect("under src");
        let Some(module) = module_path(rel) else {
            continue;
        };
        let text = fs::read_to_string(&file).expect("read a source file");
        let tokens = TokenStream::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not tokenize: {e:?}", file.display()));
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        scan(&tokens, &module, &Path::new("src").join(rel), &mut edges);
    }
    edges
}

/// The module a file defines, as a path from the crate root, or `None` for
/// files that are not a module of the library below its root (`lib.rs`,
/// `main.rs` and the other binaries, which are the top and may use
/// anything).
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts[0] == "bin" || parts == ["lib.rs"] || parts == ["main.rs"] {
        return None;
    }
    let mut module: Vec<String> = parts
        .iter()
        .map(|p| p.trim_end_matches(".rs").to_string())
        .collect();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    Some(module)
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Finds the paths in `tokens` (written in module `module`) that leave its
/// top-level module. Inline `mod name { … }` blocks are followed, so a test
/// module's `use super::*` means the file's own module.
fn scan(tokens: &[TokenTree], module: &[String], file: &Path, edges: &mut Vec<Edge>) {
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Ident(id) if id == "mod" => {
                if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(body))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                    && body.delimiter() == Delimiter::Brace
                {
                    let mut inner = module.to_vec();
                    inner.push(name.to_string());
                    let body: Vec<TokenTree> = body.stream().into_iter().collect();
                    scan(&body, &inner, file, edges);
                    i += 3;
                    continue;
                }
            }
            TokenTree::Ident(id) if (id == "crate" || id == "super") && path_sep(tokens, i + 1) => {
                let line = id.span().start().line;
                // Where the path starts, then each further `super::`.
                let mut base: Vec<String> = if id == "crate" {
                    Vec::new()
                } else {
                    module[..module.len().saturating_sub(1)].to_vec()
                };
                let mut j = i + 3;
                while let Some(TokenTree::Ident(next)) = tokens.get(j)
                    && next == "super"
                    && path_sep(tokens, j + 1)
                {
                    base.pop();
                    j += 3;
                }
                let targets: Vec<String> = match base.first() {
                    Some(top) => vec![top.clone()],
                    // At the crate root: the next segment, or each item of
                    // a `crate::{a::…, b}` group, names the module.
                    None => match tokens.get(j) {
                        Some(TokenTree::Ident(next)) => vec![next.to_string()],
                        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                            group_heads(g.stream())
                        }
                        _ => Vec::new(),
                    },
                };
                for to in targets {
                    if to != module[0] && to != "self" {
                        edges.push(Edge {
                            file: file.to_path_buf(),
                            line,
                            from: module[0].clone(),
                            to,
                        });
                    }
                }
                i = j;
                continue;
            }
            TokenTree::Group(g) => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                scan(&inner, module, file, edges);
            }
            _ => {}
        }
        i += 1;
    }
}

/// Whether `tokens[at..]` starts with `::`.
fn path_sep(tokens: &[TokenTree], at: usize) -> bool {
    matches!(
        (tokens.get(at), tokens.get(at + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

/// The first segment of each comma-separated item of a `{…}` use group.
fn group_heads(group: TokenStream) -> Vec<String> {
    let mut heads = Vec::new();
    let mut at_item_start = true;
    for token in group {
        match &token {
            TokenTree::Punct(p) if p.as_char() == ',' => at_item_start = true,
            TokenTree::Ident(id) if at_item_start => {
                heads.push(id.to_string());
                at_item_start = false;
            }
            _ => at_item_start = false,
        }
    }
    heads
}
