//! Helpers shared by the integration tests: a seeded generator (no extra crates needed), and
//! `paths()`, the one way a test runs "every kernel path this CPU has".
//!
//! A test over every path passes on a CPU that has none of the SIMD paths without running one
//! SIMD kernel. `LCKV_REQUIRE_PATHS` (comma-separated `KernelPath` names and `KernelFeature`
//! names, e.g. `scalar,avx2,avx512,avx512-vnni`) lists what the machine must run: `paths()`
//! fails, naming what is missing, when one of them is not among the paths it returns.
#![allow(dead_code)]

use lckv_kernels::dispatch::KernelFeature;
use lckv_kernels::{select, KernelPath, Kernels};

pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// Every kernel path this CPU and build run, the scalar twin first.
///
/// # Panics
/// When `LCKV_REQUIRE_PATHS` names a path or feature that is not among them, or a name that is
/// neither.
pub fn paths() -> Vec<Kernels> {
    let ps: Vec<Kernels> = KernelPath::ALL
        .into_iter()
        .filter_map(|p| select(Some(p)).ok())
        .collect();
    assert!(
        ps.first().map(Kernels::path) == Some(KernelPath::Scalar),
        "the scalar path must always exist, first"
    );
    let required = std::env::var("LCKV_REQUIRE_PATHS").unwrap_or_default();
    if let Err(e) = check_required(&ps, &required) {
        panic!("LCKV_REQUIRE_PATHS={required}: {e}");
    }
    eprintln!("testing paths: {}", describe(&ps));
    ps
}

/// Checks that `ps` covers every name in `required` (comma-separated kernel path and kernel
/// feature names; empty items are ignored). The error names each one missing, and what `ps`
/// does cover.
pub fn check_required(ps: &[Kernels], required: &str) -> Result<(), String> {
    let mut missing = Vec::new();
    for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let covered = if let Ok(p) = name.parse::<KernelPath>() {
            ps.iter().any(|k| k.path() == p)
        } else if let Some(f) = KernelFeature::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
        {
            ps.iter().any(|k| k.features().contains(&f))
        } else {
            let known: Vec<&str> = KernelPath::ALL
                .iter()
                .map(|p| p.name())
                .chain(KernelFeature::ALL.iter().map(|f| f.name()))
                .collect();
            return Err(format!(
                "{name:?} is neither a kernel path nor a kernel feature (known: {})",
                known.join(", ")
            ));
        };
        if !covered {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing here: {}; their kernels would go untested (this CPU and build run: {})",
        missing.join(", "),
        describe(ps)
    ))
}

/// The paths of `ps` with their features, e.g. `scalar, avx2, avx512 (+avx512-vnni)`.
fn describe(ps: &[Kernels]) -> String {
    let one = |k: &Kernels| {
        let f: Vec<&str> = k.features().iter().map(|f| f.name()).collect();
        if f.is_empty() {
            k.path().name().to_string()
        } else {
            format!("{} (+{})", k.path().name(), f.join(", +"))
        }
    };
    ps.iter().map(one).collect::<Vec<_>>().join(", ")
}
