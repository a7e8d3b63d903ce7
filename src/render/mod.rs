//! Pure, synchronous pixel work: sniffing and probing sources, decoding under limits,
//! operations, encoding. Nothing here knows about HTTP, sled or async runtimes; the service
//! layer runs it on the CPU pool.

pub mod animate;
pub mod cancel;
pub mod codecs;
pub mod error;
pub mod limits;
pub mod mezzanine;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod probe;
