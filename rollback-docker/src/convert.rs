//! Pure translations between the core's types and the Engine API models.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum,
    HostConfig, HostConfigLogConfig, ImageSummary, PortBinding,
    RestartPolicy as EngineRestartPolicy, RestartPolicyNameEnum,
};
use rollback_core::{
    labels, ContainerId, ContainerInfo, ContainerSpec, ContainerState, Digest, HealthStatus,
    ImageInfo, ImageRef, Release, Repository, RestartPolicy,
};

/// Whole seconds, rounded up, so a sub-second timeout is never zero.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The create request for `spec`. Secret env values go into the body only.
pub(crate) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let o = &spec.options;
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        let binding = PortBinding {
            host_ip: Some(port.host_ip.map(|ip| ip.to_string()).unwrap_or_default()),
            host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }

    // `-v` syntax: with a colon it is a bind or named volume, otherwise an
    // anonymous volume at that container path.
    let (binds, anonymous): (Vec<String>, Vec<String>) =
        spec.volumes.iter().cloned().partition(|v| v.contains(':'));

    let host_config = HostConfig {
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        binds: (!binds.is_empty()).then_some(binds),
        network_mode: spec.network.clone(),
        restart_policy: spec.restart.map(|r| EngineRestartPolicy {
            name: Some(match r {
                RestartPolicy::No => RestartPolicyNameEnum::NO,
                RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
                RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
                RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
            }),
            maximum_retry_count: None,
        }),
        sysctls: (!spec.sysctls.is_empty()).then(|| {
            spec.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        memory: o.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
        nano_cpus: o.nano_cpus.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        extra_hosts: (!o.add_hosts.is_empty()).then(|| o.add_hosts.clone()),
        cap_add: (!o.cap_add.is_empty()).then(|| o.cap_add.clone()),
        log_config: (o.log_driver.is_some() || !o.log_options.is_empty()).then(|| {
            HostConfigLogConfig {
                typ: o.log_driver.clone(),
                config: (!o.log_options.is_empty()).then(|| {
                    o.log_options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                }),
            }
        }),
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(spec.image.to_string()),
        env: (!spec.env.is_empty()).then(|| {
            spec.env
                .iter()
                .map(|(key, value)| format!("{key}={}", value.expose()))
                .collect()
        }),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        volumes: (!anonymous.is_empty()).then_some(anonymous),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        stop_timeout: spec
            .stop_timeout
            .map(|t| i64::try_from(ceil_secs(t)).unwrap_or(i64::MAX)),
        host_config: Some(host_config),
        user: o.user.clone(),
        entrypoint: o.entrypoint.clone(),
        hostname: o.hostname.clone(),
        ..Default::default()
    }
}

/// Parse an engine timestamp; the engine's zero time means "never".
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    if text.is_empty() || text.starts_with("0001-") {
        return None;
    }
    humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()
}

/// The engine's run state as the core's.
pub(crate) fn container_state(response: &ContainerInspectResponse) -> ContainerState {
    let Some(state) = &response.state else {
        return ContainerState::Dead;
    };
    let health = state
        .health
        .as_ref()
        .and_then(|h| h.status)
        .and_then(|s| match s {
            HealthStatusEnum::STARTING => Some(HealthStatus::Starting),
            HealthStatusEnum::HEALTHY => Some(HealthStatus::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(HealthStatus::Unhealthy),
            HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
        });
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        // A container being stopped still runs until its process exits.
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::STOPPING) => {
            ContainerState::Running { health }
        }
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited {
            code: state.exit_code.unwrap_or_default(),
        },
        Some(ContainerStateStatusEnum::REMOVING) | Some(ContainerStateStatusEnum::DEAD) => {
            ContainerState::Dead
        }
        Some(ContainerStateStatusEnum::EMPTY) | None => {
            if state.running == Some(true) {
                ContainerState::Running { health }
            } else {
                ContainerState::Exited {
                    code: state.exit_code.unwrap_or_default(),
                }
            }
        }
    }
}

/// The release recorded in the rollback labels, when they are complete.
pub(crate) fn release_from_labels(labels: &BTreeMap<String, String>) -> Option<Release> {
    let repository: Repository = labels.get(labels::REPOSITORY)?.parse().ok()?;
    let digest: Digest = labels.get(labels::DIGEST)?.parse().ok()?;
    // A label that is not a tag (empty, or written by hand) names no tag.
    let tag = labels.get(labels::TAG).and_then(|t| t.parse().ok());
    Some(Release::new(repository, digest).with_tag(tag))
}

