//! `rollback init`, `rollback config check` and `rollback config schema`:
//! the config file itself, with no engine dialled and no registry asked.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::cli::{ConfigCommand, InitArgs};
use crate::commands::Context;
use crate::config::{self, Config, HealthCheck, ProxyConfig, TlsConfig};
use crate::exit::{self, CliError};
use crate::output::Output;

/// `rollback config check|schema`.
pub fn run(ctx: &Context, command: &ConfigCommand) -> Result<i32, CliError> {
    match command {
        ConfigCommand::Check => check(ctx),
        ConfigCommand::Schema => schema(&ctx.output),
    }
}

/// The file was read and validated before the command ran (an error there
/// exits 2 naming file, line and key); what is left is the summary.
fn check(ctx: &Context) -> Result<i32, CliError> {
    let config = ctx.config()?;
    let app = config.app()?;
    let file = config.path.display().to_string();
    let hosts: Vec<String> = config
        .hosts
        .iter()
        .map(|h| match &h.docker {
            Some(url) => format!("{} ({url})", h.name),
            None => format!("{} (local engine)", h.name),
        })
        .collect();
    let strategy = match (&config.proxy, &config.swarm) {
        (Some(p), _) => format!("start-first behind [proxy] on {}", p.listen),
        (None, Some(s)) => format!(
            "update of Swarm service {} ({} replica(s) when created, {} task(s) at a time)",
            s.service, s.replicas, s.parallelism
        ),
        (None, None) => "stop-first".to_owned(),
    };
    let health = config.hosts.first().and_then(|h| h.health.as_ref());
    let tls = config.proxy.as_ref().and_then(tls_summary);
    if ctx.output.is_json() {
        ctx.output.json(&json!({
            "outcome": "valid",
            "exit_code": exit::OK,
            "file": file,
            "app": app.name.as_str(),
            "repository": app.repository.to_string(),
            "hosts": config.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            "strategy": match (&config.proxy, &config.swarm) {
                (Some(_), _) => "start-first",
                (None, Some(_)) => "swarm",
                (None, None) => "stop-first",
            },
            "health": health.map(kind),
            "tls": tls.as_ref().map(|(_, json)| json),
        }));
        return Ok(exit::OK);
    }
    let out = &ctx.output;
    out.line(&format!("{file}: valid"));
    out.line(&format!(
        "  app {} from {} (tags {} and {})",
        app.name.as_str(),
        app.repository,
        app.stable_tag,
        app.previous_tag
    ));
    out.line(&format!("  hosts: {}", hosts.join(", ")));
    out.line(&format!(
        "  deploy: {strategy}, {} host(s) at a time",
        config.rollout.batch()
    ));
    if let Some(h) = health {
        out.line(&format!("  health: {h}"));
    }
    if let Some((text, _)) = &tls {
        out.line(&format!("  tls: {text}"));
    }
    out.line("no host or registry was contacted");
    Ok(exit::OK)
}

/// `[proxy] tls` in a line and as JSON; a certificate file is described by
/// what it says about itself, never by its key.
fn tls_summary(proxy: &ProxyConfig) -> Option<(String, serde_json::Value)> {
    let tls = proxy.tls.as_ref()?;
    let host = proxy.host.as_deref().unwrap_or_default();
    let listen = proxy.tls_listen.as_deref().unwrap_or_default();
    Some(match tls {
        TlsConfig::Acme { email, ca, .. } => {
            let ca = ca.as_deref().unwrap_or("Let's Encrypt");
            (
                format!("{host} on {listen}, certificate from ACME ({ca})"),
                json!({"mode": "acme", "host": host, "listen": listen, "ca": ca, "email": email}),
            )
        }
        TlsConfig::Internal => (
            format!("{host} on {listen}, certificate from the proxy's own CA"),
            json!({"mode": "internal", "host": host, "listen": listen}),
        ),
        TlsConfig::Files(f) => {
            let expires = humantime::format_rfc3339_seconds(f.info.not_after).to_string();
            (
                format!(
                    "{host} on {listen}, certificate {} (issuer {}, expires {expires})",
                    f.cert.display(),
                    f.info.issuer
                ),
                json!({
                    "mode": "files", "host": host, "listen": listen,
                    "cert": f.cert.display().to_string(), "key": f.key.display().to_string(),
                    "issuer": f.info.issuer, "not_after": expires,
                }),
            )
        }
    })
}

fn kind(check: &HealthCheck) -> &'static str {
    match check {
        HealthCheck::Http { .. } => "http",
        HealthCheck::Tcp { .. } => "tcp",
        HealthCheck::Docker => "docker",
        HealthCheck::Direct { .. } => "path",
        HealthCheck::Exec { .. } => "exec",
    }
}

