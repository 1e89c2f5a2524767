//! The KV plan: for every layer, the layer whose keys/values its queries attend to.
//!
//! A standard model is the identity plan. Layer-condensed (LCKV), cross-layer (CLA) and
//! YOCO-like models point many layers at a few *producers*; only producers compute K/V and hold
//! a cache. This file owns the plan's parsing (the published `layer_types` syntax and named
//! presets), its validation, and what follows from it: which layers produce, which attend up,
//! and how the layers split into acyclic runs and cyclic groups for prompt processing.

use std::fmt;
use std::ops::Range;

/// Default iterative-prefill pass counts of the published LCKV checkpoints (m and b).
pub const DEFAULT_FORWARD_PASSES: usize = 7;
pub const DEFAULT_BACKWARD_PASSES: usize = 2;

#[derive(Clone, Debug, PartialEq)]
pub struct KvPlan {
    /// `sources[i]`: the layer whose cache layer i's queries read.
    pub sources: Vec<usize>,
    /// `sliding[i]`: layer i sees only the last `window` positions.
    pub sliding: Vec<bool>,
    /// Sliding-window size in positions (0 when no layer slides).
    pub window: usize,
    /// Mask the diagonal in every layer (true in every published LCKV checkpoint).
    pub force_nodiag: bool,
    /// m: iterative prefill passes without gradient in training.
    pub forward_passes: usize,
    /// b: passes with gradient in training; the prefill runs m + b passes in all.
    pub backward_passes: usize,
}

/// A run of layers processed together during prompt processing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// No layer in the run reads a cache that is written later in the same forward pass: the
    /// whole prompt goes through each layer at once, exactly.
    Acyclic(Range<usize>),
    /// Some layer reads a producer above it: token t's lower layers need token t-1's upper layer.
    Cyclic(Range<usize>),
}

impl KvPlan {
    /// The standard plan: every layer reads its own cache.
    pub fn identity(n_layer: usize) -> KvPlan {
        KvPlan {
            sources: (0..n_layer).collect(),
            sliding: vec![false; n_layer],
            window: 0,
            force_nodiag: false,
            forward_passes: DEFAULT_FORWARD_PASSES,
            backward_passes: DEFAULT_BACKWARD_PASSES,
        }
    }

    /// Parses the published `layer_types` syntax: one source index per layer separated by `_`,
    /// each optionally suffixed by `s` for a sliding-window layer (e.g. `0_20_20_..._20_21`).
    pub fn parse_layer_types(spec: &str, n_layer: usize) -> Result<KvPlan, String> {
        let parts: Vec<&str> = spec.trim().split('_').collect();
        if parts.len() != n_layer {
            return Err(format!(
                "KV plan '{spec}' names {} layers but the model has {n_layer}; give one source index per layer",
                parts.len()
            ));
        }
        let mut plan = KvPlan::identity(n_layer);
        for (i, part) in parts.iter().enumerate() {
            let (num, slide) = match part.strip_suffix('s') {
                Some(n) => (n, true),
                None => (*part, false),
            };
            plan.sources[i] = num.parse::<usize>().map_err(|_| {
                format!("KV plan '{spec}': entry {i} is '{part}', expected a layer index optionally followed by 's'")
            })?;
            plan.sliding[i] = slide;
        }
        // The published checkpoints all train with the diagonal masked.
        plan.force_nodiag = !plan.is_identity();
        // The window size comes from elsewhere (config or model); the caller validates it.
        plan.validate_sources()?;
        Ok(plan)
    }

