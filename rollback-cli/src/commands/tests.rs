//! The engine-driving commands against core's in-memory fakes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rollback_core::fake::{Behavior, FakeProbe, FakeRegistry, FakeRuntime};
use rollback_core::{Digest, LockInfo, Release, Repository};

use crate::cli::{Cli, OutputFormat};
use crate::commands::run_with;
use crate::commands::testing::FakeAdapters;
use crate::config::Config;
use crate::exit;
use crate::output::{Captured, Output};

const CONFIG: &str = r#"
[app]
name = "app"
repository = "127.0.0.1:5000/team/app"

[container]
env = { TOKEN = "${CLI_TEST_TOKEN}" }

[health]
docker = true
interval = "1s"
timeout = "1s"
deadline = "20s"
stable_for = "3s"
"#;

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

fn repo() -> Repository {
    "127.0.0.1:5000/team/app".parse().unwrap()
}

fn release(tag: &str, c: char) -> Release {
    Release::new(repo(), digest(c)).with_tag(tag.parse::<rollback_core::Tag>().unwrap())
}

struct World {
    registry: Arc<FakeRegistry>,
    runtime: Arc<FakeRuntime>,
}

/// v1 (digest a) runs and is `latest`; v2 (digest b) is in the registry.
fn world() -> World {
    let registry = FakeRegistry::new();
    registry.set_tag(&repo(), "latest", &digest('a'));
    registry.set_tag(&repo(), "v1", &digest('a'));
    registry.set_tag(&repo(), "v2", &digest('b'));
    let runtime = FakeRuntime::new();
    runtime.add_running("app", "app", &release("v1", 'a'));
    World { registry, runtime }
}

async fn run(world: &World, format: OutputFormat, args: &[&str]) -> (i32, Captured, Captured) {
    let config = Config::parse(CONFIG, Path::new("rollback.toml"), &|name| {
        (name == "CLI_TEST_TOKEN").then(|| "tok-very-secret".to_owned())
    })
    .unwrap();
    let mut adapters = FakeAdapters::with_registry(world.registry.clone());
    adapters = adapters
        .engine("local", world.runtime.clone())
        .probe("local", FakeProbe::new(world.runtime.clone()));
    let (mut output, out, err) = Output::captured(format, 0);
    output.set_redactor(crate::output::Redactor::from_config(&config));
    let cli = Cli::try_parse_from(std::iter::once("rollback").chain(args.iter().copied())).unwrap();
    let code = run_with(cli, Some(config), Arc::new(output), Arc::new(adapters)).await;
    (code, out, err)
}

