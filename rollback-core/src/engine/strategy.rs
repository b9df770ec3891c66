//! Deploy strategies: how the new release takes the old one's place on a
//! host, and how the old one comes back.
//!
//! A strategy is a path through the [state machine](crate::machine) and
//! the effects the driver performs on it. Every strategy shares the
//! machine's verification, restore and retirement rows; what differs is
//! what "switch", "restore" and "retire" do on the host:
//!
//! | effect | [`Strategy::StopFirst`] | [`Strategy::StartFirst`] |
//! |---|---|---|
//! | prepare (`Captured → Pulled`, beside the pull) | nothing | boot the proxy if it does not run; point it at the running release |
//! | switch (`Pulled → Switched` / `Started`) | rename the old container to the retained name, stop it, create and start the new one under the app name | create and start the new one beside the old one, as [`next_name`], on the proxy's network, no host port |
//! | traffic switch (`Ready → Serving`) | — | the proxy sends new requests to the new release; the old one stays its fallback |
//! | free the failed release (`RollingBack`) | stop the new container (remove it when it will not stop: it may hold the port) | nothing: it may still finish requests it took |
//! | restart (`RollingBack → Restoring`) | start the retained container again | the proxy sends the traffic back to the old container (started first if it was stopped) |
//! | tidy (beside `Restoring`) | keep the failed container's logs, remove it, give the retained one the app name back | drain the failed container, keep its logs, remove it |
//! | retire (`Verified → Done`) | remove the retained container | drain the old container, stop and remove it, give the new one the app name |
//!
//! `docs/architecture.md` shows how a Swarm service update would take the
//! same places.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::emit::Emitter;
use super::{timed, Deployer, HostTarget};
use crate::checkpoint::Stage;
use crate::engine::CancellationToken;
use crate::error::Error;
use crate::event::{Phase, Scope};
use crate::machine::{CapturedRelease, Input};
use crate::traffic::{TrafficSwitch, Upstream};
use crate::types::{
    labels, next_name, retained_name, ContainerId, ContainerInfo, ContainerSpec, Digest, Release,
    Tag,
};

/// Default time between SIGTERM and SIGKILL when the spec names none.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept from a failed container.
pub(crate) const LOG_LINES: usize = 20;

/// How the new release replaces the old one on a host.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Stop the old container and keep it (renamed), start the new one in
    /// its place, under the app name and on the same ports. The app does
    /// not answer between the stop and the new release's start; rolling
    /// back starts the kept container again. Needs nothing but the engine.
    #[default]
    StopFirst,
    /// Start the new release beside the old one behind a proxy, probe it
    /// directly, and only once it is healthy send it the traffic; the old
    /// one keeps running through `stable_for`, so going back is one proxy
    /// change. No request reaches a release that never answered healthy.
    StartFirst(StartFirst),
}

/// The proxy and the network of a [`Strategy::StartFirst`] host.
#[derive(Clone)]
#[non_exhaustive]
pub struct StartFirst {
    /// The proxy in front of the app on this host.
    pub switch: Arc<dyn TrafficSwitch>,
    /// The network the proxy shares with the app's containers.
    pub network: String,
    /// The container port the proxy sends requests to.
    pub app_port: u16,
    /// How long requests in flight get on the release being left.
    pub drain: Duration,
}

impl StartFirst {
    /// Default time requests in flight get on the release being left.
    pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

    /// The app behind `switch`, reached on `network` at `app_port`.
    pub fn new(switch: Arc<dyn TrafficSwitch>, network: impl Into<String>, app_port: u16) -> Self {
        Self {
            switch,
            network: network.into(),
            app_port,
            drain: Self::DEFAULT_DRAIN,
        }
    }

    /// How long requests in flight get on the release being left.
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Where the proxy reaches `container`.
    pub fn upstream(&self, container: &ContainerId) -> Upstream {
        Upstream::of(container, self.app_port)
    }

