//! The server's CPU time is every thread's but the load generator's. Alone in its
//! own test binary, so that no other test's threads run meanwhile.

use std::sync::mpsc;
use std::time::Duration;

/// This thread's own CPU time so far.
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("/proc is readable");
    Duration::from_nanos(
        stat.split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .unwrap_or(0),
    )
}

/// Runs on a core until this thread has used `how_much` CPU time (not wall time: on a
/// busy machine a thread gets less CPU than the time that passes).
fn spin(how_much: Duration) {
    let start = own_cpu();
    let mut x = 0u64;
    while own_cpu() - start < how_much {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

/// Spins for 300 ms of CPU in a thread named `name` and returns how much the server's CPU
/// time grew meanwhile, read from inside that thread. A thread that had run for
/// 300 ms before the first reading ends in between, as an idle blocking-pool thread
/// would: it must not make the reading shrink.
fn counted_while_spinning_in(name: &str) -> Duration {
    let (spun_tx, spun) = mpsc::channel();
    let (end, end_rx) = mpsc::channel::<()>();
    let ending = std::thread::spawn(move || {
        spin(Duration::from_millis(300));
        spun_tx.send(()).unwrap();
        let _ = end_rx.recv();
    });
    spun.recv().unwrap();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let first = tollgate_loadtest::server_cpu_ns().expect("/proc is readable");
            drop(end);
            ending.join().unwrap();
            spin(Duration::from_millis(300));
            tollgate_loadtest::server_cpu_since(&first).expect("/proc is readable")
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn generator_threads_are_not_counted_and_all_others_are() {
    let generator = counted_while_spinning_in(tollgate_loadtest::GENERATOR_THREAD);
    let server = counted_while_spinning_in("server-worker");
    assert!(
        generator < Duration::from_millis(50),
        "the generator's spin was counted: {generator:?}"
    );
    assert!(
        server >= Duration::from_millis(250),
        "a server thread's spin was not counted: {server:?}"
    );
}
