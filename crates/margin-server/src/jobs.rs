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
    /// Held while a kept upload file is moved in or deleted, each side
    /// checking the index first, so a file and its document agree.
    pub uploads: Arc<Mutex<()>>,
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
        let uploads = Arc::new(Mutex::new(()));
        let (worker_table, worker_uploads) = (table.clone(), uploads.clone());
        std::thread::Builder::new()
            .name("margin-indexer".into())
            .spawn(move || {
                for task in tasks {
                    let (id, staging) = (task.id.clone(), task.staging.clone());
                    let outcome = crate::error::guarded("indexing an upload", || {
                        run(&index, &worker_table, &worker_uploads, &metrics, task);
                        Ok(())
                    });
                    if let Err(e) = outcome {
                        lock(&worker_table).update(&id, |job| fail(job, &e.message, |_| true));
                        let _ = std::fs::remove_dir_all(&staging);
                    }
                }
            })
            .expect("starting the indexing thread");
        Jobs {
            table,
            queue,
            uploads,
        }
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
            // The table stays locked until the job is in it, so the indexing
            // thread always finds the job it is given.
            if let Err(e) = self.queue.try_send(task) {
                let (task, error) = match e {
                    TrySendError::Full(t) => (
                        t,
                        ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "queue_full",
                            "too many uploads are waiting to be indexed; try again shortly",
                        ),
                    ),
                    TrySendError::Disconnected(t) => (
                        t,
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "the indexing thread has stopped",
                        ),
                    ),
                };
                let _ = std::fs::remove_dir_all(&task.staging);
                return Err(error);
            }
        }
        table.jobs.insert(id.clone(), job.clone());
        table.order.push_back(id);
        // Forget the oldest finished jobs beyond the limit.
        while table.order.len() > JOBS_KEPT {
            let jobs = &table.jobs;
            let Some(at) = table.order.iter().position(|id| {
                jobs.get(id)
                    .is_none_or(|j| matches!(j.status, JobStatus::Done | JobStatus::Failed))
            }) else {
                break;
            };
            if let Some(old) = table.order.remove(at) {
                table.jobs.remove(&old);
            }
        }
        Ok(job)
    }

    /// The job `id`.
    pub fn get(&self, id: &str) -> Option<JobView> {
        lock(&self.table).jobs.get(id).cloned()
    }
}

/// Marks `job` failed with `message`, and those of its files `unfinished` says.
fn fail(job: &mut JobView, message: &str, unfinished: impl Fn(usize) -> bool) {
    job.status = JobStatus::Failed;
    for (i, file) in job.files.iter_mut().enumerate() {
        if file.status != FileStatus::Failed && unfinished(i) {
            file.status = FileStatus::Failed;
            file.error = Some(message.to_string());
        }
    }
    job.error = Some(message.to_string());
}

/// Indexes one job's files, keeping its progress in the table, then keeps
/// each indexed file under `uploads/`.
fn run(index: &Index, table: &Mutex<Table>, uploads: &Mutex<()>, metrics: &Metrics, task: Task) {
    let id = task.id.as_str();
    // Which file each document came from, and how many of each file's
    // documents are not committed yet: a file is indexed when none are left.
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut waiting: HashMap<usize, usize> = HashMap::new();
    for f in &task.files {
        let docs: HashSet<&str> = f.passages.iter().map(|p| p.doc_id.as_str()).collect();
        waiting.insert(f.file, docs.len());
        owner.extend(docs.into_iter().map(|d| (d, f.file)));
    }
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
            let mut done = Vec::new();
            for record in documents {
                if let Some(&file) = owner.get(record.doc_id.as_str()) {
                    let left = waiting.entry(file).or_default();
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        done.push(file);
                    }
                }
            }
            lock(table).update(id, |job| {
                for file in done {
                    job.files[file].status = FileStatus::Indexed;
                }
            });
        }
    });
    // Files all of whose documents are indexed (all of them, on success:
    // unchanged documents are never committed again) are kept.
    let indexed: Vec<&StagedFile> = task
        .files
        .iter()
        .filter(|f| result.is_ok() || waiting.get(&f.file) == Some(&0))
        .collect();
    {
        let _uploads = uploads.lock().unwrap_or_else(|p| p.into_inner());
        for f in &indexed {
            // A delete that came in meanwhile wins: no document, no file.
            let present = f.passages.iter().any(|p| index.document(&p.doc_id).is_ok());
            if !present {
                continue;
            }
            if let Some(parent) = f.kept.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = std::fs::rename(&f.staged, &f.kept) {
                tracing::warn!(file = %f.kept.display(), error = %e, "could not keep the uploaded file");
            }
        }
    }
    metrics.documents.set(index.document_count() as i64);
    for (outcome, count) in [
        ("indexed", indexed.len()),
        ("failed", task.files.len() - indexed.len()),
    ] {
        if count > 0 {
            metrics
                .ingest_files
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(count as u64);
        }
    }
    match result {
        Ok(summary) => {
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
            lock(table).update(id, |job| {
                fail(job, &message, |file| {
                    waiting.get(&file).is_some_and(|&left| left > 0)
                })
            });
        }
    }
    let _ = std::fs::remove_dir_all(&task.staging);
}
