//! The layering rules of docs/architecture.md, checked on the source text so they stay true:
//! each core module imports only modules of lower layers (so no import cycle among them), no
//! two files import each other in a loop,
//! `data/` and `reproduce/` never reach the command line, the core never names a plugin, and
//! every file in `plugins/` registers one and imports only the plugin-facing core.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The core modules, bottom layer first. A module may import modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &[
        "config",
        "registry",
        "progress",
        "report",
        "schedule",
        "output",
        "seed",
        "interrupt",
        "limits",
        "dist",
    ],
    &["data"],
    &["tensor", "metrics"],
    &["checkpoint"],
    &["denoiser"],
    &["integrator", "network"],
    &["objective", "sampling"],
    &["train", "schema", "plot"],
    &["run"],
    &["reproduce"],
    &["cli"],
];

/// What a plugin file may import from the core: the plugin traits and their helpers.
const PLUGIN_FACING: &[&str] = &[
    "config",
    "registry",
    "schedule",
    "data",
    "tensor",
    "denoiser",
    "integrator",
    "network",
    "objective",
    "plugins",
    "register_plugin",
    "inventory",
    "schemars",
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of tests/layering.rs"))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code of a file without comment lines (docs name modules they do not import).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment after each `prefix` (e.g. `crate::` -> `data`).
fn targets(code: &str, prefix: &str) -> BTreeSet<String> {
    code.match_indices(prefix)
        .filter(|(i, _)| {
            // Not the tail of a longer path (`my_crate::`) or a macro's `$crate::`.
            !code[..*i]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })
        .map(|(i, _)| {
            code[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .filter(|s: &String| !s.is_empty())
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/run/sample.rs` -> `run`; `src/denoiser.rs` -> `denoiser`.
fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn core_modules_import_only_lower_layers() {
    let mut problems = Vec::new();
    for path in rust_files(&src()) {
        let module = top_module(&path);
        if module == "lib" || module == "main" {
            continue;
        }
        let here = layer_of(&module);
        for target in targets(&code(&path), "crate::") {
            if target == module || target == "plugins" && module == "lib" {
                continue;
            }
            if target == "plugins" {
                problems.push(format!("{} names the plugins", path.display()));
            } else if layer_of(&target) >= here {
                problems.push(format!(
                    "{} ({module}, layer {here}) imports {target} (layer {})",
                    path.display(),
                    layer_of(&target)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `src/network/fused.rs` -> `["network", "fused"]`; `src/data/mod.rs` -> `["data"]`.
fn module_path(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The path segments after each `prefix` (`crate::a::b::C` -> `[a, b, C]`).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    code.match_indices(prefix)
        .filter(|(i, _)| {
            !code[..*i]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':')
        })
        .map(|(i, _)| {
            let rest = &code[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn no_import_cycle_among_core_files() {
    let files: Vec<(PathBuf, Vec<String>)> = rust_files(&src())
        .into_iter()
        .map(|p| {
            let m = module_path(&p);
            (p, m)
        })
        .collect();
    let modules: Vec<&Vec<String>> = files.iter().map(|f| &f.1).collect();
    // The file a path names: its longest prefix that is a module file.
    let resolve = |path: Vec<String>| -> Option<usize> {
        (1..=path.len())
            .rev()
            .find_map(|k| modules.iter().position(|m| **m == path[..k]))
    };
    let mut edges = vec![Vec::new(); files.len()];
    for (i, (path, module)) in files.iter().enumerate() {
        let code = code(path);
        let parent = &module[..module.len().saturating_sub(1)];
        let mut targets: Vec<Vec<String>> = paths_after(&code, "crate::");
        targets.extend(
            paths_after(&code, "super::")
                .into_iter()
                .map(|p| parent.iter().cloned().chain(p).collect()),
        );
        for t in targets {
            if let Some(j) = resolve(t).filter(|&j| j != i) {
                edges[i].push(j);
            }
        }
    }
    // Depth-first search for a back edge; the cycle is the stack from its target on.
    fn visit(i: usize, edges: &[Vec<usize>], state: &mut [u8], stack: &mut Vec<usize>) -> bool {
        state[i] = 1;
        stack.push(i);
        for &j in &edges[i] {
            if state[j] == 1 {
                let from = stack.iter().position(|&k| k == j).unwrap();
                stack.drain(..from);
                stack.push(j);
                return true;
            }
            if state[j] == 0 && visit(j, edges, state, stack) {
                return true;
            }
        }
        stack.pop();
        state[i] = 2;
        false
    }
    let mut state = vec![0u8; files.len()];
    for i in 0..files.len() {
        let mut stack = Vec::new();
        if state[i] == 0 && visit(i, &edges, &mut state, &mut stack) {
            let cycle: Vec<String> = stack.iter().map(|&k| files[k].1.join("/")).collect();
            panic!("import cycle among files: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn data_and_reproduce_never_reach_the_command_line() {
    for dir in ["data", "reproduce"] {
        for path in rust_files(&src().join(dir)) {
            let t = targets(&code(&path), "crate::");
            assert!(!t.contains("cli"), "{} imports cli", path.display());
        }
    }
}

#[test]
fn every_plugin_file_registers_a_plugin_and_imports_only_the_plugin_facing_core() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let files = rust_files(&dir);
    assert!(files.len() > 10, "{files:?}");
    for path in files {
        if path.file_name().unwrap() == "mod.rs" {
            continue;
        }
        let code = code(&path);
        assert!(
            code.contains("register_plugin!") && code.contains("#[typetag::serde"),
            "{} registers no plugin: every file in plugins/ is one",
            path.display()
        );
        for target in targets(&code, "fewstep::") {
            assert!(
                PLUGIN_FACING.contains(&target.as_str()),
                "{} imports fewstep::{target}, which plugins do not use",
                path.display()
            );
        }
        assert!(!code.contains("crate::"), "{}", path.display());
    }
}

#[test]
fn the_layer_table_names_every_core_module() {
    let mut modules: BTreeSet<String> = rust_files(&src()).iter().map(|p| top_module(p)).collect();
    modules.remove("lib");
    modules.remove("main");
    for m in &modules {
        layer_of(m);
    }
    let listed: BTreeSet<String> = LAYERS
        .iter()
        .flat_map(|l| l.iter().map(|s| s.to_string()))
        .collect();
    assert_eq!(
        modules, listed,
        "tests/layering.rs lists modules that do not exist"
    );
}
