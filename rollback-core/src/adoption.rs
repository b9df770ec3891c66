//! Recover's decisions, as pure functions of what it read on the hosts.
//!
//! `recover` reads every host first (containers, lock, the proxy's route),
//! then decides here: which hosts an interrupted deploy had switched and
//! how to take each over ([`adopt`]), which host the deploy never reached
//! ([`behind`]), and whether the verified hosts agree on one labelled
//! release to promote ([`agreed_release`]). The engine performs the
//! effects; these functions do no I/O, so each decision is a table test.

use crate::error::{Error, ErrorKind};
use crate::machine::{Adoption, CapturedRelease};
use std::time::SystemTime;

use crate::types::{labels, ContainerInfo, DeploymentId, Digest, LockInfo, Workload};

/// What recover read on one host.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Observed<'a> {
    /// The app's name (its container's name).
    pub app_name: &'a str,
    /// The container under the app name.
    pub app: Option<&'a ContainerInfo>,
    /// The previous release's container, kept by a stop-first switch.
    pub retained: Option<&'a ContainerInfo>,
    /// The app's lock, when one was left.
    pub lock: Option<&'a LockInfo>,
    /// Start-first: the new release's container started beside the app's,
    /// and whether the proxy sends it the traffic.
    pub beside: Option<(&'a ContainerInfo, bool)>,
}

impl<'a> Observed<'a> {
    /// A host where `app_name` runs `app`, with nothing else seen.
    pub fn new(app_name: &'a str, app: Option<&'a ContainerInfo>) -> Self {
        Self {
            app_name,
            app,
            retained: None,
            lock: None,
            beside: None,
        }
    }

    /// The retained container seen.
    pub fn retained(mut self, retained: Option<&'a ContainerInfo>) -> Self {
        self.retained = retained;
        self
    }

    /// The lock seen.
    pub fn lock(mut self, lock: Option<&'a LockInfo>) -> Self {
        self.lock = lock;
        self
    }

    /// The container seen beside the app's, and whether the proxy serves it.
    pub fn beside(mut self, beside: Option<(&'a ContainerInfo, bool)>) -> Self {
        self.beside = beside;
        self
    }
}

/// How recover takes a host over: `None` when no deploy was interrupted
/// there after its switch (nothing to recover).
///
/// - Start-first, a container beside the app's: it is the new release. It
///   is adopted running (verified, the traffic already on it) when the
///   proxy sends it the traffic and it runs; otherwise it is broken, and
///   the app's container, which never stopped, goes back.
/// - A retained container: the stop-first switch happened; the app
///   container is adopted running when it runs, broken otherwise.
/// - No retained container, but an app container labelled with the
///   deployment of the lock left behind: an interrupted first deploy.
pub fn adopt(seen: &Observed<'_>) -> Option<(Adoption, Option<CapturedRelease>)> {
    let captured = |c: &ContainerInfo| CapturedRelease {
        container: c.id.clone().into(),
        release: c.release.clone(),
    };
    if let Some((beside, serving)) = seen.beside {
        let adoption = if serving && beside.state.is_running() {
            Adoption::Running {
                container: beside.id.clone().into(),
                traffic_moved: true,
            }
        } else {
            Adoption::Broken {
                container: Some(beside.id.clone().into()),
                reason: if serving {
                    Error::unhealthy(format!("{} is {}", beside.name, beside.state))
                } else {
                    Error::new(
                        ErrorKind::Cancelled,
                        "interrupted before the proxy sent it any request",
                    )
                },
            }
        };
        return Some((adoption, seen.app.map(captured)));
    }
    let interrupted_first = seen.retained.is_none()
        && seen.lock.is_some_and(|l| {
            seen.app.and_then(ContainerInfo::deployment).as_ref() == Some(&l.deployment)
        });
    if seen.retained.is_none() && !interrupted_first {
        return None;
    }
    let adoption = match seen.app {
        Some(app) if app.state.is_running() => Adoption::Running {
            container: app.id.clone().into(),
            traffic_moved: false,
        },
        Some(app) => Adoption::Broken {
            reason: Error::unhealthy(format!("{} is {}", seen.app_name, app.state)),
            container: Some(app.id.clone().into()),
        },
        None => Adoption::Broken {
            container: None,
            reason: Error::not_found(format!("{} does not exist", seen.app_name)),
        },
    };
    Some((adoption, seen.retained.map(captured)))
}

/// What recover read of a service (a Swarm strategy's workload).
#[derive(Debug, Clone, Copy)]
pub struct ServiceObserved<'a> {
    /// The service as its spec runs it now.
    pub current: &'a Workload,
    /// The deployment named in the spec's labels.
    pub deployment: Option<&'a DeploymentId>,
    /// The release the spec's labels say it replaced, as the workload it
    /// ran (`None` on a service the deploy created).
    pub replaced: Option<&'a CapturedRelease>,
    /// What the current spec runs, as a captured release.
    pub running: &'a CapturedRelease,
    /// Swarm's update state (`updating`, `paused`, `completed`,
    /// `rollback_started`, ...).
    pub update_state: Option<&'a str>,
    /// Swarm's message about it.
    pub update_message: Option<&'a str>,
    /// When the last update or rollback began.
    pub update_started: Option<SystemTime>,
    /// The app's lock, when one was left.
    pub lock: Option<&'a LockInfo>,
}

