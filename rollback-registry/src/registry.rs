//! [`OciRegistry`]: resolve and copy through the distribution API.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use rollback_core::{CopyReport, Digest, Error, ErrorKind, ImageRef, Registry, Result};
use sha2::{Digest as _, Sha256};

use crate::config::RegistryConfig;
use crate::transport::{Reply, Request, RequestCounts, Session, Transport};

/// Media types of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Every manifest media type this crate reads and copies.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// Nested indexes deeper than this are refused (a loop or a hostile registry).
const MAX_INDEX_DEPTH: usize = 4;

/// Where Docker Hub's registry API answers (`docker.io` names the hub, not a server).
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";

/// The host to send `reference`'s requests to: Docker Hub's API host for
/// Docker Hub names, the registry as written for the others.
fn api_host(reference: &ImageRef) -> &str {
    match reference.registry() {
        "docker.io" | "index.docker.io" => DOCKER_HUB_REGISTRY,
        other => other,
    }
}

/// What [`OciRegistry::copy_with_report`] did, with the requests it made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct CopyStats {
    /// Digest of the copied manifest, identical at source and destination.
    pub digest: Digest,
    /// `false` when the destination already pointed at that digest.
    pub written: bool,
    /// Manifests written at the destination (children by digest, then the top one).
    pub manifests_written: u32,
    /// Blobs mounted from the source repository.
    pub blobs_mounted: u32,
    /// Blobs the destination repository already had.
    pub blobs_present: u32,
    /// Requests by kind.
    pub requests: RequestCounts,
}

impl From<CopyStats> for CopyReport {
    fn from(stats: CopyStats) -> Self {
        CopyReport {
            digest: stats.digest,
            written: stats.written,
        }
    }
}

/// A manifest exactly as the registry stores it.
struct Manifest {
    bytes: Vec<u8>,
    media_type: String,
    digest: Digest,
}

impl Manifest {
    fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }

    fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.bytes).map_err(|e| {
            Error::invalid_input(format!("manifest {} is not valid json", self.digest))
                .with_source(e)
        })
    }

    /// Child manifests of an index.
    fn children(&self) -> Result<Vec<Digest>> {
        let json = self.json()?;
        descriptors(&json, "manifests")
            .into_iter()
            .map(|d| digest_of(d, &self.digest))
            .collect()
    }

    /// Config and layers of an image manifest; non-distributable layers are
    /// skipped, as registries never hold them.
    fn blobs(&self) -> Result<Vec<Digest>> {
        let json = self.json()?;
        let mut out = Vec::new();
        if let Some(config) = json.get("config") {
            out.push(digest_of(config, &self.digest)?);
        }
        for layer in descriptors(&json, "layers") {
            let media_type = layer
                .get("mediaType")
                .and_then(|m| m.as_str())
                .unwrap_or("");
            if media_type.contains("foreign") || media_type.contains("nondistributable") {
                continue;
            }
            let digest = digest_of(layer, &self.digest)?;
            if !out.contains(&digest) {
                out.push(digest);
            }
        }
        Ok(out)
    }
}

fn descriptors<'a>(json: &'a serde_json::Value, field: &str) -> Vec<&'a serde_json::Value> {
    json.get(field)
        .and_then(|v| v.as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn digest_of(descriptor: &serde_json::Value, parent: &Digest) -> Result<Digest> {
    descriptor
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| {
            Error::invalid_input(format!("manifest {parent} has a descriptor without digest"))
        })?
        .parse()
        .map_err(|e: Error| e.context(format!("manifest {parent}")))
}

fn sha256(bytes: &[u8]) -> Digest {
    let hex = hex::encode(Sha256::digest(bytes));
    Digest::from_sha256_hex(&hex).expect("a sha256 sum is 64 lowercase hex digits")
}

/// An OCI/Docker registry client that implements [`Registry`].
///
/// Copies are registry-side: a same-repository retag is a `HEAD` of the
/// destination, one manifest `GET` and one manifest `PUT` of the exact
/// bytes; when the destination exists, a `HEAD` of the source comes first
/// and nothing more when both hold the same digest (Docker Hub counts
/// `GET`s, not `HEAD`s, against its pull limits); a copy to
/// another repository of the same registry mounts every blob
/// (`POST ...?mount=`). No blob is ever downloaded. Nothing is asked of a
/// registry before the first request: authentication starts at its first
/// `401`.
pub struct OciRegistry {
    transport: Transport,
}

