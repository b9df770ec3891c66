//! Image retention on every host: [`Deployer::prune`].
//!
//! Runs after a successful deploy (the CLI calls it) or on demand. Which
//! image stays is decided by [`retention::select`](crate::retention::select);
//! this driver only gathers what the rule needs and removes what it says.

use serde::Serialize;

use super::{join_hosts, timed, Deployer, HostTarget};
use crate::error::{ErrorKind, Result};
use crate::retention::{self, ImageInfo, KeptImage, Protected, Retain};
use crate::types::{Digest, HostId};

/// What pruning did, or would do, on every host.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[must_use]
pub struct PruneReport {
    /// How many releases each host keeps.
    pub retain: Retain,
    /// Nothing was removed: the report says what would be.
    pub dry_run: bool,
    /// Per host, in config order.
    pub hosts: Vec<HostPrune>,
}

impl PruneReport {
    /// Bytes freed (or, in a dry run, that would be) on all hosts.
    pub fn bytes_freed(&self) -> u64 {
        self.hosts.iter().map(HostPrune::bytes_freed).sum()
    }

    /// Whether every host was read and every removal succeeded.
    pub fn is_complete(&self) -> bool {
        self.hosts
            .iter()
            .all(|h| h.error.is_none() && h.failed.is_empty())
    }
}

/// An image the engine would not remove.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedRemoval {
    /// The image.
    #[serde(flatten)]
    pub image: ImageInfo,
    /// The engine's answer.
    pub error: String,
}

/// Pruning on one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostPrune {
    /// The host.
    pub host: HostId,
    /// Images that stay, newest first, with the reason.
    pub kept: Vec<KeptImage>,
    /// Images removed (in a dry run: that would be), newest first.
    pub removed: Vec<ImageInfo>,
    /// Images the engine refused to remove (another container uses them).
    pub failed: Vec<FailedRemoval>,
    /// Why the host could not be pruned at all.
    pub error: Option<String>,
}

impl HostPrune {
    /// Bytes freed by the removed images.
    pub fn bytes_freed(&self) -> u64 {
        self.removed.iter().map(|i| i.size).sum()
    }
}

impl Deployer {
    /// Remove, on every host, the images of the app's repository beyond the
    /// newest `retain` releases, sparing the images of the app's containers
    /// and the releases the stable and previous tags name.
    ///
    /// The tags are read first; when the registry cannot say what they
    /// name, nothing is removed anywhere (an `Err`). A host that cannot be
    /// read is reported in its [`HostPrune::error`], the others are pruned.
    /// With `dry_run`, nothing is removed.
    pub async fn prune(&self, retain: Retain, dry_run: bool) -> Result<PruneReport> {
        let mut tags = Vec::new();
        for tag in [&self.app.stable_tag, &self.app.previous_tag] {
            if let Some(digest) = self.tag_digest(tag).await? {
                tags.push((tag.to_string(), digest));
            }
        }
        let hosts = self
            .hosts
            .iter()
            .map(|host| self.prune_host(host, retain, &tags, dry_run));
        Ok(PruneReport {
            retain,
            dry_run,
            hosts: join_hosts(hosts).await,
        })
    }

    async fn prune_host(
        &self,
        host: &HostTarget,
        retain: Retain,
        tags: &[(String, Digest)],
        dry_run: bool,
    ) -> HostPrune {
        let mut report = HostPrune {
            host: host.id.clone(),
            kept: Vec::new(),
            removed: Vec::new(),
            failed: Vec::new(),
            error: None,
        };
        let plan = match self.retention_plan(host, retain, tags).await {
            Ok(plan) => plan,
            Err(e) => {
                report.error = Some(e.report());
                return report;
            }
        };
        report.kept = plan.keep;
        if dry_run {
            report.removed = plan.remove;
            return report;
        }
        for image in plan.remove {
            let removal = if image.shared {
                self.remove_references(host, &image).await
            } else {
                // All or nothing: refused whole when a container uses it.
                let what = format!("remove image {}", image.short_id());
                match timed(
                    self.timeouts.engine,
                    &what,
                    host.runtime.remove_image(&image.id),
                )
                .await
                {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(e),
                }
            };
            match removal {
                Ok(true) => report.removed.push(image),
                // Removed meanwhile: its bytes were not freed by us.
                Ok(false) => {}
                Err(e) => report.failed.push(FailedRemoval {
                    image,
                    error: e.report(),
                }),
            }
        }
        report
    }