/// How recover takes a service over: `None` when no deploy was
/// interrupted there after its update (nothing to recover).
///
/// - The spec carries the deployment of the lock left behind: that deploy
///   wrote it. Swarm paused the update (a task failed): broken, the
///   replaced release goes back. Otherwise it is adopted running (its tasks
///   take requests once their HEALTHCHECK passes) and verified.
/// - The spec is another's, but a rollback began after the lock was
///   taken: the interrupted deploy was restoring; the spec it went back to
///   is verified as the release restored.
pub fn adopt_service(seen: &ServiceObserved<'_>) -> Option<(Adoption, Option<CapturedRelease>)> {
    let lock = seen.lock?;
    if seen.deployment == Some(&lock.deployment) {
        let adoption = match seen.update_state {
            Some(state @ ("paused" | "rollback_paused")) => Adoption::Broken {
                container: Some(seen.current.clone()),
                reason: Error::unhealthy(format!(
                    "Swarm {state}: {}",
                    seen.update_message.unwrap_or("no reason given")
                )),
            },
            _ => Adoption::Running {
                container: seen.current.clone(),
                traffic_moved: true,
            },
        };
        return Some((adoption, seen.replaced.cloned()));
    }
    let restoring = matches!(
        seen.update_state,
        Some("rollback_started" | "rollback_paused" | "rollback_completed")
    ) && seen
        .update_started
        .is_some_and(|started| started >= lock.started_at);
    restoring.then(|| {
        (
            Adoption::Broken {
                container: None,
                reason: Error::new(
                    ErrorKind::Cancelled,
                    "interrupted while the service went back to its previous spec",
                ),
            },
            Some(seen.running.clone()),
        )
    })
}

/// One host as [`behind`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached<'a> {
    /// Recover adopted it, its new release running (it will be verified).
    pub adopted_running: bool,
    /// Recover left it alone (nothing was interrupted there).
    pub untouched: bool,
    /// The digest its app container runs, when it runs.
    pub runs: Option<&'a Digest>,
}

/// The new release (what the first adopted, running host runs) and the
/// first untouched host that does not run it: an interrupted deploy that
/// never reached that host cannot be finished, only reverted.
pub fn behind<'a>(hosts: &[Reached<'a>]) -> (Option<&'a Digest>, Option<usize>) {
    let new = hosts
        .iter()
        .filter(|h| h.adopted_running)
        .find_map(|h| h.runs);
    let behind = new.and_then(|new| {
        hosts
            .iter()
            .position(|h| h.untouched && h.runs != Some(new))
    });
    (new, behind)
}

