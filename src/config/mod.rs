//! TOML configs: a file (optional), command-line overrides on top, then one typed deserialise,
//! so flags and files share every check and error message.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

pub mod de;

/// A config being assembled: the file's table with overrides applied.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    table: Table,
    /// The config file each top-level key last came from, to name it in errors.
    origin: BTreeMap<String, String>,
}

impl ConfigBuilder {
    /// Starts from built-in defaults (a TOML string shipped with the binary).
    pub fn from_defaults(defaults: &str) -> Result<Self> {
        Ok(ConfigBuilder {
            table: parse(defaults, "built-in defaults")?,
            origin: BTreeMap::new(),
        })
    }

    /// Starts from a config stored by an earlier command (a run's own config when it resumes):
    /// every key is `origin`'s, which errors name ([`Self::check_paths`], [`Self::build`]).
    pub fn from_stored(text: &str, origin: &str) -> Result<Self> {
        let table = parse(text, origin)?;
        let origin = table
            .keys()
            .map(|k| (k.clone(), origin.to_string()))
            .collect();
        Ok(ConfigBuilder { table, origin })
    }

    /// Sets a plain key to a value taken from another config (`origin`, e.g. a teacher
    /// checkpoint's), which errors about the key name.
    pub fn set_from<V: Into<Value>>(mut self, key: &str, value: Option<V>, origin: &str) -> Self {
        if let Some(v) = value {
            self.origin.insert(key.to_string(), origin.to_string());
            self.table.insert(key.to_string(), v.into());
        }
        self
    }

    /// Refuses a path under one of `keys` that does not exist when it came from a config file
    /// or a stored config, naming that config and the key: `the config of r/ckpt-1.safetensors:
    /// data = "ring8.h5" does not exist (relative to /home/u/other, where this runs)`. A path
    /// given as a flag is left to the command, whose error names it.
    pub fn check_paths(&self, keys: &[&str]) -> Result<()> {
        for key in keys {
            let (Some(Value::String(path)), Some(origin)) =
                (self.table.get(*key), self.origin.get(*key))
            else {
                continue;
            };
            let p = Path::new(path);
            if p.exists() {
                continue;
            }
            let relative = match (p.is_relative(), std::env::current_dir()) {
                (true, Ok(cwd)) => format!(" (relative to {}, where this runs)", cwd.display()),
                _ => String::new(),
            };
            anyhow::bail!(
                "{origin}: {key} = {path:?} does not exist{relative}; give its place with --{key}"
            );
        }
        Ok(())
    }

    /// Layers a config file on top: its keys replace the defaults', plugin tables whole.
    pub fn file(mut self, path: Option<&Path>) -> Result<Self> {
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            let file = parse(&text, &path.display().to_string())?;
            for (k, v) in file {
                self.origin.insert(k.clone(), path.display().to_string());
                self.table.insert(k, v);
            }
        }
        Ok(self)
    }

    /// Sets a plain key when the flag was given.
    pub fn set<V: Into<Value>>(mut self, key: &str, value: Option<V>) -> Self {
        if let Some(v) = value {
            self.origin.remove(key);
            self.table.insert(key.to_string(), v.into());
        }
        self
    }

    /// Picks a plugin by name when the flag was given: keeps the table's other fields if it
    /// already names that plugin, else replaces the table with `{ name = ... }`.
    pub fn plugin(mut self, key: &str, name: Option<&str>) -> Self {
        if let Some(name) = name {
            let same = self
                .table
                .get(key)
                .and_then(|t| t.get("name"))
                .and_then(Value::as_str)
                == Some(name);
            if !same {
                self.origin.remove(key);
                let mut t = Table::new();
                t.insert("name".into(), Value::String(name.into()));
                self.table.insert(key.to_string(), Value::Table(t));
            }
        }
        self
    }

    /// Applies `overrides` in the order they were given.
    pub fn apply(mut self, overrides: &Overrides) -> Self {
        for (key, setting) in &overrides.0 {
            self = match setting {
                Setting::Value(v) => self.set(key, Some(v.clone())),
                Setting::Plugin(name) => self.plugin(key, Some(name)),
            };
        }
        self
    }

    /// The assembled table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// `error` with the config file in front when it is a [`FieldError`] whose key came from one
    /// (`run.toml: objective.teacher_steps: ...`), as [`Self::build`] writes its errors; any
    /// other error unchanged. For the checks that run on the built config.
    pub fn locate(&self, error: anyhow::Error) -> anyhow::Error {
        let file = error
            .downcast_ref::<FieldError>()
            .and_then(|f| self.origin.get(f.top_key()));
        match file {
            Some(file) => anyhow::anyhow!("{file}: {error}"),
            None => error,
        }
    }

    /// Deserialises into the typed config. An error is one line: the config file the key came
    /// from (if it came from one), the key's path and what is wrong with it, with the valid
    /// choices, e.g. `run.toml: integrator.variance: unknown variant "x"; valid: analytic, ...`.
    pub fn build<T: DeserializeOwned>(&self) -> Result<T> {
        de::from_value(Value::Table(self.table.clone())).map_err(|e| {
            match e.top_key().and_then(|k| self.origin.get(k)) {
                Some(file) => anyhow::anyhow!("{file}: {}", e.render()),
                None => anyhow::anyhow!("{}", e.render()),
            }
        })
    }
}

