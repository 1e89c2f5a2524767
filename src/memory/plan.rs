//! The memory plan: every byte a process running `sessions` sessions of one model holds, part by
//! part, before anything is allocated. The session's share comes from the same reservation that
//! sizes its arena (`SessionRegions::reserve`), so what is planned is what is taken; the parts
//! outside the arena (mapped weights, tokenizer, sampler) are given by their owners. Also parses
//! budgets (`1.5G`) and finds the longest context that fits one.

use std::fmt;

use crate::memory::arena::ArenaLayout;
use crate::memory::dims::{ModelDims, SessionDims};
use crate::memory::kv_cache::{bytes_per_token, KvCache, KvRegions};
use crate::memory::scratch::{BufferSize, Part, ScratchRegions};
use crate::{Error, Result};

/// Threads' stacks, the binary, the allocator's own overhead and the rest of a running process
/// that no buffer accounts for: the peak RSS (VmHWM) of `lckv run` on SmolLM2 exceeded the
/// other parts by 21 MiB at every budget tried on x86-64; tests/memory_budget.rs checks it.
pub const PROCESS_OVERHEAD: usize = 22 << 20;

/// Everything one session's arena holds: the condensed KV cache and the scratch buffers.
pub struct SessionRegions {
    pub kv: KvRegions,
    pub scratch: ScratchRegions,
}

impl SessionRegions {
    /// The one reservation of a session's buffers, used to plan them and to carve them.
    pub fn reserve(m: &ModelDims, d: &SessionDims, layout: &mut ArenaLayout) -> Result<Self> {
        if d.n_batch == 0 || d.n_ctx == 0 || d.logit_rows == 0 || d.n_batch > d.n_ctx {
            return Err(Error::Usage(format!(
                "context ({}), batch size ({}) and logit rows ({}) must be at least 1, and the batch no larger than the context",
                d.n_ctx, d.n_batch, d.logit_rows
            )));
        }
        Ok(SessionRegions {
            kv: KvCache::reserve(m, d, layout)?,
            scratch: ScratchRegions::reserve(m, d, layout)?,
        })
    }
}

/// Bytes that live outside the arenas, measured or computed by their owners.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resident {
    /// Tensor data of the file the forward pass reads (mapped pages become resident).
    pub weights: usize,
    /// Vocabulary, merges and metadata held by the tokenizer and the GGUF reader.
    pub tokenizer: usize,
    /// One session's sampler (candidates, penalty bits, repetition history).
    pub sampler: usize,
}

/// One session's bytes, part by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionBytes {
    /// The condensed KV cache (producer layers only).
    pub kv_cache: usize,
    /// Activations of the batch in flight.
    pub activations: usize,
    /// Logit rows and the last position's logits.
    pub logits: usize,
    /// Attention working memory of every query head, over the context.
    pub attention: usize,
    /// The sampler, outside the arena.
    pub sampler: usize,
}

impl SessionBytes {
    /// Bytes of the session's arena (everything but the sampler).
    pub fn arena(&self) -> usize {
        self.kv_cache + self.activations + self.logits + self.attention
    }

