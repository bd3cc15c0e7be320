//! Integration tests: the real `hookline` binary against the real RabbitMQ.
//! Each test uses its own random prefix, ports and data directory, so they run in parallel.

mod cli;
mod dedup;
mod deploy;
mod examples;
mod pipeline;
mod rejections;
#[allow(dead_code)] // some helpers serve tests/faults only
mod support;
mod tls;
mod tools;
mod topology;
