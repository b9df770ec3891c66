//! [`DockerHealthProbe`]: health as the image's own `HEALTHCHECK` reports it;
//! [`DockerExecProbe`]: a command run inside the new container.

use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerInspectResponse, HealthConfig, HealthStatusEnum};
use rollback_core::{
    ContainerId, Error, ExecOutput, HealthProbe, ImageRef, ProbeResult, Result, Runtime,
};

use crate::convert::container_state;
use crate::error::classify;
use crate::DockerRuntime;

/// Reads the engine's health state of the container, kept by the image's
/// `HEALTHCHECK`; the last health log entry is the detail.
#[derive(Debug, Clone)]
pub struct DockerHealthProbe {
    runtime: DockerRuntime,
}

impl DockerHealthProbe {
    /// A probe on the same engine as `runtime`.
    pub fn new(runtime: DockerRuntime) -> Self {
        DockerHealthProbe { runtime }
    }
}

/// Whether a `HEALTHCHECK` is set and not switched off (`HEALTHCHECK NONE`).
fn defines_check(healthcheck: Option<&HealthConfig>) -> bool {
    healthcheck
        .and_then(|h| h.test.as_ref())
        .is_some_and(|test| test.first().is_some_and(|t| t != "NONE"))
}

/// The verdict for one inspect answer.
pub(crate) fn verdict(response: &ContainerInspectResponse) -> ProbeResult {
    let state = container_state(response);
    if !state.is_running() {
        return ProbeResult::Unhealthy(format!("container is {state}"));
    }
    let has_healthcheck = defines_check(
        response
            .config
            .as_ref()
            .and_then(|c| c.healthcheck.as_ref()),
    );
    let health = response.state.as_ref().and_then(|s| s.health.as_ref());
    let status = health.and_then(|h| h.status);
    let last = health
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last())
        .map(|entry| {
            let output = entry.output.as_deref().unwrap_or_default().trim();
            let code = entry.exit_code.unwrap_or_default();
            if output.is_empty() {
                format!("healthcheck exited with code {code}")
            } else {
                // Keep the end of long output: that is where checks say why.
                let skip = output.chars().count().saturating_sub(300);
                let tail: String = output.chars().skip(skip).collect();
                format!("healthcheck exited with code {code}: {tail}")
            }
        });
    match status {
        Some(HealthStatusEnum::HEALTHY) => {
            ProbeResult::Healthy(last.unwrap_or_else(|| "healthy".to_owned()))
        }
        Some(HealthStatusEnum::UNHEALTHY) => {
            ProbeResult::Unhealthy(last.unwrap_or_else(|| "unhealthy".to_owned()))
        }
        Some(HealthStatusEnum::STARTING) => {
            ProbeResult::Starting(last.unwrap_or_else(|| "healthcheck has not run yet".to_owned()))
        }
        _ if !has_healthcheck => ProbeResult::Unhealthy("image has no HEALTHCHECK".to_owned()),
        _ => ProbeResult::Starting("no health status yet".to_owned()),
    }
}

#[async_trait]
impl HealthProbe for DockerHealthProbe {
    async fn check(&self, container: &ContainerId, timeout: Duration) -> ProbeResult {
        let inspect = self
            .runtime
            .docker()
            .inspect_container(container.as_str(), None);
        match tokio::time::timeout(timeout, inspect).await {
            Ok(Ok(response)) => verdict(&response),
            Ok(Err(e)) => ProbeResult::Unhealthy(
                classify(
                    self.runtime.url(),
                    &format!("inspect container {container}"),
                    e,
                )
                .message()
                .to_owned(),
            ),
            Err(_) => ProbeResult::Unhealthy(format!(
                "the engine at {} did not answer within {}",
                self.runtime.url(),
                humantime::format_duration(timeout)
            )),
        }
    }

    /// Refuses an image without a `HEALTHCHECK`: every probe of it would
    /// answer unhealthy, and so would a restored release of the same kind.
    async fn admit(&self, image: &ImageRef) -> Result<()> {
        let reference = image.to_string();
        let inspect = self
            .runtime
            .docker()
            .inspect_image(&reference)
            .await
            .map_err(|e| classify(self.runtime.url(), &format!("inspect image {reference}"), e))?;
        if defines_check(inspect.config.as_ref().and_then(|c| c.healthcheck.as_ref())) {
            Ok(())
        } else {
            Err(Error::invalid_input(
                "has no HEALTHCHECK, which [health] docker = true needs: add one to the image or choose another check",
            ))
        }
    }

    fn describe(&self) -> String {
        format!("docker HEALTHCHECK via {}", self.runtime.url())
    }
}

