//! The capped reader the local executor reads a job's stdout and stderr with: the first bytes
//! up to the capture limit are kept, the rest is read and dropped, and each chunk is also shown
//! to the caller. (Remote output is cut at the limit by the agent, on the host.)

use tokio::io::{AsyncRead, AsyncReadExt};

use super::Captured;

/// Reads a stream to its end into `into`, keeping the first `limit` bytes. The buffer grows
/// with what comes (most jobs print little), and what is past the limit is read and dropped.
/// Every chunk read is passed to `seen`. What was read is in `into` even if the reading is
/// given up before the end.
pub(crate) async fn read_capped(
    mut stream: impl AsyncRead + Unpin,
    limit: usize,
    into: &mut Captured,
    mut seen: impl FnMut(&[u8]),
) {
    let kept = &mut into.bytes;
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let before = kept.len();
        let read = if before < limit {
            if kept.len() == kept.capacity() {
                kept.reserve((limit - kept.len()).min(kept.len().max(1024)));
            }
            stream.read_buf(kept).await
        } else {
            if scratch.is_empty() {
                scratch = vec![0; 16 * 1024];
            }
            stream.read(&mut scratch).await
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                if before < limit {
                    seen(&kept[before..]);
                } else {
                    seen(&scratch[..n]);
                }
                if kept.len() >= limit {
                    into.truncated |= kept.len() > limit || before >= limit;
                    kept.truncate(limit);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(data: &[u8], limit: usize) -> (Captured, usize) {
        let mut into = Captured::default();
        let mut total = 0;
        read_capped(data, limit, &mut into, |chunk| total += chunk.len()).await;
        (into, total)
    }

    #[tokio::test]
    async fn keeps_the_first_bytes_and_sees_them_all() {
        let data = vec![b'x'; 100_000];
        let (c, total) = read(&data, 10).await;
        assert_eq!(c.bytes.len(), 10);
        assert!(c.truncated);
        assert_eq!(total, 100_000);
        let (c, total) = read(b"hello", 5).await;
        assert_eq!(
            (c.bytes.as_slice(), c.truncated, total),
            (&b"hello"[..], false, 5)
        );
        let (c, total) = read(b"hello", 0).await;
        assert_eq!((c.bytes.len(), c.truncated, total), (0, true, 5));
        let (c, _) = read(b"", 0).await;
        assert!(!c.truncated);
    }
}
