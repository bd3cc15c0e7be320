//! In-process claims on event ids, so two deliveries carrying the same event at the same
//! time cannot both publish it: the second waits, then finds the id recorded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Ids being published right now (cheap to clone).
#[derive(Clone, Default)]
pub(crate) struct Claims {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    held: Mutex<HashSet<String>>,
    released: Notify,
}

/// Held claims; dropping it releases them and wakes waiters.
pub(crate) struct Held {
    claims: Claims,
    ids: Vec<String>,
}

impl Claims {
    /// Claims every id, waiting while another task holds any of them.
    ///
    /// All ids are taken at once or not at all, so two tasks can never hold one id each
    /// while waiting for the other's (no deadlock).
    pub(crate) async fn claim(&self, ids: Vec<String>) -> Held {
        loop {
            let released = self.inner.released.notified();
            {
                let mut held = self.inner.held.lock().expect("claims lock");
                if ids.iter().all(|id| !held.contains(id)) {
                    held.extend(ids.iter().cloned());
                    return Held {
                        claims: self.clone(),
                        ids,
                    };
                }
            }
            released.await;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.claims.inner.held.lock().expect("claims lock");
        for id in &self.ids {
            held.remove(id);
        }
        drop(held);
        self.claims.inner.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn second_claim_waits_for_release() {
        let claims = Claims::default();
        let first = claims.claim(vec!["a".into(), "b".into()]).await;
        let other = claims.clone();
        let waiter = tokio::spawn(async move { other.claim(vec!["b".into()]).await.ids.clone() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        let free = claims.claim(vec!["c".into()]).await;
        drop(first);
        assert_eq!(waiter.await.unwrap(), ["b"]);
        drop(free);
    }
}
