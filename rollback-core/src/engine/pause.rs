//! A test hook, for end-to-end tests that kill the process at an exact
//! point of a deploy (crash recovery).
//!
//! `ROLLBACK_TEST_PAUSE_AT=<point>` or `<point>@<host>` (points: `locked`,
//! `captured`, `pulled`, `switched`, `verifying`, `rolling_back`,
//! `promoting`) makes the first host reaching that point (or the named
//! host) print `paused at <point> on <host>` to stderr and sleep there, for
//! `ROLLBACK_TEST_PAUSE_FOR` (a humantime duration, default one hour). Other
//! hosts go on. The variables are read once; unset, the hook does nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::types::HostId;

struct Pause {
    point: String,
    host: Option<String>,
    duration: Duration,
    fired: AtomicBool,
}

fn configured() -> Option<&'static Pause> {
    static PAUSE: OnceLock<Option<Pause>> = OnceLock::new();
    PAUSE
        .get_or_init(|| {
            let spec = std::env::var("ROLLBACK_TEST_PAUSE_AT").ok()?;
            let (point, host) = match spec.split_once('@') {
                Some((point, host)) => (point.to_owned(), Some(host.to_owned())),
                None => (spec, None),
            };
            let duration = std::env::var("ROLLBACK_TEST_PAUSE_FOR")
                .ok()
                .and_then(|d| humantime::parse_duration(&d).ok())
                .unwrap_or(Duration::from_secs(3600));
            Some(Pause {
                point,
                host,
                duration,
                fired: AtomicBool::new(false),
            })
        })
        .as_ref()
}

/// Pause here when the hook names this point (and host); see the module docs.
pub(crate) async fn point(name: &str, host: Option<&HostId>) {
    let Some(pause) = configured() else {
        return;
    };
    let host_name = host.map_or("fleet", HostId::as_str);
    if pause.point != name || pause.host.as_deref().is_some_and(|h| h != host_name) {
        return;
    }
    if pause.fired.swap(true, Ordering::SeqCst) {
        return;
    }
    eprintln!("paused at {name} on {host_name}");
    tokio::time::sleep(pause.duration).await;
    eprintln!("resumed at {name} on {host_name}");
}
