//! Upload jobs: files are read and split when they arrive (so the response
//! can name their documents and per-file errors), then embedded and stored by
//! one indexing thread, a job at a time, with progress kept for `GET
//! /v1/jobs/{id}`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use margin_core::Passage;
use margin_index::{Index, IndexEvent};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::metrics::{Metrics, OutcomeLabels};

/// Jobs remembered for `GET /v1/jobs/{id}` (the oldest finished ones are forgotten first).
const JOBS_KEPT: usize = 1000;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for the indexing thread.
    Queued,
    /// Being embedded and stored.
    Running,
    /// Finished; every file is indexed or failed.
    Done,
    /// Indexing stopped with an error (documents committed before it stay).
    Failed,
}

/// Where a file of a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Read and split; waiting to be indexed.
    Queued,
    /// Its passages are being embedded and stored.
    Indexing,
    /// Searchable.
    Indexed,
    /// Not indexed; `error` says why.
    Failed,
}

/// One uploaded file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileView {
    /// File name as uploaded.
    pub name: String,
    /// Where the file is.
    pub status: FileStatus,
    /// Documents read from it.
    pub doc_ids: Vec<String>,
    /// Passages cut from them.
    pub passages: usize,
    /// Why it failed, naming the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An ingestion job and its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// When it was made, seconds since the Unix epoch.
    pub created_at: u64,
    /// The job's files.
    pub files: Vec<FileView>,
    /// Passages to embed (known once indexing starts; unchanged documents are skipped).
    pub passages_total: usize,
    /// Passages embedded so far.
    pub passages_done: usize,
    /// Why the job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A file read and split, waiting to be indexed.
pub struct StagedFile {
    /// Index of the file in the job's list.
    pub file: usize,
    /// Where the upload's bytes are kept meanwhile.
    pub staged: PathBuf,
    /// Where they are kept once indexed.
    pub kept: PathBuf,
    /// Its passages.
    pub passages: Vec<Passage>,
}

struct Task {
    id: String,
    files: Vec<StagedFile>,
    staging: PathBuf,
}

/// The job table and the indexing thread's queue.
pub struct Jobs {
    table: Arc<Mutex<Table>>,
    queue: SyncSender<Task>,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<String, JobView>,
    order: VecDeque<String>,
}

impl Table {
    fn update(&mut self, id: &str, f: impl FnOnce(&mut JobView)) {
        if let Some(job) = self.jobs.get_mut(id) {
            f(job);
        }
    }
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jobs {
    /// Starts the indexing thread over `index`, with room for `capacity` waiting jobs.
    pub fn start(index: Arc<Index>, capacity: usize, metrics: Arc<Metrics>) -> Jobs {
        let (queue, tasks) = sync_channel::<Task>(capacity);
        let table = Arc::new(Mutex::new(Table::default()));
        let worker_table = table.clone();
        std::thread::Builder::new()
            .name("margin-indexer".into())
            .spawn(move || {
                for task in tasks {
                    run(&index, &worker_table, &metrics, task);
                }
            })
            .expect("starting the indexing thread");
        Jobs { table, queue }
    }

    /// Records a job of `files` (some already failed) and queues its staged
    /// files; answers 429 when the queue is full (nothing is recorded then).
    pub fn submit(
        &self,
        files: Vec<FileView>,
        staged: Vec<StagedFile>,
        staging: PathBuf,
    ) -> Result<JobView, ApiError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let nothing_to_do = staged.is_empty();
        let job = JobView {
            id: id.clone(),
            status: if nothing_to_do {
                JobStatus::Done
            } else {
                JobStatus::Queued
            },
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            files,
            passages_total: 0,
            passages_done: 0,
            error: None,
        };
        let mut table = lock(&self.table);
        if !nothing_to_do {
            let task = Task {
                id: id.clone(),
                files: staged,
                staging,
            };
            if let Err(e) = self.queue.try_send(task) {
                let task = match e {
                    TrySendError::Full(t) | TrySendError::Disconnected(t) => t,
                };
                let _ = std::fs::remove_dir_all(&task.staging);
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "queue_full",
                    "too many uploads are waiting to be indexed; try again shortly",
                ));
            }
        }
        table.jobs.insert(id.clone(), job.clone());
        table.order.push_back(id);
        while table.order.len() > JOBS_KEPT {
            let Some(oldest) = table.order.pop_front() else {
                break;
            };
            table.jobs.remove(&oldest);
        }
        Ok(job)
    }

    /// The job `id`.
    pub fn get(&self, id: &str) -> Option<JobView> {
        lock(&self.table).jobs.get(id).cloned()
    }
}

/// Indexes one job's files, keeping its progress in the table.
fn run(index: &Index, table: &Mutex<Table>, metrics: &Metrics, task: Task) {
    let id = task.id.as_str();
    // Documents of each file not yet committed: a file is indexed once none are left.
    let mut waiting: HashMap<usize, HashSet<String>> = task
        .files
        .iter()
        .map(|f| {
            (
                f.file,
                f.passages.iter().map(|p| p.doc_id.clone()).collect(),
            )
        })
        .collect();
    lock(table).update(id, |job| {
        job.status = JobStatus::Running;
        for f in &task.files {
            job.files[f.file].status = FileStatus::Indexing;
        }
    });
    let passages: Vec<Passage> = task.files.iter().flat_map(|f| f.passages.clone()).collect();
    let result = index.index(passages, &mut |event| match event {
        IndexEvent::Planned { passages, .. } => {
            lock(table).update(id, |job| job.passages_total = passages)
        }
        IndexEvent::Embedded { passages } => {
            metrics.ingest_passages.inc_by(passages as u64);
            lock(table).update(id, |job| job.passages_done += passages)
        }
        IndexEvent::Committed { documents } => {
            let mut table = lock(table);
            for (file, docs) in waiting.iter_mut() {
                let before = docs.len();
                docs.retain(|d| !documents.iter().any(|r| &r.doc_id == d));
                if docs.is_empty() && before > 0 {
                    table.update(id, |job| job.files[*file].status = FileStatus::Indexed);
                }
            }
        }
    });
    match result {
        Ok(summary) => {
            for f in &task.files {
                if let Some(parent) = f.kept.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                if let Err(e) = std::fs::rename(&f.staged, &f.kept) {
                    tracing::warn!(file = %f.kept.display(), error = %e, "could not keep the uploaded file");
                }
            }
            metrics
                .ingest_files
                .get_or_create(&OutcomeLabels { outcome: "indexed" })
                .inc_by(task.files.len() as u64);
            metrics.documents.set(index.documents().len() as i64);
            tracing::info!(
                job = id,
                documents = summary.documents,
                passages = summary.passages,
                "upload indexed"
            );
            lock(table).update(id, |job| {
                job.status = JobStatus::Done;
                for f in &task.files {
                    job.files[f.file].status = FileStatus::Indexed;
                }
            });
        }
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(job = id, error = %message, "indexing an upload failed");
            metrics
                .ingest_files
                .get_or_create(&OutcomeLabels { outcome: "failed" })
                .inc_by(task.files.len() as u64);
            lock(table).update(id, |job| {
                job.status = JobStatus::Failed;
                // Files whose documents were all committed before the failure stay indexed.
                for (file, docs) in &waiting {
                    if !docs.is_empty() {
                        job.files[*file].status = FileStatus::Failed;
                        job.files[*file].error = Some(message.clone());
                    }
                }
                job.error = Some(message);
            });
        }
    }
    let _ = std::fs::remove_dir_all(&task.staging);
}
