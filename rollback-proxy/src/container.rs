//! [`ProxyContainer`]: the proxy's container on one host, as every adapter
//! boots it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollback_core::{
    labels, ContainerId, ContainerInfo, ContainerSpec, ContainerTemplate, Error, ErrorKind,
    ExecOutput, ImageRef, PortMapping, RestartPolicy, Result, Runtime,
};

use crate::shell::{self, Shell, ShellError};

/// The default name of the proxy container on each host.
pub const DEFAULT_NAME: &str = "rollback-proxy";
/// The default network the proxy shares with the apps' containers.
pub const DEFAULT_NETWORK: &str = "rollback";
/// The kernel parameter that moves connections queued on a closing
/// `SO_REUSEPORT` listener to another listener of the same port.
const MIGRATE_REQ: &str = "net.ipv4.tcp_migrate_req";
/// Shells kept open per proxy container: as many as commands that run at
/// the same time (a switch, a drain's poll, a health probe), no more.
const MAX_SHELLS: usize = 4;
/// Label naming the adapter that owns a proxy container (`caddy`).
pub const PROXY_LABEL: &str = "io.rollback.proxy";
/// Label recording the public address a proxy container publishes.
pub const LISTEN_LABEL: &str = "io.rollback.proxy.listen";
/// Label recording the public HTTPS address a proxy container publishes.
pub const TLS_LISTEN_LABEL: &str = "io.rollback.proxy.tls-listen";
/// Where the proxy's volume (`<name>-data`) is mounted: certificates, ACME
/// accounts and the files rollback writes outlast the container.
pub const DATA_DIR: &str = "/data";

/// How a call to [`ProxyContainer::ensure`] found the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booted {
    /// It was running already.
    Running(ContainerId),
    /// It existed, stopped, and was started again.
    Restarted(ContainerId),
    /// It was created and started by this call.
    Created(ContainerId),
}

impl Booted {
    /// The proxy container.
    pub fn id(&self) -> &ContainerId {
        match self {
            Booted::Running(id) | Booted::Restarted(id) | Booted::Created(id) => id,
        }
    }
}

/// The proxy's container on one host: a managed container (label
/// `io.rollback.managed=true`, restart policy `unless-stopped`) on a network
/// it shares with the apps' containers, publishing the public address.
///
/// Everything goes through the host's [`Runtime`]: no port other than the
/// public one is opened, so a host reached only through its engine endpoint
/// (as over SSH) works the same.
#[derive(Clone)]
pub struct ProxyContainer {
    runtime: Arc<dyn Runtime>,
    name: String,
    image: ImageRef,
    network: String,
    listen: PortMapping,
    listen_text: String,
    /// The public HTTPS address and its mapping, when the proxy serves TLS.
    tls_listen: Option<(String, PortMapping)>,
    command: Vec<String>,
    kind: String,
    /// Shells kept open in the container, shared by the clones that speak
    /// to it: one per command running at a time, so a slow health probe
    /// never holds up a switch.
    shells: Arc<Mutex<Vec<Shell>>>,
}

impl std::fmt::Debug for ProxyContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyContainer")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("network", &self.network)
            .field("listen", &self.listen_text)
            .field("tls_listen", &self.tls_listen.as_ref().map(|l| &l.0))
            .finish()
    }
}

impl ProxyContainer {
    /// A proxy container of `image` for the adapter `kind` (`caddy`),
    /// publishing `listen` (the host side of `docker -p`: `"80"`,
    /// `"0.0.0.0:80"`, `"127.0.0.1:18080"`) to `container_port`, running
    /// `command` (empty: the image's own).
    pub fn new(
        runtime: Arc<dyn Runtime>,
        kind: &str,
        image: ImageRef,
        listen: &str,
        container_port: u16,
        command: Vec<String>,
    ) -> Result<Self> {
        let listen = parse_listen(listen, container_port)?;
        Ok(Self {
            runtime,
            name: DEFAULT_NAME.to_owned(),
            image,
            network: DEFAULT_NETWORK.to_owned(),
            listen_text: listen.0,
            listen: listen.1,
            tls_listen: None,
            command,
            kind: kind.to_owned(),
            shells: Arc::default(),
        })
    }

