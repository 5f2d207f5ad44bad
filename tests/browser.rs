//! The web app end to end in real headless Chromium: web/build.sh builds it, web/e2e.mjs serves
//! it on 127.0.0.1 and runs the quick scenario on WebGPU (SwiftShader) as the app's "Check this
//! device" (`?check`, which must find it reproduces the built-in reference) and in a page without
//! WebGPU (the CPU fallback), exports the results as the app's download, runs the hand-set run
//! with the baseline defences on WebGPU, and the benchmark harness; this test then checks what
//! computed each and compares the quick scenario's results with the native CPU-f64 run of it.
//!
//! It needs Chromium (/usr/bin/chromium, or $CHROMIUM), Node.js with web/node_modules (`npm ci`
//! in web/), wasm-bindgen-cli of Cargo.lock's wasm-bindgen version and the wasm32 target. Where
//! one is missing it prints why and skips; under SPECDEF_REQUIRE_BROWSER=1 (CI) it fails instead.
//! Where the transformer files are fetched, the page also runs the transformer demo (`?transformer`)
//! on the tiny scenario's released classifier, compared with the same demo natively in f64.
//! Pictures, results and summaries land in target/tmp/web-e2e/.

mod common;

use common::run_quietly;
use specdef::benchmark::{BENCH_SCHEMA, BenchRecord};
use specdef::engine::cpu::CpuEngine64;
use specdef::report::{self, CompareSettings, compare};
use specdef::scenario::{RunRecord, Scenario};
use specdef::transformer_files::{model_dir, wordnet_dir};
use specdef::transformer_scenario::{AttackDemo, DemoInputs, DemoOutcome, DemoSettings};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or(PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// wasm-bindgen's version in Cargo.lock, which the CLI must equal.
fn locked_wasm_bindgen() -> String {
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).expect("Cargo.lock");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines.next().unwrap_or_default();
            return version
                .trim_start_matches("version = ")
                .trim_matches('"')
                .to_string();
        }
    }
    panic!("no wasm-bindgen in Cargo.lock")
}

/// What this machine lacks for the test, each with how to get it.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!(
            "no Chromium at {} (apt-get install chromium, or set CHROMIUM)",
            chromium().display()
        ));
    }
    if output_of("node", &["--version"]).is_none() {
        missing.push("no Node.js (node) on PATH".to_string());
    }
    if !repo().join("web/node_modules/playwright-core").exists() {
        missing.push("no web/node_modules/playwright-core (run `npm ci` in web/)".to_string());
    }
    let want = locked_wasm_bindgen();
    let have = output_of("wasm-bindgen", &["--version"]);
    if have.as_deref() != Some(&format!("wasm-bindgen {want}")) {
        missing.push(format!(
            "wasm-bindgen-cli {want} is not installed (found {}; cargo install wasm-bindgen-cli --version {want})",
            have.as_deref().unwrap_or("none")
        ));
    }
    let installed = output_of("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed.lines().any(|t| t == "wasm32-unknown-unknown") {
        missing.push(
            "the wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown)"
                .to_string(),
        );
    }
    missing
}

