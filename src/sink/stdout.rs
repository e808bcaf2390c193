//! The stdout sink: one JSON object per line (the README's event schema), flushed after every
//! event so a reader at the other end of a pipe sees it at once. When the reader goes away
//! (broken pipe) the sink stops writing for good: every later event is a permanent failure, and
//! the runner's rate-limited warning keeps that from flooding the log.

use super::{EventSink, SinkError};
use crate::event::TrackEvent;
use std::io::{ErrorKind, Write};

const NAME: &str = "stdout";

/// JSON lines on stdout (or any writer, for tests).
pub struct StdoutSink {
    out: Box<dyn Write + Send>,
    closed: bool,
    line: Vec<u8>,
}

impl StdoutSink {
    /// A sink writing to the process's stdout.
    pub fn new() -> Self {
        Self::with_writer(Box::new(std::io::stdout()))
    }

    /// A sink writing JSON lines to `out` (a pipe, a file) instead of stdout.
    pub fn with_writer(out: Box<dyn Write + Send>) -> Self {
        Self { out, closed: false, line: Vec::with_capacity(1024) }
    }

    fn write_line(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.line)?;
        self.out.flush()
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for StdoutSink {
    fn name(&self) -> &str {
        NAME
    }

    fn deliver(&mut self, event: &TrackEvent) -> Result<(), SinkError> {
        if self.closed {
            return Err(SinkError::Permanent { sink: NAME, message: "stdout is closed".to_owned() });
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, event)
            .map_err(|e| SinkError::Permanent { sink: NAME, message: format!("cannot encode the event: {e}") })?;
        self.line.push(b'\n');
        match self.write_line() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                log::info!("stdout was closed by its reader: no more events are written there");
                Err(SinkError::Permanent { sink: NAME, message: "stdout is closed (broken pipe)".to_owned() })
            }
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {
                Err(SinkError::Transient { sink: NAME, message: format!("write: {e}") })
            }
            Err(e) => Err(SinkError::Permanent { sink: NAME, message: format!("write: {e}") }),
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.closed {
            return Ok(());
        }
        self.out.flush().map_err(|e| SinkError::Permanent { sink: NAME, message: format!("flush: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::tests::event;
    use std::io::Read;

    #[test]
    fn writes_one_json_object_per_line() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let mut sink = StdoutSink::with_writer(Box::new(writer));
        sink.deliver(&event("cam1", 1)).unwrap();
        sink.deliver(&event("cam1", 2)).unwrap();
        drop(sink);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["track"], 2);
        assert_eq!(lines[0]["camera"], "cam1");
    }

    #[test]
    fn a_closed_reader_is_a_permanent_error_and_writing_stops() {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut sink = StdoutSink::with_writer(Box::new(writer));
        let first = sink.deliver(&event("cam1", 1));
        assert!(matches!(first, Err(SinkError::Permanent { .. })), "{first:?}");
        assert!(sink.closed);
        let second = sink.deliver(&event("cam1", 2));
        assert!(matches!(second, Err(SinkError::Permanent { .. })), "{second:?}");
        sink.flush().unwrap();
    }
}
