//! Guards on a streamed request body (uploads). actix's `client_request_timeout` covers only
//! the request head, so a body that stalls, trickles or never ends would otherwise hold a
//! worker, a connection and a temporary file for as long as the client likes. The payload
//! stream is wrapped so that every chunk must arrive within `server.body_timeout_secs`, the
//! average rate after that first period stays above `server.min_body_rate_bytes_per_sec`,
//! and the total stays under a byte limit. A [`BodyWatch`] tells the handler which rule was
//! broken (408 or 413) and whether the body has ended, which is how a multipart body that
//! ends without its closing boundary is told apart from one still arriving.

use crate::error::Error;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use std::cell::Cell;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The rules a body must keep.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Longest wait for the next chunk; also the grace period before the rate is checked.
    pub timeout: Duration,
    /// Slowest average rate in bytes per second; 0 = none.
    pub min_rate: u64,
    /// Most bytes the whole body may have.
    pub max_bytes: u64,
}

/// Which rule a body broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Stalled,
    TooSlow,
    TooLarge,
}

#[derive(Debug, Default)]
struct Shared {
    ended: Cell<bool>,
    violation: Cell<Option<Violation>>,
}

/// The handler's view of a guarded body.
#[derive(Debug, Clone)]
pub struct BodyWatch {
    shared: Rc<Shared>,
    limits: BodyLimits,
}

impl BodyWatch {
    /// Whether the client's body has ended (every byte was read).
    pub fn ended(&self) -> bool {
        self.shared.ended.get()
    }

    /// The error for a broken rule, if one was broken.
    pub fn error(&self) -> Option<Error> {
        let secs = self.limits.timeout.as_secs();
        self.shared.violation.get().map(|v| match v {
            Violation::Stalled => {
                Error::Timeout(format!("the request body stalled: no data for {secs} s"))
            }
            Violation::TooSlow => Error::Timeout(format!(
                "the request body arrives too slowly (under {} bytes/s)",
                self.limits.min_rate
            )),
            Violation::TooLarge => Error::TooLarge(format!(
                "the request body is larger than {} bytes",
                self.limits.max_bytes
            )),
        })
    }
}

/// A payload stream held to [`BodyLimits`].
pub struct GuardedBody<S> {
    inner: S,
    limits: BodyLimits,
    started: Instant,
    last: Instant,
    bytes: u64,
    timer: Pin<Box<Sleep>>,
    shared: Rc<Shared>,
}

/// Holds the body of an API request (if it has one) to `limits` and leaves the
/// [`BodyWatch`] in the request's extensions, for handlers that tell the broken rule apart.
/// The API listener runs every request through it, so JSON bodies get the same timeout and
/// minimum rate as uploads.
pub fn guard_request(req: &mut actix_web::dev::ServiceRequest, limits: BodyLimits) {
    use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    use actix_web::HttpMessage as _;
    let has_body = req.headers().contains_key(TRANSFER_ENCODING)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if !has_body {
        return;
    }
    let (_, payload) = req.parts_mut();
    let inner = std::mem::replace(payload, actix_web::dev::Payload::None);
    let (guarded, watch) = guard(inner, limits);
    *payload = actix_web::dev::Payload::Stream {
        payload: Box::pin(guarded),
    };
    req.extensions_mut().insert(watch);
}

/// The watch [`guard_request`] left for this request, or a fresh guard of `payload` when the
/// request did not pass through it.
pub fn watched(
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
    limits: BodyLimits,
) -> (
    futures_util::stream::LocalBoxStream<'static, Result<Bytes, PayloadError>>,
    BodyWatch,
) {
    use actix_web::HttpMessage as _;
    let existing = req.extensions().get::<BodyWatch>().cloned();
    match existing {
        Some(watch) => (Box::pin(payload), watch),
        None => {
            let (guarded, watch) = guard(payload, limits);
            (Box::pin(guarded), watch)
        }
    }
}

/// Wraps `inner`; the watch reports on it.
pub fn guard<S>(inner: S, limits: BodyLimits) -> (GuardedBody<S>, BodyWatch) {
    let now = Instant::now();
    let shared = Rc::new(Shared::default());
    let body = GuardedBody {
        inner,
        limits,
        started: now,
        last: now,
        bytes: 0,
        timer: Box::pin(tokio::time::sleep_until(now + limits.timeout)),
        shared: shared.clone(),
    };
    (body, BodyWatch { shared, limits })
}

impl<S> GuardedBody<S> {
    /// When the body breaks a rule if nothing more arrives.
    fn deadline(&self) -> Instant {
        let stall = self.last + self.limits.timeout;
        if self.limits.min_rate == 0 {
            return stall;
        }
        // The average falls under the minimum once `bytes / elapsed < min_rate`; it is
        // checked only after the first period, so a slow start is forgiven.
        let earned = Duration::from_secs_f64(self.bytes as f64 / self.limits.min_rate as f64);
        let slow = self.started + earned.max(self.limits.timeout);
        stall.min(slow)
    }

    fn broke(&self, v: Violation) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.shared.violation.set(Some(v));
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{v:?}"),
        )))))
    }
}

impl<S> Stream for GuardedBody<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(v) = self.shared.violation.get() {
            return self.broke(v);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.bytes += chunk.len() as u64;
                if self.bytes > self.limits.max_bytes {
                    return self.broke(Violation::TooLarge);
                }
                self.last = Instant::now();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.shared.ended.set(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                let deadline = self.deadline();
                self.timer.as_mut().reset(deadline);
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let v = if Instant::now() >= self.last + self.limits.timeout {
                            Violation::Stalled
                        } else {
                            Violation::TooSlow
                        };
                        self.broke(v)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn limits() -> BodyLimits {
        BodyLimits {
            timeout: Duration::from_millis(50),
            min_rate: 0,
            max_bytes: 10,
        }
    }

    #[actix_rt::test]
    async fn a_body_that_stalls_is_stopped_as_stalled() {
        let (mut body, watch) = guard(futures_util::stream::pending(), limits());
        assert!(body.next().await.unwrap().is_err());
        assert!(matches!(watch.error(), Some(Error::Timeout(_))));
        assert!(!watch.ended());
    }

    #[actix_rt::test]
    async fn a_body_over_the_limit_is_stopped_as_too_large() {
        let chunks = vec![
            Ok(Bytes::from_static(b"123456")),
            Ok(Bytes::from_static(b"7890ab")),
        ];
        let (mut body, watch) = guard(futures_util::stream::iter(chunks), limits());
        assert!(body.next().await.unwrap().is_ok());
        assert!(body.next().await.unwrap().is_err());
        assert!(matches!(watch.error(), Some(Error::TooLarge(_))));
    }

    #[actix_rt::test]
    async fn a_body_that_ends_is_seen_to_end() {
        let chunks = vec![Ok(Bytes::from_static(b"1234"))];
        let (mut body, watch) = guard(futures_util::stream::iter(chunks), limits());
        assert!(body.next().await.unwrap().is_ok());
        assert!(body.next().await.is_none());
        assert!(watch.ended());
        assert!(watch.error().is_none());
    }
}
