//! The configuration reference (`docs/config-reference.md`), generated from the config files'
//! JSON Schemas: for every config kind each key with its type, default and description, the
//! nested tables it refers to, then every plugin of every kind with its settings. Links are
//! relative to `docs/`.

use super::{definition_name, ConfigKind};
use crate::registry::kind;
use serde_json::Value;
use std::collections::BTreeSet;

/// Defaults longer than this are cut in the table (the defaults file has them whole).
const MAX_DEFAULT: usize = 60;

/// The reference for `kinds`, each with its rendered schema (what `fewstep schema` writes).
pub fn markdown(kinds: &[(&ConfigKind, Value)]) -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from the schemas by `fewstep schema --out schemas/ --markdown \
         docs/config-reference.md`; do not edit by hand (tests/schema.rs checks it). -->\n\n\
         Every config file kind with every key, then every plugin with its settings, as \
         `fewstep schema` generates them from the registered plugins. A file holds only the keys \
         it changes ([configuration.md](configuration.md)): *default* is the built-in value it \
         overrides; keys marked **required** have none. Long defaults are cut here; the defaults \
         file holds them whole.\n\n## Config files\n\n\
         | kind | read by | schema | defaults |\n| --- | --- | --- | --- |\n",
    );
    for (k, _) in kinds {
        out += &format!(
            "| [`{name}`](#config-{name}) | `fewstep {words} --config FILE` | \
             [{file}](../schemas/{file}) | [{defaults}](../{defaults}) |\n",
            name = k.name(),
            words = k.name().replace('-', " "),
            file = k.file,
            defaults = k.defaults_file,
        );
    }
    for (k, schema) in kinds {
        out += &kind_section(k, schema);
    }
    out += "\n## Plugins\n\nA plugin table picks one plugin by `name` and sets its settings \
            beside it; `fewstep list KIND` prints the same.\n";
    for k in kind::ALL {
        // Every schema that has a field of this kind lists all its plugins: take the first.
        let def = definition_name(k);
        if let Some((_, schema)) = kinds
            .iter()
            .find(|(_, s)| s["definitions"].get(&def).is_some())
        {
            out += &plugins_section(k, schema);
        }
    }
    out
}

/// A config kind: its keys, then the tables they refer to.
fn kind_section(k: &ConfigKind, schema: &Value) -> String {
    let name = k.name();
    let mut doc = Doc::new(schema, name);
    let mut out = format!("\n<a id=\"config-{name}\"></a>\n\n### `{name}`\n\n");
    out += &paragraph(schema);
    out += &doc.table(schema);
    out += &doc.nested_tables();
    out
}

/// Every plugin of kind `k`, from the `oneOf` branches of its definition in `schema`.
fn plugins_section(k: &str, schema: &Value) -> String {
    let mut out = format!(
        "\n<a id=\"plugins-{k}\"></a>\n\n### {}s\n\nPicked by `name` in a `[{k}]` table.\n",
        definition_name(k)
    );
    let branches = schema["definitions"][definition_name(k)]["oneOf"].as_array();
    for branch in branches.into_iter().flatten() {
        let name = branch["title"].as_str().unwrap_or_default();
        let mut doc = Doc::new(schema, &format!("{k}-{name}"));
        out += &format!("\n<a id=\"plugin-{k}-{name}\"></a>\n\n#### `{name}`\n\n");
        out += &paragraph(branch);
        if doc.properties(branch).is_empty() {
            out += &format!("No settings: `{{ name = \"{name}\" }}`.\n");
        } else {
            out += &doc.table(branch);
        }
        out += &doc.nested_tables();
    }
    out
}

/// A schema's description as a paragraph (empty without one).
fn paragraph(schema: &Value) -> String {
    match schema["description"].as_str() {
        Some(d) => format!("{}\n\n", one_line(d)),
        None => String::new(),
    }
}

/// One section's renderer: the schema its references resolve in, and the nested tables met
/// so far (rendered after the section's main table).
struct Doc<'a> {
    root: &'a Value,
    section: String,
    nested: Vec<String>,
}

impl<'a> Doc<'a> {
    fn new(root: &'a Value, section: &str) -> Self {
        Doc {
            root,
            section: section.to_string(),
            nested: vec![],
        }
    }

    /// `(key, schema, required)` of an object schema, through `$ref` and `allOf`; `name` (the
    /// plugin tag) left out.
    fn properties(&self, schema: &'a Value) -> Vec<(&'a String, &'a Value, bool)> {
        let schema = self.resolve(schema);
        let mut out = vec![];
        if let Some(props) = schema["properties"].as_object() {
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            for (key, s) in props.iter().filter(|(key, _)| *key != "name") {
                out.push((key, s, required.contains(&Value::from(key.as_str()))));
            }
        }
        for inner in schema["allOf"].as_array().into_iter().flatten() {
            out.extend(self.properties(inner));
        }
        out
    }

