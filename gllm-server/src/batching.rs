//! Dynamic batching for embedding and rerank requests.
//!
//! Each embedding or rerank model has one batcher task fed by a bounded queue
//! (`max_queue` requests; a full queue answers 429). The task takes the oldest
//! waiting request, then every further waiting request while the batch's padded
//! cost — the longest sequence × the number of sequences, which is what a padded
//! forward pass computes — stays within `max_batch_tokens`, and runs the batch
//! on a blocking thread. While one batch runs, new requests queue up and form the
//! next one, so concurrent small requests share forward passes with no added delay.
//!
//! A request's result never depends on its batch-mates: the backends mask padding,
//! and when a batch fails as a whole every request in it is retried alone, so one
//! bad input cannot fail its neighbours.

use std::sync::Arc;

use gllm_runtime::api::EncodedInput;
use gllm_runtime::{EmbedderHandle, Embedding, RerankerHandle};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// A request waiting in a batch queue.
pub(crate) trait Job: Send + 'static {
    /// Sequences in the request.
    fn count(&self) -> usize;
    /// Tokens of its longest sequence.
    fn longest(&self) -> usize;
    /// True when nobody waits for the answer any more (timed out, disconnected).
    fn abandoned(&self) -> bool;
}

/// Runs one batch on a blocking thread and answers every job in it.
pub(crate) trait Worker<J>: Send + Sync + 'static {
    fn run(&self, batch: Vec<J>);
}

/// The sending side of a model's batch queue.
pub(crate) struct BatchQueue<J> {
    tx: mpsc::Sender<J>,
    capacity: usize,
    model: String,
}

impl<J: Job> BatchQueue<J> {
    /// Starts the batcher task of a model.
    pub fn spawn(
        model: &str,
        capacity: usize,
        max_batch_tokens: usize,
        worker: impl Worker<J>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let name = model.to_string();
        tokio::spawn(batcher(
            rx,
            name.clone(),
            max_batch_tokens,
            Arc::new(worker),
            metrics,
        ));
        Self {
            tx,
            capacity: capacity.max(1),
            model: name,
        }
    }

    /// Queues a job, or answers 429 when the queue is full.
    pub fn submit(&self, job: J) -> Result<(), ApiError> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::queue_full(&self.model),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::unavailable(format!("the batcher of model `{}` has stopped", self.model))
                    .for_model(&self.model)
            }
        })
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> usize {
        self.capacity.saturating_sub(self.tx.capacity())
    }

    /// Most jobs that may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

async fn batcher<J: Job, W: Worker<J>>(
    mut rx: mpsc::Receiver<J>,
    model: String,
    max_batch_tokens: usize,
    worker: Arc<W>,
    metrics: Arc<Metrics>,
) {
    let mut held: Option<J> = None;
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return, // every sender is gone: the server has stopped
            },
        };
        if first.abandoned() {
            continue;
        }
        let mut count = first.count();
        let mut longest = first.longest();
        let mut batch = vec![first];
        while let Ok(job) = rx.try_recv() {
            if job.abandoned() {
                continue;
            }
            let c = count + job.count();
            let l = longest.max(job.longest());
            if c * l > max_batch_tokens {
                held = Some(job);
                break;
            }
            count = c;
            longest = l;
            batch.push(job);
        }
        metrics.batch(&model, batch.len(), count, count * longest);
        let w = worker.clone();
        // One batch at a time per model: the backend already uses every core.
        if let Err(e) = tokio::task::spawn_blocking(move || w.run(batch)).await {
            eprintln!("gllm serve: a batch of model `{model}` panicked: {e}");
        }
    }
}

/// Splits `rows` into consecutive groups of the given sizes.
fn split<T>(rows: Vec<T>, sizes: &[usize]) -> Vec<Vec<T>> {
    let mut it = rows.into_iter();
    sizes
        .iter()
        .map(|&n| it.by_ref().take(n).collect())
        .collect()
}

/// One embedding request: its tokenized inputs and where the answer goes.
pub(crate) struct EmbedJob {
    pub inputs: Vec<EncodedInput>,
    pub reply: oneshot::Sender<Result<Vec<Embedding>, ApiError>>,
}

impl Job for EmbedJob {
    fn count(&self) -> usize {
        self.inputs.len()
    }
    fn longest(&self) -> usize {
        self.inputs.iter().map(|i| i.ids.len()).max().unwrap_or(0)
    }
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Embeds batches of [`EmbedJob`]s with one forward call.
pub(crate) struct EmbedWorker {
    pub handle: EmbedderHandle,
}

impl Worker<EmbedJob> for EmbedWorker {
    fn run(&self, batch: Vec<EmbedJob>) {
        let sizes: Vec<usize> = batch.iter().map(|j| j.inputs.len()).collect();
        let mut replies = Vec::with_capacity(batch.len());
        let mut inputs = Vec::with_capacity(sizes.iter().sum());
        let mut alone = Vec::with_capacity(batch.len());
        for job in batch {
            alone.push(job.inputs.clone());
            inputs.extend(job.inputs);
            replies.push(job.reply);
        }
        match self.handle.embed_encoded(&inputs) {
            Ok(rows) if rows.len() == inputs.len() => {
                for (reply, rows) in replies.into_iter().zip(split(rows, &sizes)) {
                    let _ = reply.send(Ok(rows));
                }
            }
            Ok(rows) => {
                let e = ApiError::internal(format!(
                    "the backend returned {} embeddings for {} inputs",
                    rows.len(),
                    inputs.len()
                ));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) if replies.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(ApiError::from(e)));
                }
            }
            Err(_) => {
                // Isolate the request that failed: every one alone.
                for (reply, inputs) in replies.into_iter().zip(alone) {
                    if reply.is_closed() {
                        continue;
                    }
                    let _ = reply.send(self.handle.embed_encoded(&inputs).map_err(ApiError::from));
                }
            }
        }
    }
}