    /// A plan from a preset name or a `layer_types` string, for `--kv-plan`.
    ///
    /// Presets: `standard`; `cla2` (pairs share the lower layer's cache); `lckv-w2` (layer 0 and
    /// the top layer keep their own cache, all others read the second-to-top layer, as the
    /// LCKV "sandwich" with 2 warm-up layers); `lckv-wN` (N/2 bottom and N/2 top warm-up layers,
    /// the rest read the highest layer below the top warm-ups); `sandwich-middle` (bottom and top
    /// layers own, all others read the middle layer); `yoco` (bottom half own sliding-window
    /// caches, the top half reads the first layer of the top half).
    pub fn from_spec(spec: &str, n_layer: usize, window: usize) -> Result<KvPlan, String> {
        let spec = spec.trim();
        if n_layer == 0 {
            return Err("the model has no layers".into());
        }
        let l = n_layer;
        let plan = match spec {
            "standard" | "identity" => KvPlan::identity(l),
            "cla2" => {
                let mut p = KvPlan::identity(l);
                for (i, s) in p.sources.iter_mut().enumerate() {
                    *s = i - i % 2;
                }
                p.force_nodiag = false;
                p
            }
            "sandwich-middle" => {
                if l < 3 {
                    return Err(format!("preset sandwich-middle needs at least 3 layers, the model has {l}"));
                }
                // The published sandwich-middle plan for 22 layers reads layer 10.
                let mid = (l - 1) / 2;
                let mut p = KvPlan::identity(l);
                for s in p.sources.iter_mut().take(l - 1).skip(1) {
                    *s = mid;
                }
                p.force_nodiag = true;
                p
            }
            "yoco" => {
                if l < 2 {
                    return Err(format!("preset yoco needs at least 2 layers, the model has {l}"));
                }
                let half = l / 2;
                let mut p = KvPlan::identity(l);
                for i in half..l {
                    p.sources[i] = half;
                }
                for s in p.sliding.iter_mut().take(half) {
                    *s = window > 0;
                }
                p.window = window;
                p.force_nodiag = false;
                p
            }
            _ if spec.starts_with("lckv-w") => {
                let w: usize = spec["lckv-w".len()..].parse().map_err(|_| {
                    format!("unknown KV plan preset '{spec}': lckv-wN needs a number of warm-up layers, e.g. lckv-w2")
                })?;
                if w < 2 || !w.is_multiple_of(2) || w >= l {
                    return Err(format!(
                        "preset {spec}: the number of warm-up layers must be even, at least 2 and below the layer count ({l})"
                    ));
                }
                // w/2 warm-up layers at the bottom and w/2 at the top keep their own caches; the
                // rest read the highest non-warm-up layer, which is the one that produces.
                let top = l - w / 2;
                let producer = top - 1;
                let mut p = KvPlan::identity(l);
                for s in p.sources.iter_mut().take(top).skip(w / 2) {
                    *s = producer;
                }
                p.force_nodiag = true;
                p
            }
            _ if spec.contains('_') || spec.chars().all(|c| c.is_ascii_digit()) => {
                let mut p = KvPlan::parse_layer_types(spec, l)?;
                if p.sliding.iter().any(|&s| s) {
                    if window == 0 {
                        return Err(format!(
                            "KV plan '{spec}' marks sliding-window layers but no window size is known; the model must define one"
                        ));
                    }
                    p.window = window;
                }
                p
            }
            _ => {
                return Err(format!(
                    "unknown KV plan '{spec}': use standard, cla2, lckv-w2 (or lckv-wN), sandwich-middle, yoco, or a layer_types string like 0_2_2_3"
                ))
            }
        };
        plan.validate()?;
        Ok(plan)
    }

    pub fn n_layer(&self) -> usize {
        self.sources.len()
    }

    pub fn passes(&self) -> usize {
        self.forward_passes + self.backward_passes
    }

    pub fn is_identity(&self) -> bool {
        self.sources.iter().enumerate().all(|(i, &s)| s == i)
    }

