use super::*;
use http::StatusCode;
use http_body_util::BodyExt;
use std::time::SystemTime;

fn head() -> Arc<FillHead> {
    Arc::new(FillHead {
        head: Arc::new(Head::from_upstream(StatusCode::OK, HeaderMap::new(), SystemTime::now())),
        disposition: Disposition::Share,
        revalidated: false,
        prefetched: false,
        from_peer: false,
        request_headers: HeaderMap::new(),
        starter_cookies: Vec::new(),
    })
}

async fn next_data(body: &mut FillBody) -> Option<Result<Bytes, FetchError>> {
    let frame = body.frame().await?;
    Some(frame.map(|f| f.into_data().expect("data frame")))
}

#[tokio::test]
async fn readers_get_chunks_as_they_arrive() {
    let (fill, writer, mut first) = Fill::start();
    let mut second = fill.join();
    writer.head(head());
    assert_eq!(first.head().await.unwrap().head.status, StatusCode::OK);
    second.head().await.unwrap();
    let mut a = first.into_body(0, None);
    let b = second.into_body(0, None);
    writer.push(Bytes::from_static(b"hello "));
    assert_eq!(next_data(&mut a).await.unwrap().unwrap(), "hello ");
    // `b` has not read yet; `a` waits for more without the writer finishing.
    let pending = tokio::time::timeout(std::time::Duration::from_millis(20), next_data(&mut a)).await;
    assert!(pending.is_err(), "reader must wait for the next chunk");
    writer.push(Bytes::from_static(b"world"));
    writer.finish(Ok(()));
    assert_eq!(next_data(&mut a).await.unwrap().unwrap(), "world");
    assert!(next_data(&mut a).await.is_none());
    let whole = b.collect().await.unwrap().to_bytes();
    assert_eq!(whole, "hello world");
}

#[tokio::test]
async fn a_failed_fill_is_an_error_for_every_reader_never_an_end() {
    let (fill, writer, first) = Fill::start();
    let mut late = fill.join();
    writer.head(head());
    let mut a = first.into_body(0, None);
    writer.push(Bytes::from_static(b"partial"));
    assert!(next_data(&mut a).await.unwrap().is_ok());
    writer.finish(Err(FetchError::Abandoned));
    assert!(next_data(&mut a).await.unwrap().is_err());
    late.head().await.unwrap();
    let mut b = late.into_body(0, None);
    assert_eq!(next_data(&mut b).await.unwrap().unwrap(), "partial");
    assert!(next_data(&mut b).await.unwrap().is_err());
}

#[tokio::test]
async fn head_waiters_see_failure_before_head() {
    let (_fill, writer, mut reader) = Fill::start();
    writer.finish(Err(FetchError::Abandoned));
    assert!(reader.head().await.is_err());
}

#[tokio::test]
async fn dropped_writer_fails_readers() {
    let (_fill, writer, mut reader) = Fill::start();
    drop(writer);
    assert!(matches!(reader.head().await, Err(FetchError::Abandoned)));
}

#[tokio::test]
async fn ranges_cut_across_chunks() {
    let (_fill, writer, reader) = Fill::start();
    writer.head(head());
    for part in ["0123", "4567", "89"] {
        writer.push(Bytes::from(part));
    }
    writer.finish(Ok(()));
    let body = reader.into_body(3, Some(9)).collect().await.unwrap().to_bytes();
    assert_eq!(body, "345678");
}

#[tokio::test]
async fn trimmed_fill_releases_read_chunks() {
    let (fill, writer, first) = Fill::start();
    let second = fill.join();
    writer.head(head());
    writer.stop_keeping();
    assert!(!fill.joinable());
    let mut a = first.into_body(0, None);
    let mut b = second.into_body(0, None);
    writer.push(Bytes::from_static(b"one"));
    writer.push(Bytes::from_static(b"two"));
    next_data(&mut a).await.unwrap().unwrap();
    next_data(&mut a).await.unwrap().unwrap();
    // `b` still needs both chunks.
    assert_eq!(fill.lock().chunks.len(), 2);
    next_data(&mut b).await.unwrap().unwrap();
    assert_eq!(fill.lock().chunks.len(), 1);
    drop(b);
    assert_eq!(fill.lock().chunks.len(), 0);
    assert_eq!(writer.readers(), 1);
    assert!(writer.body_chunks().is_none());
}

#[tokio::test]
async fn whole_body_waits_for_the_end() {
    let (_fill, writer, mut reader) = Fill::start();
    writer.head(head());
    writer.push(Bytes::from_static(b"ab"));
    writer.push(Bytes::from_static(b"cd"));
    let task = tokio::spawn(async move { reader.whole_body().await });
    tokio::task::yield_now().await;
    writer.finish(Ok(()));
    assert_eq!(task.await.unwrap().unwrap(), "abcd");
}

#[test]
fn concat_copies_only_when_needed() {
    let one = Bytes::from_static(b"single");
    let joined = concat([one.clone()].iter());
    assert_eq!(joined.as_ptr(), one.as_ptr(), "a single chunk is shared, not copied");
    let parts = [Bytes::from_static(b"a"), Bytes::from_static(b"b")];
    assert_eq!(concat(parts.iter()), "ab");
    assert!(concat(std::iter::empty()).is_empty());
}

