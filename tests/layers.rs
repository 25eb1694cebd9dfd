//! The floor plan, enforced: every `crate::…`/`super::…` path in `src/` (the library) and every
//! `plangate::…`/`super::…` path in `src/cli/` (the binary) is resolved to the file it names, and
//!
//! - every library module has a layer in `src/lib.rs`'s table, the one source of the order;
//! - no module imports a layer above its own, or another module of its own layer;
//! - only the configuration reads the file format (`config::file`), and the importer writes it;
//! - no two files import each other, directly or through others;
//! - `main.rs` stays a `main()`, at most 150 lines.
//!
//! Paths are read from code, not comments; a doc link is not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's layers as `src/lib.rs` lists them (its `text` table, highest first): each
/// module with its rank, 0 for the lowest. A module may use lower ranks only.
fn ranks() -> Vec<(String, u32)> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    parse_ranks(&lib)
}

fn parse_ranks(lib: &str) -> Vec<(String, u32)> {
    let table: Vec<&str> = lib
        .lines()
        .map(|l| l.trim_start_matches("//!").trim())
        .skip_while(|l| *l != "```text")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    let top = u32::try_from(table.len()).unwrap() - 1;
    table
        .iter()
        .zip(0..)
        .flat_map(|(line, i)| {
            let names = line.split("  ").next().unwrap_or("");
            names
                .split(',')
                .map(move |m| (m.trim().to_owned(), top - i))
        })
        .collect()
}

/// The library's top-level modules that `ranks` leaves out: the `pub mod`s of `lib` and the
/// files and folders of `src/` beside it (the binary's `main`, `cli` and `bin` are not library).
fn unranked(lib: &str, files: &[String], ranks: &[(String, u32)]) -> Vec<String> {
    let declared = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';'));
    let mut missing: Vec<String> = declared
        .map(str::to_owned)
        .chain(files.iter().cloned())
        .filter(|m| !matches!(m.as_str(), "lib" | "main" | "cli" | "bin"))
        .filter(|m| !ranks.iter().any(|(r, _)| r == m))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/store/memory.rs` → ["store", "memory"]; `src/lib.rs` → [].
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The file that defines module path `m` (or the deepest existing file on its way).
fn file_of(m: &[String]) -> Option<PathBuf> {
    for n in (1..=m.len()).rev() {
        let f = src().join(m[..n].join("/")).with_extension("rs");
        if f.is_file() {
            return Some(f);
        }
    }
    None
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without comments and string literals (a string may hold `//` or a path-like text).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into flat paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let t = tree.split(" as ").next().unwrap_or("").trim();
        return if t.is_empty() {
            vec![]
        } else {
            vec![t.to_owned()]
        };
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .flat_map(expand)
        .map(|p| match p.as_str() {
            "self" => prefix.to_owned(),
            _ => format!("{prefix}::{p}"),
        })
        .collect()
}

