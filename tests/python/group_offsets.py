"""Every consumer group Kafka knows and what each has committed on one topic, asked with a
stock Kafka client (confluent-kafka's AdminClient: ListGroups, then OffsetFetch per group).

usage:
  group_offsets.py BOOTSTRAP TOPIC
      -> JSON {"groups": [every group id], "committed": {group: {partition: offset}}} where
         "committed" names only the groups with an offset committed on TOPIC
"""
import json
import sys

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient


def main(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups(request_timeout=15).result()
    if listed.errors:
        sys.exit(f"list groups: {listed.errors}")
    groups = sorted(g.group_id for g in listed.valid)
    partitions = admin.list_topics(topic, timeout=15).topics[topic].partitions
    committed = {}
    for group in groups:
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in sorted(partitions)]
        )
        answer = admin.list_consumer_group_offsets([request], request_timeout=15)[group].result()
        seen = {
            str(tp.partition): tp.offset
            for tp in answer.topic_partitions
            if tp.error is None and tp.offset >= 0
        }
        if seen:
            committed[group] = seen
    print(json.dumps({"groups": groups, "committed": committed}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
