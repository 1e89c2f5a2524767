//! The input side of `lckv pipe`: a thread of its own reads lines and sends them, parsed, over a
//! channel, so a `cancel` line reaches the generation loop while a generation runs (the loop
//! looks at the channel between tokens). Lines longer than `MAX_LINE` are refused without
//! being held in memory; blank lines are skipped. The channel closes at the end of the input.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::sync::mpsc::{channel, Receiver};

use super::protocol::{parse_line, Defaults, Line};

/// The longest line read (a request with a long conversation fits many times over).
pub const MAX_LINE: usize = 1 << 20;

/// Starts the reader thread on `input`.
pub fn spawn_reader(input: impl Read + Send + 'static, defaults: Defaults) -> Receiver<Line> {
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("lckv-pipe-input".into())
        .spawn(move || {
            let mut r = BufReader::new(input);
            let mut buf = Vec::new();
            let mut number = 0;
            loop {
                number += 1;
                let line = match read_bounded(&mut r, &mut buf, MAX_LINE) {
                    Ok(Got::End) => return,
                    Ok(Got::TooLong) => Line::Bad {
                        id: None,
                        message: format!(
                            "line {number}: longer than {MAX_LINE} bytes; shorten the request"
                        ),
                    },
                    Ok(Got::Line) => match std::str::from_utf8(&buf) {
                        Ok(text) if text.trim().is_empty() => continue,
                        Ok(text) => parse_line(text, number, &defaults),
                        Err(_) => Line::Bad {
                            id: None,
                            message: format!("line {number}: not UTF-8 text"),
                        },
                    },
                    Err(e) => {
                        // Nothing more can be read: say so, and close the channel.
                        let _ = tx.send(Line::Bad {
                            id: None,
                            message: format!(
                                "reading the input failed ({e}); no more lines are read"
                            ),
                        });
                        return;
                    }
                };
                if tx.send(line).is_err() {
                    return;
                }
            }
        })
        .expect("starting the input thread");
    rx
}

enum Got {
    Line,
    TooLong,
    End,
}

/// Reads one line into `buf` (without its `\n` or `\r\n`), keeping at most `max` bytes: a longer
/// line is read to its end and reported, its bytes dropped as they come.
fn read_bounded(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Got> {
    buf.clear();
    let (mut any, mut too_long) = (false, false);
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Got::End,
                (true, true) => Got::TooLong,
                (true, false) => Got::Line,
            });
        }
        any = true;
        let newline = avail.iter().position(|&b| b == b'\n');
        let part = &avail[..newline.unwrap_or(avail.len())];
        if !too_long {
            if buf.len() + part.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = newline.map_or(avail.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(if too_long { Got::TooLong } else { Got::Line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_bounded(&mut r, &mut buf, max).unwrap() {
                Got::End => return out,
                Got::TooLong => out.push("<too long>".into()),
                Got::Line => out.push(String::from_utf8(buf.clone()).unwrap()),
            }
        }
    }

    #[test]
    fn lines_are_bounded_and_the_next_one_still_read() {
        assert_eq!(
            lines(b"short\r\nmuch too long a line\nok\nlast", 8),
            ["short", "<too long>", "ok", "last"]
        );
        assert_eq!(lines(b"", 8), Vec::<String>::new());
    }
}
