//! What keeps one process from hammering a provider: a rate limiter that spaces calls out, and a
//! circuit breaker that stops calling a provider that keeps failing. Both live in the node
//! instance the registry holds, so every run in the process shares them; in distributed mode each
//! worker has its own, and the provider sees up to `workers × rate_limit` calls per second.
//!
//! The state machines take the current instant as an argument, so they are tested without
//! clocks; only [`Gate::wait_turn`] sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Consecutive failures (5xx, timeouts, network errors) that open a circuit.
pub(super) const FAILURES_TO_OPEN: u32 = 5;

/// How long an open circuit fails calls before it lets one trial call through.
pub(super) const COOLDOWN: Duration = Duration::from_secs(30);

/// What a caller is told to wait while another caller's trial call decides a half-open circuit.
const TRIAL_PENDING_WAIT: Duration = Duration::from_secs(1);

/// The gates of every provider a node type has called, by base URL.
#[derive(Debug, Default)]
pub(in crate::builtin) struct Gates {
    by_base_url: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Gates {
    /// The gate of one provider, created on first use.
    pub(super) fn get(&self, base_url: &str) -> Arc<Gate> {
        let mut gates = lock(&self.by_base_url);
        gates.entry(base_url.to_owned()).or_default().clone()
    }
}

/// The rate limiter and circuit breaker of one provider.
#[derive(Debug, Default)]
pub(super) struct Gate {
    limiter: Mutex<Limiter>,
    breaker: Mutex<Breaker>,
}

impl Gate {
    /// Asks the breaker for a call; `Err` carries how long the circuit stays open.
    pub(super) fn admit(self: &Arc<Self>) -> Result<Permit, Duration> {
        lock(&self.breaker).admit(Instant::now())?;
        Ok(Permit {
            gate: Some(self.clone()),
        })
    }