/// Settings from command-line flags or a workflow, layered over the defaults and the config file
/// in the order they were added (the last setting of a key wins).
#[derive(Clone, Debug, Default)]
pub struct Overrides(Vec<(String, Setting)>);

#[derive(Clone, Debug)]
enum Setting {
    Value(Value),
    Plugin(String),
}

impl Overrides {
    /// Sets a plain key when the value is given (see [`ConfigBuilder::set`]).
    pub fn set<V: Into<Value>>(mut self, key: &str, value: Option<V>) -> Self {
        if let Some(v) = value {
            self.0.push((key.to_string(), Setting::Value(v.into())));
        }
        self
    }

    /// Picks a plugin by name when given (see [`ConfigBuilder::plugin`]).
    pub fn plugin(mut self, key: &str, name: Option<&str>) -> Self {
        if let Some(name) = name {
            self.0
                .push((key.to_string(), Setting::Plugin(name.to_string())));
        }
        self
    }

    /// A path as a string value, when given.
    pub fn path(self, key: &str, path: Option<&Path>) -> Self {
        self.set(key, path.map(|p| p.display().to_string()))
    }
}

/// A field out of its valid range, found by a check on the built config (where the range depends
/// on another field, or for a config assembled in code): shown as `key: message`, the form of a
/// deserialisation error, with the value in the message. A plugin's `validate` returns it for
/// its own field; the config holding the plugin puts its key in front ([`FieldError::under`])
/// and [`ConfigBuilder::locate`] the config file.
#[derive(Debug)]
pub struct FieldError {
    key: String,
    message: String,
}

impl FieldError {
    /// The error of field `key` (dotted for a nested one).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error one table up: `teacher_steps` in `objective` is `objective.teacher_steps`.
    pub fn under(self, parent: &str) -> Self {
        FieldError {
            key: format!("{parent}.{}", self.key),
            message: self.message,
        }
    }