/// One rerank request, tokenized (the query once) before it was admitted to the queue.
pub(crate) struct RerankJob {
    /// The (query, document) pair encodings, in request order.
    pub pairs: Vec<EncodedInput>,
    /// Token count of the longest pair.
    pub longest: usize,
    /// `(logit, score)` per document, in request order.
    pub reply: oneshot::Sender<Result<Vec<(f32, f32)>, ApiError>>,
}

impl Job for RerankJob {
    fn count(&self) -> usize {
        self.pairs.len()
    }
    fn longest(&self) -> usize {
        self.longest
    }
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Scores batches of [`RerankJob`]s: the pairs of every job in a batch, whatever its
/// query, in one call (and its forward passes).
pub(crate) struct RerankWorker {
    pub handle: RerankerHandle,
}

impl RerankWorker {
    fn score(&self, pairs: &[EncodedInput]) -> Result<Vec<(f32, f32)>, ApiError> {
        let rows = self.handle.score_encoded(pairs).map_err(ApiError::from)?;
        if rows.len() != pairs.len() {
            return Err(ApiError::internal(
                "the backend did not score every document",
            ));
        }
        Ok(rows)
    }
}

impl Worker<RerankJob> for RerankWorker {
    fn run(&self, batch: Vec<RerankJob>) {
        let jobs: Vec<RerankJob> = batch.into_iter().filter(|j| !j.abandoned()).collect();
        let sizes: Vec<usize> = jobs.iter().map(|j| j.pairs.len()).collect();
        let pairs: Vec<EncodedInput> = jobs.iter().flat_map(|j| j.pairs.iter().cloned()).collect();
        match self.score(&pairs) {
            Ok(rows) => {
                for (job, rows) in jobs.into_iter().zip(split(rows, &sizes)) {
                    let _ = job.reply.send(Ok(rows));
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(_) => {
                // Isolate the request that failed: every one alone.
                for job in jobs {
                    if job.reply.is_closed() {
                        continue;
                    }
                    let r = self.score(&job.pairs);
                    let _ = job.reply.send(r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Fake {
        n: usize,
        len: usize,
        reply: oneshot::Sender<usize>,
    }

    impl Job for Fake {
        fn count(&self) -> usize {
            self.n
        }
        fn longest(&self) -> usize {
            self.len
        }
        fn abandoned(&self) -> bool {
            self.reply.is_closed()
        }
    }

    struct Recorder(Arc<Mutex<Vec<usize>>>);

    impl Worker<Fake> for Recorder {
        fn run(&self, batch: Vec<Fake>) {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let size = batch.len();
            if let Ok(mut v) = self.0.lock() {
                v.push(size);
            }
            for j in batch {
                let _ = j.reply.send(size);
            }
        }
    }

    #[test]
    fn split_groups() {
        assert_eq!(
            split(vec![1, 2, 3, 4, 5], &[2, 0, 3]),
            vec![vec![1, 2], vec![], vec![3, 4, 5]]
        );
    }

    #[tokio::test]
    async fn batches_respect_the_padded_budget_and_the_queue_bound() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        // Budget 40 padded tokens: four 10-token jobs fit, a fifth waits.
        let q = BatchQueue::spawn(
            "m",
            8,
            40,
            Recorder(sizes.clone()),
            Arc::new(Metrics::default()),
        );
        let (tx0, rx0) = oneshot::channel();
        q.submit(Fake {
            n: 1,
            len: 10,
            reply: tx0,
        })
        .expect("queued");
        // Let the first job start alone, then queue eight while it runs.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let mut rxs = Vec::new();
        for _ in 0..8 {
            let (tx, rx) = oneshot::channel();
            q.submit(Fake {
                n: 1,
                len: 10,
                reply: tx,
            })
            .expect("queued");
            rxs.push(rx);
        }
        // The queue holds 8: the ninth is refused.
        let (tx, _rx) = oneshot::channel();
        let refused = q.submit(Fake {
            n: 1,
            len: 10,
            reply: tx,
        });
        assert_eq!(
            refused.map_err(|e| e.status.as_u16()).err(),
            Some(429),
            "a full queue answers 429"
        );
        assert_eq!(rx0.await.ok(), Some(1));
        for rx in rxs {
            assert!(rx.await.is_ok());
        }
        let sizes = sizes.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(sizes, vec![1, 4, 4]);
    }
}
