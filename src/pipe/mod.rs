//! `lckv pipe`: JSON lines in, JSON lines out, for voice pipelines. A speech recogniser writes
//! requests on stdin; token events, and finished sentences for a speech engine to speak while
//! generation goes on, come back on stdout. A `cancel` line (the user talks over the answer)
//! stops a generation within one token.
//!
//! `protocol` reads the lines, `input` reads them on a thread of its own, `inbox` queues them,
//! `conversation` turns requests into prompt tokens, `sentences` splits the streamed text,
//! `events` writes the output and `driver` is the loop over one session.

pub mod conversation;
pub mod driver;
pub mod events;
pub mod inbox;
pub mod input;
pub mod protocol;
pub mod sentences;

pub use driver::Pipe;
