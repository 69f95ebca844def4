//! The merged sources of configuration, and how a section is deserialised from them.
//!
//! Every setting is one flat key (`database_url`), read from `AUTHD_<KEY>` in the environment,
//! from `<key>` in the TOML file, or from the file named by `AUTHD_<KEY>_FILE` / `<key>_file`;
//! the environment wins. Each section of [`super::Settings`] is a serde struct whose field names
//! (after `rename`) are those keys: serde itself lists the keys a section reads, so no list is
//! kept by hand, and a key no section reads is an error in the file.

use super::ConfigError;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::path::Path;

/// The environment name of `key`.
pub(super) fn env_name(key: &str) -> String {
    format!("AUTHD_{}", key.to_ascii_uppercase())
}

impl de::Error for ConfigError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        Self {
            name: String::new(),
            message: message.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(field, "is required but not set")
    }
}

/// The keys a section reads, as serde names them (its `FIELDS`).
pub(super) fn keys_of<'de, T: de::Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields(&'static [&'static str]);
    impl de::Error for Fields {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Self(&[])
        }
    }
    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fields")
        }
    }
    impl std::fmt::Debug for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fields")
        }
    }
    impl std::error::Error for Fields {}
    struct Probe;
    impl<'de> Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Fields(fields)) => fields,
        Ok(_) => &[],
    }
}

/// The raw string values gathered from the sources, before parsing; empty values are unset.
pub(super) struct Sources(BTreeMap<String, String>);

impl Sources {
    /// Reads `keys` from the environment `env` and, when given, the TOML text (`origin` names it
    /// in errors). A key in the file that is not one of `keys` is an error.
    pub(super) fn gather(
        keys: &[&str],
        env: &dyn Fn(&str) -> Option<String>,
        toml: Option<(&str, &str)>,
    ) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        if let Some((text, origin)) = toml {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
                name: "--config".into(),
                message: format!("{origin}: {}", e.message()),
            })?;
            for (key, value) in table {
                if key == "oidc" {
                    values.extend(provider_tables(value, origin)?);
                    continue;
                }
                let (base, from_file) = match key.strip_suffix("_file") {
                    Some(base) => (base.to_string(), true),
                    None => (key.clone(), false),
                };
                if !keys.contains(&base.as_str()) {
                    return Err(ConfigError {
                        name: "--config".into(),
                        message: format!("unknown key `{key}` in {origin}"),
                    });
                }
                let text = toml_text(value);
                let text = if from_file {
                    read_secret_file(&base, &text)?
                } else {
                    text
                };
                values.insert(base, text);
            }
        }
        let read_env = |values: &mut BTreeMap<String, String>, key: &str| -> Result<(), ConfigError> {
            let name = env_name(key);
            if let Some(value) = env(&name) {
                values.insert(key.to_string(), value);
            } else if let Some(path) = env(&format!("{name}_FILE")) {
                values.insert(key.to_string(), read_secret_file(key, &path)?);
            }
            Ok(())
        };
        for key in keys {
            read_env(&mut values, key)?;
        }
        // Each listed provider reads its own keys.
        let names = super::providers::provider_names(values.get(super::providers::PROVIDERS_KEY).map(String::as_str));
        for name in &names {
            for field in super::providers::PROVIDER_FIELDS {
                read_env(&mut values, &super::providers::provider_key(name, field))?;
            }
        }
        if let Some(stray) = values.keys().find_map(|key| {
            let rest = key.strip_prefix("oidc_")?;
            (key != super::providers::PROVIDERS_KEY
                && !names.iter().any(|name| {
                    rest.strip_prefix(name.as_str())
                        .and_then(|r| r.strip_prefix('_'))
                        .is_some_and(|field| super::providers::PROVIDER_FIELDS.contains(&field))
                }))
            .then(|| key.clone())
        }) {
            return Err(ConfigError {
                name: "--config".into(),
                message: format!("`{stray}` is for a provider that AUTHD_OIDC_PROVIDERS does not list"),
            });
        }
        values.retain(|_, v| !v.trim().is_empty());
        Ok(Self(values))
    }

    /// The raw value of one key, if set.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The file at `path`, read as TOML text.
    pub(super) fn read_file(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| ConfigError {
            name: "--config".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })
    }

    /// One section, from the values of its keys.
    pub(super) fn section<T: de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(SectionDeserializer(self))
    }
}

