//! The memory plan: every byte a process serving `sessions` sessions of one model holds, part by
//! part, before anything is allocated. The arena's share comes from the same reservation that
//! carves the arena (`ArenaRegions::reserve`), so what is planned is what is taken: the scratch
//! of the batch in flight once, and each session's condensed KV cache and last logits. The parts
//! outside the arena (mapped weights, tokenizer, samplers) are given by their owners. Also parses
//! budgets (`1.5G`) and finds the longest context that fits one.

use std::fmt;

use crate::memory::arena::{ArenaLayout, Region};
use crate::memory::dims::{ModelDims, SessionDims};
use crate::memory::kv_cache::{bytes_per_token, KvCache, KvRegions};
use crate::memory::scratch::{BufferSize, Part, ScratchRegions};
use crate::{Error, Result};

/// Threads' stacks, the binary, the allocator's own overhead and the rest of a running process
/// that no buffer accounts for: the peak RSS (VmHWM) of `lckv run` on SmolLM2 exceeded the
/// other parts by 21 MiB at every budget tried on x86-64; tests/memory_budget.rs checks it.
pub const PROCESS_OVERHEAD: usize = 22 << 20;

/// What one session owns in the arena: its condensed KV cache and the logits of its last
/// position, which its sampler reads.
pub struct SessionRegions {
    pub kv: KvRegions,
    pub last: Region<f32>,
}

impl SessionRegions {
    /// Bytes the session takes in the arena.
    pub fn arena_bytes(&self) -> usize {
        self.kv.bytes() + self.last.arena_bytes()
    }
}

/// Everything one arena holds: the shared scratch and every session's own regions.
pub struct ArenaRegions {
    pub scratch: ScratchRegions,
    pub sessions: Vec<SessionRegions>,
}

impl ArenaRegions {
    /// The one reservation of an arena for `sessions` sessions, used to plan it and to carve it.
    pub fn reserve(
        m: &ModelDims,
        d: &SessionDims,
        sessions: usize,
        layout: &mut ArenaLayout,
    ) -> Result<Self> {
        if d.n_batch == 0 || d.n_ctx == 0 || d.logit_rows == 0 || d.n_batch > d.n_ctx {
            return Err(Error::Usage(format!(
                "context ({}), batch size ({}) and logit rows ({}) must be at least 1, and the batch no larger than the context",
                d.n_ctx, d.n_batch, d.logit_rows
            )));
        }
        if sessions == 0 {
            return Err(Error::Usage("a plan needs at least one session".into()));
        }
        let scratch = ScratchRegions::reserve(m, d, layout)?;
        let sessions = (0..sessions)
            .map(|_| {
                Ok(SessionRegions {
                    kv: KvCache::reserve(m, d, layout)?,
                    last: layout.reserve(m.n_vocab)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ArenaRegions { scratch, sessions })
    }
}

/// Bytes that live outside the arena, measured or computed by their owners.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resident {
    /// Tensor data of the file the forward pass reads (mapped pages become resident).
    pub weights: usize,
    /// Vocabulary, merges and metadata held by the tokenizer and the GGUF reader.
    pub tokenizer: usize,
    /// One session's sampler (candidates, penalty bits, repetition history).
    pub sampler: usize,
}

/// The scratch of the batch in flight, shared by all sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScratchBytes {
    /// Activations of the batch.
    pub activations: usize,
    /// Logit rows of the batch.
    pub logits: usize,
    /// Attention working memory of every query head, over the context.
    pub attention: usize,
}

impl ScratchBytes {
    pub fn total(&self) -> usize {
        self.activations + self.logits + self.attention
    }
}

/// One session's own bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionBytes {
    /// The condensed KV cache (producer layers only).
    pub kv_cache: usize,
    /// The logits of its last position.
    pub last_logits: usize,
    /// Its sampler, outside the arena.
    pub sampler: usize,
}

