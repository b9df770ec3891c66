//! Property tests of the pure decisions: [`machine::step`] over random input
//! sequences and [`fleet::next`] over random fleets, checked against the
//! design's invariants.

use std::time::Duration;

use proptest::prelude::*;
use rollback_core::fleet::{self, FleetAction, FleetView, Promotion};
use rollback_core::machine::{Adoption, VerifyLimits};
use rollback_core::{
    step, CapturedRelease, ContainerExit, DeploymentId, Error, HostState, Input, LockInfo,
    OnFailure, Outcome, Workload,
};

const STABLE_FOR: Duration = Duration::from_secs(3);

/// `cases` random cases; a failure is shown with its shrunk input, and
/// kept as a table row of the unit tests rather than in a file.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn c(id: &str) -> Workload {
    Workload::from(id)
}

fn previous() -> Option<CapturedRelease> {
    Some(CapturedRelease {
        container: c("old"),
        release: None,
    })
}

fn at() -> impl Strategy<Value = Duration> {
    (0u64..30).prop_map(|half_seconds| Duration::from_millis(half_seconds * 500))
}

fn limits() -> impl Strategy<Value = VerifyLimits> {
    prop_oneof![Just(Duration::ZERO), Just(Duration::from_secs(5))].prop_map(|start_period| {
        VerifyLimits {
            deadline: Duration::from_secs(10),
            start_period,
            stable_for: STABLE_FOR,
        }
    })
}

fn error() -> impl Strategy<Value = Error> {
    prop_oneof![
        Just(Error::unhealthy("boom")),
        Just(Error::unavailable("engine down")),
        Just(Error::cancelled()),
    ]
}

/// Every kind of input, with random times and errors; most are invalid in
/// most states, which the walk skips.
fn input() -> impl Strategy<Value = Input> {
    let lock = LockInfo {
        app: "app".into(),
        deployment: DeploymentId("d-other".into()),
        holder: "someone".into(),
        target: "v2".into(),
        started_at: std::time::SystemTime::UNIX_EPOCH,
    };
    prop_oneof![
        3 => Just(Input::LockAcquired),
        1 => Just(Input::LockHeld(lock)),
        1 => error().prop_map(Input::LockFailed),
        3 => Just(Input::Captured(previous())),
        1 => Just(Input::Captured(None)),
        1 => error().prop_map(Input::CaptureFailed),
        3 => Just(Input::Pulled),
        1 => error().prop_map(Input::PullFailed),
        2 => Just(Input::Switched { new_container: c("new") }),
        2 => Just(Input::StartedBeside { new_container: c("new") }),
        3 => at().prop_map(|at| Input::TrafficSwitched { at }),
        1 => error().prop_map(Input::TrafficSwitchFailed),
        1 => error().prop_map(Input::ProxyLost),
        1 => error().prop_map(|reason| Input::SwitchFailed { new_container: Some(c("new")), reason }),
        1 => error().prop_map(|reason| Input::SwitchFailed { new_container: None, reason }),
        1 => any::<bool>().prop_map(|traffic_moved| Input::Adopted {
            adoption: Adoption::Running { container: c("new"), traffic_moved },
            retained: previous(),
        }),
        1 => error().prop_map(|reason| Input::Adopted {
            adoption: Adoption::Broken { container: Some(c("new")), reason },
            retained: previous(),
        }),
        3 => limits().prop_map(Input::VerifyStarted),
        6 => at().prop_map(|at| Input::ProbeHealthy { at }),
        3 => at().prop_map(|at| Input::ProbeUnhealthy { at, reason: "DOWN".into() }),
        1 => at().prop_map(|at| Input::ProbeStarting { at }),
        1 => Just(Input::ContainerExited(ContainerExit::Exited { code: 1 })),
        1 => error().prop_map(Input::WatchLost),
        1 => Just(Input::DeadlinePassed),
        1 => Just(Input::Cancelled),
        1 => error().prop_map(Input::Revert),
        1 => Just(Input::Halt),
        3 => limits().prop_map(Input::Restarted),
        1 => Just(Input::Cleared),
        3 => Just(Input::Tidied),
        1 => error().prop_map(Input::TidyFailed),
        1 => error().prop_map(Input::RestoreFailed),
        2 => Just(Input::Retired),
        1 => error().prop_map(Input::RetireFailed),
    ]
}

