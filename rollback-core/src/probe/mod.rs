//! Health probes that check an address: [`HttpProbe`] and [`TcpProbe`].
//!
//! Both ignore the container id they are given; they probe what the host
//! publishes. The Docker `HEALTHCHECK` probe lives in `rollback-docker`.

mod http;
mod tcp;

pub use http::{HttpProbe, MAX_BODY};
pub use tcp::TcpProbe;

/// Judge a body whose status already passed: healthy when the JSON value at
/// `pointer` equals `expected` (a string as is, anything else as JSON), the
/// detail naming what was found. Shared by every HTTP-style probe, so they
/// word their answers alike.
pub fn judge_json(status: &str, body: &[u8], pointer: &str, expected: &str) -> crate::ProbeResult {
    use crate::ProbeResult;
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return ProbeResult::Unhealthy(format!("body is not JSON: {e}")),
    };
    let Some(found) = value.pointer(pointer) else {
        return ProbeResult::Unhealthy(format!("no {pointer} in the body"));
    };
    let text = match found {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let name = pointer.trim_start_matches('/');
    if text == expected {
        ProbeResult::Healthy(format!("{status}, {name} is {found}"))
    } else {
        ProbeResult::Unhealthy(format!("{name} is {found}"))
    }
}

/// The innermost message of an error chain: "connection refused" rather
/// than "error sending request".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