impl std::fmt::Debug for OciRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciRegistry")
            .field("config", self.transport.config())
            .finish()
    }
}

impl OciRegistry {
    /// A client with `config`. Credentials are read lazily from Docker's
    /// `config.json`, only when a registry asks for them.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        Ok(OciRegistry {
            transport: Transport::new(config)?,
        })
    }

    /// A client with default settings, reading credentials from
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub fn from_docker_config() -> Result<Self> {
        Self::new(RegistryConfig::default())
    }

    /// Like [`Registry::copy`], with counts of what was written and requested.
    ///
    /// `destination` is a full reference with a tag (or with the source's
    /// digest, to copy by digest only). Both must be in the same registry.
    ///
    /// # Cancel safety
    ///
    /// The destination tag is written last, in one `PUT`: dropping the future
    /// leaves the tag either untouched or complete. Blobs mounted and child
    /// manifests written by digest before that stay behind, unreferenced.
    pub async fn copy_with_report(
        &self,
        source: &ImageRef,
        destination: &ImageRef,
    ) -> Result<CopyStats> {
        let host = api_host(source);
        if api_host(destination) != host {
            return Err(Error::invalid_input(format!(
                "cannot copy {source} to {destination}: a copy between registries would move layers; \
                 source and destination must be in the same registry"
            )));
        }
        let src_repo = source.repository();
        let dst_repo = destination.repository();
        let same_repo = src_repo == dst_repo;
        let scopes = if same_repo {
            vec![format!("repository:{dst_repo}:pull,push")]
        } else {
            vec![
                format!("repository:{src_repo}:pull"),
                format!("repository:{dst_repo}:pull,push"),
            ]
        };
        let mut session = Session::new(&self.transport, host, scopes);
        let result = self
            .copy_in(&mut session, source, destination, same_repo)
            .await;
        result.map(|mut stats| {
            stats.requests = session.counts;
            stats
        })
    }

    /// The copy, in as few requests as the registry allows: `HEAD` of the
    /// destination, `HEAD` of a source tag when the destination exists,
    /// `GET` of the source (by digest when known: its bytes and their digest
    /// come in one answer), `PUT` of the destination only when it holds
    /// another digest. A copy onto the same digest spends no `GET`.
    async fn copy_in(
        &self,
        session: &mut Session<'_>,
        source: &ImageRef,
        destination: &ImageRef,
        same_repo: bool,
    ) -> Result<CopyStats> {
        let src_repo = source.repository();
        let dst_repo = destination.repository();
        let mut pinned = source.digest();
        let wanted = destination.digest();
        if let (Some(pinned), Some(wanted)) = (&pinned, &wanted) {
            if pinned != wanted {
                return Err(mismatch(destination, wanted, pinned));
            }
        }
        let target = match (destination.tag(), &wanted) {
            // A reference with both tag and digest writes the tag.
            (Some(tag), _) => tag.to_owned(),
            (None, Some(digest)) => digest.to_string(),
            (None, None) => {
                return Err(Error::invalid_input(format!(
                    "destination {destination} has neither tag nor digest"
                )))
            }
        };
        let present = self.head_manifest(session, dst_repo, &target).await?;
        let unchanged = |digest: Digest| CopyStats {
            digest,
            written: false,
            manifests_written: 0,
            blobs_mounted: 0,
            blobs_present: 0,
            requests: RequestCounts::default(),
        };
        if pinned.is_none() && present.is_some() {
            // A HEAD of the source tells whether the copy is needed at all,
            // without a GET (which Docker Hub counts against pull limits);
            // the GET below then asks for that digest, not the tag.
            let tag = reference_of(source)?;
            match self.head_manifest(session, src_repo, &tag).await? {
                Some(digest) => pinned = Some(digest),
                None => return Err(not_found(session.host(), src_repo, &tag)),
            }
        }
        if let Some(pinned) = &pinned {
            if let Some(wanted) = &wanted {
                if pinned != wanted {
                    return Err(mismatch(destination, wanted, pinned));
                }
            }
            if present.as_ref() == Some(pinned) {
                return Ok(unchanged(pinned.clone()));
            }
        }
        let reference = match &pinned {
            Some(digest) => digest.to_string(),
            None => reference_of(source)?,
        };
        // One answer carries the bytes and their digest, so a tag moved
        // meanwhile cannot pair one manifest's digest with another's bytes.
        let manifest = match self
            .fetch_manifest_by(session, src_repo, &reference, pinned.as_ref())
            .await
        {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(not_found(session.host(), src_repo, &reference))
            }
            other => other?,
        };
        if let Some(wanted) = &wanted {
            if *wanted != manifest.digest {
                return Err(mismatch(destination, wanted, &manifest.digest));
            }
        }
        let mut stats = unchanged(manifest.digest.clone());
        if present.as_ref() == Some(&manifest.digest) {
            return Ok(stats);
        }
        if !same_repo {
            self.copy_dependencies(session, src_repo, dst_repo, &manifest, 0, &mut stats)
                .await?;
        }
        self.put_manifest(session, dst_repo, &target, &manifest)
            .await?;
        stats.manifests_written += 1;
        stats.written = true;
        Ok(stats)
    }

    /// Make everything `manifest` refers to present in `dst_repo`: blobs by
    /// mount, child manifests by digest.
    async fn copy_dependencies(
        &self,
        session: &mut Session<'_>,
        src_repo: &str,
        dst_repo: &str,
        manifest: &Manifest,
        depth: usize,
        stats: &mut CopyStats,
    ) -> Result<()> {
        if manifest.is_index() {
            if depth >= MAX_INDEX_DEPTH {
                return Err(Error::invalid_input(format!(
                    "index {} nests indexes deeper than {MAX_INDEX_DEPTH} levels",
                    manifest.digest
                )));
            }
            for child in manifest.children()? {
                if self
                    .head_manifest(session, dst_repo, child.as_str())
                    .await?
                    .is_some()
                {
                    continue;
                }
                let child_manifest = self.fetch_manifest(session, src_repo, &child).await?;
                Box::pin(self.copy_dependencies(
                    session,
                    src_repo,
                    dst_repo,
                    &child_manifest,
                    depth + 1,
                    stats,
                ))
                .await?;
                self.put_manifest(session, dst_repo, child.as_str(), &child_manifest)
                    .await?;
                stats.manifests_written += 1;
            }
        } else {
            for blob in manifest.blobs()? {
                if self.mount_blob(session, src_repo, dst_repo, &blob).await? {
                    stats.blobs_mounted += 1;
                } else {
                    stats.blobs_present += 1;
                }
            }
        }
        Ok(())
    }

    /// `HEAD` a manifest: its digest, or `None` when the registry does not have it.
    async fn head_manifest(
        &self,
        session: &mut Session<'_>,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>> {
        let request = Request::new(
            Method::HEAD,
            session.url(&format!("/v2/{repo}/manifests/{reference}")),
        )
        .header("Accept", MANIFEST_MEDIA_TYPES.join(", "));
        session.counts.heads += 1;
        let reply = session.send(request).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => match reply.header("Docker-Content-Digest") {
                Some(digest) => Ok(Some(digest.trim().parse().map_err(|e: Error| {
                    e.context(format!(
                        "{} answered HEAD {}",
                        session.host(),
                        at(repo, reference)
                    ))
                })?)),
                // Some registries omit the header on HEAD: hash the body instead.
                None => {
                    let manifest = self
                        .fetch_manifest_by(session, repo, reference, None)
                        .await?;
                    Ok(Some(manifest.digest))
                }
            },
            _ => Err(classify(&reply, session.host(), repo, reference, "HEAD")),
        }
    }

    async fn fetch_manifest(
        &self,
        session: &mut Session<'_>,
        repo: &str,
        digest: &Digest,
    ) -> Result<Manifest> {
        self.fetch_manifest_by(session, repo, digest.as_str(), Some(digest))
            .await
    }

    /// `GET` a manifest, capped in size, and verify its bytes against the
    /// registry's `Docker-Content-Digest` and `expected`.
    async fn fetch_manifest_by(
        &self,
        session: &mut Session<'_>,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<Manifest> {
        let shown = at(repo, reference);
        let limit = self.transport.config().max_manifest_bytes;
        let request = Request::new(
            Method::GET,
            session.url(&format!("/v2/{repo}/manifests/{reference}")),
        )
        .header("Accept", MANIFEST_MEDIA_TYPES.join(", "))
        .body_limit(limit);
        session.counts.manifest_gets += 1;
        let reply = session
            .send(request)
            .await
            .map_err(|e| e.context(format!("manifest {shown} from {}", session.host())))?;
        if !reply.status.is_success() {
            return Err(classify(&reply, session.host(), repo, reference, "GET"));
        }
        let actual = sha256(&reply.body);
        if let Some(announced) = reply.header("Docker-Content-Digest") {
            if announced.trim() != actual.as_str() {
                return Err(Error::invalid_input(format!(
                    "manifest {shown} from {}: its bytes hash to {actual}, \
                     but the registry announced {}",
                    session.host(),
                    announced.trim()
                )));
            }
        }
        if let Some(expected) = expected {
            if *expected != actual {
                return Err(Error::invalid_input(format!(
                    "manifest {repo}@{expected} from {}: its bytes hash to {actual}",
                    session.host()
                )));
            }
        }
        let media_type = media_type_of(&reply).ok_or_else(|| {
            Error::invalid_input(format!(
                "manifest {shown} from {} has an unsupported media type {:?}; \
                     supported: {}",
                session.host(),
                reply.header("Content-Type").unwrap_or(""),
                MANIFEST_MEDIA_TYPES.join(", ")
            ))
        })?;
        Ok(Manifest {
            bytes: reply.body,
            media_type,
            digest: actual,
        })
    }

    /// `PUT` the exact bytes of `manifest` under `reference` (a tag or its digest).
    async fn put_manifest(
        &self,
        session: &mut Session<'_>,
        repo: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<()> {
        let shown = at(repo, reference);
        let request = Request::new(
            Method::PUT,
            session.url(&format!("/v2/{repo}/manifests/{reference}")),
        )
        .header("Content-Type", manifest.media_type.clone())
        .body(manifest.bytes.clone());
        session.counts.manifest_puts += 1;
        let reply = session.send(request).await?;
        if !reply.status.is_success() {
            return Err(classify(&reply, session.host(), repo, reference, "PUT"));
        }
        if let Some(stored) = reply.header("Docker-Content-Digest") {
            if stored.trim() != manifest.digest.as_str() {
                return Err(Error::other(format!(
                    "{} stored manifest {} of {shown} as {}",
                    session.host(),
                    manifest.digest,
                    stored.trim()
                )));
            }
        }
        Ok(())
    }

    /// Make `blob` present in `dst_repo` by a cross-repository mount.
    /// Returns `false` when it was already there.
    async fn mount_blob(
        &self,
        session: &mut Session<'_>,
        src_repo: &str,
        dst_repo: &str,
        blob: &Digest,
    ) -> Result<bool> {
        let head = Request::new(
            Method::HEAD,
            session.url(&format!("/v2/{dst_repo}/blobs/{blob}")),
        );
        session.counts.heads += 1;
        let reply = session.send(head).await?;
        if reply.status.is_success() {
            return Ok(false);
        }
        if reply.status != StatusCode::NOT_FOUND {
            return Err(classify(
                &reply,
                session.host(),
                dst_repo,
                blob.as_str(),
                "HEAD",
            ));
        }
        let mount = Request::new(
            Method::POST,
            session.url(&format!(
                "/v2/{dst_repo}/blobs/uploads/?mount={blob}&from={src_repo}"
            )),
        );
        session.counts.blob_mounts += 1;
        let reply = session.send(mount).await?;
        match reply.status {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The registry opened an upload instead: close it, never upload.
                if let Some(location) = reply.header("Location") {
                    let cancel = Request::new(Method::DELETE, session.absolute(location));
                    // Best effort: the error below is what matters to the caller.
                    let _ = session.send(cancel).await;
                }
                Err(Error::other(format!(
                    "{} refused to mount blob {blob} from {src_repo} into {dst_repo} \
                     (it offered an upload instead); the blob is missing from {src_repo} \
                     or the registry does not support cross-repository mounts",
                    session.host()
                )))
            }
            _ => Err(classify(
                &reply,
                session.host(),
                dst_repo,
                blob.as_str(),
                "mount",
            )),
        }
    }
}

