//! The embedded BGP speaker.
//!
//! - [`fsm`]: the RFC 4271 §8 state machine, events in and actions out.
//! - [`wire`]: the message codec (RFC 4271, 4760, 4364, 4659, 8277, 4360,
//!   6793, 7606), pure code with no I/O.

pub mod fsm;
pub mod session;
pub mod sockopt;
pub mod wire;
