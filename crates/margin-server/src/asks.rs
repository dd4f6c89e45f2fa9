//! The generator's queue: one thread owns the generator, takes the questions
//! waiting, and decodes those that share settings as one batch of rows.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use margin_answer::{Answer, Answerer, AskSettings, Prepared};
use margin_index::SearchHit;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// What a streaming client hears while its answer is decoded.
#[derive(Debug, Clone)]
pub struct Preview {
    /// Text added since the previous preview ("" when `revised`).
    pub delta: String,
    /// The leading hypothesis so far.
    pub partial: String,
    /// Whether the leading hypothesis changed rather than grew.
    pub revised: bool,
}

/// An answer and how long its question waited for the generator.
pub type Answered = Result<(Answer, Duration), ApiError>;

/// One question for the generator.
pub struct AskTask {
    /// The question.
    pub question: String,
    /// Its retrieved passages.
    pub hits: Vec<SearchHit>,
    /// How to answer it.
    pub settings: AskSettings,
    /// Where previews go, for streaming requests.
    pub previews: Option<mpsc::UnboundedSender<Preview>>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answered>,
}

struct Waiting {
    prepared: Prepared,
    task: AskTask,
    enqueued: Instant,
}

/// The sending side of the generator's queue.
pub struct AskQueue {
    sender: SyncSender<(AskTask, Instant)>,
    metrics: Arc<Metrics>,
}

impl AskQueue {
    /// Starts the generator thread with room for `capacity` waiting questions,
    /// decoding up to `max_batch` together.
    pub fn start(
        answerer: Answerer,
        capacity: usize,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> AskQueue {
        let (sender, receiver) = sync_channel(capacity);
        let worker_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("margin-generator".into())
            .spawn(move || work(&answerer, &receiver, max_batch.max(1), &worker_metrics))
            .expect("starting the generator thread");
        AskQueue { sender, metrics }
    }

    /// Queues `task`; 429 when the queue is full.
    pub fn submit(&self, task: AskTask) -> Result<(), ApiError> {
        match self.sender.try_send((task, Instant::now())) {
            Ok(()) => {
                self.metrics.ask_queue_depth.inc();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                "too many questions are waiting for the generator; try again shortly",
            )),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the generator has stopped",
            )),
        }
    }
}

/// The generator thread: batches of compatible questions, oldest first.
fn work(
    answerer: &Answerer,
    receiver: &Receiver<(AskTask, Instant)>,
    max_batch: usize,
    metrics: &Metrics,
) {
    // Questions taken off the queue that did not fit the last batch.
    let mut held: VecDeque<Waiting> = VecDeque::new();
    let take = |blocking: bool| -> Option<Waiting> {
        loop {
            let (task, enqueued) = if blocking {
                receiver.recv().ok()?
            } else {
                receiver.try_recv().ok()?
            };
            metrics.ask_queue_depth.dec();
            // The client gave up (timed out or went away) while it waited.
            if task.reply.is_closed() {
                continue;
            }
            match answerer.prepare(&task.question, task.hits.clone(), task.settings) {
                Ok(prepared) => {
                    return Some(Waiting {
                        prepared,
                        task,
                        enqueued,
                    })
                }
                Err(e) => {
                    let _ = task.reply.send(Err(e.into()));
                }
            }
        }
    };
    loop {
        let first = match held.pop_front() {
            Some(w) => w,
            None => match take(true) {
                Some(w) => w,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut kept = VecDeque::new();
        while let Some(w) = held.pop_front() {
            if batch.len() < max_batch && batch[0].prepared.batches_with(&w.prepared) {
                batch.push(w);
            } else {
                kept.push_back(w);
            }
        }
        while batch.len() < max_batch {
            let Some(w) = take(false) else { break };
            if batch[0].prepared.batches_with(&w.prepared) {
                batch.push(w);
            } else {
                kept.push_back(w);
            }
        }
        held = kept;
        answer(answerer, batch, metrics);
    }
}

/// Decodes one batch and replies to each question.
fn answer(answerer: &Answerer, batch: Vec<Waiting>, metrics: &Metrics) {
    let started = Instant::now();
    let prepared: Vec<Prepared> = batch.iter().map(|w| w.prepared.clone()).collect();
    let mut shown: Vec<String> = vec![String::new(); batch.len()];
    let result = answerer.answer(&prepared, &mut |q, text| {
        let Some(previews) = batch[q].task.previews.as_ref() else {
            return;
        };
        let previous = &mut shown[q];
        if text == previous.as_str() {
            return;
        }
        let preview = match text.strip_prefix(previous.as_str()) {
            Some(delta) => Preview {
                delta: delta.to_string(),
                partial: text.to_string(),
                revised: false,
            },
            None => Preview {
                delta: String::new(),
                partial: text.to_string(),
                revised: true,
            },
        };
        *previous = text.to_string();
        let _ = previews.send(preview);
    });
    metrics.ask_batch.observe(batch.len() as f64);
    match result {
        Ok(answers) => {
            if let Some(a) = answers.first() {
                for (stage, took) in [
                    ("prefill", a.timings.prefill),
                    ("decode", a.timings.decode),
                    ("rescore", a.timings.rescore),
                    ("attribute", a.timings.attribute),
                ] {
                    metrics.stage(stage, took);
                }
            }
            for (w, a) in batch.into_iter().zip(answers) {
                let queued = started.duration_since(w.enqueued);
                metrics.stage("queue", queued);
                let _ = w.task.reply.send(Ok((a, queued)));
            }
        }
        Err(e) => {
            let e = ApiError::from(e);
            tracing::warn!(error = %e, questions = batch.len(), "answering a batch failed");
            for w in batch {
                let _ = w
                    .task
                    .reply
                    .send(Err(ApiError::new(e.status, e.code, e.message.clone())));
            }
        }
    }
}
