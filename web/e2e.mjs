// The browser end-to-end check: serves the built app (web/build.sh) on 127.0.0.1, opens it in
// headless Chromium and runs the quick scenario twice: on WebGPU (SwiftShader) as the app's
// "Check this device" (`?check`: it must find the run reproduces the built-in reference), and in
// a page with WebGPU removed (`?run=quick`), where the app must fall back to the CPU engine; then
// the hand-set run with the baseline defences on WebGPU (`?run=custom&baselines`), and the
// benchmark harness, and, where the build holds its files, the transformer demo (`?transformer`:
// a short attack on the released MiniLM classifier and its SpecDef twin). For each page it saves a screenshot, the results (the CLI's
// JSON lines) and a summary under OUT. With REPORT (a `specdef report` page), it also opens that page from
// disk and checks it shows its claims table and figures with no console error.
//
//   node web/e2e.mjs DIST OUT [REPORT]     (CHROMIUM overrides /usr/bin/chromium)
//
// Exit 0 when every page passes; tests/browser.rs then compares the results with the native
// CPU-f64 reference.
import { chromium } from "playwright-core";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { serve } from "./serve.mjs";

const [dist, out, report] = process.argv.slice(2);
if (!dist || !out) {
  console.error("usage: node web/e2e.mjs DIST OUT");
  process.exit(2);
}
const SCENARIO_TIMEOUT_MS = 20 * 60 * 1000;

// The flags under which SwiftShader gives headless Chromium WebGPU (see shared/TOOLCHAIN.md);
// the network flags keep Chromium from calling out of a closed machine. Playwright gives each
// launch a fresh temporary profile (--user-data-dir).
const FLAGS = [
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
  "--use-angle=swiftshader",
  "--no-sandbox",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

async function runPage(browser, base, name, { query, results, withoutWebGpu }) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  if (withoutWebGpu) {
    // As a browser without WebGPU: eframe then draws with WebGL2, which has no compute.
    await context.addInitScript(() => {
      delete Navigator.prototype.gpu;
    });
  }
  const page = await context.newPage();
  const problems = [];
  // A panic in the app stops its frames but not the page: stop waiting at once.
  let crashed;
  const crash = new Promise((_, reject) => (crashed = reject));
  crash.catch(() => {});
  page.on("pageerror", (e) => {
    problems.push(`page error: ${e.message}`);
    crashed(new Error(`page error: ${e.message}`));
  });
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
    if (/panicked/.test(m.text())) crashed(new Error(`the app panicked: ${m.text()}`));
  });
  // The results are exported as the app's download (`?save`), where the query asks for it.
  const download = query.includes("save") ? page.waitForEvent("download", { timeout: 0 }) : null;
  download?.catch(() => {});
  const started = Date.now();
  await page.goto(`${base}/?${query}`);
  const hasWebGpu = await page.evaluate(() => "gpu" in navigator);
  const adapter = await page.evaluate(async () => {
    if (!("gpu" in navigator)) return null;
    const a = await navigator.gpu.requestAdapter();
    return a ? { vendor: a.info.vendor, architecture: a.info.architecture, description: a.info.description } : null;
  });
  let title;
  let readyMs = null;
  try {
    await Promise.race([
      page.waitForFunction(() => window.specdefReadyMs !== undefined, null, { timeout: 60_000 }),
      crash,
    ]);
    readyMs = await page.evaluate(() => window.specdefReadyMs);
    await Promise.race([
      page.waitForFunction(() => /^(PASS|FAIL)/.test(document.title), null, {
        timeout: SCENARIO_TIMEOUT_MS,
        polling: 1000,
      }),
      crash,
    ]);
  } finally {
    title = await page.title();
    await page.screenshot({ path: join(out, `${name}.png`) });
  }
  const wallS = (Date.now() - started) / 1000;
  const published = await page.evaluate((key) => window[key] ?? "", results);
  await writeFile(join(out, `${name}.jsonl`), published);
  if (new URLSearchParams(query).has("check")) {
    const deviceCheck = await page.evaluate(() => window.specdefDeviceCheck);
    // The app announces a check whose runs differ from the reference as FAIL; its report says which.
    await writeFile(join(out, `${name}.device-check.txt`), deviceCheck ?? "no device check report\n");
    if (deviceCheck === undefined) {
      problems.push("?check left no window.specdefDeviceCheck");
      title = `FAIL no device check report: ${title}`;
    }
  }
  if (download && title.startsWith("PASS")) {
    const saved = join(out, `${name}.download.jsonl`);
    await (await download).saveAs(saved);
    if ((await readFile(saved, "utf8")) !== published) {
      problems.push("the downloaded results differ from window.specdefResults");
      title = `FAIL download differs: ${title}`;
    }
  }
  const summary = {
    name,
    title,
    has_webgpu: hasWebGpu,
    adapter,
    engine_note: await page.evaluate(() => window.specdefEngine),
    ready_ms: readyMs,
    wall_s: wallS,
    problems,
  };
  await writeFile(join(out, `${name}.json`), JSON.stringify(summary, null, 2) + "\n");
  console.log(`${name}: ${title} (${wallS.toFixed(1)} s; app created at ${readyMs?.toFixed(0)} ms; ${summary.engine_note})`);
  for (const p of problems) console.log(`  ${p}`);
  await context.close();
  return title.startsWith("PASS");
}

