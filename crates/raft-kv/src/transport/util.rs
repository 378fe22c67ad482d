//! Small pieces shared by the inbound and outbound sides: a buffered frame reader, the dial
//! backoff, log rate limiting and the shutdown signal.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::wire::{self, WireError};

/// Read buffer size: a read asks the kernel for at least this much room.
const READ_CHUNK: usize = 64 * 1024;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes pending)")]
    TruncatedFrame(usize),
    /// The frame header was bad.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Reads length-prefixed frames from a byte stream through one growing buffer. Frame bodies are
/// split off the buffer without copying.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a stream.
    pub(crate) fn new(io: R) -> Self {
        FrameReader { io, buf: BytesMut::new() }
    }

    /// The next frame body (at most `max` bytes), or `None` on a clean end of stream between frames.
    /// Cancel-safe: bytes already read stay buffered for the next call.
    pub(crate) async fn next_frame(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(frame) = wire::decode_frame(&mut self.buf, max)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::TruncatedFrame(self.buf.len()))
                };
            }
        }
    }

    /// The stream and the bytes read from it but not yet returned as a frame.
    pub(crate) fn into_parts(self) -> (R, BytesMut) {
        (self.io, self.buf)
    }

    /// The first buffered bytes, printable, for a log line about a stranger.
    pub(crate) fn preview(&self) -> String {
        let n = self.buf.len().min(16);
        self.buf[..n].escape_ascii().to_string()
    }
}

/// Exponential backoff with jitter: each delay is drawn uniformly from `[d/2, d]`, where `d` doubles
/// after every failure from `min` up to `max`.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `min`; `seed` decorrelates the jitter of different peers.
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        // Mixed with a per-process random key, so restarted nodes do not repeat each other's delays.
        let rng = RandomState::new().hash_one(seed) | 1;
        Backoff { min, max, current: min, rng }
    }

    /// The delay before the next attempt; doubles the following one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        // xorshift64: plenty for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let full = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = full / 2;
        let span = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(self.rng % span)
    }

    /// Back to `min` (after a success).
    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

/// Lets a repeated log line through at most once per interval and counts the ones held back.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    /// At most one line per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimit { interval, state: Mutex::new((None, 0)) }
    }

    /// `Some(number of lines suppressed since the last one)` if a line may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *state;
        let now = Instant::now();
        match last {
            Some(t) if now.duration_since(*t) < self.interval => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

/// Resolves when shutdown is requested or the transport handle is gone.
pub(crate) async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    // An error means the sender (the last handle) was dropped: stop as well.
    let _ = rx.wait_for(|&stop| stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(10), Duration::from_secs(1));
        let mut b = Backoff::new(min, max, 7);
        let mut nominal = min;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} outside [{:?}, {nominal:?}]", nominal / 2);
            nominal = (nominal * 2).min(max);
        }
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn rate_limit_counts_suppressed_lines() {
        let r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        let r = RateLimit::new(Duration::ZERO);
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), Some(0));
    }

    #[tokio::test]
    async fn frame_reader_handles_split_frames_and_eof() {
        let mut bytes = BytesMut::new();
        wire::encode_frame(&wire::Handshake::new(1, 2), 1024, &mut bytes).unwrap();
        wire::encode_frame(&wire::Handshake::new(3, 4), 1024, &mut bytes).unwrap();
        let (mut w, r) = tokio::io::duplex(3);
        let data = bytes.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            w.write_all(&data[..data.len() - 1]).await.unwrap();
        });
        let mut reader = FrameReader::new(r);
        let first = reader.next_frame(1024).await.unwrap().unwrap();
        assert_eq!(wire::decode_handshake(first).unwrap(), wire::Handshake::new(1, 2));
        // The writer closes one byte short of the second frame.
        assert!(matches!(reader.next_frame(1024).await, Err(ReadError::TruncatedFrame(_))));
        writer.await.unwrap();

        let mut clean = FrameReader::new(&b""[..]);
        assert!(clean.next_frame(1024).await.unwrap().is_none());
    }
}