    /// Checks the plan is runnable: indices in range, producers read their own cache, a window
    /// wherever a layer slides.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_sources()?;
        if self.sliding.iter().any(|&s| s) && self.window == 0 {
            return Err("KV plan marks sliding-window layers but the window size is 0".into());
        }
        if self.passes() == 0 {
            return Err("KV plan: forward_passes + backward_passes must be at least 1".into());
        }
        Ok(())
    }

    /// Checks the source indices alone.
    pub fn validate_sources(&self) -> Result<(), String> {
        let l = self.sources.len();
        if l == 0 {
            return Err("KV plan is empty".into());
        }
        if self.sliding.len() != l {
            return Err(format!(
                "KV plan has {l} sources but {} sliding flags",
                self.sliding.len()
            ));
        }
        for (i, &s) in self.sources.iter().enumerate() {
            if s >= l {
                return Err(format!(
                    "KV plan: layer {i} reads layer {s}, but the model has only {l} layers (0..{})",
                    l - 1
                ));
            }
            if self.sources[s] != s {
                return Err(format!(
                    "KV plan: layer {i} reads layer {s}, but layer {s} itself reads layer {}; a layer whose cache is read must read its own",
                    self.sources[s]
                ));
            }
        }
        Ok(())
    }

    /// Whether layer i computes and caches K/V.
    pub fn is_producer(&self, layer: usize) -> bool {
        self.sources[layer] == layer
    }

    /// Producer layers in order.
    pub fn producers(&self) -> Vec<usize> {
        (0..self.n_layer())
            .filter(|&i| self.is_producer(i))
            .collect()
    }

    /// Layer i reads a cache that is computed later in the same token's forward pass.
    pub fn attends_up(&self, layer: usize) -> bool {
        self.sources[layer] > layer
    }

    /// Whether layer i's queries skip the key at their own position.
    pub fn masks_diagonal(&self, layer: usize) -> bool {
        self.force_nodiag || self.attends_up(layer)
    }

    /// The cache positions visible to a query at position `pos` in `layer`: always a contiguous
    /// range, possibly empty (then the attention output is zero).
    pub fn visible(&self, layer: usize, pos: usize) -> Range<usize> {
        let end = if self.masks_diagonal(layer) {
            pos
        } else {
            pos + 1
        };
        // A sliding layer keeps the last `window` of the keys it would otherwise see.
        let start = if self.sliding[layer] {
            end.saturating_sub(self.window)
        } else {
            0
        };
        start..end
    }

    /// Splits the layers into maximal acyclic runs and cyclic groups. A cyclic group is the
    /// union of overlapping intervals [i, src(i)] over the layers that attend up.
    pub fn segments(&self) -> Vec<Segment> {
        let l = self.n_layer();
        let mut out = Vec::new();
        let mut i = 0;
        let mut acyclic_start = 0;
        while i < l {
            if self.attends_up(i) {
                if acyclic_start < i {
                    out.push(Segment::Acyclic(acyclic_start..i));
                }
                let start = i;
                let mut end = self.sources[i];
                let mut j = i;
                while j <= end {
                    if self.attends_up(j) {
                        end = end.max(self.sources[j]);
                    }
                    j += 1;
                }
                out.push(Segment::Cyclic(start..end + 1));
                i = end + 1;
                acyclic_start = i;
            } else {
                i += 1;
            }
        }
        if acyclic_start < l {
            out.push(Segment::Acyclic(acyclic_start..l));
        }
        out
    }

    /// The `layer_types` spelling of the plan.
    pub fn layer_types(&self) -> String {
        self.sources
            .iter()
            .zip(&self.sliding)
            .map(|(s, &sl)| if sl { format!("{s}s") } else { s.to_string() })
            .collect::<Vec<_>>()
            .join("_")
    }
}

