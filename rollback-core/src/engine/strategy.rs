//! Deploy strategies: how the new release takes the old one's place on a
//! host, and how the old one comes back.
//!
//! A strategy is a path through the [state machine](crate::machine) and
//! the effects the driver performs on it. Every strategy shares the
//! machine's verification, restore and retirement rows; what differs is
//! what "switch", "restore" and "retire" do on the host:
//!
//! | effect | [`Strategy::StopFirst`] |
//! |---|---|
//! | switch (`Pulled → Switched`) | stop the old container, rename it to the retained name, create and start the new one under the app name |
//! | free the failed release (`RollingBack`) | stop the new container (remove it when it will not stop: it may hold the port) |
//! | restart (`RollingBack → Restoring`) | start the retained container again |
//! | tidy (beside `Restoring`) | keep the failed container's logs, remove it, give the retained one the app name back |
//! | retire (`Verified → Done`) | remove the retained container |
//!
//! `docs/architecture.md` shows how a start-first strategy behind a proxy
//! and a Swarm service update take the same places.

use std::time::{Duration, SystemTime};

use super::emit::Emitter;
use super::{timed, Deployer, HostTarget};
use crate::engine::CancellationToken;
use crate::error::Error;
use crate::event::{Phase, Scope};
use crate::machine::{CapturedRelease, Input};
use crate::types::{
    labels, retained_name, ContainerId, ContainerInfo, ContainerSpec, Digest, Release, Tag,
};

/// Default time between SIGTERM and SIGKILL when the spec names none.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept from a failed container.
pub(crate) const LOG_LINES: usize = 20;

/// How the new release replaces the old one on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Stop the old container and keep it (renamed), start the new one in
    /// its place, under the app name and on the same ports. The app does
    /// not answer between the stop and the new release's start; rolling
    /// back starts the kept container again. Needs nothing but the engine.
    #[default]
    StopFirst,
}

impl Deployer {
    /// The plan's sentences for the switch on `host`, from what runs there.
    pub(crate) fn switch_steps(
        &self,
        host: &HostTarget,
        current: Option<&ContainerInfo>,
        release: &Release,
    ) -> Vec<String> {
        let retained = retained_name(&self.app.name);
        let mut steps = Vec::new();
        match host.strategy {
            Strategy::StopFirst => {
                if let Some(c) = current {
                    steps.push(format!(
                        "stop container {} ({}) and keep it as {retained}",
                        c.id,
                        c.release
                            .as_ref()
                            .map(Release::display_name)
                            .unwrap_or_else(|| "unknown release".into()),
                    ));
                }
                steps.push(format!(
                    "create and start {} from {}",
                    self.app.name,
                    release.display_name()
                ));
                steps.push(format!(
                    "verify with {} (deadline {}, stable for {})",
                    host.probe.describe(),
                    humantime::format_duration(self.health.deadline()),
                    humantime::format_duration(self.health.stable_for())
                ));
                if current.is_some() {
                    steps.push(format!(
                        "on success remove {retained}; on failure restore it"
                    ));
                }
            }
        }
        steps
    }

