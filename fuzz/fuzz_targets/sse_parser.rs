//! The SSE parser fed an arbitrary stream: whole, and split at every point the first byte
//! says; the events must be the same however the bytes arrive, and nothing may panic.
#![no_main]

use barnabas_sse::parser::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let whole = SseParser::default().feed(stream);
    let mut parser = SseParser::default();
    let mut pieces = Vec::new();
    for chunk in stream.chunks(usize::from(step).max(1)) {
        pieces.extend(parser.feed(chunk));
    }
    assert_eq!(whole, pieces);
});