impl fmt::Display for KvPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} of {} layers cache K/V{}{})",
            self.layer_types(),
            self.producers().len(),
            self.n_layer(),
            if self.force_nodiag {
                ", diagonal masked"
            } else {
                ""
            },
            if self.sliding.iter().any(|&s| s) {
                format!(", window {}", self.window)
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_published_sandwich_plan() {
        let spec = "0_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_21";
        let p = KvPlan::parse_layer_types(spec, 22).unwrap();
        assert_eq!(p.producers(), vec![0, 20, 21]);
        assert!(p.force_nodiag);
        assert_eq!(p.layer_types(), spec);
        assert_eq!(
            p.segments(),
            vec![
                Segment::Acyclic(0..1),
                Segment::Cyclic(1..21),
                Segment::Acyclic(21..22)
            ]
        );
        assert_eq!(KvPlan::from_spec("lckv-w2", 22, 0).unwrap(), p);
    }

    #[test]
    fn presets_have_expected_sources() {
        assert_eq!(
            KvPlan::from_spec("cla2", 5, 0).unwrap().sources,
            vec![0, 0, 2, 2, 4]
        );
        assert_eq!(
            KvPlan::from_spec("sandwich-middle", 6, 0).unwrap().sources,
            vec![0, 2, 2, 2, 2, 5]
        );
        assert_eq!(
            KvPlan::from_spec("lckv-w10", 22, 0).unwrap().layer_types(),
            "0_1_2_3_4_16_16_16_16_16_16_16_16_16_16_16_16_17_18_19_20_21"
        );
        let y = KvPlan::from_spec("yoco", 6, 16).unwrap();
        assert_eq!(y.sources, vec![0, 1, 2, 3, 3, 3]);
        assert_eq!(y.sliding, vec![true, true, true, false, false, false]);
        assert_eq!(
            KvPlan::from_spec("lckv-w4", 8, 0).unwrap().sources,
            vec![0, 1, 5, 5, 5, 5, 6, 7]
        );
        assert!(KvPlan::from_spec("standard", 4, 0).unwrap().is_identity());
    }

    #[test]
    fn sandwich_middle_splits_into_cycle_and_tail() {
        let p = KvPlan::from_spec("sandwich-middle", 6, 0).unwrap();
        // Layer 1 attends up to 2; layers 3 and 4 read 2 below them.
        assert_eq!(
            p.segments(),
            vec![
                Segment::Acyclic(0..1),
                Segment::Cyclic(1..3),
                Segment::Acyclic(3..6)
            ]
        );
    }

    #[test]
    fn visible_ranges_follow_masks() {
        let p = KvPlan::parse_layer_types("0_2_2s_3", 4).unwrap();
        let mut p = p;
        p.window = 3;
        p.force_nodiag = false;
        assert_eq!(p.visible(0, 5), 0..6);
        assert_eq!(p.visible(1, 5), 0..5); // attends up: no diagonal
        assert_eq!(p.visible(2, 5), 3..6); // sliding window of 3 including itself
        assert_eq!(p.visible(1, 0), 0..0); // nothing visible: zero output
        p.force_nodiag = true;
        assert_eq!(p.visible(0, 5), 0..5);
        assert_eq!(p.visible(2, 5), 2..5); // the window keeps 3 keys before the masked diagonal
    }

    #[test]
    fn bad_plans_are_rejected_with_reasons() {
        let e = KvPlan::parse_layer_types("0_1_2", 4).unwrap_err();
        assert!(e.contains("names 3 layers but the model has 4"), "{e}");
        let e = KvPlan::parse_layer_types("0_9_2_3", 4).unwrap_err();
        assert!(e.contains("only 4 layers"), "{e}");
        let e = KvPlan::parse_layer_types("0_x_2_3", 4).unwrap_err();
        assert!(e.contains("entry 1 is 'x'"), "{e}");
        let e = KvPlan::parse_layer_types("0_2_3_3", 4).unwrap_err();
        assert!(e.contains("must read its own"), "{e}");
        let e = KvPlan::from_spec("0_1s_2_3", 4, 0).unwrap_err();
        assert!(e.contains("no window size"), "{e}");
        let e = KvPlan::from_spec("lckv-w3", 8, 0).unwrap_err();
        assert!(e.contains("even"), "{e}");
        let e = KvPlan::from_spec("banana", 8, 0).unwrap_err();
        assert!(e.contains("unknown KV plan 'banana'"), "{e}");
    }
}
