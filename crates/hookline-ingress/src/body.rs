//! Reading a request body under hostile conditions: the buffer grows with the bytes that
//! actually arrived (never reserved from `Content-Length`), each frame is copied into one
//! contiguous buffer and dropped at once (a held frame pins hyper's whole read buffer: a
//! body trickled a byte at a time cost ~4 KB per byte that way), every byte of capacity is
//! charged to the global body budget, and the whole body must arrive before a deadline.

use crate::error::ApiError;
use crate::limits::Lease;
use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::time::Instant;

/// A body read into memory, with the budget lease that pays for it.
pub(crate) struct ReadBody {
    /// The bytes, exactly as received.
    pub(crate) bytes: Bytes,
    /// Released when the request is done with the body.
    pub(crate) _lease: Lease,
}

/// Reads `body` to the end: 413 beyond `limit`, 408 if not complete by `deadline`, 503 when
/// the body budget is spent, 400 when the connection fails mid-body.
pub(crate) async fn read(
    mut body: Body,
    limit: usize,
    mut lease: Lease,
    deadline: Instant,
) -> Result<ReadBody, ApiError> {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(body_error(&error, limit)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            // Trailers carry nothing we keep.
            continue;
        };
        let len = buffer.len() + data.len();
        if len > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        if len > buffer.capacity() {
            // Doubling keeps copies amortized; the cap keeps a 1-byte trickle at 1x.
            let capacity = len.max(buffer.capacity() * 2).min(limit);
            lease.grow_to(capacity)?;
            buffer.reserve_exact(capacity - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(ReadBody {
        bytes: Bytes::from(buffer),
        _lease: lease,
    })
}

fn body_error(error: &axum::Error, limit: usize) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge(limit);
        }
        cause = e.source();
    }
    ApiError::BodyRead
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use std::time::Duration;

    fn chunks(sizes: &[usize]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = sizes
            .iter()
            .map(|n| Ok(Bytes::from(vec![b'x'; *n])))
            .collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn grows_with_what_arrives_and_charges_the_budget() {
        let limits = Limits::new(8, 1 << 20);
        let read = read(chunks(&[1; 100]), 4096, limits.lease(), soon())
            .await
            .unwrap();
        assert_eq!(read.bytes.len(), 100);
        assert!(
            read._lease.bytes() >= 100 && read._lease.bytes() <= 256,
            "{}",
            read._lease.bytes()
        );
    }

    #[tokio::test]
    async fn refusals() {
        let limits = Limits::new(8, 1000);
        let too_big = read(chunks(&[600, 600]), 1000, limits.lease(), soon()).await;
        assert!(matches!(too_big, Err(ApiError::PayloadTooLarge(1000))));
        let mut holder = limits.lease();
        holder.grow_to(900).unwrap();
        let spent = read(chunks(&[200]), 1000, limits.lease(), soon()).await;
        assert!(matches!(spent, Err(ApiError::Overloaded(_))));
        drop(holder);
        let stalled =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        let deadline = Instant::now() + Duration::from_millis(50);
        let late = read(stalled, 1000, limits.lease(), deadline).await;
        assert!(matches!(late, Err(ApiError::BodyTimeout)));
    }
}