    /// Remove the names a [shared](ImageInfo::shared) `image` has in the
    /// app's repository (`repo:tag`, then `repo@sha256:...`), never forced:
    /// a removal by id is refused while another repository names it, and
    /// must never take that repository's names with it. The engine frees
    /// the layers once no name is left. Returns whether any name was removed.
    async fn remove_references(&self, host: &HostTarget, image: &ImageInfo) -> Result<bool> {
        let repository = &self.app.repository;
        let references = image
            .tags
            .iter()
            .map(|tag| format!("{repository}:{tag}"))
            .chain(image.digests.iter().map(|d| format!("{repository}@{d}")));
        let mut removed = false;
        for reference in references {
            match timed(
                self.timeouts.engine,
                format!("remove image {reference}"),
                host.runtime.remove_image(&reference),
            )
            .await
            {
                Ok(()) => removed = true,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    async fn retention_plan(
        &self,
        host: &HostTarget,
        retain: Retain,
        tags: &[(String, Digest)],
    ) -> Result<retention::RetentionPlan> {
        let limit = self.timeouts.engine;
        let containers = timed(
            limit,
            "list the app containers",
            host.runtime.list_app(&self.app.name),
        )
        .await?;
        // The app container by name too: one created by hand has no labels.
        let current = timed(
            limit,
            "read the app container",
            host.runtime.current(&self.app.name),
        )
        .await?;
        let images = timed(
            limit,
            format!("list the images of {}", self.app.repository),
            host.runtime.list_images(&self.app.repository),
        )
        .await?;
        let protected = Protected {
            image_ids: containers
                .iter()
                .chain(current.as_ref())
                .map(|c| c.image_id.clone())
                .collect(),
            tags: tags.to_vec(),
        };
        Ok(retention::select(images, retain, &protected))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{App, CancellationToken, Target};
    use crate::fake::{FakeProbe, FakeRegistry, FakeRuntime};
    use crate::outcome::Outcome;
    use crate::traits::Runtime;
    use crate::types::{ContainerTemplate, Release, Repository};

    fn digest(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .unwrap()
    }

    fn setup() -> (Deployer, Arc<FakeRuntime>, Arc<FakeRegistry>, Repository) {
        let repo: Repository = "127.0.0.1:5000/team/app".parse().unwrap();
        let runtime = FakeRuntime::new();
        let registry = FakeRegistry::new();
        let app = App::new("app".parse().unwrap(), repo.clone());
        let host = HostTarget::new(
            "a",
            runtime.clone(),
            runtime.clone(),
            FakeProbe::new(runtime.clone()),
            ContainerTemplate::new(),
        );
        let deployer = Deployer::new(app, registry.clone(), vec![host]);
        (deployer, runtime, registry, repo)
    }

    fn image(n: u8, created: i64) -> ImageInfo {
        ImageInfo {
            id: format!("img-{}", digest(n).short()),
            digests: vec![digest(n)],
            tags: vec![],
            created,
            size: 1000 + u64::from(n),
            shared: false,
        }
    }

    fn ids(images: &[ImageInfo]) -> Vec<String> {
        images.iter().map(|i| i.id.clone()).collect()
    }

    #[tokio::test]
    async fn removes_old_images_and_spares_containers_and_tags() {
        let (deployer, runtime, registry, repo) = setup();
        for n in 1..=6 {
            runtime.add_image(image(n, i64::from(n)));
        }
        // v1 is kept as a container, v2 is `previous`, v6 runs and is `latest`.
        runtime.add_running(
            "app-old",
            "app",
            &Release {
                repository: repo.clone(),
                tag: None,
                digest: digest(1),
            },
        );
        registry.set_tag(&repo, "previous", &digest(2));
        registry.set_tag(&repo, "latest", &digest(6));
        let report = deployer
            .prune(Retain::new(2).unwrap(), false)
            .await
            .unwrap();
        let host = &report.hosts[0];
        assert_eq!(host.error, None);
        assert_eq!(ids(&host.removed), vec![image(4, 0).id, image(3, 0).id]);
        assert_eq!(host.bytes_freed(), 1004 + 1003);
        assert_eq!(report.bytes_freed(), 2007);
        assert!(report.is_complete());
        let left: Vec<String> = runtime.images().into_iter().map(|i| i.id).collect();
        for n in [1, 2, 5, 6] {
            assert!(left.contains(&image(n, 0).id), "{n} was removed");
        }
        assert_eq!(left.len(), 4);
    }

    #[tokio::test]
    async fn removes_only_this_repositorys_names_of_an_image_another_repository_names() {
        let (deployer, runtime, _, repo) = setup();
        for n in 1..=4 {
            runtime.add_image(ImageInfo {
                tags: vec![format!("v{n}")],
                ..image(n, i64::from(n))
            });
        }
        // v1's image is also `other/app:v1`: the engine refuses to remove it
        // by id, and must keep the other repository's name.
        runtime.name_elsewhere(&image(1, 0).id, "127.0.0.1:5000/other/app:v1");
        let report = deployer
            .prune(Retain::new(2).unwrap(), false)
            .await
            .unwrap();
        let host = &report.hosts[0];
        assert!(host.failed.is_empty(), "{:?}", host.failed);
        assert_eq!(ids(&host.removed), vec![image(2, 0).id, image(1, 0).id]);
        assert_eq!(
            runtime.calls_of(&["remove_image"]),
            [
                // v2 only this repository names: by id, all or nothing.
                format!("remove_image {}", image(2, 0).id),
                format!("remove_image {repo}:v1"),
                format!("remove_image {repo}@{}", digest(1)),
            ]
        );
        // Nothing of this repository is left of v1 and v2; `other/app:v1` stays.
        let listed = runtime.list_images(&repo).await.unwrap();
        assert_eq!(ids(&listed), vec![image(3, 0).id, image(4, 0).id]);
        assert_eq!(
            runtime.foreign_names(&image(1, 0).id),
            ["127.0.0.1:5000/other/app:v1"]
        );
        assert_eq!(runtime.images().len(), 3, "v1's image stays for other/app");
    }

    #[tokio::test]
    async fn dry_run_removes_nothing() {
        let (deployer, runtime, _, _) = setup();
        for n in 1..=4 {
            runtime.add_image(image(n, i64::from(n)));
        }
        let report = deployer.prune(Retain::new(2).unwrap(), true).await.unwrap();
        assert!(report.dry_run);
        assert_eq!(
            ids(&report.hosts[0].removed),
            vec![image(2, 0).id, image(1, 0).id]
        );
        assert_eq!(runtime.images().len(), 4);
        assert!(runtime.calls_of(&["remove_image"]).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_that_cannot_say_what_tags_name_stops_everything() {
        let (deployer, runtime, registry, _) = setup();
        for n in 1..=4 {
            runtime.add_image(image(n, i64::from(n)));
        }
        registry.set_unreachable(true);
        assert!(deployer
            .prune(Retain::new(2).unwrap(), false)
            .await
            .is_err());
        assert_eq!(runtime.images().len(), 4);
    }

    #[tokio::test]
    async fn refused_removals_and_unreadable_hosts_are_reported() {
        let (deployer, runtime, _, _) = setup();
        for n in 1..=4 {
            runtime.add_image(image(n, i64::from(n)));
        }
        runtime.fail("remove_image", 1, ErrorKind::Conflict);
        let report = deployer
            .prune(Retain::new(2).unwrap(), false)
            .await
            .unwrap();
        let host = &report.hosts[0];
        assert_eq!(ids(&host.removed), vec![image(1, 0).id]);
        assert_eq!(host.failed.len(), 1);
        assert_eq!(host.failed[0].image.id, image(2, 0).id);
        assert!(!report.is_complete());

        runtime.fail("list_images", 2, ErrorKind::Unavailable);
        let report = deployer
            .prune(Retain::new(2).unwrap(), false)
            .await
            .unwrap();
        let error = report.hosts[0].error.as_deref().unwrap();
        assert!(error.contains("scripted list_images failure"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_deploys_the_new_release_and_the_kept_one_stay() {
        let (deployer, _, registry, repo) = setup();
        for n in 1..=4u8 {
            registry.set_tag(&repo, &format!("v{n}"), &digest(n));
            let report = deployer
                .deploy(
                    Target::Tag(format!("v{n}").parse().unwrap()),
                    CancellationToken::new(),
                )
                .await;
            assert_eq!(report.outcome, Outcome::Deployed, "{report:?}");
        }
        let report = deployer
            .prune(Retain::new(2).unwrap(), false)
            .await
            .unwrap();
        // v4 runs and is latest, v3 is previous: v1 and v2 go.
        assert_eq!(
            ids(&report.hosts[0].removed),
            vec![image(2, 0).id, image(1, 0).id]
        );
    }
}
