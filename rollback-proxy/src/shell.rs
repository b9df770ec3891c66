//! [`Shell`]: one `sh` kept running in the proxy container, so that a
//! command there costs a fork inside the container instead of a new exec
//! through the engine (an exec is two engine requests, a process started
//! by the container runtime and a poll for its exit code: tens of
//! milliseconds locally, a round trip or more over `ssh://`).

use rollback_core::{Error, ExecOutput, ExecSession};

/// A shell reading commands on its standard input, one line per command.
pub(crate) struct Shell {
    session: Box<dyn ExecSession>,
    calls: u64,
}

/// Why a command did not run to its end in a shell.
pub(crate) enum ShellError {
    /// The shell ended (or could not be written to) before the command
    /// began: running it elsewhere runs it once.
    Gone,
    /// It began, and its end was not seen.
    Broken(Error),
}

/// The program a [`Shell`] runs.
pub(crate) const PROGRAM: &str = "sh";

impl Shell {
    pub(crate) fn new(session: Box<dyn ExecSession>) -> Self {
        Self { session, calls: 0 }
    }

    /// Run `cmd` (its words quoted, so no shell syntax in them counts) with
    /// no input, and return its output (standard error folded into
    /// standard output) and exit code.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a call dropped half way leaves its output unread,
    /// so the caller drops the shell with it.
    pub(crate) async fn run(
        &mut self,
        cmd: &[String],
    ) -> std::result::Result<ExecOutput, ShellError> {
        self.calls += 1;
        // Markers numbered per call: a body holding a marker of another call cannot end this one.
        let start = format!("@@rollback-start-{}", self.calls);
        let end = format!("@@rollback-end-{}", self.calls);
        let words: Vec<String> = cmd.iter().map(|w| quote(w)).collect();
        let line = format!(
            "echo {start}; {} </dev/null 2>&1; rc=$?; echo; echo {end} $rc\n",
            words.join(" ")
        );
        self.send_and_wait(line, &start, &end).await
    }

    async fn send_and_wait(
        &mut self,
        line: String,
        start: &str,
        end: &str,
    ) -> std::result::Result<ExecOutput, ShellError> {
        self.session
            .send(line.as_bytes())
            .await
            .map_err(|_| ShellError::Gone)?;
        let mut seen = Vec::new();
        let mut began = false;
        loop {
            if let Some(output) = parse(&seen, start, end) {
                return Ok(output);
            }
            began = began || find(&seen, format!("{start}\n").as_bytes()).is_some();
            match self.session.recv().await {
                Ok(Some(bytes)) => seen.extend_from_slice(&bytes),
                Ok(None) => {
                    let why = format!(
                        "the shell in the proxy container ended: {}",
                        String::from_utf8_lossy(&seen).trim()
                    );
                    return Err(if began {
                        ShellError::Broken(Error::unavailable(why))
                    } else {
                        ShellError::Gone
                    });
                }
                Err(e) if began => return Err(ShellError::Broken(e)),
                Err(_) => return Err(ShellError::Gone),
            }
        }
    }
}

impl Shell {
    /// Write `contents` to `path` (mode 600, through a temporary file
    /// renamed over it) from a here-document on the shell's standard
    /// input: the contents never appear in a command line.
    pub(crate) async fn write(
        &mut self,
        path: &str,
        contents: &str,
    ) -> std::result::Result<ExecOutput, ShellError> {
        self.calls += 1;
        let start = format!("@@rollback-start-{}", self.calls);
        let end = format!("@@rollback-end-{}", self.calls);
        let eof = format!("@@rollback-eof-{}", self.calls);
        if contents.lines().any(|l| l == eof) {
            return Ok(ExecOutput::new(1, "the contents hold the end marker"));
        }
        let dir = path.rsplit_once('/').map_or(".", |(d, _)| d);
        let tmp = format!("{path}.tmp");
        let mut body = contents.to_owned();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        let line = format!(
            "echo {start}; (umask 077 && mkdir -p {d} && cat > {t} && mv {t} {p}) 2>&1 <<'{eof}'; rc=$?; echo; echo {end} $rc\n{body}{eof}\n",
            d = quote(dir),
            t = quote(&tmp),
            p = quote(path),
        );
        self.send_and_wait(line, &start, &end).await
    }
}

/// `word` as one shell word, taken literally.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The output and exit code of one call, once its end marker and exit code are in.
fn parse(seen: &[u8], start: &str, end: &str) -> Option<ExecOutput> {
    let start = format!("{start}\n");
    let from = find(seen, start.as_bytes())? + start.len();
    let rest = &seen[from..];
    let end = format!("\n{end} ");
    let at = find(rest, end.as_bytes())?;
    let tail = &rest[at + end.len()..];
    let newline = tail.iter().position(|&b| b == b'\n')?;
    let code = std::str::from_utf8(&tail[..newline])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(ExecOutput::new(code, String::from_utf8_lossy(&rest[..at])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_whole() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(r#"{"x":"it's"}"#), r#"'{"x":"it'\''s"}'"#);
    }

    #[test]
    fn a_call_ends_at_its_own_marker_and_code() {
        let (s, e) = ("@@rollback-start-2", "@@rollback-end-2");
        let stale = b"old\n@@rollback-end-1 0\n";
        let mut seen = stale.to_vec();
        seen.extend_from_slice(b"@@rollback-start-2\n{\"a\":1}\n@@rollback-end-2 ");
        assert_eq!(parse(&seen, s, e), None, "no exit code yet");
        seen.extend_from_slice(b"8\n");
        assert_eq!(parse(&seen, s, e), Some(ExecOutput::new(8, "{\"a\":1}")));
        let empty = b"@@rollback-start-2\n\n@@rollback-end-2 0\n";
        assert_eq!(parse(empty, s, e), Some(ExecOutput::new(0, "")));
    }
}