    /// `e`, named as the proxy's.
    pub(crate) fn blame(&self, e: Error) -> Error {
        e.context(format!("the proxy {}", self.switch.describe()))
    }
}

impl fmt::Debug for StartFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartFirst")
            .field("switch", &self.switch.describe())
            .field("network", &self.network)
            .field("app_port", &self.app_port)
            .field("drain", &self.drain)
            .finish()
    }
}

/// Time between SIGTERM and SIGKILL when the app's container stops.
fn stop_timeout(host: &HostTarget) -> Duration {
    host.container.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT)
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
        match &host.strategy {
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
            Strategy::StartFirst(sf) => {
                let next = next_name(&self.app.name);
                steps.push(format!(
                    "boot the proxy if it does not run: {}",
                    sf.switch.describe()
                ));
                steps.push(format!(
                    "create and start {next} from {} beside {}, on network {} without host ports",
                    release.display_name(),
                    current.map_or_else(
                        || "nothing (first deploy)".to_owned(),
                        |c| format!("container {}", c.id)
                    ),
                    sf.network
                ));
                steps.push(format!(
                    "probe it directly with {} until healthy (deadline {}); no request reaches it before",
                    host.probe.describe(),
                    humantime::format_duration(self.health.deadline()),
                ));
                steps.push(format!(
                    "switch the proxy to it; {} for {} while it serves",
                    if current.is_some() {
                        "the old container keeps running"
                    } else {
                        "keep probing it"
                    },
                    humantime::format_duration(self.health.stable_for())
                ));
                steps.push(match current {
                    Some(c) => format!(
                        "on success drain container {} ({}), stop and remove it, rename {next} to {}; on failure switch the proxy back to it and remove {next}",
                        c.id,
                        humantime::format_duration(sf.drain),
                        self.app.name
                    ),
                    None => format!(
                        "on success rename {next} to {}; on failure remove it",
                        self.app.name
                    ),
                });
            }
        }
        steps
    }

    /// What a strategy needs on the host before anything changes there; a
    /// failure here leaves the running release untouched.
    pub(crate) async fn prepare(
        &self,
        host: &HostTarget,
        previous: Option<&CapturedRelease>,
    ) -> Result<(), Error> {
        let Strategy::StartFirst(sf) = &host.strategy else {
            return Ok(());
        };
        let limit = self.timeouts.engine;
        self.boot_proxy(sf).await?;
        let Some(previous) = previous else {
            return Ok(());
        };
        // The old release is the fallback and the way back: the proxy must
        // reach it and send it the traffic before the new one starts.
        timed(
            limit,
            format!(
                "connect container {} to network {}",
                previous.container, sf.network
            ),
            host.runtime
                .connect_network(&previous.container, &sf.network),
        )
        .await?;
        let current = timed(limit, "read the proxy's route", sf.switch.current()).await?;
        if current.map(|u| u.container) != Some(previous.container.clone()) {
            timed(
                limit,
                format!("switch the proxy to container {}", previous.container),
                sf.switch.switch(&sf.upstream(&previous.container)),
            )
            .await?;
        }
        Ok(())
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
        let result = match &host.strategy {
            Strategy::StopFirst => self
                .stop_first(host, previous, target, stable_before, cancel)
                .await
                .map(|new_container| Input::Switched { new_container }),
            Strategy::StartFirst(sf) => self
                .start_beside(host, sf, previous, target, stable_before, cancel)
                .await
                .map(|new_container| Input::StartedBeside { new_container }),
        };
        result.unwrap_or_else(|(new_container, reason)| Input::SwitchFailed {
            new_container,
            reason,
        })
    }

    /// The spec of the new release's container named `name`, labelled with
    /// what it runs and what it replaced.
    fn release_spec(
        &self,
        host: &HostTarget,
        name: &str,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
    ) -> ContainerSpec {
        let mut spec = ContainerSpec::new(name, target.image(), host.container.clone());
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
        spec
    }

    /// Create and start `spec`, attached to `network` too when given; the
    /// error carries the container once it was created.
    async fn create_and_start(
        &self,
        host: &HostTarget,
        spec: &ContainerSpec,
        network: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<ContainerId, (Option<ContainerId>, Error)> {
        let limit = self.timeouts.engine;
        let id = timed(
            limit,
            format!("create container {}", spec.name),
            host.runtime.create(spec),
        )
        .await
        .map_err(|e| (None, e))?;
        if cancel.is_cancelled() {
            return Err((Some(id), Error::cancelled()));
        }
        if let Some(network) = network {
            timed(
                limit,
                format!("connect container {id} to network {network}"),
                host.runtime.connect_network(&id, network),
            )
            .await
            .map_err(|e| (Some(id.clone()), e))?;
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

    async fn start_beside(
        &self,
        host: &HostTarget,
        sf: &StartFirst,
        previous: Option<&CapturedRelease>,
        target: &Release,
        stable_before: Option<&Digest>,
        cancel: &CancellationToken,
    ) -> Result<ContainerId, (Option<ContainerId>, Error)> {
        if cancel.is_cancelled() {
            return Err((None, Error::cancelled()));
        }
        let name = next_name(&self.app.name);
        let mut spec = self.release_spec(host, &name, previous, target, stable_before);
        // The proxy publishes the app: the new container publishes nothing,
        // so it starts while the old one runs.
        spec.ports.clear();
        let extra = match &spec.network {
            None => {
                spec.network = Some(sf.network.clone());
                None
            }
            Some(n) if *n == sf.network => None,
            Some(_) => Some(sf.network.as_str()),
        };
        self.create_and_start(host, &spec, extra, cancel).await
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
            // Renamed before it stops: a deploy that dies between the two
            // leaves a retained container `recover` restores, never a
            // stopped app container under the app's own name.
            timed(
                limit,
                format!("rename container {}", previous.container),
                host.runtime
                    .rename(&previous.container, &retained_name(&self.app.name)),
            )
            .await
            .map_err(|e| (None, e))?;
            if cancel.is_cancelled() {
                return Err(cancelled(None));
            }
            let stop = stop_timeout(host);
            timed(
                stop + self.timeouts.stop_grace,
                format!("stop container {}", previous.container),
                host.runtime.stop(&previous.container, stop),
            )
            .await
            .map_err(|e| (None, e))?;
        }
        if cancel.is_cancelled() {
            return Err(cancelled(None));
        }
        let spec = self.release_spec(host, &self.app.name, previous, target, stable_before);
        self.create_and_start(host, &spec, None, cancel).await
    }

    /// Start-first: boot the proxy when it does not run (a stopped one comes
    /// back with its last config). Booting may pull the proxy's image.
    pub(crate) async fn boot_proxy(&self, sf: &StartFirst) -> Result<(), Error> {
        timed(self.timeouts.pull, "boot the proxy", sf.switch.ensure())
            .await
            .map_err(|e| sf.blame(e))
    }

    /// Start-first: send the traffic to the new release, healthy and
    /// running beside the old one.
    /// `verifying_since` is when the verification began, which the
    /// switch's time is counted from.
    pub(crate) async fn traffic_switch(
        &self,
        host: &HostTarget,
        new: &ContainerId,
        verifying_since: tokio::time::Instant,
    ) -> Input {
        let Strategy::StartFirst(sf) = &host.strategy else {
            return Input::TrafficSwitchFailed(Error::other(
                "a stop-first host has no traffic switch",
            ));
        };
        match timed(
            self.timeouts.engine,
            format!("switch the proxy to container {new}"),
            sf.switch.switch(&sf.upstream(new)),
        )
        .await
        {
            Ok(()) => Input::TrafficSwitched {
                at: verifying_since.elapsed(),
            },
            Err(e) => Input::TrafficSwitchFailed(
                e.context(format!("switch the proxy {}", sf.switch.describe())),
            ),
        }
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
            // It holds no port; requests it took finish while the traffic
            // goes back, and the tidying drains and removes it.
            Strategy::StartFirst(_) => Ok(Some(id)),
            Strategy::StopFirst => {
                let stop = stop_timeout(host);
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

    /// Run the retained release again, once the failed one is out of its
    /// way; start-first, send it the traffic back.
    pub(crate) async fn restart_previous(
        &self,
        host: &HostTarget,
        failed: Option<&ContainerId>,
        retained: &CapturedRelease,
    ) -> Result<(), Error> {
        let limit = self.timeouts.engine;
        let rt = &host.runtime;
        let id = &retained.container;
        match &host.strategy {
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
            Strategy::StartFirst(sf) => {
                // It never stopped, unless an interrupted retirement stopped it.
                let info = timed(limit, format!("inspect container {id}"), rt.inspect(id)).await?;
                if !info.state.is_running() {
                    timed(limit, format!("start container {id}"), rt.start(id)).await?;
                }
                // Idempotent: also right when the traffic never moved, or
                // when a refused switch moved it half way.
                let upstream = sf.upstream(id);
                let back = || {
                    timed(
                        limit,
                        format!("switch the proxy back to container {id}"),
                        sf.switch.switch(&upstream),
                    )
                };
                if back().await.is_ok() {
                    return Ok(());
                }
                // A proxy that died (or was stopped) comes back with its
                // last config; then the switch again.
                self.boot_proxy(sf).await?;
                back().await.map_err(|e| sf.blame(e))
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
        match &host.strategy {
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
            Strategy::StartFirst(sf) => {
                let Some(failed) = failed else {
                    return (None, Ok(()));
                };
                self.drain(ev, host, sf, failed).await;
                let (logs, removed) = self.clear_failed(ev, host, failed).await;
                (Some(logs), removed)
            }
        }
    }

    /// Start-first: let the requests `from` took finish (up to the drain
    /// time); a proxy that cannot say is only noted, the drain time passes.
    async fn drain(&self, ev: &Emitter, host: &HostTarget, sf: &StartFirst, from: &ContainerId) {
        let result = timed(
            sf.drain + self.timeouts.engine,
            format!("drain container {from}"),
            sf.switch.drain(&sf.upstream(from), sf.drain),
        )
        .await;
        if let Err(e) = result {
            ev.note(
                &Scope::Host(host.id.clone()),
                Phase::Verified,
                format!("drain container {from}: {}", e.report()),
            );
        }
    }

    /// The previous release is no longer needed: drop what kept it.
    /// Start-first, the new container also takes the app name.
    pub(crate) async fn retire(
        &self,
        ev: &Emitter,
        host: &HostTarget,
        retained: Option<&ContainerId>,
        new: &ContainerId,
    ) -> Result<(), Error> {
        let limit = self.timeouts.engine;
        let rt = &host.runtime;
        match &host.strategy {
            Strategy::StopFirst => match retained {
                Some(retained) => self.remove_gone(host, retained).await,
                None => Ok(()),
            },
            Strategy::StartFirst(sf) => {
                if let Some(old) = retained {
                    self.checkpoint(Stage::Draining, host).await;
                    self.drain(ev, host, sf, old).await;
                    let stop = stop_timeout(host);
                    match timed(limit, format!("inspect container {old}"), rt.inspect(old)).await {
                        Ok(info) if info.state.is_running() => {
                            timed(
                                stop + self.timeouts.stop_grace,
                                format!("stop container {old}"),
                                rt.stop(old, stop),
                            )
                            .await?
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == crate::error::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    self.remove_gone(host, old).await?;
                }
                let info =
                    timed(limit, format!("inspect container {new}"), rt.inspect(new)).await?;
                if info.name != self.app.name {
                    timed(
                        limit,
                        format!("rename container {new} to {}", self.app.name),
                        rt.rename(new, &self.app.name),
                    )
                    .await?;
                }
                Ok(())
            }
        }
    }
}
