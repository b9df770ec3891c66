//! `rollback tag SRC DST`: a registry-side copy of a manifest.

use rollback_core::{Digest, ImageRef, Repository};
use serde::Serialize;

use crate::cli::TagArgs;
use crate::commands::Context;
use crate::exit::{self, CliError};
use rollback_core::{App, Tag};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Source,
    Destination,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Source => "SRC",
            Role::Destination => "DST",
        }
    }
}

/// Turn a command-line argument into a reference.
///
/// A bare tag (`v2`) or digest (`sha256:...`) belongs to the app's
/// repository; anything else must be a full reference. A destination must
/// name a tag.
fn reference(arg: &str, app: Option<&App>, role: Role) -> Result<ImageRef, CliError> {
    reference_in(arg, app.map(|a| &a.repository), role)
}

/// The destination: a bare tag stays in the source's repository when the
/// source was given in full, as `crane tag IMAGE TAG` does; otherwise it
/// resolves like [`reference`].
fn destination(
    arg: &str,
    source_arg: &str,
    source: &ImageRef,
    app: Option<&App>,
) -> Result<ImageRef, CliError> {
    let source_is_full = !source_arg.starts_with("sha256:") && source_arg.parse::<Tag>().is_err();
    if source_is_full && arg.parse::<Tag>().is_ok() {
        return reference_in(arg, Some(&source.repo()), Role::Destination);
    }
    reference(arg, app, Role::Destination)
}

fn reference_in(
    arg: &str,
    repository: Option<&Repository>,
    role: Role,
) -> Result<ImageRef, CliError> {
    let what = role.name();
    let need_app = |kind: &str| {
        repository.ok_or_else(|| {
            CliError::usage(format!(
                "{what} {arg:?} is a {kind}: give a full reference (registry/repository:tag), or a config file with [app] repository"
            ))
        })
    };
    if arg.starts_with("sha256:") {
        if role == Role::Destination {
            return Err(CliError::usage(format!(
                "{what} {arg:?}: the destination must be a tag, not a digest"
            )));
        }
        let digest: Digest = arg.parse().map_err(|e| CliError::bad_argument(what, &e))?;
        return Ok(need_app("digest")?.with_digest(&digest));
    }
    if let Ok(tag) = arg.parse::<Tag>() {
        return Ok(need_app("tag")?.with_tag(&tag));
    }
    let reference: ImageRef = arg.parse().map_err(|e| CliError::bad_argument(what, &e))?;
    if role == Role::Destination {
        let last = arg.rsplit('/').next().unwrap_or(arg);
        if reference.digest().is_some() || !last.contains(':') {
            return Err(CliError::usage(format!(
                "{what} {arg:?}: the destination must end in :tag"
            )));
        }
    }
    Ok(reference)
}

#[derive(Serialize)]
struct TagJson<'a> {
    outcome: &'a str,
    exit_code: i32,
    source: String,
    destination: String,
    digest: &'a Digest,
    written: bool,
    dry_run: bool,
}