fn probe_at(input: &Input) -> Option<Duration> {
    match input {
        Input::ProbeHealthy { at }
        | Input::ProbeUnhealthy { at, .. }
        | Input::ProbeStarting { at } => Some(*at),
        _ => None,
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Walk the machine from `Planned` with random inputs (invalid ones are
    /// refused and change nothing) and check each transition.
    #[test]
    fn step_keeps_the_invariants_over_any_input_sequence(inputs in prop::collection::vec(input(), 1..60)) {
        let mut state = HostState::Planned;
        // Whether something changed on the host: a failure must then restore.
        let mut changed = false;
        // When the traffic moved to the new release, in this verification.
        let mut switched_at: Option<Duration> = None;
        for input in inputs {
            let Ok(next) = step(state.clone(), input.clone()) else {
                continue;
            };
            let trail = format!("{} + {} -> {}", state.name(), input.name(), next.name());
            prop_assert!(!state.is_terminal(), "a terminal state moved: {trail}");
            changed |= next.is_switched();
            match &next {
                HostState::Failed { .. } | HostState::Refused { .. } => {
                    prop_assert!(!changed, "a changed host ends without a restore: {trail}");
                }
                HostState::Done { .. } => {
                    prop_assert!(matches!(state, HostState::Verified { .. }), "{trail}");
                }
                HostState::Verified { .. } => {
                    prop_assert!(
                        matches!(state, HostState::Verifying { .. } | HostState::Serving { .. })
                            && matches!(input, Input::ProbeHealthy { .. }),
                        "verified without a healthy answer: {trail}"
                    );
                    if let (HostState::Serving { .. }, Some(switched), Some(at)) =
                        (&state, switched_at, probe_at(&input))
                    {
                        prop_assert!(
                            at >= switched + STABLE_FOR,
                            "stable {at:?} after a switch at {switched:?}: {trail}"
                        );
                    }
                }
                // No request reaches a release before a healthy answer.
                HostState::Ready { .. } => {
                    prop_assert!(
                        matches!(state, HostState::Warming { .. })
                            && matches!(input, Input::ProbeHealthy { .. }),
                        "{trail}"
                    );
                }
                HostState::Serving { .. } if !matches!(state, HostState::Serving { .. }) => {
                    prop_assert!(matches!(state, HostState::Ready { .. }), "{trail}");
                    let Input::TrafficSwitched { at } = input else {
                        return Err(TestCaseError::fail(format!("serving without a switch: {trail}")));
                    };
                    switched_at = Some(at);
                }
                HostState::RolledBack { .. } => {
                    prop_assert!(
                        matches!(state, HostState::Restoring { .. })
                            || matches!((&state, &input), (HostState::RollingBack { .. }, Input::Cleared)),
                        "rolled back without a verified restore: {trail}"
                    );
                }
                _ => {}
            }
            // While users are on the new release, any bad answer sends them back.
            if matches!(state, HostState::Serving { .. })
                && matches!(input, Input::ProbeUnhealthy { .. } | Input::ProbeStarting { .. })
                && switched_at.is_some()
            {
                prop_assert!(matches!(next, HostState::RollingBack { .. }), "{trail}");
            }
            if !matches!(next, HostState::Serving { .. } | HostState::Ready { .. }) {
                switched_at = None;
            }
            state = next;
        }
    }
}

/// Host states the fleet decides between (never mid-step).
fn between_steps() -> impl Strategy<Value = HostState> {
    prop_oneof![
        1 => Just(HostState::Planned),
        1 => Just(HostState::Locked),
        1 => Just(HostState::Refused { reason: Error::unavailable("engine down"), holder: None }),
        1 => Just(HostState::Failed { reason: Error::unhealthy("pull failed"), previous: previous() }),
        1 => Just(HostState::Switched { new_container: c("new"), retained: previous(), traffic_moved: false }),
        3 => any::<bool>().prop_map(|traffic_moved| HostState::Verified {
            new_container: c("new"),
            retained: previous(),
            traffic_moved,
        }),
        1 => (error(), any::<bool>()).prop_map(|(reason, traffic_moved)| HostState::RollingBack {
            failed_container: Some(c("new")),
            retained: previous(),
            reason,
            traffic_moved,
        }),
        1 => Just(HostState::RolledBack { restored: previous(), reason: Error::unhealthy("boom") }),
        1 => Just(HostState::RollbackFailed {
            reason: Error::unhealthy("boom"),
            failure: Error::unavailable("start failed"),
            previous: None,
        }),
        1 => Just(HostState::Halted {
            failed_container: Some(c("new")),
            retained: previous(),
            reason: Error::unhealthy("boom"),
        }),
        3 => Just(HostState::Done { new_container: c("new"), previous: None, leftover: None }),
    ]
}

fn on_failure() -> impl Strategy<Value = OnFailure> {
    prop_oneof![
        Just(OnFailure::RollbackAll),
        Just(OnFailure::RollbackHost),
        Just(OnFailure::Halt)
    ]
}

fn promotion() -> impl Strategy<Value = Promotion> {
    prop_oneof![
        Just(Promotion::Pending),
        Just(Promotion::Done),
        Just(Promotion::Failed)
    ]
}

fn troubled(state: &HostState) -> bool {
    matches!(
        state,
        HostState::Refused { .. }
            | HostState::Failed { .. }
            | HostState::RollingBack { .. }
            | HostState::RolledBack { .. }
            | HostState::RollbackFailed { .. }
            | HostState::Halted { .. }
    )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn next_never_promotes_or_deploys_past_a_failure(
        hosts in prop::collection::vec(between_steps(), 1..5),
        on_failure in on_failure(),
        batch in 1usize..4,
        cancelled in any::<bool>(),
        promotion in promotion(),
        promote in any::<bool>(),
        behind in prop::option::of(0usize..4),
    ) {
        let behind = behind.filter(|i| *i < hosts.len());
        let view = FleetView::new(&hosts, on_failure, batch)
            .cancelled(cancelled)
            .promotion(promotion)
            .promote(promote)
            .behind(behind);
        let action = fleet::next(&view);
        let seen = format!("{action:?} for {:?}", hosts.iter().map(HostState::name).collect::<Vec<_>>());
        match &action {
            FleetAction::Promote => {
                prop_assert!(promote && promotion == Promotion::Pending && !cancelled, "{seen}");
                prop_assert!(behind.is_none(), "promoted with a host behind: {seen}");
                prop_assert!(
                    hosts.iter().all(|s| matches!(
                        s,
                        HostState::Verified { .. } | HostState::Done { .. } | HostState::Planned
                    )),
                    "promoted with a host not verified: {seen}"
                );
            }
            FleetAction::Deploy(batch_hosts) => {
                prop_assert!(!cancelled && batch_hosts.len() <= batch, "{seen}");
                prop_assert!(!hosts.iter().any(troubled), "deploys past a failure: {seen}");
                prop_assert!(batch_hosts.iter().all(|i| matches!(hosts[*i], HostState::Locked)), "{seen}");
            }
            FleetAction::Revert { hosts: sent, .. } => {
                prop_assert!(sent.iter().all(|i| hosts[*i].is_switched()), "{seen}");
            }
            FleetAction::Restore(restored) => {
                prop_assert!(
                    restored.iter().all(|i| matches!(hosts[*i], HostState::RollingBack { .. })),
                    "{seen}"
                );
            }
            FleetAction::Halt(halted) => {
                prop_assert!(on_failure == OnFailure::Halt && !cancelled, "{seen}");
                prop_assert!(
                    halted.iter().all(|i| matches!(hosts[*i], HostState::RollingBack { .. })),
                    "{seen}"
                );
            }
            FleetAction::Retire(retired) => {
                prop_assert!(
                    retired.iter().all(|i| matches!(hosts[*i], HostState::Verified { .. })),
                    "{seen}"
                );
                // Under rollback-all a failure sends every verified host back.
                let failure = hosts.iter().any(troubled) || cancelled;
                prop_assert!(
                    !(failure && (on_failure == OnFailure::RollbackAll || cancelled)),
                    "retired beside a failure under rollback-all: {seen}"
                );
            }
            FleetAction::Finish { outcome, .. } => {
                if *outcome == Outcome::Deployed {
                    prop_assert!(!hosts.iter().any(troubled) && !cancelled, "{seen}");
                    prop_assert!(
                        !hosts.iter().any(|s| matches!(s, HostState::Verified { .. } | HostState::Locked)),
                        "deployed with a host not done: {seen}"
                    );
                }
                if !hosts.iter().any(|s| matches!(s, HostState::Refused { .. })) {
                    prop_assert!(
                        !hosts.iter().any(|s| matches!(s, HostState::RollingBack { .. })),
                        "finished with a host mid-rollback: {seen}"
                    );
                }
            }
            other => prop_assert!(false, "unknown action {other:?}"),
        }
    }
}

/// A host state the fleet decides between, or one refused because another
/// deploy holds the lock.
fn fleet_host() -> impl Strategy<Value = HostState> {
    prop_oneof![
        12 => between_steps(),
        1 => Just(HostState::Refused {
            reason: Error::conflict("held"),
            holder: Some(LockInfo {
                app: "app".into(),
                deployment: DeploymentId("d".into()),
                holder: "someone".into(),
                target: "v2".into(),
                started_at: std::time::SystemTime::UNIX_EPOCH,
            }),
        }),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// The indexed fleet the driver keeps decides as the pure policy does
    /// over the same states, after any sequence of changes.
    #[test]
    fn the_indexed_fleet_decides_as_the_pure_policy(
        hosts in prop::collection::vec(fleet_host(), 1..10),
        on_failure in on_failure(),
        batch in 1usize..5,
        promote in any::<bool>(),
        behind in prop::option::of(0usize..10),
        changes in prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                fleet_host(),
                any::<bool>(),
                prop_oneof![promotion(), Just(Promotion::StableMoved)],
            ),
            0..40,
        ),
    ) {
        let behind = behind.filter(|i| *i < hosts.len());
        let mut indexed = fleet::IndexedFleet::new(hosts.clone(), on_failure, batch)
            .promote(promote)
            .behind(behind);
        let mut states = hosts;
        let check = |indexed: &fleet::IndexedFleet, states: &[HostState], cancelled: bool, promotion: Promotion| {
            let view = FleetView::new(states, on_failure, batch)
                .cancelled(cancelled)
                .promotion(promotion)
                .promote(promote)
                .behind(behind);
            let seen = format!("{:?}", states.iter().map(HostState::name).collect::<Vec<_>>());
            prop_assert_eq!(indexed.hosts(), states, "{}", seen);
            prop_assert_eq!(indexed.next(cancelled, promotion), fleet::next(&view), "{}", seen);
            prop_assert_eq!(indexed.cause(cancelled), fleet::cause(&view), "{}", seen);
            prop_assert_eq!(indexed.outcome(cancelled, promotion), fleet::outcome(&view), "{}", seen);
            Ok(())
        };
        check(&indexed, &states, false, Promotion::Pending)?;
        for (at, state, cancelled, promotion) in changes {
            let i = at.index(states.len());
            states[i] = state.clone();
            indexed.set(i, state);
            check(&indexed, &states, cancelled, promotion)?;
        }
    }
}
