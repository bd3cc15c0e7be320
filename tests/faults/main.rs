//! Fault tests: broker stopped, resource alarm, frozen connection, kill -9 of each process,
//! spool reopen, poison deliveries, a cluster node lost (on a throwaway cluster of its own).
//! They run one at a time (a process-wide lock) and cargo runs this binary apart from the
//! other test binaries; every test that changes a broker restores it in a guard, also when
//! it fails.

#[path = "../it/support.rs"]
#[allow(dead_code)]
mod support;

mod broker;
mod cluster;
mod disk_full;
mod harness;
mod hostile;
mod poison;
mod processes;
mod replicas;
