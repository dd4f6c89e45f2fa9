//! margin's REST API and web UI on axum.
//!
//! [`AppState`] holds the configuration, API keys and metrics from the
//! start; the index and generator arrive later through [`AppState::start`]
//! (loading models can take minutes), and until then `/readyz` and every
//! `/v1` route answer 503. Uploads are read and split in the request, then
//! indexed by one indexing thread ([`jobs`]); questions are retrieved in the
//! request, then answered by one generator thread that batches the questions
//! waiting with the same settings ([`asks`]). Errors are JSON with the status
//! [`error::ApiError`] maps them to, in one place.

#![warn(missing_docs)]

pub mod api;
pub mod asks;
pub mod auth;
pub mod error;
pub mod jobs;
pub mod metrics;
mod web;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use margin_answer::Answerer;
use margin_core::Config;
use margin_index::Index;
use tokio::sync::Semaphore;
use utoipa::OpenApi;

use crate::asks::AskQueue;
use crate::auth::Keys;
use crate::error::{ApiError, ApiResult};
use crate::jobs::Jobs;
use crate::metrics::{Metrics, RequestLabels, RouteLabels};

/// What the server runs on once loaded.
pub struct Services {
    /// The index (shared by searches, uploads and deletes).
    pub index: Arc<Index>,
    /// The generator's queue.
    pub asks: AskQueue,
    /// Upload jobs.
    pub jobs: Jobs,
    /// Generator name.
    pub model: String,
}

/// Everything a request can reach.
pub struct AppState {
    /// The effective configuration.
    pub config: Config,
    /// API keys.
    pub keys: Keys,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    services: OnceLock<Services>,
    search_slots: Arc<Semaphore>,
}

impl AppState {
    /// State for `config` with `keys`; not ready until [`AppState::start`].
    pub fn new(config: Config, keys: Keys) -> Arc<AppState> {
        Arc::new(AppState {
            search_slots: Arc::new(Semaphore::new(config.server.search_queue)),
            config,
            keys,
            metrics: Arc::new(Metrics::default()),
            services: OnceLock::new(),
        })
    }

    /// Starts the indexing and generator threads over `index` and
    /// `answerer`; from now on the server is ready.
    pub fn start(&self, index: Index, answerer: Answerer) {
        // Uploads a previous run staged but never indexed (it stopped first).
        let staging = api::staging_dir(&self.config.data_dir);
        if staging.exists() {
            tracing::info!(folder = %staging.display(), "removing uploads a previous run left unindexed");
            let _ = std::fs::remove_dir_all(&staging);
        }
        let index = Arc::new(index);
        self.metrics.documents.set(index.document_count() as i64);
        let server = &self.config.server;
        let model = answerer.model_name().to_string();
        let services = Services {
            jobs: Jobs::start(index.clone(), server.job_queue, self.metrics.clone()),
            asks: AskQueue::start(
                answerer,
                server.ask_queue,
                server.ask_batch,
                self.metrics.clone(),
            ),
            index,
            model,
        };
        if self.services.set(services).is_err() {
            tracing::warn!("the server was started twice; the second start is ignored");
        }
    }

    /// The loaded services, or 503 while loading.
    pub fn services(&self) -> ApiResult<&Services> {
        self.services.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "the server is still loading its index and models; see /readyz",
            )
        })
    }
}

/// The whole API and UI.
pub fn router(state: Arc<AppState>) -> Router {
    let upload_limit = usize::try_from(state.config.server.max_upload_mb.saturating_mul(1 << 20))
        .unwrap_or(usize::MAX);
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/app.css", get(web::style))
        .route(
            "/v1/documents",
            post(api::upload)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(api::list_documents),
        )
        .route(
            "/v1/documents/{id}",
            get(api::get_document).delete(api::delete_document),
        )
        .route("/v1/jobs/{id}", get(api::get_job))
        .route("/v1/search", post(api::search))
        .route("/v1/ask", post(api::ask))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    Json(api::ApiDoc::openapi())
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}",
        request.method(),
        request.uri().path()
    ))
}

/// Times every request out after `server.request_timeout_secs` and counts it.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // Labels come from a fixed set, whatever a client sends.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "DELETE" | "HEAD" | "PUT" | "PATCH" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let began = Instant::now();
    let limit = Duration::from_secs(state.config.server.request_timeout_secs);
    let response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "no answer within {} s (server.request_timeout_secs)",
                limit.as_secs()
            ),
        )
        .into_response(),
    };
    let took = began.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(took.as_secs_f64());
    tracing::debug!(%method, %route, status, ms = took.as_millis() as u64, "request");
    response
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then
/// lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
