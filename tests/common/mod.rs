//! Helpers shared by the integration tests: where `../shared` is, and small WAT modules.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared test data (fixtures, goldens): `$METALCU_SHARED`, else `../shared` beside the repo.
/// Returns `None` (after saying so on stderr) when it is missing locally; panics under CI, where
/// a missing `../shared` must fail the run rather than skip it.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("METALCU_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if dir.join("goldens/out").is_dir() && dir.join("fixtures/modules").is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("shared test data not found at {} (set METALCU_SHARED); CI requires it", dir.display());
    }
    eprintln!("NOTE: shared test data not found at {}; this test did not run", dir.display());
    None
}

/// A tiny module with the format-4 calling convention: `handle(msg, env)` answers
/// `{"ok":true,"response":{"Output":<msg>}}`, then runs `extra` (WAT instructions) first.
/// `imports` and `items` are spliced into the module as given.
pub fn echo_wat(imports: &str, items: &str, extra: &str) -> String {
    let prefix = r#"{"ok":true,"response":{"Output":"#;
    let escaped = prefix.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 2 16384)
  (global $sp (mut i32) (i32.const 65536))
  (func (export "emscripten_stack_get_current") (result i32) global.get $sp)
  (func (export "_emscripten_stack_restore") (param i32) local.get 0 global.set $sp)
  (func (export "_emscripten_stack_alloc") (param i32) (result i32)
    global.get $sp local.get 0 i32.sub i32.const -16 i32.and global.set $sp global.get $sp)
  (data (i32.const 70000) "{escaped}")
  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done (loop $l
      (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $l)))
    local.get $n)
  (func $copy (param $dst i32) (param $src i32) (param $n i32) (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i)) (i32.load8_u (i32.add (local.get $src) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))
  {items}
  (func (export "handle") (param $msg i32) (param $env i32) (result i32) (local $len i32)
    {extra}
    (call $copy (i32.const 80000) (i32.const 70000) (i32.const {plen}))
    (local.set $len (call $strlen (local.get $msg)))
    (call $copy (i32.const {body}) (local.get $msg) (local.get $len))
    (i32.store8 (i32.add (i32.const {body}) (local.get $len)) (i32.const 125))
    (i32.store8 (i32.add (i32.const {body1}) (local.get $len)) (i32.const 125))
    (i32.store8 (i32.add (i32.const {body2}) (local.get $len)) (i32.const 0))
    i32.const 80000))
"#,
        plen = prefix.len(),
        body = 80000 + prefix.len(),
        body1 = 80000 + prefix.len() + 1,
        body2 = 80000 + prefix.len() + 2,
    )
}