impl SessionBytes {
    pub fn total(&self) -> usize {
        self.kv_cache + self.last_logits + self.sampler
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub weights: usize,
    pub tokenizer: usize,
    pub overhead: usize,
    pub scratch: ScratchBytes,
    /// Sessions the process holds, each with its own KV cache, logits and sampler.
    pub sessions: usize,
    pub per_session: SessionBytes,
    /// The scratch buffers, as reserved (for `lckv inspect`).
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
        // Sessions are alike: the plan reserves one and counts it `sessions` times (reserving
        // each would take as long as the count is large); the arena itself reserves them all.
        let mut layout = ArenaLayout::new();
        let regions = ArenaRegions::reserve(m, d, 1, &mut layout)?;
        let buffers = regions.scratch.sizes();
        let part = |p: Part| -> usize {
            buffers
                .iter()
                .filter(|b| b.part == p)
                .map(|b| b.bytes)
                .sum()
        };
        let first = &regions.sessions[0];
        let plan = MemoryPlan {
            weights: resident.weights,
            tokenizer: resident.tokenizer,
            overhead: PROCESS_OVERHEAD,
            scratch: ScratchBytes {
                activations: part(Part::Activations),
                logits: part(Part::Logits),
                attention: part(Part::Attention),
            },
            sessions,
            per_session: SessionBytes {
                kv_cache: first.kv.bytes(),
                last_logits: first.last.arena_bytes(),
                sampler: resident.sampler,
            },
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

    /// Bytes of the arena: the scratch and every session but its sampler.
    pub fn arena(&self) -> usize {
        self.scratch.total()
            + self.sessions * (self.per_session.kv_cache + self.per_session.last_logits)
    }

    fn checked_total(&self) -> Option<usize> {
        self.per_session
            .total()
            .checked_mul(self.sessions)?
            .checked_add(self.scratch.total())?
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

    /// The arena buffer by buffer, in bytes, for readers who check the plan by hand: each
    /// session's KV cache and last logits, then the shared scratch.
    pub fn buffer_lines(&self) -> String {
        let s = &self.per_session;
        let mut lines = vec![
            format!(
                "    {:<12} {:>12} B  each session: {} tokens x {} B/token",
                "kv_cache", s.kv_cache, self.dims.n_ctx, self.kv_bytes_per_token
            ),
            format!(
                "    {:<12} {:>12} B  each session: the vocabulary's logits, f32",
                "last_logits", s.last_logits
            ),
        ];
        lines.extend(self.buffers.iter().filter(|b| b.bytes > 0).map(|b| {
            format!(
                "    {:<12} {:>12} B  shared {:?}: {} x {} B",
                b.name, b.bytes, b.part, b.elements, b.elem_bytes
            )
        }));
        lines.join("\n")
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, s) = (&self.scratch, &self.per_session);
        let mut line = |label: &str, bytes: usize, note: String| -> fmt::Result {
            writeln!(f, "  {label:<22}{:>10}{note}", human(bytes))
        };
        line("weights (mapped)", self.weights, String::new())?;
        line(
            "scratch (shared)",
            c.total(),
            format!(
                "  (batch of {}: activations {}, logits {}, attention {})",
                self.dims.n_batch,
                human(c.activations),
                human(c.logits),
                human(c.attention)
            ),
        )?;
        let each = if self.sessions > 1 {
            line(
                &format!("{} sessions", self.sessions),
                s.total() * self.sessions,
                String::new(),
            )?;
            "  each: "
        } else {
            ""
        };
        let kv_note = format!(
            "  ({} tokens x {} B/token)",
            self.dims.n_ctx, self.kv_bytes_per_token
        );
        line(&format!("{each}KV cache"), s.kv_cache, kv_note)?;
        line(&format!("{each}last logits"), s.last_logits, String::new())?;
        line(&format!("{each}sampler"), s.sampler, String::new())?;
        line("tokenizer+metadata", self.tokenizer, String::new())?;
        line("runtime overhead", self.overhead, String::new())?;
        write!(f, "  {:<22}{:>10}", "total", human(self.total()))
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
    use lckv_kernels::GgmlType;

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

    /// A model small enough to check the plan by hand: 2 layers, one producing K/V.
    fn dims() -> (ModelDims, SessionDims) {
        let m = ModelDims {
            n_embd: 64,
            n_head: 4,
            head_dim: 16,
            q_dim: 64,
            kv_dim: 32,
            n_ff: 128,
            qkv_rows: 0,
            up_rows: 128,
            n_vocab: 100,
            n_rot: 16,
            max_cols: 128,
            condensed: true,
            producers: vec![false, true],
            n_kv_head: 2,
        };
        let d = SessionDims {
            n_ctx: 32,
            n_batch: 8,
            logit_rows: 1,
            kv_type: GgmlType::F16,
            early_exit: false,
        };
        (m, d)
    }

    #[test]
    fn the_plan_is_the_arena_and_counts_every_session() {
        let (m, d) = dims();
        let resident = Resident {
            weights: 1000,
            tokenizer: 100,
            sampler: 10,
        };
        let one = MemoryPlan::new(&m, &d, 1, resident).unwrap();
        let mut layout = ArenaLayout::new();
        ArenaRegions::reserve(&m, &d, 1, &mut layout).unwrap();
        assert_eq!(one.arena(), layout.size());
        // By hand: one producer layer, 2 kv heads x 16 f16 = 64 B per position for K and V.
        assert_eq!(one.kv_bytes_per_token, 128);
        assert_eq!(one.per_session.kv_cache, 32 * 128);
        // logits: 100 f32 for the batch's one logit row and for the session's last row, each
        // padded to 448 bytes.
        assert_eq!(one.scratch.logits, 448);
        assert_eq!(one.per_session.last_logits, 448);
        let listed: usize = one.buffers.iter().map(|b| b.bytes).sum();
        assert_eq!(listed + one.per_session.kv_cache + 448, layout.size());
        let four = MemoryPlan::new(&m, &d, 4, resident).unwrap();
        assert_eq!(
            four.total() - one.total(),
            3 * one.per_session.total(),
            "each extra session adds its KV cache, logits and sampler; the scratch is shared"
        );
        let mut layout4 = ArenaLayout::new();
        ArenaRegions::reserve(&m, &d, 4, &mut layout4).unwrap();
        assert_eq!(four.arena(), layout4.size());
        assert_eq!(
            one.total(),
            1000 + 100 + PROCESS_OVERHEAD + layout.size() + 10
        );
    }

    #[test]
    fn impossible_shapes_are_errors() {
        let (m, d) = dims();
        let r = Resident::default();
        assert!(MemoryPlan::new(&m, &d, 0, r).is_err());
        let wide = SessionDims { n_batch: 64, ..d };
        assert!(MemoryPlan::new(&m, &wide, 1, r).is_err());
        let huge = SessionDims {
            n_ctx: usize::MAX / 4,
            ..d
        };
        assert!(MemoryPlan::new(&m, &huge, 1, r).is_err());
        assert!(MemoryPlan::new(&m, &d, usize::MAX / 2, r).is_err());
    }
}
