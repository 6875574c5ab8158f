//! Where a setting's value comes from ([`Sources`]: flag > environment > file) and the parsers
//! that check it. Parsers return `Err(expected)`; [`Sources::parse`] names the setting and the
//! source around it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::file::ConfigFile;

/// The three places a setting may be given.
pub struct Sources<'a> {
    /// `(name, value)` of the flags given on the command line.
    pub flags: Vec<(&'static str, String)>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub file: &'a ConfigFile,
}

impl Sources<'_> {
    /// The raw value of `name` and where it came from, by precedence.
    pub fn get(&self, name: &str) -> Option<(String, String)> {
        if let Some((_, v)) = self.flags.iter().find(|(n, _)| *n == name) {
            return Some((v.clone(), format!("--{}", name.to_ascii_lowercase().replace('_', "-"))));
        }
        if let Some(v) = (self.env)(name) {
            return Some((v, "environment".into()));
        }
        self.file.get(name).map(|v| (v.to_string(), self.file.path_text()))
    }

    /// `name` parsed with `parse`, or `None` when it is not given anywhere.
    pub fn parse<T>(&self, name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some((v, from)) => parse(&v).map(Some).map_err(|why| err(name, &v, &from, &why)),
        }
    }
}

/// A [`ConfigError`].
pub fn err(name: &str, value: &str, from: &str, why: &str) -> ConfigError {
    ConfigError { name: name.into(), value: value.into(), origin: from.into(), why: why.into() }
}

/// An integer, `_` separators allowed (`1_000`).
pub fn int<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    let clean: String = v.trim().chars().filter(|c| *c != '_').collect();
    clean.parse::<T>().map_err(|_| format!("expected an integer, got {v:?}"))
}

/// An integer in `[min, max]`.
pub fn bounded(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n = int::<u64>(v)?;
    if n < min || n > max {
        return Err(format!("expected an integer from {min} to {max}"));
    }
    Ok(n)
}

/// An IP address to listen on.
pub fn ip(v: &str) -> Result<IpAddr, String> {
    v.trim().parse().map_err(|_| "expected an IP address such as 0.0.0.0 or 127.0.0.1".to_string())
}

/// An `http(s)` base URL, returned without a trailing `/`.
pub fn url(v: &str) -> Result<String, String> {
    crate::net::fetch::base_url(v, "").map_err(|e| e.replace("invalid  url", "invalid url"))
}

/// A comma-separated list (empty entries dropped), at most [`super::MAX_LIST_ENTRIES`].
pub fn list(v: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if items.len() > super::MAX_LIST_ENTRIES {
        return Err(format!("more than {} entries", super::MAX_LIST_ENTRIES));
    }
    Ok(items)
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, any case).
pub fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A number from 0 to 1 (`0.75`).
pub fn fraction(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a number from 0 to 1, got {v:?}")),
    }
}

/// A comma-separated list of CPU numbers (`0,1,4`; ranges `2-5`), not empty, no repeats.
pub fn cpu_list(v: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for item in list(v)? {
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (int::<usize>(a)?, int::<usize>(b)?),
            None => (int::<usize>(&item)?, int::<usize>(&item)?),
        };
        if lo > hi || hi >= crate::pool::MAX_WORKERS * 4 {
            return Err(format!("{item:?} is not a CPU or a range of CPUs"));
        }
        out.extend(lo..=hi);
    }
    let mut seen = out.clone();
    seen.sort_unstable();
    seen.dedup();
    if out.is_empty() || seen.len() != out.len() || out.len() > crate::pool::MAX_WORKERS {
        return Err("expected CPU numbers such as 0,1 or 2-5, each once".into());
    }
    Ok(out)
}

/// A comma-separated list of URLs.
pub fn url_list(v: &str) -> Result<Vec<String>, String> {
    list(v)?.iter().map(|u| url(u)).collect()
}

/// A filesystem path (not empty).
pub fn path(v: &str) -> Result<PathBuf, String> {
    if v.trim().is_empty() {
        return Err("expected a path".into());
    }
    Ok(PathBuf::from(v.trim()))
}

/// `DB_URL`: a database base name (the reference's `ao-cache` → `ao-cache.redb`) or a path; a
/// relative one lives in `data_dir`. Postgres is refused.
pub fn db_path(v: &str, data_dir: &Path) -> Result<PathBuf, String> {
    let v = v.trim();
    if v.starts_with("postgres://") || v.starts_with("postgresql://") {
        return Err("metalcu keeps results in an embedded redb file; give a file name or path".into());
    }
    let mut p = path(v)?;
    if p.extension().is_none() {
        p.set_extension("redb");
    }
    Ok(if p.is_absolute() { p } else { data_dir.join(p) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_accept_what_the_reference_accepts() {
        assert_eq!(int::<u64>("9_000_000_000_000"), Ok(9_000_000_000_000));
        assert!(int::<u16>("70000").is_err());
        assert_eq!(bounded("5", 1, 10), Ok(5));
        assert!(bounded("0", 1, 10).is_err());
        assert_eq!(list(" a, ,b "), Ok(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(url("https://arweave.net/"), Ok("https://arweave.net".to_string()));
        assert!(url("arweave.net").is_err());
        assert_eq!(db_path("ao-cache", Path::new("/d")), Ok(PathBuf::from("/d/ao-cache.redb")));
        assert_eq!(db_path("/x/y.db", Path::new("/d")), Ok(PathBuf::from("/x/y.db")));
        assert!(db_path("postgres://h/db", Path::new("/d")).is_err());
    }
}
