//! Token sampling: repetition penalty, top-k, temperature softmax, top-p, min-p and a seeded
//! draw. Every buffer is sized when the sampler is built, so `sample` and `accept` never touch
//! the heap, and the same seed gives the same tokens on every platform (ChaCha8 stream, our own
//! float conversion).
//!
//! Order of the stages follows Hugging Face's warpers (temperature before the truncations); llama.cpp
//! applies temperature after top-p/min-p, so at temperatures other than 1 the kept sets can differ.

use std::cmp::Ordering;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seed used by [`SamplerConfig::default`]: runs are reproducible unless a seed is given.
pub const DEFAULT_SEED: u64 = 42;

#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` selects greedy decoding (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 turns it off.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability mass reaches `top_p`; 1.0 turns it off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the most likely one's; 0 turns it off.
    pub min_p: f32,
    /// Divide positive / multiply negative logits of recently seen tokens; 1.0 turns it off.
    pub repeat_penalty: f32,
    /// How many of the latest accepted tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: DEFAULT_SEED,
        }
    }
}

impl SamplerConfig {
    /// Deterministic argmax decoding with no penalty.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            ..SamplerConfig::default()
        }
    }

    /// Checks every field; the message names the field, the bad value and the accepted range.
    pub fn validate(&self) -> Result<(), String> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(format!(
                "temperature must be a finite number >= 0 (0 means greedy), got {t}"
            ));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(format!("top-p must be in (0, 1] (1 turns it off), got {p}"));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(format!("min-p must be in [0, 1] (0 turns it off), got {m}"));
        }
        let r = self.repeat_penalty;
        if !r.is_finite() || r <= 0.0 {
            return Err(format!(
                "repeat penalty must be a finite number > 0 (1 turns it off), got {r}"
            ));
        }
        Ok(())
    }
}

/// One vocabulary entry under consideration: its (penalised) logit, later its probability.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    value: f32,
    id: u32,
}

/// Larger value first, lower id first among equals: a total order, so ties break the same way
/// everywhere (values are never NaN here, they were mapped to -inf on entry).
fn by_value_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.value
        .partial_cmp(&a.value)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

pub struct Sampler {
    cfg: SamplerConfig,
    n_vocab: usize,
    rng: ChaCha8Rng,
    /// Working set, `n_vocab` long; rebuilt from the logits at every call.
    cand: Vec<Candidate>,
    /// One bit per vocabulary id: penalised already during this call (a token counts once
    /// however often it repeats, as in llama.cpp).
    seen: Vec<u64>,
    /// Ring buffer of the last `repeat_last_n` accepted tokens.
    history: Vec<u32>,
    history_head: usize,
    history_len: usize,
}

impl Sampler {
    /// Builds a sampler for a vocabulary of `n_vocab` tokens. Call [`SamplerConfig::validate`]
    /// first to report bad values; out-of-range values that reach here are clamped to the
    /// nearest meaningful one (NaN turns the stage off) so sampling never panics.
    /// A sampler for a sequence of at most `n_ctx` tokens: its repetition history holds at most
    /// the context (older tokens are gone from the sequence anyway), as the memory plan counts it.
    pub fn for_context(cfg: SamplerConfig, n_vocab: usize, n_ctx: usize) -> Sampler {
        let repeat_last_n = cfg.repeat_last_n.min(n_ctx);
        Sampler::new(
            SamplerConfig {
                repeat_last_n,
                ..cfg
            },
            n_vocab,
        )
    }

