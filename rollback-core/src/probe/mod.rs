//! Health probes that check an address: [`HttpProbe`] and [`TcpProbe`].
//!
//! Both ignore the container id they are given; they probe what the host
//! publishes. The Docker `HEALTHCHECK` probe lives in `rollback-docker`.

mod http;
mod tcp;

pub use http::{HttpProbe, MAX_BODY};
pub use tcp::TcpProbe;

/// The innermost message of an error chain: "connection refused" rather
/// than "error sending request".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