/// Run `tag`.
pub async fn run(ctx: &Context, args: &TagArgs) -> Result<i32, CliError> {
    let app = ctx.config.as_ref().and_then(|c| c.app.as_ref());
    let source = reference(&args.source, app, Role::Source)?;
    let destination = destination(&args.destination, &args.source, &source, app)?;
    if source.resolve_registry() != destination.resolve_registry() {
        return Err(CliError::usage(format!(
            "SRC and DST are in different registries ({} and {}): a registry-side copy stays within one registry",
            source.registry(),
            destination.registry()
        )));
    }
    let registry = ctx.adapters.registry()?;
    let out = &ctx.output;
    if ctx.dry_run {
        let digest = registry
            .resolve(&source)
            .await
            .map_err(|e| CliError::core(format_args!("resolve {source}"), &e))?;
        if out.is_json() {
            out.json(&TagJson {
                outcome: "planned",
                exit_code: exit::OK,
                source: source.to_string(),
                destination: destination.to_string(),
                digest: &digest,
                written: false,
                dry_run: true,
            });
        } else {
            out.line(&format!(
                "would copy {source} ({digest}) to {destination}; nothing changed (dry run)"
            ));
        }
        return Ok(exit::OK);
    }
    let report = registry
        .copy(&source, &destination)
        .await
        .map_err(|e| CliError::core(format_args!("copy {source} to {destination}"), &e))?;
    if out.is_json() {
        out.json(&TagJson {
            outcome: "tagged",
            exit_code: exit::OK,
            source: source.to_string(),
            destination: destination.to_string(),
            digest: &report.digest,
            written: report.written,
            dry_run: false,
        });
    } else if report.written {
        out.line(&format!(
            "tagged {destination} = {} (copied from {source})",
            report.digest
        ));
    } else {
        out.line(&format!(
            "{destination} already is {} (unchanged)",
            report.digest
        ));
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, OutputFormat};
    use crate::commands::testing::{context, FakeAdapters};
    use crate::config::Config;
    use clap::Parser;
    use rollback_core::{CopyReport, MockRegistry};
    use std::path::Path;

    fn app() -> App {
        App::new(
            "app".parse().unwrap(),
            "127.0.0.1:5000/team/app".parse().unwrap(),
        )
    }

    #[test]
    fn references_resolve_against_the_app_repository() {
        let app = app();
        let r = reference("v2", Some(&app), Role::Source).unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:v2");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = reference(&d, Some(&app), Role::Source).unwrap();
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/team/app@{d}"));
        let r = reference("127.0.0.1:5000/other/app:v1", None, Role::Destination).unwrap();
        assert_eq!(r.repository(), "other/app");
        assert_eq!(r.tag(), Some("v1"));
    }

    #[test]
    fn a_bare_destination_tag_stays_in_a_full_sources_repository() {
        let app = app();
        let source_arg = "127.0.0.1:5000/other/img:v1";
        let source = reference(source_arg, Some(&app), Role::Source).unwrap();
        for app in [None, Some(&app)] {
            let d = destination("stable", source_arg, &source, app).unwrap();
            assert_eq!(d.to_string(), "127.0.0.1:5000/other/img:stable");
        }
        let digest_source = format!("127.0.0.1:5000/other/img@sha256:{}", "a".repeat(64));
        let source = reference(&digest_source, None, Role::Source).unwrap();
        let d = destination("v1", &digest_source, &source, None).unwrap();
        assert_eq!(d.to_string(), "127.0.0.1:5000/other/img:v1");
        // A bare source still means the app's repository, for both sides.
        let source = reference("v2", Some(&app), Role::Source).unwrap();
        let d = destination("stable", "v2", &source, Some(&app)).unwrap();
        assert_eq!(d.to_string(), "127.0.0.1:5000/team/app:stable");
    }

    #[test]
    fn bad_references_are_usage_errors() {
        let app = app();
        let d = format!("sha256:{}", "a".repeat(64));
        for (arg, app, role, needle) in [
            ("v2", None, Role::Source, "give a full reference"),
            (d.as_str(), None, Role::Source, "is a digest"),
            (
                d.as_str(),
                Some(&app),
                Role::Destination,
                "must be a tag, not a digest",
            ),
            ("sha256:abc", Some(&app), Role::Source, "invalid digest"),
            (
                "127.0.0.1:5000/team/app",
                Some(&app),
                Role::Destination,
                "must end in :tag",
            ),
            (
                "UPPER/Case:x",
                Some(&app),
                Role::Source,
                "invalid image reference",
            ),
        ] {
            let e = reference(arg, app, role).unwrap_err();
            assert_eq!(e.exit_code(), exit::USAGE, "{arg}");
            assert!(e.message().contains(needle), "{arg}: {e}");
        }
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("rollback").chain(args.iter().copied())).unwrap()
    }

    fn config() -> Config {
        Config::parse(
            "[app]\nname = \"app\"\nrepository = \"127.0.0.1:5000/team/app\"\n[health]\ndocker = true\n",
            Path::new("rollback.toml"),
            &|_| None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn copies_a_tag_within_the_repository() {
        let digest: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let mut registry = MockRegistry::new();
        let d = digest.clone();
        registry
            .expect_copy()
            .withf(|s, d| {
                s.to_string() == "127.0.0.1:5000/team/app:latest"
                    && d.to_string() == "127.0.0.1:5000/team/app:previous"
            })
            .times(1)
            .returning(move |_, _| {
                Ok(CopyReport {
                    digest: d.clone(),
                    written: true,
                })
            });
        let adapters = FakeAdapters::with_registry(registry);
        let (ctx, out, _) = context(Some(config()), OutputFormat::Json, false, adapters);
        let cli = cli(&["tag", "latest", "previous"]);
        let crate::cli::Command::Tag(args) = &cli.command else {
            unreachable!()
        };
        assert_eq!(run(&ctx, args).await.unwrap(), exit::OK);
        let v: serde_json::Value = serde_json::from_str(out.text().trim()).unwrap();
        assert_eq!(v["outcome"], "tagged");
        assert_eq!(v["digest"], digest.as_str());
        assert_eq!(v["written"], true);
    }

    #[tokio::test]
    async fn dry_run_resolves_and_copies_nothing() {
        let digest: Digest = format!("sha256:{}", "c".repeat(64)).parse().unwrap();
        let mut registry = MockRegistry::new();
        let d = digest.clone();
        registry
            .expect_resolve()
            .times(1)
            .returning(move |_| Ok(d.clone()));
        registry.expect_copy().never();
        let adapters = FakeAdapters::with_registry(registry);
        let (ctx, out, _) = context(None, OutputFormat::Human, true, adapters);
        let cli = cli(&["tag", "127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:stable"]);
        let crate::cli::Command::Tag(args) = &cli.command else {
            unreachable!()
        };
        assert_eq!(run(&ctx, args).await.unwrap(), exit::OK);
        assert!(
            out.text()
                .starts_with("would copy 127.0.0.1:5000/a/b:v1 (sha256:cccc"),
            "{}",
            out.text()
        );
    }

    #[tokio::test]
    async fn registry_failures_exit_1_with_the_reason() {
        let mut registry = MockRegistry::new();
        registry
            .expect_copy()
            .returning(|_, _| Err(rollback_core::Error::not_found("manifest unknown")));
        let adapters = FakeAdapters::with_registry(registry);
        let (ctx, _, _) = context(Some(config()), OutputFormat::Human, false, adapters);
        let cli = cli(&["tag", "v9", "previous"]);
        let crate::cli::Command::Tag(args) = &cli.command else {
            unreachable!()
        };
        let e = run(&ctx, args).await.unwrap_err();
        assert_eq!(e.exit_code(), exit::FAILED);
        assert_eq!(
            e.message(),
            "copy 127.0.0.1:5000/team/app:v9 to 127.0.0.1:5000/team/app:previous: manifest unknown"
        );
    }

    #[tokio::test]
    async fn cross_registry_copies_are_refused() {
        let adapters = FakeAdapters::with_registry(MockRegistry::new());
        let (ctx, _, _) = context(None, OutputFormat::Human, false, adapters);
        let cli = cli(&["tag", "127.0.0.1:5000/a/b:v1", "127.0.0.1:6000/a/b:v1"]);
        let crate::cli::Command::Tag(args) = &cli.command else {
            unreachable!()
        };
        let e = run(&ctx, args).await.unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(e.message().contains("different registries"), "{e}");
    }
}