    pub fn total(&self) -> usize {
        self.arena() + self.sampler
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub weights: usize,
    pub tokenizer: usize,
    pub overhead: usize,
    /// Sessions the process holds, each with its own arena and sampler.
    pub sessions: usize,
    pub per_session: SessionBytes,
    /// The scratch buffers of one session, as reserved (for `lckv inspect`).
    pub buffers: Vec<BufferSize>,
    pub dims: SessionDims,
    pub kv_bytes_per_token: usize,
}

impl MemoryPlan {
    pub fn new(
        m: &ModelDims,
        d: &SessionDims,
        sessions: usize,
        resident: Resident,
    ) -> Result<MemoryPlan> {
        if sessions == 0 {
            return Err(Error::Usage("a plan needs at least one session".into()));
        }
        let mut layout = ArenaLayout::new();
        let regions = SessionRegions::reserve(m, d, &mut layout)?;
        let buffers = regions.scratch.sizes();
        let part = |p: Part| -> usize {
            buffers
                .iter()
                .filter(|b| b.part == p)
                .map(|b| b.bytes)
                .sum()
        };
        let per_session = SessionBytes {
            kv_cache: regions.kv.bytes(),
            activations: part(Part::Activations),
            logits: part(Part::Logits),
            attention: part(Part::Attention),
            sampler: resident.sampler,
        };
        debug_assert_eq!(per_session.arena(), layout.size());
        let plan = MemoryPlan {
            weights: resident.weights,
            tokenizer: resident.tokenizer,
            overhead: PROCESS_OVERHEAD,
            sessions,
            per_session,
            buffers,
            dims: *d,
            kv_bytes_per_token: bytes_per_token(&m.kv_layout(d.kv_type)?, m.n_producers()),
        };
        plan.checked_total().ok_or_else(|| {
            Error::Budget(format!(
                "{sessions} sessions of {} tokens overflow the address space",
                d.n_ctx
            ))
        })?;
        Ok(plan)
    }

    fn checked_total(&self) -> Option<usize> {
        self.per_session
            .total()
            .checked_mul(self.sessions)?
            .checked_add(self.weights + self.tokenizer + self.overhead)
    }

    pub fn total(&self) -> usize {
        self.checked_total().unwrap_or(usize::MAX)
    }

    /// Refuses a budget that cannot hold the plan, listing each part and the shortfall.
    pub fn check(&self, budget: usize) -> Result<()> {
        if self.total() <= budget {
            return Ok(());
        }
        Err(Error::Budget(format!(
            "{} is needed but the budget is {}: short by {}.\n{self}\nLower the context (-c), use --kv-type q8_0, a condensed --kv-plan, fewer sessions, or a smaller model.",
            human(self.total()),
            human(budget),
            human(self.total() - budget)
        )))
    }

    /// One line per scratch buffer, for readers who check the plan by hand.
    pub fn buffer_lines(&self) -> String {
        self.buffers
            .iter()
            .filter(|b| b.bytes > 0)
            .map(|b| format!("    {:<12} {:>10}  ({:?})", b.name, human(b.bytes), b.part))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.per_session;
        writeln!(f, "  weights (mapped)   {:>10}", human(self.weights))?;
        let indent = if self.sessions > 1 {
            writeln!(
                f,
                "  per session, x {}   {:>10}",
                self.sessions,
                human(s.total())
            )?;
            "  "
        } else {
            ""
        };
        writeln!(
            f,
            "  {indent}KV cache         {:>10}  ({} tokens x {} B/token)",
            human(s.kv_cache),
            self.dims.n_ctx,
            self.kv_bytes_per_token
        )?;
        writeln!(
            f,
            "  {indent}activations      {:>10}  (batch of {})",
            human(s.activations),
            self.dims.n_batch
        )?;
        writeln!(f, "  {indent}logits           {:>10}", human(s.logits))?;
        writeln!(f, "  {indent}attention        {:>10}", human(s.attention))?;
        writeln!(f, "  {indent}sampler          {:>10}", human(s.sampler))?;
        writeln!(f, "  tokenizer+metadata {:>10}", human(self.tokenizer))?;
        writeln!(f, "  runtime overhead   {:>10}", human(self.overhead))?;
        write!(f, "  total              {:>10}", human(self.total()))
    }
}

/// The longest context (a multiple of 256, at most `max_ctx`) whose plan, as `plan_for` makes
/// it, fits the budget; when not even the shortest fits, the error lists what that one needs.
pub fn longest_context(
    budget: usize,
    max_ctx: usize,
    plan_for: impl Fn(usize) -> Result<MemoryPlan>,
) -> Result<usize> {
    let step = 256;
    let fits = |n_ctx: usize| -> Result<bool> { Ok(plan_for(n_ctx)?.total() <= budget) };
    let shortest = step.min(max_ctx);
    if !fits(shortest)? {
        plan_for(shortest)?.check(budget)?;
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
