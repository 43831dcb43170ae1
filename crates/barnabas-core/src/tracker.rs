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
    /// Handed out, then given back by the client: to be handed out again when re-read.
    again: BTreeSet<i64>,
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
                again: BTreeSet::new(),
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

    /// The client gave a handed-out record back (AMQP `released`/`modified`): it is handed
    /// out again when its partition is re-read from it. Still not finished.
    pub fn give_back(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(track) = self.tracks.get_mut(tp) {
            if track.pending.contains(&offset) {
                track.again.insert(offset);
            }
        }
    }

    /// The lowest offset of `tp` given back and not handed out again yet: a re-read of the
    /// partition must start there or before, whatever later offset asked for it.
    pub fn first_given_back(&self, tp: &TopicPartition) -> Option<i64> {
        self.tracks.get(tp).and_then(|t| t.again.first().copied())
    }

    /// Whether a record read from Kafka is to go to the client: one never handed out, or one
    /// given back. A partition re-read from a given-back record (a seek backwards) also
    /// yields the records after it; those the client has finished or still holds are not
    /// sent twice.
    pub fn is_due(&mut self, record: &ConsumedRecord) -> bool {
        let tp = TopicPartition::new(record.topic.clone(), record.partition);
        match self.tracks.get_mut(&tp) {
            Some(track) if record.offset < track.next => track.again.remove(&record.offset),
            _ => true,
        }
    }

    /// The client is done with this record (acknowledged it, or it was skipped).
    pub fn finished(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(track) = self.tracks.get_mut(tp) {
            track.again.remove(&offset);
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
    fn a_first_delivery_commits_nothing_until_it_is_finished() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::default();
        assert!(!t.is_dirty());
        t.handed(&rec(10));
        assert!(!t.is_dirty(), "handing out changes nothing committable");
        assert!(t.committable().is_empty(), "10 is still out");
        t.finished(&tp, 10);
        assert!(t.is_dirty());
        assert_eq!(t.committable()[0].offset, 11);
        assert!(!t.is_dirty(), "committable() takes what was dirty");
    }

    #[test]
    fn a_partition_assigned_again_starts_over_at_its_new_position() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::default();
        t.handed(&rec(5)); // never finished: the partition was revoked
        t.start_at(tp.clone(), 8); // assigned again where the group had got to
        t.handed(&rec(8));
        t.finished(&tp, 8);
        assert_eq!(
            t.committable()[0].offset,
            9,
            "5 belongs to the old assignment"
        );
    }

    #[test]
    fn a_forgotten_partition_is_never_committed() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::default();
        t.handed(&rec(5));
        t.forget(&tp);
        t.finished(&tp, 5);
        assert!(
            t.committable().is_empty(),
            "revoked: another member commits it"
        );
    }

    #[test]
    fn a_re_read_partition_hands_out_only_what_was_given_back() {
        let tp = TopicPartition::new("t", 0);
        let mut t = OffsetTracker::default();
        t.start_at(tp.clone(), 0);
        for o in 0..4 {
            assert!(t.is_due(&rec(o)), "{o} is new");
            t.handed(&rec(o));
        }
        t.finished(&tp, 0);
        t.give_back(&tp, 1);
        t.finished(&tp, 3);
        // Re-read from 1: 1 again; 2 is still with the client, 3 finished.
        let due: Vec<i64> = (1..5).filter(|&o| t.is_due(&rec(o))).collect();
        assert_eq!(due, [1, 4]);
        assert!(!t.is_due(&rec(1)), "given back once, handed out once");
        t.give_back(&tp, 2);
        assert_eq!(t.first_given_back(&tp), Some(2));
        t.finished(&tp, 1);
        t.finished(&tp, 2);
        assert_eq!(t.committable()[0].offset, 4);
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