    /// Put the new release in place of `previous`: [`Input::Switched`], or
    /// [`Input::SwitchFailed`] with the new container when it was created.
    pub(crate) async fn switch(
        &self,
        host: &HostTarget,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Input {
        let result = match host.strategy {
            Strategy::StopFirst => {
                self.stop_first(host, previous, target, stable_before, cancel)
                    .await
            }
        };
        match result {
            Ok(new_container) => Input::Switched { new_container },
            Err((new_container, reason)) => Input::SwitchFailed {
                new_container,
                reason,
            },
        }
    }

    async fn stop_first(
        &self,
        host: &HostTarget,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Result<ContainerId, (Option<ContainerId>, Error)> {
        let limit = self.timeouts.engine;
        let cancelled = |new: Option<ContainerId>| (new, Error::cancelled());
        if let Some(previous) = previous {
            let stop = host.container.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
            timed(
                stop + self.timeouts.stop_grace,
                format!("stop container {}", previous.container),
                host.runtime.stop(&previous.container, stop),
            )
            .await
            .map_err(|e| (None, e))?;
            if cancel.is_cancelled() {
                return Err(cancelled(None));
            }
            timed(
                limit,
                format!("rename container {}", previous.container),
                host.runtime
                    .rename(&previous.container, &retained_name(&self.app.name)),
            )
            .await
            .map_err(|e| (None, e))?;
        }
        if cancel.is_cancelled() {
            return Err(cancelled(None));
        }
        let mut spec = ContainerSpec::new(
            self.app.name.as_str(),
            target.image(),
            host.container.clone(),
        );
        let replaced = previous.and_then(|p| p.release.as_ref());
        let release_labels = [
            (labels::MANAGED, Some("true".to_owned())),
            (labels::APP, Some(self.app.name.to_string())),
            (labels::REPOSITORY, Some(target.repository.to_string())),
            (labels::TAG, target.tag.as_ref().map(Tag::to_string)),
            (labels::DIGEST, Some(target.digest.to_string())),
            (labels::DEPLOYMENT, Some(self.deployment.to_string())),
            (
                labels::DEPLOYED_AT,
                Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
            ),
            (labels::STABLE_BEFORE, stable_before.map(|d| d.to_string())),
            (
                labels::REPLACED_DIGEST,
                replaced.map(|r| r.digest.to_string()),
            ),
            (
                labels::REPLACED_TAG,
                replaced.and_then(|r| r.tag.as_ref().map(Tag::to_string)),
            ),
        ];
        for (key, value) in release_labels {
            if let Some(value) = value {
                spec.labels.insert(key.to_owned(), value);
            }
        }
        let id = timed(
            limit,
            format!("create container {}", self.app.name),
            host.runtime.create(&spec),
        )
        .await
        .map_err(|e| (None, e))?;
        if cancel.is_cancelled() {
            return Err(cancelled(Some(id)));
        }
        timed(
            limit,
            format!("start container {id}"),
            host.runtime.start(&id),
        )
        .await
        .map_err(|e| (Some(id.clone()), e))?;
        Ok(id)
    }

    /// Free what the failed release holds, first thing in a restore.
    /// Returns the failed container while it still exists.
    pub(crate) async fn release_failed(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        failed: Option<ContainerId>,
    ) -> Result<Option<ContainerId>, Error> {
        let Some(id) = failed else {
            return Ok(None);
        };
        match host.strategy {
            Strategy::StopFirst => {
                let stop = host.container.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
                match timed(
                    stop + self.timeouts.stop_grace,
                    format!("stop container {id}"),
                    host.runtime.stop(&id, stop),
                )
                .await
                {
                    Ok(()) => Ok(Some(id)),
                    Err(e) => {
                        ev.note(
                            &Scope::Host(host.id.clone()),
                            Phase::RollingBack,
                            e.report(),
                        );
                        // Not known to be stopped: it may still hold the
                        // port, so it goes now (a forced remove), logs or not.
                        self.remove_gone(host, &id).await?;
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Run the retained release again, once the failed one is out of its way.
    pub(crate) async fn restart_previous(
        &self,
        host: &HostTarget,
        failed: Option<&ContainerId>,
        retained: &CapturedRelease,
    ) -> Result<(), Error> {
        let limit = self.timeouts.engine;
        let rt = &host.runtime;
        let id = &retained.container;
        match host.strategy {
            Strategy::StopFirst => {
                // A container created under the app name whose id never
                // reached us (a lost answer) could hold the port and blocks
                // the rename back.
                let current =
                    timed(limit, "read the app container", rt.current(&self.app.name)).await?;
                if let Some(c) = current {
                    if &c.id != id && Some(&c.id) != failed {
                        self.remove_gone(host, &c.id).await?;
                    }
                }
                timed(limit, format!("start container {id}"), rt.start(id)).await
            }
        }
    }

    /// What a restore does beside the restored release's verification: the
    /// failed container's logs (when there is one) and the clean-up.
    pub(crate) async fn tidy(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        failed: Option<&ContainerId>,
        retained: &CapturedRelease,
    ) -> super::host::Tidying {
        let limit = self.timeouts.engine;
        let rt = &host.runtime;
        let id = &retained.container;
        match host.strategy {
            Strategy::StopFirst => {
                let (logs, removed) = match failed {
                    Some(failed) => {
                        let (logs, removed) = self.clear_failed(ev, host, failed).await;
                        (Some(logs), removed)
                    }
                    None => (None, Ok(())),
                };
                let renamed = async {
                    removed?;
                    let info =
                        timed(limit, format!("inspect container {id}"), rt.inspect(id)).await?;
                    if info.name != self.app.name {
                        timed(
                            limit,
                            format!("rename container {id}"),
                            rt.rename(id, &self.app.name),
                        )
                        .await?;
                    }
                    Ok::<_, Error>(())
                };
                (logs, renamed.await)
            }
        }
    }

    /// The previous release is no longer needed: drop what kept it.
    pub(crate) async fn retire(
        &self,
        host: &HostTarget,
        retained: &ContainerId,
    ) -> Result<(), Error> {
        match host.strategy {
            Strategy::StopFirst => self.remove_gone(host, retained).await,
        }
    }
}
