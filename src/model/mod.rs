//! Plain data with no I/O: identifiers, account and image records, and the rules that go with
//! them. Everything else (storage, HTTP, rendering) uses these types.

pub mod account;
pub mod expr;
pub mod ids;
pub mod image;
pub mod net;
pub mod raw;
pub mod resolve;
pub mod resolved;
pub mod schema;
pub mod stack;
pub mod time;