fn schema(output: &Output) -> Result<i32, CliError> {
    let text = serde_json::to_string_pretty(&config::schema())
        .map_err(|e| CliError::failed(format!("cannot print the schema: {e}")))?;
    output.line(&text);
    Ok(exit::OK)
}

/// `rollback init`: write the starter file at `path`, never over one; with
/// `dry_run`, print it instead.
pub fn init(output: &Output, path: &Path, args: &InitArgs, dry_run: bool) -> Result<i32, CliError> {
    let file = path.display().to_string();
    if path.exists() {
        return Err(CliError::usage(format!(
            "{file}: already exists; nothing was written (remove it, or name another file with -c)"
        )));
    }
    let name = match &args.name {
        Some(n) => n.clone(),
        None => folder_name(path),
    };
    let text = starter(&name, args);
    // What init writes must pass `config check`: a bad --name or
    // --repository is reported as the file would report it, and nothing is written.
    Config::parse(&text, path, &|_| None)?;
    if dry_run {
        output.line(&text);
        output.line(&format!("nothing written to {file} (dry run)"));
        return Ok(exit::OK);
    }
    let mut created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| CliError::usage(format!("{file}: cannot create: {e}")))?;
    created
        .write_all(text.as_bytes())
        .map_err(|e| CliError::failed(format!("{file}: cannot write: {e}")))?;
    let mut next = Vec::new();
    if args.repository.is_none() {
        next.push("set app.repository to your image repository".to_owned());
    }
    if args.proxy {
        next.push("set proxy.listen (the public port) and proxy.app_port".to_owned());
        next.push("set health.path to the app's health path".to_owned());
    } else if args.hosts.is_empty() {
        next.push(
            "set container.ports and health.http to the app's port and health URL".to_owned(),
        );
    } else {
        next.push("set container.ports and each host's health_url".to_owned());
    }
    next.push("add the app's env (${VAR} takes a secret from the environment)".to_owned());
    next.push(format!("run `rollback config check{}`", config_flag(path)));
    next.push(format!(
        "deploy with `rollback{} deploy --tag TAG`",
        config_flag(path)
    ));
    if output.is_json() {
        output.json(
            &json!({ "outcome": "written", "exit_code": exit::OK, "file": file, "next": next }),
        );
    } else {
        output.line(&format!("wrote {file}"));
        output.line("next:");
        for (i, step) in next.iter().enumerate() {
            output.line(&format!("  {}. {step}", i + 1));
        }
    }
    Ok(exit::OK)
}

fn config_flag(path: &Path) -> String {
    if path == Path::new(config::DEFAULT_FILE) {
        String::new()
    } else {
        format!(" -c {}", path.display())
    }
}

