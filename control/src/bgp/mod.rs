//! The embedded BGP speaker.
//!
//! - [`wire`]: the message codec (RFC 4271, 4760, 4364, 4659, 8277, 4360,
//!   6793, 7606), pure code with no I/O.

pub mod wire;
