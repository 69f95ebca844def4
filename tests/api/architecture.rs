//! The module graph check: the server crate's top-level modules (`src/<name>.rs` or `src/<name>/`)
//! import one another without a cycle, and only the composition root (`app`) is extended by
//! `impl App`. Read from the source, so a change that adds a cycle fails here with the cycle named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules and the files of each.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            let mut files = Vec::new();
            collect_rs(&path, &mut files);
            modules.insert(name, files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            modules.insert(name, vec![path]);
        }
    }
    modules
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The first path segment of every `crate::` reference in `text`, comments left out; a grouped
/// `use crate::{a, b::c}` names each of its members.
fn crate_references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut member = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        names.insert(first_segment(&member));
                        member.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 {
                    member.push(c);
                }
            }
            names.insert(first_segment(&member));
        } else {
            names.insert(first_segment(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(walk: &mut Walk<'a>, node: &'a str) {
        let next = walk.index.len();
        walk.index.insert(node, next);
        walk.low.insert(node, next);
        walk.stack.push(node);
        for target in &walk.graph[node] {
            let target = target.as_str();
            if !walk.index.contains_key(target) {
                visit(walk, target);
                let low = walk.low[node].min(walk.low[target]);
                walk.low.insert(node, low);
            } else if walk.stack.contains(&target) {
                let low = walk.low[node].min(walk.index[target]);
                walk.low.insert(node, low);
            }
        }
        if walk.low[node] == walk.index[node] {
            let mut component = Vec::new();
            while let Some(member) = walk.stack.pop() {
                component.push(member.to_string());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                walk.found.push(component);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            visit(&mut walk, node);
        }
    }
    walk.found
}

fn module_graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, Vec<PathBuf>>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut graph = BTreeMap::new();
    for (name, files) in &modules {
        let mut targets = BTreeSet::new();
        for file in files {
            targets.extend(crate_references(&std::fs::read_to_string(file).unwrap()));
        }
        targets.retain(|t| t != name && modules.contains_key(t));
        graph.insert(name.clone(), targets);
    }
    (graph, modules)
}

#[test]
fn the_module_graph_has_no_cycle() {
    let (graph, _) = module_graph();
    assert!(graph.len() > 20, "read the modules: {graph:?}");
    assert!(
        graph["authn"].contains("tokens"),
        "references are found: {:?}",
        graph["authn"]
    );
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "modules that import one another in a cycle: {found:?}"
    );
}

#[test]
fn only_the_composition_root_is_app() {
    let (graph, modules) = module_graph();
    // What the server is built from; they may know the composition root, nothing else may.
    let outer = ["app", "cli", "http", "jobs", "startup"];
    for (name, targets) in &graph {
        if !outer.contains(&name.as_str()) {
            assert!(
                !targets.contains("app"),
                "`{name}` depends on the composition root `app`"
            );
        }
    }
    for (name, files) in &modules {
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            let extends_app = text.lines().any(|line| {
                line.trim_start()
                    .strip_prefix("impl App")
                    .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
            });
            assert!(
                !extends_app || name == "app",
                "{} extends App; give its rules a service of their own",
                file.display()
            );
        }
    }
}

#[test]
fn the_check_reads_grouped_imports_and_skips_comments() {
    let text = "use crate::{audit::{AuditLog, Event}, clock::Clock};\n// crate::app::App\nlet x = crate::store::conn;";
    let names: Vec<String> = crate_references(text).into_iter().collect();
    assert_eq!(names, ["audit", "clock", "store"]);
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
            .collect();
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}
