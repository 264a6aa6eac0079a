//! Client secrets, ids and scopes as presented by anyone: parsing never panics, and
//! whatever parses prints back to exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_engine::model::{ClientId, IntegrationId, OrgId, Scope, parse_scopes};
use tollgate_engine::secret::ClientSecret;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(secret) = ClientSecret::parse(text) {
        assert_eq!(secret.expose(), text);
        assert!(text.contains(secret.slot_id().as_str()));
    }
    if let Ok(id) = ClientId::parse(text) {
        assert_eq!(id.as_str(), text);
    }
    let _ = IntegrationId::parse(text);
    let _ = OrgId::parse(text);
    let _ = Scope::parse(text);
    let parts: Vec<&str> = text.split(' ').collect();
    if let Ok(scopes) = parse_scopes(&parts) {
        assert_eq!(scopes.len(), parts.len());
    }
});
