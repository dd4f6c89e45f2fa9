//! The `/v1` handlers, their request and response bodies, and the OpenAPI
//! document generated from them.

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use margin_answer::{Answer, AskSettings, RagMode};
use margin_core::config::SearchMode;
use margin_index::{DocumentRecord, SearchHit, MAX_K};
use margin_ingest::{read_documents_as, Chunker};
use margin_rag::sequence::SequenceDecoding;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::asks::{AskTask, Preview};
use crate::auth::Scope;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::jobs::{FileStatus, FileView, JobView, StagedFile};
use crate::AppState;

/// Most passages a question may be answered from.
const MAX_N_DOCS: usize = 50;
/// Most beams a question may ask for.
const MAX_BEAMS: usize = 16;
/// Most tokens an answer may ask for.
const MAX_NEW_TOKENS: usize = 512;
/// Characters of a passage shown as a citation's snippet.
const SNIPPET_CHARS: usize = 280;
/// Where uploads are kept, under the data directory; also their documents' source prefix.
pub const UPLOADS: &str = "uploads";

/// Retrieval modes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Cosine over the encoder's vectors.
    Dense,
    /// BM25 (tantivy).
    Bm25,
    /// Reciprocal rank fusion of both.
    Hybrid,
}

impl From<Mode> for SearchMode {
    fn from(m: Mode) -> SearchMode {
        match m {
            Mode::Dense => SearchMode::Dense,
            Mode::Bm25 => SearchMode::Bm25,
            Mode::Hybrid => SearchMode::Hybrid,
        }
    }
}

/// `POST /v1/search`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// What to look for.
    pub query: String,
    /// Passages to return (default: `retrieval.k`; at most 1000).
    pub k: Option<usize>,
    /// dense, bm25 or hybrid (default: `retrieval.mode`).
    pub mode: Option<Mode>,
}

/// A passage found.
#[derive(Debug, Serialize, ToSchema)]
pub struct Hit {
    /// Passage id (`doc_id#position`).
    pub passage_id: String,
    /// Document id.
    pub doc_id: String,
    /// Title.
    pub title: String,
    /// Where the document came from.
    pub source: String,
    /// The passage.
    pub text: String,
    /// Score in the search's mode.
    pub score: f64,
}

impl From<SearchHit> for Hit {
    fn from(h: SearchHit) -> Hit {
        Hit {
            passage_id: h.passage.id,
            doc_id: h.passage.doc_id,
            title: h.passage.title,
            source: h.passage.source,
            text: h.passage.text,
            score: h.score,
        }
    }
}

/// `POST /v1/search`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    /// Best first.
    pub hits: Vec<Hit>,
    /// Time spent searching, milliseconds.
    pub took_ms: f64,
}

/// RAG-Token or RAG-Sequence.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AskMode {
    /// Passages marginalised at every token.
    #[default]
    Token,
    /// Passages marginalised once per answer.
    Sequence,
}

/// RAG-Sequence decoding.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decoding {
    /// Every hypothesis scored against every passage.
    #[default]
    Thorough,
    /// Hypotheses scored only by the beams that found them.
    Fast,
}

/// `POST /v1/ask`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub question: String,
    /// token (default) or sequence.
    #[serde(default)]
    pub mode: AskMode,
    /// RAG-Sequence decoding: thorough (default) or fast.
    #[serde(default)]
    pub decoding: Decoding,
    /// Passages retrieved and marginalised over (default: `rag.n_docs`; at most 50).
    pub n_docs: Option<usize>,
    /// Beams, 1 for greedy (default: `rag.beams`; at most 16).
    pub beams: Option<usize>,
    /// Most tokens in the answer (default: `rag.max_new_tokens`; at most 512).
    pub max_new_tokens: Option<usize>,
    /// Retrieval mode (default: `retrieval.mode`).
    pub search_mode: Option<Mode>,
    /// Temperature of the document prior (default: `rag.prior_temperature`).
    pub prior_temperature: Option<f32>,
    /// Answer with Server-Sent Events: `token` events as tokens are chosen,
    /// then one `answer` event (or an `error` event).
    #[serde(default)]
    pub stream: bool,
}

/// A passage an answer cites.
#[derive(Debug, Serialize, ToSchema)]
pub struct CitationView {
    /// Passage id.
    pub passage_id: String,
    /// Document id.
    pub doc_id: String,
    /// Title.
    pub title: String,
    /// Where the document came from.
    pub source: String,
    /// The start of the passage.
    pub snippet: String,
    /// Retrieval score.
    pub score: f64,
    /// Document prior p(z|x).
    pub prior: f32,
    /// Posterior p(z|x,y) given the answer.
    pub posterior: f32,
}

