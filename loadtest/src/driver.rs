//! Sends load: closed loop (fixed connections, each sending as fast as answers come)
//! or open loop (fixed arrival rate). Open-loop latency is measured from the
//! *intended* send time, so when the server falls behind the queueing shows up in
//! the percentiles instead of being hidden (coordinated omission).
//!
//! Each worker owns one keep-alive HTTP/1.1 connection ([`crate::wire`]); every run is
//! bounded by a duration and, optionally, a request count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hdrhistogram::Histogram;
use hyper::Request;

use crate::wire::Connection;

/// Builds request number `i`.
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Bytes> + Send + Sync>;

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where to send (loopback only).
    pub addr: SocketAddr,
    /// Connections (closed loop) or the most requests in flight (open loop).
    pub connections: usize,
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many requests, if set.
    pub max_requests: Option<u64>,
    /// Requests per second (open loop); `None` is closed loop.
    pub rate: Option<f64>,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
    /// Label for the progress line.
    pub label: String,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Requests answered.
    pub requests: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport failures (connect, reset).
    pub transport_errors: u64,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
    /// Resident memory of this process (server, baselines and generator) at the end.
    pub rss_bytes: u64,
    /// CPU time the server under test spent during the run (every thread of this
    /// process except the generator's, [`crate::server_cpu_ns`]); `None` for a server
    /// in another process.
    pub server_cpu: Option<Duration>,
}

impl Outcome {
    /// No requests (for scenarios whose finding is a note, not a load).
    pub fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            requests: 0,
            elapsed: Duration::ZERO,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            latency_us: Histogram::new(3)?,
            rss_bytes: 0,
            server_cpu: None,
        })
    }

    /// Answers per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The server's CPU time per answered request: its cost independent of how the
    /// two cores were shared with the generator.
    pub fn server_cpu_per_request(&self) -> Option<Duration> {
        let cpu = self.server_cpu?;
        (self.requests > 0).then(|| Duration::from_secs_f64(cpu.as_secs_f64() / self.requests as f64))
    }

    /// How many answers had `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

struct Shared {
    next: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// How often the open-loop pacer releases the requests that fell due.
const PACE_TICK: Duration = Duration::from_micros(100);

/// Open-loop pacing finer than tokio's timer (whose 1 ms granularity would add up to a
/// millisecond to every measured latency): a thread releases one permit per request as
/// it falls due, waking when the next one is due but at most every [`PACE_TICK`], so a
/// request leaves within about a tick of its intended time. Latency is still measured from the intended time. It stops at
/// the deadline or when told, and then closes the permits so waiting workers end.
fn pace(
    rate: f64,
    start: Instant,
    deadline: Instant,
    permits: Arc<tokio::sync::Semaphore>,
    shared: Arc<Shared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(crate::GENERATOR_THREAD.into())
        .spawn(move || {
            let mut released = 0u64;
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    // Whatever fell due before the deadline is sent, even if this thread
                    // was descheduled past it (late, and measured from its intended time).
                    let total = ((deadline - start).as_secs_f64() * rate).ceil() as u64;
                    permits.add_permits(total.saturating_sub(released) as usize);
                    break;
                }
                let due = ((now - start).as_secs_f64() * rate) as u64 + 1;
                if due > released {
                    permits.add_permits((due - released) as usize);
                    released = due;
                }
                // Sleep until the next request falls due, but at least a tick: at low
                // rates the pacer then wakes once per request instead of every tick,
                // and takes that much less CPU from the server beside it.
                let next_due = (start + Duration::from_secs_f64(released as f64 / rate)).min(deadline);
                std::thread::sleep(next_due.saturating_duration_since(Instant::now()).max(PACE_TICK));
            }
            permits.close();
        })
}

/// Runs the load and returns what it measured.
pub async fn run(spec: LoadSpec, make: MakeRequest) -> anyhow::Result<Outcome> {
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let cpu_before = crate::server_cpu_ns();
    let start = Instant::now();
    let deadline = start + spec.duration;
    let progress = spec.progress.then(|| {
        let shared = shared.clone();
        let label = spec.label.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let done = shared.done.load(Ordering::Relaxed);
                eprintln!(
                    "  [{label} {:>3.0}s] {:>9} req/s, {} answered, {} transport errors",
                    start.elapsed().as_secs_f64(),
                    done - last,
                    done,
                    shared.errors.load(Ordering::Relaxed)
                );
                last = done;
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        })
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let pacer = match spec.rate {
        Some(rate) => Some(pace(rate, start, deadline, permits.clone(), shared.clone())?),
        None => None,
    };
    let mut workers = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections.max(1) {
        let shared = shared.clone();
        let make = make.clone();
        let spec = spec.clone();
        let permits = permits.clone();
        workers.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut connection: Option<Connection> = None;
            loop {
                if spec.rate.is_some() {
                    // Open loop: wait for the pacer to release a request that is due.
                    match permits.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if spec.max_requests.is_some_and(|max| i >= max) {
                    break;
                }
                // Open loop: request i is due at start + i / rate (released by then).
                let intended = match spec.rate {
                    Some(rate) => {
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        if due >= deadline {
                            break;
                        }
                        due
                    }
                    None => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        now
                    }
                };
                if connection.is_none() {
                    match Connection::connect(spec.addr).await {
                        Ok(c) => connection = Some(c),
                        Err(_) => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(conn) = connection.as_mut() else { continue };
                match conn.exchange(&make(i)).await {
                    Ok(status) => {
                        if !conn.reusable() {
                            connection = None;
                        }
                        let micros = intended.elapsed().as_micros().max(1) as u64;
                        let _ = hist.record(micros.min(60_000_000));
                        *statuses.entry(status).or_default() += 1;
                        shared.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        connection = None;
                    }
                }
            }
            (hist, statuses)
        }));
    }
    let mut latency_us = histogram();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for worker in workers {
        let (hist, counts) = worker.await?;
        latency_us.add(&hist).ok();
        for (status, n) in counts {
            *statuses.entry(status).or_default() += n;
        }
    }
    let elapsed = start.elapsed();
    let server_cpu = cpu_before.as_ref().and_then(crate::server_cpu_since);
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(pacer) = pacer {
        let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    Ok(Outcome {
        requests: statuses.values().sum(),
        elapsed,
        statuses,
        transport_errors: shared.errors.load(Ordering::Relaxed),
        latency_us,
        rss_bytes: crate::rss_bytes(),
        server_cpu,
    })
}
