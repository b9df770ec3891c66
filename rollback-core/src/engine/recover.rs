//! Finish or revert a deploy that was interrupted after the switch.

use futures_util::future::join_all;

use super::emit::{Emitter, Pump};
use super::host::HostRun;
use super::{timed, CancellationToken, Deployer, HostTarget};
use crate::event::Phase;
use crate::machine::{CapturedRelease, HostState, Input};
use crate::outcome::{DeployReport, Outcome};
use crate::types::{labels, retained_name, ContainerInfo, Digest, Release};

/// What recover found on one host.
#[derive(Default)]
struct Found {
    /// The release of the app container of an interrupted deploy.
    release: Option<Release>,
    /// That container, when it runs.
    interrupted: Option<ContainerInfo>,
    /// The app container of a host with nothing to recover.
    untouched: Option<ContainerInfo>,
    /// Why the host could not be read.
    errors: Vec<String>,
}

impl Deployer {
    /// Finish or revert a deploy that was interrupted.
    ///
    /// On each host a retained container (or, for a first deploy, an app
    /// container labelled with the deployment of a leftover lock) means the
    /// deploy stopped after the switch. The app container is then verified: when it is healthy on
    /// every such host and every other host already runs the same release,
    /// the deploy is finished (tags promoted from the container's labels,
    /// retained containers removed); otherwise (a host unhealthy, or one the
    /// deploy never reached) every such host gets its retained release back,
    /// verified. Hosts without a
    /// retained container are left alone. The app's locks are released at
    /// the end, whoever held them.
    ///
    /// # Cancel safety
    ///
    /// Cancelling `cancel` during verification restores the retained
    /// release; dropping the future may leave a host half restored, and
    /// running `recover` again continues from there.
    pub async fn recover(&self, cancel: CancellationToken) -> DeployReport {
        let pump = Pump::start(self.observer.clone());
        let report = self.recover_with(pump.emitter(), &cancel).await;
        pump.finish().await;
        report
    }

    async fn recover_with(&self, ev: &Emitter, cancel: &CancellationToken) -> DeployReport {
        let mut runs: Vec<HostRun> = (0..self.hosts.len()).map(HostRun::new).collect();
        let mut releases: Vec<Option<Release>> = vec![None; self.hosts.len()];
        let mut app_containers: Vec<Option<ContainerInfo>> = vec![None; self.hosts.len()];
        // What runs on hosts the interrupted deploy left alone.
        let mut untouched: Vec<Option<ContainerInfo>> = vec![None; self.hosts.len()];
        let mut read_errors = Vec::new();

        // Hosts are read and verified at once: a fleet recovers in the time of one host.
        let reads = runs
            .iter_mut()
            .map(|run| self.recover_host(ev, &self.hosts[run.index], run, cancel));
        for (i, found) in join_all(reads).await.into_iter().enumerate() {
            releases[i] = found.release;
            app_containers[i] = found.interrupted;
            untouched[i] = found.untouched;
            read_errors.extend(found.errors);
        }

        let failed = runs
            .iter()
            .find(|r| matches!(r.state, HostState::RollingBack { .. }))
            .map(|r| {
                format!(
                    "reverted because host {} is not healthy",
                    self.hosts[r.index].id
                )
            });
        // Promoting needs the new release on every host: a host the deploy
        // never reached (a batch not started) runs another one.
        let new_digest = runs
            .iter()
            .filter(|r| matches!(r.state, HostState::Verified { .. }))
            .find_map(|r| app_containers[r.index].as_ref()?.release.as_ref())
            .map(|release| release.digest.clone());
        let unreached = new_digest.as_ref().and_then(|new| {
            runs.iter().filter(|r| !r.started).find_map(|r| {
                let runs_new = untouched[r.index].as_ref().is_some_and(|c| {
                    c.state.is_running() && c.release.as_ref().map(|rel| &rel.digest) == Some(new)
                });
                (!runs_new).then(|| {
                    format!(
                        "reverted because host {} does not run {}: the interrupted deploy never reached it",
                        self.hosts[r.index].id,
                        new.short()
                    )
                })
            })
        });
        let (outcome, reason, promoted, target) = if !read_errors.is_empty() {
            // Deciding for the fleet needs every host; change nothing.
            for run in runs.iter_mut().filter(|r| r.state.is_switched()) {
                run.state = HostState::Planned;
                run.started = false;
            }
            (Outcome::Failed, Some(read_errors.join("; ")), false, None)
        } else if let Some(why) = failed.or(unreached) {
            for run in runs.iter_mut() {
                if matches!(run.state, HostState::Verified { .. }) {
                    self.advance(ev, &self.hosts[run.index], run, Input::Revert(why.clone()));
                }
            }
            let work = runs
                .iter_mut()
                .filter(|r| matches!(r.state, HostState::RollingBack { .. }))
                .map(|run| self.restore_host(ev, &self.hosts[run.index], run));
            join_all(work).await;
            let outcome = if runs
                .iter()
                .any(|r| matches!(r.state, HostState::RollbackFailed { .. }))
            {
                Outcome::RollbackFailed
            } else {
                Outcome::RolledBack
            };
            (outcome, Some(why), false, None)
        } else if runs.iter().any(|r| r.state.is_switched()) {
            self.finish_interrupted(ev, &mut runs, &app_containers)
                .await
        } else {
            (Outcome::Deployed, None, false, None)
        };

        let unlocks = runs
            .iter_mut()
            .map(|run| self.unlock_host(ev, &self.hosts[run.index], run));
        join_all(unlocks).await;
        super::deploy::announce_outcome(ev, outcome, reason.as_deref());
        DeployReport {
            outcome,
            hosts: runs
                .iter()
                .map(|run| run.report(&self.hosts[run.index], releases[run.index].as_ref()))
                .collect(),
            target,
            reason,
            lock_holder: None,
            promoted,
        }
    }