/// Where answering spent its time, milliseconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct AskTimings {
    /// Retrieval.
    pub retrieve: f64,
    /// Waiting for the generator.
    pub queue: f64,
    /// Contexts through the generator (the whole batch).
    pub prefill: f64,
    /// Choosing tokens (the whole batch).
    pub decode: f64,
    /// RAG-Sequence thorough rescoring.
    pub rescore: f64,
    /// Posteriors (RAG-Token).
    pub attribute: f64,
    /// The whole request.
    pub total: f64,
}

/// `POST /v1/ask`'s answer (and the stream's `answer` event).
#[derive(Debug, Serialize, ToSchema)]
pub struct AskResponse {
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// `token`, `sequence (thorough)` or `sequence (fast)`.
    pub mode: String,
    /// Generator.
    pub model: String,
    /// Retrieved passages by posterior, highest first.
    pub citations: Vec<CitationView>,
    /// Where the time went.
    pub timings_ms: AskTimings,
    /// Questions decoded in the same generator batch.
    pub batch_size: usize,
}

/// A streamed preview of the answer (`token` event).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenEvent {
    /// Text added since the last event ("" when `revised`).
    pub delta: String,
    /// The leading hypothesis so far.
    pub partial: String,
    /// Whether the leading hypothesis was replaced rather than extended
    /// (beam search and RAG-Sequence may change their minds).
    pub revised: bool,
}

/// An indexed document.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentView {
    /// Document id.
    pub doc_id: String,
    /// Title.
    pub title: String,
    /// Where it came from (`uploads/NAME` for uploads).
    pub source: String,
    /// Passages stored.
    pub passages: usize,
    /// When it was indexed, seconds since the Unix epoch.
    pub indexed_at: u64,
}

impl From<DocumentRecord> for DocumentView {
    fn from(r: DocumentRecord) -> DocumentView {
        DocumentView {
            doc_id: r.doc_id,
            title: r.title,
            source: r.source,
            passages: r.passages,
            indexed_at: r.indexed_at,
        }
    }
}

/// A page of documents.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentPage {
    /// Documents on this page, by source.
    pub documents: Vec<DocumentView>,
    /// Documents in all.
    pub total: usize,
    /// First document's position.
    pub offset: usize,
    /// Most documents per page.
    pub limit: usize,
}

/// Paging of `GET /v1/documents`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Documents to skip (default 0).
    pub offset: Option<usize>,
    /// Documents per page (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// `POST /v1/documents`' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadResponse {
    /// The ingestion job (`GET /v1/jobs/{id}` follows it).
    pub job: JobView,
}

/// The multipart form of `POST /v1/documents`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// One or more files (txt, md, html, pdf, jsonl, tsv), each a `files` part with a file name.
    #[schema(value_type = Vec<String>, format = Binary)]
    files: Vec<Vec<u8>>,
}

/// `GET /readyz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Whether the index and generator are loaded.
    pub ready: bool,
    /// Generator, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Documents indexed, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<usize>,
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "margin", description = "Retrieval-augmented generation: upload documents, search them, ask questions answered with RAG-Token or RAG-Sequence."),
    paths(upload, list_documents, get_document, delete_document, get_job, search, ask, healthz, readyz, metrics),
    components(schemas(ErrorBody, TokenEvent)),
    modifiers(&BearerKeys),
    tags((name = "documents"), (name = "query"), (name = "operations"))
)]
pub struct ApiDoc;

struct BearerKeys;

