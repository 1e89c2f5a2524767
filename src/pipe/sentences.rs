//! Sentence splitting of streamed text, for a speech engine that speaks each sentence while the
//! model writes the next. A sentence ends at a line break, or at `.`, `!` or `?` (with any
//! run of them and of closing quotes or brackets) followed by white space. The white space is
//! what tells "3.5" or "file.txt" from an end, so a terminator at the very end of the text
//! waits for the next piece. A single `.` after a common abbreviation ("Dr.", "e.g."), an
//! initial ("J.") or a list number at the start of a line ("1.") does not end a sentence.

/// Words that end with a `.` without ending the sentence (compared without case or the dot).
/// Words that often end a sentence too ("etc.", "no.") are left out: a sentence split too late
/// costs a pause, one split too early speaks half a thought.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "fig", "approx", "dept", "inc",
    "ltd", "co", "gen", "col", "lt", "sgt", "capt", "rev", "ave", "jan", "feb", "mar", "apr",
    "aug", "sept", "oct", "nov", "dec",
];

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»')
}

/// Collects streamed text and hands out finished sentences, trimmed and never empty.
#[derive(Debug, Default)]
pub struct SentenceSplitter {
    /// Text not yet handed out.
    buf: String,
    /// Bytes of `buf` known to hold no sentence end, so a new piece is not scanned from the start.
    scanned: usize,
}

impl SentenceSplitter {
    pub fn new() -> SentenceSplitter {
        SentenceSplitter::default()
    }

    /// Adds a piece of text and hands every sentence it finishes to `emit`.
    pub fn push(&mut self, piece: &str, emit: &mut dyn FnMut(&str)) {
        self.buf.push_str(piece);
        while let Some(end) = self.next_end() {
            let sentence = self.buf[..end].trim();
            if !sentence.is_empty() {
                emit(sentence);
            }
            self.buf.drain(..end);
            self.scanned = 0;
        }
    }

    /// Hands out what is left (the last sentence, unfinished or waiting for white space).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&str)) {
        let rest = self.buf.trim();
        if !rest.is_empty() {
            emit(rest);
        }
        self.buf.clear();
        self.scanned = 0;
    }

    /// The byte just past the first sentence end in `buf`, or None when there is none yet
    /// (remembering how far the text is known to have none).
    fn next_end(&mut self) -> Option<usize> {
        let buf = self.buf.as_str();
        let start = self.scanned;
        let mut chars = buf[start..]
            .char_indices()
            .map(|(i, c)| (i + start, c))
            .peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\n' {
                return Some(i + 1);
            }
            if !is_terminator(c) {
                continue;
            }
            // The run of terminators and closing marks after this one.
            let mut end = i + c.len_utf8();
            let mut single_dot = c == '.';
            while let Some(&(j, d)) = chars.peek() {
                if !(is_terminator(d) || is_closer(d)) {
                    break;
                }
                single_dot &= !is_terminator(d);
                end = j + d.len_utf8();
                chars.next();
            }
            match chars.peek() {
                // The end of the text so far: the next piece decides.
                None => {
                    self.scanned = i;
                    return None;
                }
                Some(&(_, next)) if !next.is_whitespace() => continue,
                Some(_) => {}
            }
            if single_dot && !ends_sentence(&buf[..i]) {
                continue;
            }
            return Some(end);
        }
        self.scanned = buf.len();
        None
    }
}

/// Whether a `.` after `before` (the text of the sentence up to the dot) ends the sentence: not
/// after an abbreviation, an initial, a word with dots inside ("e.g", "U.S") or a number that
/// opens the line (a numbered list).
fn ends_sentence(before: &str) -> bool {
    let word_start = before.rfind(|c: char| c.is_whitespace()).map_or(0, |i| {
        i + before[i..].chars().next().map_or(1, char::len_utf8)
    });
    let word = before[word_start..].trim_start_matches(|c: char| !c.is_alphanumeric());
    if word.is_empty() {
        return true;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) || word.contains('.') {
        return false;
    }
    let mut letters = word.chars();
    if let (Some(c), None) = (letters.next(), letters.next()) {
        if c.is_alphabetic() && c.is_uppercase() {
            return false;
        }
    }
    let line_start = before[..word_start].rfind('\n').map_or(0, |i| i + 1);
    let opens_line = before[line_start..word_start].trim().is_empty();
    !(opens_line && word.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::SentenceSplitter;

    /// The sentences of `text` fed in pieces of `step` characters.
    fn split(text: &str, step: usize) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(step) {
            let piece: String = piece.iter().collect();
            s.push(&piece, &mut |t| out.push(t.to_string()));
        }
        s.finish(&mut |t| out.push(t.to_string()));
        out
    }

    /// The same sentences whether the text comes whole, a character at a time or in threes.
    fn check(text: &str, want: &[&str]) {
        for step in [1, 3, text.chars().count().max(1)] {
            assert_eq!(split(text, step), want, "{text:?} in pieces of {step}");
        }
    }

    #[test]
    fn splits_at_sentence_ends() {
        check(
            "Hello there. How are you? Fine!",
            &["Hello there.", "How are you?", "Fine!"],
        );
    }

    #[test]
    fn decimals_and_abbreviations_do_not_split() {
        check(
            "Dr. Smith paid 3.5 dollars, e.g. for tea. Then he left.",
            &["Dr. Smith paid 3.5 dollars, e.g. for tea.", "Then he left."],
        );
        check(
            "J. R. R. Tolkien wrote it. See fig. 2 in the U.S. edition.",
            &[
                "J. R. R. Tolkien wrote it.",
                "See fig. 2 in the U.S. edition.",
            ],
        );
        check(
            "Open config.toml now. Done.",
            &["Open config.toml now.", "Done."],
        );
    }

    #[test]
    fn runs_of_marks_and_closing_quotes_stay_with_their_sentence() {
        check(
            "Wait... what?! He said \"Stop!\" Then (quietly.) it ended.",
            &[
                "Wait...",
                "what?!",
                "He said \"Stop!\"",
                "Then (quietly.)",
                "it ended.",
            ],
        );
    }

    #[test]
    fn line_breaks_end_sentences_and_numbered_lists_keep_their_numbers() {
        check(
            "Shopping:\n1. Milk\n2. Eggs and 3 apples. Bread\n\n",
            &["Shopping:", "1. Milk", "2. Eggs and 3 apples.", "Bread"],
        );
    }

    #[test]
    fn the_last_sentence_is_flushed_at_the_end() {
        check("No period at the end", &["No period at the end"]);
        check("It ends here.", &["It ends here."]);
        check("  \n \n", &[]);
        check("", &[]);
    }

    #[test]
    fn sentences_come_as_soon_as_the_white_space_after_them_does() {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        s.push("One. Tw", &mut |t| out.push(t.to_string()));
        assert_eq!(out, ["One."]);
        s.push("o.", &mut |t| out.push(t.to_string()));
        assert_eq!(out, ["One."], "'Two.' waits: it might be 'Two.5'");
        s.push(" ", &mut |t| out.push(t.to_string()));
        assert_eq!(out, ["One.", "Two."]);
    }

    #[test]
    fn multibyte_text() {
        check(
            "Café crème? Ünïcode works. 日本語。ok",
            &["Café crème?", "Ünïcode works.", "日本語。ok"],
        );
    }
}
