//! The layout keeps its shape: every `crate::` path in `src/` points to a
//! module on a lower layer than the one it is written in, so no module
//! imports one above it and no import cycle can form. Test code (from a
//! file's `#[cfg(test)]` on, and `tests.rs` files) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules of `src/`, from the top down. A module may use those on
/// lower layers; modules on one layer may not use each other.
const LAYERS: &[&[&str]] = &[
    // The binary's commands, and the demo origin they can start.
    &["cli"],
    // Entry points for fuzzing the readers of untrusted input.
    &["fuzzing"],
    &["demo"],
    // Starting and stopping the edge.
    &["app"],
    // Ingress: listeners, TLS, connection limits; the edge's own HTTP/1.1
    // loop, and the admin listener's paths.
    &["server"],
    &["http1", "admin"],
    // One request's way through the edge (`proxy::fills` is where every
    // fill is started); keeping the fleet's member list and health current.
    &["proxy", "fleet"],
    // Reloading the config while serving.
    &["reload"],
    // The shared state; the fetch behind a fill (given only the parts of
    // the state it uses); answers from entries and fills; text answers.
    &["edge", "fetch", "respond", "plain"],
    // Response bodies, the in-flight table, routing rules.
    &["body", "coalesce", "route"],
    // The fill readers share; request errors; prefetch planning; live
    // stream restarts; sliced objects; live segments asked for early.
    &["fill", "error", "prefetch", "restarts", "slicing", "upcoming"],
    // Video rules; a stored hit's per-answer headers; origins.
    &["media", "shared_head", "upstream"],
    // Cache rules and store; the fleet of sibling edges; CORS rules; what
    // is sent upstream; metrics;
    // the sendfile socket; signed URLs.
    &[
        "access_log",
        "cache",
        "certs",
        "cluster",
        "cors",
        "forward",
        "metrics",
        "sendfile",
        "tls_writes",
        "signing",
    ],
    // Leaves: they use no other module of the crate.
    &[
        "audience",
        "budget",
        "clock",
        "cmsd",
        "config",
        "cpu",
        "digest",
        "ejection",
        "headers",
        "history",
        "inline_first",
        "limits",
        "mapped",
        "outcome",
        "rendezvous",
        "request_id",
        "streams",
    ],
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
            // In a top-level module's own file, `super::` is the crate root.
            let top_file = relative.components().count() == 1
                || relative.ends_with("mod.rs") && relative.components().count() == 2;
            let used = out.entry(module.clone()).or_default();
            for (i, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap_or_default();
                let mut pieces: Vec<&str> = line.split("crate::").skip(1).collect();
                if top_file {
                    pieces.extend(line.split("super::").skip(1));
                }
                for piece in pieces {
                    for name in names(piece) {
                        if name != module {
                            used.entry(name)
                                .or_insert_with(|| format!("{}:{}", relative.display(), i + 1));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The module names at the start of a path after `crate::`: one, or each
/// of a group (`{a::X, b}`).
fn names(piece: &str) -> Vec<String> {
    let word = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = piece.strip_prefix('{') else {
        return vec![word(piece)].into_iter().filter(|n| !n.is_empty()).collect();
    };
    // The group's items, split at its own commas only (not nested groups').
    let mut items = vec![String::new()];
    let mut depth = 0;
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => items.push(String::new()),
            _ => {}
        }
        if depth == 0 && c != ',' && c != '}' {
            items.last_mut().unwrap().push(c);
        }
    }
    items
        .iter()
        .map(|i| word(i))
        .filter(|n| !n.is_empty() && n != "self")
        .collect()
}

#[test]
fn paths_name_their_modules() {
    assert_eq!(names("body::EdgeBody;"), ["body"]);
    assert_eq!(names("{body::EdgeBody, cache::{Head, Wire}};"), ["body", "cache"]);
    assert!(names("{self};").is_empty());
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
