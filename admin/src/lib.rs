//! `tollgate-admin`: the admin REST API (`/admin/v1`) and the web dashboard.
//!
//! Admins register, inspect, rotate, disable and revoke integrations, read usage and
//! the audit trail, and manage admin and signing keys. Every change goes through the
//! engine (so through the integration's own actor) and is audited with the admin key
//! that made it.
//!
//! # Layout
//! - [`auth`]: admin keys, the bootstrap key, the [`auth::Principal`] extractor.
//! - [`integrations`]: integration lifecycle, rotation, usage, activity.
//! - [`audit`]: the global audit log, JSON Lines export, chain verification.
//! - [`keys`]: admin keys and token-signing keys.
//! - [`leaks`]: leaked-secret reports (HMAC-signed or with an admin key).
//! - [`orgs`]: organisation settings (default maximum secret age).
//! - [`webhooks`]: webhook endpoints and their deliveries.
//! - [`dashboard`]: the web dashboard (embedded page, script and session sign-in).
//! - [`error`]: [`error::ApiError`] and the JSON extractor.
//! - [`dto`]: response shapes and time formatting.

pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod dto;
pub mod error;
pub mod integrations;
pub mod keys;
pub mod leaks;
pub mod orgs;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use tollgate_engine::model::AdminKeyId;
use tollgate_engine::storage::audit::AuditEvent;
use tollgate_engine::{Engine, EngineError, EngineResult};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{BOOTSTRAP_KEY_ID, MIN_BOOTSTRAP_KEY_CHARS, VerifiedKeys, generate_key};

/// Largest JSON body the admin API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A future returned by [`SigningKeyAdmin`].
pub type KeyFuture<'a, T> = Pin<Box<dyn Future<Output = EngineResult<T>> + Send + 'a>>;

/// A published signing key, as listed to admins.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SigningKeyInfo {
    /// The JWT `kid`.
    pub kid: String,
    /// Whether it signs new tokens.
    pub is_current: bool,
    /// When it was retired (Unix ms).
    pub retired_at_ms: Option<u64>,
}

/// Token-signing keys, owned by the gateway; the admin API rotates and lists them.
pub trait SigningKeyAdmin: Send + Sync {
    /// Makes a new signing key; returns its kid.
    fn rotate(&self, now_ms: u64) -> KeyFuture<'_, String>;
    /// The keys still published.
    fn list(&self) -> Vec<SigningKeyInfo>;
}

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The engine.
    pub engine: Engine,
    pub(crate) signing: Arc<dyn SigningKeyAdmin>,
    pub(crate) verified: Arc<VerifiedKeys>,
    pub(crate) sessions: Arc<dashboard::Sessions>,
    pub(crate) leaks: Arc<leaks::LeakConfig>,
    generated_bootstrap_key: Option<String>,
    document: Document,
}

impl AdminState {
    /// Prepares the admin API. On a data dir with no admin key it creates the
    /// bootstrap key: `bootstrap_key` when given (16+ characters), else a generated
    /// one, available once from [`AdminState::generated_bootstrap_key`].
    pub async fn start(
        engine: Engine,
        signing: Arc<dyn SigningKeyAdmin>,
        bootstrap_key: Option<String>,
    ) -> EngineResult<Self> {
        let mut generated = None;
        if engine.storage().admin_keys()?.is_empty() {
            let (id, key) = match bootstrap_key {
                Some(key) => {
                    if key.chars().count() < MIN_BOOTSTRAP_KEY_CHARS {
                        return Err(EngineError::Invalid(tollgate_engine::model::ValidationError {
                            what: "TOLLGATE_ADMIN_KEY",
                            problem: format!("use at least {MIN_BOOTSTRAP_KEY_CHARS} characters"),
                        }));
                    }
                    let id = match auth::key_id_of(&key) {
                        Ok(id) => id,
                        Err(_) => AdminKeyId::parse(BOOTSTRAP_KEY_ID)?,
                    };
                    (id, key)
                }
                None => {
                    let id = AdminKeyId::generate();
                    let key = generate_key(&id);
                    generated = Some(key.clone());
                    (id, key)
                }
            };
            let event = AuditEvent {
                kind: "admin_key.created".into(),
                admin_key_id: Some(id.clone()),
                outcome: "success".into(),
                reason: Some("bootstrap key on first start".into()),
                ..AuditEvent::default()
            };
            auth::store_new_key(&engine, id, key, "bootstrap".into(), None, false, event).await?;
        }
        Ok(Self {
            engine,
            signing,
            verified: Arc::new(VerifiedKeys::default()),
            sessions: Arc::new(dashboard::Sessions::default()),
            leaks: Arc::new(leaks::LeakConfig::default()),
            generated_bootstrap_key: generated,
            document: Document(Arc::new(utoipa::openapi::OpenApi::default())),
        })
    }