    /// The definition a bare `$ref` points to (any other schema as it is).
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => &self.root["definitions"][definition_of(r)],
            None => schema,
        }
    }

    /// The key table of an object schema.
    fn table(&mut self, schema: &'a Value) -> String {
        let mut out =
            String::from("| key | type | default | description |\n| --- | --- | --- | --- |\n");
        for (key, s, required) in self.properties(schema) {
            let default = match (s.get("default"), required) {
                (Some(d), _) => format!("`{}`", cell(&cut(&inline_toml(d)))),
                (None, true) => "**required**".into(),
                (None, false) => "unset".into(),
            };
            let description = s["description"].as_str().map(one_line).unwrap_or_default();
            out += &format!(
                "| `{key}` | {} | {default} | {} |\n",
                self.type_of(s),
                cell(&description)
            );
        }
        out
    }

    /// The tables of the struct types the section's keys refer to, each once.
    fn nested_tables(&mut self) -> String {
        let mut out = String::new();
        let mut done = BTreeSet::new();
        while let Some(name) = self.nested.iter().find(|n| !done.contains(*n)).cloned() {
            done.insert(name.clone());
            let def = &self.root["definitions"][&name];
            out += &format!(
                "\n<a id=\"{}\"></a>\n\n**`{}`** (a table)\n\n",
                self.anchor(&name),
                short(&name)
            );
            out += &paragraph(def);
            out += &self.table(def);
        }
        out
    }

    /// `<section>-<type>`: a nested type's name is unique within its section.
    fn anchor(&self, definition: &str) -> String {
        let clean: String = short(definition)
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => c.to_ascii_lowercase(),
                _ => '-',
            })
            .collect();
        format!("{}-{clean}", self.section)
    }

    /// The type of a field, in words, with links to plugin kinds and nested tables.
    fn type_of(&mut self, s: &Value) -> String {
        if let Some(r) = single_ref(s) {
            return self.named(r);
        }
        if let Some(choices) = s["anyOf"].as_array() {
            // Option<T>: T, or left out.
            let types: Vec<String> = choices
                .iter()
                .filter(|c| c["type"] != "null")
                .map(|c| self.type_of(c))
                .collect();
            return types.join(" or ");
        }
        if let Some(values) = s["enum"].as_array() {
            return one_of(values);
        }
        if let Some(c) = s.get("const") {
            return format!("`{}`", inline_toml(c));
        }
        let types: Vec<&str> = match &s["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => vec![],
        };
        let words: Vec<String> = types
            .iter()
            .map(|t| match *t {
                "array" => match s.get("items") {
                    Some(items) => format!("list of {}", self.type_of(items)),
                    None => "list".into(),
                },
                "object" => "table".into(),
                "integer" if s["minimum"].as_f64() == Some(0.0) => "integer >= 0".into(),
                t => t.into(),
            })
            .collect();
        match words.is_empty() {
            true => "any".into(),
            false => words.join(" or "),
        }
    }

    /// The type a `$ref` names: a plugin kind, an enum's values, or a nested table.
    fn named(&mut self, reference: &str) -> String {
        let name = definition_of(reference);
        let def = &self.root["definitions"][name];
        // A plugin choice: `Integrator` in a config, `objective.progressive.Integrator` when a
        // plugin nests one.
        let choice = kind::ALL
            .iter()
            .find(|k| definition_name(k) == short(name) && def.get("oneOf").is_some());
        if let Some(k) = choice {
            return format!("[{k}](#plugins-{k}) plugin table");
        }
        if let Some(values) = def["enum"].as_array() {
            return one_of(values);
        }
        if def.get("properties").is_some() {
            if !self.nested.iter().any(|n| n == name) {
                self.nested.push(name.to_string());
            }
            return format!("[`{}`](#{}) table", short(name), self.anchor(name));
        }
        self.type_of(def)
    }
}

/// The target of `{ "$ref": r }` or `{ "allOf": [{ "$ref": r }] }` (how a described field refers).
fn single_ref(s: &Value) -> Option<&str> {
    if let Some(r) = s["$ref"].as_str() {
        return Some(r);
    }
    match s["allOf"].as_array().map(Vec::as_slice) {
        Some([only]) => only["$ref"].as_str(),
        _ => None,
    }
}

fn definition_of(reference: &str) -> &str {
    reference.trim_start_matches("#/definitions/")
}

/// `integrator.addim.Source` -> `Source`.
fn short(definition: &str) -> &str {
    definition.rsplit('.').next().unwrap_or(definition)
}

/// `"a"` \| `"b"`: the allowed values.
fn one_of(values: &[Value]) -> String {
    let v: Vec<String> = values
        .iter()
        .map(|v| format!("`{}`", inline_toml(v)))
        .collect();
    v.join(" \\| ")
}

/// A JSON value as TOML inline syntax, `name` first in tables.
fn inline_toml(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline_toml).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| (*k != "name", *k));
            let fields: Vec<String> = keys
                .iter()
                .map(|k| format!("{} = {}", toml_key(k), inline_toml(&map[*k])))
                .collect();
            match fields.is_empty() {
                true => "{}".into(),
                false => format!("{{ {} }}", fields.join(", ")),
            }
        }
        other => other.to_string(),
    }
}

/// A bare key where TOML allows one, else quoted.
fn toml_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match bare {
        true => k.to_string(),
        false => Value::String(k.to_string()).to_string(),
    }
}

/// At most [`MAX_DEFAULT`] characters on one line, `…` where cut.
fn cut(text: &str) -> String {
    let line = one_line(text);
    match line.char_indices().nth(MAX_DEFAULT) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}