    /// The field's dotted key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn top_key(&self) -> &str {
        self.key.split('.').next().unwrap_or_default()
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Fails with a [`FieldError`]: field `key` and what is wrong with its value.
pub fn field_error<T>(key: &str, message: impl Into<String>) -> Result<T> {
    Err(FieldError::new(key, message).into())
}

/// An error of the plugin in field `key` (named `name`) as the config holding it reports it: a
/// [`FieldError`] of the plugin's own field gets `key.` in front (`objective.teacher_steps`),
/// another error the context "in `key` (name)".
pub fn in_plugin(error: anyhow::Error, key: &str, name: &str) -> anyhow::Error {
    match error.downcast::<FieldError>() {
        Ok(f) => f.under(key).into(),
        Err(e) => e.context(format!("in `{key}` ({name})")),
    }
}

/// `plugin.validate()` with its error as the config holding the plugin at `key` reports it
/// ([`in_plugin`]): `config::validate_plugin!("schedule", self.schedule)?`. A macro because the
/// plugin traits share `validate` and `typetag_name` by name, not through a common trait.
#[doc(hidden)]
#[macro_export]
macro_rules! validate_plugin {
    ($key:expr, $plugin:expr) => {{
        let plugin = &$plugin;
        plugin
            .validate()
            .map_err(|e| $crate::config::in_plugin(e, $key, plugin.typetag_name()))
    }};
}
// `#[macro_export]` puts the macro at the crate root; callers name it here, with config's helpers.
pub use super::validate_plugin;

fn parse(text: &str, origin: &str) -> Result<Table> {
    text.parse::<Table>().map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(", line {line}, column {column}")
        });
        anyhow::anyhow!(
            "malformed TOML in {origin}{at}: {}",
            de::readable(e.message())
        )
    })
}

/// Deserialises one plugin table (e.g. `name = "addim"` / `eta = 0.75`) from TOML text.
pub fn plugin_from_toml<T: DeserializeOwned>(text: &str) -> Result<T> {
    let v: Value = Value::Table(parse(text, "plugin table")?);
    de::from_value(v).map_err(|e| anyhow::anyhow!("{}", e.render()))
}

/// A copy of a plugin (plugins are not `Clone` behind `dyn`): a round trip through TOML.
pub fn clone_plugin<T: serde::Serialize + DeserializeOwned>(plugin: &T) -> Result<T> {
    let text = toml::to_string(plugin).context("cannot serialise plugin")?;
    plugin_from_toml(&text)
}

/// A resolved config as TOML text (recorded in output files and checkpoints).
pub fn to_toml<T: serde::Serialize>(config: &T) -> Result<String> {
    toml::to_string(config).context("cannot serialise config to TOML")
}

/// `path` as an absolute path — canonical (links and `..` resolved) when it exists, else its
/// canonical folder joined with its name, else joined to the current folder — so a stored config
/// reads the same from any folder.
pub fn absolute(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let in_folder = || {
        let name = path.file_name()?;
        let folder = match path.parent()? {
            p if p.as_os_str().is_empty() => Path::new("."),
            p => p,
        };
        Some(std::fs::canonicalize(folder).ok()?.join(name))
    };
    in_folder()
        .or_else(|| std::path::absolute(path).ok())
        .unwrap_or_else(|| path.to_path_buf())
}

/// `deserialize_with` for an optional path that a stored config is read back with from another
/// folder (aDDIM's `table`): made [`absolute`] as it is read.
pub fn absolute_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let p = <Option<PathBuf> as serde::Deserialize>::deserialize(d)?;
    Ok(p.map(|p| absolute(&p)))
}

/// `deserialize_with` check for a parameter that must be a finite number > 0.
pub fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = <f64 as serde::Deserialize>::deserialize(d)?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "expected a finite number > 0, got {v}"
        )))
    }
}

/// `deserialize_with` check for a parameter that must be a finite number >= 0.
pub fn non_negative<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = <f64 as serde::Deserialize>::deserialize(d)?;
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "expected a finite number >= 0, got {v}"
        )))
    }
}

/// `deserialize_with` check for a count that must be at least 1.
pub fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match <usize as serde::Deserialize>::deserialize(d)? {
        0 => Err(serde::de::Error::custom("expected an integer >= 1, got 0")),
        n => Ok(n),
    }
}

/// `deserialize_with` check for a solver order, which must be 1, 2 or 3.
pub fn one_to_three<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match <usize as serde::Deserialize>::deserialize(d)? {
        n @ 1..=3 => Ok(n),
        n => Err(serde::de::Error::custom(format!(
            "expected an order of 1, 2 or 3, got {n}"
        ))),
    }
}
