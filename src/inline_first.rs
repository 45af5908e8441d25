//! The executor hyper's HTTP/2 server hands each stream to: the stream's
//! future is polled once where it arrives, on the connection's task, and
//! spawned as a task of its own only if that first poll leaves it waiting.
//!
//! A cache hit is answered without waiting on anything, so its stream ends
//! in that one poll. Spawned instead, it costs a task allocation, a trip
//! through the scheduler and a wake of the connection's task when the answer
//! is queued (benches/HISTORY.md has the figures).
//!
//! The first poll gets a waker that does nothing. That is sound because a
//! future must arrange to be woken through the waker of its latest poll: the
//! spawned task polls at once, so whatever the first poll waited on
//! registers the task's real waker then.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Waker};

#[derive(Clone, Copy, Debug, Default)]
pub struct InlineFirst;

impl<F> hyper::rt::Executor<F> for InlineFirst
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut fut = Box::pin(fut);
        let mut cx = Context::from_waker(Waker::noop());
        // A panic ends its own stream, as it would in a task of its own,
        // not the connection's other streams (the panic hook has logged it).
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx).is_pending())) {
            Ok(true) => {
                tokio::spawn(fut);
            }
            Ok(false) => {}
            Err(_) => {
                let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_stream_with_nothing_to_wait_for_ends_before_execute_returns() {
        // No runtime at all: had it been spawned, this would panic.
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        InlineFirst.execute(async move { flag.store(true, Ordering::SeqCst) });
        assert!(ended.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_stream_that_waits_is_woken_in_a_task_of_its_own() {
        let (go, wait) = tokio::sync::oneshot::channel::<u32>();
        let (done, ended) = tokio::sync::oneshot::channel();
        InlineFirst.execute(async move {
            let _ = done.send(wait.await.unwrap() + 1);
        });
        go.send(41).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), ended).await;
        assert_eq!(got.expect("the waiting stream was woken").unwrap(), 42);
    }

    #[test]
    fn a_stream_that_panics_ends_alone() {
        InlineFirst.execute(async { panic!("a stream's bug") });
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        InlineFirst.execute(async move { flag.store(true, Ordering::SeqCst) });
        assert!(ended.load(Ordering::SeqCst));
    }
}
