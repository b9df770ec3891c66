//! Checkpoints for the end-to-end tests, which kill the process at an exact
//! point of a deploy (crash recovery). Built only with the cargo feature
//! `test-checkpoints`, which only the end-to-end tests enable: the
//! `rollback` users run never reads these variables.
//!
//! `ROLLBACK_TEST_PAUSE_AT=<stage>` or `<stage>@<host>` (stages: `locked`,
//! `captured`, `pulled`, `switched`, `verifying`, `rolling_back`,
//! `promoting`, and start-first's `started`, `stable_window`, `draining`) makes the first host reaching that stage (or the named
//! host) print `paused at <stage> on <host>` to stderr and wait there, for
//! `ROLLBACK_TEST_PAUSE_FOR` (a humantime duration, default one hour).
//! Other hosts go on. `promoting` is the fleet's, named `fleet` here.
//!
//! `ROLLBACK_TEST_FAULT_AT=verifying` or `verifying@<host>` makes the
//! engine feed that host an input its state does not take when its
//! verification begins, as a bug in the driver would (the safe stop of an
//! internal error).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rollback_core::{Checkpoint, Scope, Stage};

/// The checkpoints the environment asks for, if any.
#[derive(Debug)]
pub struct EnvCheckpoints {
    pause: Option<EnvPause>,
    fault: Option<(Stage, Option<String>)>,
}

impl EnvCheckpoints {
    /// The pause and the fault the environment names, if any.
    pub fn from_env() -> Option<Self> {
        let fault = std::env::var("ROLLBACK_TEST_FAULT_AT")
            .ok()
            .and_then(|spec| parse_at(&spec));
        let pause = EnvPause::from_env();
        (pause.is_some() || fault.is_some()).then_some(Self { pause, fault })
    }
}

#[async_trait]
impl Checkpoint for EnvCheckpoints {
    async fn reached(&self, stage: Stage, scope: &Scope) {
        if let Some(pause) = &self.pause {
            pause.reached(stage, scope).await;
        }
    }

    fn fault(&self, stage: Stage, scope: &Scope) -> bool {
        let name = crate::output::scope_label(scope);
        self.fault
            .as_ref()
            .is_some_and(|(at, host)| *at == stage && host.as_deref().is_none_or(|h| h == name))
    }
}

/// `<stage>` or `<stage>@<host>`.
fn parse_at(spec: &str) -> Option<(Stage, Option<String>)> {
    let (stage, host) = match spec.split_once('@') {
        Some((stage, host)) => (stage, Some(host.to_owned())),
        None => (spec, None),
    };
    Some((stage.parse().ok()?, host))
}

/// Pause once at a stage named by the environment.
#[derive(Debug)]
pub struct EnvPause {
    stage: Stage,
    host: Option<String>,
    duration: Duration,
    fired: AtomicBool,
}

impl EnvPause {
    /// The pause the environment asks for, if any.
    pub fn from_env() -> Option<Self> {
        let spec = std::env::var("ROLLBACK_TEST_PAUSE_AT").ok()?;
        let duration = std::env::var("ROLLBACK_TEST_PAUSE_FOR")
            .ok()
            .and_then(|d| humantime::parse_duration(&d).ok())
            .unwrap_or(Duration::from_secs(3600));
        Self::parse(&spec, duration)
    }

    fn parse(spec: &str, duration: Duration) -> Option<Self> {
        let (stage, host) = parse_at(spec)?;
        Some(Self {
            stage,
            host,
            duration,
            fired: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl Checkpoint for EnvPause {
    async fn reached(&self, stage: Stage, scope: &Scope) {
        let name = crate::output::scope_label(scope);
        if stage != self.stage || self.host.as_deref().is_some_and(|h| h != name) {
            return;
        }
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("paused at {stage} on {name}");
        tokio::time::sleep(self.duration).await;
        eprintln!("resumed at {stage} on {name}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_once_at_the_named_stage_and_host() {
        let pause = EnvPause::parse("verifying@b", Duration::from_secs(5)).unwrap();
        let began = tokio::time::Instant::now();
        pause
            .reached(Stage::Verifying, &Scope::Host("a".into()))
            .await;
        pause
            .reached(Stage::Switched, &Scope::Host("b".into()))
            .await;
        assert_eq!(began.elapsed(), Duration::ZERO);
        pause
            .reached(Stage::Verifying, &Scope::Host("b".into()))
            .await;
        assert_eq!(began.elapsed(), Duration::from_secs(5));
        pause
            .reached(Stage::Verifying, &Scope::Host("b".into()))
            .await;
        assert_eq!(began.elapsed(), Duration::from_secs(5), "once");
        assert!(EnvPause::parse("nowhere", Duration::ZERO).is_none());
    }

    #[test]
    fn a_fault_is_asked_for_at_its_stage_and_host_only() {
        let at = |spec: &str| EnvCheckpoints {
            pause: None,
            fault: parse_at(spec),
        };
        let a = Scope::Host("a".into());
        let b = Scope::Host("b".into());
        assert!(at("verifying@b").fault(Stage::Verifying, &b));
        assert!(!at("verifying@b").fault(Stage::Verifying, &a));
        assert!(!at("verifying@b").fault(Stage::Switched, &b));
        assert!(at("verifying").fault(Stage::Verifying, &a));
        assert!(parse_at("nowhere").is_none());
    }
}
