"""A stock Kafka client (confluent-kafka, i.e. librdkafka) for the tests' Kafka-side checks.

usage:
  kafka_client.py produce BOOTSTRAP TOPIC COUNT       -> JSON list of {partition, offset}
  kafka_client.py consume BOOTSTRAP TOPIC GROUP COUNT -> JSON list of records, then commits
  kafka_client.py values BOOTSTRAP TOPIC              -> JSON list of every value in the topic
      (all partitions, read up to each one's high watermark; no group)
  kafka_client.py values-sasl BOOTSTRAP USER PASSWORD TOPIC -> the same, SASL/SCRAM-SHA-256 login
  kafka_client.py allow BOOTSTRAP USER PASSWORD PRINCIPAL topic|group NAME OP[,OP…] [TOPIC…]
      -> creates the topics (SASL/SCRAM-SHA-256 login as USER), then ALLOW ACLs for PRINCIPAL
         (e.g. User:alice) on that literal resource (`*`: every one); prints "[]"
  kafka_client.py deny …the same…   -> DENY ACLs instead (they win over any ALLOW)
  kafka_client.py create-topic BOOTSTRAP TOPIC [KEY=VALUE…] -> creates a one-partition topic
      with those topic configs (e.g. min.insync.replicas=2); prints "[]"
  kafka_client.py produce-null-header BOOTSTRAP TOPIC -> one record, value "Simple message",
      headers key1=value1, key-with-null-value=<null>, key3=value3 (strimzi-kafka-bridge #1158)
"""
import base64
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def ensure_topic(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        return
    for fut in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        try:
            fut.result(timeout=10)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def create_topic(bootstrap, topic, configs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = dict(c.split("=", 1) for c in configs)
    new = NewTopic(topic, num_partitions=1, replication_factor=1, config=config)
    for fut in admin.create_topics([new]).values():
        fut.result(timeout=30)
    print("[]")


def produce(bootstrap, topic, count):
    ensure_topic(bootstrap, topic)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    acks, errors = [], []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acks.append({"partition": msg.partition(), "offset": msg.offset()})

    for i in range(count):
        p.produce(topic, key=f"k{i}", value=f"v{i}", headers=[("seq", str(i).encode())], on_delivery=report)
    remaining = p.flush(30)
    if errors or remaining or len(acks) != count:
        sys.exit(f"produce failed: errors={errors} undelivered={remaining} acked={len(acks)}")
    print(json.dumps(acks))


def produce_null_header(bootstrap, topic):
    ensure_topic(bootstrap, topic)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors = []
    p.produce(
        topic,
        value=b'"Simple message"',
        headers=[("key1", b"value1"), ("key-with-null-value", None), ("key3", b"value3")],
        on_delivery=lambda err, msg: err is not None and errors.append(str(err)),
    )
    if p.flush(30) or errors:
        sys.exit(f"produce failed: {errors}")
    print("[]")


def text(b):
    """Bytes as text for the JSON report; bytes that are not UTF-8 as 'base64:<b64>'."""
    if b is None:
        return None
    try:
        return b.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(b).decode()


def consume(bootstrap, topic, group, count):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    out = []
    deadline = time.time() + 60
    while len(out) < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            continue
        out.append({
            "key": text(m.key()),
            "value": text(m.value()),
            "headers": {k: text(v) for k, v in (m.headers() or [])},
            "partition": m.partition(),
            "offset": m.offset(),
        })
    if out:
        c.commit(asynchronous=False)
    c.close()
    print(json.dumps(out))


def values(bootstrap, topic, login=None):
    config = {"bootstrap.servers": bootstrap, "group.id": "values", "enable.auto.commit": False}
    if login:
        config.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                       "sasl.username": login[0], "sasl.password": login[1]})
    c = Consumer(config)
    partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {}
    for p in partitions:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            ends[p] = high
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    out = []
    deadline = time.time() + 60
    while ends and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append(text(m.value()))
        if m.offset() + 1 >= ends.get(m.partition(), 0):
            ends.pop(m.partition(), None)
    c.close()
    if ends:
        sys.exit(f"did not reach the end of partitions {sorted(ends)}")
    print(json.dumps(out))


def allow(bootstrap, user, password, principal, resource, name, ops, topics, permission="ALLOW"):
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)
    admin = AdminClient({
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": user,
        "sasl.password": password,
    })
    if topics:
        for fut in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]).values():
            try:
                fut.result(timeout=30)
            except KafkaException as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise
    kind = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}[resource]
    bindings = [
        AclBinding(kind, name, ResourcePatternType.LITERAL, principal, "*",
                   getattr(AclOperation, op.upper()), getattr(AclPermissionType, permission))
        for op in ops.split(",")
    ]
    for fut in admin.create_acls(bindings).values():
        fut.result(timeout=30)
    print("[]")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "create-topic":
        create_topic(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif cmd == "produce-null-header":
        produce_null_header(sys.argv[2], sys.argv[3])
    elif cmd == "allow":
        allow(*sys.argv[2:9], sys.argv[9:])
    elif cmd == "deny":
        allow(*sys.argv[2:9], sys.argv[9:], permission="DENY")
    elif cmd == "values":
        values(sys.argv[2], sys.argv[3])
    elif cmd == "values-sasl":
        values(sys.argv[2], sys.argv[5], (sys.argv[3], sys.argv[4]))
    elif cmd == "consume":
        consume(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(__doc__)
