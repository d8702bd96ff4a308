//! Where a registry retry is decided. One budget ([`RetryPolicy`], spent through a [`Backoff`]),
//! the rules on what is worth another attempt (a few statuses, a lost upload session, a dropped
//! connection; never a TLS failure), and what follows each attempt of a retried step,
//! [`Retries`]: the probe (`GET /v2/`, `ping.rs`), token requests (`token.rs`), every
//! request sent (`send.rs`), blob uploads from a fresh POST (`upload.rs`) and downloads from a
//! fresh GET (`pull.rs`). Each step says what its attempt came to ([`Attempt`], [`Failure`]);
//! this module decides whether to wait and go again, and what the error says when it gives up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::connection::Conn;
use super::error::{describe_transport, is_tls_error, ErrorCode, RegistryError};

/// Retry budget: attempts and total time, with exponential backoff and jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per step, the first included.
    pub max_attempts: u32,
    /// Give up on a step once this much time has passed since its first attempt.
    pub max_elapsed: Duration,
    /// Delay before the second attempt; doubles each time (with jitter).
    pub base_delay: Duration,
    /// Largest delay between attempts (a longer `Retry-After` is honoured within `max_elapsed`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(60),
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// One step's progress through its retry budget.
pub(crate) struct Backoff<'a> {
    policy: &'a RetryPolicy,
    start: Instant,
    attempts: u32,
}

impl<'a> Backoff<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Backoff {
            policy,
            start: Instant::now(),
            attempts: 0,
        }
    }

    /// Record an attempt about to be made.
    pub fn attempt(&mut self) {
        self.attempts += 1;
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The delay before the next attempt, or `None` when the budget is spent.
    pub fn next_delay(&self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        let exp = self
            .policy
            .base_delay
            .saturating_mul(1u32 << (self.attempts.saturating_sub(1)).min(16))
            .min(self.policy.max_delay);
        // Full jitter in [exp/2, exp].
        let jittered = exp / 2 + exp.mul_f64(jitter() / 2.0);
        let delay = match retry_after {
            Some(ra) => ra.max(jittered),
            None => jittered,
        };
        if self.start.elapsed() + delay > self.policy.max_elapsed {
            return None;
        }
        Some(delay)
    }
}

