//! The condensed KV cache: K and V rows for producer layers only, laid out
//! [position][kv head][head dim] in the cache type (f32, f16 or q8_0), carved from the arena.
//! Consumer layers own nothing here; they read their source layer's rows.

use std::ops::Range;

use lckv_kernels::{GgmlType, Kernels, KvLayout};

use crate::memory::arena::{Arena, ArenaLayout, Buf, Region};
use crate::model::config::ModelConfig;
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

/// The cache geometry of a model under its plan.
pub fn kv_layout(cfg: &ModelConfig, ty: GgmlType) -> Result<KvLayout> {
    if ty.row_size(cfg.head_dim).is_none() {
        return Err(Error::Usage(format!(
            "KV cache type {ty} needs a head size that is a multiple of {}, the model's is {}; use f16",
            ty.block_size(),
            cfg.head_dim
        )));
    }
    Ok(KvLayout {
        ty,
        n_kv_head: cfg.n_head_kv,
        head_dim: cfg.head_dim,
    })
}

/// Bytes of K and V one token adds to the cache, over all producer layers.
pub fn bytes_per_token(cfg: &ModelConfig, ty: GgmlType) -> Result<usize> {
    let layout = kv_layout(cfg, ty)?;
    Ok(2 * layout.pos_bytes() * cfg.plan.producers().len())
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

pub struct KvCache {
    layout: KvLayout,
    n_ctx: usize,
    layers: Vec<Option<LayerCache>>,
}

impl KvCache {
    pub fn reserve(
        cfg: &ModelConfig,
        n_ctx: usize,
        ty: GgmlType,
        arena: &mut ArenaLayout,
    ) -> Result<KvRegions> {
        let layout = kv_layout(cfg, ty)?;
        let per_layer = layout
            .pos_bytes()
            .checked_mul(n_ctx)
            .ok_or_else(|| Error::Budget(format!("a KV cache of {n_ctx} positions overflows")))?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            layers.push(if cfg.plan.is_producer(i) {
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
}