/// The release named by the image reference the container was created
/// from, when it pins a digest (`repo@sha256:...`).
pub(crate) fn release_from_reference(reference: &str) -> Option<Release> {
    let image: ImageRef = reference.parse().ok()?;
    let tag = image.tag().and_then(|t| t.parse().ok());
    Some(Release::new(image.repo(), image.digest()?).with_tag(tag))
}

/// The release from an image's `RepoDigests`, preferring the repository
/// of `config_image` (the reference the container was created from).
pub(crate) fn release_from_repo_digests(
    repo_digests: &[String],
    config_image: Option<&str>,
) -> Option<Release> {
    let wanted: Option<ImageRef> = config_image.and_then(|i| i.parse().ok());
    let candidates: Vec<Release> = repo_digests
        .iter()
        .filter_map(|d| release_from_reference(d))
        .collect();
    let chosen = wanted
        .as_ref()
        .and_then(|w| {
            candidates
                .iter()
                .find(|c| c.repository == w.repo())
                .cloned()
        })
        .or_else(|| candidates.first().cloned())?;
    let tag = wanted
        .filter(|w| w.repo() == chosen.repository)
        .and_then(|w| w.tag()?.parse().ok());
    Some(chosen.with_tag(tag))
}

/// The image as retention sees it, when a digest or tag of `repository`
/// names it. Its size leaves out the layers other images share, which its
/// removal does not free; engines before API 1.42 do not report sharing
/// (`-1`), and then the whole size is the bound.
pub(crate) fn image_info(summary: &ImageSummary, repository: &Repository) -> Option<ImageInfo> {
    let ours = |name: &&String| {
        name.parse::<ImageRef>()
            .is_ok_and(|r| r.repo() == *repository)
    };
    let digests: Vec<Digest> = summary
        .repo_digests
        .iter()
        .filter(ours)
        .filter_map(|d| d.parse::<ImageRef>().ok()?.digest())
        .collect();
    let tags: Vec<String> = summary
        .repo_tags
        .iter()
        .filter(ours)
        .filter_map(|t| t.parse::<ImageRef>().ok()?.tag().map(str::to_owned))
        .collect();
    if digests.is_empty() && tags.is_empty() {
        return None;
    }
    let shared_size = summary.shared_size.max(0);
    let named_elsewhere = summary
        .repo_tags
        .iter()
        .chain(&summary.repo_digests)
        .any(|name| !ours(&name));
    Some(ImageInfo {
        id: summary.id.clone(),
        digests,
        tags,
        created: summary.created,
        size: u64::try_from(summary.size - shared_size).unwrap_or_default(),
        shared: named_elsewhere,
    })
}

