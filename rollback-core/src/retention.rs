//! Which images of the app's repository a host keeps: the pure rule behind
//! `[app] retain` and `rollback prune`.
//!
//! A host keeps the images of the newest `retain` releases, and whatever
//! the app still needs whatever its age: the image of every container of the
//! app (the running one, the kept previous one) and the releases the stable
//! and previous tags name, so that `undo` never has to pull.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::InvalidPolicy;
use crate::types::Digest;

/// One image of the app's repository on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The engine's image id (`sha256:...` of its config).
    pub id: String,
    /// Manifest digests it is known by in the repository (`repo@sha256:...`).
    pub digests: Vec<Digest>,
    /// Tags it has in the repository.
    pub tags: Vec<String>,
    /// Build time, seconds since the Unix epoch; releases are ordered by it.
    pub created: i64,
    /// Bytes its removal frees: its size less the layers other images share,
    /// where the engine reports sharing; else its whole size, an upper bound.
    pub size: u64,
    /// Other repositories name it too (a `docker tag` across repositories):
    /// the engine refuses to remove it by id, so only this repository's
    /// names of it are removed, and it stays while the others do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

impl ImageInfo {
    /// The 12-character form of the id, as `docker images` prints it.
    pub fn short_id(&self) -> &str {
        let hex = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &hex[..hex.len().min(12)]
    }
}

impl fmt::Display for ImageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_id())?;
        let mut names = self.tags.iter().map(String::as_str).chain(
            self.digests
                .iter()
                .filter(|_| self.tags.is_empty())
                .map(Digest::short),
        );
        if let Some(first) = names.next() {
            write!(f, " ({first}")?;
            for name in names {
                write!(f, ", {name}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// How many releases' images each host keeps; at least 2, the running
/// release and the one `undo` goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Retain(u32);

impl Retain {
    /// The default: the newest 5 releases.
    pub const DEFAULT: Retain = Retain(5);

    /// `n` releases; fewer than 2 is refused.
    pub fn new(n: u32) -> Result<Self, InvalidPolicy> {
        if n < 2 {
            return Err(InvalidPolicy {
                field: "app.retain",
                reason: format!(
                    "must be at least 2 (the running release and the previous one), got {n}"
                ),
            });
        }
        Ok(Retain(n))
    }

    /// The number of releases.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Retain {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for Retain {
    type Error = InvalidPolicy;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Retain::new(n)
    }
}

impl From<Retain> for u32 {
    fn from(r: Retain) -> u32 {
        r.0
    }
}

/// Why an image stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
#[non_exhaustive]
pub enum KeepReason {
    /// A container of the app uses it.
    InUse,
    /// A registry tag of the app (`latest`, `previous`) names its release.
    Tagged(String),
    /// Among the newest releases; the rank counts from 1, the newest.
    Newest(u32),
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::InUse => f.write_str("used by a container of the app"),
            KeepReason::Tagged(tag) => write!(f, "the release {tag} names"),
            KeepReason::Newest(rank) => write!(f, "newest release #{rank}"),
        }
    }
}

/// An image that stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptImage {
    /// The image.
    #[serde(flatten)]
    pub image: ImageInfo,
    /// Why it stays.
    pub keep: KeepReason,
}

/// What a host keeps and what it may remove, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetentionPlan {
    /// Images that stay.
    pub keep: Vec<KeptImage>,
    /// Images beyond the newest releases that nothing needs.
    pub remove: Vec<ImageInfo>,
}

/// What the app still needs on a host, whatever the age of its images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// Image ids used by the app's containers (running, kept, lock).
    pub image_ids: BTreeSet<String>,
    /// Tag and digest of each registry tag that must stay
    /// (`latest`, `previous`), when the tag exists.
    pub tags: Vec<(String, Digest)>,
}

