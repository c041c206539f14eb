//! Config schemas against the registry and the typed configs, `--help` of every subcommand,
//! shell completions.
//!
//! This binary links one extra plugin of each kind, as an out-of-tree crate would: they must
//! show up in the in-process schemas, and the integrator's nested `Source` enum must not clash
//! with aDDIM's. The committed schemas are checked with the `fewstep` binary, which has only
//! the built-in plugins.

use anyhow::{bail, Result};
use clap::CommandFactory;
use fewstep::cli::schema::{config_kinds, render};
use fewstep::cli::Cli;
use fewstep::denoiser::{BuildCtx, Denoiser, DenoiserSpec};
use fewstep::integrator::{Integrator, StepCtx};
use fewstep::objective::{DistillObjective, Loss, ObjectiveCtx};
use fewstep::register_plugin;
use fewstep::registry;
use fewstep::schema::{definition_name, reference, ConfigKind};
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Shares its name with aDDIM's x_var `Source`, with other values.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Default)]
#[serde(rename_all = "lowercase")]
enum Source {
    #[default]
    Fixed,
    Learned,
}

/// Test integrator.
#[derive(Serialize, Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
struct TestIntegrator {
    #[serde(default)]
    variance: Source,
}

#[typetag::serde(name = "schema-test")]
impl Integrator for TestIntegrator {
    fn step(&self, _: &mut StepCtx, _: Batch, _: f64, _: f64) -> Result<Batch> {
        bail!("test plugin")
    }
}
register_plugin!(INTEGRATOR, "schema-test", TestIntegrator, "test");

/// Test denoiser (so the kind has a plugin on branches that register none).
#[derive(Serialize, Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
struct TestDenoiser {}

#[typetag::serde(name = "schema-test")]
impl DenoiserSpec for TestDenoiser {
    fn build(&self, _: &BuildCtx) -> Result<Box<dyn Denoiser>> {
        bail!("test plugin")
    }
}
register_plugin!(DENOISER, "schema-test", TestDenoiser, "test");

/// Test objective, a unit struct (its table is `name` alone).
#[derive(Serialize, Deserialize, JsonSchema, Debug)]
struct TestObjective;

#[typetag::serde(name = "schema-test")]
impl DistillObjective for TestObjective {
    fn loss(&self, _: &mut ObjectiveCtx, _: &Batch) -> Result<Loss> {
        bail!("test plugin")
    }
}
register_plugin!(OBJECTIVE, "schema-test", TestObjective, "test");

fn fewstep(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fewstep"))
        .args(args)
        .output()
        .expect("fewstep runs")
}

#[test]
fn committed_schemas_match_the_registry() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let out = fewstep(&["schema", "--check", "--out", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "schemas/ is out of date with the registered plugins; regenerate with\n    \
         cargo run -- schema --out schemas/ --force\nand commit the result.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn schema_check_fails_on_a_stale_file_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(fewstep(&["schema", "--out", d]).status.success());
    assert!(fewstep(&["schema", "--check", "--out", d]).status.success());
    let kind = &config_kinds()[0];
    std::fs::write(dir.path().join(kind.file), "{}\n").unwrap();
    let out = fewstep(&["schema", "--check", "--out", d]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(kind.file) && err.contains("cargo run -- schema --out"),
        "{err}"
    );
}

#[test]
fn committed_config_reference_matches_the_schemas() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (schemas, docs) = (root.join("schemas"), root.join("docs/config-reference.md"));
    let out = fewstep(&[
        "schema",
        "--check",
        "--out",
        schemas.to_str().unwrap(),
        "--markdown",
        docs.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "docs/config-reference.md (or schemas/) is out of date with the registered plugins; \
         regenerate with\n    cargo run -- schema --out schemas/ --markdown \
         docs/config-reference.md --force\nand commit the result.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_stale_config_reference_fails_the_check_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let md = dir.path().join("reference.md");
    let args = ["schema", "--out", d, "--markdown", md.to_str().unwrap()];
    assert!(fewstep(&args).status.success());
    let check = [&args[..], &["--check"]].concat();
    assert!(fewstep(&check).status.success());
    std::fs::write(&md, "# stale\n").unwrap();
    let out = fewstep(&check);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("reference.md") && err.contains("--markdown"),
        "{err}"
    );
}

#[test]
fn config_reference_covers_every_kind_key_and_plugin() {
    let kinds = config_kinds();
    let schemas: Vec<(&ConfigKind, Value)> = kinds.iter().map(|k| (k, schema_of(k))).collect();
    let md = reference::markdown(&schemas);
    for (kind, schema) in &schemas {
        assert!(
            md.contains(&format!("### `{}`", kind.name())),
            "{}",
            kind.file
        );
        assert!(md.contains(&format!("(../schemas/{})", kind.file)));
        assert!(md.contains(&format!("(../{})", kind.defaults_file)));
        assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(kind.defaults_file)
            .exists());
        for key in schema["properties"].as_object().unwrap().keys() {
            assert!(md.contains(&format!("| `{key}` |")), "{}: {key}", kind.file);
        }
    }
    // This binary's test plugins too: the reference is made from whatever is linked in.
    for p in registry::plugins(None) {
        let heading = format!(
            "<a id=\"plugin-{}-{}\"></a>\n\n#### `{}`",
            p.kind, p.name, p.name
        );
        assert!(md.contains(&heading), "{} {}", p.kind, p.name);
        for (field, _, _) in registry::fields(p).iter().filter(|f| f.0 != "name") {
            assert!(
                md.contains(&format!("| `{field}` |")),
                "{}: {field}",
                p.name
            );
        }
    }
    // Every table row has its four cells: pipes inside cells are escaped.
    for line in md.lines().filter(|l| l.starts_with('|')) {
        let cells = line.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 5, "{line}");
    }
    // Every link inside the page has its anchor.
    for link in md.split("](#").skip(1) {
        let id = &link[..link.find(')').unwrap()];
        assert!(
            md.contains(&format!("<a id=\"{id}\">")),
            "no anchor for #{id}"
        );
    }
}

