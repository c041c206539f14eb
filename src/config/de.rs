//! Deserialising a config table with the path of every error: `integrator.variance: unknown
//! variant "x"; valid: analytic, exact, table`, one line, outside-in.
//!
//! toml's own deserialiser writes a nested error inside-out over blank lines, and loses the key
//! altogether for a plugin field sorted before `name` (typetag buffers those and deserialises
//! them without key context). This one walks a `toml::Value` itself, hands plugin tables their
//! `name` first (so typetag reads every field through [`Map`]), and prefixes each error with the
//! keys it passed through.

use serde::de::{self, DeserializeSeed, Visitor};
use std::fmt;
use toml::{Table, Value};

/// A config error: where (the keys from the top, `[i]` for array items) and what.
#[derive(Debug)]
pub struct PathError {
    path: Vec<String>,
    message: String,
    /// The key being read when the key itself was refused (`unknown field`), which the path
    /// (that of the table holding it) does not include.
    refused_key: Option<String>,
}

impl PathError {
    /// The dotted path of the offending key (`integrator.variance`), empty at the top.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }

    /// The top-level key that holds the error, if any: where to look for it.
    pub fn top_key(&self) -> Option<&str> {
        self.path
            .first()
            .or(self.refused_key.as_ref())
            .map(String::as_str)
    }

    /// What went wrong, in words a user reads (see [`readable`]).
    pub fn message(&self) -> String {
        readable(&self.message)
    }

    fn under(mut self, key: String) -> Self {
        self.path.insert(0, key);
        self
    }
}

/// Marks the path in [`PathError`]'s text form: typetag hands a plugin's error on as text (through
/// `erased_serde` and `Error::custom`), and [`de::Error::custom`] reads the path back from it, so
/// `integrator` + `variance` join to `integrator.variance` instead of nesting two messages.
const PATH_MARK: char = '\u{1}';

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            p if p.is_empty() => write!(f, "{}", self.message),
            p => write!(f, "{PATH_MARK}{p}{PATH_MARK}{}", self.message),
        }
    }
}

impl PathError {
    /// The error as a user reads it: `integrator.variance: unknown variant "x"; valid: ...`.
    pub fn render(&self) -> String {
        match self.path() {
            p if p.is_empty() => self.message(),
            p => format!("{p}: {}", self.message()),
        }
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let text = msg.to_string();
        let (path, message) = match text
            .strip_prefix(PATH_MARK)
            .and_then(|rest| rest.split_once(PATH_MARK))
        {
            // A dotted path is split back into keys (`[i]` stays attached, path() rejoins it).
            Some((p, m)) => (p.split('.').map(str::to_string).collect(), m.to_string()),
            None => (Vec::new(), text),
        };
        PathError {
            path,
            message,
            refused_key: None,
        }
    }
}

/// Deserialises `T` from a TOML value, errors carrying their key path.
pub fn from_value<T: de::DeserializeOwned>(value: Value) -> Result<T, PathError> {
    T::deserialize(ValueDe(value))
}

/// serde's messages in a user's words, on one line: backquoted lists become `valid: a, b`, an
/// unsigned integer type becomes the range it accepts.
pub fn readable(message: &str) -> String {
    let one_line = message
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    for what in ["variant", "field"] {
        let head = format!("unknown {what} `");
        if let Some(rest) = one_line.strip_prefix(&head) {
            if let Some((name, choices)) = rest.split_once('`') {
                let valid = choices
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .collect::<Vec<_>>()
                    .join(", ");
                return if valid.is_empty() {
                    format!("unknown {what} \"{name}\"; this table takes no {what}s")
                } else {
                    format!("unknown {what} \"{name}\"; valid: {valid}")
                };
            }
        }
    }
    if let Some(rest) = one_line.strip_prefix("invalid value: integer `") {
        if let Some((n, ty)) = rest.split_once("`, expected ") {
            if matches!(ty, "usize" | "u64" | "u32" | "u16" | "u8") {
                return format!("expected a whole number >= 0, got {n}");
            }
        }
    }
    if let Some(rest) = one_line.strip_prefix("invalid type: ") {
        // "string \"addim\", expected dyn Integrator" is answered by ValueDe::deserialize_map;
        // the rest only need `u64`-like type names said in words.
        if let Some((got, ty)) = rest.split_once(", expected ") {
            let want = match ty {
                "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number >= 0",
                "i64" | "i32" => "a whole number",
                "f64" | "f32" => "a number",
                "a boolean" | "bool" => "true or false",
                other => other,
            };
            return format!("expected {want}, got {got}");
        }
    }
    one_line
}

struct ValueDe(Value);