impl utoipa::Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Upload documents.
///
/// Each file is read and split at once (its errors are reported per file and
/// do not fail the others); the readable ones are then indexed by a job.
#[utoipa::path(post, path = "/v1/documents", tag = "documents",
    request_body(content = inline(UploadForm), content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Accepted; the job indexes the readable files", body = UploadResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "No file could be read", body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<UploadResponse>)> {
    state.keys.check(&headers, Scope::Write)?;
    let services = state.services()?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            e.status(),
            "bad_request",
            format!(
                "{}; send multipart/form-data with `files` parts",
                e.body_text()
            ),
        )
    })?;
    let mut staging = Staging {
        dir: staging_dir(&state.config.data_dir).join(uuid::Uuid::new_v4().simple().to_string()),
        handed_over: false,
    };
    let (mut files, staged) = receive(&mut multipart, &staging.dir).await?;
    if files.is_empty() {
        return Err(ApiError::bad_request(
            "no files: send multipart/form-data with one or more `files` parts, each with a file name",
        ));
    }
    // Reading and splitting (PDF text extraction above all) is CPU work.
    let chunker = Chunker::new(state.config.chunking)?;
    let uploads = state.config.data_dir.join(UPLOADS);
    let (files, staged) = tokio::task::spawn_blocking(move || {
        let mut ready = Vec::new();
        // A document id belongs to one file of a request (corpus records carry their own ids).
        let mut seen: HashSet<String> = HashSet::new();
        for (file, staged) in staged {
            let view: &mut FileView = &mut files[file];
            let named = FsPath::new(UPLOADS).join(&view.name);
            let read = read_documents_as(&staged, &named)
                .map_err(|e| e.to_string())
                .and_then(
                    |documents| match documents.iter().find(|d| seen.contains(&d.id)) {
                        Some(d) => Err(format!(
                            "{}: document id `{}` is also in another file of this upload",
                            named.display(),
                            d.id
                        )),
                        None => Ok(documents),
                    },
                );
            match read {
                Ok(documents) => {
                    seen.extend(documents.iter().map(|d| d.id.clone()));
                    let passages = chunker.chunk_all(&documents);
                    view.doc_ids = documents.into_iter().map(|d| d.id).collect();
                    view.passages = passages.len();
                    ready.push(StagedFile {
                        file,
                        kept: uploads.join(&view.name),
                        staged,
                        passages,
                    });
                }
                Err(e) => {
                    view.status = FileStatus::Failed;
                    view.error = Some(e);
                }
            }
        }
        (files, ready)
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading uploads: {e}")))?;
    for f in &files {
        if f.status == FileStatus::Failed {
            state
                .metrics
                .ingest_files
                .get_or_create(&crate::metrics::OutcomeLabels { outcome: "failed" })
                .inc();
        }
    }
    if staged.is_empty() {
        let reasons: Vec<String> = files.iter().filter_map(|f| f.error.clone()).collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            format!("no file could be read: {}", reasons.join("; ")),
        ));
    }
    let job = services.jobs.submit(files, staged, staging.dir.clone())?;
    staging.handed_over = true;
    Ok((StatusCode::ACCEPTED, Json(UploadResponse { job })))
}

/// Where uploads wait to be indexed.
pub fn staging_dir(data_dir: &FsPath) -> PathBuf {
    data_dir.join(UPLOADS).join(".staging")
}

