//! The layout keeps its shape: every `crate::` path in `src/` points to a
//! module on a lower layer than the one it is written in, so no module
//! imports one above it and no import cycle can form. Test code (from a
//! file's `#[cfg(test)]` on, and `tests.rs` files) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules of `src/`, from the top down. A module may use those on
/// lower layers; modules on one layer may not use each other.
const LAYERS: &[&[&str]] = &[
    // The binary's commands, and the demo they can start.
    &["cli", "demo"],
    // Starting and stopping the edge; the admin listener's paths.
    &["app", "admin"],
    // Listeners, TLS, connection limits and the edge's own HTTP/1.1 loop.
    &["server"],
    &["http1"],
    // One request's way through the edge.
    &["proxy"],
    // Prefetch decisions that start fills.
    &["prefetch"],
    // The shared state every request reads.
    &["edge"],
    // The fetch behind a fill, answers from entries and fills, and the
    // in-flight table.
    &["fetch", "respond"],
    &["coalesce"],
    &["fill", "cors", "limits"],
    // Response bodies and the plain-text answers made of them.
    &["body"],
    &["sendfile"],
    // Origins and what is sent to them.
    &["upstream"],
    &["forward"],
    // Pure rules and types.
    &["cache", "media", "route"],
    &["mapped", "budget", "error"],
    &["config", "headers", "metrics", "outcome", "observe"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module each source file belongs to, and the top-level
/// modules its non-test code names through `crate::`.
fn imports(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
            let module = first.trim_end_matches(".rs").to_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let used = out.entry(module.clone()).or_default();
            for (i, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap_or_default();
                for piece in line.split("crate::").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        used.entry(name)
                            .or_insert_with(|| format!("{}:{}", relative.display(), i + 1));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_import_points_down() {
    let graph = imports(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    let mut wrong = Vec::new();
    for (module, used) in &graph {
        let Some(own) = layer_of(module) else {
            wrong.push(format!("{module} is on no layer: add it to LAYERS in tests/layers.rs"));
            continue;
        };
        for (target, place) in used {
            match layer_of(target) {
                None if graph.contains_key(target) => {
                    wrong.push(format!("{target} is on no layer: add it to LAYERS in tests/layers.rs"))
                }
                None => {}
                Some(theirs) if theirs <= own => {
                    wrong.push(format!("{module} uses {target}, which is not below it ({place})"))
                }
                Some(_) => {}
            }
        }
    }
    let wrong: BTreeSet<String> = wrong.into_iter().collect();
    assert!(
        wrong.is_empty(),
        "imports that do not point down:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_layers_name_only_modules_that_exist() {
    let graph = imports(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            graph.contains_key(*module),
            "LAYERS names {module}, which src/ does not have"
        );
    }
}
