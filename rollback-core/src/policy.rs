//! Policies, validated when built: a nonsensical value is rejected with a
//! message that names the field.

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A policy value that makes no sense, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidPolicy {
    /// The config key, such as `health.interval`.
    pub field: &'static str,
    /// Why the value is rejected.
    pub reason: String,
}

impl InvalidPolicy {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// How a release is proven healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HealthPolicy {
    interval: Duration,
    timeout: Duration,
    start_period: Duration,
    deadline: Duration,
    stable_for: Duration,
}

impl HealthPolicy {
    /// A builder starting from the [defaults](HealthPolicy::default).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let policy = rollback_core::HealthPolicy::builder()
    ///     .deadline(Duration::from_secs(30))
    ///     .stable_for(Duration::from_secs(10))
    ///     .build()?;
    /// assert_eq!(policy.interval(), Duration::from_secs(1));
    /// # Ok::<(), rollback_core::InvalidPolicy>(())
    /// ```
    pub fn builder() -> HealthPolicyBuilder {
        HealthPolicyBuilder {
            policy: HealthPolicy::default(),
        }
    }

    /// Time between the starts of two attempts.
    pub fn interval(&self) -> Duration {
        self.interval
    }
    /// Limit of one attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Grace period for failed probes after start.
    pub fn start_period(&self) -> Duration {
        self.start_period
    }
    /// Overall limit of the verification.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
    /// Continuous health required after the first success.
    pub fn stable_for(&self) -> Duration {
        self.stable_for
    }
}

impl Default for HealthPolicy {
    /// 1 s interval, 2 s per attempt, no start period, 60 s deadline, 5 s stable.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            start_period: Duration::ZERO,
            deadline: Duration::from_secs(60),
            stable_for: Duration::from_secs(5),
        }
    }
}

/// Builds a [`HealthPolicy`], validated by [`build`](HealthPolicyBuilder::build).
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct HealthPolicyBuilder {
    policy: HealthPolicy,
}

impl HealthPolicyBuilder {
    /// Time between the starts of two probe attempts (> 0).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.policy.interval = interval;
        self
    }

    /// Limit of one attempt (> 0, at most `deadline`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.policy.timeout = timeout;
        self
    }

    /// Failed probes are ignored this long after start (a crash is not).
    pub fn start_period(mut self, start_period: Duration) -> Self {
        self.policy.start_period = start_period;
        self
    }

    /// Give up after this long (> 0).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = deadline;
        self
    }

    /// How long the release must stay healthy after its first healthy
    /// answer (shorter than `deadline`).
    pub fn stable_for(mut self, stable_for: Duration) -> Self {
        self.policy.stable_for = stable_for;
        self
    }

    /// The policy, or the first value that makes no sense, naming its field.
    pub fn build(self) -> Result<HealthPolicy, InvalidPolicy> {
        let HealthPolicy {
            interval,
            timeout,
            start_period,
            deadline,
            stable_for,
        } = self.policy;
        if interval.is_zero() {
            return Err(InvalidPolicy::new(
                "health.interval",
                "must be greater than zero",
            ));
        }
        if timeout.is_zero() {
            return Err(InvalidPolicy::new(
                "health.timeout",
                "must be greater than zero",
            ));
        }
        if deadline.is_zero() {
            return Err(InvalidPolicy::new(
                "health.deadline",
                "must be greater than zero",
            ));
        }
        if deadline < timeout {
            return Err(InvalidPolicy::new(
                "health.deadline",
                format!(
                    "{} is shorter than one attempt (health.timeout = {})",
                    humantime::format_duration(deadline),
                    humantime::format_duration(timeout)
                ),
            ));
        }
        if start_period >= deadline {
            return Err(InvalidPolicy::new(
                "health.start_period",
                format!(
                    "{} leaves no time before health.deadline = {}",
                    humantime::format_duration(start_period),
                    humantime::format_duration(deadline)
                ),
            ));
        }
        if stable_for >= deadline {
            return Err(InvalidPolicy::new(
                "health.stable_for",
                format!(
                    "{} can never be reached before health.deadline = {}",
                    humantime::format_duration(stable_for),
                    humantime::format_duration(deadline)
                ),
            ));
        }
        Ok(self.policy)
    }
}

