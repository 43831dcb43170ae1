//! Which consumed offsets may be committed when deliveries finish out of order.
//!
//! A protocol client acknowledges deliveries one by one (MQTT PUBACK, AMQP disposition), not
//! necessarily in offset order, and some never (a QoS 1 delivery in flight when the client
//! vanished). Kafka commits one position per partition, so a partition may be committed only
//! up to its first delivery that is not finished: everything after a lost acknowledgement is
//! redelivered, nothing unacknowledged is skipped.

use std::collections::{BTreeMap, BTreeSet};

use crate::{ConsumedRecord, TopicPartition, TopicPartitionOffset};

#[derive(Debug, Default)]
struct Track {
    pending: BTreeSet<i64>,
    next: i64,
    committed: i64,
}

/// Offsets handed to a client and not finished yet, per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    tracks: BTreeMap<TopicPartition, Track>,
    dirty: bool,
}

impl OffsetTracker {
    /// Starts tracking a partition at `offset` (its committed or start position), so that
    /// position is not committed again.
    pub fn start_at(&mut self, tp: TopicPartition, offset: i64) {
        self.tracks.insert(
            tp,
            Track {
                pending: BTreeSet::new(),
                next: offset,
                committed: offset,
            },
        );
    }

    /// Forgets a partition (it was revoked or unsubscribed).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.tracks.remove(tp);
    }

    /// A record was handed to the client: not finished until [`finished`](Self::finished).
    pub fn handed(&mut self, record: &ConsumedRecord) {
        let tp = TopicPartition::new(record.topic.clone(), record.partition);
        let track = self.tracks.entry(tp).or_insert_with(|| Track {
            committed: record.offset,
            ..Track::default()
        });
        track.pending.insert(record.offset);
        track.next = track.next.max(record.offset + 1);
    }

    /// The client is done with this record (acknowledged it, or it was skipped).
    pub fn finished(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(track) = self.tracks.get_mut(tp) {
            if track.pending.remove(&offset) {
                self.dirty = true;
            }
        }
    }

    /// Whether something finished since the last [`committable`](Self::committable).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Positions that may be committed now and are ahead of what was; they count as
    /// committed from here on.
    pub fn committable(&mut self) -> Vec<TopicPartitionOffset> {
        self.dirty = false;
        let mut out = Vec::new();
        for (tp, track) in &mut self.tracks {
            let upto = track.pending.first().copied().unwrap_or(track.next);
            if upto > track.committed {
                track.committed = upto;
                out.push(TopicPartitionOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: upto,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: None,
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn commits_stop_at_the_first_unfinished_delivery() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::default();
        t.start_at(tp.clone(), 10);
        for o in 10..14 {
            t.handed(&rec(o));
        }
        t.finished(&tp, 11);
        t.finished(&tp, 12);
        assert!(t.committable().is_empty(), "10 is still out");
        t.finished(&tp, 10);
        assert_eq!(t.committable()[0].offset, 13, "up to the unfinished 13");
        t.finished(&tp, 13);
        assert_eq!(t.committable()[0].offset, 14);
        assert!(t.committable().is_empty(), "nothing new");
    }
}
