//! Print what runs under an app name on a Docker host, and its deploy lock.
//!
//! ```text
//! cargo run -p rollback-docker --example status -- ody-prod-app [unix:///var/run/docker.sock]
//! ```

use std::time::Duration;

use rollback_core::{DeployLock, Runtime};
use rollback_docker::DockerRuntime;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let app = args.next().ok_or("usage: status APP [DOCKER_URL]")?;
    let url = args.next();
    let runtime = DockerRuntime::connect(url.as_deref(), Duration::from_secs(5)).await?;
    println!("engine {} (API {})", runtime.url(), runtime.api_version());
    for container in runtime.list_app(&app).await? {
        let release = container
            .release
            .as_ref()
            .map(|r| format!("{} {}", r.repository, r.display_name()))
            .unwrap_or_else(|| "unknown release".to_owned());
        println!(
            "{:<40} {:<24} {release}",
            container.name,
            container.state.to_string()
        );
    }
    match DeployLock::status(&runtime, &app).await? {
        Some(lock) => println!("locked: {lock}"),
        None => println!("not locked"),
    }
    Ok(())
}
