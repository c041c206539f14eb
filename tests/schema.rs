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
use fewstep::schema::{definition_name, ConfigKind};
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
         cargo run -- schema --out schemas/\nand commit the result.\n{}",
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

/// The schema a kind's file is checked with, as the test process (with the test plugins) makes it.
fn schema_of(kind: &ConfigKind) -> Value {
    serde_json::from_str(&render(kind).unwrap()).unwrap()
}

/// Top-level keys whose schema is a plugin choice, with the plugin kind and whether it is a list.
fn plugin_fields(schema: &Value) -> Vec<(String, &'static str, bool)> {
    let mut out = vec![];
    for (key, s) in schema["properties"].as_object().unwrap() {
        let text = s.to_string();
        for k in registry::kind::ALL {
            let target = format!("\"#/definitions/{}\"", definition_name(k));
            if text.contains(&target) {
                out.push((key.clone(), k, text.contains("\"items\"")));
            }
        }
    }
    out
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
    for (key, k, list) in plugin_fields(schema) {
        let registered = registry::names(k);
        let named = t
            .get(&key)
            .and_then(|v| v.get("name"))
            .and_then(|n| n.as_str());
        if !named.is_some_and(|n| registered.contains(&n)) {
            t.insert(key, plugin_value(registered[0], list));
        }
    }
    // Keys a file must give itself (no built-in default), e.g. train's `data`: a path.
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    for key in required.iter().filter_map(|k| k.as_str()) {
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
        for (key, k, list) in &fields {
            let names = registry::names(k);
            // One branch per registered plugin, this binary's own included.
            let branches = schema["definitions"][definition_name(k)]["oneOf"].clone();
            let titles: Vec<Value> = list_of(&branches).map(|b| b["title"].clone()).collect();
            assert_eq!(titles, names.iter().map(|&n| json!(n)).collect::<Vec<_>>());
            for name in names {
                let mut t = good.clone();
                t.insert(key.clone(), plugin_value(name, *list));
                assert!(agree(&kind, &schema, &t), "{key} = {name}");
            }
            let mut t = good.clone();
            t.insert(key.clone(), plugin_value("no-such-plugin", *list));
            assert!(!agree(&kind, &schema, &t), "{key} = no-such-plugin");
            let mut t = good.clone();
            t.insert(key.clone(), toml::Value::Table(toml::Table::new()));
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
            assert!(
                help.contains(&format!("[default: {shown}]")),
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
