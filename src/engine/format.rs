//! The `Module-Format` tag: which host glue a module expects.
//!
//! Every format the reference host (`@permaweb/ao-loader` 0.0.49) accepts is listed here. Unlike the
//! reference, which silently falls back to format 1 for an unknown string, metalcu refuses it with an
//! error that lists the supported formats.

use std::fmt;
use std::str::FromStr;

/// A supported `Module-Format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleFormat {
    /// `wasm32-unknown-emscripten`: minified imports (`a.*`), stub file system, gas baked in.
    Emscripten1,
    /// `wasm32-unknown-emscripten2`: full emscripten FS, gas baked in when the module imports it.
    Emscripten2,
    /// `wasm32-unknown-emscripten3`: like format 2 without metering.
    Emscripten3,
    /// `wasm32-unknown-emscripten4`: asyncify + WeaveDrive, no metering.
    Emscripten4,
    /// `wasm32-unknown-emscripten-metering`: format 4, instrumented at load time.
    Emscripten4Metering,
    /// `wasm64-unknown-emscripten-draft_2024_02_15`: memory64, asyncify + WeaveDrive.
    Wasm64,
    /// `wasm64-unknown-emscripten-draft_2024_10_16-metering`: wasm64, instrumented at load time.
    Wasm64Metering,
}

/// How the host glue of a format behaves; several formats share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `emscripten.cjs`: stubbed syscalls, `main(0, 0)`, no stack cookie.
    E1,
    /// `emscripten2.cjs`: MEMFS, stack cookie, `main(1, ["thisProgram"])`, `date_now` = 0.
    E2,
    /// `emscripten3.cjs`: MEMFS, stack cookie, `main(0, 0)`, counter clock, newer emscripten ABI.
    E3,
    /// `emscripten4.cjs`: MEMFS, stack cookie, no `main`, asyncify, counter clock.
    E4,
    /// `wasm64-emscripten.cjs`: as E4 with 64-bit pointers.
    W64,
}

/// Error for a `Module-Format` value metalcu does not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported Module-Format {given:?}; supported: {}", ModuleFormat::ALL_NAMES.join(", "))]
pub struct UnknownFormat {
    /// The value that was given.
    pub given: String,
}

impl ModuleFormat {
    /// Every supported format, in the order the reference documents them.
    pub const ALL: [ModuleFormat; 7] = [
        ModuleFormat::Emscripten1,
        ModuleFormat::Emscripten2,
        ModuleFormat::Emscripten3,
        ModuleFormat::Emscripten4,
        ModuleFormat::Emscripten4Metering,
        ModuleFormat::Wasm64,
        ModuleFormat::Wasm64Metering,
    ];
    /// The tag value of every supported format.
    pub const ALL_NAMES: [&'static str; 7] = [
        "wasm32-unknown-emscripten",
        "wasm32-unknown-emscripten2",
        "wasm32-unknown-emscripten3",
        "wasm32-unknown-emscripten4",
        "wasm32-unknown-emscripten-metering",
        "wasm64-unknown-emscripten-draft_2024_02_15",
        "wasm64-unknown-emscripten-draft_2024_10_16-metering",
    ];

    /// The `Module-Format` tag value.
    pub fn name(self) -> &'static str {
        let idx = Self::ALL.iter().position(|f| *f == self).expect("listed");
        Self::ALL_NAMES[idx]
    }

    /// The host glue this format runs under.
    pub fn dialect(self) -> Dialect {
        match self {
            ModuleFormat::Emscripten1 => Dialect::E1,
            ModuleFormat::Emscripten2 => Dialect::E2,
            ModuleFormat::Emscripten3 => Dialect::E3,
            ModuleFormat::Emscripten4 | ModuleFormat::Emscripten4Metering => Dialect::E4,
            ModuleFormat::Wasm64 | ModuleFormat::Wasm64Metering => Dialect::W64,
        }
    }

    /// True when the module is rewritten with `usegas` calls before compiling.
    pub fn instrumented(self) -> bool {
        matches!(self, ModuleFormat::Emscripten4Metering | ModuleFormat::Wasm64Metering)
    }

    /// True for memory64 modules (pointers are `i64`).
    pub fn is_wasm64(self) -> bool {
        self.dialect() == Dialect::W64
    }

    /// True when results carry `GasUsed` (the reference creates a gas counter for every format but
    /// the asyncify ones without metering; those report `GasUsed: 0` as the counter never moves).
    pub fn has_gas_counter(self) -> bool {
        true
    }
}

impl FromStr for ModuleFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL_NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| UnknownFormat { given: s.to_string() })
    }
}

impl fmt::Display for ModuleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for f in ModuleFormat::ALL {
            assert_eq!(f.name().parse::<ModuleFormat>().unwrap(), f);
        }
    }

    #[test]
    fn unknown_format_lists_supported_ones() {
        let err = "wasm32-unknown-foo".parse::<ModuleFormat>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("wasm32-unknown-foo"));
        for n in ModuleFormat::ALL_NAMES {
            assert!(text.contains(n), "{text} lacks {n}");
        }
    }
}