/// What the fleet does when a host fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Stop the rollout and revert every host already switched (the default).
    #[default]
    RollbackAll,
    /// Revert only the failed host and stop the rollout; hosts already
    /// verified keep the new release; no tag moves.
    RollbackHost,
    /// Stop at once and touch nothing more: the failed host keeps the new
    /// container and its retained one, for a human (or `recover`) to decide.
    Halt,
}

impl OnFailure {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::RollbackAll => "rollback-all",
            OnFailure::RollbackHost => "rollback-host",
            OnFailure::Halt => "halt",
        }
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OnFailure {
    type Err = InvalidPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rollback-all" => Ok(OnFailure::RollbackAll),
            "rollback-host" => Ok(OnFailure::RollbackHost),
            "halt" => Ok(OnFailure::Halt),
            _ => Err(InvalidPolicy::new(
                "rollout.on_failure",
                format!("{s:?} is not one of rollback-all, rollback-host, halt"),
            )),
        }
    }
}

/// Read through `FromStr`; the message is the reason alone, as the
/// deserializer's caller knows where the value sits.
impl<'de> Deserialize<'de> for OnFailure {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: InvalidPolicy| serde::de::Error::custom(e.reason))
    }
}

/// How the fleet is rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RolloutPolicy {
    batch: NonZeroUsize,
    on_failure: OnFailure,
}

impl RolloutPolicy {
    /// `batch` hosts at a time (at least 1).
    pub fn new(batch: usize, on_failure: OnFailure) -> Result<Self, InvalidPolicy> {
        let batch = NonZeroUsize::new(batch)
            .ok_or_else(|| InvalidPolicy::new("rollout.batch", "must be at least 1"))?;
        Ok(Self { batch, on_failure })
    }

    /// Hosts deployed at once.
    pub fn batch(&self) -> usize {
        self.batch.get()
    }

    /// What happens on the first failure.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            batch: NonZeroUsize::MIN,
            on_failure: OnFailure::RollbackAll,
        }
    }
}

/// The time limit of each effect the engine performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepTimeouts {
    /// Taking or releasing a lock, inspecting, listing.
    pub engine: Duration,
    /// Pulling the new image.
    pub pull: Duration,
    /// Stopping a container, added to its stop timeout.
    pub stop_grace: Duration,
    /// One registry request sequence (resolve, copy).
    pub registry: Duration,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        Self {
            engine: Duration::from_secs(30),
            pull: Duration::from_secs(600),
            stop_grace: Duration::from_secs(30),
            registry: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// The policy of interval, timeout, start period, deadline and stable-for.
    fn policy(
        interval: Duration,
        timeout: Duration,
        start_period: Duration,
        deadline: Duration,
        stable_for: Duration,
    ) -> Result<HealthPolicy, InvalidPolicy> {
        HealthPolicy::builder()
            .interval(interval)
            .timeout(timeout)
            .start_period(start_period)
            .deadline(deadline)
            .stable_for(stable_for)
            .build()
    }

    #[test]
    fn health_policy_names_the_field() {
        let cases = [
            (
                policy(Duration::ZERO, S, Duration::ZERO, 60 * S, 5 * S),
                "health.interval",
            ),
            (
                policy(S, Duration::ZERO, Duration::ZERO, 60 * S, 5 * S),
                "health.timeout",
            ),
            (
                policy(S, S, Duration::ZERO, Duration::ZERO, Duration::ZERO),
                "health.deadline",
            ),
            (
                policy(S, 10 * S, Duration::ZERO, 5 * S, Duration::ZERO),
                "health.deadline",
            ),
            (
                policy(S, S, 60 * S, 60 * S, Duration::ZERO),
                "health.start_period",
            ),
            (
                policy(S, S, Duration::ZERO, 60 * S, 60 * S),
                "health.stable_for",
            ),
        ];
        for (result, field) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.to_string().starts_with(field), "{err}");
        }
        policy(S, 2 * S, Duration::ZERO, 60 * S, 5 * S).unwrap();
    }

    #[test]
    fn rollout_policy_rejects_zero_batch() {
        assert_eq!(
            RolloutPolicy::new(0, OnFailure::Halt).unwrap_err().field,
            "rollout.batch"
        );
        assert_eq!(RolloutPolicy::new(2, OnFailure::Halt).unwrap().batch(), 2);
        assert_eq!("halt".parse::<OnFailure>().unwrap(), OnFailure::Halt);
        assert!("sometimes".parse::<OnFailure>().is_err());
    }
}
