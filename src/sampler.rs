//! Sampling: see sampler brief.
