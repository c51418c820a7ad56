//! A small tokio runtime on a thread of its own, for work that must not
//! depend on a caller's runtime staying alive. The server's worker threads
//! each run a current-thread runtime, and tests make one per test, so a
//! task spawned on the caller's runtime could stop being polled, or be
//! dropped, at any time. The simulators run their timers here (reservation
//! expiry, agents' delayed accept), and the HTTP clients run their
//! requests and their update polling here, so their pooled connections
//! are always driven by a runtime that lives as long as the client.
//!
//! Dropping the [`Background`] stops its thread: the runtime is dropped
//! there, with any tasks still pending. It never joins the thread, so it
//! may be dropped anywhere, even from one of its own tasks.

use std::future::Future;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A current-thread runtime running on a dedicated thread until dropped.
pub(crate) struct Background {
    handle: Handle,
    /// Dropping it wakes the thread, which then drops its runtime.
    _stop: oneshot::Sender<()>,
}

impl Background {
    /// Starts the thread (named `name`).
    pub(crate) fn new(name: &str) -> Result<Background, super::SetupError> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                super::SetupError::Start(format!("cannot start the {name} runtime: {e}"))
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
                drop(runtime);
            })
            .map_err(|e| {
                super::SetupError::Start(format!("cannot start the {name} thread: {e}"))
            })?;
        Ok(Background {
            handle,
            _stop: stop,
        })
    }

    /// A handle to spawn on; it does not keep the thread alive.
    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Spawns a task on the background runtime.
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `future` on the background runtime and waits for its output
    /// from whatever runtime the caller is on. Dropping the returned
    /// future aborts the task.
    pub(crate) async fn run<F>(&self, future: F) -> Result<F::Output, String>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut task = AbortOnDrop(Some(self.handle.spawn(future)));
        let Some(handle) = task.0.as_mut() else {
            return Err("the background task is gone".to_string());
        };
        let result = handle.await;
        task.0 = None;
        result.map_err(|e| format!("the background runtime stopped the task: {e}"))
    }
}

/// Aborts a task whose output nobody waits for any more.
struct AbortOnDrop<T>(Option<JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn work_runs_on_the_background_thread_and_stops_with_it() {
        let bg = Background::new("ors-test-bg").unwrap();
        let name = bg
            .run(async { std::thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("ors-test-bg"));
        let (tx, rx) = oneshot::channel::<()>();
        let pending = bg.spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        drop(bg);
        // The runtime is dropped with the task, which drops its sender.
        assert!(rx.await.is_err());
        assert!(pending.await.unwrap_err().is_cancelled());
    }
}
