//! Serving many sessions from one budget: the engine that owns the model and batches the
//! sessions' decoding (`engine`), the request and event type every API speaks (`request`), and
//! what the server reports about itself (`stats`). The HTTP APIs (`http`) sit on top of these.

pub mod engine;
pub mod http;
pub mod request;
pub mod stats;