/// `repo:tag` or `repo@sha256:...`, for messages.
fn at(repo: &str, reference: &str) -> String {
    if reference.starts_with("sha256:") {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    }
}

/// The tag or digest string of `reference`.
fn reference_of(reference: &ImageRef) -> Result<String> {
    match (reference.digest(), reference.tag()) {
        (Some(digest), _) => Ok(digest.to_string()),
        (None, Some(tag)) => Ok(tag.to_owned()),
        (None, None) => Err(Error::invalid_input(format!(
            "{reference} has neither tag nor digest"
        ))),
    }
}

fn mismatch(destination: &ImageRef, wanted: &Digest, source: &Digest) -> Error {
    Error::invalid_input(format!(
        "destination {destination} names digest {wanted}, but the source is {source}"
    ))
}

fn not_found(host: &str, repo: &str, reference: &str) -> Error {
    let shown = at(repo, reference);
    Error::not_found(format!("manifest {shown} not found on {host}"))
}

/// Map an unexpected answer to an error kind. 401/403 and 429/5xx never get
/// here: the session and its retries turn them into errors first.
fn classify(reply: &Reply, host: &str, repo: &str, reference: &str, what: &str) -> Error {
    let detail = reply.describe();
    let shown = at(repo, reference);
    match reply.status {
        StatusCode::NOT_FOUND => {
            Error::not_found(format!("{what} {shown} on {host}: not found ({detail})"))
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Error::unauthorized(format!("{what} {shown} on {host}: {detail}"))
        }
        status if status.is_client_error() => {
            Error::invalid_input(format!("{what} {shown} on {host}: {detail}"))
        }
        _ => Error::other(format!("{what} {shown} on {host}: {detail}")),
    }
}

