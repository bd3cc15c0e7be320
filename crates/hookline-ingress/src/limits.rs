//! What one client can hold at once, shared by all: requests in progress (`max_in_flight`)
//! and body bytes in memory (`body_budget_bytes`). Both refuse at once (503) instead of
//! queueing, so an attacker's requests cannot make memory grow while they wait.

use crate::error::ApiError;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission to the request path (cheap to clone).
#[derive(Clone)]
pub(crate) struct Limits {
    in_flight: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
}

/// A request's place among those in flight; released on drop.
pub(crate) struct Slot(OwnedSemaphorePermit);

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("hookline_ingress_in_flight").decrement(self.0.num_permits() as f64);
    }
}

/// Body bytes a request holds against the budget; released on drop.
pub(crate) struct Lease {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl Limits {
    /// `max_in_flight` requests and `body_budget_bytes` of bodies at once.
    pub(crate) fn new(max_in_flight: usize, body_budget_bytes: usize) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
            body_bytes: Arc::new(Semaphore::new(
                body_budget_bytes.min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// A place for one more request, or 503 when `max_in_flight` are in progress.
    pub(crate) fn enter(&self) -> Result<Slot, ApiError> {
        let permit =
            self.in_flight.clone().try_acquire_owned().map_err(|_| {
                ApiError::Overloaded("ingress.max_in_flight requests are in progress")
            })?;
        metrics::gauge!("hookline_ingress_in_flight").increment(1.0);
        Ok(Slot(permit))
    }

    /// An empty lease on the body budget.
    pub(crate) fn lease(&self) -> Lease {
        Lease {
            budget: self.body_bytes.clone(),
            held: None,
        }
    }
}

impl Lease {
    /// Grows the lease to `bytes` in total, or 503 when the budget cannot cover it.
    pub(crate) fn grow_to(&mut self, bytes: usize) -> Result<(), ApiError> {
        let held = self.held.as_ref().map_or(0, |p| p.num_permits());
        if bytes <= held {
            return Ok(());
        }
        let more = u32::try_from(bytes - held).map_err(|_| budget_spent())?;
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| budget_spent())?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits())
    }
}

fn budget_spent() -> ApiError {
    ApiError::Overloaded("ingress.body_budget_bytes of request bodies are in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_budget_refuse_at_the_limit_and_come_back_on_drop() {
        let limits = Limits::new(2, 100);
        let a = limits.enter().unwrap();
        let _b = limits.enter().unwrap();
        assert!(limits.enter().is_err());
        drop(a);
        assert!(limits.enter().is_ok());

        let mut one = limits.lease();
        one.grow_to(60).unwrap();
        one.grow_to(40).unwrap();
        assert_eq!(one.bytes(), 60);
        let mut two = limits.lease();
        assert!(two.grow_to(41).is_err());
        two.grow_to(40).unwrap();
        drop(one);
        two.grow_to(100).unwrap();
        assert_eq!(two.bytes(), 100);
    }
}