/// An upload's staging folder, removed when the request ends (answered,
/// failed, timed out or dropped by its client) unless a job took it over.
struct Staging {
    dir: PathBuf,
    handed_over: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.handed_over {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Saves every file part under `staging`; returns the files' views and where each was staged.
async fn receive(
    multipart: &mut Multipart,
    staging: &FsPath,
) -> ApiResult<(Vec<FileView>, Vec<(usize, PathBuf)>)> {
    let mut files = Vec::new();
    let mut staged = Vec::new();
    let mut names = HashSet::new();
    while let Some(mut field) = multipart.next_field().await? {
        let Some(given) = field.file_name().map(str::to_string) else {
            // Form fields that are not files carry nothing margin reads.
            continue;
        };
        let file = files.len();
        let name = match file_name(&given) {
            Ok(name) if !names.insert(name.clone()) => Err((
                name,
                "the same file name is uploaded twice in one request".to_string(),
            )),
            other => other,
        };
        match name {
            Ok(name) => {
                // Written as it arrives: an upload is never held in memory whole.
                let dir = staging.join(file.to_string());
                let path = dir.join(&name);
                let io = |e: std::io::Error| ApiError::internal(format!("{}: {e}", path.display()));
                tokio::fs::create_dir_all(&dir).await.map_err(io)?;
                let mut out = tokio::fs::File::create(&path).await.map_err(io)?;
                while let Some(chunk) = field.chunk().await? {
                    out.write_all(&chunk).await.map_err(io)?;
                }
                out.flush().await.map_err(io)?;
                files.push(queued(name));
                staged.push((file, path));
            }
            Err((name, error)) => {
                while field.chunk().await?.is_some() {}
                let mut view = queued(name);
                view.status = FileStatus::Failed;
                view.error = Some(format!("{}: {error}", view.name));
                files.push(view);
            }
        }
    }
    Ok((files, staged))
}

fn queued(name: String) -> FileView {
    FileView {
        name,
        status: FileStatus::Queued,
        doc_ids: Vec::new(),
        passages: 0,
        error: None,
    }
}

/// The name an upload is kept under: its last path component, when that is
/// a plain file name.
fn file_name(given: &str) -> Result<String, (String, String)> {
    let name = given
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if name.is_empty() || name == "." || name == ".." || name.starts_with('.') {
        return Err((given.to_string(), "not a usable file name".into()));
    }
    if name.chars().any(char::is_control) || name.len() > 255 {
        return Err((
            given.chars().filter(|c| !c.is_control()).collect(),
            "not a usable file name".into(),
        ));
    }
    Ok(name)
}

/// List indexed documents.
#[utoipa::path(get, path = "/v1/documents", tag = "documents", params(PageQuery),
    responses((status = 200, body = DocumentPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("api_key" = [])))]
pub async fn list_documents(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    page: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<DocumentPage>> {
    state.keys.check(&headers, Scope::Read)?;
    let Query(page) = page.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit: must be 1 to 1000"));
    }
    let offset = page.offset.unwrap_or(0);
    let mut documents = state.services()?.index.documents();
    documents.sort_by(|a, b| {
        a.source
            .cmp(&b.source)
            .then_with(|| a.doc_id.cmp(&b.doc_id))
    });
    let total = documents.len();
    Ok(Json(DocumentPage {
        documents: documents
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(DocumentView::from)
            .collect(),
        total,
        offset,
        limit,
    }))
}

/// One indexed document.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents", params(("id" = String, Path, description = "Document id")),
    responses((status = 200, body = DocumentView), (status = 404, body = ErrorBody)),
    security((), ("api_key" = [])))]
pub async fn get_document(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<DocumentView>> {
    state.keys.check(&headers, Scope::Read)?;
    let Path(id) = id?;
    Ok(Json(state.services()?.index.document(&id)?.into()))
}

/// Delete a document from every store (and the uploaded file it came from).
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "documents", params(("id" = String, Path, description = "Document id")),
    responses((status = 200, description = "Deleted", body = DocumentView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_document(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<DocumentView>> {
    state.keys.check(&headers, Scope::Write)?;
    let Path(id) = id?;
    let services = state.services()?;
    let (index, uploads_lock) = (services.index.clone(), services.jobs.uploads.clone());
    let uploads = state.config.data_dir.join(UPLOADS);
    let removed = tokio::task::spawn_blocking(move || {
        let removed = index.remove(&id)?;
        // A single-document upload's file goes with its document, unless an
        // upload of the same name indexed it again meanwhile.
        if let Some(name) = removed.source.strip_prefix(&format!("{UPLOADS}/")) {
            let _uploads = uploads_lock.lock().unwrap_or_else(|p| p.into_inner());
            if file_name(name).as_deref() == Ok(name) && index.document(&id).is_err() {
                let _ = std::fs::remove_file(uploads.join(name));
            }
        }
        state.metrics.documents.set(index.document_count() as i64);
        Ok::<_, ApiError>(removed)
    })
    .await
    .map_err(|e| ApiError::internal(format!("deleting: {e}")))??;
    Ok(Json(removed.into()))
}

/// An ingestion job's progress and per-file errors.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "documents", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)),
    security((), ("api_key" = [])))]
pub async fn get_job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<JobView>> {
    state.keys.check(&headers, Scope::Read)?;
    let Path(id) = id?;
    state.services()?.jobs.get(&id).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no job `{id}` (jobs are kept in memory until the server restarts)"
        ))
    })
}

/// Search the index.
#[utoipa::path(post, path = "/v1/search", tag = "query", request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)),
    security((), ("api_key" = [])))]
pub async fn search(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: Result<Json<SearchRequest>, JsonRejection>,
) -> ApiResult<Json<SearchResponse>> {
    state.keys.check(&headers, Scope::Read)?;
    let Json(request) = request?;
    let k = request.k.unwrap_or(state.config.retrieval.k);
    if k == 0 || k > MAX_K {
        return Err(ApiError::bad_request(format!("k: must be 1 to {MAX_K}")));
    }
    let mode = request
        .mode
        .map_or(state.config.retrieval.mode, SearchMode::from);
    let began = Instant::now();
    let hits = retrieve(&state, request.query, k, mode).await?;
    Ok(Json(SearchResponse {
        hits: hits.into_iter().map(Hit::from).collect(),
        took_ms: ms(began.elapsed()),
    }))
}

