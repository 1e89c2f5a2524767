//! The memory plan: from (model, KV plan, context, batch, KV type) to the bytes each part of a
//! session needs, before anything is allocated. The same function sizes the arena, so what is
//! planned is what is taken. Also parses budgets (`1.5G`) and finds the longest context that fits.

use std::fmt;

use crate::model::forward::{Forward, ForwardDims};
use crate::model::Model;
use crate::{Error, Result};

/// Threads' stacks, the binary, the allocator's own overhead and the rest of a running process
/// that no buffer accounts for: the peak RSS (VmHWM) of `lckv run` on SmolLM2 exceeded the
/// other parts by 21 MiB at every budget tried on x86-64; tests/memory_budget.rs checks it.
pub const PROCESS_OVERHEAD: usize = 22 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Tensor data of the file the forward pass reads (mapped pages become resident).
    pub weights: usize,
    /// The condensed KV cache.
    pub kv_cache: usize,
    /// Scratch buffers of the forward pass (activations, attention scores).
    pub scratch: usize,
    /// Logit rows.
    pub logits: usize,
    /// Vocabulary, merges and metadata held by the tokenizer and the GGUF reader.
    pub tokenizer: usize,
    pub overhead: usize,
    pub n_ctx: usize,
    pub kv_bytes_per_token: usize,
}

impl MemoryPlan {
    pub fn new(model: &Model, dims: &ForwardDims) -> Result<MemoryPlan> {
        let cfg = &model.cfg;
        let (arena, attn) = Forward::arena_bytes(cfg, model.weights.max_cols(), dims)?;
        let kv_per_token = crate::memory::kv_cache::bytes_per_token(cfg, dims.kv_type)?;
        let kv_cache = kv_per_token * dims.n_ctx;
        let logits = dims.logit_rows * cfg.n_vocab * 4;
        Ok(MemoryPlan {
            weights: model.weights.mapped_bytes(),
            kv_cache,
            scratch: arena.saturating_sub(kv_cache + logits) + attn,
            logits,
            tokenizer: tokenizer_bytes(model),
            overhead: PROCESS_OVERHEAD,
            n_ctx: dims.n_ctx,
            kv_bytes_per_token: kv_per_token,
        })
    }

    pub fn total(&self) -> usize {
        self.weights + self.kv_cache + self.scratch + self.logits + self.tokenizer + self.overhead
    }

    /// Refuses a budget that cannot hold the plan, listing each part and the shortfall.
    pub fn check(&self, budget: usize) -> Result<()> {
        if self.total() <= budget {
            return Ok(());
        }
        Err(Error::Budget(format!(
            "{} is needed but the budget is {}: short by {}.\n{self}\nLower the context (-c), use --kv-type q8_0, a condensed --kv-plan, or a smaller model.",
            human(self.total()),
            human(budget),
            human(self.total() - budget)
        )))
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  weights (mapped)   {:>10}", human(self.weights))?;
        writeln!(
            f,
            "  KV cache           {:>10}  ({} tokens x {} B/token)",
            human(self.kv_cache),
            self.n_ctx,
            self.kv_bytes_per_token
        )?;
        writeln!(f, "  scratch            {:>10}", human(self.scratch))?;
        writeln!(f, "  logits             {:>10}", human(self.logits))?;
        writeln!(f, "  tokenizer+metadata {:>10}", human(self.tokenizer))?;
        writeln!(f, "  runtime overhead   {:>10}", human(self.overhead))?;
        write!(f, "  total              {:>10}", human(self.total()))
    }
}

/// Vocabulary strings, merges and the tokenizer's maps: about 40 bytes of bookkeeping per token
/// and merge on top of their text, held twice (GGUF metadata and the tokenizer).
fn tokenizer_bytes(model: &Model) -> usize {
    let text: usize = model
        .file
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(_, v)| match v.as_array() {
            Some(a) => a
                .iter()
                .map(|x| x.as_str().map_or(8, |s| s.len() + 40))
                .sum(),
            None => v.as_str().map_or(8, str::len),
        })
        .sum();
    3 * text
}

/// The longest context (a multiple of 256, at most `max_ctx`) whose plan fits the budget.
pub fn longest_context(
    model: &Model,
    dims: &ForwardDims,
    budget: usize,
    max_ctx: usize,
) -> Result<usize> {
    let fits = |n_ctx: usize| -> Result<bool> {
        let d = ForwardDims {
            n_ctx,
            n_batch: dims.n_batch.min(n_ctx),
            ..*dims
        };
        Ok(MemoryPlan::new(model, &d)?.total() <= budget)
    };
    let step = 256;
    if !fits(step.min(max_ctx))? {
        let d = ForwardDims {
            n_ctx: step.min(max_ctx),
            n_batch: dims.n_batch.min(step),
            ..*dims
        };
        MemoryPlan::new(model, &d)?.check(budget)?;
    }
    let (mut lo, mut hi) = (1usize, max_ctx.div_ceil(step));
    // Invariant: lo*step fits; find the largest.
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits((mid * step).min(max_ctx))? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok((lo * step).min(max_ctx))
}

/// Parses sizes like `512M`, `1.5G`, `2GiB`, `800000000`.
pub fn parse_size(s: &str) -> Result<usize> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = [
        ("gib", 1usize << 30),
        ("mib", 1 << 20),
        ("kib", 1 << 10),
        ("gb", 1 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| lower.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((lower.clone(), 1));
    let v: f64 = num.parse().map_err(|_| {
        Error::Usage(format!(
            "cannot read '{s}' as a size; write e.g. 512M, 1.5G or 2GiB"
        ))
    })?;
    if !v.is_finite() || v <= 0.0 || v * mult as f64 > 1e18 {
        return Err(Error::Usage(format!(
            "size '{s}' is not a positive amount of memory"
        )));
    }
    Ok((v * mult as f64) as usize)
}

/// Bytes in MiB/GiB for people.
pub fn human(b: usize) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        for bad in ["", "abc", "-1G", "0", "1.5X", "nanG", "1e30G"] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.contains(bad) || e.contains("size"), "{bad}: {e}");
        }
    }
}