/// The name of the folder the file goes to, as a container name.
fn folder_name(path: &Path) -> String {
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().unwrap_or_default(),
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let name: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches(['-', '.', '_']).to_owned();
    if name.is_empty() {
        "app".to_owned()
    } else {
        name
    }
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The host part of an engine URL, where its app's port can be reached.
fn address_of(engine: &str) -> String {
    match url::Url::parse(engine) {
        Ok(u) if u.scheme() != "unix" => u.host_str().unwrap_or("127.0.0.1").to_owned(),
        _ => "127.0.0.1".to_owned(),
    }
}

/// The commented starter file.
fn starter(name: &str, args: &InitArgs) -> String {
    let repository = args
        .repository
        .clone()
        .unwrap_or_else(|| format!("registry.example.com/team/{name}"));
    let port = args.app_port;
    let path = &args.health_path;
    let mut t = String::new();
    t.push_str(
        "# rollback.toml: what rollback deploys, where, and how it proves a release healthy.\n\
         # Every key: docs/configuration.md. Check this file with `rollback config check`;\n\
         # `rollback config schema` prints a JSON Schema for editors.\n\n",
    );
    t.push_str("[app]\n");
    t.push_str(&format!(
        "name = {}                      # the container name on every host\n",
        quoted(name)
    ));
    t.push_str(&format!(
        "repository = {}   # image repository, no tag\n",
        quoted(&repository)
    ));
    t.push_str(
        "# stable_tag = \"latest\"                 # moved to a release once every host runs it verified\n\
         # previous_tag = \"previous\"\n\
         # retain = 5                             # images of the newest N releases kept on each host\n\n",
    );
    t.push_str("[container]\n");
    if args.proxy {
        t.push_str("# ports = []                             # with [proxy], the proxy publishes the app\n");
    } else {
        t.push_str(&format!(
            "ports = [\"{port}:{port}\"]                  # docker run -p syntax\n"
        ));
    }
    t.push_str(
        "# env = { APP_ENV = \"prod\", DB_PASSWORD = \"${DB_PASSWORD}\" }   # ${VAR}: a secret from rollback's environment\n\
         # volumes = [\"/srv/app/data:/data\"]\n\
         restart = \"unless-stopped\"\n\
         stop_timeout = \"10s\"\n\n",
    );
    t.push_str("[health]\n");
    if args.proxy {
        t.push_str(&format!(
            "path = {}                      # probed on the new container, before the proxy sends it traffic\n",
            quoted(path)
        ));
    } else if args.hosts.is_empty() {
        t.push_str(&format!(
            "http = {}   # probed from where rollback runs\n",
            quoted(&format!("http://127.0.0.1:{port}{path}"))
        ));
    } else {
        t.push_str("# each [[hosts]] below has its own health_url\n");
    }
    t.push_str(
        "# expect_status = 200                     # default: any 2xx\n\
         # json_pointer = \"/status\"                # with expect: a value in the JSON body\n\
         # expect = \"UP\"\n\
         interval = \"1s\"\n\
         timeout = \"2s\"                            # per attempt\n\
         start_period = \"0s\"                       # failures ignored this long (a crash is not)\n\
         deadline = \"60s\"                          # give up after\n\
         stable_for = \"5s\"                         # must stay healthy this long\n\n",
    );
    t.push_str(
        "[rollout]\n\
         batch = 1                                 # hosts at a time\n\
         on_failure = \"rollback-all\"               # or \"rollback-host\", \"halt\"\n",
    );
    if args.proxy {
        t.push_str(&format!(
            "\n[proxy]                                   # start-first: traffic moves only to a proven release\n\
             listen = \"80\"                             # the public port on each host\n\
             app_port = {port}                           # the container port traffic goes to\n\
             # drain = \"30s\"\n"
        ));
    }
    if args.hosts.is_empty() {
        t.push_str(
            "\n# Without [[hosts]], one host: the local engine (DOCKER_HOST or the default socket).\n\
             # [[hosts]]\n\
             # name = \"prod-a\"\n\
             # docker = \"ssh://deploy@prod-a\"         # unix://, tcp://, ssh://...\n",
        );
    }
    for (host, engine) in &args.hosts {
        t.push_str(&format!(
            "\n[[hosts]]\nname = {}\ndocker = {}\n",
            quoted(host),
            quoted(engine)
        ));
        if !args.proxy {
            t.push_str(&format!(
                "health_url = {}\n",
                quoted(&format!("http://{}:{port}{path}", address_of(engine)))
            ));
        }
    }
    align_comments(&t)
}

/// Trailing comments start in one column, as a person would line them up.
fn align_comments(text: &str) -> String {
    const COLUMN: usize = 40;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.find("  #") {
            Some(at) => {
                let code = line[..at].trim_end();
                let comment = line[at..].trim_start();
                out.push_str(&format!("{code:<COLUMN$} {comment}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn args() -> InitArgs {
        InitArgs {
            name: Some("shop".into()),
            repository: Some("127.0.0.1:5000/team/shop".into()),
            app_port: 8080,
            health_path: "/health".into(),
            ..InitArgs::default()
        }
    }

    #[test]
    fn every_starter_passes_the_parser_and_the_schema() {
        let schema = config::schema();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let hosts = vec![
            ("prod-a".to_owned(), "ssh://deploy@prod-a:22".to_owned()),
            (
                "prod-b".to_owned(),
                "unix:///var/run/docker.sock".to_owned(),
            ),
        ];
        for (proxy, hosts) in [
            (false, vec![]),
            (true, vec![]),
            (false, hosts.clone()),
            (true, hosts),
        ] {
            let a = InitArgs {
                proxy,
                hosts,
                ..args()
            };
            let text = starter("shop", &a);
            let config = Config::parse(&text, Path::new("rollback.toml"), &|_| None)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(config.proxy.is_some(), proxy);
            let value: toml::Value = toml::from_str(&text).unwrap();
            let value = serde_json::to_value(value).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}\n{text}");
        }
    }

    #[test]
    fn a_remote_host_gets_a_health_url_on_its_own_address() {
        let a = InitArgs {
            hosts: vec![("a".into(), "ssh://deploy@10.0.0.5:2222".into())],
            ..args()
        };
        let config = Config::parse(&starter("shop", &a), Path::new("x.toml"), &|_| None).unwrap();
        assert_eq!(
            config.hosts[0].health.as_ref().unwrap().to_string(),
            "GET http://10.0.0.5:8080/health"
        );
    }

    #[test]
    fn the_folder_name_becomes_a_container_name() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("My Shop");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(folder_name(&sub.join("rollback.toml")), "my-shop");
        assert_eq!(config_flag(&PathBuf::from("rollback.toml")), "");
        assert_eq!(config_flag(&PathBuf::from("ops/r.toml")), " -c ops/r.toml");
    }
}
