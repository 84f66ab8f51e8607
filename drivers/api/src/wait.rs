//! Polling with an interval and a deadline: never a bare sleep, never a spin.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Why waiting ended without the thing being ready.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E: std::error::Error + 'static> {
    #[error("{what} was not ready after {after:?} (last seen: {last})")]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    #[error(transparent)]
    Failed(E),
}

impl From<WaitError<crate::DriverError>> for crate::DriverError {
    /// A wait that timed out becomes [`DriverError::Timeout`](crate::DriverError::Timeout)
    /// with what was last seen; a failed probe is its own error.
    fn from(e: WaitError<crate::DriverError>) -> Self {
        match e {
            WaitError::Timeout { what, after, last } => Self::Timeout {
                what,
                after,
                last_state: last,
            },
            WaitError::Failed(e) => e,
        }
    }
}

/// Calls `probe` every `every` until it returns `Ok(Ok(v))`, an error, or `timeout` passes.
/// `Ok(Err(seen))` means "not yet"; `seen` is what the timeout's message shows as last seen.
pub async fn poll_until<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    probe: F,
) -> Result<T, WaitError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>, E>>,
{
    poll_backoff(what, timeout, every..=every, probe).await
}

/// Like [`poll_until`], but the interval starts at the range's start and doubles after each
/// "not yet" up to its end: what is usually ready within a few milliseconds is seen at once,
/// and what takes seconds (a real k3s) is not asked more often than with the longer interval.
pub async fn poll_backoff<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    every: std::ops::RangeInclusive<Duration>,
    mut probe: F,
) -> Result<T, WaitError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>, E>>,
{
    let deadline = Instant::now() + timeout;
    let (mut interval, longest) = (*every.start(), *every.end());
    loop {
        let last = match probe().await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(seen)) => seen,
            Err(e) => return Err(WaitError::Failed(e)),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout {
                what: what.to_string(),
                after: timeout,
                last,
            });
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(longest.max(interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[tokio::test(start_paused = true)]
    async fn returns_once_ready() {
        let mut n = 0;
        let v = poll_until::<_, Infallible, _, _>(
            "thing",
            Duration::from_secs(10),
            Duration::from_secs(1),
            || {
                n += 1;
                let r = if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("try {n}"))
                };
                async move { Ok(r) }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_the_interval_up_to_the_longest() {
        let started = Instant::now();
        let mut seen = Vec::new();
        let v = poll_backoff::<_, Infallible, _, _>(
            "thing",
            Duration::from_secs(10),
            Duration::from_millis(20)..=Duration::from_millis(100),
            || {
                seen.push(started.elapsed().as_millis());
                let done = seen.len() == 6;
                async move { Ok(if done { Ok(()) } else { Err("no".into()) }) }
            },
        )
        .await;
        assert!(v.is_ok());
        // Waits of 20, 40, 80, then 100 (the longest), 100.
        assert_eq!(seen, vec![0, 20, 60, 140, 240, 340]);
    }

    #[test]
    fn a_timed_out_wait_is_a_typed_driver_timeout() {
        let e: crate::DriverError = WaitError::<crate::DriverError>::Timeout {
            what: "the IP of `dev`".into(),
            after: Duration::from_secs(3),
            last: "no lease".into(),
        }
        .into();
        assert!(
            matches!(&e, crate::DriverError::Timeout { last_state, .. } if last_state == "no lease"),
            "{e:?}"
        );
        let inner = crate::DriverError::NotFound { what: "x".into() };
        let e: crate::DriverError = WaitError::Failed(inner).into();
        assert!(e.is_not_found());
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_the_last_state() {
        let err = poll_until::<(), Infallible, _, _>(
            "the API",
            Duration::from_secs(3),
            Duration::from_secs(1),
            || async { Ok(Err("503".to_string())) },
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the API was not ready after 3s (last seen: 503)"
        );
    }
}
