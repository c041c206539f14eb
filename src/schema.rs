//! JSON Schemas of config files, generated from the registry.
//!
//! schemars cannot derive a schema for `Box<dyn Trait>`, so the core implements `JsonSchema` for
//! each plugin trait object by reading the registry: a plugin field's schema is a `oneOf` with
//! one branch per registered plugin of that kind, the plugin's own schema plus a required
//! `name = "<plugin>"`. Config structs then simply `#[derive(JsonSchema)]`, and plugins from
//! other crates appear in the schemas as soon as they are linked in.

pub mod reference;

use crate::denoiser::DenoiserSpec;
use crate::integrator::Integrator;
use crate::objective::DistillObjective;
use crate::registry::{self, kind, PluginInfo};
use crate::schedule::Schedule;
use anyhow::{anyhow, bail, Result};
use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, RootSchema, Schema, SchemaObject};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::borrow::Cow;

macro_rules! plugin_trait_schema {
    ($($trait:ident => $kind:ident),* $(,)?) => {$(
        impl JsonSchema for dyn $trait {
            fn schema_name() -> String {
                definition_name(kind::$kind)
            }

            fn schema_id() -> Cow<'static, str> {
                Cow::Borrowed(concat!("fewstep::plugin::", stringify!($kind)))
            }

            fn json_schema(gen: &mut SchemaGenerator) -> Schema {
                plugin_choice(gen, kind::$kind)
            }
        }
    )*};
}

plugin_trait_schema!(
    Schedule => SCHEDULE,
    Integrator => INTEGRATOR,
    DenoiserSpec => DENOISER,
    DistillObjective => OBJECTIVE,
);

/// The definition a plugin field of `kind` refers to: `schedule` -> `Schedule`.
pub fn definition_name(kind: &str) -> String {
    let mut c = kind.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// One of the registered plugins of `kind`, picked by `name`.
pub fn plugin_choice(gen: &mut SchemaGenerator, kind: &str) -> Schema {
    let plugins = registry::plugins(Some(kind));
    let names: Vec<Value> = plugins.iter().map(|p| p.name.into()).collect();
    let mut choice = SchemaObject {
        instance_type: Some(InstanceType::Object.into()),
        ..Default::default()
    };
    choice.metadata().description = Some(format!(
        "The {kind}: a plugin picked by `name` (`fewstep list {kind}` describes them)."
    ));
    // `name` on the choice itself too: editors complete it, and a wrong name gets one error
    // listing the valid names instead of one per branch.
    let mut name = SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        enum_values: (!names.is_empty()).then_some(names),
        ..Default::default()
    };
    name.metadata().description = Some(format!("Which {kind} plugin."));
    let object = choice.object();
    object.properties.insert("name".into(), name.into());
    object.required.insert("name".into());
    if plugins.is_empty() {
        // No plugin of this kind is linked in: no table deserialises, so none is valid.
        choice.subschemas().not = Some(Box::new(true.into()));
    } else {
        choice.subschemas().one_of = Some(plugins.iter().map(|p| plugin_branch(gen, p)).collect());
    }
    choice.into()
}

/// The plugin's own schema with `name = "<plugin>"` added; its definitions move into `gen`'s
/// under `<kind>.<plugin>.` so that two plugins' (or the config's) types never clash.
fn plugin_branch(gen: &mut SchemaGenerator, p: &PluginInfo) -> Schema {
    let root = (p.schema)();
    let to = gen.settings().definitions_path.clone();
    let prefix: String = format!("{}.{}.", p.kind, p.name)
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    let rename = |s: Schema| -> Schema {
        let mut v = serde_json::to_value(s).expect("a schema serialises");
        rewrite_refs(&mut v, &format!("{to}{prefix}"));
        serde_json::from_value(v).expect("a rewritten schema deserialises")
    };
    let mut defs: Vec<(String, Schema)> = root
        .definitions
        .into_iter()
        .map(|(k, d)| (format!("{prefix}{k}"), rename(d)))
        .collect();
    let mut branch = rename(root.schema.into()).into_object();
    // A `#[serde(transparent)]` plugin's schema is a bare $ref: inline it to add `name`.
    while let Some(r) = branch.reference.clone() {
        let Some((_, target)) = defs.iter().find(|(k, _)| r == format!("{to}{k}")) else {
            break;
        };
        let mut target = target.clone().into_object();
        if target.metadata.is_none() {
            target.metadata = branch.metadata.take();
        }
        branch = target;
    }
    branch = with_name(branch, p.name);
    let meta = branch.metadata();
    meta.title = Some(p.name.into());
    meta.description = Some(p.summary.into());
    // Keep the definitions still referred to (an inlined one may not be).
    let text = serde_json::to_string(&branch).expect("a schema serialises")
        + &serde_json::to_string(&defs).expect("schemas serialise");
    defs.retain(|(k, _)| text.contains(&format!("\"{to}{k}\"")));
    gen.definitions_mut().extend(defs);
    branch.into()
}

