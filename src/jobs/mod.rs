//! Background work that talks to the outside: the edge sender, the one user of the `awc` HTTP
//! client. Jobs take what they need from `service` and `storage`; nothing below them names
//! them.

pub mod edge;