/// Runs one search on the blocking pool, 503 when too many are in flight.
async fn retrieve(
    state: &AppState,
    query: String,
    k: usize,
    mode: SearchMode,
) -> ApiResult<Vec<SearchHit>> {
    if query.trim().is_empty() {
        return Err(ApiError::bad_request("query: must not be empty"));
    }
    let index = state.services()?.index.clone();
    let permit = state
        .search_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many searches in flight; try again shortly",
            )
        })?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        index.search(&query, k, mode)
    })
    .await
    .map_err(|e| ApiError::internal(format!("searching: {e}")))?
    .map_err(ApiError::from)
}

/// Answer a question from the index.
///
/// With `stream: true` the answer comes as Server-Sent Events: `token`
/// events ([`TokenEvent`]) while decoding, then one `answer` event
/// ([`AskResponse`]) or one `error` event ([`ErrorBody`]).
#[utoipa::path(post, path = "/v1/ask", tag = "query", request_body = AskRequest,
    responses(
        (status = 200, description = "The answer (JSON), or with `stream: true` a text/event-stream", body = AskResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security((), ("api_key" = [])))]
pub async fn ask(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: Result<Json<AskRequest>, JsonRejection>,
) -> ApiResult<Response> {
    state.keys.check(&headers, Scope::Read)?;
    let began = Instant::now();
    let Json(request) = request?;
    let rag = &state.config.rag;
    let n_docs = request.n_docs.unwrap_or(rag.n_docs);
    let settings = AskSettings {
        mode: match (request.mode, request.decoding) {
            (AskMode::Token, _) => RagMode::Token,
            (AskMode::Sequence, Decoding::Thorough) => {
                RagMode::Sequence(SequenceDecoding::Thorough)
            }
            (AskMode::Sequence, Decoding::Fast) => RagMode::Sequence(SequenceDecoding::Fast),
        },
        beams: request.beams.unwrap_or(rag.beams),
        max_new_tokens: request.max_new_tokens.unwrap_or(rag.max_new_tokens),
        prior_temperature: request.prior_temperature.unwrap_or(rag.prior_temperature),
    };
    for (what, value, most) in [
        ("n_docs", n_docs, MAX_N_DOCS),
        ("beams", settings.beams, MAX_BEAMS),
        ("max_new_tokens", settings.max_new_tokens, MAX_NEW_TOKENS),
    ] {
        if value == 0 || value > most {
            return Err(ApiError::bad_request(format!(
                "{what}: must be 1 to {most}"
            )));
        }
    }
    settings.check()?;
    if request.question.trim().is_empty() {
        return Err(ApiError::bad_request("question: must not be empty"));
    }
    let mode = request
        .search_mode
        .map_or(state.config.retrieval.mode, SearchMode::from);
    let hits = retrieve(&state, request.question.clone(), n_docs, mode).await?;
    let retrieved = began.elapsed();
    state.metrics.stage("retrieve", retrieved);
    if hits.is_empty() {
        return Err(ApiError::bad_request(
            "no passages found for the question: is anything indexed?",
        ));
    }
    let services = state.services()?;
    let (reply, answered) = oneshot::channel();
    let (previews, preview_events) = if request.stream {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    services.asks.submit(AskTask {
        question: request.question.clone(),
        hits,
        settings,
        previews,
        reply,
    })?;
    let finish = {
        let model = services.model.clone();
        let question = request.question.clone();
        move |answer: Answer, queued: Duration| AskResponse {
            question,
            answer: answer.answer,
            mode: settings.mode_name(),
            model,
            batch_size: answer.timings.batch,
            timings_ms: AskTimings {
                retrieve: ms(retrieved),
                queue: ms(queued),
                prefill: ms(answer.timings.prefill),
                decode: ms(answer.timings.decode),
                rescore: ms(answer.timings.rescore),
                attribute: ms(answer.timings.attribute),
                total: ms(began.elapsed()),
            },
            citations: answer
                .citations
                .into_iter()
                .map(|c| CitationView {
                    snippet: snippet(&c.text),
                    passage_id: c.passage_id,
                    doc_id: c.doc_id,
                    title: c.title,
                    source: c.source,
                    score: c.score,
                    prior: c.prior,
                    posterior: c.posterior,
                })
                .collect(),
        }
    };
    match preview_events {
        None => {
            let (answer, queued) = answered
                .await
                .map_err(|_| ApiError::internal("the generator dropped the question"))??;
            Ok(Json(finish(answer, queued)).into_response())
        }
        Some(events) => {
            let deadline = tokio::time::Instant::from_std(began)
                + Duration::from_secs(state.config.server.request_timeout_secs);
            Ok(Sse::new(event_stream(events, answered, finish, deadline))
                .keep_alive(KeepAlive::default())
                .into_response())
        }
    }
}

/// The SSE events of one streamed answer: previews, then the answer or an
/// error (a `timeout` error once `deadline` passes; the stream then ends, and
/// the generator drops the question unless it has started on it).
fn event_stream(
    previews: mpsc::UnboundedReceiver<Preview>,
    answered: oneshot::Receiver<crate::asks::Answered>,
    finish: impl FnOnce(Answer, Duration) -> AskResponse + Send + 'static,
    deadline: tokio::time::Instant,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    enum Phase<F> {
        Previews(
            mpsc::UnboundedReceiver<Preview>,
            oneshot::Receiver<crate::asks::Answered>,
            F,
        ),
        Done,
    }
    stream::unfold(
        Phase::Previews(previews, answered, finish),
        move |phase| async move {
            let Phase::Previews(mut previews, answered, finish) = phase else {
                return None;
            };
            // The generator drops the preview sender with the question, after replying.
            let Ok(preview) = tokio::time::timeout_at(deadline, previews.recv()).await else {
                return Some((Ok(timed_out()), Phase::Done));
            };
            if let Some(p) = preview {
                let event = json_event(
                    "token",
                    &TokenEvent {
                        delta: p.delta,
                        partial: p.partial,
                        revised: p.revised,
                    },
                );
                return Some((Ok(event), Phase::Previews(previews, answered, finish)));
            }
            let Ok(answered) = tokio::time::timeout_at(deadline, answered).await else {
                return Some((Ok(timed_out()), Phase::Done));
            };
            let event = match answered {
                Ok(Ok((answer, queued))) => json_event("answer", &finish(answer, queued)),
                Ok(Err(e)) => json_event("error", &error_body(e)),
                Err(_) => json_event(
                    "error",
                    &error_body(ApiError::internal("the generator dropped the question")),
                ),
            };
            Some((Ok(event), Phase::Done))
        },
    )
}

/// The `error` event of a stream past its deadline.
fn timed_out() -> Event {
    json_event(
        "error",
        &error_body(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "no answer within server.request_timeout_secs",
        )),
    )
}

