//! A headless Chromium driven through chromedriver (WebDriver) for the dashboard
//! tests. Debian's `chromium` and `chromium-driver` provide both; `.ci/run` installs
//! them. Without them the tests say so loudly and skip, except under CI (`CI` set),
//! where a missing browser is a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

/// How long a step waits for the page before it fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// A chromedriver process and a browser session in it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn first_existing(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium. `None` (after a loud message)
    /// when they are not installed and `CI` is not set; under CI that panics.
    pub async fn start() -> Option<Self> {
        let chromium = first_existing(
            "TOLLGATE_CHROMIUM",
            &[
                "/usr/bin/chromium",
                "/usr/bin/chromium-browser",
                "/usr/bin/google-chrome",
            ],
        );
        let driver = first_existing("TOLLGATE_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let message = "BROWSER TESTS NOT RUN: chromium and chromedriver are not installed \
                 (apt-get install chromium chromium-driver, or set TOLLGATE_CHROMIUM and TOLLGATE_CHROMEDRIVER)";
            if std::env::var_os("CI").is_some() {
                panic!("{message}; CI must run them");
            }
            eprintln!("\n**************** {message} ****************\n");
            return None;
        };
        Some(Self::launch(&chromium, &driver).await.expect("the browser starts"))
    }

    async fn launch(chromium: &Path, driver_path: &Path) -> anyhow::Result<Self> {
        let port = free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", driver_path.display()))?;
        let profile = tempfile::tempdir()?;
        let args = serde_json::json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1280,2000",
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let browser = Self {
            client: loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                {
                    Ok(client) => break client,
                    // chromedriver takes a moment to listen.
                    Err(_) if started.elapsed() < Duration::from_secs(20) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => bail!("no WebDriver session after 20 s: {e}"),
                }
            },
            driver,
            _profile: profile,
        };
        Ok(browser)
    }

    /// Goes to `url`.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await.with_context(|| format!("open {url}"))
    }

    /// Waits for an element matching `css`.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element `{css}` within {STEP_TIMEOUT:?}"))
    }

    /// Whether an element matching `css` exists now.
    pub async fn exists(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .with_context(|| format!("click `{css}`"))
    }

    /// Types `text` into the field matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.find(css).await?;
        field.clear().await.with_context(|| format!("clear `{css}`"))?;
        field
            .send_keys(text)
            .await
            .with_context(|| format!("type into `{css}`"))
    }

    /// The text of the element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// The current value of the input matching `css`.
    pub async fn value(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.prop("value").await?.unwrap_or_default())
    }

    /// Waits until the text of `css` satisfies `check`; returns it.
    pub async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if check(&text) {
                    return Ok(text);
                }
                last = text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("`{css}` never showed {what}; its last text was {last:?}")
    }

    /// Saves a screenshot and the page source under `target/browser-failures/`;
    /// returns where.
    pub async fn save_failure(&self, name: &str) -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-failures");
        std::fs::create_dir_all(&dir).ok()?;
        let png = dir.join(format!("{name}.png"));
        if let Ok(bytes) = self.client.screenshot().await {
            std::fs::write(&png, bytes).ok()?;
        }
        if let Ok(source) = self.client.source().await {
            std::fs::write(dir.join(format!("{name}.html")), source).ok()?;
        }
        Some(png)
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// Runs a browser scenario; on failure saves a screenshot and panics with the error
/// and where the screenshot is.
pub async fn run_scenario<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce(std::sync::Arc<Browser>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let Some(browser) = Browser::start().await else {
        return;
    };
    let browser = std::sync::Arc::new(browser);
    let outcome = scenario(browser.clone()).await;
    if let Err(error) = outcome {
        let shot = browser.save_failure(name).await;
        panic!("browser scenario `{name}` failed: {error:#}\nscreenshot: {shot:?}");
    }
    if let Ok(browser) = std::sync::Arc::try_unwrap(browser) {
        browser.close().await;
    }
}