    /// Use this container name instead of [`DEFAULT_NAME`].
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self.shells = Arc::default();
        self
    }

    /// Also publish `listen` (as for [`ProxyContainer::new`]) to
    /// `container_port`: the proxy's HTTPS address.
    pub fn with_tls_listen(mut self, listen: &str, container_port: u16) -> Result<Self> {
        self.tls_listen = Some(parse_listen(listen, container_port)?);
        Ok(self)
    }

    /// The public HTTPS address as configured, if any.
    pub fn tls_listen(&self) -> Option<&str> {
        self.tls_listen.as_ref().map(|l| l.0.as_str())
    }

    /// The public HTTPS port, if any.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_listen.as_ref().and_then(|l| l.1.host_port)
    }

    /// The named volume mounted at [`DATA_DIR`]: `<name>-data`.
    pub fn data_volume(&self) -> String {
        format!("{}-data", self.name)
    }

    /// Use this network instead of [`DEFAULT_NETWORK`].
    pub fn with_network(mut self, network: &str) -> Self {
        self.network = network.to_owned();
        self.shells = Arc::default();
        self
    }

    /// The container name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network shared with the apps.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The public address as configured (`127.0.0.1:18080`).
    pub fn listen(&self) -> &str {
        &self.listen_text
    }

    /// The image.
    pub fn image(&self) -> &ImageRef {
        &self.image
    }

    /// The host's engine.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// The proxy container, if one exists (running or not).
    pub async fn inspect(&self) -> Result<Option<ContainerInfo>> {
        self.runtime.current(&self.name).await
    }

    /// The running proxy container, or an [`ErrorKind::Unavailable`] error
    /// saying it is not running.
    pub async fn running(&self) -> Result<ContainerId> {
        match self.inspect().await? {
            Some(info) if info.state.is_running() => Ok(info.id),
            Some(info) => Err(Error::unavailable(format!(
                "the proxy container {} is not running ({})",
                self.name, info.state
            ))),
            None => Err(Error::unavailable(format!(
                "there is no proxy container {}",
                self.name
            ))),
        }
    }

    /// Boot the proxy when it does not run: create the network, then
    /// create (or start again) and start the container. Idempotent; a
    /// container of that name that rollback did not create is refused.
    pub async fn ensure(&self) -> Result<Booted> {
        self.runtime.create_network(&self.network).await?;
        for _ in 0..3 {
            match self.inspect().await? {
                Some(info) => {
                    self.check_ours(&info)?;
                    self.runtime
                        .connect_network(&info.id, &self.network)
                        .await?;
                    if info.state.is_running() {
                        return Ok(Booted::Running(info.id));
                    }
                    self.runtime.start(&info.id).await?;
                    return Ok(Booted::Restarted(info.id));
                }
                None => {
                    self.runtime.pull(&self.image, None, None).await?;
                    let id = match self.runtime.create(&self.spec(true)).await {
                        Ok(id) => id,
                        // Created by a concurrent boot: use that one.
                        Err(e) if e.kind() == ErrorKind::Conflict => continue,
                        Err(e) => return Err(e),
                    };
                    let mut started = self.runtime.start(&id).await;
                    let mut id = id;
                    if matches!(&started, Err(e) if e.message().contains(MIGRATE_REQ)) {
                        // A kernel older than 5.14 has no such parameter:
                        // the proxy runs without it (and may lose a
                        // connection queued at a config reload).
                        let _ = self.runtime.remove(&id).await;
                        id = self.runtime.create(&self.spec(false)).await?;
                        started = self.runtime.start(&id).await;
                    }
                    if let Err(e) = started {
                        // A proxy that cannot start (its port is taken) is not left behind.
                        let _ = self.runtime.remove(&id).await;
                        return Err(e.context(format!(
                            "start the proxy container {} publishing {}",
                            self.name, self.listen_text
                        )));
                    }
                    return Ok(Booted::Created(id));
                }
            }
        }
        Err(Error::conflict(format!(
            "the proxy container {} kept changing while it was booted",
            self.name
        )))
    }

    /// Stop and remove the proxy container. Returns whether one was removed.
    pub async fn remove(&self) -> Result<bool> {
        let Some(info) = self.inspect().await? else {
            return Ok(false);
        };
        self.check_kind(&info)?;
        self.runtime.remove(&info.id).await?;
        Ok(true)
    }

    /// Run `cmd` in the running proxy container, at most `timeout`.
    ///
    /// Commands go through shells kept running in the container; a runtime
    /// that cannot keep one, or a container whose shells ended (the proxy
    /// restarted), gets the command as an exec of its own.
    pub async fn exec(&self, cmd: &[String], timeout: Duration) -> Result<ExecOutput> {
        let what = || {
            format!(
                "run {} in the proxy container {}",
                cmd.first().map(String::as_str).unwrap_or_default(),
                self.name
            )
        };
        let late = || {
            Error::timeout(format!(
                "{}: not done within {}",
                what(),
                humantime::format_duration(timeout)
            ))
        };
        // Out of the pool while it runs: a shell whose call is dropped half
        // way (timeout, cancellation) is dropped with it, never reused.
        if let Some(mut shell) = self.pooled_shell() {
            match tokio::time::timeout(timeout, shell.run(cmd)).await {
                Ok(Ok(output)) => {
                    self.pool(shell);
                    return Ok(output);
                }
                // The others were opened in the same container: gone too.
                Ok(Err(ShellError::Gone)) => self.drop_shells(),
                Ok(Err(ShellError::Broken(e))) => return Err(e.context(what())),
                Err(_) => return Err(late()),
            }
        }
        let id = self.running().await?;
        if let Ok(session) = self
            .runtime
            .exec_session(&id, &[shell::PROGRAM.to_owned()])
            .await
        {
            let mut shell = Shell::new(session);
            match tokio::time::timeout(timeout, shell.run(cmd)).await {
                Ok(Ok(output)) => {
                    self.pool(shell);
                    return Ok(output);
                }
                // No shell in the image, or the container stopping: an exec tells which.
                Ok(Err(ShellError::Gone)) => {}
                Ok(Err(ShellError::Broken(e))) => return Err(e.context(what())),
                Err(_) => return Err(late()),
            }
        }
        self.runtime.exec(&id, cmd, timeout).await
    }

    fn pooled_shell(&self) -> Option<Shell> {
        self.shells.lock().ok()?.pop()
    }

    fn pool(&self, shell: Shell) {
        if let Ok(mut shells) = self.shells.lock() {
            if shells.len() < MAX_SHELLS {
                shells.push(shell);
            }
        }
    }

    fn drop_shells(&self) {
        if let Ok(mut shells) = self.shells.lock() {
            shells.clear();
        }
    }

    fn check_kind(&self, info: &ContainerInfo) -> Result<()> {
        if info.labels.get(PROXY_LABEL).map(String::as_str) == Some(self.kind.as_str()) {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "a container named {} exists that is not a {} proxy started by rollback; \
             remove or rename it",
            self.name, self.kind
        )))
    }

    fn check_ours(&self, info: &ContainerInfo) -> Result<()> {
        self.check_kind(info)?;
        // One proxy per host: every app behind it must agree on its address.
        match info.labels.get(LISTEN_LABEL) {
            Some(listen) if *listen != self.listen_text => Err(Error::conflict(format!(
                "the proxy container {} publishes {listen}, not {}: every app on a host shares one proxy and its listen address; \
                 use listen = {listen:?}, or `rollback proxy remove` first",
                self.name, self.listen_text
            ))),
            _ => Ok(()),
        }?;
        // HTTPS is published when the container is created, never later.
        if let Some((wanted, _)) = &self.tls_listen {
            match info.labels.get(TLS_LISTEN_LABEL) {
                Some(listen) if listen == wanted => {}
                Some(listen) => {
                    return Err(Error::conflict(format!(
                        "the proxy container {} publishes HTTPS on {listen}, not {wanted}: every app on a host shares one proxy; \
                         use tls_listen = {listen:?}, or `rollback proxy remove` first",
                        self.name
                    )))
                }
                None => {
                    return Err(Error::conflict(format!(
                        "the proxy container {} was created without an HTTPS address (by an app without tls_listen); \
                         give every app on this host tls_listen = {wanted:?}, then `rollback proxy remove` it and deploy again",
                        self.name
                    )))
                }
            }
        }
        Ok(())
    }

    /// Write `contents` to `path` in the running proxy container (mode
    /// 600, replacing the file whole), through the standard input of a
    /// shell there: a certificate's key never appears in a command line,
    /// an engine event or a label.
    pub async fn write_file(&self, path: &str, contents: &str, timeout: Duration) -> Result<()> {
        let what = || format!("write {path} in the proxy container {}", self.name);
        // A pooled shell may have ended with a restarted proxy: then once more in a new one.
        for pooled in [true, false] {
            let shell = match pooled.then(|| self.pooled_shell()).flatten() {
                Some(shell) => shell,
                None if pooled => continue,
                None => {
                    let id = self.running().await?;
                    match self
                        .runtime
                        .exec_session(&id, &[shell::PROGRAM.to_owned()])
                        .await
                    {
                        Ok(session) => Shell::new(session),
                        Err(e) => return Err(e.context(what())),
                    }
                }
            };
            let mut shell = shell;
            match tokio::time::timeout(timeout, shell.write(path, contents)).await {
                Ok(Ok(out)) => {
                    self.pool(shell);
                    if out.success() {
                        return Ok(());
                    }
                    return Err(Error::other(format!("{}: {}", what(), out.output.trim())));
                }
                Ok(Err(ShellError::Gone)) => self.drop_shells(),
                Ok(Err(ShellError::Broken(e))) => return Err(e.context(what())),
                Err(_) => return Err(Error::timeout(format!("{}: not done in time", what()))),
            }
        }
        Err(Error::unavailable(format!("{}: the shell ended", what())))
    }

    fn spec(&self, migrate: bool) -> ContainerSpec {
        let mut template = ContainerTemplate::new();
        if migrate {
            // Caddy binds its listener with SO_REUSEPORT and every config
            // change binds a new socket and closes the old one: without
            // this, connections still queued on the old socket are lost at
            // each change; with it the kernel hands them to the new one.
            template = template.sysctl(MIGRATE_REQ, "1");
        }
        if let Some((_, mapping)) = &self.tls_listen {
            template = template.port(mapping.clone()).label(
                TLS_LISTEN_LABEL,
                self.tls_listen
                    .as_ref()
                    .map(|l| l.0.clone())
                    .unwrap_or_default(),
            );
        }
        let template = template
            .volume(format!("{}:{DATA_DIR}", self.data_volume()))
            .port(self.listen.clone())
            .network(self.network.clone())
            .restart(RestartPolicy::UnlessStopped)
            .command(self.command.clone())
            .label(labels::MANAGED, "true")
            .label(PROXY_LABEL, self.kind.clone())
            .label(LISTEN_LABEL, self.listen_text.clone());
        ContainerSpec::new(self.name.clone(), self.image.clone(), template)
    }
}

