//! Every `toml` example in README.md and docs/*.md is a valid config: the
//! parser reads it and it validates against `rollback config schema`.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds the crate")
        .to_path_buf()
}

/// `(file, line, text)` of every ```toml block.
fn examples() -> Vec<(String, usize, String)> {
    let root = workspace();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let mut block: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match &mut block {
                None if line.trim_start() == "```toml" => block = Some((i + 2, String::new())),
                Some((start, body)) if line.trim_start() == "```" => {
                    out.push((name.clone(), *start, std::mem::take(body)));
                    block = None;
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => {}
            }
        }
    }
    out
}

#[test]
fn every_toml_example_in_the_docs_passes_the_parser_and_the_schema() {
    let schema = rollback_cli::config::schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let examples = examples();
    assert!(examples.len() >= 10, "found {} examples", examples.len());
    let mut failures = Vec::new();
    for (file, line, text) in &examples {
        // Variables the examples refer to are set, as in a pipeline.
        let parsed = rollback_cli::config::Config::parse(text, Path::new("rollback.toml"), &|_| {
            Some("example-secret".to_owned())
        });
        if let Err(e) = parsed {
            failures.push(format!("{file}:{line}: parser: {e}"));
        }
        let value: toml::Value = match toml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{file}:{line}: toml: {e}"));
                continue;
            }
        };
        let value = serde_json::to_value(value).unwrap();
        for error in validator.iter_errors(&value) {
            failures.push(format!(
                "{file}:{line}: schema: {} at {}",
                error,
                error.instance_path()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_schema_refuses_what_the_parser_refuses() {
    let schema = rollback_cli::config::schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let valid = |text: &str| {
        let value: toml::Value = toml::from_str(text).unwrap();
        validator.is_valid(&serde_json::to_value(value).unwrap())
    };
    let app = "[app]\nname = \"shop\"\nrepository = \"127.0.0.1:5000/team/shop\"\n";
    assert!(valid(&format!("{app}[health]\ndocker = true\n")));
    for bad in [
        "[container]\nprots = [\"80:80\"]\n",
        "[container]\nports = [\"80:80:80:80\"]\n",
        "[health]\ninterval = \"60\"\n",
        "[health]\nexpect_status = 700\n",
        "[proxy]\nlisten = \"80\"\napp_port = 70000\n",
        "[rollout]\non_failure = \"rollback\"\n",
        "[rollout]\nbatch = 0\n",
        "[[hosts]]\nname = \"a\"\ndocker = \"npipe:////./pipe/docker\"\n",
        "[container]\nrestart = \"sometimes\"\n",
        "retain = 1\n",
    ] {
        // `app` ends inside [app]: a bare key goes there.
        let text = format!("{app}{bad}");
        assert!(!valid(&text), "the schema accepts:\n{text}");
        assert!(
            rollback_cli::config::Config::parse(&text, Path::new("rollback.toml"), &|_| None)
                .is_err(),
            "the parser accepts:\n{text}"
        );
    }
}