/// The release the verified hosts' app containers are labelled with, and
/// the stable digest their deploy began with, when every one agrees on
/// both; `None` (nothing to promote) otherwise.
pub fn agreed_release(verified: &[&ContainerInfo]) -> Option<(Digest, Option<Digest>)> {
    let label = |c: &ContainerInfo, key: &str| c.labels.get(key).cloned();
    let digests: Vec<Option<String>> = verified.iter().map(|c| label(c, labels::DIGEST)).collect();
    let befores: Vec<Option<String>> = verified
        .iter()
        .map(|c| label(c, labels::STABLE_BEFORE))
        .collect();
    let agreed =
        digests.windows(2).all(|w| w[0] == w[1]) && befores.windows(2).all(|w| w[0] == w[1]);
    if !agreed {
        return None;
    }
    let new = digests.first().cloned().flatten()?.parse::<Digest>().ok()?;
    let before = befores
        .first()
        .cloned()
        .flatten()
        .and_then(|d| d.parse::<Digest>().ok());
    Some((new, before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContainerId, ContainerState, DeploymentId, Workload};
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    #[test]
    fn a_service_is_adopted_by_what_its_spec_and_update_state_say() {
        let taken = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let lock = LockInfo {
            app: "shop".into(),
            deployment: DeploymentId("d1".into()),
            holder: "ci".into(),
            target: "v2".into(),
            started_at: taken,
        };
        let new = Workload::service("shop", 12, "r/shop:v2@sha256:2");
        let old = Workload::service("shop", 10, "r/shop:v1@sha256:1");
        let captured = |w: &Workload| CapturedRelease {
            container: w.clone(),
            release: None,
        };
        let (replaced, running_new, running_old) = (captured(&old), captured(&new), captured(&old));
        let ours = DeploymentId("d1".into());
        let theirs = DeploymentId("d0".into());
        let before = taken - std::time::Duration::from_secs(60);
        let after = taken + std::time::Duration::from_secs(5);
        // (spec's deployment, update state, update began after the lock, lock left) -> adoption
        type Row<'a> = (
            Option<&'a DeploymentId>,
            Option<&'a str>,
            bool,
            bool,
            &'a str,
        );
        let table: &[Row<'_>] = &[
            (
                Some(&ours),
                Some("updating"),
                true,
                true,
                "run+moved new, keep old",
            ),
            (
                Some(&ours),
                Some("completed"),
                true,
                true,
                "run+moved new, keep old",
            ),
            (Some(&ours), None, false, true, "run+moved new, keep old"),
            (
                Some(&ours),
                Some("paused"),
                true,
                true,
                "broken new, keep old",
            ),
            (
                Some(&theirs),
                Some("rollback_started"),
                true,
                true,
                "broken -, keep old",
            ),
            (
                Some(&theirs),
                Some("rollback_completed"),
                true,
                true,
                "broken -, keep old",
            ),
            (
                Some(&theirs),
                Some("rollback_completed"),
                false,
                true,
                "none",
            ),
            (Some(&theirs), Some("completed"), true, true, "none"),
            (None, Some("updating"), true, true, "none"),
            (Some(&ours), Some("updating"), true, false, "none"),
        ];
        for (deployment, state, began_after, locked, expected) in table {
            let running = if *deployment == Some(&ours) {
                &running_new
            } else {
                &running_old
            };
            let seen = ServiceObserved {
                current: &running.container,
                deployment: *deployment,
                replaced: Some(&replaced),
                running,
                update_state: *state,
                update_message: Some("task failed"),
                update_started: Some(if *began_after { after } else { before }),
                lock: locked.then_some(&lock),
            };
            let name = |w: Option<&Workload>| match w {
                Some(w) if *w == new => "new",
                Some(_) => "old",
                None => "-",
            };
            let got = match adopt_service(&seen) {
                None => "none".to_owned(),
                Some((adoption, kept)) => {
                    let (how, w) = match &adoption {
                        Adoption::Running {
                            container,
                            traffic_moved: true,
                        } => ("run+moved", Some(container)),
                        Adoption::Running { container, .. } => ("run", Some(container)),
                        Adoption::Broken { container, .. } => ("broken", container.as_ref()),
                    };
                    format!(
                        "{how} {}, keep {}",
                        name(w),
                        name(kept.as_ref().map(|k| &k.container))
                    )
                }
            };
            assert_eq!(
                &got, expected,
                "{deployment:?} {state:?} after={began_after} locked={locked}"
            );
        }
    }

    fn container(name: &str, running: bool, deployment: Option<&str>) -> ContainerInfo {
        let mut labels = BTreeMap::new();
        if let Some(d) = deployment {
            labels.insert(labels::DEPLOYMENT.to_owned(), d.to_owned());
        }
        ContainerInfo {
            id: ContainerId(format!("{name}-id")),
            name: name.to_owned(),
            image_id: String::new(),
            release: None,
            labels,
            state: if running {
                ContainerState::Running { health: None }
            } else {
                ContainerState::Exited { code: 1 }
            },
            restart_count: 0,
            started_at: None,
        }
    }

    fn lock(deployment: &str) -> LockInfo {
        LockInfo {
            app: "app".into(),
            deployment: DeploymentId(deployment.into()),
            holder: "ci".into(),
            target: "v2".into(),
            started_at: SystemTime::UNIX_EPOCH,
        }
    }

    /// What was seen, by code: the app container (`A` running, `a`
    /// stopped, `-` none, `d` running and labelled with the lock's
    /// deployment), the retained container (`R` or `-`), the lock (`L` or
    /// `-`), the container beside (`S` running and served, `s` stopped and
    /// served, `N` running but not served, `-` none) -> the decision
    /// (`-` nothing to recover; `run`, `run+moved` or `broken`, then the
    /// adopted container and the retained one).
    const TABLE: &[(&str, &str)] = &[
        // Nothing was interrupted.
        ("A---", "-"),
        ("----", "-"),
        ("A-L-", "-"),
        // Stop-first, after the switch.
        ("AR--", "run app retained"),
        ("aR--", "broken app retained"),
        ("-R--", "broken - retained"),
        ("ARL-", "run app retained"),
        // A first deploy interrupted: its container carries the lock's
        // deployment.
        ("d-L-", "run app -"),
        ("d---", "-"),
        // Start-first: the container beside is the new release.
        ("A--S", "run+moved next app"),
        ("A--s", "broken next app"),
        ("A--N", "broken next app"),
        ("---S", "run+moved next -"),
        ("-R-N", "broken next -"),
    ];

    #[test]
    fn adoption_follows_the_table() {
        for (seen, expected) in TABLE {
            let codes: Vec<char> = seen.chars().collect();
            let app = match codes[0] {
                'A' => Some(container("app", true, Some("other"))),
                'a' => Some(container("app", false, None)),
                'd' => Some(container("app", true, Some("d1"))),
                _ => None,
            };
            let retained =
                (codes[1] == 'R').then(|| container("app--rollback-retained", false, None));
            let lock = (codes[2] == 'L').then(|| lock("d1"));
            let beside = match codes[3] {
                'S' => Some((container("next", true, None), true)),
                's' => Some((container("next", false, None), true)),
                'N' => Some((container("next", true, None), false)),
                _ => None,
            };
            let observed = Observed::new("app", app.as_ref())
                .retained(retained.as_ref())
                .lock(lock.as_ref())
                .beside(beside.as_ref().map(|(c, s)| (c, *s)));
            let got = match adopt(&observed) {
                None => "-".to_owned(),
                Some((adoption, kept)) => {
                    let (how, id) = match adoption {
                        Adoption::Running {
                            container,
                            traffic_moved: false,
                        } => ("run", Some(container)),
                        Adoption::Running { container, .. } => ("run+moved", Some(container)),
                        Adoption::Broken { container, .. } => ("broken", container),
                    };
                    let name = |id: Option<&Workload>| {
                        id.map_or("-".to_owned(), |id| {
                            id.to_string()
                                .trim_end_matches("-id")
                                .trim_start_matches("app--rollback-")
                                .to_owned()
                        })
                    };
                    format!(
                        "{how} {} {}",
                        name(id.as_ref()),
                        name(kept.as_ref().map(|k| &k.container))
                    )
                }
            };
            assert_eq!(&got, expected, "{seen}");
        }
    }

    #[test]
    fn a_broken_adoption_says_why() {
        let stopped = container("app", false, None);
        let retained = container("app--rollback-retained", false, None);
        let seen = Observed::new("app", Some(&stopped)).retained(Some(&retained));
        let Some((Adoption::Broken { reason, .. }, _)) = adopt(&seen) else {
            panic!("expected broken");
        };
        assert_eq!(reason.message(), "app is exited with code 1");
        let seen = Observed::new("app", None).retained(Some(&retained));
        let Some((Adoption::Broken { reason, .. }, _)) = adopt(&seen) else {
            panic!("expected broken");
        };
        assert_eq!(reason.kind(), ErrorKind::NotFound);
        let running = container("app", true, None);
        let beside = container("next", true, None);
        let seen = Observed::new("app", Some(&running)).beside(Some((&beside, false)));
        let Some((Adoption::Broken { reason, .. }, _)) = adopt(&seen) else {
            panic!("expected broken");
        };
        assert_eq!(reason.kind(), ErrorKind::Cancelled);
    }

    fn d(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .unwrap()
    }

    #[test]
    fn the_host_behind_is_the_first_untouched_one_without_the_new_release() {
        let (new, old) = (d(2), d(1));
        // Codes: `a` adopted running the new release, `u` untouched running
        // the new one, `o` untouched running the old one, `x` untouched
        // running nothing, `b` adopted broken.
        let table: &[(&str, Option<usize>)] = &[
            ("aa", None),
            ("au", None),
            ("ao", Some(1)),
            ("aox", Some(1)),
            ("aux", Some(2)),
            ("oa", Some(0)),
            // No adopted running host: no new release to be behind.
            ("bo", None),
            ("oo", None),
        ];
        for (codes, expected) in table {
            let hosts: Vec<Reached<'_>> = codes
                .chars()
                .map(|c| Reached {
                    adopted_running: c == 'a',
                    untouched: matches!(c, 'u' | 'o' | 'x'),
                    runs: match c {
                        'a' | 'u' => Some(&new),
                        'o' => Some(&old),
                        _ => None,
                    },
                })
                .collect();
            let (found, behind) = behind(&hosts);
            assert_eq!(behind, *expected, "{codes}");
            assert_eq!(found, codes.contains('a').then_some(&new), "{codes}");
        }
    }

    /// The release to promote and the stable digest the deploy began with.
    type Agreed = Option<(Digest, Option<Digest>)>;

    #[test]
    fn promotion_needs_the_verified_hosts_to_agree_on_their_labels() {
        let labelled = |digest: Option<&Digest>, before: Option<&Digest>| {
            let mut c = container("app", true, None);
            if let Some(digest) = digest {
                c.labels
                    .insert(labels::DIGEST.to_owned(), digest.to_string());
            }
            if let Some(before) = before {
                c.labels
                    .insert(labels::STABLE_BEFORE.to_owned(), before.to_string());
            }
            c
        };
        let (new, old, other) = (d(2), d(1), d(3));
        let a = labelled(Some(&new), Some(&old));
        let first = labelled(Some(&new), None);
        let b = labelled(Some(&other), Some(&old));
        let c = labelled(Some(&new), Some(&other));
        let none = labelled(None, None);
        let table: Vec<(Vec<&ContainerInfo>, Agreed)> = vec![
            (vec![&a, &a], Some((new.clone(), Some(old.clone())))),
            (vec![&a], Some((new.clone(), Some(old.clone())))),
            (vec![&first, &first], Some((new.clone(), None))),
            // Another release, or another stable tag at the start.
            (vec![&a, &b], None),
            (vec![&a, &c], None),
            (vec![&a, &first], None),
            (vec![&none, &none], None),
            (vec![], None),
        ];
        for (i, (verified, expected)) in table.into_iter().enumerate() {
            assert_eq!(agreed_release(&verified), expected, "row {i}");
        }
    }
}
