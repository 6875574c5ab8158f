//! `metalcu eval` as a user runs it: the output reproduces a goldens file byte for byte, and bad
//! input gives an error naming the file, line and field.

mod common;

use std::process::Command;

fn metalcu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_metalcu"))
}

#[test]
fn eval_reproduces_a_goldens_file_byte_for_byte() {
    let Some(shared) = common::shared_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let golden = shared.join("goldens/out/aos2-basics.jsonl");
    let status = metalcu()
        .args(["eval", "--format", "wasm32-unknown-emscripten4", "--memory-limit", "1073741824"])
        .arg("--module")
        .arg(shared.join("fixtures/modules/aos2-emscripten4.wasm"))
        .arg("--messages")
        .arg(&golden)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let (got, want) = (std::fs::read(&out).unwrap(), std::fs::read(&golden).unwrap());
    assert!(got == want, "eval output differs from {}", golden.display());
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn echo_module(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("echo.wasm");
    std::fs::write(&p, wat::parse_str(common::echo_wat("", "", "")).unwrap()).unwrap();
    p
}

fn run_eval(module: &std::path::Path, format: &str, messages: &std::path::Path) -> (bool, String, String) {
    let o = metalcu()
        .args(["eval", "--format", format])
        .arg("--module")
        .arg(module)
        .arg("--messages")
        .arg(messages)
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn eval_runs_a_project_module_and_writes_the_goldens_schema() {
    let dir = tempfile::tempdir().unwrap();
    let module = echo_module(dir.path());
    let msgs = write(
        dir.path(),
        "in.jsonl",
        "{\"msg\":{\"Id\":\"a\",\"n\":1.0},\"env\":{}}\n{\"msg\":{\"Id\":\"b\"},\"env\":{},\"extra\":1}\n",
    );
    let (ok, stdout, stderr) = run_eval(&module, "wasm32-unknown-emscripten4", &msgs);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(r#"{"step":0,"msg":{"Id":"a","n":1},"env":{},"result":{"Output":{"Id":"a","n":1},"Patches":[],"GasUsed":0},"memory_len":131072,"memory_sha256":""#), "{}", lines[0]);
}

#[test]
fn bad_input_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let module = echo_module(dir.path());
    let msgs = write(dir.path(), "in.jsonl", "{\"msg\":{},\"env\":{}}\n{\"msg\":{}}\n");
    let (ok, _, stderr) = run_eval(&module, "wasm32-unknown-emscripten4", &msgs);
    assert!(!ok);
    assert!(stderr.contains("in.jsonl:2") && stderr.contains("`env`"), "{stderr}");

    let msgs = write(dir.path(), "bad.jsonl", "{\"msg\":{},\"env\":{}}\nnot json\n");
    let (ok, _, stderr) = run_eval(&module, "wasm32-unknown-emscripten4", &msgs);
    assert!(!ok);
    assert!(stderr.contains("bad.jsonl:2") && stderr.contains("invalid JSON"), "{stderr}");

    let (ok, _, stderr) = run_eval(&module, "wasm32-unknown-foo", &msgs);
    assert!(!ok);
    assert!(stderr.contains("--format") && stderr.contains("wasm32-unknown-emscripten4"), "{stderr}");

    let (ok, _, stderr) = run_eval(&dir.path().join("missing.wasm"), "wasm32-unknown-emscripten4", &msgs);
    assert!(!ok);
    assert!(stderr.contains("missing.wasm"), "{stderr}");
}

#[test]
fn eval_starts_from_a_memory_image_and_refuses_a_truncated_one() {
    use metalcu::engine::{Engine, EngineConfig, ModuleFormat, ProcessOptions};
    let dir = tempfile::tempdir().unwrap();
    let module = echo_module(dir.path());
    // An image of the echo process after one message, made with the library.
    let engine = Engine::new(EngineConfig { pool_slots: 2, ..EngineConfig::default() }).unwrap();
    let m = engine.load(&std::fs::read(&module).unwrap(), ModuleFormat::Emscripten4).unwrap();
    let mut p = engine.instantiate(&m, ProcessOptions::default()).unwrap();
    p.handle(&serde_json::json!({"Id": "first"}), &serde_json::json!({}));
    let image = p.memory_image();
    let img = dir.path().join("img.bin");
    std::fs::write(&img, &image).unwrap();
    let msgs = write(dir.path(), "in.jsonl", "{\"msg\":{\"Id\":\"second\"},\"env\":{}}\n");
    let run = |img: &std::path::Path| {
        metalcu()
            .args(["eval", "--format", "wasm32-unknown-emscripten4", "--memory"])
            .arg(img)
            .arg("--module")
            .arg(&module)
            .arg("--messages")
            .arg(&msgs)
            .output()
            .unwrap()
    };
    let o = run(&img);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    p.handle(&serde_json::json!({"Id": "second"}), &serde_json::json!({}));
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(p.memory()));
    assert_eq!(line["memory_sha256"], serde_json::json!(want), "same memory as the uninterrupted process");

    std::fs::write(&img, &image[..1000]).unwrap();
    let o = run(&img);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("img.bin") && err.contains("64 KiB"), "{err}");
}
