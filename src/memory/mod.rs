//! Memory: the plan that sizes a session before it starts, the one-allocation arena, and the
//! condensed KV cache carved from it.

pub mod arena;
pub mod kv_cache;
pub mod plan;