    /// Waits until a call at `per_second` is due. The slot is taken even if the caller gives up
    /// waiting, which only makes later calls a little later.
    pub(super) async fn wait_turn(&self, per_second: f64) {
        let interval = Duration::from_secs_f64(1.0 / per_second);
        let wait = lock(&self.limiter).reserve(Instant::now(), interval);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether a finished call says the provider is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The provider answered (any 2xx or 4xx status).
    Answered,
    /// A 5xx status, a timeout or a network error.
    Failed,
}

/// The right to make one call; it must report how the call went. Dropped without a report (the
/// attempt was cancelled), it gives a half-open circuit's trial slot back.
#[derive(Debug)]
pub(super) struct Permit {
    gate: Option<Arc<Gate>>,
}

impl Permit {
    pub(super) fn record(mut self, outcome: Outcome) {
        if let Some(gate) = self.gate.take() {
            lock(&gate.breaker).record(outcome, Instant::now());
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            lock(&gate.breaker).release_trial();
        }
    }
}

/// The state is plain data that every method leaves consistent, so a panic elsewhere while it was
/// locked does not make it unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spaces calls at least one interval apart. Calls do not burst: a provider's per-second limit
/// is usually enforced over short windows.
#[derive(Debug, Default)]
struct Limiter {
    next_free: Option<Instant>,
}

impl Limiter {
    /// Takes the next free slot and returns how long to wait for it.
    fn reserve(&mut self, now: Instant, interval: Duration) -> Duration {
        let start = self.next_free.map_or(now, |next| next.max(now));
        self.next_free = Some(start + interval);
        start - now
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

#[derive(Debug)]
struct Breaker {
    state: State,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed { failures: 0 },
        }
    }
}

impl Breaker {
    fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. }
            | State::HalfOpen {
                trial_in_flight: false,
            } => {
                self.state = State::HalfOpen {
                    trial_in_flight: true,
                };
                Ok(())
            }
            State::HalfOpen {
                trial_in_flight: true,
            } => Err(TRIAL_PENDING_WAIT),
        }
    }

    fn record(&mut self, outcome: Outcome, now: Instant) {
        self.state = match (outcome, self.state) {
            (Outcome::Answered, _) => State::Closed { failures: 0 },
            // A call admitted before the circuit opened does not extend the cooldown.
            (Outcome::Failed, open @ State::Open { .. }) => open,
            (Outcome::Failed, State::Closed { failures }) if failures + 1 < FAILURES_TO_OPEN => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (Outcome::Failed, _) => State::Open {
                until: now + COOLDOWN,
            },
        };
    }

    fn release_trial(&mut self) {
        if self.state
            == (State::HalfOpen {
                trial_in_flight: true,
            })
        {
            self.state = State::HalfOpen {
                trial_in_flight: false,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_limiter_spaces_calls_one_interval_apart() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        let interval = 100 * MS;
        assert_eq!(limiter.reserve(start, interval), Duration::ZERO);
        assert_eq!(limiter.reserve(start, interval), 100 * MS);
        assert_eq!(limiter.reserve(start + 50 * MS, interval), 150 * MS);
        // After a quiet spell there is no debt to pay, and no burst to spend either.
        assert_eq!(
            limiter.reserve(start + 10_000 * MS, interval),
            Duration::ZERO
        );
        assert_eq!(limiter.reserve(start + 10_000 * MS, interval), 100 * MS);
    }

    fn failing(breaker: &mut Breaker, now: Instant, n_calls: u32) {
        for _ in 0..n_calls {
            assert_eq!(breaker.admit(now), Ok(()));
            breaker.record(Outcome::Failed, now);
        }
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures() {
        let mut breaker = Breaker::default();
        let now = Instant::now();
        failing(&mut breaker, now, FAILURES_TO_OPEN - 1);
        assert_eq!(breaker.admit(now), Ok(()));
        breaker.record(Outcome::Failed, now);
        assert_eq!(breaker.admit(now + 10 * MS), Err(COOLDOWN - 10 * MS));
    }

    #[test]
    fn an_answer_resets_the_count() {
        let mut breaker = Breaker::default();
        let now = Instant::now();
        failing(&mut breaker, now, FAILURES_TO_OPEN - 1);
        breaker.record(Outcome::Answered, now);
        failing(&mut breaker, now, FAILURES_TO_OPEN - 1);
        assert_eq!(breaker.admit(now), Ok(()));
    }

    #[test]
    fn after_the_cooldown_one_trial_decides() {
        let mut breaker = Breaker::default();
        let now = Instant::now();
        failing(&mut breaker, now, FAILURES_TO_OPEN);
        let later = now + COOLDOWN;
        assert_eq!(breaker.admit(later), Ok(()));
        assert_eq!(breaker.admit(later), Err(TRIAL_PENDING_WAIT));
        breaker.record(Outcome::Failed, later);
        assert_eq!(breaker.admit(later), Err(COOLDOWN));

        let much_later = later + COOLDOWN;
        assert_eq!(breaker.admit(much_later), Ok(()));
        breaker.record(Outcome::Answered, much_later);
        assert_eq!(breaker.admit(much_later), Ok(()));
        assert_eq!(breaker.admit(much_later), Ok(()));
    }

    #[test]
    fn a_late_failure_does_not_extend_an_open_circuit() {
        let mut breaker = Breaker::default();
        let now = Instant::now();
        failing(&mut breaker, now, FAILURES_TO_OPEN);
        breaker.record(Outcome::Failed, now + 20_000 * MS);
        assert_eq!(breaker.admit(now + COOLDOWN), Ok(()));
    }

    #[test]
    fn an_abandoned_trial_frees_its_slot() {
        let gate = Arc::new(Gate::default());
        lock(&gate.breaker).state = State::HalfOpen {
            trial_in_flight: false,
        };
        let trial = gate.admit().expect("the trial is admitted");
        assert_eq!(
            gate.admit().expect_err("one trial at a time"),
            TRIAL_PENDING_WAIT
        );
        drop(trial);
        let trial = gate.admit().expect("the slot is free again");
        trial.record(Outcome::Answered);
        assert_eq!(lock(&gate.breaker).state, State::Closed { failures: 0 });
    }

    #[test]
    fn gates_are_shared_per_base_url() {
        let gates = Gates::default();
        let a = gates.get("https://a.example");
        assert!(Arc::ptr_eq(&a, &gates.get("https://a.example")));
        assert!(!Arc::ptr_eq(&a, &gates.get("https://b.example")));
    }
}
