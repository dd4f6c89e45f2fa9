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

use crate::error::{guarded, ApiError};
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
        let worker = Worker {
            answerer,
            receiver,
            // What the channel holds plus what the thread took off it but has
            // not started: together never more than the queue's capacity.
            capacity,
            max_batch: max_batch.max(1),
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("margin-generator".into())
            .spawn(move || worker.run())
            .expect("starting the generator thread");
        AskQueue { sender, metrics }
    }

    /// Queues `task`; 429 when the queue is full.
    pub fn submit(&self, task: AskTask) -> Result<(), ApiError> {
        // Counted from here until its batch starts (or it is dropped).
        self.metrics.ask_queue_depth.inc();
        let refused = match self.sender.try_send((task, Instant::now())) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                "too many questions are waiting for the generator; try again shortly",
            ),
            Err(TrySendError::Disconnected(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the generator has stopped",
            ),
        };
        self.metrics.ask_queue_depth.dec();
        Err(refused)
    }
}

/// The generator thread.
struct Worker {
    answerer: Answerer,
    receiver: Receiver<(AskTask, Instant)>,
    capacity: usize,
    max_batch: usize,
    metrics: Arc<Metrics>,
}

impl Worker {
    /// Batches of compatible questions, oldest first, until the server stops.
    fn run(self) {
        // Questions taken off the channel that did not fit the last batch.
        let mut held: VecDeque<Waiting> = VecDeque::new();
        loop {
            held.retain(|w| self.waiting(&w.task));
            let first = match held.pop_front() {
                Some(w) => w,
                None => match self.take(true) {
                    Some(w) => w,
                    None => return,
                },
            };
            let mut batch = vec![first];
            let mut kept = VecDeque::new();
            for w in held.drain(..) {
                if batch.len() < self.max_batch && batch[0].prepared.batches_with(&w.prepared) {
                    batch.push(w);
                } else {
                    kept.push_back(w);
                }
            }
            // More from the channel, while they fit in the queue's bound.
            while batch.len() < self.max_batch && kept.len() < self.capacity {
                let Some(w) = self.take(false) else { break };
                if batch[0].prepared.batches_with(&w.prepared) {
                    batch.push(w);
                } else {
                    kept.push_back(w);
                }
            }
            held = kept;
            self.metrics.ask_queue_depth.dec_by(batch.len() as i64);
            self.answer(batch);
        }
    }

    /// Whether `task`'s client still waits; forgets it if not.
    fn waiting(&self, task: &AskTask) -> bool {
        let waiting = !task.reply.is_closed();
        if !waiting {
            self.metrics.ask_queue_depth.dec();
        }
        waiting
    }

    /// The next question still wanted, made ready for the generator;
    /// `blocking` waits for one. `None`: none (or the server is stopping).
    fn take(&self, blocking: bool) -> Option<Waiting> {
        loop {
            let (task, enqueued) = if blocking {
                self.receiver.recv().ok()?
            } else {
                self.receiver.try_recv().ok()?
            };
            if !self.waiting(&task) {
                continue;
            }
            let prepared = guarded("preparing a question", || {
                self.answerer
                    .prepare(&task.question, task.hits.clone(), task.settings)
                    .map_err(ApiError::from)
            });
            match prepared {
                Ok(mut prepared) => {
                    prepared.previews = task.previews.is_some();
                    return Some(Waiting {
                        prepared,
                        task,
                        enqueued,
                    });
                }
                Err(e) => {
                    self.metrics.ask_queue_depth.dec();
                    let _ = task.reply.send(Err(e));
                }
            }
        }
    }

    /// Decodes one batch and replies to each question.
    fn answer(&self, batch: Vec<Waiting>) {
        let started = Instant::now();
        let prepared: Vec<Prepared> = batch.iter().map(|w| w.prepared.clone()).collect();
        let mut shown: Vec<String> = vec![String::new(); batch.len()];
        let result = guarded("answering", || {
            self.answerer
                .answer(&prepared, &mut |q, text| {
                    if let Some(previews) = batch[q].task.previews.as_ref() {
                        if let Some(p) = preview(&mut shown[q], text) {
                            let _ = previews.send(p);
                        }
                    }
                })
                .map_err(ApiError::from)
        });
        let metrics = &self.metrics;
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
                tracing::warn!(error = %e, questions = batch.len(), "answering a batch failed");
                for w in batch {
                    let _ =
                        w.task
                            .reply
                            .send(Err(ApiError::new(e.status, e.code, e.message.clone())));
                }
            }
        }
    }
}

/// What a client is told when `text` follows `shown`; `None` if nothing changed.
fn preview(shown: &mut String, text: &str) -> Option<Preview> {
    if text == shown.as_str() {
        return None;
    }
    let preview = match text.strip_prefix(shown.as_str()) {
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
    *shown = text.to_string();
    Some(preview)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_grow_by_deltas_and_say_when_they_are_replaced() {
        let mut shown = String::new();
        let p = preview(&mut shown, "The").unwrap();
        assert_eq!((p.delta.as_str(), p.revised), ("The", false));
        let p = preview(&mut shown, "The moon").unwrap();
        assert_eq!(
            (p.delta.as_str(), p.partial.as_str(), p.revised),
            (" moon", "The moon", false)
        );
        assert!(preview(&mut shown, "The moon").is_none());
        let p = preview(&mut shown, "Tides").unwrap();
        assert_eq!(
            (p.delta.as_str(), p.partial.as_str(), p.revised),
            ("", "Tides", true)
        );
    }
}
