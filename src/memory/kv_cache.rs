//! The condensed KV cache: K and V rows for producer layers only, laid out
//! [position][kv head][head dim] in the cache type (f32, f16 or q8_0), carved from the arena.
//! Consumer layers own nothing here; they read their source layer's rows.

use std::ops::Range;

use lckv_kernels::{GgmlType, Kernels, KvLayout};

use crate::memory::arena::{Arena, ArenaLayout, Buf, Region};
use crate::memory::dims::{ModelDims, SessionDims};
use crate::{Error, Result};

/// Parses a `--kv-type` value.
pub fn parse_kv_type(s: &str) -> Result<GgmlType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" => Ok(GgmlType::F32),
        "f16" => Ok(GgmlType::F16),
        "q8_0" => Ok(GgmlType::Q8_0),
        other => Err(Error::Usage(format!(
            "unknown KV cache type '{other}': use f16 (default), q8_0 or f32"
        ))),
    }
}

/// Bytes of K and V one token adds to the cache of `n_producers` layers.
pub fn bytes_per_token(layout: &KvLayout, n_producers: usize) -> usize {
    2 * layout.pos_bytes() * n_producers
}

struct LayerCache {
    k: Buf<u8>,
    v: Buf<u8>,
}

/// Regions reserved for the cache before the arena exists.
pub struct KvRegions {
    layout: KvLayout,
    n_ctx: usize,
    layers: Vec<Option<(Region<u8>, Region<u8>)>>,
}

impl KvRegions {
    /// Bytes the cache takes in the arena.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| k.arena_bytes() + v.arena_bytes())
            .sum()
    }
}

pub struct KvCache {
    layout: KvLayout,
    n_ctx: usize,
    layers: Vec<Option<LayerCache>>,
}

impl KvCache {
    /// Reserves K and V for `d.n_ctx` positions of every producer layer.
    pub fn reserve(m: &ModelDims, d: &SessionDims, arena: &mut ArenaLayout) -> Result<KvRegions> {
        let layout = m.kv_layout(d.kv_type)?;
        let n_ctx = d.n_ctx;
        let per_layer = layout
            .pos_bytes()
            .checked_mul(n_ctx)
            .ok_or_else(|| Error::Budget(format!("a KV cache of {n_ctx} positions overflows")))?;
        let mut layers = Vec::with_capacity(m.producers.len());
        for &producer in &m.producers {
            layers.push(if producer {
                Some((
                    arena.reserve::<u8>(per_layer)?,
                    arena.reserve::<u8>(per_layer)?,
                ))
            } else {
                None
            });
        }
        Ok(KvRegions {
            layout,
            n_ctx,
            layers,
        })
    }

    pub fn take(regions: KvRegions, arena: &std::sync::Arc<Arena>) -> KvCache {
        let layers = regions
            .layers
            .into_iter()
            .map(|r| {
                r.map(|(k, v)| LayerCache {
                    k: arena.take(k),
                    v: arena.take(v),
                })
            })
            .collect();
        KvCache {
            layout: regions.layout,
            n_ctx: regions.n_ctx,
            layers,
        }
    }

    pub fn layout(&self) -> &KvLayout {
        &self.layout
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn layer(&self, layer: usize) -> &LayerCache {
        self.layers[layer]
            .as_ref()
            .expect("KV cache accessed for a layer that produces none")
    }

    /// K rows of a producer layer.
    pub fn k(&self, layer: usize) -> &[u8] {
        &self.layer(layer).k
    }

    pub fn v(&self, layer: usize) -> &[u8] {
        &self.layer(layer).v
    }

    /// Stores one position's K and V (all kv heads, f32) in the cache type.
    pub fn store(&mut self, kern: &Kernels, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let layout = self.layout;
        let pb = layout.pos_bytes();
        let rb = layout.row_bytes();
        let hd = layout.head_dim;
        let lc = self.layers[layer]
            .as_mut()
            .expect("store into a layer that produces no KV");
        let (kd, vd) = (
            &mut lc.k[pos * pb..(pos + 1) * pb],
            &mut lc.v[pos * pb..(pos + 1) * pb],
        );
        for h in 0..layout.n_kv_head {
            kern.quantize_row(
                layout.ty,
                &k[h * hd..(h + 1) * hd],
                &mut kd[h * rb..(h + 1) * rb],
            );
            kern.quantize_row(
                layout.ty,
                &v[h * hd..(h + 1) * hd],
                &mut vd[h * rb..(h + 1) * rb],
            );
        }
    }

    /// Zeroes positions of a producer layer (the first pass of an iterative prefill reads zeros).
    pub fn zero(&mut self, layer: usize, positions: Range<usize>) {
        let pb = self.layout.pos_bytes();
        let lc = self.layers[layer]
            .as_mut()
            .expect("zeroing a layer that produces no KV");
        lc.k[positions.start * pb..positions.end * pb].fill(0);
        lc.v[positions.start * pb..positions.end * pb].fill(0);
    }

    /// Copies positions of a producer layer's K and V into `out` (K then V), for convergence checks
    /// and the prompt cache.
    pub fn copy_out(&self, layer: usize, positions: Range<usize>, out: &mut [u8]) {
        let pb = self.layout.pos_bytes();
        let n = (positions.end - positions.start) * pb;
        let lc = self.layer(layer);
        out[..n].copy_from_slice(&lc.k[positions.start * pb..positions.end * pb]);
        out[n..2 * n].copy_from_slice(&lc.v[positions.start * pb..positions.end * pb]);
    }

    /// Writes back what `copy_out` produced.
    pub fn copy_in(&mut self, layer: usize, positions: Range<usize>, data: &[u8]) {
        let pb = self.layout.pos_bytes();
        let n = (positions.end - positions.start) * pb;
        let lc = self.layers[layer]
            .as_mut()
            .expect("restoring a layer that produces no KV");
        lc.k[positions.start * pb..positions.end * pb].copy_from_slice(&data[..n]);
        lc.v[positions.start * pb..positions.end * pb].copy_from_slice(&data[n..2 * n]);
    }

    /// Copies the first `n` positions of every producer layer from `src`, a cache of the same
    /// plan and layout (a prefix computed once, handed to a session that starts with it).
    pub fn copy_prefix_from(&mut self, src: &KvCache, n: usize) {
        assert!(
            self.layout == src.layout && n <= self.n_ctx.min(src.n_ctx),
            "prefix copy between caches of different layouts or past their context"
        );
        let bytes = n * self.layout.pos_bytes();
        for (dst, src) in self.layers.iter_mut().zip(&src.layers) {
            if let (Some(d), Some(s)) = (dst.as_mut(), src.as_ref()) {
                d.k[..bytes].copy_from_slice(&s.k[..bytes]);
                d.v[..bytes].copy_from_slice(&s.v[..bytes]);
            }
        }
    }
}
