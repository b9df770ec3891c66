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
        for line in human(report) {
            out.line(&line);
        }
        for line in problems(report) {
            out.line(&line);
        }
    }
}

/// One line per host: what went (or would go), what stays.
pub fn human(report: &PruneReport) -> Vec<String> {
    let mut lines = Vec::new();
    for host in &report.hosts {
        if host.error.is_some() {
            continue;
        }
        let verb = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let kept = format!(
            "kept {} (retain = {})",
            count(host.kept.len(), "image"),
            report.retain.get()
        );
        if host.removed.is_empty() {
            lines.push(format!("[{}] prune: nothing to remove; {kept}", host.host));
            continue;
        }
        let names: Vec<String> = host.removed.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "[{}] prune: {verb} {}, {} freed: {}; {kept}",
            host.host,
            count(host.removed.len(), "image"),
            bytes(host.bytes_freed()),
            names.join(", ")
        ));
    }
    if report.dry_run {
        lines.push("nothing removed (dry run)".to_owned());
    }
    lines
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

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `3.8 MiB`, as `docker system df` rounds sizes.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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
            human(&report),
            ["[a] prune: removed 2 images, 4.0 MiB freed: bbbbbbbbbbbb (v2), aaaaaaaaaaaa (v1); kept 1 image (retain = 2)"]
        );
        assert_eq!(
            problems(&report),
            ["[b] prune: list the images: engine down; no image was removed there"]
        );
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