fn json_lines(out: &Captured) -> Vec<serde_json::Value> {
    out.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn deploy_of_a_healthy_release_exits_0_with_events_then_outcome() {
    let w = world();
    let (code, out, _) = run(
        &w,
        OutputFormat::Json,
        &["deploy", "--tag", "v2", "--output", "json"],
    )
    .await;
    assert_eq!(code, exit::OK);
    let lines = json_lines(&out);
    let (outcome, events) = lines.split_last().unwrap();
    assert!(events.len() > 3, "{}", out.text());
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(outcome["outcome"], "deployed");
    assert_eq!(outcome["exit_code"], 0);
    assert_eq!(outcome["promoted"], true);
    assert_eq!(outcome["target"]["digest"], digest('b').as_str());
    assert_eq!(outcome["hosts"][0]["host"], "local");
    assert_eq!(outcome["hosts"][0]["after"]["digest"], digest('b').as_str());
    assert_eq!(w.registry.tag(&repo(), "latest"), Some(digest('b')));
    assert_eq!(w.registry.tag(&repo(), "previous"), Some(digest('a')));
    assert!(!out.text().contains("tok-very-secret"));
}

#[tokio::test(start_paused = true)]
async fn a_crashing_release_is_rolled_back_exit_3_with_the_reason() {
    let w = world();
    w.runtime.behave(
        &digest('b'),
        Behavior::CrashAfter(Duration::from_millis(500)),
    );
    let (code, out, _) = run(&w, OutputFormat::Human, &["deploy", "--tag", "v2"]).await;
    assert_eq!(code, exit::ROLLED_BACK, "{}", out.text());
    let text = out.text();
    assert!(text.contains("[local] switched"), "{text}");
    assert!(
        text.contains("rolled back v2 (bbbbbbbbbbbb): the previous release runs and is healthy"),
        "{text}"
    );
    assert!(text.contains("reason: "), "{text}");
    assert_eq!(
        w.runtime.named("app").unwrap().release.unwrap().digest,
        digest('a')
    );
    assert_eq!(w.registry.tag(&repo(), "latest"), Some(digest('a')));
}

#[tokio::test(start_paused = true)]
async fn a_held_lock_exits_5_and_changes_nothing() {
    let w = world();
    w.runtime.hold_lock(LockInfo {
        app: "app".into(),
        deployment: "d-other".into(),
        holder: "ci@elsewhere pid 1".into(),
        target: "v9".into(),
        started_at: std::time::SystemTime::now(),
    });
    let (code, out, _) = run(
        &w,
        OutputFormat::Json,
        &["deploy", "--tag", "v2", "--output", "json"],
    )
    .await;
    assert_eq!(code, exit::LOCKED);
    let lines = json_lines(&out);
    let outcome = lines.last().unwrap();
    assert_eq!(outcome["outcome"], "locked");
    assert_eq!(outcome["lock_holder"]["holder"], "ci@elsewhere pid 1");
    assert!(w.runtime.calls_of(&["create", "start", "stop"]).is_empty());
}

#[tokio::test(start_paused = true)]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let w = world();
    let (code, out, _) = run(
        &w,
        OutputFormat::Human,
        &["deploy", "--tag", "v2", "--dry-run"],
    )
    .await;
    assert_eq!(code, exit::OK);
    let text = out.text();
    assert!(text.starts_with("plan: deploy v2 (bbbbbbbbbbbb)"), "{text}");
    assert!(text.contains("[local] running v1 (aaaaaaaaaaaa)"), "{text}");
    assert!(
        text.contains("pull 127.0.0.1:5000/team/app@sha256:bbbb"),
        "{text}"
    );
    assert!(text.ends_with("nothing changed (dry run)\n"), "{text}");
    assert!(w
        .runtime
        .calls_of(&["pull", "create", "start", "stop", "acquire_lock"])
        .is_empty());
    assert!(w.registry.copies().is_empty());

    let (code, out, _) = run(
        &w,
        OutputFormat::Json,
        &["undo", "--dry-run", "--output", "json"],
    )
    .await;
    // No `previous` tag yet: the plan cannot resolve it.
    assert_eq!(code, exit::FAILED, "{}", out.text());
    let (code, out, _) = run(
        &w,
        OutputFormat::Json,
        &["recover", "--dry-run", "--output", "json"],
    )
    .await;
    assert_eq!(code, exit::OK);
    let v = json_lines(&out);
    assert_eq!(v[0]["hosts"][0]["interrupted"], false);
    assert!(w
        .runtime
        .calls_of(&["create", "start", "stop", "release_lock"])
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn undo_deploys_the_previous_release() {
    let w = world();
    let (code, _, _) = run(&w, OutputFormat::Human, &["deploy", "--tag", "v2"]).await;
    assert_eq!(code, exit::OK);
    let (code, out, _) = run(&w, OutputFormat::Human, &["undo"]).await;
    assert_eq!(code, exit::OK, "{}", out.text());
    assert_eq!(
        w.runtime.named("app").unwrap().release.unwrap().digest,
        digest('a')
    );
}

#[tokio::test(start_paused = true)]
async fn status_and_history_show_the_running_release() {
    let w = world();
    let (code, out, _) = run(&w, OutputFormat::Human, &["status"]).await;
    assert_eq!(code, exit::OK);
    let text = out.text();
    assert!(
        text.starts_with("[local] app v1 (aaaaaaaaaaaa) (running)"),
        "{text}"
    );
    assert!(text.contains("health: healthy"), "{text}");
    assert!(text.contains("lock: free"), "{text}");

    let (code, out, _) = run(&w, OutputFormat::Json, &["status", "--output", "json"]).await;
    assert_eq!(code, exit::OK);
    let v = json_lines(&out);
    assert_eq!(v[0]["container"]["release"]["digest"], digest('a').as_str());
    assert_eq!(v[0]["probe"]["status"], "healthy");
    assert_eq!(v[1]["outcome"], "ok");

    let (code, out, _) = run(&w, OutputFormat::Human, &["history"]).await;
    assert_eq!(code, exit::OK);
    let text = out.text();
    assert!(
        text.starts_with(&format!(
            "127.0.0.1:5000/team/app:latest -> {}",
            digest('a')
        )),
        "{text}"
    );
    assert!(text.contains("previous -> (not set)"), "{text}");
    assert!(
        text.contains("[local] app v1 (aaaaaaaaaaaa) (running)"),
        "{text}"
    );
    assert!(text.contains("[latest]"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_host_fails_before_anything_changes() {
    let w = world();
    let config = Config::parse(CONFIG, Path::new("rollback.toml"), &|_| Some("x".into())).unwrap();
    let adapters = FakeAdapters::with_registry(w.registry.clone());
    let (output, out, err) = Output::captured(OutputFormat::Human, 0);
    let cli = Cli::try_parse_from(["rollback", "deploy", "--tag", "v2"]).unwrap();
    let code = run_with(cli, Some(config), Arc::new(output), Arc::new(adapters)).await;
    assert_eq!(code, exit::FAILED);
    assert!(out.text().is_empty());
    assert_eq!(
        err.text(),
        "error: [local] cannot reach the engine of local; nothing was changed\n"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unpromoted_deploy_is_undone_from_the_labels_and_promoted_once() {
    let w = world();
    let running = |w: &World| w.runtime.named("app").unwrap().release.unwrap().digest;
    let args = ["deploy", "--tag", "v2", "--no-promote", "--host", "local"];
    let (code, out, _) = run(&w, OutputFormat::Human, &args).await;
    assert_eq!(code, exit::OK, "{}", out.text());
    assert_eq!(running(&w), digest('b'));
    assert_eq!(w.registry.tag(&repo(), "latest"), Some(digest('a')));
    assert!(out.text().contains("not promoted"), "{}", out.text());

    // undo puts v1 back without touching a tag (there is no `previous`).
    let (code, out, _) = run(&w, OutputFormat::Human, &["undo", "--host", "local"]).await;
    assert_eq!(code, exit::OK, "{}", out.text());
    assert_eq!(running(&w), digest('a'));
    assert_eq!(w.registry.tag(&repo(), "latest"), Some(digest('a')));
    assert_eq!(w.registry.tag(&repo(), "previous"), None);

    // promote: registry only, once.
    let (code, out, _) = run(&w, OutputFormat::Json, &["promote", "--tag", "v2"]).await;
    assert_eq!(code, exit::OK);
    let last = json_lines(&out).pop().unwrap();
    assert_eq!(last["outcome"], "promoted");
    assert_eq!(w.registry.tag(&repo(), "latest"), Some(digest('b')));
    assert_eq!(w.registry.tag(&repo(), "previous"), Some(digest('a')));
    let copies = w.registry.copies().len();
    let (code, out, _) = run(&w, OutputFormat::Json, &["promote", "--tag", "v2"]).await;
    assert_eq!(code, exit::OK);
    assert_eq!(json_lines(&out).pop().unwrap()["outcome"], "unchanged");
    assert_eq!(w.registry.copies().len(), copies, "nothing copied again");
    assert_eq!(w.registry.tag(&repo(), "previous"), Some(digest('a')));
    assert_eq!(running(&w), digest('a'), "promote touches no host");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_host_is_exit_2_naming_the_known_ones() {
    let w = world();
    for args in [
        &["deploy", "--tag", "v2", "--host", "prod-z"][..],
        &["undo", "--host", "prod-z"],
        &["status", "--host", "local", "--host", "prod-z"],
        &["recover", "--host", "prod-z"],
    ] {
        let (code, _, err) = run(&w, OutputFormat::Human, args).await;
        assert_eq!(code, exit::USAGE, "{args:?}");
        assert!(
            err.text().contains("\"prod-z\"") && err.text().contains("hosts: local"),
            "{}",
            err.text()
        );
        assert!(w.runtime.calls().is_empty(), "{args:?} contacted a host");
    }
}