/// Sort `images` newest first and split them into what stays and what goes.
///
/// Releases are ordered by build time, newest first (ties by id, so the
/// answer does not depend on the engine's listing order). The newest
/// `retain` stay; older ones stay when `protected` names them.
pub fn select(mut images: Vec<ImageInfo>, retain: Retain, protected: &Protected) -> RetentionPlan {
    images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    let mut plan = RetentionPlan::default();
    for (rank, image) in (1u32..).zip(images) {
        let tagged = protected
            .tags
            .iter()
            .find(|(_, digest)| image.digests.contains(digest))
            .map(|(tag, _)| tag.clone());
        let keep = if protected.image_ids.contains(&image.id) {
            Some(KeepReason::InUse)
        } else if let Some(tag) = tagged {
            Some(KeepReason::Tagged(tag))
        } else if rank <= retain.get() {
            Some(KeepReason::Newest(rank))
        } else {
            None
        };
        match keep {
            Some(keep) => plan.keep.push(KeptImage { image, keep }),
            None => plan.remove.push(image),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn image(c: char, created: i64) -> ImageInfo {
        ImageInfo {
            id: format!("sha256:{}", c.to_string().repeat(64)),
            digests: vec![digest(c)],
            tags: vec![],
            created,
            size: 100,
            shared: false,
        }
    }

    fn ids(images: &[ImageInfo]) -> String {
        images.iter().map(|i| &i.id[7..8]).collect()
    }

    fn kept(plan: &RetentionPlan) -> Vec<(String, KeepReason)> {
        plan.keep
            .iter()
            .map(|k| (k.image.id[7..8].to_owned(), k.keep.clone()))
            .collect()
    }

    #[test]
    fn retain_is_at_least_two() {
        assert_eq!(Retain::default().get(), 5);
        assert_eq!(Retain::new(2).unwrap().get(), 2);
        for n in [0, 1] {
            let e = Retain::new(n).unwrap_err();
            assert_eq!(e.field, "app.retain");
            assert!(e.reason.contains("at least 2"), "{e}");
        }
        assert!(serde_json::from_str::<Retain>("1").is_err());
        assert_eq!(serde_json::from_str::<Retain>("3").unwrap().get(), 3);
    }

    #[test]
    fn keeps_the_newest_and_removes_the_rest_oldest_last() {
        // Listed in no particular order; created 1 (oldest) .. 6 (newest).
        let images = vec![
            image('c', 3),
            image('a', 1),
            image('f', 6),
            image('d', 4),
            image('b', 2),
            image('e', 5),
        ];
        let plan = select(images, Retain::new(3).unwrap(), &Protected::default());
        assert_eq!(
            kept(&plan),
            vec![
                ("f".into(), KeepReason::Newest(1)),
                ("e".into(), KeepReason::Newest(2)),
                ("d".into(), KeepReason::Newest(3)),
            ]
        );
        assert_eq!(ids(&plan.remove), "cba");
    }

    #[test]
    fn never_removes_what_a_container_uses_or_a_tag_names() {
        let images = vec![
            image('a', 1),
            image('b', 2),
            image('c', 3),
            image('d', 4),
            image('e', 5),
        ];
        let protected = Protected {
            image_ids: BTreeSet::from([image('a', 0).id]),
            tags: vec![
                ("previous".into(), digest('b')),
                ("latest".into(), digest('e')),
            ],
        };
        let plan = select(images, Retain::new(2).unwrap(), &protected);
        assert_eq!(
            kept(&plan),
            vec![
                ("e".into(), KeepReason::Tagged("latest".into())),
                ("d".into(), KeepReason::Newest(2)),
                ("b".into(), KeepReason::Tagged("previous".into())),
                ("a".into(), KeepReason::InUse),
            ]
        );
        assert_eq!(ids(&plan.remove), "c");
    }

    #[test]
    fn fewer_images_than_retain_removes_nothing() {
        let plan = select(
            vec![image('a', 1), image('b', 2)],
            Retain::default(),
            &Protected::default(),
        );
        assert!(plan.remove.is_empty());
        assert_eq!(plan.keep.len(), 2);
        assert!(select(vec![], Retain::default(), &Protected::default())
            .keep
            .is_empty());
    }

    #[test]
    fn equal_build_times_order_by_id() {
        let plan = select(
            vec![image('b', 7), image('c', 7), image('a', 7)],
            Retain::new(2).unwrap(),
            &Protected::default(),
        );
        assert_eq!(ids(&plan.remove), "c");
    }

    #[test]
    fn display_names_the_short_id_and_tags_or_digests() {
        let mut i = image('a', 1);
        assert_eq!(i.to_string(), "aaaaaaaaaaaa (aaaaaaaaaaaa)");
        i.tags = vec!["v1".into(), "latest".into()];
        assert_eq!(i.to_string(), "aaaaaaaaaaaa (v1, latest)");
    }
}
