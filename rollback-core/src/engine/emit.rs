//! Event numbering and delivery through an unbounded queue.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::event::{Event, EventKind, Observer, Phase, Scope};
use crate::types::{HostId, ProgressSink, PullProgress};

struct Inner {
    seq: u64,
    tx: Option<mpsc::UnboundedSender<Event>>,
}

/// Numbers events and queues them for the observer task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Emitter {
    inner: Arc<Mutex<Inner>>,
}

/// Where the queue is drained.
enum Drain {
    /// A thread of its own: a slow observer holds no runtime worker.
    Thread(oneshot::Receiver<()>),
    /// A task, if no thread could be started.
    Task(JoinHandle<()>),
}

/// Hands queued events to the observer, in order.
pub(crate) struct Pump {
    emitter: Emitter,
    drain: Drain,
}

impl Pump {
    /// Start delivering to `observer`.
    pub(crate) fn start(observer: Arc<dyn Observer>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Event>();
        let (done_tx, done_rx) = oneshot::channel();
        // The receiver moves into the thread only if the thread starts.
        let slot = Arc::new(Mutex::new(Some((rx, observer))));
        let for_thread = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("rollback-events".into())
            .spawn(move || {
                let taken = for_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some((mut rx, observer)) = taken {
                    while let Some(event) = rx.blocking_recv() {
                        observer.on_event(&event);
                    }
                }
                let _ = done_tx.send(());
            });
        let drain = match spawned {
            Ok(_) => Drain::Thread(done_rx),
            Err(_) => {
                let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                Drain::Task(tokio::spawn(async move {
                    if let Some((mut rx, observer)) = taken {
                        while let Some(event) = rx.recv().await {
                            observer.on_event(&event);
                        }
                    }
                }))
            }
        };
        Self {
            emitter: Emitter {
                inner: Arc::new(Mutex::new(Inner {
                    seq: 0,
                    tx: Some(tx),
                })),
            },
            drain,
        }
    }

    pub(crate) fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    /// Close the queue and wait until the observer has seen every event.
    pub(crate) async fn finish(self) {
        self.emitter
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tx = None;
        // A panicking observer loses its remaining events, not the deploy.
        match self.drain {
            Drain::Thread(done) => {
                let _ = done.await;
            }
            Drain::Task(task) => {
                let _ = task.await;
            }
        }
    }
}

impl Emitter {
    pub(crate) fn emit(
        &self,
        scope: &Scope,
        phase: Phase,
        kind: EventKind,
        detail: impl Into<String>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Numbered and sent under one lock so seq order is delivery order.
        if let Some(tx) = &inner.tx {
            let seq = inner.seq + 1;
            let event = Event {
                seq,
                time: SystemTime::now(),
                scope: scope.clone(),
                phase,
                kind,
                detail: detail.into(),
            };
            if tx.send(event).is_ok() {
                inner.seq = seq;
            }
        }
    }

    pub(crate) fn transition(&self, scope: &Scope, phase: Phase, detail: impl Into<String>) {
        self.emit(scope, phase, EventKind::Transition, detail)
    }

    pub(crate) fn error(&self, scope: &Scope, phase: Phase, detail: impl Into<String>) {
        self.emit(scope, phase, EventKind::Error, detail)
    }

    pub(crate) fn note(&self, scope: &Scope, phase: Phase, detail: impl Into<String>) {
        self.emit(scope, phase, EventKind::Note, detail)
    }

    /// A pull progress sink that emits an event when the layer counts change.
    pub(crate) fn pull_sink(&self, host: &HostId) -> ProgressSink {
        let emitter = self.clone();
        let scope = Scope::Host(host.clone());
        let last = Mutex::new(None::<(u32, u32)>);
        Arc::new(move |progress: PullProgress| {
            let counts = (progress.layers_done, progress.layers_total);
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if *last != Some(counts) {
                *last = Some(counts);
                let detail = format!(
                    "pulled {}/{} layers ({} of {} bytes)",
                    counts.0, counts.1, progress.bytes_done, progress.bytes_total
                );
                emitter.emit(&scope, Phase::Captured, EventKind::Pull(progress), detail);
            }
        })
    }
}