fn error_body(e: ApiError) -> ErrorBody {
    ErrorBody {
        error: crate::error::ErrorDetail {
            code: e.code.to_string(),
            message: e.message,
        },
    }
}

fn json_event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).expect("API bodies always serialize"))
}

/// The start of a passage, cut at a word boundary.
fn snippet(text: &str) -> String {
    if text.chars().count() <= SNIPPET_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    let end = cut.rfind(' ').unwrap_or(cut.len());
    format!("{}…", cut[..end].trim_end())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the index is open and the generator loaded.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, description = "Still loading", body = Readiness)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    match state.services.get() {
        Some(s) => (
            StatusCode::OK,
            Json(Readiness {
                ready: true,
                model: Some(s.model.clone()),
                documents: Some(s.index.document_count()),
            }),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                model: None,
                documents: None,
            }),
        ),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_kept_to_their_last_component() {
        assert_eq!(file_name("notes.md").unwrap(), "notes.md");
        assert_eq!(file_name("C:\\docs\\a b.txt").unwrap(), "a b.txt");
        assert_eq!(file_name("../../etc/passwd").unwrap(), "passwd");
        for bad in ["", "..", "dir/", ".hidden", "a\u{0}b.txt"] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn snippets_cut_at_words() {
        assert_eq!(snippet("short"), "short");
        let long = "word ".repeat(100);
        let s = snippet(&long);
        assert!(
            s.ends_with("word…") && s.chars().count() <= SNIPPET_CHARS + 1,
            "{s}"
        );
    }

    #[test]
    fn the_openapi_document_names_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for path in [
            "/v1/documents",
            "/v1/documents/{id}",
            "/v1/jobs/{id}",
            "/v1/search",
            "/v1/ask",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        assert!(doc["components"]["schemas"]["AskRequest"]["properties"]["stream"].is_object());
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    }
}
