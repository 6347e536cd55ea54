//! The stop signal every long-running task of the gateway listens to:
//! drivers, connectors and the services around the bus. One type, so a
//! component's context looks the same whichever crate it comes from.

use tokio::sync::watch;

/// The receiving side of a stop signal; cheap to clone, one per task.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (switch, mut shutdown) = gateway_bus::Shutdown::new();
/// assert!(!shutdown.is_set());
/// switch.stop();
/// shutdown.wait().await;
/// assert!(shutdown.is_set());
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side: [`ShutdownSwitch::stop`] tells every [`Shutdown`] made
/// from it. Dropping the switch counts as stopping, so a task never outlives
/// the owner that forgot to stop it.
#[derive(Debug)]
pub struct ShutdownSwitch(watch::Sender<bool>);

impl Shutdown {
    /// A new signal and the switch that triggers it.
    pub fn new() -> (ShutdownSwitch, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownSwitch(tx), Shutdown(rx))
    }

    /// Resolves once stopping was asked for (or the switch was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Whether stopping was asked for.
    pub fn is_set(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

impl ShutdownSwitch {
    /// Tells every [`Shutdown`] of this switch to stop; calling it again does nothing.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }

    /// Another listener of this switch.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}
