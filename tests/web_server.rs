//! The local web server (web/serve.mjs) as a hostile client would meet it, over 127.0.0.1 only:
//! no request reaches outside the served folder (a sibling folder whose name starts with the
//! served one's included, and a symlink pointing out of it), a FIFO or other non-regular file is
//! never opened (five requests for one used to fill Node's I/O pool and hang every later
//! request), a malformed URL gets a 400 without ending the server, and a folder that does not
//! exist is refused at start.
//!
//! It needs Node.js; without it the test prints why and skips, and under
//! SPECDEF_REQUIRE_BROWSER=1 (CI, which installs Node for the browser test) it fails instead.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server process, killed when the test ends however it ends.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Starts `node web/serve.mjs DIR 0` and reads the port it chose from its first line.
fn start(dir: &Path) -> Server {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/serve.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .arg(dir)
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting node web/serve.mjs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server's first line");
    let port = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server { child, port }
}

/// Sends a raw HTTP/1.0 request (the target exactly as given, no client-side normalising; no
/// chunked body in reply) and
/// returns the status code and the body.
fn get(server: &Server, target: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

fn folder() -> PathBuf {
    let root = std::env::temp_dir().join(format!("specdef-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("dist")).unwrap();
    std::fs::create_dir_all(root.join("dist-secret")).unwrap();
    std::fs::write(root.join("dist/index.html"), "the app").unwrap();
    std::fs::write(root.join("dist-secret/secret.txt"), "SECRET").unwrap();
    std::fs::write(root.join("outside.txt"), "SECRET").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("outside.txt"), root.join("dist/link.txt")).unwrap();
        std::os::unix::fs::symlink("index.html", root.join("dist/alias.html")).unwrap();
        let fifo = root.join("dist/pipe");
        let made = Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", fifo.display());
    }
    root
}

#[test]
fn the_server_stays_inside_its_folder_and_survives_malformed_urls() {
    if !node_available() {
        let why = "no Node.js (`node`) on this machine";
        if std::env::var("SPECDEF_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("{why}, and SPECDEF_REQUIRE_BROWSER=1 requires this test to run");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let root = folder();
    let server = start(&root.join("dist"));
    assert_eq!(get(&server, "/"), (200, "the app".to_string()));
    for hostile in [
        "/..%2Fdist-secret/secret.txt",
        "/..%2F..%2Foutside.txt",
        "/%2E%2E/outside.txt",
        "/../outside.txt",
    ] {
        let (status, body) = get(&server, hostile);
        assert!(
            !body.contains("SECRET") && (status == 403 || status == 404),
            "{hostile}: status {status}, body {body:?}"
        );
    }
    #[cfg(unix)]
    {
        let (status, body) = get(&server, "/link.txt");
        assert!(
            !body.contains("SECRET") && status == 404,
            "a symlink out of the root: status {status}, body {body:?}"
        );
        // A symlink that stays inside is an ordinary file of the app.
        assert_eq!(get(&server, "/alias.html"), (200, "the app".to_string()));
        for _ in 0..8 {
            assert_eq!(get(&server, "/pipe").0, 404, "a FIFO is not served");
        }
    }
    for malformed in ["/%", "/%E0%A4%A"] {
        let (status, _) = get(&server, malformed);
        assert_eq!(status, 400, "{malformed}");
    }
    // Still serving after all of it.
    assert_eq!(get(&server, "/index.html"), (200, "the app".to_string()));
    drop(server);

    let missing = root.join("no-such-folder");
    let refused = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("web/serve.mjs"))
        .arg(&missing)
        .arg("0")
        .output()
        .expect("running node web/serve.mjs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no-such-folder") && stderr.contains("not a folder"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
