//! `rollback prune`, and the retention run after a deployed release.

use rollback_core::{Deployer, PruneReport, Retain};
use serde::Serialize;

use crate::commands::deploy::deployer;
use crate::commands::Context;
use crate::exit::{self, CliError};
use crate::output::Output;

/// After a deployed release: prune every host. Failures are warnings, as
/// the release is deployed whatever happens to old images; the report is
/// printed with the deploy's.
pub(crate) async fn after_deploy(
    ctx: &Context,
    deployer: &Deployer,
    retain: Retain,
) -> Option<PruneReport> {
    match deployer.prune(retain, false).await {
        Ok(report) => {
            for line in problems(&report) {
                ctx.output.warn(&line);
            }
            Some(report)
        }
        Err(e) => {
            ctx.output
                .warn(&format!("retention: {}; no image was removed", e.report()));
            None
        }
    }
}

#[derive(Serialize)]
struct PruneJson<'a> {
    outcome: &'static str,
    exit_code: i32,
    bytes_freed: u64,
    #[serde(flatten)]
    report: &'a PruneReport,
}

/// `prune`: the same as after a deploy, on demand; `--dry-run` says what
/// would go. Exit 1 when a host could not be read or an image not removed.
pub async fn run(ctx: &Context) -> Result<i32, CliError> {
    let config = ctx.config()?;
    config.app()?;
    let retain = config.retain;
    let (deployer, _) = deployer(ctx, false).await?;
    let report = deployer
        .prune(retain, ctx.dry_run)
        .await
        .map_err(|e| CliError::failed(format!("prune: {}; no image was removed", e.report())))?;
    let code = if report.is_complete() {
        exit::OK
    } else {
        exit::FAILED
    };
    print(&ctx.output, &report, code);
    Ok(code)
}

fn print(out: &Output, report: &PruneReport, code: i32) {
    if out.is_json() {
        out.json(&PruneJson {
            outcome: match (report.dry_run, code) {
                (true, _) => "planned",
                (false, exit::OK) => "pruned",
                (false, _) => "failed",
            },
            exit_code: code,
            bytes_freed: report.bytes_freed(),
            report,
        });
    } else {
        for line in crate::output::prune_lines(report) {
            out.line(&line);
        }
        for line in problems(report) {
            out.line(&line);
        }
    }
}

/// What could not be done, one line each.
fn problems(report: &PruneReport) -> Vec<String> {
    let mut lines = Vec::new();
    for host in &report.hosts {
        if let Some(error) = &host.error {
            lines.push(format!(
                "[{}] prune: {error}; no image was removed there",
                host.host
            ));
        }
        for failed in &host.failed {
            lines.push(format!(
                "[{}] prune: kept {}: {}",
                host.host, failed.image, failed.error
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollback_core::{HostPrune, ImageInfo, KeepReason, KeptImage};

    fn image(c: char, tag: &str) -> ImageInfo {
        ImageInfo {
            id: format!("sha256:{}", c.to_string().repeat(64)),
            digests: vec![],
            tags: vec![tag.to_owned()],
            created: 0,
            size: 2 * 1024 * 1024,
            shared: false,
        }
    }

    #[test]
    fn human_lines_name_images_and_bytes() {
        let report = PruneReport {
            retain: Retain::new(2).unwrap(),
            dry_run: false,
            hosts: vec![
                HostPrune {
                    host: "a".into(),
                    kept: vec![KeptImage {
                        image: image('c', "v3"),
                        keep: KeepReason::InUse,
                    }],
                    removed: vec![image('b', "v2"), image('a', "v1")],
                    failed: vec![],
                    error: None,
                },
                HostPrune {
                    host: "b".into(),
                    kept: vec![],
                    removed: vec![],
                    failed: vec![],
                    error: Some("list the images: engine down".into()),
                },
            ],
        };
        assert_eq!(
            crate::output::prune_lines(&report),
            ["[a] prune: removed 2 images, 4.0 MiB freed: bbbbbbbbbbbb (v2), aaaaaaaaaaaa (v1); kept 1 image (retain = 2)"]
        );
        assert_eq!(
            problems(&report),
            ["[b] prune: list the images: engine down; no image was removed there"]
        );
    }
}
