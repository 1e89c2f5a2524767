//! Memory: sizes and layouts, never the model. The numbers buffers are sized from (`dims`), the
//! plan that sizes every part of a process before it starts, the one-allocation arena, the
//! scratch buffers of a forward pass and the condensed KV cache carved from it.

pub mod arena;
pub mod dims;
pub mod kv_cache;
pub mod plan;
pub mod scratch;