/// A TOML value as the text of a setting: a string as is, an array joined with commas.
fn toml_text(value: toml::Value) -> String {
    match value {
        toml::Value::String(s) => s,
        toml::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// The `[oidc.NAME]` tables of the TOML file, as the flat keys `oidc_<name>_<field>`.
fn provider_tables(value: toml::Value, origin: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let error = |message: String| ConfigError {
        name: "--config".into(),
        message: format!("{origin}: {message}"),
    };
    let toml::Value::Table(providers) = value else {
        return Err(error("`oidc` must be a table of providers ([oidc.NAME])".into()));
    };
    let mut out = Vec::new();
    for (name, table) in providers {
        let toml::Value::Table(table) = table else {
            return Err(error(format!("`oidc.{name}` must be a table")));
        };
        for (field, value) in table {
            if !super::providers::PROVIDER_FIELDS.contains(&field.as_str()) {
                return Err(error(format!("unknown key `oidc.{name}.{field}`")));
            }
            let text = toml_text(value);
            out.push((super::providers::provider_key(&name.to_ascii_lowercase(), &field), text));
        }
    }
    Ok(out)
}

/// The most a secret file may hold: a key, a password or a URL is far smaller, and a path that
/// names something endless (`/dev/zero`) must not exhaust memory.
const MAX_SECRET_FILE: u64 = 64 * 1024;

fn read_secret_file(key: &str, path: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    let error = |message: String| ConfigError {
        name: format!("{}_FILE", env_name(key)),
        message,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_FILE + 1).read_to_string(&mut text))
        .map_err(|e| error(format!("cannot read {path}: {e}")))?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(error(format!("{path} is larger than {MAX_SECRET_FILE} bytes")));
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

struct SectionDeserializer<'a>(&'a Sources);

impl<'de> Deserializer<'de> for SectionDeserializer<'_> {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ConfigError> {
        Err(de::Error::custom("a section is a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        let present = fields.iter().filter(|key| self.0.0.contains_key(**key)).copied();
        visitor.visit_map(Entries {
            sources: self.0,
            keys: present.collect::<Vec<_>>().into_iter(),
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct Entries<'a> {
    sources: &'a Sources,
    keys: std::vec::IntoIter<&'static str>,
    current: Option<&'static str>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ConfigError> {
        let Some(key) = self.keys.next() else {
            return Ok(None);
        };
        self.current = Some(key);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ConfigError> {
        let key = self.current.take().expect("a value follows its key");
        let text = self.sources.0[key].as_str();
        // A failure without a name is this key's.
        seed.deserialize(Value(text)).map_err(|mut error| {
            if error.name.is_empty() {
                error.name = env_name(key);
            }
            error
        })
    }
}

/// One value as text: parsed into what the field asks for (numbers, booleans, lists separated
/// by commas, strings as given); fields of other types parse the text themselves
/// (`deserialize_with`).
struct Value<'a>(&'a str);

impl Value<'_> {
    fn unparsable(&self) -> ConfigError {
        de::Error::custom(format!("cannot parse `{}`", self.0.trim()))
    }
}

macro_rules! parsed {
    ($($method:ident => $visit:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
            visitor.$visit(self.0.trim().parse().map_err(|_| self.unparsable())?)
        })*
    };
}

impl<'de> Deserializer<'de> for Value<'_> {
    type Error = ConfigError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => visitor.visit_bool(true),
            "false" | "0" => visitor.visit_bool(false),
            other => Err(de::Error::custom(format!("`{other}` is not true or false"))),
        }
    }

    parsed! {
        deserialize_u8 => visit_u8,
        deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64,
        deserialize_i64 => visit_i64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let items = self.0.split(',').map(str::trim).filter(|item| !item.is_empty());
        visitor.visit_seq(de::value::SeqDeserializer::new(items.map(Value)))
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u128 f32 f64 char str string bytes byte_buf unit unit_struct tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, 'a> IntoDeserializer<'de, ConfigError> for Value<'a> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}
