//! The browser entry point, and nothing else: the app's own modules never import from here (the
//! page helpers they share are in `page.rs`). web/index.html holds one canvas; the address
//! chooses what happens at load (`?run=quick|full|custom` starts a scenario at once, `?check`
//! checks this device (the quick scenario against the built-in reference), `?save` downloads
//! the results when it ends, `?bench` runs the benchmark, `?transformer` fetches the released
//! MiniLM classifier and runs the transformer demo's attack, `?engine=cpu` computes on the CPU
//! engine). For scripts (the headless browser test) the app writes `PASS ...` or `FAIL ...` into
//! the page title when a scenario, check or benchmark ends (a check that finds runs differing
//! from the reference is a FAIL) and leaves the results, as JSON lines, in
//! `window.specdefResults` and `window.specdefBench`, a check's report in
//! `window.specdefDeviceCheck`, and the transformer demo's outcome (JSON) in
//! `window.specdefTransformer`.

use super::page::{self, js_error, window};
use super::{SpecdefApp, engine_for};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_time::Duration;

/// How often the page redraws while computing. A software renderer (SwiftShader) draws on the
/// same cores that compute, and a frame of the app costs it about as much as seconds of work
/// (measured: the quick scenario took 175 s redrawing every 0.5 s, 131 s every 2 s), so there it
/// redraws every 2 s; on a hardware adapter 4 times a second.
fn redraw_interval(render_state: Option<&eframe::egui_wgpu::RenderState>) -> Duration {
    let software = render_state
        .is_some_and(|state| state.adapter.get_info().device_type == wgpu::DeviceType::Cpu);
    Duration::from_millis(if software { 2000 } else { 250 })
}

async fn run() -> Result<(), String> {
    let options = page::page_options()?;
    let labels = page::adapter_labels().await;
    let document = window()?.document().ok_or("no document")?;
    let canvas: web_sys::HtmlCanvasElement = document
        .get_element_by_id("specdef_canvas")
        .ok_or("the page has no <canvas id=\"specdef_canvas\">")?
        .dyn_into()
        .map_err(|_| "#specdef_canvas is not a canvas")?;
    eframe::WebRunner::new()
        .start(
            canvas,
            eframe::WebOptions::default(),
            Box::new(move |cc| {
                let (engine, note) =
                    engine_for(cc.wgpu_render_state.as_ref(), options.force_cpu, labels);
                // When the app could first draw, and on what it computes: for load-time checks.
                page::set_global("specdefEngine", &JsValue::from_str(&note));
                page::set_global("specdefReadyMs", &JsValue::from_f64(page::now_ms()));
                let mut app = SpecdefApp::new(engine, note);
                app.redraw_while_running = redraw_interval(cc.wgpu_render_state.as_ref());
                if options.save {
                    app.save_when_finished();
                }
                if options.check {
                    app.check_device();
                } else if let Some(choice) = options.run {
                    app.custom_run().baselines = options.baselines;
                    app.start(choice);
                } else if options.bench {
                    app.start_bench();
                } else if options.transformer {
                    app.load_transformer_demo(true);
                }
                Ok(Box::new(app))
            }),
        )
        .await
        .map_err(js_error)
}

#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        if let Err(e) = run().await {
            page::show_start_failure(&e);
        }
    });
}
