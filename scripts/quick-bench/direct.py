"""Baseline: a librdkafka producer (confluent-kafka) straight to the broker, acks=all,
idempotent, 100-byte values, linger 5 ms — the rate the HTTP numbers are compared with."""
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
    try:
        f.result()
    except Exception:
        pass
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
acked = 0


def cb(err, msg):
    global acked
    if err is None:
        acked += 1


value = b"x" * 100
start = time.time()
for i in range(count):
    while True:
        try:
            p.produce(topic, key=f"k{i}".encode(), value=value, on_delivery=cb)
            break
        except BufferError:
            p.poll(0.01)
    p.poll(0)
p.flush(60)
elapsed = time.time() - start
print(f"direct records/s={acked / elapsed:.0f} acked={acked}/{count}")
