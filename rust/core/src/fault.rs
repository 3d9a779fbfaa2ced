//! Fault injection for the tests of panic handling.
//!
//! With the `test-hooks` feature, [`arm`] names a site and the next time the code
//! passes [`inject`] at that site, it panics, once. Without the feature (every
//! release and wheel build) [`inject`] is an empty inline function and [`arm`] does
//! not exist, so nothing of this reaches users.
//!
//! Sites: `"parse"` (chain parsing), `"verify"` (each signature of a batch, so on a
//! rayon worker for large batches), `"hash"` (each lane group of `blake3_many`),
//! `"reserve"` (inside the ledger's account lock, which the panic poisons), and
//! `"gate"` (after a batch is decided, while it holds reservations).

#[cfg(feature = "test-hooks")]
mod armed {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    static ARMED: Mutex<Option<String>> = Mutex::new(None);
    // Lets the unarmed path skip the lock (sites sit on rayon's hot paths).
    static ANY: AtomicBool = AtomicBool::new(false);

    /// Arms `site` (or disarms, with `None`): the next [`super::inject`] there panics.
    pub fn arm(site: Option<&str>) {
        *ARMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = site.map(str::to_owned);
        ANY.store(site.is_some(), Ordering::SeqCst);
    }

    /// Panics, once, if `site` is armed.
    pub fn inject(site: &str) {
        if !ANY.load(Ordering::Relaxed) {
            return;
        }
        let mut armed = ARMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if armed.as_deref() == Some(site) {
            *armed = None;
            ANY.store(false, Ordering::SeqCst);
            drop(armed);
            panic!("injected panic at {site} (test hook)");
        }
    }
}

#[cfg(feature = "test-hooks")]
pub use armed::{arm, inject};

/// Does nothing: fault injection is compiled only with the `test-hooks` feature.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn inject(_site: &str) {}
