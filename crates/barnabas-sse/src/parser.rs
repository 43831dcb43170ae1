//! An incremental Server-Sent Events parser (the WHATWG event-stream format): bytes in as they
//! arrive, complete events out. Handles LF, CRLF and CR line ends split anywhere, comments,
//! multi-line `data`, `id`, `event` and `retry`.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id` in effect for this event (the last one seen on the stream), if any.
    pub id: Option<String>,
    /// The `event` field (type), if given.
    pub event: Option<String>,
    /// The `data` lines, joined with `\n`.
    pub data: String,
}

/// Parser state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting the next one belongs to it.
    after_cr: bool,
    data: Option<String>,
    event: Option<String>,
    /// Whether this event set its own id (only those carry one: Casper's ApiVersion has none).
    id_seen: bool,
    last_id: Option<String>,
    /// The last `retry` the server asked for, in ms.
    pub retry_ms: Option<u64>,
}

impl SseParser {
    /// Feeds bytes; returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.end_line(&mut out);
                    self.after_cr = true;
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    id: if self.id_seen {
                        self.last_id.clone()
                    } else {
                        None
                    },
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            self.id_seen = false;
            return;
        }
        if line.starts_with(':') {
            return; // comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => {
                self.last_id = Some(value.to_owned());
                self.id_seen = true;
            }
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_with_every_line_end() {
        let stream = b": keep-alive\r\ndata:{\"ApiVersion\":\"1.4.8\"}\r\n\r\ndata: line one\rdata:line two\r\nid: 7\nevent: x\nretry: 3000\n\n";
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut events = p.feed(&stream[..split]);
            events.extend(p.feed(&stream[split..]));
            assert_eq!(
                events,
                [
                    SseEvent {
                        id: None,
                        event: None,
                        data: "{\"ApiVersion\":\"1.4.8\"}".into()
                    },
                    SseEvent {
                        id: Some("7".into()),
                        event: Some("x".into()),
                        data: "line one\nline two".into()
                    },
                ],
                "split at {split}"
            );
            assert_eq!(p.retry_ms, Some(3000));
        }
    }

    #[test]
    fn a_block_without_data_dispatches_nothing() {
        let mut p = SseParser::default();
        assert!(p.feed(b"id: 3\n\n: comment\n\n").is_empty());
    }
}
