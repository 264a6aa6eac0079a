//! The token endpoint's `application/x-www-form-urlencoded` body: parsing never
//! panics, and a parsed form never holds a parameter twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_gateway::oauth::Form;

fuzz_target!(|data: &[u8]| {
    if let Ok(form) = Form::parse(data) {
        for name in [
            "grant_type",
            "scope",
            "client_id",
            "client_secret",
            "token",
            "token_type_hint",
        ] {
            let _ = form.get(name);
        }
    }
});