/// The schema a kind's file is checked with, as the test process (with the test plugins) makes it.
fn schema_of(kind: &ConfigKind) -> Value {
    serde_json::from_str(&render(kind).unwrap()).unwrap()
}

/// A plugin choice in a config: the keys down to it (`[]`: every item of a list of tables), its
/// plugin kind, and whether the choice itself is a list of plugins.
struct PluginField {
    path: Vec<String>,
    kind: &'static str,
    list: bool,
}

impl PluginField {
    fn key(&self) -> String {
        self.path.join(".")
    }
}

/// The plugin choices of a config: top-level keys, and keys of the tables they refer to (e.g.
/// each `[[baselines]]`'s `integrator`).
fn plugin_fields(schema: &Value) -> Vec<PluginField> {
    let mut out = vec![];
    collect_plugin_fields(schema, schema, vec![], &mut out);
    out
}

fn collect_plugin_fields(
    root: &Value,
    object: &Value,
    path: Vec<String>,
    out: &mut Vec<PluginField>,
) {
    assert!(
        path.len() < 8,
        "config tables nest deeper than expected: {path:?}"
    );
    for (key, s) in object["properties"].as_object().into_iter().flatten() {
        let text = s.to_string();
        let list = text.contains("\"items\"");
        let mut here = path.clone();
        here.push(key.clone());
        let mut found = false;
        for k in registry::kind::ALL {
            let target = format!("\"#/definitions/{}\"", definition_name(k));
            if text.contains(&target) {
                out.push(PluginField {
                    path: here.clone(),
                    kind: k,
                    list,
                });
                found = true;
            }
        }
        // Else a nested config table: look inside the definition it refers to.
        if let (false, Some(r)) = (found, first_ref(s)) {
            if list {
                here.push("[]".into());
            }
            let name = r.strip_prefix("#/definitions/").unwrap();
            collect_plugin_fields(root, &root["definitions"][name], here, out);
        }
    }
}

/// The first `$ref` inside a schema.
fn first_ref(s: &Value) -> Option<&str> {
    match s {
        Value::Object(m) => m
            .get("$ref")
            .and_then(Value::as_str)
            .or_else(|| m.values().find_map(first_ref)),
        Value::Array(items) => items.iter().find_map(first_ref),
        _ => None,
    }
}

/// The value at `path` (the first item where it passes through a list).
fn get_at<'a>(t: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = t.get(first)?;
    let v = match rest.first().map(String::as_str) {
        Some("[]") => v.as_array()?.first()?,
        _ => v,
    };
    let rest = rest.strip_prefix(&["[]".to_string()]).unwrap_or(rest);
    match rest.is_empty() {
        true => Some(v),
        false => get_at(v.as_table()?, rest),
    }
}