/// Runs a command inside the container (`docker exec`); exit code 0 is
/// healthy. The end of the command's output is the detail.
#[derive(Debug, Clone)]
pub struct DockerExecProbe {
    runtime: DockerRuntime,
    cmd: Vec<String>,
}

impl DockerExecProbe {
    /// A probe running `cmd` (program and arguments, no shell) through `runtime`.
    ///
    /// An empty command is refused.
    pub fn new(runtime: DockerRuntime, cmd: Vec<String>) -> Result<Self> {
        if cmd.first().is_none_or(|program| program.is_empty()) {
            return Err(Error::invalid_input(
                "health.exec: give the program to run and its arguments",
            ));
        }
        Ok(DockerExecProbe { runtime, cmd })
    }
}

/// The verdict for one exec.
pub(crate) fn exec_verdict(result: Result<ExecOutput>) -> ProbeResult {
    match result {
        Ok(out) => {
            let output = out.output.trim();
            let skip = output.chars().count().saturating_sub(300);
            let tail: String = output.chars().skip(skip).collect();
            let detail = if tail.is_empty() {
                format!("exited with code {}", out.exit_code)
            } else {
                format!("exited with code {}: {tail}", out.exit_code)
            };
            if out.exit_code == 0 {
                ProbeResult::Healthy(detail)
            } else {
                ProbeResult::Unhealthy(detail)
            }
        }
        Err(e) => ProbeResult::Unhealthy(e.message().to_owned()),
    }
}

#[async_trait]
impl HealthProbe for DockerExecProbe {
    async fn check(&self, container: &ContainerId, timeout: Duration) -> ProbeResult {
        exec_verdict(self.runtime.exec(container, &self.cmd, timeout).await)
    }

    fn describe(&self) -> String {
        format!("exec {:?} via {}", self.cmd.join(" "), self.runtime.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState as EngineState, ContainerStateStatusEnum, Health,
        HealthConfig, HealthcheckResult,
    };

    fn response(
        status: ContainerStateStatusEnum,
        health: Option<(HealthStatusEnum, i64, &str)>,
        healthcheck: bool,
    ) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(EngineState {
                status: Some(status),
                exit_code: Some(1),
                health: health.map(|(status, code, output)| Health {
                    status: Some(status),
                    failing_streak: None,
                    log: Some(vec![HealthcheckResult {
                        exit_code: Some(code),
                        output: Some(output.to_owned()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                healthcheck: healthcheck.then(|| HealthConfig {
                    test: Some(vec!["CMD".into(), "true".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exec_verdicts_follow_the_exit_code() {
        let out = |exit_code, output: &str| Ok(ExecOutput::new(exit_code, output));
        assert_eq!(
            exec_verdict(out(0, "ok\n")),
            ProbeResult::Healthy("exited with code 0: ok".into())
        );
        assert_eq!(
            exec_verdict(out(3, "")),
            ProbeResult::Unhealthy("exited with code 3".into())
        );
        let long = "x".repeat(1000) + "why";
        let ProbeResult::Unhealthy(detail) = exec_verdict(out(1, &long)) else {
            panic!("exit 1 is unhealthy")
        };
        assert!(detail.ends_with("xwhy") && detail.len() < 330, "{detail}");
        assert_eq!(
            exec_verdict(Err(Error::timeout("exec \"x\": no exit within 1s"))),
            ProbeResult::Unhealthy("exec \"x\": no exit within 1s".into())
        );
    }

    #[test]
    fn verdicts_follow_the_engine_health_state() {
        use ContainerStateStatusEnum::*;
        assert_eq!(
            verdict(&response(
                RUNNING,
                Some((HealthStatusEnum::HEALTHY, 0, "ok\n")),
                true
            )),
            ProbeResult::Healthy("healthcheck exited with code 0: ok".into())
        );
        assert_eq!(
            verdict(&response(
                RUNNING,
                Some((HealthStatusEnum::UNHEALTHY, 1, "")),
                true
            )),
            ProbeResult::Unhealthy("healthcheck exited with code 1".into())
        );
        assert!(matches!(
            verdict(&response(
                RUNNING,
                Some((HealthStatusEnum::STARTING, 1, "x")),
                true
            )),
            ProbeResult::Starting(_)
        ));
        assert_eq!(
            verdict(&response(RUNNING, None, false)),
            ProbeResult::Unhealthy("image has no HEALTHCHECK".into())
        );
        assert_eq!(
            verdict(&response(
                EXITED,
                Some((HealthStatusEnum::UNHEALTHY, 1, "")),
                true
            )),
            ProbeResult::Unhealthy("container is exited with code 1".into())
        );
    }
}
