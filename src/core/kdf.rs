//! The bounded pool that runs password hashes. At most `workers` hashes run
//! at once and at most `queue` more wait; a request beyond that is refused
//! at once, so a flood cannot pile up work or memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct KdfPool {
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    /// PBKDF2 iterations run through this pool (what the hash functions
    /// report having done), so tests and metrics can see the work.
    spent: Arc<AtomicU64>,
    workers: usize,
    queue: usize,
    /// Seconds each hash took on its worker (`portcullis_kdf_duration_seconds`).
    pub duration: prometheus_client::metrics::histogram::Histogram,
    /// Requests refused because the pool and its queue were full.
    pub refused: prometheus_client::metrics::counter::Counter,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl KdfPool {
    pub fn new(workers: usize, queue: usize) -> KdfPool {
        KdfPool {
            admitted: Arc::new(Semaphore::new(workers.max(1) + queue)),
            running: Arc::new(Semaphore::new(workers.max(1))),
            spent: Arc::new(AtomicU64::new(0)),
            workers: workers.max(1),
            queue,
            // 1 ms to about 8 s: a debug build's hash takes seconds.
            duration: prometheus_client::metrics::histogram::Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14)),
            refused: Default::default(),
        }
    }

    /// Runs `work`, which returns its result and the KDF iterations it ran;
    /// those are added to [`KdfPool::iterations_spent`].
    pub async fn run_counted<T: Send + 'static>(&self, work: impl FnOnce() -> (T, u64) + Send + 'static) -> Result<T, Busy> {
        let (value, spent) = self.run(work).await?;
        self.spent.fetch_add(spent, Ordering::Relaxed);
        Ok(value)
    }

    /// KDF iterations run so far through [`KdfPool::run_counted`].
    pub fn iterations_spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    /// Runs `work` on a blocking thread when a worker is free; `Busy` when
    /// the pool and its queue are full.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let Ok(_admitted) = self.admitted.clone().try_acquire_owned() else {
            self.refused.inc();
            return Err(Busy);
        };
        let _running = self.running.clone().acquire_owned().await.map_err(|_| Busy)?;
        let duration = self.duration.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let value = work();
            duration.observe(started.elapsed().as_secs_f64());
            value
        })
        .await
        .map_err(|_| Busy)
    }

    /// Requests admitted and waiting for a worker (`portcullis_kdf_queue_depth`).
    pub fn queue_depth(&self) -> usize {
        let running = self.workers - self.running.available_permits().min(self.workers);
        self.in_flight_now().saturating_sub(running)
    }

    fn in_flight_now(&self) -> usize {
        // `admitted` started with workers + queue permits.
        let capacity = self.workers + self.queue;
        capacity - self.admitted.available_permits().min(capacity)
    }

    /// Hash requests admitted and not yet finished.
    pub fn in_flight(&self, workers: usize, queue: usize) -> usize {
        workers.max(1) + queue - self.admitted.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_when_full() {
        let pool = KdfPool::new(1, 1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
        let p1 = pool.clone();
        let w1 = wait.clone();
        let first = tokio::spawn(async move { p1.run(move || { let _ = w1.lock().map(|r| r.recv()); 1 }).await });
        // Wait (with a deadline) until the first job holds the worker.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pool.running.available_permits() != 0 {
            assert!(std::time::Instant::now() < deadline, "first job never started");
            tokio::task::yield_now().await;
        }
        let p2 = pool.clone();
        let second = tokio::spawn(async move { p2.run(|| 2).await });
        while pool.admitted.available_permits() != 0 {
            assert!(std::time::Instant::now() < deadline, "second job never queued");
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| 3).await, Err(Busy));
        release.send(()).expect("release");
        assert_eq!(first.await.expect("join"), Ok(1));
        assert_eq!(second.await.expect("join"), Ok(2));
        assert_eq!(pool.run(|| 4).await, Ok(4));
    }
}
