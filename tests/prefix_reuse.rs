//! `lckv::prefix::reuse_prefix` on a real session: it keeps what the cache holds of a new
//! prompt (never the prompt's last token, never more than the session holds), and running the
//! rest after it gives the logits of running the whole prompt from an empty cache.

mod common;

use common::{f32_session, load_model, model_path, prompt_logits, rel_err};
use lckv::prefix::reuse_prefix;
use lckv::session::PrefillChoice;

#[test]
fn reuse_keeps_the_shared_prefix_and_continues_exactly() {
    let m = load_model(&model_path("random/llama-tiny-f32.gguf"));
    let first: Vec<u32> = vec![1, 50, 60, 70, 80, 90, 100, 110, 120, 130];
    let mut s = f32_session(&m, 64, PrefillChoice::Sequential);

    // Empty cache: nothing kept.
    assert_eq!(reuse_prefix(&mut s, &[], &first).unwrap(), 0);
    assert_eq!(s.n_past(), 0);
    prompt_logits(&mut s, &first);

    // Partial match: the six shared tokens are kept and the rest runs after them.
    let second: Vec<u32> = vec![1, 50, 60, 70, 80, 90, 7, 8, 9];
    let kept = reuse_prefix(&mut s, &first, &second).unwrap();
    assert_eq!((kept, s.n_past()), (6, 6));
    let rest = prompt_logits(&mut s, &second[kept..]);
    let whole = prompt_logits(&mut f32_session(&m, 64, PrefillChoice::Sequential), &second);
    let v = m.cfg.n_vocab;
    let e = rel_err(&rest, &whole[kept * v..]);
    assert!(e <= 1e-5, "continuing after the kept prefix differs by {e}");

    // Full match and a prompt shorter than the cache: the last prompt token always runs.
    assert_eq!(reuse_prefix(&mut s, &second, &second).unwrap(), 8);
    assert_eq!(reuse_prefix(&mut s, &second, &second[..3]).unwrap(), 2);
    assert_eq!(s.n_past(), 2);

    // Only what the session still holds counts: after a rewind to 2, at most 2 are kept.
    assert_eq!(reuse_prefix(&mut s, &second, &second).unwrap(), 2);
    s.reset();
    assert_eq!(reuse_prefix(&mut s, &second, &second).unwrap(), 0);
}
