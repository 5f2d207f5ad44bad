//! The web page around the app (wasm32 only): the address's options, the adapter as the page sees
//! it, the title and globals scripts read, file downloads, and the task that computes between
//! frames. The entry point (`web.rs`) and the rest of the app use these; nothing here uses them.

use super::{AdapterLabels, ScenarioChoice};
use std::cell::Cell;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_time::{Duration, Instant};

thread_local! {
    static DRIVING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `slice` (one slice of work; returns whether there is more) in a task of its own until it
/// is done, yielding to the page between slices so GPU readbacks complete and frames are drawn;
/// then gives `log` a line saying where the time went. One such task at a time.
pub fn drive(mut slice: impl FnMut() -> bool + 'static, log: impl FnOnce(String) + 'static) {
    if DRIVING.with(|driving| driving.replace(true)) {
        return;
    }
    wasm_bindgen_futures::spawn_local(async move {
        // Where the time goes: computing in the page, or waiting for the adapter.
        let started = Instant::now();
        let mut in_page = Duration::ZERO;
        loop {
            let slice_started = Instant::now();
            let more = slice();
            in_page += slice_started.elapsed();
            if !more {
                break;
            }
            next_task().await;
        }
        let wall = started.elapsed().as_secs_f64();
        log(format!(
            "{wall:.1} s, of which {:.1} s in the page (recording and encoding; on the CPU engine, all of the computing), the rest waiting for the adapter",
            in_page.as_secs_f64()
        ));
        DRIVING.with(|driving| driving.set(false));
    });
}

/// Resolves in a later task of the page's event loop (a zero timeout).
async fn next_task() {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Ok(window) = window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// What the page's address asks for (`?run=`, `?baselines`, `?check`, `?save`, `?bench`,
/// `?transformer`, `?engine=`).
pub struct PageOptions {
    pub run: Option<ScenarioChoice>,
    /// The hand-set run (`?run=custom`) trains the baseline defences beside SpecDef.
    pub baselines: bool,
    /// "Check this device" at once: the quick scenario, then its comparison with the reference.
    pub check: bool,
    pub save: bool,
    pub bench: bool,
    /// The transformer demo at once: fetch the released classifier, attack it and its SpecDef
    /// twin with the default settings.
    pub transformer: bool,
    pub force_cpu: bool,
}

pub fn window() -> Result<web_sys::Window, String> {
    web_sys::window().ok_or_else(|| "no window".to_string())
}

pub fn js_error(e: JsValue) -> String {
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

pub fn page_options() -> Result<PageOptions, String> {
    let search = window()?.location().search().map_err(js_error)?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).map_err(js_error)?;
    let run = match params.get("run") {
        None => None,
        Some(name) => Some(
            ScenarioChoice::from_name(&name)
                .ok_or_else(|| format!("?run={name}: expected quick, full or custom"))?,
        ),
    };
    let check = params.has("check");
    let baselines = params.has("baselines");
    if baselines && run != Some(ScenarioChoice::Custom) {
        return Err("?baselines is the hand-set run's: use it with ?run=custom".to_string());
    }
    if check && run.is_some() {
        return Err("?check runs the quick scenario itself: leave out ?run".to_string());
    }
    let transformer = params.has("transformer");
    if transformer && (check || run.is_some()) {
        return Err(
            "?transformer runs the transformer demo alone: leave out ?run and ?check".into(),
        );
    }
    let force_cpu = match params.get("engine").as_deref() {
        None | Some("auto") => false,
        Some("cpu") => true,
        Some(other) => return Err(format!("?engine={other}: expected auto or cpu")),
    };
    Ok(PageOptions {
        run,
        baselines,
        check,
        save: params.has("save"),
        bench: params.has("bench"),
        transformer,
        force_cpu,
    })
}

/// Sets `window[name]`, for scripts to read.
pub fn set_global(name: &str, value: &JsValue) {
    if let Ok(window) = window() {
        let _ = js_sys::Reflect::set(&window, &JsValue::from_str(name), value);
    }
}

/// Tells the page how a scenario or benchmark ended: the title for whoever waits on it, the
/// results for whoever reads them.
pub fn announce(passed: bool, message: &str, results_jsonl: &str, bench_jsonl: &str) {
    set_global("specdefResults", &JsValue::from_str(results_jsonl));
    set_global("specdefBench", &JsValue::from_str(bench_jsonl));
    set_title(&format!(
        "{} {message}",
        if passed { "PASS" } else { "FAIL" }
    ));
}

pub fn set_title(title: &str) {
    if let Some(document) = window().ok().and_then(|w| w.document()) {
        document.set_title(title);
    }
}

/// Shows why the app could not start, in the title and the page's status line.
pub fn show_start_failure(error: &str) {
    set_title(&format!("FAIL specdef could not start: {error}"));
    if let Some(status) = window()
        .ok()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("specdef_status"))
    {
        status.set_text_content(Some(&format!("specdef could not start: {error}")));
    }
}

/// Offers `text` as a file download named `name`.
pub fn download(name: &str, text: &str) -> Result<(), String> {
    let parts = js_sys::Array::of1(&JsValue::from_str(text));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("application/x-ndjson");
    let blob =
        web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).map_err(js_error)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(js_error)?;
    let document = window()?.document().ok_or("no document")?;
    let anchor: web_sys::HtmlAnchorElement = document
        .create_element("a")
        .map_err(js_error)?
        .dyn_into()
        .map_err(|_| "an <a> that is not an anchor")?;
    anchor.set_href(&url);
    anchor.set_download(name);
    anchor.click();
    web_sys::Url::revoke_object_url(&url).map_err(js_error)
}

fn get(object: &JsValue, key: &str) -> Option<JsValue> {
    js_sys::Reflect::get(object, &JsValue::from_str(key))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// The adapter as the page sees it (`GPUAdapter.info`) and the browser's version, for the records:
/// wgpu leaves both blank on WebGPU.
pub async fn adapter_labels() -> Option<AdapterLabels> {
    let navigator: JsValue = window().ok()?.navigator().into();
    let gpu = get(&navigator, "gpu")?;
    let request: js_sys::Function = get(&gpu, "requestAdapter")?.dyn_into().ok()?;
    let promise: js_sys::Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    let info = get(&adapter, "info")?;
    let parts: Vec<String> = ["vendor", "architecture", "device", "description"]
        .iter()
        .filter_map(|key| get(&info, key)?.as_string())
        .filter(|s| !s.is_empty())
        .collect();
    let user_agent = window().ok()?.navigator().user_agent().unwrap_or_default();
    let browser = user_agent
        .split(' ')
        .find(|token| token.contains("Chrome/") || token.starts_with("Firefox/"))
        .unwrap_or(&user_agent);
    Some(AdapterLabels {
        name: parts.join(" "),
        driver: format!("WebGPU in {browser}"),
    })
}

/// Milliseconds since the page started loading.
pub fn now_ms() -> f64 {
    window()
        .ok()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

/// The body of `url` (relative to the page), or why it could not be fetched.
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    use wasm_bindgen_futures::JsFuture;
    let response = JsFuture::from(window()?.fetch_with_str(url))
        .await
        .map_err(|e| format!("{url}: {}", js_error(e)))?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|_| format!("{url}: the fetch did not answer with a Response"))?;
    if !response.ok() {
        return Err(format!(
            "{url}: HTTP {} {}",
            response.status(),
            response.status_text()
        ));
    }
    let body = response.array_buffer().map_err(js_error)?;
    let buffer = JsFuture::from(body)
        .await
        .map_err(|e| format!("{url}: {}", js_error(e)))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}
