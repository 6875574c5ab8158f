//! The optional TOML configuration file (`--config`, or `METALCU_CONFIG`): a flat table whose
//! keys are the settings' environment names, in any case (`PORT = 6363`, `gateway_url = "…"`).
//! Values may be strings, integers, booleans or arrays (joined with commas, as a list setting
//! is written in the environment). An unknown key is refused, so a typo never passes unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::args::NAMES;

/// Largest configuration file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// A loaded file: upper-cased setting name → value as text.
#[derive(Debug, Default)]
pub struct ConfigFile {
    path: Option<PathBuf>,
    values: BTreeMap<String, String>,
}

fn file_err(path: &Path, name: &str, why: String) -> ConfigError {
    ConfigError { name: name.into(), value: String::new(), origin: path.display().to_string(), why }
}

fn text(path: &Path, key: &str, v: &toml::Value) -> Result<String, ConfigError> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items.iter().map(|i| text(path, key, i)).collect::<Result<Vec<_>, _>>()?.join(","),
        other => return Err(file_err(path, key, format!("a {} is not a setting value", other.type_str()))),
    })
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|e| file_err(path, "--config", e.to_string()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(file_err(path, "--config", format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let raw = std::fs::read_to_string(path).map_err(|e| file_err(path, "--config", e.to_string()))?;
        Self::parse(path, &raw)
    }

    /// Parses `raw` as the file at `path`.
    pub fn parse(path: &Path, raw: &str) -> Result<ConfigFile, ConfigError> {
        let table: toml::Table =
            toml::from_str(raw).map_err(|e| file_err(path, "--config", format!("not valid TOML: {e}")))?;
        let mut values = BTreeMap::new();
        for (key, v) in &table {
            let name = key.to_ascii_uppercase().replace('-', "_");
            if !NAMES.contains(&name.as_str()) && !super::INERT.iter().any(|(n, _)| *n == name) {
                return Err(file_err(path, key, "unknown setting (see `metalcu serve --help`)".into()));
            }
            values.insert(name, text(path, key, v)?);
        }
        Ok(ConfigFile { path: Some(path.to_path_buf()), values })
    }

    /// The value of setting `name` (upper-case), if the file gives it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The file's path, for messages.
    pub fn path_text(&self) -> String {
        self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "config file".into())
    }
}