    /// Read one host and, when a deploy was interrupted there, verify its
    /// app container; leaves `run` in `Verified`, `RollingBack` or untouched.
    async fn recover_host(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        run: &mut HostRun,
        cancel: &CancellationToken,
    ) -> Found {
        let limit = self.timeouts.engine;
        let retained_name = retained_name(&self.app.name);
        let mut found = Found::default();
        let lock = match timed(
            limit,
            "read the lock",
            host.runtime.lock_status(&self.app.name),
        )
        .await
        {
            Ok(Some(lock)) => {
                ev.note(
                    Some(&host.id),
                    Phase::Planned,
                    format!("lock held by {lock}; it is released at the end"),
                );
                Some(lock)
            }
            Ok(None) => None,
            Err(e) => {
                found
                    .errors
                    .push(format!("host {}: {}", host.id, e.report()));
                None
            }
        };
        // The lock is released at the end even though recover did not take it.
        run.lock_taken = true;
        let containers = match timed(
            limit,
            "list the app containers",
            host.runtime.list_app(&self.app.name),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                found
                    .errors
                    .push(format!("host {}: {}", host.id, e.report()));
                return found;
            }
        };
        let app = containers.iter().find(|c| c.name == self.app.name).cloned();
        let retained = containers.iter().find(|c| c.name == retained_name);
        // A first deploy keeps no retained container: its app container
        // carries the deployment of the lock left behind.
        let interrupted_first = retained.is_none()
            && lock.as_ref().is_some_and(|l| {
                app.as_ref().and_then(ContainerInfo::deployment).as_ref() == Some(&l.deployment)
            });
        if retained.is_none() && !interrupted_first {
            ev.note(Some(&host.id), Phase::Done, "nothing to recover");
            found.untouched = app;
            return found;
        }
        run.started = true;
        run.before = retained.and_then(|r| r.release.clone());
        run.previous_container = retained.map(|r| r.id.clone());
        let retained = retained.map(|r| CapturedRelease {
            container: r.id.clone(),
            release: r.release.clone(),
        });
        found.release = app.as_ref().and_then(|c| c.release.clone());
        match app {
            Some(app) if app.state.is_running() => {
                run.state = HostState::Pulled {
                    previous: retained.clone(),
                };
                self.advance(
                    ev,
                    host,
                    run,
                    Input::Switched {
                        new_container: app.id.clone(),
                    },
                );
                let state = std::mem::replace(&mut run.state, HostState::Planned);
                let (state, last) = self.verify(ev, host, &app.id, cancel, state, true).await;
                run.state = state;
                run.last_probe = last;
                found.interrupted = Some(app);
            }
            app => {
                run.state = HostState::Pulled {
                    previous: retained.clone(),
                };
                let reason = match &app {
                    Some(c) => format!("{} is {}", self.app.name, c.state),
                    None => format!("{} does not exist", self.app.name),
                };
                self.advance(
                    ev,
                    host,
                    run,
                    Input::SwitchFailed {
                        new_container: app.map(|c| c.id),
                        reason,
                    },
                );
            }
        }
        found
    }

    /// Every interrupted host is healthy: promote from the labels and clean up.
    async fn finish_interrupted(
        &self,
        ev: &Emitter,
        runs: &mut [HostRun],
        app_containers: &[Option<ContainerInfo>],
    ) -> (Outcome, Option<String>, bool, Option<Release>) {
        let verified: Vec<&ContainerInfo> = runs
            .iter()
            .filter(|r| r.state.is_switched())
            .filter_map(|r| app_containers[r.index].as_ref())
            .collect();
        let label = |c: &ContainerInfo, key: &str| c.labels.get(key).cloned();
        let digests: Vec<Option<String>> =
            verified.iter().map(|c| label(c, labels::DIGEST)).collect();
        let befores: Vec<Option<String>> = verified
            .iter()
            .map(|c| label(c, labels::STABLE_BEFORE))
            .collect();
        let target = verified.first().and_then(|c| c.release.clone());
        let agreed =
            digests.windows(2).all(|w| w[0] == w[1]) && befores.windows(2).all(|w| w[0] == w[1]);
        let new = digests
            .first()
            .cloned()
            .flatten()
            .and_then(|d| d.parse::<Digest>().ok());
        let (outcome, reason, promoted) = match new {
            Some(new) if agreed => {
                let before = befores
                    .first()
                    .cloned()
                    .flatten()
                    .and_then(|d| d.parse::<Digest>().ok());
                match self.move_tags(ev, &new, before.as_ref()).await {
                    Ok(()) => (Outcome::Deployed, None, true),
                    Err(e) => (
                        Outcome::PromotionFailed,
                        Some(format!("moving the tags failed: {}", e.report())),
                        false,
                    ),
                }
            }
            _ => (
                Outcome::PromotionFailed,
                Some("the hosts do not run one labelled release; tags left as they are".into()),
                false,
            ),
        };
        // Without promotion the retained containers stay, so recover can run again.
        if promoted {
            for run in runs.iter_mut() {
                if matches!(run.state, HostState::Verified { .. }) {
                    self.remove_retained(ev, &self.hosts[run.index], run).await;
                }
            }
        }
        (outcome, reason, promoted, target)
    }
}