/// Everything of an inspect answer except the release, which may need
/// another request.
pub(crate) fn container_info(response: &ContainerInspectResponse) -> ContainerInfo {
    let labels: BTreeMap<String, String> = response
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let release = release_from_labels(&labels).or_else(|| {
        response
            .config
            .as_ref()
            .and_then(|c| c.image.as_deref())
            .and_then(release_from_reference)
    });
    ContainerInfo {
        id: ContainerId(response.id.clone().unwrap_or_default()),
        name: response
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image_id: response.image.clone().unwrap_or_default(),
        release,
        labels,
        state: container_state(response),
        restart_count: response
            .restart_count
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or_default(),
        started_at: response
            .state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(parse_time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_info_keeps_the_names_of_the_repository() {
        let repo: Repository = "127.0.0.1:5000/team/app".parse().unwrap();
        let summary = ImageSummary {
            id: "sha256:1234".into(),
            repo_digests: vec![
                format!("127.0.0.1:5000/team/app@{}", digest('a')),
                format!("127.0.0.1:5000/team/other@{}", digest('b')),
            ],
            repo_tags: vec![
                "127.0.0.1:5000/team/app:v1".into(),
                "127.0.0.1:5000/team/app-x:v1".into(),
            ],
            created: 7,
            size: 1000,
            shared_size: 600,
            ..Default::default()
        };
        let info = image_info(&summary, &repo).unwrap();
        assert_eq!(info.digests, vec![digest('a').parse::<Digest>().unwrap()]);
        assert_eq!(info.tags, vec!["v1".to_owned()]);
        assert_eq!((info.created, info.size), (7, 400));
        assert!(info.shared, "team/other and team/app-x name it too");
        let alone = ImageSummary {
            repo_digests: vec![format!("127.0.0.1:5000/team/app@{}", digest('a'))],
            repo_tags: vec!["127.0.0.1:5000/team/app:v1".into()],
            ..summary.clone()
        };
        assert!(!image_info(&alone, &repo).unwrap().shared);
        let other: Repository = "127.0.0.1:5000/nobody".parse().unwrap();
        assert_eq!(image_info(&summary, &other), None);
        // The engine answers -1 when it did not compute the shared size.
        let unshared = ImageSummary {
            shared_size: -1,
            ..summary
        };
        assert_eq!(image_info(&unshared, &repo).unwrap().size, 1000);
    }
    use bollard::models::{ContainerConfig, ContainerState as EngineState, Health};
    use rollback_core::{ContainerTemplate, EnvValue, PortMapping, Secret};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn spec() -> ContainerSpec {
        let template = ["127.0.0.1:18080:8080", "80:8080", "9000/udp"]
            .iter()
            .fold(ContainerTemplate::new(), |t, p| {
                t.port(p.parse::<PortMapping>().unwrap())
            })
            .env("MODE", EnvValue::Plain("prod".into()))
            .env("TOKEN", EnvValue::Secret(Secret::new("s3cr3t")))
            .volume("/var/log/app:/logs:ro")
            .volume("data:/data")
            .volume("/cache")
            .platform("linux/amd64")
            .network("host")
            .restart(RestartPolicy::UnlessStopped)
            .command(vec!["--flag".into()])
            .label("io.rollback.app", "app")
            .stop_timeout(Duration::from_millis(2500));
        let image = format!("127.0.0.1:5000/team/app@{}", digest('a'));
        ContainerSpec::new("app", image.parse().unwrap(), template)
    }

    #[test]
    fn create_body_carries_the_whole_spec() {
        let body = create_body(&spec());
        assert_eq!(
            body.image.as_deref(),
            Some(spec().image.to_string().as_str())
        );
        assert_eq!(
            body.env.unwrap(),
            vec!["MODE=prod".to_owned(), "TOKEN=s3cr3t".to_owned()]
        );
        assert_eq!(body.cmd.unwrap(), vec!["--flag".to_owned()]);
        assert_eq!(body.stop_timeout, Some(3));
        assert_eq!(body.volumes.unwrap(), vec!["/cache".to_owned()]);
        let labels = body.labels.unwrap();
        assert_eq!(
            labels.get("io.rollback.app").map(String::as_str),
            Some("app")
        );
        assert!(!labels.values().any(|v| v.contains("s3cr3t")));
        assert_eq!(body.host_config.as_ref().unwrap().sysctls, None);
        let mut with_sysctl = spec();
        with_sysctl
            .sysctls
            .insert("net.ipv4.tcp_migrate_req".into(), "1".into());
        let sysctls = create_body(&with_sysctl)
            .host_config
            .unwrap()
            .sysctls
            .unwrap();
        assert_eq!(
            sysctls.get("net.ipv4.tcp_migrate_req").map(String::as_str),
            Some("1")
        );
        let mut exposed = body.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["8080/tcp".to_owned(), "9000/udp".to_owned()]);
        let host = body.host_config.unwrap();
        assert_eq!(
            host.binds.unwrap(),
            vec!["/var/log/app:/logs:ro".to_owned(), "data:/data".to_owned()]
        );
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let ports = host.port_bindings.unwrap();
        let tcp = ports["8080/tcp"].clone().unwrap();
        assert_eq!(tcp.len(), 2);
        assert_eq!(tcp[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(tcp[0].host_port.as_deref(), Some("18080"));
        assert_eq!(tcp[1].host_ip.as_deref(), Some(""));
        assert_eq!(tcp[1].host_port.as_deref(), Some("80"));
        let udp = ports["9000/udp"].clone().unwrap();
        assert_eq!(udp[0].host_port.as_deref(), Some(""), "ephemeral port");
    }

    #[test]
    fn create_body_carries_the_run_options() {
        let plain = create_body(&spec());
        let host = plain.host_config.unwrap();
        assert_eq!((host.memory, host.nano_cpus), (None, None));
        assert!(host.log_config.is_none() && plain.entrypoint.is_none());

        let mut spec = spec();
        spec.options = rollback_core::RunOptions {
            memory: Some(512 * 1024 * 1024),
            nano_cpus: Some(1_500_000_000),
            user: Some("1000:1000".into()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            hostname: Some("web-1".into()),
            add_hosts: vec!["db:10.0.0.5".into()],
            log_driver: Some("json-file".into()),
            log_options: BTreeMap::from([("max-size".into(), "10m".into())]),
            networks: vec!["backend".into()],
            cap_add: vec!["NET_ADMIN".into()],
        };
        let body = create_body(&spec);
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.hostname.as_deref(), Some("web-1"));
        assert_eq!(body.entrypoint.unwrap(), ["/bin/sh", "-c"]);
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(536_870_912));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.extra_hosts.unwrap(), ["db:10.0.0.5"]);
        assert_eq!(host.cap_add.unwrap(), ["NET_ADMIN"]);
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["max-size"], "10m");
    }

    #[test]
    fn ceil_secs_never_rounds_to_zero() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(10)), 10);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[test]
    fn engine_times_parse_and_zero_time_is_never() {
        let t = parse_time("2026-11-25T03:45:02.123456789Z").unwrap();
        let since_epoch = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since_epoch.as_secs(), 1_795_578_302);
        assert_eq!(since_epoch.subsec_nanos(), 123_456_789);
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time(""), None);
    }

    fn inspect(
        status: ContainerStateStatusEnum,
        health: Option<HealthStatusEnum>,
    ) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/app".into()),
            image: Some(digest('f')),
            restart_count: Some(2),
            state: Some(EngineState {
                status: Some(status),
                exit_code: Some(1),
                started_at: Some("2026-11-25T03:45:02Z".into()),
                health: health.map(|s| Health {
                    status: Some(s),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                image: Some(format!("127.0.0.1:5000/team/app:v1@{}", digest('b'))),
                labels: Some(HashMap::from([("k".to_owned(), "v".to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn inspect_maps_state_health_and_release() {
        let info = container_info(&inspect(
            ContainerStateStatusEnum::RUNNING,
            Some(HealthStatusEnum::HEALTHY),
        ));
        assert_eq!(info.name, "app");
        assert_eq!(info.id.as_str(), "abc");
        assert_eq!(info.image_id, digest('f'));
        assert_eq!(info.restart_count, 2);
        assert!(info.started_at.is_some());
        assert_eq!(
            info.state,
            ContainerState::Running {
                health: Some(HealthStatus::Healthy)
            }
        );
        let release = info.release.unwrap();
        assert_eq!(release.digest.to_string(), digest('b'));
        assert_eq!(release.tag.as_deref(), Some("v1"));
        assert_eq!(release.repository.to_string(), "127.0.0.1:5000/team/app");

        let exited = container_info(&inspect(ContainerStateStatusEnum::EXITED, None));
        assert_eq!(exited.state, ContainerState::Exited { code: 1 });
        let restarting = container_info(&inspect(ContainerStateStatusEnum::RESTARTING, None));
        assert_eq!(restarting.state, ContainerState::Restarting);
        let none = container_info(&inspect(
            ContainerStateStatusEnum::RUNNING,
            Some(HealthStatusEnum::NONE),
        ));
        assert_eq!(none.state, ContainerState::Running { health: None });
    }

    #[test]
    fn labels_win_over_the_image_reference() {
        let mut response = inspect(ContainerStateStatusEnum::RUNNING, None);
        let labels = response.config.as_mut().unwrap().labels.as_mut().unwrap();
        labels.insert(labels::REPOSITORY.into(), "127.0.0.1:5000/other".into());
        labels.insert(labels::DIGEST.into(), digest('c'));
        labels.insert(labels::TAG.into(), "v9".into());
        let release = container_info(&response).release.unwrap();
        assert_eq!(release.repository.to_string(), "127.0.0.1:5000/other");
        assert_eq!(release.digest.to_string(), digest('c'));
        assert_eq!(release.tag.as_deref(), Some("v9"));
    }

    #[test]
    fn repo_digests_prefer_the_container_repository() {
        let digests = vec![
            format!("127.0.0.1:5000/mirror/app@{}", digest('d')),
            format!("127.0.0.1:5000/team/app@{}", digest('e')),
        ];
        let release =
            release_from_repo_digests(&digests, Some("127.0.0.1:5000/team/app:v2")).unwrap();
        assert_eq!(release.repository.to_string(), "127.0.0.1:5000/team/app");
        assert_eq!(release.digest.to_string(), digest('e'));
        assert_eq!(release.tag.as_deref(), Some("v2"));
        let first = release_from_repo_digests(&digests, Some("local-only:dev")).unwrap();
        assert_eq!(first.digest.to_string(), digest('d'));
        assert_eq!(first.tag, None);
        assert!(release_from_repo_digests(&[], None).is_none());
    }
}