/// `schema` (an object, or a unit struct's null) with a required `name` fixed to `plugin`.
fn with_name(mut schema: SchemaObject, plugin: &str) -> SchemaObject {
    let is = |s: &SchemaObject, t: InstanceType| s.instance_type == Some(t.into());
    if is(&schema, InstanceType::Null) {
        // A unit struct: its table holds `name` alone.
        schema.instance_type = Some(InstanceType::Object.into());
        schema.object().additional_properties = Some(Box::new(false.into()));
    } else if !is(&schema, InstanceType::Object) {
        let inner = std::mem::take(&mut schema);
        schema.metadata = inner.metadata.clone();
        schema.subschemas().all_of = Some(vec![inner.into()]);
    }
    let name = SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        const_value: Some(plugin.into()),
        ..Default::default()
    };
    let object = schema.object();
    object.properties.insert("name".into(), name.into());
    object.required.insert("name".into());
    schema
}

/// Points every `#/definitions/X` reference at `{to}X`.
fn rewrite_refs(v: &mut Value, to: &str) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(r) if k == "$ref" => {
                        if let Some(name) = r.strip_prefix("#/definitions/") {
                            *r = format!("{to}{name}");
                        }
                    }
                    _ => rewrite_refs(v, to),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, to)),
        _ => {}
    }
}

/// A kind of config file: the schema file it gets, the built-in TOML a file is layered on (its
/// keys are optional in the file), the subcommand whose flags set the same keys, and the typed
/// config it deserialises into.
pub struct ConfigKind {
    pub file: &'static str,
    pub defaults: &'static str,
    /// Where `defaults` comes from, relative to the repository root (`configs/train.toml`).
    pub defaults_file: &'static str,
    pub command: Option<&'static str>,
    /// Keys without a default that the command fills in itself when a file leaves them out,
    /// and from where (`distill` takes `denoiser` and `data` from the teacher checkpoint).
    pub filled_in: &'static [&'static str],
    pub filled_from: &'static str,
    pub schema: fn() -> RootSchema,
    /// Deserialises a complete table into the typed config (what a resolved file must pass).
    pub parse: fn(toml::Table) -> Result<()>,
}

impl ConfigKind {
    /// The config type `T`, written to `file`, layered on the defaults file `(path, text)`
    /// (the path relative to the repository root, for the docs).
    pub fn of<T: JsonSchema + DeserializeOwned>(
        file: &'static str,
        (defaults_file, defaults): (&'static str, &'static str),
    ) -> Self {
        ConfigKind {
            file,
            defaults,
            defaults_file,
            command: None,
            filled_in: &[],
            filled_from: "",
            schema: || schemars::schema_for!(T),
            parse: |t| {
                T::deserialize(toml::Value::Table(t))
                    .map(drop)
                    .map_err(|e| anyhow!("invalid config: {e}"))
            },
        }
    }

    /// Names the subcommand whose flags override this config's keys.
    pub fn command(self, command: &'static str) -> Self {
        ConfigKind {
            command: Some(command),
            ..self
        }
    }

    /// Marks `keys` as optional in a file although they have no default: the command fills them
    /// in `from` somewhere (said in their description).
    pub fn filled_in(self, keys: &'static [&'static str], from: &'static str) -> Self {
        ConfigKind {
            filled_in: keys,
            filled_from: from,
            ..self
        }
    }

    /// The config kind's name, the schema file's stem: `reproduce-table3`.
    pub fn name(&self) -> &'static str {
        self.file.trim_end_matches(".schema.json")
    }

    /// The schema of a file of this kind: the config's schema, where each key of the built-in
    /// defaults is optional and shows its default, and each key the command fills in is
    /// optional and says from where.
    pub fn file_schema(&self) -> Result<RootSchema> {
        let mut root = (self.schema)();
        let defaults: toml::Table = self
            .defaults
            .parse()
            .map_err(|e| anyhow!("malformed built-in defaults for {}: {e}", self.file))?;
        let object = root.schema.object();
        for (key, value) in defaults {
            let Some(property) = object.properties.get_mut(&key) else {
                bail!(
                    "built-in defaults for {} set `{key}`, which the config does not have",
                    self.file
                );
            };
            metadata(property).default = Some(serde_json::to_value(value)?);
            object.required.remove(&key);
        }
        for &key in self.filled_in {
            let Some(property) = object.properties.get_mut(key) else {
                bail!("{}: `{key}` is filled in but not a config key", self.file);
            };
            let meta = metadata(property);
            let said = meta.description.take().unwrap_or_default();
            meta.description = Some(format!("{said} Left out: {}.", self.filled_from));
            object.required.remove(key);
        }
        Ok(root)
    }
}

/// The metadata of a property, wrapping a bare $ref in `allOf` first (draft 7 ignores the
/// siblings of a $ref, and so do editors).
pub fn metadata(property: &mut Schema) -> &mut Metadata {
    let mut object = std::mem::replace(property, true.into()).into_object();
    if object.reference.is_some() {
        object = SchemaObject {
            metadata: object.metadata.take(),
            subschemas: Some(Box::new(schemars::schema::SubschemaValidation {
                all_of: Some(vec![object.into()]),
                ..Default::default()
            })),
            ..Default::default()
        };
    }
    *property = object.into();
    match property {
        Schema::Object(o) => o.metadata(),
        Schema::Bool(_) => unreachable!("just made an object"),
    }
}
