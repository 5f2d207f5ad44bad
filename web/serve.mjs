// A static file server for the built web app, bound to 127.0.0.1 only.
// `node web/serve.mjs DIR [PORT]`; imported by web/e2e.mjs (port 0: any free port).
// Only regular files inside DIR are served: the real path (symlinks resolved) must stay inside
// the real root, and anything that is not a regular file (a FIFO, a device, a folder) is a 404,
// never opened: a FIFO would block one of Node's few I/O threads until every request hangs.
import { createServer } from "node:http";
import { open, realpath, stat } from "node:fs/promises";
import { statSync } from "node:fs";
import { constants } from "node:fs";
import { extname, isAbsolute, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".png": "image/png",
  ".json": "application/json",
};

/// The most bytes one response reads into memory (the app's wasm is ~20 MB).
const MAX_FILE_BYTES = 256 * 1024 * 1024;

function inside(root, file) {
  // A relative path that does not climb out; a prefix test would let `/..%2Fdist-secret/`
  // through to a sibling folder whose name starts with the root's.
  const rest = relative(root, file);
  return rest !== "" && !rest.startsWith("..") && !isAbsolute(rest);
}

/// The bytes of `file` when it is a regular file whose real path is inside `root`, else null.
async function readServable(root, file) {
  let real;
  try {
    real = await realpath(file);
  } catch {
    return null;
  }
  if (!inside(root, real)) return null;
  const info = await stat(real);
  if (!info.isFile() || info.size > MAX_FILE_BYTES) return null;
  // O_NONBLOCK: were the file swapped for a FIFO after the check, opening it cannot block.
  const handle = await open(real, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    if (!(await handle.stat()).isFile()) return null;
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

export function serve(dir, port) {
  const given = resolve(dir);
  if (!statSync(given, { throwIfNoEntry: false })?.isDirectory()) {
    return Promise.reject(new Error(`${dir} is not a folder: build the app first (web/build.sh)`));
  }
  return realpath(given).then((root) => listen(root, port));
}

function listen(root, port) {
  const server = createServer(async (request, response) => {
    let path;
    try {
      path = decodeURIComponent(new URL(request.url, "http://127.0.0.1").pathname);
    } catch {
      // A malformed URL (`GET /%`) is the client's error, never the end of the server.
      response.writeHead(400, { "content-type": "text/plain" }).end("malformed URL\n");
      return;
    }
    const file = join(root, path === "/" ? "index.html" : path);
    if (!inside(root, file)) {
      response.writeHead(403).end();
      return;
    }
    let body = null;
    try {
      body = await readServable(root, file);
    } catch {
      body = null;
    }
    if (body === null) {
      response.writeHead(404, { "content-type": "text/plain" }).end(`not found: ${path}\n`);
      return;
    }
    response.writeHead(200, {
      "content-type": TYPES[extname(file)] ?? "application/octet-stream",
      "cache-control": "no-store",
    });
    response.end(body);
  });
  return new Promise((done, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => done(server));
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [dir = "web/dist", port = "8080"] = process.argv.slice(2);
  try {
    const server = await serve(dir, Number(port));
    console.log(`serving ${dir} on http://127.0.0.1:${server.address().port}/ (Ctrl-C stops)`);
  } catch (error) {
    console.error(`web/serve.mjs: ${error.message}`);
    process.exit(1);
  }
}
