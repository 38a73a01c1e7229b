//! A minimal W3C WebDriver client for headless Chromium via `chromedriver`:
//! plain HTTP/JSON, so tests need no browser-automation crate.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Proc, http_exchange, tempdir};

/// `chromedriver` plus one headless Chromium session; both end on drop.
pub struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
    _profile: tempdir::Dir,
}

fn call(port: u16, method: &str, path: &str, body: &Value) -> Option<Value> {
    let text = body.to_string();
    let (_, _, resp) = http_exchange(
        port,
        method,
        path,
        &[("Content-Type", "application/json")],
        &text,
    )?;
    serde_json::from_str(&resp).ok()
}

impl Browser {
    /// Start chromedriver on `port` and open a headless Chromium with the
    /// flags a CI container needs.
    pub fn start(port: u16, log: std::path::PathBuf) -> Self {
        Self::start_with_args(port, log, &[])
    }

    /// [`start`](Self::start) with more Chromium flags (e.g. a fake
    /// microphone: `--use-fake-device-for-media-stream`).
    pub fn start_with_args(port: u16, log: std::path::PathBuf, extra: &[&str]) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn chromedriver");
        let driver = Proc { child, log };
        let profile = tempdir::Dir::new();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--autoplay-policy=no-user-gesture-required",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().map(|a| a.to_string()));
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": args,
        }}}});
        let deadline = Instant::now() + Duration::from_secs(20);
        let session = loop {
            if let Some(v) = call(port, "POST", "/session", &caps)
                && let Some(id) = v["value"]["sessionId"].as_str()
            {
                break id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start a session:\n{}",
                driver.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        Self {
            port,
            session,
            _driver: driver,
            _profile: profile,
        }
    }

    pub fn goto(&self, url: &str) {
        call(
            self.port,
            "POST",
            &format!("/session/{}/url", self.session),
            &json!({ "url": url }),
        )
        .expect("navigate");
    }

    /// Run `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        call(
            self.port,
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            &json!({ "script": script, "args": [] }),
        )
        .map(|v| v["value"].clone())
        .unwrap_or(Value::Null)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            &json!({}),
        );
    }
}

impl Browser {
    /// Run an async `script`: it gets a callback as its last argument
    /// (`arguments[arguments.length - 1]`) and calls it with the result.
    pub fn eval_async(&self, script: &str) -> Value {
        call(
            self.port,
            "POST",
            &format!("/session/{}/execute/async", self.session),
            &json!({ "script": script, "args": [] }),
        )
        .map(|v| v["value"].clone())
        .unwrap_or(Value::Null)
    }
}

impl Browser {
    /// The viewport as PNG (WebDriver "Take Screenshot").
    pub fn screenshot_png(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = call(
            self.port,
            "GET",
            &format!("/session/{}/screenshot", self.session),
            &json!({}),
        )
        .expect("screenshot");
        let b64 = v["value"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("screenshot base64")
    }

    /// Set a permission for the current page's origin (W3C Permissions
    /// §automation), e.g. `loopback-network` for Local Network Access.
    pub fn set_permission(&self, name: &str, state: &str) -> Value {
        call(
            self.port,
            "POST",
            &format!("/session/{}/permissions", self.session),
            &json!({ "descriptor": { "name": name }, "state": state }),
        )
        .unwrap_or(Value::Null)
    }
}

/// A TCP port free right now on loopback (for chromedriver).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
