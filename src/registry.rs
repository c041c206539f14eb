//! The plugin registry. Every plugin submits a [`PluginInfo`] through `inventory` (the
//! [`register_plugin!`](crate::register_plugin) macro) next to its `typetag` impl, so the core
//! can list, describe and schema-check plugins without naming any of them.

use schemars::schema::{RootSchema, SchemaObject};

/// The kinds of plugin, as they appear as config table names.
pub mod kind {
    pub const SCHEDULE: &str = "schedule";
    pub const INTEGRATOR: &str = "integrator";
    pub const DENOISER: &str = "denoiser";
    pub const OBJECTIVE: &str = "objective";
    pub const ALL: [&str; 4] = [SCHEDULE, INTEGRATOR, DENOISER, OBJECTIVE];
}

/// A registered plugin: its kind, config name, one-line description and config schema.
pub struct PluginInfo {
    pub kind: &'static str,
    pub name: &'static str,
    pub summary: &'static str,
    pub schema: fn() -> RootSchema,
}

inventory::collect!(PluginInfo);

/// Every registered plugin of `kind` (all kinds with `None`), sorted by kind then name.
pub fn plugins(kind: Option<&str>) -> Vec<&'static PluginInfo> {
    let mut v: Vec<_> = inventory::iter::<PluginInfo>
        .into_iter()
        .filter(|p| kind.is_none_or(|k| p.kind == k))
        .collect();
    v.sort_by_key(|p| (p.kind, p.name));
    v
}

/// Names of the registered plugins of `kind`.
pub fn names(kind: &str) -> Vec<&'static str> {
    plugins(Some(kind)).into_iter().map(|p| p.name).collect()
}

/// One registered plugin.
pub fn find(kind: &str, name: &str) -> Option<&'static PluginInfo> {
    plugins(Some(kind)).into_iter().find(|p| p.name == name)
}

/// `(field, type, description)` for each config field of a plugin, from its schema.
pub fn fields(info: &PluginInfo) -> Vec<(String, String, String)> {
    let root = (info.schema)();
    let Some(obj) = root.schema.object.as_ref() else {
        return vec![];
    };
    obj.properties
        .iter()
        .map(|(name, s)| {
            let s = s.clone().into_object();
            let ty = type_name(&resolve(&root, &s));
            let desc = s
                .metadata
                .as_ref()
                .and_then(|m| m.description.clone())
                .unwrap_or_default();
            let default = s
                .metadata
                .as_ref()
                .and_then(|m| m.default.as_ref())
                .map(|d| format!(" (default {d})"))
                .unwrap_or_default();
            (
                name.clone(),
                ty,
                format!("{}{}", desc.replace('\n', " "), default),
            )
        })
        .collect()
}

/// The schema a field refers to (a field of enum or struct type is `allOf: [{$ref}]`).
fn resolve(root: &RootSchema, s: &SchemaObject) -> SchemaObject {
    let target = s
        .subschemas
        .as_ref()
        .and_then(|sub| sub.all_of.as_ref())
        .and_then(|all| all.first())
        .map(|r| r.clone().into_object())
        .and_then(|r| r.reference)
        .and_then(|r| {
            root.definitions
                .get(r.trim_start_matches("#/definitions/"))
                .cloned()
        });
    target.map_or_else(|| s.clone(), |t| t.into_object())
}

/// A field's type in words: "number", "whole number", "true or false", "text, optional", or an
/// enum's choices "analytic | exact | table".
fn type_name(s: &SchemaObject) -> String {
    if let Some(values) = &s.enum_values {
        return values
            .iter()
            .map(|v| v.to_string().replace('"', ""))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let word = |t: &str| {
        match t {
            "integer" => "whole number",
            "boolean" => "true or false",
            "string" => "text",
            "array" => "list",
            "object" => "table",
            other => other,
        }
        .to_string()
    };
    let types: Vec<String> = match s.instance_type.as_ref().map(serde_json::to_value) {
        Some(Ok(serde_json::Value::String(t))) => vec![t],
        Some(Ok(serde_json::Value::Array(ts))) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ => return "table".into(),
    };
    let optional = types.iter().any(|t| t == "null");
    let named: Vec<String> = types
        .iter()
        .filter(|t| *t != "null")
        .map(|t| word(t))
        .collect();
    match optional {
        true => format!("{}, optional", named.join(" or ")),
        false => named.join(" or "),
    }
}

/// Registers a plugin for `fewstep list` and the schemas. Use beside the plugin's
/// `#[typetag::serde(name = "...")]` impl, with the same name:
/// `register_plugin!(INTEGRATOR, "ddim", Ddim, "DDIM (eq. 4), deterministic first order");`
#[macro_export]
macro_rules! register_plugin {
    ($kind:ident, $name:expr, $ty:ty, $summary:expr) => {
        $crate::inventory::submit! {
            $crate::registry::PluginInfo {
                kind: $crate::registry::kind::$kind,
                name: $name,
                summary: $summary,
                schema: || $crate::schemars::schema_for!($ty),
            }
        }
    };
}