// The report page: self-contained, so opened from disk; it must render its claims table (one
// row per claim, eight cells each) and its inlined figures without a console error.
async function checkReport(browser, path) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("request", (r) => {
    if (!r.url().startsWith("file:")) problems.push(`fetched ${r.url()}`);
  });
  await page.goto(`file://${path}`);
  const seen = await page.evaluate(() => ({
    claims: document.querySelectorAll("#claims tbody tr").length,
    fullRows: [...document.querySelectorAll("#claims tbody tr")].filter((r) => r.cells.length === 8).length,
    figures: document.querySelectorAll("figure svg").length,
  }));
  await page.screenshot({ path: join(out, "report.png"), fullPage: false });
  await context.close();
  if (seen.claims === 0 || seen.fullRows !== seen.claims) problems.push(`claims table: ${JSON.stringify(seen)}`);
  if (seen.figures === 0) problems.push("no figure");
  const passed = problems.length === 0;
  console.log(`report: ${passed ? "PASS" : "FAIL"} (${seen.claims} claims, ${seen.figures} figures)`);
  for (const p of problems) console.log(`  ${p}`);
  await writeFile(join(out, "report.summary.json"), JSON.stringify({ ...seen, problems }, null, 2));
  return passed;
}

await mkdir(out, { recursive: true });
const server = await serve(dist, 0);
const base = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: FLAGS,
});
// The pages, in order; SPECDEF_E2E_ONLY=name,name runs only those (for a developer's look at one).
const PAGES = [
  { name: "browser-webgpu", query: "check&save", results: "specdefResults", withoutWebGpu: false },
  { name: "browser-fallback", query: "run=quick&save", results: "specdefResults", withoutWebGpu: true },
  { name: "browser-baselines", query: "run=custom&baselines&save", results: "specdefResults", withoutWebGpu: false },
  { name: "browser-bench", query: "bench", results: "specdefBench", withoutWebGpu: false },
  // The transformer demo where web/build.sh copied its files: one defended (and one undefended)
  // attack on the released MiniLM classifier, on WebGPU.
  { name: "browser-transformer", query: "transformer", results: "specdefTransformer", withoutWebGpu: false,
    needs: join(dist, "transformer", "released.safetensors") },
];
const only = process.env.SPECDEF_E2E_ONLY?.split(",");
let passed = false;
try {
  passed = true;
  for (const { name, needs, ...options } of PAGES) {
    if (only && !only.includes(name)) continue;
    if (needs && !existsSync(needs)) {
      console.log(`${name}: skipped (no ${needs} in the build)`);
      continue;
    }
    passed = (await runPage(browser, base, name, options)) && passed;
  }
  if (report && !only) passed = (await checkReport(browser, report)) && passed;
} finally {
  await browser.close();
  server.close();
}
process.exit(passed ? 0 : 1);
