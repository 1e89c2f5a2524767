//! Streaming detokenization: token pieces arrive one at a time and may end inside a UTF-8
//! character (byte-fallback tokens, byte-level BPE pieces). Only whole characters are emitted;
//! the unfinished tail waits in a fixed 4-byte buffer, so pushing a token never allocates once
//! the output buffer has grown to the longest piece.

use super::Tokenizer;

pub struct StreamDecoder {
    pending: [u8; 4],
    n_pending: usize,
    out: String,
    show_special: bool,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Length of the UTF-8 sequence a lead byte starts; 0 for a byte that cannot start one.
fn seq_len(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

impl StreamDecoder {
    /// A decoder that renders control tokens (BOS, `<|im_end|>`, ...) as nothing, like
    /// llama.cpp's token_to_piece with special = false.
    pub fn new() -> Self {
        StreamDecoder {
            pending: [0; 4],
            n_pending: 0,
            out: String::with_capacity(64),
            show_special: false,
        }
    }

    /// Whether control tokens render as their text.
    pub fn show_special(mut self, show: bool) -> Self {
        self.show_special = show;
        self
    }

    /// Feeds one token; returns the text that is complete now (maybe empty).
    pub fn push<'a>(&'a mut self, tok: &Tokenizer, id: u32) -> &'a str {
        self.out.clear();
        let mut bytes = if !self.show_special && tok.is_control(id) {
            &[][..]
        } else {
            tok.piece(id)
        };
        if self.n_pending > 0 {
            let need = seq_len(self.pending[0]);
            while self.n_pending < need && bytes.first().is_some_and(|&b| (0x80..0xc0).contains(&b))
            {
                self.pending[self.n_pending] = bytes[0];
                self.n_pending += 1;
                bytes = &bytes[1..];
            }
            if self.n_pending < need && bytes.is_empty() {
                return &self.out;
            }
            match std::str::from_utf8(&self.pending[..self.n_pending]) {
                Ok(s) if self.n_pending == need => self.out.push_str(s),
                // Cut short by a byte that cannot continue it, or not a valid sequence.
                _ => self.out.push('\u{fffd}'),
            }
            self.n_pending = 0;
        }
        loop {
            match std::str::from_utf8(bytes) {
                Ok(s) => {
                    self.out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, rest) = bytes.split_at(e.valid_up_to());
                    self.out
                        .push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            self.out.push('\u{fffd}');
                            bytes = &rest[bad..];
                        }
                        None => {
                            // A valid but unfinished sequence at the end: at most 3 bytes.
                            self.pending[..rest.len()].copy_from_slice(rest);
                            self.n_pending = rest.len();
                            break;
                        }
                    }
                }
            }
        }
        &self.out
    }

    /// The rest: an unfinished character becomes U+FFFD.
    pub fn flush(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending[..self.n_pending]).into_owned();
        self.n_pending = 0;
        s
    }
}
