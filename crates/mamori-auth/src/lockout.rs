//! Account lockout after repeated failed logins, as pure functions over the stored
//! [`LoginFailures`] of one user. A wrong password and a wrong TOTP code both count: the
//! second factor must not be guessable at leisure once the password is known.

use serde::{Deserialize, Serialize};

/// How many failures lock an account, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window_ms` that lock the account.
    pub max_failures: u32,
    /// Failures older than this (counted from the first of a series) are forgotten.
    pub window_ms: i64,
    /// How long a lock lasts.
    pub lock_ms: i64,
}

impl Default for LockoutPolicy {
    /// 5 failures within 15 minutes lock for 15 minutes.
    fn default() -> Self {
        LockoutPolicy { max_failures: 5, window_ms: 15 * 60 * 1000, lock_ms: 15 * 60 * 1000 }
    }
}

/// The failed-login state of one user, as the manager stores it. `Default` is "no failures"
/// (also what an admin's unlock stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoginFailures {
    /// Failures in the current series.
    pub count: u32,
    /// When the current series began (ms since the epoch); meaningless when `count` is 0.
    pub first_ms: i64,
    /// Locked until then (ms since the epoch), if a lock was ever set and not cleared.
    pub locked_until_ms: Option<i64>,
}

impl LockoutPolicy {
    /// The state to store after a failed password or TOTP code at `now_ms`.
    pub fn on_failure(&self, state: LoginFailures, now_ms: i64) -> LoginFailures {
        // While locked the manager checks no credentials; if it does anyway, the lock is not
        // extended, so that a stream of guesses cannot keep a user out longer than 5 guesses
        // per lock period already can.
        if self.is_locked(state, now_ms).is_some() {
            return state;
        }
        let lock_ended = state.locked_until_ms.is_some();
        let window_over = now_ms.saturating_sub(state.first_ms) >= self.window_ms;
        if state.count == 0 || lock_ended || window_over {
            return self.lock_if_reached(
                LoginFailures { count: 1, first_ms: now_ms, locked_until_ms: None },
                now_ms,
            );
        }
        let next = LoginFailures { count: state.count.saturating_add(1), ..state };
        self.lock_if_reached(next, now_ms)
    }

    fn lock_if_reached(&self, state: LoginFailures, now_ms: i64) -> LoginFailures {
        if state.count >= self.max_failures.max(1) {
            LoginFailures { locked_until_ms: Some(now_ms.saturating_add(self.lock_ms)), ..state }
        } else {
            state
        }
    }

    /// The state to store after a complete, successful login: failures are forgotten. A lock
    /// still in force stays (the manager should not have checked credentials at all).
    pub fn on_success(&self, state: LoginFailures, now_ms: i64) -> LoginFailures {
        if self.is_locked(state, now_ms).is_some() {
            state
        } else {
            LoginFailures::default()
        }
    }

    /// If the account is locked at `now_ms`, for how many more milliseconds.
    pub fn is_locked(&self, state: LoginFailures, now_ms: i64) -> Option<u64> {
        let until = state.locked_until_ms?;
        let remaining = until.saturating_sub(now_ms);
        (remaining > 0).then_some(remaining.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60 * 1000;
    const T0: i64 = 1_760_000_000_000;

    fn fail_times(policy: &LockoutPolicy, times: &[i64]) -> LoginFailures {
        times.iter().fold(LoginFailures::default(), |state, &t| policy.on_failure(state, t))
    }

    #[test]
    fn five_failures_within_the_window_lock_for_fifteen_minutes() {
        let policy = LockoutPolicy::default();
        let four = fail_times(&policy, &[T0, T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE]);
        assert_eq!(policy.is_locked(four, T0 + 3 * MINUTE), None, "four failures must not lock");
        let five = policy.on_failure(four, T0 + 4 * MINUTE);
        assert_eq!(policy.is_locked(five, T0 + 4 * MINUTE), Some(15 * 60 * 1000));
        assert_eq!(policy.is_locked(five, T0 + 10 * MINUTE), Some(9 * 60 * 1000));
        assert_eq!(policy.is_locked(five, T0 + 19 * MINUTE - 1), Some(1));
        assert_eq!(policy.is_locked(five, T0 + 19 * MINUTE), None, "the lock ends after 15 minutes");
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_lock() {
        let policy = LockoutPolicy::default();
        // Four failures, then the fifth 15 minutes after the first: a new series begins.
        let state =
            fail_times(&policy, &[T0, T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE, T0 + 15 * MINUTE]);
        assert_eq!(policy.is_locked(state, T0 + 15 * MINUTE), None);
        assert_eq!(state.count, 1);
        assert_eq!(state.first_ms, T0 + 15 * MINUTE);
    }

    #[test]
    fn failures_while_locked_neither_extend_nor_shorten_the_lock() {
        let policy = LockoutPolicy::default();
        let locked = fail_times(&policy, &[T0; 5]);
        let again = policy.on_failure(policy.on_failure(locked, T0 + MINUTE), T0 + 14 * MINUTE);
        assert_eq!(again, locked);
        assert_eq!(policy.is_locked(again, T0 + 14 * MINUTE), Some(MINUTE as u64));
    }

    #[test]
    fn a_failure_after_the_lock_ended_starts_a_new_series() {
        let policy = LockoutPolicy::default();
        let locked = fail_times(&policy, &[T0; 5]);
        let after = policy.on_failure(locked, T0 + 20 * MINUTE);
        assert_eq!(after, LoginFailures { count: 1, first_ms: T0 + 20 * MINUTE, locked_until_ms: None });
        assert_eq!(policy.is_locked(after, T0 + 20 * MINUTE), None);
    }

    #[test]
    fn success_clears_failures_but_not_a_lock_in_force() {
        let policy = LockoutPolicy::default();
        let three = fail_times(&policy, &[T0, T0, T0]);
        assert_eq!(policy.on_success(three, T0 + 1), LoginFailures::default());
        // After a success the count starts from zero: four more failures do not lock.
        let four_more = fail_times(&policy, &[T0 + 2, T0 + 3, T0 + 4, T0 + 5]);
        assert_eq!(policy.is_locked(four_more, T0 + 5), None);
        let locked = fail_times(&policy, &[T0; 5]);
        assert_eq!(policy.on_success(locked, T0 + MINUTE), locked);
        assert_eq!(policy.on_success(locked, T0 + 16 * MINUTE), LoginFailures::default());
    }

    #[test]
    fn a_custom_policy_is_honoured() {
        let policy = LockoutPolicy { max_failures: 2, window_ms: MINUTE, lock_ms: 2 * MINUTE };
        let state = fail_times(&policy, &[T0, T0 + MINUTE / 2]);
        assert_eq!(policy.is_locked(state, T0 + MINUTE / 2), Some(2 * MINUTE as u64));
        let spread = fail_times(&policy, &[T0, T0 + MINUTE]);
        assert_eq!(policy.is_locked(spread, T0 + MINUTE), None);
    }

    #[test]
    fn stored_state_round_trips_through_json() {
        let policy = LockoutPolicy::default();
        let locked = fail_times(&policy, &[T0; 5]);
        let json = serde_json::to_string(&locked).unwrap();
        assert_eq!(serde_json::from_str::<LoginFailures>(&json).unwrap(), locked);
    }
}
