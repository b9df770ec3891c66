//! `ssh://` engines, reached over one master connection per engine
//! (`ControlMaster`): the handshake, the host key check and the
//! authentication happen once, with their failure classified from `ssh`'s
//! own words.
//!
//! The engine's socket on the host (`/var/run/docker.sock`, or the URL's
//! path) is then forwarded to a local socket through the master
//! (`ssh -O forward -L`), so a new HTTP connection to the engine is a channel
//! of the master and starts no process on either side (one session runs
//! `true` once, for sshd's `TCP_NODELAY`: see `no_delay_session`). Where the server
//! refuses socket forwarding (`AllowTcpForwarding no`, `DisableForwarding`)
//! or the engine does not answer on that socket, each HTTP connection is a
//! `ssh … HOST docker system dial-stdio` channel instead, as the docker CLI
//! reaches `DOCKER_HOST=ssh://` engines.
//!
//! The system `ssh` is run (from `PATH`), so the user's setup applies as
//! `ssh` applies it: `~/.ssh/config`, the agent, `known_hosts`, jump hosts.
//! `BatchMode=yes`, so it never prompts: an unknown host key or a key that
//! needs a passphrase is a failure, not a question. Host keys are checked as
//! the user's config says; nothing here relaxes `StrictHostKeyChecking`.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::{BollardRequest, ClientVersion, Docker};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rollback_core::{Error, ErrorKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The most of `ssh`'s stderr kept for a diagnosis.
const STDERR_KEPT: usize = 4096;

/// How often the master's control socket is looked for while it connects.
const MASTER_POLL: Duration = Duration::from_millis(5);

/// Where the engine listens on the host when the URL names no socket.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The longest wait for the forwarded socket's first answer before the
/// channels fall back to `dial-stdio`.
const FORWARD_CHECK: Duration = Duration::from_secs(10);

/// Where an `ssh://[user@]host[:port][/socket]` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshTarget {
    pub(crate) user: Option<String>,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    /// The engine's socket on the host, when not the remote CLI's default.
    pub(crate) socket: Option<String>,
}

