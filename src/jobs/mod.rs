//! Background work: the edge sender (the one user of the `awc` HTTP client), the loop that
//! runs the periodic passes, giving freed memory back, and the notifications to systemd. Jobs take what they need from
//! `service` and `storage`; nothing below them names them.

pub mod edge;
pub mod every;
pub mod memory;
pub mod systemd;

pub use every::every;