fn run(what: &str, command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

fn read_runs(path: &Path) -> Vec<RunRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    report::from_json_lines(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `specdef report`'s page for the shipped reference records, for Chromium to open.
fn write_report(out: &Path) -> PathBuf {
    let records = read_runs(&repo().join("reference/quick-cpu64/runs.jsonl"));
    let figures = report::plots::render_all(&records).all_drawn().unwrap();
    let page = out.join("report.html");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(&page, report::document::html(&records, &figures)).unwrap();
    page
}

#[test]
fn the_web_app_runs_the_quick_scenario_in_headless_chromium_like_the_native_reference() {
    let missing = missing_tools();
    if !missing.is_empty() {
        let reason = missing.join("; ");
        if std::env::var("SPECDEF_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("SPECDEF_REQUIRE_BROWSER=1 but {reason}");
        }
        eprintln!("skipped: the browser test needs {reason}");
        return;
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-e2e");
    let dist = out.join("dist");
    // The transformer demo's released classifier: the tiny scenario's (where the transformer
    // files are fetched; under SPECDEF_REQUIRE_TRANSFORMER=1 they must be).
    let released = common::tiny_released();
    // Its own target folder: this test runs inside `cargo test`, which holds the main one.
    let mut build = Command::new(repo().join("web/build.sh"));
    build
        .env("CARGO_TARGET_DIR", repo().join("target/web-build"))
        .env("SPECDEF_WEB_OUT", &dist);
    if let Some(released) = released {
        build.env("SPECDEF_RELEASED", released);
    }
    run("web/build.sh", &mut build);
    let wasm_bytes = std::fs::metadata(dist.join("specdef_bg.wasm"))
        .unwrap()
        .len();
    println!("wasm module: {:.2} MB", wasm_bytes as f64 / 1e6);
    let report_page = write_report(&out);
    run(
        "web/e2e.mjs",
        Command::new("node")
            .arg(repo().join("web/e2e.mjs"))
            .arg(&dist)
            .arg(&out)
            .arg(&report_page)
            .current_dir(repo()),
    );
    let summary = std::fs::read_to_string(out.join("report.summary.json")).unwrap();
    assert!(
        summary.contains("\"problems\": []"),
        "the report page: {summary}"
    );
    if let Some(released) = released {
        check_transformer_demo(&out, released);
    }

    let webgpu = read_runs(&out.join("browser-webgpu.download.jsonl"));
    let fallback = read_runs(&out.join("browser-fallback.download.jsonl"));
    assert!(
        webgpu
            .iter()
            .all(|r| r.engine == "gpu" && r.backend == "webgpu"),
        "the WebGPU page computed on {} ({})",
        webgpu[0].engine,
        webgpu[0].backend
    );
    assert!(
        fallback.iter().all(|r| r.engine == "cpu-f32"),
        "the page without WebGPU computed on {}",
        fallback[0].engine
    );

    // The same scenario natively in f64. Judged on what each attack achieved and when, within
    // one evaluation interval (10 steps): f32 and f64 differ in the losses of the defended model
    // by nature (see `CompareSettings::outcomes_only`), which the report still lists.
    let scenario = Scenario::builtin(Some("quick")).unwrap();
    let reference = run_quietly(&mut CpuEngine64::new(), &scenario, Some("quick")).records;
    let jsonl = report::to_json_lines(&reference).unwrap();
    std::fs::write(out.join("native-cpu-f64.jsonl"), jsonl).unwrap();
    let settings = CompareSettings {
        steps_band: 10,
        outcomes_only: true,
        ..CompareSettings::default()
    };
    for (name, records) in [("WebGPU", &webgpu), ("CPU fallback", &fallback)] {
        let comparison = compare(records, &reference, &settings);
        println!(
            "{name} page against native CPU-f64:\n{}",
            comparison.report()
        );
        assert!(comparison.all_agree(), "{name}: {}", comparison.report());
        assert_eq!(comparison.matched, reference.len());
    }

    // The hand-set run with the baselines: each trained on WebGPU and attacked, keeping utility.
    let baselines = read_runs(&out.join("browser-baselines.download.jsonl"));
    let defences: Vec<String> = baselines.iter().map(|r| r.defense_label()).collect();
    let expected: Vec<String> = (specdef::app::CustomRun {
        baselines: true,
        ..Default::default()
    })
    .scenario()
    .unwrap()
    .defense
    .defenses()
    .iter()
    .map(|d| d.label())
    .collect();
    assert_eq!(defences, expected);
    for r in &baselines {
        assert_eq!((r.engine.as_str(), r.backend.as_str()), ("gpu", "webgpu"));
        let utility = r.utility_after_defense;
        assert!(utility > 0.5, "{}: utility {utility}", r.defense_label());
    }

    let bench_text = std::fs::read_to_string(out.join("browser-bench.jsonl")).unwrap();
    let bench: Vec<BenchRecord> = bench_text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a benchmark record"))
        .collect();
    assert_eq!(bench.len(), 5, "{bench_text}");
    for r in &bench {
        assert_eq!(r.schema, BENCH_SCHEMA);
        assert_eq!((r.platform.as_str(), r.engine.as_str()), ("browser", "gpu"));
        assert!(r.median.is_finite() && r.median > 0.0, "{}", r.summary());
        assert!(r.min <= r.median && r.median <= r.max, "{}", r.summary());
        println!("browser {}", r.summary());
    }
}

/// The transformer demo's page (`?transformer`, the default attack on WebGPU) against the same
/// demo natively on the f64 CPU engine.
fn check_transformer_demo(out: &Path, released: &Path) {
    let text = std::fs::read_to_string(out.join("browser-transformer.jsonl")).unwrap();
    let page: DemoOutcome = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("window.specdefTransformer: {e}: {text}"));
    let summary = std::fs::read_to_string(out.join("browser-transformer.json")).unwrap();
    assert!(summary.contains("WebGPU"), "the demo's page: {summary}");
    let tokenizer = std::fs::read_to_string(model_dir().join("tokenizer.json")).unwrap();
    let data_noun = std::fs::read_to_string(wordnet_dir().join("data.noun")).unwrap();
    let inputs =
        DemoInputs::from_bytes(&std::fs::read(released).unwrap(), &tokenizer, &data_noun).unwrap();
    let mut demo = AttackDemo::start(&inputs, DemoSettings::default()).unwrap();
    let mut engine = CpuEngine64::new();
    while !demo.is_done() {
        demo.advance(&mut engine, &inputs).unwrap();
    }
    let native = demo.outcome(&inputs);
    assert_eq!(page.settings, native.settings);
    assert_eq!(page.tokens, native.tokens);
    assert_eq!(
        page.models.len(),
        2,
        "the undefended and the defended model"
    );
    let largest = |a: &[f64], b: &[f64]| {
        (a.iter().zip(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    for (index, (p, n)) in page.models.iter().zip(&native.models).enumerate() {
        assert_eq!(p.model, n.model);
        let before = largest(&p.probabilities_before, &n.probabilities_before);
        let after = largest(&p.probabilities_after, &n.probabilities_after);
        println!(
            "browser transformer demo, {}: harmful accuracy {:.3} -> {:.3} (native f64 {:.3} -> \
             {:.3}); sentence probabilities against f64: before {before:.1e}, after {after:.1e}",
            p.model,
            p.harmful_accuracy_before,
            p.harmful_accuracy_after,
            n.harmful_accuracy_before,
            n.harmful_accuracy_after
        );
        let (before_within, after_within) = common::demo_tolerance(index == 1);
        assert!(
            before < before_within,
            "{}: before the attack {before:e}",
            p.model
        );
        assert!(
            after < after_within,
            "{}: after the attack {after:e}",
            p.model
        );
    }
}
