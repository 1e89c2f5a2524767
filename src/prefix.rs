//! Prompt-prefix reuse: when a new prompt begins with tokens the session's cache already holds
//! (a restored prompt cache, the earlier turns of a chat), those positions are kept and only the
//! rest of the prompt is run. Every front end that feeds one session several prompts goes
//! through here, so they all keep the same rule.

use crate::session::Session;
use crate::Result;

/// How many leading tokens of `prompt` can be kept from a cache holding `in_cache`: the longest
/// shared prefix, but never the whole prompt, because the last prompt token must be run to get
/// the logits the next token is sampled from.
pub fn shared_prefix(in_cache: &[u32], prompt: &[u32]) -> usize {
    in_cache
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt.len().saturating_sub(1))
}

/// Keeps the prefix of `prompt` that `session` already holds and rewinds the session to its
/// end; returns its length, so the caller runs `prompt[kept..]` next. `in_cache` are the tokens
/// at the session's first positions; only the first `session.n_past()` of them count, since
/// later ones are no longer in the cache.
pub fn reuse_prefix(session: &mut Session, in_cache: &[u32], prompt: &[u32]) -> Result<usize> {
    let held = &in_cache[..in_cache.len().min(session.n_past())];
    let kept = shared_prefix(held, prompt);
    session.set_n_past(kept)?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::shared_prefix;

    #[test]
    fn empty_cache_keeps_nothing() {
        assert_eq!(shared_prefix(&[], &[1, 2, 3]), 0);
    }

    #[test]
    fn full_match_still_runs_the_last_token() {
        assert_eq!(shared_prefix(&[1, 2, 3], &[1, 2, 3]), 2);
        // A cache holding more than the prompt (an earlier, longer prompt) too.
        assert_eq!(shared_prefix(&[1, 2, 3, 4], &[1, 2, 3]), 2);
    }

    #[test]
    fn partial_match_keeps_the_shared_part() {
        assert_eq!(shared_prefix(&[1, 2, 9, 9], &[1, 2, 3, 4, 5]), 2);
        assert_eq!(shared_prefix(&[7, 2, 3], &[1, 2, 3]), 0);
    }

    #[test]
    fn prompt_extending_the_cache_keeps_all_of_it() {
        assert_eq!(shared_prefix(&[1, 2], &[1, 2, 3, 4]), 2);
    }

    #[test]
    fn prompt_shorter_than_cache() {
        assert_eq!(shared_prefix(&[1, 2, 3, 4, 5], &[1, 2]), 1);
        assert_eq!(shared_prefix(&[1, 2, 3], &[1]), 0);
        assert_eq!(shared_prefix(&[1, 2, 3], &[]), 0);
    }
}