/// The manifest media type from `Content-Type`, else from the body's `mediaType`.
fn media_type_of(reply: &Reply) -> Option<String> {
    let header = reply
        .header("Content-Type")
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
    if let Some(found) = header.filter(|h| MANIFEST_MEDIA_TYPES.contains(&h.as_str())) {
        return Some(found);
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(&reply.body).ok()?;
    probe
        .media_type
        .filter(|m| MANIFEST_MEDIA_TYPES.contains(&m.as_str()))
}

#[async_trait]
impl Registry for OciRegistry {
    async fn resolve(&self, reference: &ImageRef) -> Result<Digest> {
        let host = api_host(reference);
        let repo = reference.repository();
        let target = reference_of(reference)?;
        let mut session = Session::new(
            &self.transport,
            host,
            vec![format!("repository:{repo}:pull")],
        );
        match self.head_manifest(&mut session, repo, &target).await? {
            Some(digest) => Ok(digest),
            None => Err(not_found(host, repo, &target)),
        }
    }

    async fn copy(&self, source: &ImageRef, destination: &ImageRef) -> Result<CopyReport> {
        self.copy_with_report(source, destination)
            .await
            .map(CopyReport::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_skip_foreign_layers_and_duplicates() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[
                {{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}"}},
                {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}"}},
                {{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}"}}]}}"#,
            d('a'),
            d('b'),
            d('c'),
            d('b')
        );
        let manifest = Manifest {
            digest: sha256(body.as_bytes()),
            bytes: body.into_bytes(),
            media_type: OCI_MANIFEST.into(),
        };
        let blobs: Vec<String> = manifest
            .blobs()
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(blobs, vec![d('a'), d('b')]);
    }

    #[test]
    fn docker_hub_names_are_spoken_to_at_registry_1_docker_io_over_tls() {
        let nginx: ImageRef = "nginx".parse().unwrap();
        assert_eq!(nginx.to_string(), "docker.io/library/nginx:latest");
        assert_eq!(nginx.repository(), "library/nginx");
        assert_eq!(api_host(&nginx), "registry-1.docker.io");
        for name in ["docker.io/team/app:v1", "index.docker.io/team/app:v1"] {
            let r: ImageRef = name.parse().unwrap();
            assert_eq!(api_host(&r), "registry-1.docker.io", "{name}");
            assert_eq!(r.repository(), "team/app");
        }
        let registry = OciRegistry::new(RegistryConfig::default()).unwrap();
        assert_eq!(
            registry.transport.base_url(api_host(&nginx)),
            "https://registry-1.docker.io"
        );
        // Credentials are looked up under the key `docker login` files them under.
        assert_eq!(
            crate::credentials::credential_key(api_host(&nginx)),
            "https://index.docker.io/v1/"
        );
        let ghcr: ImageRef = "ghcr.io/team/app:v1".parse().unwrap();
        assert_eq!(api_host(&ghcr), "ghcr.io");
    }

    #[test]
    fn references_are_shown_with_colon_for_tags_and_at_for_digests() {
        let digest = format!("sha256:{}", "0".repeat(64));
        assert_eq!(at("team/app", "v1"), "team/app:v1");
        assert_eq!(at("team/app", &digest), format!("team/app@{digest}"));
    }

    #[test]
    fn sha256_matches_a_known_value() {
        assert_eq!(
            sha256(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