/// Sets the value at `path`, in every item where it passes through a list (which the defaults
/// must hold at least one of).
fn set_at(t: &mut toml::Table, path: &[String], value: toml::Value) {
    let (first, rest) = path.split_first().unwrap();
    if rest.is_empty() {
        t.insert(first.clone(), value);
        return;
    }
    let v = t
        .get_mut(first)
        .unwrap_or_else(|| panic!("the defaults have no `{first}`"));
    match rest.split_first() {
        Some((each, rest)) if each == "[]" => {
            let items = v.as_array_mut().unwrap();
            assert!(!items.is_empty(), "the defaults' `{first}` is empty");
            for item in items {
                set_at(item.as_table_mut().unwrap(), rest, value.clone());
            }
        }
        _ => set_at(v.as_table_mut().unwrap(), rest, value),
    }
}

fn plugin_value(name: &str, list: bool) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("name".into(), name.into());
    if list {
        toml::Value::Array(vec![t.into()])
    } else {
        t.into()
    }
}

/// The built-in defaults with every plugin field naming a registered plugin.
fn known_good(kind: &ConfigKind, schema: &Value) -> toml::Table {
    let mut t: toml::Table = kind.defaults.parse().unwrap();
    for field in plugin_fields(schema) {
        let registered = registry::names(field.kind);
        let named = get_at(&t, &field.path)
            .and_then(|v| v.get("name"))
            .and_then(|n| n.as_str());
        if !named.is_some_and(|n| registered.contains(&n)) {
            set_at(&mut t, &field.path, plugin_value(registered[0], field.list));
        }
    }
    // Keys a file must give itself (no built-in default), e.g. train's `data`, or that the
    // command fills in, e.g. distill's `data` from the teacher: a path.
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    let needed = required.iter().filter_map(|k| k.as_str());
    for key in needed.chain(kind.filled_in.iter().copied()) {
        if !t.contains_key(key) && schema["properties"][key]["type"] == json!("string") {
            t.insert(key.to_string(), toml::Value::String("example.h5".into()));
        }
    }
    t
}

/// Asserts that the schema and the typed config agree on `table`, and returns the verdict.
fn agree(kind: &ConfigKind, schema: &Value, table: &toml::Table) -> bool {
    let by_schema = valid(schema, schema, &serde_json::to_value(table).unwrap());
    let by_serde = (kind.parse)(table.clone());
    assert_eq!(
        by_schema,
        by_serde.is_ok(),
        "{}: schema says {by_schema}, the config says {by_serde:?}, for\n{table}",
        kind.file
    );
    by_schema
}

#[test]
fn schemas_accept_every_plugin_and_reject_unknown_names_like_the_configs() {
    for kind in config_kinds() {
        let schema = schema_of(&kind);
        let fields = plugin_fields(&schema);
        assert!(!fields.is_empty(), "{}: no plugin field found", kind.file);
        let good = known_good(&kind, &schema);
        assert!(agree(&kind, &schema, &good), "{}", kind.file);
        for field in &fields {
            let (key, list) = (field.key(), field.list);
            let names = registry::names(field.kind);
            // One branch per registered plugin, this binary's own included.
            let branches = schema["definitions"][definition_name(field.kind)]["oneOf"].clone();
            let titles: Vec<Value> = list_of(&branches).map(|b| b["title"].clone()).collect();
            assert_eq!(titles, names.iter().map(|&n| json!(n)).collect::<Vec<_>>());
            for name in names {
                let mut t = good.clone();
                set_at(&mut t, &field.path, plugin_value(name, list));
                assert!(agree(&kind, &schema, &t), "{key} = {name}");
            }
            let mut t = good.clone();
            set_at(&mut t, &field.path, plugin_value("no-such-plugin", list));
            assert!(!agree(&kind, &schema, &t), "{key} = no-such-plugin");
            let mut t = good.clone();
            set_at(&mut t, &field.path, toml::Value::Table(toml::Table::new()));
            assert!(!agree(&kind, &schema, &t), "{key} without a name");
        }
        let mut t = good.clone();
        t.insert("no_such_key".into(), 1.into());
        assert!(!agree(&kind, &schema, &t), "unknown key");
        // A file only overrides the built-in defaults: any one key alone (plus the keys that
        // have no default, e.g. train's `data`) is a valid file.
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        for (key, value) in kind.defaults.parse::<toml::Table>().unwrap() {
            let mut file = json!({ key.clone(): good[&key].clone() });
            for r in required.iter().filter_map(|r| r.as_str()) {
                file[r] = serde_json::to_value(&good[r]).unwrap();
            }
            assert!(valid(&schema, &schema, &file), "{}: {file}", kind.file);
            let missing = schema["required"].as_array().cloned().unwrap_or_default();
            assert!(!missing.contains(&json!(key)), "{key} is required");
            assert!(
                schema["properties"][&key]["default"] == serde_json::to_value(&value).unwrap(),
                "{key}: default not shown"
            );
        }
    }
}