impl SshTarget {
    /// Parse what follows `ssh://`, as the docker CLI accepts it: no
    /// password, no query, no fragment.
    pub(crate) fn parse(rest: &str) -> std::result::Result<Self, &'static str> {
        if rest.contains(['?', '#']) {
            return Err("query and fragment are not allowed in an ssh:// URL");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (user, host_port) =
            match authority.rsplit_once('@') {
                Some((user, _)) if user.contains(':') => return Err(
                    "a password in the URL is not supported; use a key (ssh-agent or IdentityFile)",
                ),
                Some(("", _)) => return Err("empty user name before @"),
                Some((user, host_port)) => (Some(user.to_owned()), host_port),
                None => (None, authority),
            };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or("unclosed [ in the host")?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or("expected :PORT after ]")?),
                ),
            }
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err("no host name");
        }
        if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err("host and user must not start with -");
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or("the port must be a number from 1 to 65535")?,
            ),
        };
        let socket = Some(path.trim_end_matches('/'))
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        Ok(SshTarget {
            user,
            host: host.to_owned(),
            port,
            socket,
        })
    }

    /// `ssh`'s arguments naming the destination, last on its command line
    /// before the remote command.
    fn destination_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(user) = &self.user {
            args.extend(["-l".to_owned(), user.clone()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".to_owned(), port.to_string()]);
        }
        args.extend(["--".to_owned(), self.host.clone()]);
        args
    }

    /// The engine's socket on the host, for forwarding.
    fn remote_socket(&self) -> &str {
        self.socket.as_deref().unwrap_or(DEFAULT_SOCKET)
    }

    /// The command run on the host; `ssh` hands it to the remote shell.
    fn remote_command(&self) -> String {
        match &self.socket {
            None => "docker system dial-stdio".to_owned(),
            Some(path) => format!(
                "docker --host={} system dial-stdio",
                shell_quote(&format!("unix://{path}"))
            ),
        }
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Single-quote `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Why `ssh` could not open the master connection, read from its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SshCause {
    ConnectionRefused,
    NoRoute,
    UnknownHostName,
    TimedOut,
    UnknownHostKey,
    ChangedHostKey,
    KeyRefused,
    NoClient,
    /// Anything else: `ssh`'s exit status and its last line.
    Other(Option<i32>, String),
}

impl SshCause {
    /// Classify `ssh`'s stderr (and exit status) after it gave up.
    pub(crate) fn from_stderr(status: Option<i32>, stderr: &str) -> Self {
        let has = |needle: &str| stderr.contains(needle);
        if has("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || has("Host key for") && has("has changed")
        {
            SshCause::ChangedHostKey
        } else if has("Host key verification failed") {
            SshCause::UnknownHostKey
        } else if has("Permission denied") || has("Too many authentication failures") {
            SshCause::KeyRefused
        } else if has("Connection refused") {
            SshCause::ConnectionRefused
        } else if has("No route to host") || has("Network is unreachable") {
            SshCause::NoRoute
        } else if has("Could not resolve hostname") || has("Name or service not known") {
            SshCause::UnknownHostName
        } else if has("timed out") {
            SshCause::TimedOut
        } else {
            SshCause::Other(status, last_line(stderr))
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            SshCause::UnknownHostKey | SshCause::ChangedHostKey | SshCause::KeyRefused => {
                ErrorKind::Unauthorized
            }
            SshCause::TimedOut => ErrorKind::Timeout,
            SshCause::NoClient => ErrorKind::InvalidInput,
            _ => ErrorKind::Unavailable,
        }
    }
}

impl fmt::Display for SshCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshCause::ConnectionRefused => f.write_str("connection refused"),
            SshCause::NoRoute => f.write_str("no route to host"),
            SshCause::UnknownHostName => f.write_str("cannot resolve the host name"),
            SshCause::TimedOut => f.write_str("connection timed out"),
            SshCause::UnknownHostKey => f.write_str(
                "host key verification failed: the host's key is not in known_hosts; \
                 check its fingerprint and add it (connect once with ssh)",
            ),
            SshCause::ChangedHostKey => f.write_str(
                "host key verification failed: the host's key differs from the one in known_hosts \
                 (a reinstalled host, or someone in between); check it and update known_hosts",
            ),
            SshCause::KeyRefused => f.write_str(
                "permission denied: the host accepted none of the keys offered; \
                 load the key into ssh-agent (SSH_AUTH_SOCK) or name it with IdentityFile in ~/.ssh/config",
            ),
            SshCause::NoClient => f.write_str("no ssh client: install OpenSSH's ssh"),
            SshCause::Other(Some(code), line) if !line.is_empty() => {
                write!(f, "ssh exited with status {code}: {line}")
            }
            SshCause::Other(Some(code), _) => write!(f, "ssh exited with status {code}"),
            SshCause::Other(None, _) => f.write_str("ssh was killed"),
        }
    }
}

/// The last non-empty line of `text`, printable characters only, bounded.
fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Keeps the tail of a child's stderr as it comes.
#[derive(Clone, Default)]
struct StderrTail(Arc<Mutex<String>>);

impl StderrTail {
    fn collect(
        &self,
        mut pipe: impl AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let tail = self.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                let mut text = tail.0.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if text.len() > STDERR_KEPT {
                    let mut cut = text.len() - STDERR_KEPT;
                    while !text.is_char_boundary(cut) {
                        cut += 1;
                    }
                    text.drain(..cut);
                }
            }
        })
    }

    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A `ControlPath` value: quoted, and `%` kept from token expansion.
fn control_option(path: &Path) -> String {
    format!(
        "ControlPath=\"{}\"",
        path.display().to_string().replace('%', "%%")
    )
}

/// An open master connection to one host, shut when dropped.
pub(crate) struct SshSession {
    target: SshTarget,
    control: PathBuf,
    connect_timeout: u64,
    /// The local end of the engine's forwarded socket; `None` when every
    /// connection is a `dial-stdio` channel.
    forwarded: Option<PathBuf>,
    /// A `dial-stdio` channel opened ahead of need: a new one costs the `ssh` client,
    /// the server's session and the remote `docker` CLI's start, which the
    /// next new HTTP connection then does not wait for.
    spare: Mutex<Option<Channel>>,
    /// The master `ssh`, killed on drop (kill_on_drop), which ends its channels.
    _master: Mutex<Child>,
    /// Holds the control socket; declared after the master so it is removed last.
    _dir: tempfile::TempDir,
    /// What the channels' `ssh` said on stderr (the remote `docker`'s errors).
    channel_stderr: StderrTail,
}

impl SshSession {
    /// Open and authenticate the master connection, within `timeout`.
    pub(crate) async fn open(target: &SshTarget, timeout: Duration) -> Result<Self, SshCause> {
        let dir = tempfile::Builder::new()
            .prefix("rollback-ssh-")
            .tempdir()
            .map_err(|e| {
                SshCause::Other(
                    None,
                    format!("cannot create the control socket's folder: {e}"),
                )
            })?;
        let control = dir.path().join("master");
        let connect_timeout = timeout.as_secs().max(1);
        let mut child = Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o"])
            .arg(control_option(&control))
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=no"])
            .arg("-o")
            .arg(format!("ConnectTimeout={connect_timeout}"))
            // The user's LocalForward lines are for their sessions, not this one.
            .args(["-o", "ClearAllForwardings=yes", "-N", "-T"])
            .args(target.destination_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => SshCause::NoClient,
                _ => SshCause::Other(None, format!("cannot run ssh: {e}")),
            })?;
        let stderr = StderrTail::default();
        let reader = stderr.collect(child.stderr.take().expect("stderr is piped"));

        // ssh opens the control socket once the host is authenticated and
        // the key accepted; it exits with 255 and a reason when not.
        let ready = async {
            while !control.exists() {
                tokio::time::sleep(MASTER_POLL).await;
            }
        };
        tokio::select! {
            () = ready => {}
            status = child.wait() => {
                // The reader ends at EOF; a ProxyCommand child may hold the pipe.
                let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
                let status = status.ok().and_then(|s| s.code());
                return Err(SshCause::from_stderr(status, &stderr.text()));
            }
            () = tokio::time::sleep(timeout) => return Err(SshCause::TimedOut),
        }
        let forwarded = forward_socket(
            target,
            &control,
            &dir.path().join("engine.sock"),
            timeout.min(FORWARD_CHECK),
        )
        .await;
        if forwarded.is_some() {
            no_delay_session(target, &control, connect_timeout);
        }
        Ok(SshSession {
            target: target.clone(),
            control,
            connect_timeout,
            forwarded,
            _master: Mutex::new(child),
            _dir: dir,
            channel_stderr: StderrTail::default(),
            spare: Mutex::new(None),
        })
    }

    /// A connection to the engine: a channel of the forwarded socket, or
    /// else a `dial-stdio` channel.
    async fn connect(&self) -> io::Result<Channel> {
        match &self.forwarded {
            Some(path) => Ok(Channel::Forwarded(TokioIo::new(
                UnixStream::connect(path).await?,
            ))),
            None => self.take_channel(),
        }
    }

    /// A `dial-stdio` channel for a new HTTP connection: the spare when
    /// there is one, and a new spare opened behind it.
    fn take_channel(&self) -> io::Result<Channel> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match spare.take() {
            Some(channel) => channel,
            None => self.open_channel()?,
        };
        // Without a spare the next connection opens its own channel.
        *spare = self.open_channel().ok();
        Ok(channel)
    }

    /// A new channel running `docker system dial-stdio` on the host.
    fn open_channel(&self) -> io::Result<Channel> {
        let mut child = mux_session(
            &self.target,
            &self.control,
            self.connect_timeout,
            &self.target.remote_command(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
        self.channel_stderr
            .collect(child.stderr.take().expect("stderr is piped"));
        Ok(Channel::DialStdio(Box::new(DialStdio {
            stdin: TokioIo::new(child.stdin.take().expect("stdin is piped")),
            stdout: TokioIo::new(child.stdout.take().expect("stdout is piped")),
            _child: child,
        })))
    }

    /// Why the engine did not answer through a channel, from what the
    /// remote side printed, if it printed anything.
    pub(crate) fn channel_failure(&self) -> Option<String> {
        let text = self.channel_stderr.text();
        let line = last_line(&text);
        if line.is_empty() {
            None
        } else if text.contains("command not found") || text.contains("docker: not found") {
            Some(format!(
                "no docker CLI on the host ({line}); `docker system dial-stdio` needs Docker 18.09 or later there"
            ))
        } else {
            Some(format!("docker system dial-stdio on the host: {line}"))
        }
    }

    /// The target, for messages.
    pub(crate) fn target(&self) -> &SshTarget {
        &self.target
    }
}

/// Forward `local` to the engine's socket on the host through the master
/// and check that the Engine API answers there. `None` when the server
/// refuses the forwarding or nothing answers: its channels are then
/// `dial-stdio` ones.
async fn forward_socket(
    target: &SshTarget,
    control: &Path,
    local: &Path,
    within: Duration,
) -> Option<PathBuf> {
    let spec = format!("{}:{}", local.display(), target.remote_socket());
    // ssh splits a forwarding at ':'; such a path cannot be named.
    if spec.matches(':').count() != 1 {
        return None;
    }
    let forward = Command::new("ssh")
        // Not the user's config files: their LocalForward lines would be
        // sent to the master with this one. The master needs no more than
        // its control socket.
        .args(["-F", "none", "-o", "BatchMode=yes", "-o"])
        .arg(control_option(control))
        .args(["-O", "forward", "-L"])
        .arg(&spec)
        .args(target.destination_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(within, forward).await {
        Ok(Ok(status)) if status.success() => {}
        _ => return None,
    }
    // The master accepts the local connection either way; a refused
    // channel or a missing socket on the host closes it unanswered.
    let ping = async {
        let mut stream = UnixStream::connect(local).await.ok()?;
        stream
            .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await.ok()?;
        (&head == b"HTTP/1.").then(|| local.to_owned())
    };
    tokio::time::timeout(within, ping).await.ok().flatten()
}

/// A session that runs `true` on the host, started beside the work and not
/// waited for. sshd turns Nagle's algorithm off for a connection (TCP_NODELAY)
/// when its first session runs a command, and a connection that only
/// forwards a socket never has one: the engine's small writes (an attached
/// shell's lines, an event) would then each wait for the previous one's
/// delayed acknowledgement, 40 ms.
fn no_delay_session(target: &SshTarget, control: &Path, connect_timeout: u64) {
    let session = mux_session(target, control, connect_timeout, "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    // It ends on its own, or with the master; reaped here either way.
    if let Ok(mut session) = session {
        tokio::spawn(async move {
            let _ = session.wait().await;
        });
    }
}

/// `ssh` running `command` on the host in a session of the master.
fn mux_session(target: &SshTarget, control: &Path, connect_timeout: u64, command: &str) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.args(["-o", "BatchMode=yes", "-o"])
        .arg(control_option(control))
        .args(["-o", "ControlMaster=no", "-o", "ClearAllForwardings=yes"])
        .arg("-o")
        .arg(format!("ConnectTimeout={connect_timeout}"))
        .arg("-T")
        .args(target.destination_args())
        .arg(command);
    ssh
}

/// The error for a master connection that did not open.
pub(crate) fn connect_error(url: &str, target: &SshTarget, cause: &SshCause) -> Error {
    Error::new(
        cause.kind(),
        format!("cannot reach docker engine at {url}: ssh {target}: {cause}"),
    )
}

/// One HTTP connection to the engine.
pub(crate) enum Channel {
    /// A connection to the forwarded socket: a channel of the master.
    Forwarded(TokioIo<UnixStream>),
    /// A `dial-stdio` channel.
    DialStdio(Box<DialStdio>),
}

/// The stdin and stdout of a `dial-stdio` channel.
pub(crate) struct DialStdio {
    stdin: TokioIo<ChildStdin>,
    stdout: TokioIo<ChildStdout>,
    /// Killed on drop, which closes the channel on the master.
    _child: Child,
}

impl hyper::rt::Read for Channel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Channel::Forwarded(stream) => Pin::new(stream).poll_read(cx, buf),
            Channel::DialStdio(c) => Pin::new(&mut c.stdout).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Channel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Channel::Forwarded(stream) => Pin::new(stream).poll_write(cx, buf),
            Channel::DialStdio(c) => Pin::new(&mut c.stdin).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Channel::Forwarded(stream) => Pin::new(stream).poll_flush(cx),
            Channel::DialStdio(c) => Pin::new(&mut c.stdin).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Channel::Forwarded(stream) => Pin::new(stream).poll_shutdown(cx),
            Channel::DialStdio(c) => Pin::new(&mut c.stdin).poll_shutdown(cx),
        }
    }
}

impl Connection for Channel {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// hyper's connector: every new connection is a channel of its own.
#[derive(Clone)]
struct Channels(Arc<SshSession>);

impl tower_service::Service<hyper::Uri> for Channels {
    type Response = Channel;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Channel>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let session = self.0.clone();
        Box::pin(async move { session.connect().await })
    }
}

/// The body type of bollard's requests, named through [`BollardRequest`].
trait RequestBody {
    type Body;
}

impl<B> RequestBody for hyper::Request<B> {
    type Body = B;
}

type EngineBody = <BollardRequest as RequestBody>::Body;

/// A bollard client whose connections are channels of `session`.
pub(crate) fn docker(
    session: Arc<SshSession>,
    timeout_secs: u64,
    version: &ClientVersion,
) -> std::result::Result<Docker, EngineError> {
    let client: Client<Channels, EngineBody> =
        Client::builder(TokioExecutor::new()).build(Channels(session));
    Docker::connect_with_custom_transport(
        move |request: BollardRequest| {
            let client = client.clone();
            async move { client.request(request).await.map_err(EngineError::from) }
        },
        // Only the path of the URL reaches the engine; the host is a placeholder.
        Some("http://docker"),
        timeout_secs,
        version,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(rest: &str) -> SshTarget {
        SshTarget::parse(rest).unwrap_or_else(|e| panic!("{rest}: {e}"))
    }

    #[test]
    fn urls_parse_as_the_docker_cli_reads_them() {
        assert_eq!(
            target("deploy@prod-a.example.com:2222"),
            SshTarget {
                user: Some("deploy".into()),
                host: "prod-a.example.com".into(),
                port: Some(2222),
                socket: None,
            }
        );
        assert_eq!(
            target("prod-a"),
            SshTarget {
                user: None,
                host: "prod-a".into(),
                port: None,
                socket: None,
            }
        );
        let v6 = target("root@[::1]:22/run/user/1000/docker.sock");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.port, Some(22));
        assert_eq!(v6.socket.as_deref(), Some("/run/user/1000/docker.sock"));
        assert_eq!(v6.to_string(), "root@[::1]:22");
        assert_eq!(target("h/").socket, None);
        for (bad, why) in [
            ("deploy:secret@h", "password"),
            ("@h", "empty user"),
            ("", "no host"),
            ("u@:22", "no host"),
            ("h:0", "port"),
            ("h:ssh", "port"),
            ("h?x=1", "query"),
            ("-oProxyCommand=x", "must not start with -"),
            ("[::1", "unclosed"),
        ] {
            let err = SshTarget::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn the_command_line_ends_with_the_host_and_the_quoted_remote_command() {
        let t = target("deploy@h:2222");
        assert_eq!(
            t.destination_args(),
            ["-l", "deploy", "-p", "2222", "--", "h"]
        );
        assert_eq!(t.remote_command(), "docker system dial-stdio");
        let t = target("h/var/run/my docker.sock");
        assert_eq!(t.destination_args(), ["--", "h"]);
        assert_eq!(
            t.remote_command(),
            "docker --host='unix:///var/run/my docker.sock' system dial-stdio"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            control_option(Path::new("/tmp/a%b/master")),
            "ControlPath=\"/tmp/a%%b/master\""
        );
    }

    #[test]
    fn ssh_stderr_is_classified_by_cause() {
        let cases = [
            (
                "ssh: connect to host 127.0.0.1 port 15023: Connection refused\r\n",
                SshCause::ConnectionRefused,
            ),
            (
                "ssh: connect to host 10.9.9.9 port 22: No route to host\n",
                SshCause::NoRoute,
            ),
            (
                "ssh: Could not resolve hostname nowhere.invalid: Name or service not known\n",
                SshCause::UnknownHostName,
            ),
            (
                "ssh: connect to host 10.0.0.1 port 22: Connection timed out\n",
                SshCause::TimedOut,
            ),
            (
                "No ED25519 host key is known for [localhost]:15022 and you have requested strict checking.\r\nHost key verification failed.\r\n",
                SshCause::UnknownHostKey,
            ),
            (
                "@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n...\nHost key verification failed.\n",
                SshCause::ChangedHostKey,
            ),
            (
                "root@127.0.0.1: Permission denied (publickey).\r\n",
                SshCause::KeyRefused,
            ),
        ];
        for (stderr, cause) in cases {
            assert_eq!(SshCause::from_stderr(Some(255), stderr), cause, "{stderr}");
        }
        let other = SshCause::from_stderr(
            Some(255),
            "kex_exchange_identification: read: Connection reset by peer\r\n\r\n",
        );
        assert_eq!(
            other.to_string(),
            "ssh exited with status 255: kex_exchange_identification: read: Connection reset by peer"
        );
        assert_eq!(SshCause::KeyRefused.kind(), ErrorKind::Unauthorized);
        assert_eq!(SshCause::ConnectionRefused.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn the_connect_error_names_the_url_the_host_and_the_cause() {
        let t = target("root@127.0.0.1:15023");
        let err = connect_error(
            "ssh://root@127.0.0.1:15023",
            &t,
            &SshCause::ConnectionRefused,
        );
        assert_eq!(
            err.message(),
            "cannot reach docker engine at ssh://root@127.0.0.1:15023: ssh root@127.0.0.1:15023: connection refused"
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn the_stderr_tail_is_bounded_and_last_line_is_printable() {
        assert_eq!(last_line("a\n\u{1b}[1mb\u{7}\n\n"), "[1mb");
        assert_eq!(last_line(""), "");
    }
}
