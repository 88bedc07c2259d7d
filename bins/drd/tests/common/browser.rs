//! Debian's Chromium, headless, driven over its DevTools protocol (a
//! WebSocket of JSON commands and events): open a page, run script in it,
//! wait in the page for a condition, take screenshots, and collect every
//! error the page's console shows.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Chromium's path: `$CHROMIUM`, else Debian's. `None` when it is not
/// installed: then the test fails in CI (`CI=true`) and skips elsewhere,
/// saying why.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{test}: {} is not there (Debian's chromium package; scripts/test.sh installs it)",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped {why}");
    None
}

/// A headless Chromium with one page, killed on drop.
pub struct Browser {
    /// The page it opened (dropped before the process).
    pub page: Page,
    _process: Process,
}

/// Chromium's processes: it runs in a process group of its own (the
/// browser, its zygotes, renderers and GPU process), all killed on drop,
/// also when the test fails while starting it: a Chromium left behind
/// keeps a core busy.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Browser {
    /// Starts `chromium` with a fresh profile under `dir` and a window of
    /// a laptop's screen, and attaches to its page.
    pub fn launch(chromium: &Path, dir: &Path) -> Browser {
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).expect("profile dir");
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--window-size=1440,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("stderr");
        let process = Process(child);
        let port = devtools_port(stderr, &dir.join("chromium.log"));
        let list = target_list(port);
        let targets: Value = serde_json::from_str(&list).expect("DevTools target list");
        let url = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page among Chromium's targets: {list}"))
            .to_owned();
        let (ws, _) = tungstenite::connect(url.as_str()).expect("DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(90)))
                .expect("read timeout");
        }
        let mut page = Page {
            ws,
            next: 0,
            problems: Vec::new(),
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(domain, json!({}));
        }
        Browser {
            page,
            _process: process,
        }
    }
}

/// `GET /json/list` of Chromium's DevTools server, which keeps the
/// connection open: read up to its Content-Length.
fn target_list(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("DevTools HTTP");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .expect("request");
    let mut reader = BufReader::new(s);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("DevTools HTTP header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().expect("Content-Length");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("DevTools HTTP body");
    String::from_utf8(body).expect("UTF-8 target list")
}

/// Reads Chromium's stderr up to the line naming its DevTools port; the
/// rest goes to `log`.
fn devtools_port(stderr: std::process::ChildStderr, log: &Path) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    let log = log.to_owned();
    std::thread::spawn(move || {
        let mut out = std::fs::File::create(&log).ok();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(out) = out.as_mut() {
                use std::io::Write;
                let _ = writeln!(out, "{line}");
            }
            if !sent {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    let port = rest
                        .split('/')
                        .next()
                        .and_then(|hp| hp.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok());
                    let _ = tx.send(port);
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("Chromium did not say its DevTools port"))
}

/// One page over the DevTools protocol.
pub struct Page {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
    /// What the page's console reported as errors: exceptions, `console.error`,
    /// failed loads and policy violations.
    pub problems: Vec<String>,
}

impl Page {
    /// Sends `method` and returns its result (events met meanwhile are
    /// looked at for errors).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
        loop {
            let frame = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
            let Message::Text(text) = frame else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("DevTools {method}: {e}");
                }
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    fn note(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("an exception");
                self.problems.push(format!("exception: {text}"));
            }
            Some("Runtime.consoleAPICalled")
                if matches!(p["type"].as_str(), Some("error" | "assert" | "warning")) =>
            {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                x["value"]
                                    .as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| x["description"].to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.problems
                    .push(format!("console.{}: {}", p["type"], args.join(" ")));
            }
            Some("Log.entryAdded")
                if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) =>
            {
                let e = &p["entry"];
                self.problems.push(format!(
                    "{} {}: {} {}",
                    e["level"].as_str().unwrap_or(""),
                    e["source"].as_str().unwrap_or(""),
                    e["text"].as_str().unwrap_or(""),
                    e["url"].as_str().unwrap_or("")
                ));
            }
            _ => {}
        }
    }

    /// Runs `script` in the page (a promise is awaited) and returns its
    /// value; an exception fails the test with its text.
    pub fn eval(&mut self, script: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": script, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(d) = r.get("exceptionDetails") {
            panic!(
                "script failed: {}\n{script}",
                d["exception"]["description"]
                    .as_str()
                    .unwrap_or(&d.to_string())
            );
        }
        r["result"]["value"].clone()
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(
            "the page to load",
            "document.readyState === 'complete'",
            Duration::from_secs(30),
        );
    }

    /// Waits, in the page, until the expression `condition` is truthy, and
    /// returns its value; past `limit`, fails with `what` and the page's
    /// text. The condition is checked every 50 ms by the page itself.
    pub fn wait_for(&mut self, what: &str, condition: &str, limit: Duration) -> Value {
        let script = format!(
            "new Promise((done) => {{
                const t0 = Date.now();
                const check = () => {{
                    let v = false;
                    try {{ v = ({condition}); }} catch (e) {{ v = false; }}
                    if (v) done(v);
                    else if (Date.now() - t0 > {ms}) done(null);
                    else setTimeout(check, 50);
                }};
                check();
            }})",
            ms = limit.as_millis()
        );
        let v = self.eval(&script);
        if v.is_null() {
            let text = self.eval("document.body.innerText");
            panic!(
                "timed out after {limit:?} waiting for {what}; the page shows:\n{}",
                text.as_str().unwrap_or_default()
            );
        }
        v
    }

    /// Presses `key` ("Enter", "Escape", "Tab") as a keyboard would, on
    /// whatever has the focus.
    pub fn press(&mut self, key: &str) {
        let (code, text) = match key {
            "Enter" => (13, "\r"),
            "Escape" => (27, ""),
            "Tab" => (9, ""),
            other => panic!("no key code for {other}"),
        };
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({
                "type": kind, "key": key, "code": key,
                "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code,
            });
            if kind == "keyDown" && !text.is_empty() {
                event["text"] = json!(text);
            }
            self.call("Input.dispatchKeyEvent", event);
        }
    }

    /// A PNG of the whole page, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("screenshot written");
    }
}
