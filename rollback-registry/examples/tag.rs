//! Copy a tag registry-side and print what it took:
//!
//! ```text
//! cargo run -p rollback-registry --example tag -- 127.0.0.1:15000/team/app:latest 127.0.0.1:15000/team/app:previous
//! ```

use rollback_core::ImageRef;
use rollback_registry::OciRegistry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, destination] = args.as_slice() else {
        eprintln!("usage: tag SOURCE DESTINATION (full references)");
        return std::process::ExitCode::from(2);
    };
    let parse = |s: &str| s.parse::<ImageRef>();
    let (source, destination) = match (parse(source), parse(destination)) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {}", e.report());
            return std::process::ExitCode::from(2);
        }
    };
    let result = match OciRegistry::from_docker_config() {
        Ok(registry) => registry.copy_with_report(&source, &destination).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(stats) => {
            let verb = if stats.written {
                "now points at"
            } else {
                "already pointed at"
            };
            println!("{destination} {verb} {}", stats.digest);
            println!(
                "{} manifests written, {} blobs mounted, {} already present; requests: {:?}",
                stats.manifests_written, stats.blobs_mounted, stats.blobs_present, stats.requests
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error ({}): {}", e.kind(), e.report());
            std::process::ExitCode::FAILURE
        }
    }
}