impl ValueDe {
    fn kind(&self) -> de::Unexpected<'_> {
        match &self.0 {
            Value::String(s) => de::Unexpected::Str(s),
            Value::Integer(i) => de::Unexpected::Signed(*i),
            Value::Float(f) => de::Unexpected::Float(*f),
            Value::Boolean(b) => de::Unexpected::Bool(*b),
            Value::Datetime(_) => de::Unexpected::Other("a date"),
            Value::Array(_) => de::Unexpected::Seq,
            Value::Table(_) => de::Unexpected::Map,
        }
    }
}

impl<'de> de::Deserializer<'de> for ValueDe {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            Value::Integer(i) => visitor.visit_i64(i),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Boolean(b) => visitor.visit_bool(b),
            Value::Datetime(d) => visitor.visit_string(d.to_string()),
            Value::Array(a) => visitor.visit_seq(Seq {
                items: a.into_iter().enumerate(),
            }),
            Value::Table(t) => visitor.visit_map(Map::new(t)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        visitor.visit_newtype_struct(self)
    }

    /// A plugin (`dyn Trait`, read by typetag through a map) given as a bare string, e.g.
    /// `integrator = "addim"`: the error shows the table it takes and the registered names,
    /// which typetag lists when asked for a name that cannot exist.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let Value::String(given) = self.0 else {
            return self.deserialize_any(visitor);
        };
        let expecting = format!("{}", Expecting(&visitor));
        if !expecting.starts_with("dyn ") {
            return Err(de::Error::invalid_type(
                de::Unexpected::Str(&given),
                &"a table",
            ));
        }
        let mut probe = Table::new();
        probe.insert("name".into(), Value::String("\u{1}".into()));
        let names = match visitor.visit_map(Map::new(probe)) {
            Err(e) => e
                .message
                .split_once("expected one of ")
                .map(|(_, list)| format!("; valid names: {}", list.replace('`', "")))
                .unwrap_or_default(),
            Ok(_) => String::new(),
        };
        Err(de::Error::custom(format!(
            "expected a table like {{ name = \"{given}\", ... }}, not a string{names}"
        )))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        match self.0 {
            Value::String(s) => {
                visitor.visit_enum(de::value::StringDeserializer::<PathError>::new(s))
            }
            Value::Table(t) if t.len() == 1 => {
                let (variant, value) = t.into_iter().next().expect("one entry");
                visitor.visit_enum(Enum { variant, value })
            }
            other => Err(de::Error::invalid_type(
                ValueDe(other).kind(),
                &"a variant name",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct struct identifier ignored_any
    }
}

/// A visitor's `expecting` text (typetag's is `dyn Trait`).
struct Expecting<'a, V>(&'a V);

impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
}

/// A table's entries, `name` first: typetag then reads every other field through this map.
struct Map {
    entries: std::vec::IntoIter<(String, Value)>,
    pending: Option<(String, Value)>,
}

impl Map {
    fn new(table: Table) -> Self {
        let (mut entries, rest): (Vec<_>, Vec<_>) =
            table.into_iter().partition(|(k, _)| k == "name");
        entries.extend(rest);
        Map {
            entries: entries.into_iter(),
            pending: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for Map {
    type Error = PathError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PathError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let k = seed
            .deserialize(de::value::StringDeserializer::<PathError>::new(key.clone()))
            .map_err(|mut e| {
                e.refused_key = Some(key.clone());
                e
            })?;
        self.pending = Some((key, value));
        Ok(Some(k))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, PathError> {
        let (key, value) = self
            .pending
            .take()
            .expect("next_key_seed before next_value_seed");
        seed.deserialize(ValueDe(value)).map_err(|e| e.under(key))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Seq {
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
}

impl<'de> de::SeqAccess<'de> for Seq {
    type Error = PathError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, PathError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, v)) => seed
                .deserialize(ValueDe(v))
                .map(Some)
                .map_err(|e| e.under(format!("[{i}]"))),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An externally tagged enum variant with data: `{ variant = value }`.
struct Enum {
    variant: String,
    value: Value,
}

impl<'de> de::EnumAccess<'de> for Enum {
    type Error = PathError;
    type Variant = ValueDe;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, ValueDe), PathError> {
        let v = seed.deserialize(de::value::StringDeserializer::<PathError>::new(
            self.variant,
        ))?;
        Ok((v, ValueDe(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for ValueDe {
    type Error = PathError;

    fn unit_variant(self) -> Result<(), PathError> {
        Err(de::Error::invalid_type(
            self.kind(),
            &"a variant name alone",
        ))
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, PathError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn lists_become_valid_choices() {
        assert_eq!(
            readable("unknown variant `x`, expected one of `a`, `b`, `c`"),
            "unknown variant \"x\"; valid: a, b, c"
        );
        assert_eq!(
            readable("unknown field `etaa`, expected `eta` or `name`"),
            "unknown field \"etaa\"; valid: eta, name"
        );
        assert_eq!(
            readable("invalid value: integer `-4`, expected usize"),
            "expected a whole number >= 0, got -4"
        );
        assert_eq!(readable("a\n\n\nb\n"), "a; b");
    }
}