#[test]
fn the_first_piece_goes_out_alone_then_the_reader_yields_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    struct Wakes(AtomicUsize);
    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (_fill, writer, reader) = Fill::start();
    writer.head(head());
    for part in ["first", "second", "third"] {
        writer.push(Bytes::from(part));
    }
    writer.finish(Ok(()));
    let mut body = reader.into_body(0, None);
    let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&wakes));
    let mut cx = Context::from_waker(&waker);
    let mut poll = || match Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => Some(frame.into_data().expect("data")),
        Poll::Ready(None) => Some(Bytes::from_static(b"<end>")),
        Poll::Ready(Some(Err(e))) => panic!("fill failed: {e}"),
        Poll::Pending => None,
    };
    assert_eq!(poll().as_deref(), Some(&b"first"[..]));
    // Everything else is there, but this connection steps back once, and
    // asks to be polled again.
    assert_eq!(poll(), None);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(poll().as_deref(), Some(&b"second"[..]));
    assert_eq!(poll().as_deref(), Some(&b"third"[..]));
    assert_eq!(poll().as_deref(), Some(&b"<end>"[..]));
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "it yields only after the first piece"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fill_that_keeps_nothing_waits_for_its_slowest_reader_then_cuts_it_off() {
    let (_fill, writer, fast) = Fill::start();
    let slow = writer.fill().join();
    writer.head(head());
    writer.stop_keeping();
    let mut fast = fast.into_body(0, None);
    let mut slow = slow.into_body(0, None);
    let patience = std::time::Duration::from_secs(60);
    writer.push(Bytes::from(vec![1u8; 300]));
    // Both have 300 bytes to read: over a limit of 200, the writer waits.
    let waiting = tokio::time::timeout(std::time::Duration::from_secs(1), writer.room(200, patience)).await;
    assert!(waiting.is_err(), "the writer waits while readers lag");
    // Both read: the chunk goes, and with it the wait.
    next_data(&mut fast).await.unwrap().unwrap();
    next_data(&mut slow).await.unwrap().unwrap();
    writer.room(200, patience).await;
    // Now `slow` takes nothing: after the patience it is cut off, and `fast` goes on.
    writer.push(Bytes::from(vec![2u8; 300]));
    next_data(&mut fast).await.unwrap().unwrap();
    let started = tokio::time::Instant::now();
    writer.room(200, patience).await;
    assert_eq!(started.elapsed(), patience);
    assert!(matches!(next_data(&mut slow).await, Some(Err(FetchError::Overtaken))));
    writer.push(Bytes::from_static(b"end"));
    writer.finish(Ok(()));
    assert_eq!(next_data(&mut fast).await.unwrap().unwrap(), "end");
}

#[tokio::test]
async fn a_kept_body_holds_its_reservation_until_stored_or_let_go() {
    let budget = crate::budget::Budget::new(1000);
    let (fill, writer, reader) = Fill::start();
    writer.head(head());
    assert!(writer.reserve(&budget, 600));
    assert!(!writer.reserve(&budget, 1200), "past the budget");
    writer.push(Bytes::from(vec![7u8; 300]));
    writer.push(Bytes::from(vec![8u8; 300]));
    assert_eq!(budget.used(), 600);
    // Stored: the chunks become slices of the stored body, the budget is free.
    let stored = concat(writer.body_chunks().unwrap().iter());
    writer.rebase(&stored);
    assert_eq!(budget.used(), 0);
    let range = stored.as_ptr() as usize..stored.as_ptr() as usize + stored.len();
    assert!(fill
        .lock()
        .chunks
        .iter()
        .all(|c| range.contains(&(c.as_ptr() as usize))));
    writer.finish(Ok(()));
    let got = reader.into_body(0, None).collect().await.unwrap().to_bytes();
    assert_eq!(got, stored);

    // A fill dropped without being stored gives its bytes back too.
    let (fill, writer, reader) = Fill::start();
    assert!(writer.reserve(&budget, 900));
    assert_eq!(budget.used(), 900);
    writer.finish(Err(FetchError::Abandoned));
    drop((fill, reader));
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_fills_state_becomes_one_cache_outcome() {
    use crate::outcome::{Outcome, PassReason};
    use std::time::Duration;
    let head = |disposition, revalidated| FillHead {
        disposition,
        revalidated,
        ..Arc::try_unwrap(super::tests::head()).expect("a new head has one owner")
    };
    let store = Disposition::Store {
        ttl: Duration::from_secs(60),
    };
    let read = |outcome, stored| {
        Reading::Read(CacheStatus {
            outcome,
            stored,
            prefetched: false,
            peer: false,
        })
    };
    let (miss, joined) = (Outcome::Miss, Outcome::Collapsed);
    let cases = [
        (head(store, false), miss, true, read(Outcome::Miss, true)),
        (head(store, false), joined, true, read(Outcome::Collapsed, true)),
        (head(store, false), joined, false, Reading::Pass(PassReason::Vary)),
        // The client that fetched a varying answer reads it, whatever it varies on.
        (head(store, false), miss, false, read(Outcome::Miss, true)),
        (head(store, true), joined, true, read(Outcome::Stale, true)),
        (head(Disposition::Share, true), miss, true, read(Outcome::Stale, false)),
        (
            head(Disposition::Private, false),
            miss,
            true,
            read(Outcome::Pass(PassReason::Private), false),
        ),
        (
            head(Disposition::Private, false),
            joined,
            true,
            Reading::Pass(PassReason::Private),
        ),
        (
            head(Disposition::TooLarge, false),
            miss,
            true,
            read(Outcome::Pass(PassReason::TooLarge), false),
        ),
        (
            head(Disposition::TooLarge, false),
            joined,
            true,
            read(Outcome::Collapsed, false),
        ),
        (
            head(Disposition::NoRoom, false),
            joined,
            true,
            read(Outcome::Collapsed, false),
        ),
        (
            head(Disposition::Share, false),
            joined,
            true,
            read(Outcome::Collapsed, false),
        ),
    ];
    for (i, (fill_head, joined, same_variant, want)) in cases.into_iter().enumerate() {
        assert_eq!(fill_head.reading(joined, same_variant), want, "case {i}");
    }
}
