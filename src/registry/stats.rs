//! Request and byte counts: one [`Stats`] per operation (a push, a pull) and one for the whole
//! client, both counted at once through a [`Counter`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters for one operation (and, separately, for the whole client).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: AtomicU64,
    pub bytes_uploaded: AtomicU64,
}

impl Stats {
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub fn uploaded(&self, n: u64) {
        self.bytes_uploaded.fetch_add(n, Ordering::Relaxed);
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes_uploaded.load(Ordering::Relaxed)
    }
}

/// Counts into an operation's stats and the client's totals at once.
#[derive(Clone)]
pub(crate) struct Counter {
    pub op: Arc<Stats>,
    pub total: Arc<Stats>,
}

impl Counter {
    pub fn request(&self) {
        self.op.request();
        self.total.request();
    }
    pub fn uploaded(&self, n: u64) {
        self.op.uploaded(n);
        self.total.uploaded(n);
    }
}
