//! Test doubles for the commands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rollback_core::{DeployLock, HealthProbe, Registry, Runtime};

use crate::adapters::{Adapters, Connected};
use crate::cli::OutputFormat;
use crate::commands::Context;
use crate::config::{Config, HostConfig};
use crate::exit::CliError;
use crate::output::{Captured, Output};

/// Adapters handing out the doubles they were given; a host without one cannot be reached.
#[derive(Default)]
pub struct FakeAdapters {
    registry: Mutex<Option<Arc<dyn Registry>>>,
    runtimes: HashMap<String, Arc<dyn Runtime>>,
    locks: HashMap<String, Arc<dyn DeployLock>>,
    probes: HashMap<String, Arc<dyn HealthProbe>>,
}

impl FakeAdapters {
    pub fn with_registry(registry: impl Registry + 'static) -> Self {
        let fake = Self::default();
        *fake.registry.lock().unwrap() = Some(Arc::new(registry));
        fake
    }

    /// An engine that keeps its own deploy lock, as Docker does.
    pub fn engine<E: Runtime + DeployLock + 'static>(self, host: &str, engine: Arc<E>) -> Self {
        self.runtime(host, engine.clone()).lock(host, engine)
    }

    pub fn runtime(mut self, host: &str, runtime: Arc<dyn Runtime>) -> Self {
        self.runtimes.insert(host.to_owned(), runtime);
        self
    }

    pub fn lock(mut self, host: &str, lock: Arc<dyn DeployLock>) -> Self {
        self.locks.insert(host.to_owned(), lock);
        self
    }

    pub fn probe(mut self, host: &str, probe: Arc<dyn HealthProbe>) -> Self {
        self.probes.insert(host.to_owned(), probe);
        self
    }
}

#[async_trait]
impl Adapters for FakeAdapters {
    fn registry(&self) -> Result<Arc<dyn Registry>, CliError> {
        self.registry
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| CliError::failed("no registry in this test"))
    }

    async fn lock(&self, host: &HostConfig) -> Result<Arc<dyn DeployLock>, CliError> {
        self.locks
            .get(host.name.as_str())
            .cloned()
            .ok_or_else(|| CliError::failed(format!("cannot reach the engine of {}", host.name)))
    }

    async fn host(&self, host: &HostConfig) -> Result<Connected, CliError> {
        let runtime = self
            .runtimes
            .get(host.name.as_str())
            .cloned()
            .ok_or_else(|| CliError::failed(format!("cannot reach the engine of {}", host.name)))?;
        let lock = self.lock(host).await?;
        let probe = self
            .probes
            .get(host.name.as_str())
            .cloned()
            .ok_or_else(|| CliError::failed(format!("no probe for {}", host.name)))?;
        Ok(Connected {
            runtime,
            lock,
            probe,
            strategy: None,
        })
    }
}

/// A context with captured stdout and stderr.
pub fn context(
    config: Option<Config>,
    format: OutputFormat,
    dry_run: bool,
    adapters: FakeAdapters,
) -> (Context, Captured, Captured) {
    let (output, out, err) = Output::captured(format, 0);
    let ctx = Context {
        config,
        output: Arc::new(output),
        dry_run,
        adapters: Arc::new(adapters),
        left_out: Vec::new(),
    };
    (ctx, out, err)
}