    /// Accepts HMAC-signed leaked-secret reports with `report_key` (admin keys may
    /// always report) and acts on genuine ones by `policy`.
    pub fn with_leak_reports(mut self, report_key: Option<String>, policy: tollgate_engine::LeakPolicy) -> Self {
        self.leaks = Arc::new(leaks::LeakConfig::new(report_key, policy));
        self
    }

    /// The bootstrap key generated on this start, to print once; `None` otherwise.
    pub fn generated_bootstrap_key(&self) -> Option<String> {
        self.generated_bootstrap_key.clone()
    }
}

/// The OpenAPI document's frame; the paths come from the routers themselves.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "Integration lifecycle, rotation, quotas, usage, audit and keys. Authenticate with `Authorization: Bearer <admin key>`.",
    ),
    modifiers(&AdminKeyAuth),
    security(("admin_key" = [])),
    tags(
        (name = "integrations", description = "Register, inspect, change, rotate, disable and revoke integrations"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "keys", description = "Admin keys and token-signing keys"),
        (name = "leaks", description = "Reports of leaked secrets from secret scanners"),
        (name = "webhooks", description = "Signed event notifications and their deliveries"),
        (name = "organisations", description = "Defaults of an organisation's integrations"),
    )
)]
struct ApiDoc;

struct AdminKeyAuth;

impl Modify for AdminKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The admin routes and their OpenAPI 3.1 description, generated from the same
/// handler annotations (so the document cannot drift from what is mounted).
pub fn routes() -> (Router<AdminState>, utoipa::openapi::OpenApi) {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let (router, doc) = OpenApiRouter::with_openapi(doc)
        .merge(integrations::router())
        .merge(audit::router())
        .merge(keys::router())
        .merge(leaks::router())
        .merge(webhooks::router())
        .merge(orgs::router())
        .split_for_parts();
    let mut doc = doc;
    document_common_errors(&mut doc);
    link_created_ids(&mut doc, "/admin/v1/integrations", "integration");
    link_created_ids(&mut doc, "/admin/v1/webhooks", "webhook");
    (router, doc)
}

/// OpenAPI links from `POST <collection>` (201) to every operation on
/// `<collection>/{id}…`: the new resource's id is `$response.body#/<field>/id`. Clients
/// and stateful testers learn from them which answer feeds which call.
fn link_created_ids(doc: &mut utoipa::openapi::OpenApi, collection: &str, field: &str) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;
    let prefix = format!("{collection}/{{id}}");
    let mut targets = Vec::new();
    for (path, item) in &doc.paths.paths {
        if !path.starts_with(&prefix) {
            continue;
        }
        let pointer = path.replace('~', "~0").replace('/', "~1");
        for (method, operation) in [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("patch", &item.patch),
            ("delete", &item.delete),
        ] {
            if operation.is_some() {
                let name = format!("{method}{}", path[collection.len()..].replace(['/', '{', '}'], "_"));
                targets.push((name, format!("#/paths/{pointer}/{method}")));
            }
        }
    }
    let Some(create) = doc.paths.paths.get_mut(collection).and_then(|i| i.post.as_mut()) else {
        return;
    };
    if let Some(RefOr::T(created)) = create.responses.responses.get_mut("201") {
        for (name, operation_ref) in targets {
            let link = LinkBuilder::new()
                .operation_ref(operation_ref)
                .parameter("id", format!("$response.body#/{field}/id"))
                .build();
            created.links.insert(name, RefOr::T(link));
        }
    }
}

/// Every operation can also fail in the ways every route shares: a malformed query
/// or body (400), no key (401), a key without the right (403), a wrong value (422),
/// a store that cannot write (503); with a body also 413 and 415; with a path id
/// also 404. Added here once instead of on every handler.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let mut common = vec![
                ("400", "Malformed query or body"),
                ("401", "No or invalid admin key"),
                ("403", "The key may not do this"),
                ("422", "A value is not acceptable"),
                ("503", "Busy, or the data store cannot write; retry after Retry-After"),
            ];
            if operation.request_body.is_some() {
                common.extend([("413", "Body over 64 KiB"), ("415", "Not JSON")]);
            }
            if path.contains('{') {
                common.push(("404", "No such resource (or one the key may not see)"));
            }
            for (status, description) in common {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description).into());
            }
        }
    }
}

/// The OpenAPI document, kept for the `openapi.json` route.
#[derive(Clone)]
struct Document(Arc<utoipa::openapi::OpenApi>);

/// `GET /admin/v1/openapi.json`: like every route under `/admin/v1`, only with a key.
async fn openapi_json(
    axum::extract::State(state): axum::extract::State<AdminState>,
    _principal: auth::Principal,
) -> Json<utoipa::openapi::OpenApi> {
    Json(state.document.0.as_ref().clone())
}

/// The admin router: `/admin/v1/...`, `/admin/v1/openapi.json` and the dashboard
/// (`/`, its assets and `/dashboard/session`).
pub fn app(mut state: AdminState) -> Router {
    let (router, doc) = routes();
    state.document = Document(Arc::new(doc));
    router
        .route("/admin/v1/openapi.json", get(openapi_json))
        .merge(dashboard::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
