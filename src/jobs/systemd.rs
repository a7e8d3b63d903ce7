//! Talking to systemd when it started us (`Type=notify`): `READY=1` once both listeners are
//! bound and the store is open, `STATUS=` lines saying what the service does, `STOPPING=1` on
//! the way out, and `WATCHDOG=1` pings while the store answers, when the unit sets
//! `WatchdogSec=`. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use crate::service::Services;
use sd_notify::NotifyState;
use std::sync::Arc;

/// Says that the service is ready, with a status line; a failure to tell is logged, never
/// fatal.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Says that the service is stopping.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Pings the watchdog at half its interval while the store answers a read, when the unit asks
/// for one. A store that hangs stops the pings, and systemd restarts the service; a full disk
/// does not (reads still work), so it never causes a restart loop.
pub fn watchdog(services: Arc<Services>) -> Option<actix_rt::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    log::info!("systemd watchdog: pinging every {:?}", interval / 2);
    Some(super::every(
        "watchdog",
        interval / 2,
        move || match services.store.schema_version() {
            Ok(_) => send(&[NotifyState::Watchdog]),
            Err(e) => log::warn!("systemd watchdog: the store did not answer ({e}); no ping"),
        },
    ))
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd: {e}");
    }
}
