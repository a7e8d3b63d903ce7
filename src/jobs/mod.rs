//! Background work: the edge sender (the one user of the `awc` HTTP client) and the loop that
//! runs the periodic passes. Jobs take what they need from `service` and `storage`; nothing
//! below them names them.

pub mod edge;
pub mod every;

pub use every::every;
