//! Bounded polling: `eventually` retries a check until it yields a value
//! or a bound runs out, then fails with the last thing it saw.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every `every` until it returns `Ok(value)`, and returns
/// that value; after `limit` (wall clock, or tokio's clock when it is
/// paused) it panics with `what` and the last `Err` the check gave.
pub async fn eventually<T, E, F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if tokio::time::Instant::now() >= deadline {
                    panic!("{what} (gave up after {limit:?}): {last}");
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
