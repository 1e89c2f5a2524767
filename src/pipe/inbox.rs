//! The lines read so far, sorted into work: requests and forgets wait in order behind the one
//! running; a cancel acts at once (on the running request, or by taking a waiting one out of the
//! queue); a bad line is answered with its error at once. The loop asks for the next job when
//! idle and polls between tokens while a generation runs.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{Receiver, TryRecvError};

use serde_json::Value;

use super::events::{Done, Events, Finish};
use super::protocol::{Line, Request};

pub enum Job {
    Generate(Box<Request>),
    Forget(String),
}

pub struct Inbox {
    rx: Receiver<Line>,
    queue: VecDeque<Job>,
    /// False once the input has ended: what is queued still runs, then the loop ends.
    open: bool,
}

impl Inbox {
    pub fn new(rx: Receiver<Line>) -> Inbox {
        Inbox {
            rx,
            queue: VecDeque::new(),
            open: true,
        }
    }

    /// The next job, waiting for input when none is queued; None at the end of the input.
    pub fn next_job<W: Write>(&mut self, events: &mut Events<W>) -> Option<Job> {
        loop {
            if let Some(job) = self.queue.pop_front() {
                return Some(job);
            }
            if !self.open {
                return None;
            }
            match self.rx.recv() {
                Ok(line) => {
                    self.take(line, None, events);
                }
                Err(_) => self.open = false,
            }
        }
    }

    /// Takes the lines that have arrived while request `running` runs; true when one of them
    /// cancels it. Never waits.
    pub fn poll<W: Write>(&mut self, running: &Value, events: &mut Events<W>) -> bool {
        let mut cancel = false;
        while self.open {
            match self.rx.try_recv() {
                Ok(line) => cancel |= self.take(line, Some(running), events),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.open = false,
            }
        }
        cancel
    }

    fn take<W: Write>(
        &mut self,
        line: Line,
        running: Option<&Value>,
        events: &mut Events<W>,
    ) -> bool {
        match line {
            Line::Request(r) => {
                if running == Some(&r.id) || self.waiting(&r.id).is_some() {
                    events.error(
                        Some(&r.id),
                        &format!(
                            "request {} is already running or waiting; give each request its own id",
                            r.id
                        ),
                    );
                } else {
                    self.queue.push_back(Job::Generate(r));
                }
            }
            Line::Forget(name) => self.queue.push_back(Job::Forget(name)),
            Line::Cancel(id) if running == Some(&id) => return true,
            Line::Cancel(id) => match self.waiting(&id) {
                Some(at) => {
                    self.queue.remove(at);
                    events.done(&id, Done::default(), Finish::Cancelled);
                }
                None => events.error(
                    Some(&id),
                    &format!("no request {id} is running or waiting (it may have finished already); nothing to cancel"),
                ),
            },
            Line::Bad { id, message } => events.error(id.as_ref(), &message),
        }
        false
    }

    /// Where the waiting request `id` is in the queue.
    fn waiting(&self, id: &Value) -> Option<usize> {
        self.queue
            .iter()
            .position(|j| matches!(j, Job::Generate(r) if &r.id == id))
    }
}