#[test]
fn plugin_settings_are_checked_against_the_right_nested_types() {
    let kind = config_kinds()
        .into_iter()
        .find(|k| k.file == "sample.schema.json")
        .unwrap();
    let schema = schema_of(&kind);
    let good = known_good(&kind, &schema);
    let case = |name: &str, variance: &str| {
        let mut t = good.clone();
        let mut i = toml::Table::new();
        i.insert("name".into(), name.into());
        i.insert("variance".into(), variance.into());
        t.insert("integrator".into(), i.into());
        agree(&kind, &schema, &t)
    };
    // Both plugins have a nested `Source`; each table is checked against its own.
    assert!(case("schema-test", "learned"));
    assert!(!case("schema-test", "exact"));
    assert!(case("addim", "exact"));
    assert!(!case("addim", "learned"));
    // A setting the plugin does not have, and a wrongly typed one.
    assert!(!case("ddim", "exact"));
    let mut t = good.clone();
    t.insert("steps".into(), "eight".into());
    assert!(!agree(&kind, &schema, &t));
    // Definitions are namespaced by plugin, and every branch is titled with its name.
    let defs = schema["definitions"].as_object().unwrap();
    assert!(
        defs.contains_key("integrator.addim.Source"),
        "{:?}",
        defs.keys()
    );
    assert!(defs.contains_key("integrator.schema-test.Source"));
    let integrators: Vec<&str> = list_of(&defs["Integrator"]["oneOf"])
        .map(|b| b["title"].as_str().unwrap())
        .collect();
    assert!(integrators.contains(&"schema-test") && integrators.contains(&"addim"));
}

#[test]
fn unit_struct_plugins_get_a_name_only_table() {
    // No config kind holds an objective yet: check the choice on its own.
    let mut gen = schemars::gen::SchemaGenerator::default();
    let choice = serde_json::to_value(gen.subschema_for::<Box<dyn DistillObjective>>()).unwrap();
    let root = json!({ "$ref": choice["$ref"], "definitions": gen.definitions() });
    assert!(valid(&root, &root, &json!({ "name": "schema-test" })));
    assert!(!valid(
        &root,
        &root,
        &json!({ "name": "schema-test", "x": 1 })
    ));
    assert!(!valid(&root, &root, &json!({ "name": "nope" })));
}

fn list_of(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().expect("an array").iter()
}