/// Every module path a file refers to, as absolute segments (`["engine", "Decision"]`), with
/// `root` the name of its crate as seen from elsewhere (`crate`, or `plangate` from the binary).
fn references(file: &Path, text: &str) -> Vec<(String, Vec<String>)> {
    let module = module_of(file);
    let mut code = code(text);
    // An inline test module (`#[cfg(test)] mod tests { … }`, last in a file by house style) is
    // test code, and its `super` is the file itself: leave it out.
    if let Some(i) = code.find("#[cfg(test)]\nmod tests {") {
        code.truncate(i);
    }
    // Child modules declared here (`mod foo;`): a path `foo::…` goes to the child's file.
    let children: Vec<String> = code
        .lines()
        .filter_map(|l| {
            let l = l
                .trim()
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect();
    let mut paths = Vec::new();
    // `use` trees, which may span lines.
    let mut rest = code.as_str();
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = after.find(';').unwrap_or(after.len());
        paths.extend(expand(&after[..end].replace(['\n', ' '], "")));
    }
    // Paths in expressions and types.
    for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        let head = word.split("::").next().unwrap_or("");
        if word.contains("::")
            && (matches!(head, "crate" | "super" | "plangate")
                || children.iter().any(|c| c == head))
        {
            paths.push(word.trim_end_matches(':').to_owned());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let Some((&first, rest)) = segs.split_first() else {
            continue;
        };
        let (root, base): (&str, Vec<String>) = match first {
            "crate" => ("crate", Vec::new()),
            "plangate" => ("plangate", Vec::new()),
            "super" => {
                let mut b = module.clone();
                b.pop();
                let mut rest = rest;
                while let Some((&"super", r)) = rest.split_first() {
                    b.pop();
                    rest = r;
                }
                let mut abs = b;
                abs.extend(rest.iter().map(|s| s.to_string()));
                out.push(("crate".to_owned(), abs));
                continue;
            }
            child if children.iter().any(|c| c == child) => {
                let mut abs = module.clone();
                abs.extend(segs.iter().map(|s| s.to_string()));
                out.push(("crate".to_owned(), abs));
                continue;
            }
            _ => continue,
        };
        let mut abs = base;
        abs.extend(rest.iter().map(|s| s.to_string()));
        out.push((root.to_owned(), abs));
    }
    out
}

struct Graph {
    /// file → files it uses (library and binary separately: `crate` differs).
    edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    /// (file, referenced module path) for the layer rules.
    refs: Vec<(PathBuf, Vec<String>)>,
}

fn graph() -> Graph {
    let mut files = Vec::new();
    rs_files(&src(), &mut files);
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut refs = Vec::new();
    for f in files {
        let module = module_of(&f);
        let in_bin = module.first().is_some_and(|m| m == "cli") || f.ends_with("main.rs");
        let text = std::fs::read_to_string(&f).unwrap();
        for (root, path) in references(&f, &text) {
            // From the binary, `crate` is the binary and `plangate` the library.
            let target = match (in_bin, root.as_str()) {
                (false, "crate") | (true, "plangate") => {
                    refs.push((f.clone(), path.clone()));
                    file_of(&path)
                }
                (true, "crate") => file_of(&path),
                _ => None,
            };
            if let Some(t) = target
                && t != f
            {
                edges.entry(f.clone()).or_default().insert(t);
            }
        }
    }
    Graph { edges, refs }
}

fn rank(ranks: &[(String, u32)], top: &str) -> Option<u32> {
    ranks.iter().find(|(m, _)| m == top).map(|(_, r)| *r)
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let g = graph();
    let ranks = ranks();
    let mut wrong = Vec::new();
    for (file, path) in &g.refs {
        let from = module_of(file);
        let (Some(from_top), Some(to_top)) = (from.first(), path.first()) else {
            continue;
        };
        let (Some(a), Some(b)) = (rank(&ranks, from_top), rank(&ranks, to_top)) else {
            continue; // the binary, or a crate-root item (every module is ranked: below)
        };
        if from_top != to_top && b >= a {
            wrong.push(format!("{} uses {}", rel(file), path.join("::")));
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn every_library_module_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let files: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    let ranks = ranks();
    assert!(ranks.len() >= 16, "lib.rs's layer table: {ranks:?}");
    let missing = unranked(&lib, &files, &ranks);
    assert!(
        missing.is_empty(),
        "modules with no layer in lib.rs's table: {missing:?}"
    );
    // Every module in the table exists.
    for (m, _) in &ranks {
        assert!(
            files.contains(m),
            "lib.rs's table names {m}, which src/ does not have"
        );
    }
}

#[test]
fn a_module_added_without_a_layer_is_caught() {
    let lib = "//! ```text\n//! engine   the decision\n//! clock    time\n//! ```\npub mod clock;\npub mod engine;\npub mod billing;\n";
    let ranks = parse_ranks(lib);
    assert_eq!(ranks, [("engine".to_owned(), 1), ("clock".to_owned(), 0)]);
    assert_eq!(unranked(lib, &[], &ranks), ["billing"]);
    assert_eq!(
        unranked(lib, &["quota".to_owned(), "main".to_owned()], &ranks),
        ["billing", "quota"]
    );
}

#[test]
fn only_the_configuration_and_the_importer_use_the_file_format() {
    let g = graph();
    let wrong: Vec<String> = g
        .refs
        .iter()
        .filter(|(file, path)| {
            path.starts_with(&["config".to_owned(), "file".to_owned()])
                // `migrate` writes files (import-aws): in the file's own types.
                && module_of(file)
                    .first()
                    .is_none_or(|m| m != "config" && m != "migrate")
        })
        .map(|(file, path)| format!("{} uses {}", rel(file), path.join("::")))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_two_files_import_each_other() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit(
        f: &PathBuf,
        g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(i) = stack.iter().position(|s| s == f) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(f.clone());
            return Some(cycle);
        }
        if done.contains(f) {
            return None;
        }
        stack.push(f.clone());
        for t in g.get(f).into_iter().flatten() {
            if let Some(c) = visit(t, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(f.clone());
        None
    }
    let mut done = BTreeSet::new();
    for f in g.edges.keys() {
        if let Some(cycle) = visit(f, &g.edges, &mut Vec::new(), &mut done) {
            let names: Vec<String> = cycle.iter().map(|p| rel(p)).collect();
            panic!("import circle: {}", names.join(" → "));
        }
    }
}

#[test]
fn the_graph_sees_imports() {
    // The checks above are only as good as the parser: it must see the imports that exist.
    let g = graph();
    let uses = |from: &str, to: &str| {
        g.edges
            .get(&src().join(from))
            .is_some_and(|t| t.contains(&src().join(to)))
    };
    assert!(uses("store/memory.rs", "limit.rs"));
    assert!(uses("store/memory.rs", "store/backend.rs"));
    assert!(uses("grpc/authz.rs", "grpc/answer.rs"));
    assert!(uses("config/compile.rs", "config/keys.rs"));
    assert!(uses("cli/check.rs", "engine.rs"));
    assert!(uses("cli.rs", "cli/serve.rs"));
    assert!(uses("store.rs", "store/memory.rs"));
    assert!(uses("limit.rs", "limit/bucket.rs"));
    assert!(uses("limit/tests.rs", "limit.rs"));
    assert_eq!(
        expand("crate::a::{self, b::{c, d as e}, f}"),
        [
            "crate::a",
            "crate::a::b::c",
            "crate::a::b::d",
            "crate::a::f"
        ]
    );
    assert_eq!(
        code("let s = \"// not a comment\"; // a comment"),
        "let s = \"\"; "
    );
}

#[test]
fn main_rs_is_a_main_only() {
    let text = std::fs::read_to_string(src().join("main.rs")).unwrap();
    assert!(
        text.lines().count() <= 150,
        "src/main.rs has {} lines",
        text.lines().count()
    );
    assert_eq!(
        code(&text).matches("fn ").count(),
        1,
        "src/main.rs holds main() only"
    );
}

#[test]
fn the_readme_gives_the_same_order() {
    let readme = std::fs::read_to_string(src().join("../README.md")).unwrap();
    let start = readme
        .find("import only downwards:")
        .expect("README's layout section");
    let text = &readme[start..];
    let chain = &text[..text.find(". The table").unwrap()];
    // `a` → `b`, `c` → …: lowest first, one group per layer.
    let readme_ranks: Vec<(String, u32)> = chain
        .split('→')
        .zip(0..)
        .flat_map(|(group, rank)| {
            group
                .split('`')
                .skip(1)
                .step_by(2)
                .map(move |m| (m.to_owned(), rank))
                .collect::<Vec<_>>()
        })
        .collect();
    let (mut table, mut readme_ranks) = (ranks(), readme_ranks);
    table.sort();
    readme_ranks.sort();
    assert_eq!(
        readme_ranks, table,
        "README's layer order differs from src/lib.rs's table"
    );
}
