//! Bearer tokens as presented by anyone: verification never panics and never
//! accepts what the server did not sign.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tollgate_gateway::jwt::TokenService;

struct Fixture {
    service: TokenService,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = tollgate_engine::storage::Storage::open(dir.path()).expect("storage");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let keys = runtime
            .block_on(tollgate_gateway::keys::Keys::load_or_create(storage, 0))
            .expect("signing key");
        let service = TokenService::new(keys, "https://issuer.test".into(), "tollgate-api".into(), 1024);
        Fixture { service, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    // Nothing the fuzzer makes up carries the server's signature.
    assert!(fixture().service.verify(token, 1_000).is_err());
});