/// A number in [0, 1) from a small xorshift generator (jitter needs no cryptographic quality).
fn jitter() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` in seconds (HTTP dates are ignored: the backoff applies then).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Statuses worth another attempt.
pub(crate) fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// A lost upload session (expired, or served by another replica) is worth a fresh POST.
pub(crate) fn upload_session_lost(s: StatusCode, codes: &[ErrorCode]) -> bool {
    s == StatusCode::NOT_FOUND && codes.contains(&ErrorCode::BlobUploadUnknown)
}

/// What one attempt of a step came to, when it did not fail for good (an `Err`).
pub(crate) enum Attempt<T> {
    /// The step is done (with any answer the rules do not retry: the caller reads its status).
    Done(T),
    /// Go again at once, counted as an attempt: a token was renewed, or the registry's scheme
    /// is to be found afresh.
    Again,
    /// Worth another attempt after a pause, while the budget lasts.
    Retry(Failure),
}

/// Why an attempt failed, which says whether another may succeed and what giving up reports.
pub(crate) enum Failure {
    /// A status worth another attempt ([`retryable_status`], [`upload_session_lost`]); given up
    /// on as `RetriesExhausted` with `last`, the status described.
    Status {
        last: String,
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or its answer did not come. A TLS failure is final at
    /// once; others are retried, and given up on as unreachable (or TLS).
    Connection { error: reqwest::Error, url: Url },
    /// The connection broke while an answer's body came in: always retried (a TLS close too);
    /// given up on as unreachable (or TLS).
    Body { error: reqwest::Error, url: Url },
    /// An upload broke off (`last`: after how many bytes). A TLS failure is final at once; others
    /// are retried from a fresh POST, and given up on as `RetriesExhausted` with `last`.
    Upload {
        error: reqwest::Error,
        url: Url,
        last: String,
    },
    /// No scheme the probe tried answered: given up on as unreachable at `address`.
    Unanswered { address: String, detail: String },
}

impl Failure {
    /// Whether another attempt may succeed at all.
    fn retryable(&self) -> bool {
        match self {
            Failure::Connection { error, .. } | Failure::Upload { error, .. } => !is_tls_error(error),
            Failure::Status { .. } | Failure::Body { .. } | Failure::Unanswered { .. } => true,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What went wrong, for the log.
    fn why(&self) -> String {
        match self {
            Failure::Status { last, .. } | Failure::Upload { last, .. } => last.clone(),
            Failure::Connection { error, .. } | Failure::Body { error, .. } => describe_transport(error),
            Failure::Unanswered { detail, .. } => detail.clone(),
        }
    }

    /// The error that says the step gave up on `what` after `backoff`'s attempts.
    fn give_up(self, conn: &Conn, what: &str, backoff: &Backoff) -> RegistryError {
        let exhausted = |last: &str| RegistryError::RetriesExhausted {
            registry: conn.registry.clone(),
            what: what.to_string(),
            attempts: backoff.attempts(),
            elapsed: backoff.elapsed(),
            last: conn.redact(last),
        };
        match self {
            Failure::Upload { error, url, .. } if is_tls_error(&error) => unreachable(conn, &url, &error, backoff),
            Failure::Status { last, .. } | Failure::Upload { last, .. } => exhausted(&last),
            Failure::Connection { error, url } | Failure::Body { error, url } => {
                unreachable(conn, &url, &error, backoff)
            }
            Failure::Unanswered { address, detail } => RegistryError::Unreachable {
                registry: conn.registry.clone(),
                address,
                detail: format!(
                    "{detail} ({} attempts in {:.1?})",
                    backoff.attempts(),
                    backoff.elapsed()
                ),
            },
        }
    }
}

/// One retried step of talking to `conn` (`what`, for errors and the log). Each site runs the
/// same loop: an attempt (an `async` block, so the step's future stays `Send` for spawned tasks,
/// which an async closure's does not), then [`Retries::after`], which says whether it is done,
/// goes again (after a pause, `Retry-After` honoured, while the budget lasts) or gives up.
pub(crate) struct Retries<'a> {
    backoff: Backoff<'a>,
    conn: &'a Conn,
    what: &'a str,
}

impl<'a> Retries<'a> {
    pub fn new(policy: &'a RetryPolicy, conn: &'a Conn, what: &'a str) -> Self {
        Retries {
            backoff: Backoff::new(policy),
            conn,
            what,
        }
    }

    /// What an attempt came to decides what follows: `Some` when it is done, `None` to go again
    /// (after the pause, if it asked for a retry), or the error to give up with.
    pub async fn after<T>(&mut self, attempt: Result<Attempt<T>, RegistryError>) -> Result<Option<T>, RegistryError> {
        self.backoff.attempt();
        let failure = match attempt? {
            Attempt::Done(t) => return Ok(Some(t)),
            Attempt::Again => return Ok(None),
            Attempt::Retry(f) => f,
        };
        let delay = if failure.retryable() {
            self.backoff.next_delay(failure.retry_after())
        } else {
            None
        };
        let Some(d) = delay else {
            return Err(failure.give_up(self.conn, self.what, &self.backoff));
        };
        let (registry, what) = (&self.conn.registry, self.what);
        tracing::debug!(registry = %registry, what, why = %failure.why(), delay_ms = d.as_millis() as u64, "retrying");
        tokio::time::sleep(d).await;
        Ok(None)
    }
}

/// A transport failure at `url` after `backoff`'s attempts: a TLS one, or the host unreachable.
pub(crate) fn unreachable(conn: &Conn, url: &Url, e: &reqwest::Error, backoff: &Backoff) -> RegistryError {
    let address = url.origin().ascii_serialization();
    if is_tls_error(e) {
        RegistryError::Tls {
            registry: conn.registry.clone(),
            address,
            detail: describe_transport(e),
        }
    } else {
        RegistryError::Unreachable {
            registry: conn.registry.clone(),
            address,
            detail: format!(
                "{} ({} attempts in {:.1?})",
                describe_transport(e),
                backoff.attempts(),
                backoff.elapsed()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_budget() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_elapsed: Duration::from_secs(5),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let mut b = Backoff::new(&p);
        b.attempt();
        let d1 = b.next_delay(None).unwrap();
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        b.attempt();
        let d2 = b.next_delay(None).unwrap();
        assert!(
            d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
            "{d2:?}"
        );
        // Retry-After is honoured.
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(2))).unwrap(),
            Duration::from_secs(2)
        );
        // But not beyond the total budget.
        assert_eq!(b.next_delay(Some(Duration::from_secs(6))), None);
        b.attempt();
        assert_eq!(b.next_delay(None), None);
    }

    #[test]
    fn retry_after_header() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::NOT_FOUND));
    }
}