/// `listen` as written (`80`, `0.0.0.0:80`, `127.0.0.1:18080`, `[::1]:80`)
/// and as a port mapping to `container_port`.
fn parse_listen(listen: &str, container_port: u16) -> Result<(String, PortMapping)> {
    let bad = |why: &str| Error::invalid_input(format!("invalid proxy listen {listen:?}: {why}"));
    if listen.contains('/') {
        return Err(bad("a host address and port, without protocol"));
    }
    let mapping: PortMapping = format!("{listen}:{container_port}")
        .parse()
        .map_err(|e: Error| bad(e.message()))?;
    if mapping.host_port.is_none() {
        return Err(bad("a port is required"));
    }
    Ok((listen.to_owned(), mapping))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_the_host_side_of_a_port_mapping() {
        let (_, m) = parse_listen("80", 80).unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.container_port),
            (None, Some(80), 80)
        );
        let (_, m) = parse_listen("127.0.0.1:18080", 80).unwrap();
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(m.host_port, Some(18080));
        let (_, m) = parse_listen("[::1]:8443", 80).unwrap();
        assert_eq!(m.host_ip, Some("::1".parse().unwrap()));
        for bad in [
            "",
            "x",
            "0",
            "70000",
            "80/udp",
            "1.2.3.4:80:80",
            "127.0.0.1:",
        ] {
            assert!(parse_listen(bad, 80).is_err(), "{bad:?} accepted");
        }
    }
}
