//! Releases for the integration tests over the fakes.

use rollback_core::{Digest, Release, Repository, Tag};

/// A digest of 64 times `c`.
pub fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .expect("a valid digest")
}

pub fn repo() -> Repository {
    "127.0.0.1:5000/team/app"
        .parse()
        .expect("a valid repository")
}

/// `repo()` at `digest(c)`, tagged `tag`.
pub fn release(tag: &str, c: char) -> Release {
    Release::new(repo(), digest(c)).with_tag(tag.parse::<Tag>().expect("a valid tag"))
}