/// Draft-7 validation of the keywords fewstep's schemas use; any other keyword fails the test
/// rather than being skipped.
fn valid(root: &Value, schema: &Value, v: &Value) -> bool {
    let m = match schema {
        Value::Bool(b) => return *b,
        Value::Object(m) => m,
        _ => panic!("not a schema: {schema}"),
    };
    let obj = v.as_object();
    let list = |s: &Value| s.as_array().unwrap().clone();
    m.iter().all(|(k, s)| match k.as_str() {
        "$schema" | "title" | "description" | "default" | "definitions" | "format" => true,
        "$ref" => {
            let name = s.as_str().unwrap().strip_prefix("#/definitions/").unwrap();
            valid(root, &root["definitions"][name], v)
        }
        "type" => {
            let types = match s {
                Value::Array(a) => a.clone(),
                t => vec![t.clone()],
            };
            types.iter().any(|t| match t.as_str().unwrap() {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "boolean" => v.is_boolean(),
                "null" => v.is_null(),
                "number" => v.is_number(),
                "integer" => v.is_i64() || v.is_u64(),
                t => panic!("unknown type {t}"),
            })
        }
        "enum" => list(s).contains(v),
        "const" => s == v,
        "minimum" => v.as_f64().is_none_or(|x| x >= s.as_f64().unwrap()),
        "maximum" => v.as_f64().is_none_or(|x| x <= s.as_f64().unwrap()),
        "minItems" => v
            .as_array()
            .is_none_or(|a| a.len() as u64 >= s.as_u64().unwrap()),
        "maxItems" => v
            .as_array()
            .is_none_or(|a| a.len() as u64 <= s.as_u64().unwrap()),
        "required" => {
            obj.is_none_or(|o| list(s).iter().all(|r| o.contains_key(r.as_str().unwrap())))
        }
        "properties" => obj.is_none_or(|o| {
            s.as_object()
                .unwrap()
                .iter()
                .all(|(p, ps)| o.get(p).is_none_or(|pv| valid(root, ps, pv)))
        }),
        "additionalProperties" => obj.is_none_or(|o| {
            o.iter()
                .filter(|(p, _)| {
                    m.get("properties")
                        .is_none_or(|ps| ps.get(p.as_str()).is_none())
                })
                .all(|(_, pv)| valid(root, s, pv))
        }),
        "items" => v
            .as_array()
            .is_none_or(|a| a.iter().all(|x| valid(root, s, x))),
        "allOf" => list(s).iter().all(|b| valid(root, b, v)),
        "anyOf" => list(s).iter().any(|b| valid(root, b, v)),
        "oneOf" => list(s).iter().filter(|b| valid(root, b, v)).count() == 1,
        "not" => !valid(root, s, v),
        other => panic!("the test validator does not know `{other}`: extend it"),
    })
}

/// `(path, command)` for the root and every subcommand below it.
fn subcommands(
    prefix: Vec<String>,
    cmd: &clap::Command,
    out: &mut Vec<(Vec<String>, clap::Command)>,
) {
    out.push((prefix.clone(), cmd.clone()));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut path = prefix.clone();
        path.push(sub.get_name().to_string());
        subcommands(path, sub, out);
    }
}

#[test]
fn help_of_every_subcommand_explains_each_flag() {
    Cli::command().debug_assert();
    let mut all = vec![];
    subcommands(vec![], &Cli::command(), &mut all);
    assert!(all.len() >= 6, "{} commands", all.len());
    for (path, cmd) in all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = fewstep(&args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "fewstep {args:?} failed");
        assert!(cmd.get_about().is_some(), "{path:?}: no about");
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = arg.get_id().as_str();
            let shown = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => id.to_uppercase(),
            };
            let explained = arg
                .get_help()
                .is_some_and(|h| !h.to_string().trim().is_empty());
            assert!(explained, "fewstep {args:?}: `{id}` has no help");
            assert!(
                help.contains(&shown),
                "fewstep {args:?} does not mention {shown}:\n{help}"
            );
        }
    }
}

#[test]
fn help_shows_the_defaults_of_the_embedded_configs() {
    let cli = Cli::command();
    for kind in config_kinds() {
        let Some(name) = kind.command else { continue };
        let cmd = cli.find_subcommand(name).unwrap();
        let mut checked = 0;
        for (key, value) in kind.defaults.parse::<toml::Table>().unwrap() {
            let Some(arg) = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
            else {
                continue;
            };
            let shown = match &value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Table(t) => t["name"].as_str().unwrap().to_string(),
                v => v.to_string(),
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            // The file's default first; a flag shared with other defaults or overridden by a
            // checkpoint may say so after it ("[default: cosine, or a student checkpoint's]",
            // "[default: 6000 for train, 2000 for distill]").
            let prefix = format!("[default: {shown}");
            let says = help.match_indices(&prefix).any(|(i, _)| {
                let next = help[i + prefix.len()..].chars().next();
                matches!(next, Some(']' | ',' | ' '))
            });
            assert!(
                says,
                "fewstep {name} --{key}: help `{help}` should say [default: {shown}] as {} does",
                kind.file
            );
            checked += 1;
        }
        assert!(checked > 0, "{name}: no flag matches a config key");
    }
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = fewstep(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in Cli::command().get_subcommands() {
            assert!(
                script.contains(sub.get_name()),
                "{shell}: {}",
                sub.get_name()
            );
        }
        assert!(script.contains("integrator"), "{shell}: sample's flags");
    }
    assert!(!fewstep(&["completions", "tcsh"]).status.success());
}