    pub fn new(cfg: SamplerConfig, n_vocab: usize) -> Sampler {
        let mut cfg = cfg;
        if cfg.temperature.is_nan() {
            cfg.temperature = 0.0;
        }
        if !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
            cfg.top_p = 1.0;
        }
        if !(0.0..=1.0).contains(&cfg.min_p) {
            cfg.min_p = if cfg.min_p > 1.0 { 1.0 } else { 0.0 };
        }
        if !(cfg.repeat_penalty.is_finite() && cfg.repeat_penalty > 0.0) {
            cfg.repeat_penalty = 1.0;
        }
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Sampler {
            n_vocab,
            rng,
            cand: Vec::with_capacity(n_vocab),
            seen: vec![0; n_vocab.div_ceil(64)],
            history: vec![0; cfg.repeat_last_n],
            history_head: 0,
            history_len: 0,
            cfg,
        }
    }

    /// Bytes of heap this sampler holds for the given sizes (for the memory plan).
    pub fn heap_bytes(n_vocab: usize, repeat_last_n: usize) -> usize {
        n_vocab * std::mem::size_of::<Candidate>()
            + n_vocab.div_ceil(64) * std::mem::size_of::<u64>()
            + repeat_last_n * std::mem::size_of::<u32>()
    }

    /// Picks the next token from `logits` (one per vocabulary id; entries past the vocabulary
    /// size given at construction are ignored). NaN counts as -inf; if nothing is finite or
    /// +inf, the lowest id among the largest values wins, so all -inf gives 0.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let n = self.prepare(logits);
        if n == 0 {
            return 0;
        }
        if self.cfg.temperature <= 0.0 {
            return self.argmax(n);
        }
        let kept = self.truncate_and_normalise(n);
        if kept == 0 {
            return self.argmax(n);
        }
        self.draw(kept)
    }

    /// Records a token the caller emitted, for the repetition penalty.
    pub fn accept(&mut self, token: u32) {
        let cap = self.history.len();
        if cap == 0 {
            return;
        }
        self.history[self.history_head] = token;
        self.history_head = (self.history_head + 1) % cap;
        self.history_len = (self.history_len + 1).min(cap);
    }

    /// Forgets the history and restarts the random stream from the seed, so a reset sampler
    /// repeats the sequence of a fresh one.
    pub fn reset(&mut self) {
        self.history_head = 0;
        self.history_len = 0;
        self.rng = ChaCha8Rng::seed_from_u64(self.cfg.seed);
    }

    /// Copies the logits into the working set (sanitised, penalised, in id order); returns how
    /// many there are.
    fn prepare(&mut self, logits: &[f32]) -> usize {
        let n = logits.len().min(self.n_vocab);
        self.cand.clear();
        self.cand
            .extend(logits[..n].iter().enumerate().map(|(i, &l)| Candidate {
                value: if l.is_nan() { f32::NEG_INFINITY } else { l },
                id: i as u32,
            }));
        self.apply_penalty();
        n
    }

    fn apply_penalty(&mut self) {
        let penalty = self.cfg.repeat_penalty;
        if penalty == 1.0 || self.history_len == 0 {
            return;
        }
        let cap = self.history.len();
        let start = (self.history_head + cap - self.history_len) % cap;
        for j in 0..self.history_len {
            let id = self.history[(start + j) % cap] as usize;
            if id >= self.cand.len() {
                continue;
            }
            let (word, bit) = (id / 64, 1u64 << (id % 64));
            if self.seen[word] & bit != 0 {
                continue;
            }
            self.seen[word] |= bit;
            let v = &mut self.cand[id].value;
            *v = if *v <= 0.0 {
                *v * penalty
            } else {
                *v / penalty
            };
        }
        for j in 0..self.history_len {
            let id = self.history[(start + j) % cap] as usize;
            if id < self.cand.len() {
                self.seen[id / 64] = 0;
            }
        }
    }

    fn argmax(&self, n: usize) -> u32 {
        let mut best = 0;
        for i in 1..n {
            if self.cand[i].value > self.cand[best].value {
                best = i;
            }
        }
        self.cand[best].id
    }

    /// Runs top-k, the temperature softmax, top-p and min-p over `cand[..n]`. Leaves the kept
    /// candidates at the front with their normalised probabilities and returns their count
    /// (0 when no logit is finite, which the caller resolves by argmax).
    fn truncate_and_normalise(&mut self, n: usize) -> usize {
        let mut m = n;
        let k = self.cfg.top_k;
        let mut sorted = false;
        if k > 0 && k < m {
            self.cand.select_nth_unstable_by(k - 1, by_value_desc);
            m = k;
        }
        // The draw walks the candidates in order, so that order must not depend on how
        // `select_nth_unstable` happens to leave them: sort whenever a selection was made.
        if m < n || self.cfg.top_p < 1.0 {
            self.cand[..m].sort_unstable_by(by_value_desc);
            sorted = true;
        }
        let cand = &mut self.cand[..m];

        let max = if sorted {
            cand[0].value
        } else {
            cand.iter().fold(f32::NEG_INFINITY, |a, c| a.max(c.value))
        };
        if max.is_infinite() {
            return 0;
        }
        let inv_t = 1.0 / self.cfg.temperature;
        let mut sum = 0.0f64;
        for c in cand.iter_mut() {
            let p = ((c.value - max) * inv_t).exp();
            c.value = p;
            sum += p as f64;
        }
        let inv_sum = (1.0 / sum) as f32;
        let mut p_max = 0.0f32;
        for c in cand.iter_mut() {
            c.value *= inv_sum;
            p_max = p_max.max(c.value);
        }

        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0f64;
            let mut keep = m;
            for (i, c) in cand.iter().enumerate() {
                cum += c.value as f64;
                if cum >= self.cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            m = keep;
        }

        if self.cfg.min_p > 0.0 {
            let threshold = self.cfg.min_p * p_max;
            let mut w = 0;
            for r in 0..m {
                if self.cand[r].value >= threshold {
                    self.cand[w] = self.cand[r];
                    w += 1;
                }
            }
            m = w;
        }

        let total: f64 = self.cand[..m].iter().map(|c| c.value as f64).sum();
        let inv = (1.0 / total) as f32;
        for c in &mut self.cand[..m] {
            c.value *= inv;
        }
        m
    }

    /// Inverse-CDF draw over the first `m` candidates.
    fn draw(&mut self, m: usize) -> u32 {
        // 53 random bits -> uniform in [0, 1), the same on every platform.
        let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let mut cum = 0.0f64;
        for c in &self.cand[..m] {
            cum += c.value as f64;
            if u < cum {
                return c.id;
            }
        }
        // Rounding left the total a hair below u: the last kept token owns that sliver.
        self.cand[m - 1].id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 7,
        }
    }

    /// Kept set after truncation as (id, probability), sorted by id.
    fn kept(s: &mut Sampler, logits: &[f32]) -> Vec<(u32, f32)> {
        let n = s.prepare(logits);
        let m = s.truncate_and_normalise(n);
        let mut v: Vec<(u32, f32)> = s.cand[..m].iter().map(|c| (c.id, c.value)).collect();
        v.sort_by_key(|x| x.0);
        v
    }

    fn ln(ps: &[f32]) -> Vec<f32> {
        ps.iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplerConfig::greedy(), 6);
        assert_eq!(s.sample(&[0.1, 2.0, -3.0, 5.5, 1.0, 0.0]), 3);
        assert_eq!(s.sample(&[1.0, 4.0, 4.0, -1.0, 4.0, 0.0]), 1);
        assert_eq!(s.sample(&[-7.0; 6]), 0);
    }

    #[test]
    fn nan_and_inf_never_panic() {
        let nan = f32::NAN;
        let ninf = f32::NEG_INFINITY;
        for c in [
            SamplerConfig::greedy(),
            SamplerConfig::default(),
            cfg(1.0, 0, 1.0, 0.0),
        ] {
            let mut s = Sampler::new(c, 4);
            assert_eq!(s.sample(&[nan, nan, nan, nan]), 0);
            assert_eq!(s.sample(&[ninf, ninf, ninf, ninf]), 0);
            assert_eq!(s.sample(&[nan, ninf, 1.0, nan]), 2);
            assert_eq!(s.sample(&[0.0, f32::INFINITY, 3.0, f32::INFINITY]), 1);
            // Shorter logits than the vocabulary, and none at all.
            assert_eq!(s.sample(&[ninf, 3.0]), 1);
            assert_eq!(s.sample(&[]), 0);
        }
    }

    #[test]
    fn same_seed_same_sequence_and_reset_replays() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 17) as f32 * 0.3).collect();
        let run = |s: &mut Sampler| -> Vec<u32> {
            (0..200)
                .map(|_| {
                    let t = s.sample(&logits);
                    s.accept(t);
                    t
                })
                .collect()
        };
        let c = SamplerConfig {
            repeat_penalty: 1.3,
            ..SamplerConfig::default()
        };
        let mut a = Sampler::new(c.clone(), 100);
        let mut b = Sampler::new(c.clone(), 100);
        let sa = run(&mut a);
        assert_eq!(sa, run(&mut b));
        a.reset();
        assert_eq!(sa, run(&mut a));
        let mut other = Sampler::new(SamplerConfig { seed: 8, ..c }, 100);
        assert_ne!(
            sa,
            run(&mut other),
            "a different seed should give a different sequence"
        );
        let distinct = {
            let mut v = sa.clone();
            v.sort();
            v.dedup();
            v.len()
        };
        assert!(
            distinct > 3,
            "sampling should not collapse to one token: {distinct} distinct"
        );
    }

    /// Pearson chi-square of 20000 draws against softmax(logits / T) computed here in f64.
    /// 5 categories, 4 degrees of freedom: the 0.999 quantile is 18.47.
    fn chi_square(temperature: f32, seed: u64) -> f64 {
        let logits = [1.0f32, 2.0, 0.5, 3.0, -1.0];
        let w: Vec<f64> = logits
            .iter()
            .map(|&l| (l as f64 / temperature as f64).exp())
            .collect();
        let z: f64 = w.iter().sum();
        let mut s = Sampler::new(
            SamplerConfig {
                seed,
                ..cfg(temperature, 0, 1.0, 0.0)
            },
            5,
        );
        let n = 20000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[s.sample(&logits) as usize] += 1;
        }
        counts
            .iter()
            .zip(&w)
            .map(|(&c, &wi)| {
                let e = n as f64 * wi / z;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    #[test]
    fn draws_follow_the_softmax() {
        for (t, seed) in [(1.0, 1), (0.5, 2), (2.0, 3)] {
            let x2 = chi_square(t, seed);
            assert!(
                x2 < 18.47,
                "temperature {t}: chi-square {x2} above the 0.999 quantile"
            );
        }
    }

    #[test]
    fn top_k_one_equals_greedy() {
        let logits: Vec<f32> = (0..50)
            .map(|i| ((i * 13) % 11) as f32 - (i as f32) * 0.01)
            .collect();
        let mut g = Sampler::new(SamplerConfig::greedy(), 50);
        let mut k1 = Sampler::new(cfg(1.5, 1, 1.0, 0.0), 50);
        let expected = g.sample(&logits);
        for _ in 0..100 {
            assert_eq!(k1.sample(&logits), expected);
        }
    }

    #[test]
    fn top_k_keeps_the_k_largest() {
        let mut s = Sampler::new(cfg(1.0, 2, 1.0, 0.0), 5);
        let got = kept(&mut s, &[0.0, 3.0, 1.0, 2.0, 2.0]);
        let ids: Vec<u32> = got.iter().map(|x| x.0).collect();
        // 3.0 at id 1, then a tie at 2.0 between ids 3 and 4: the lower id stays.
        assert_eq!(ids, vec![1, 3]);
        // e^1 / (e^1 + 1) renormalised over the two.
        let p1 = 1.0f64.exp() / (1.0f64.exp() + 1.0);
        assert!((got[0].1 as f64 - p1).abs() < 1e-6);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (ids shuffled).
        let logits = ln(&[0.15, 0.5, 0.05, 0.3]);
        let mut s = Sampler::new(cfg(1.0, 0, 0.7, 0.0), 4);
        // 0.5 < 0.7 <= 0.8: ids 1 and 3, renormalised to 0.625 / 0.375.
        let got = kept(&mut s, &logits);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, got[1].0), (1, 3));
        assert!((got[0].1 - 0.625).abs() < 1e-6 && (got[1].1 - 0.375).abs() < 1e-6);

        let mut s = Sampler::new(cfg(1.0, 0, 0.9, 0.0), 4);
        let ids: Vec<u32> = kept(&mut s, &logits).iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![0, 1, 3]);

        let mut s = Sampler::new(cfg(1.0, 0, 0.4, 0.0), 4);
        let ids: Vec<u32> = kept(&mut s, &logits).iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![1]);
        for _ in 0..50 {
            assert_eq!(s.sample(&logits), 1);
        }
    }

    #[test]
    fn min_p_drops_tokens_below_the_scaled_maximum() {
        let logits = ln(&[0.15, 0.5, 0.05, 0.3]);
        // Threshold 0.2 * 0.5 = 0.1: only the 0.05 token goes.
        let mut s = Sampler::new(cfg(1.0, 0, 1.0, 0.2), 4);
        let got = kept(&mut s, &logits);
        let ids: Vec<u32> = got.iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![0, 1, 3]);
        assert!((got[1].1 - 0.5 / 0.95).abs() < 1e-6);
        // Threshold 0.35 * 0.5 = 0.175: 0.15 goes too.
        let mut s = Sampler::new(cfg(1.0, 0, 1.0, 0.35), 4);
        let ids: Vec<u32> = kept(&mut s, &logits).iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![1, 3]);
        // Temperature comes first: at T = 2 the probabilities go as sqrt(p), so relative to the
        // maximum they are 0.548, 1, 0.316, 0.775 and the same 0.35 keeps ids 0, 1 and 3.
        let mut s = Sampler::new(cfg(2.0, 0, 1.0, 0.35), 4);
        let ids: Vec<u32> = kept(&mut s, &logits).iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![0, 1, 3]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let c = SamplerConfig {
            repeat_penalty: 2.5,
            repeat_last_n: 3,
            ..SamplerConfig::greedy()
        };
        let mut s = Sampler::new(c, 4);
        let logits = [2.0, -1.0, 0.5, 1.0];
        assert_eq!(s.sample(&logits), 0);
        for t in [0, 1, 0] {
            s.accept(t);
        }
        s.prepare(&logits);
        let v: Vec<f32> = s.cand.iter().map(|c| c.value).collect();
        // Token 0 appears twice but is penalised once: 2 / 2.5; token 1: -1 * 2.5.
        assert_eq!(v, vec![0.8, -2.5, 0.5, 1.0]);
        assert_eq!(s.sample(&logits), 3);
        // The window holds 3 tokens: after 2, 2, 2 neither 0 nor 1 is penalised any more.
        for t in [2, 2, 2] {
            s.accept(t);
        }
        s.prepare(&logits);
        let v: Vec<f32> = s.cand.iter().map(|c| c.value).collect();
        assert_eq!(v, vec![2.0, -1.0, 0.2, 1.0]);
        s.reset();
        s.prepare(&logits);
        assert_eq!(
            s.cand.iter().map(|c| c.value).collect::<Vec<_>>(),
            logits.to_vec()
        );
    }

    #[test]
    fn buffers_match_heap_bytes_and_do_not_grow() {
        let (n_vocab, last_n) = (1000, 64);
        let mut s = Sampler::new(SamplerConfig::default(), n_vocab);
        let used = |s: &Sampler| {
            s.cand.capacity() * std::mem::size_of::<Candidate>()
                + s.seen.capacity() * 8
                + s.history.capacity() * 4
        };
        assert_eq!(used(&s), Sampler::heap_bytes(n_vocab, last_n));
        let ptr = s.cand.as_ptr();
        let logits: Vec<f32> = (0..n_vocab).map(|i| (i % 7) as f32).collect();
        for _ in 0..100 {
            let t = s.sample(&logits);
            s.accept(t);
        }
        assert_eq!(used(&s), Sampler::heap_bytes(n_vocab, last_n));
        assert_eq!(ptr, s.cand.as_ptr(), "the candidate buffer was reallocated");
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert!(SamplerConfig::default().validate().is_ok());
        assert!(SamplerConfig::greedy().validate().is_ok());
        let bad = [
            (
                SamplerConfig {
                    temperature: -0.1,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top-p",
            ),
            (
                SamplerConfig {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top-p",
            ),
            (
                SamplerConfig {
                    min_p: -0.5,
                    ..Default::default()
                },
                "min-p",
            ),
            (
                SamplerConfig {
                    min_p: 2.0,
                    ..Default::default()
                },
                "min-p",
            ),
            (
                SamplerConfig {
                    repeat_penalty: 0.0,
                    ..Default::default()
                },
                "repeat penalty",
            ),
            (
                SamplerConfig {
                    repeat_penalty: f32::INFINITY,
                    ..Default::default()
                },
                "repeat penalty",
            ),
        ];
        for (c, field) in bad {
            let e = c.validate().expect_err(field);
            assert!(e.starts_with(field), "message {e:?} should name {field}");
        }
    }

    #[test]
    fn default_matches_llama_cpp() {
        let d = SamplerConfig::default();
        assert_eq!(
            (
                d.temperature,
                d.top_k,
                d.top_p,
                d.min_p,
                d.repeat_penalty,
                d.repeat_last_n
            ),
            (0.8, 40, 0.95, 0.05, 1.0, 64)
        );
    }
}
