//! Stop strings over streamed text: text is released as it comes, except a tail that could
//! still be the start of a stop string, which is held back until it either completes one (and
//! generation ends before it) or cannot any more. Used by every API that takes `stop`.

/// Matches stop strings in text that arrives piece by piece.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released.
    held: String,
}

/// What to do with a piece of text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopStep {
    /// Release this text (may be empty) and go on.
    Go(String),
    /// Release this text, the part before the stop string, and end generation.
    Stop(String),
}

impl StopMatcher {
    /// Empty strings are ignored: they would stop before anything is said.
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, piece: &str) -> StopStep {
        self.held.push_str(piece);
        if self.stops.is_empty() {
            return StopStep::Go(std::mem::take(&mut self.held));
        }
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s)).min() {
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopStep::Stop(out);
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopStep::Go(out)
    }

    /// The text still held back, released when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, on character
/// boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && stop.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopStep::Go(t) => out.push_str(&t),
                StopStep::Stop(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stops_before_a_string_split_across_pieces() {
        assert_eq!(
            run(&["\nUser:"], &["Hello", " there\n", "Us", "er: next"]),
            ("Hello there".into(), true)
        );
    }

    #[test]
    fn a_near_miss_is_released() {
        assert_eq!(
            run(&["STOP"], &["ST", "OCK", " up"]),
            ("STOCK up".into(), false)
        );
    }

    #[test]
    fn the_earliest_of_several_wins_and_empty_ones_are_ignored() {
        assert_eq!(run(&["", "b", "a"], &["xxab"]), ("xx".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn multibyte_text_is_never_split() {
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
    }
}
