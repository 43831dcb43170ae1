"""The Azure Event Hubs SDK (azure-eventhub 5.15, its own pure-Python AMQP stack) against barnabas.

Every subcommand connects with a connection string
`Endpoint=sb://HOST:PORT;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=HUB;UseDevelopmentEmulator=true`
(plain AMQP to host:port) and prints one JSON document.

usage:
  eventhubs_sdk.py cbs HOST:PORT HUB [SAS]      -> {"ok": bool, "error": str|null}: the CBS
      put-token exchange alone (a management request needs it first); SAS, when given, is put
      as the token (connection string SharedAccessSignature=…) instead of one made from a key
  eventhubs_sdk.py send HOST:PORT HUB MODE N    -> {"sent": N}; MODE plain | key:K | partition:P
      (one batch of N events "event-0"…)
  eventhubs_sdk.py props HOST:PORT HUB          -> get_eventhub_properties and every
      get_partition_properties
  eventhubs_sdk.py receive HOST:PORT HUB PARTITION START N
      -> the first N events received from PARTITION (START: -1 | @latest | offset:O |
         seq:S | seq-incl:S | time:MS), each {body, offset, sequence_number, enqueued_time_ms,
         partition_key}; for @latest, events are sent after the receiver started
"""
import json
import sys
import threading
import time
from datetime import datetime, timezone

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient


def conn_str(addr, hub, sas=None):
    auth = f"SharedAccessSignature={sas}" if sas else "SharedAccessKeyName=k;SharedAccessKey=v"
    return f"Endpoint=sb://{addr};{auth};EntityPath={hub};UseDevelopmentEmulator=true"


def producer(addr, hub, sas=None):
    return EventHubProducerClient.from_connection_string(
        conn_str(addr, hub, sas), retry_total=0, auth_timeout=10
    )


def cbs(addr, hub, sas=None):
    client = producer(addr, hub, sas)
    try:
        client.get_eventhub_properties()
        return {"ok": True, "error": None}
    except Exception as e:  # noqa: BLE001 - the outcome is the answer
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        client.close()


def send(addr, hub, mode, n, start=0):
    client = producer(addr, hub)
    kwargs = {}
    if mode.startswith("key:"):
        kwargs["partition_key"] = mode[4:]
    elif mode.startswith("partition:"):
        kwargs["partition_id"] = mode[10:]
    with client:
        batch = client.create_batch(**kwargs)
        for i in range(start, start + n):
            batch.add(EventData(f"event-{i}"))
        client.send_batch(batch)
    return {"sent": n}


def props(addr, hub):
    client = producer(addr, hub)
    with client:
        hub_props = client.get_eventhub_properties()
        parts = [client.get_partition_properties(p) for p in hub_props["partition_ids"]]

    def plain(d):
        return {k: (v.timestamp() if isinstance(v, datetime) else v) for k, v in d.items()}

    return {"eventhub": plain(hub_props), "partitions": [plain(p) for p in parts]}


def receive(addr, hub, partition, start, n):
    got = []
    done = threading.Event()
    started = threading.Event()
    kwargs = {"partition_id": partition}
    if start in ("-1", "@latest"):
        kwargs["starting_position"] = start
    elif start.startswith("offset:"):
        kwargs["starting_position"] = start[7:]
    elif start.startswith("seq:"):
        kwargs["starting_position"] = int(start[4:])
    elif start.startswith("seq-incl:"):
        kwargs["starting_position"] = int(start[9:])
        kwargs["starting_position_inclusive"] = True
    elif start.startswith("time:"):
        kwargs["starting_position"] = datetime.fromtimestamp(int(start[5:]) / 1000, tz=timezone.utc)
    client = EventHubConsumerClient.from_connection_string(
        conn_str(addr, hub), consumer_group="$Default", retry_total=0
    )

    def on_event(_ctx, event):
        if event is None:
            return
        got.append(
            {
                "body": event.body_as_str(),
                "offset": event.offset,
                "sequence_number": event.sequence_number,
                "enqueued_time_ms": int(event.enqueued_time.timestamp() * 1000)
                if event.enqueued_time
                else None,
                "partition_key": event.partition_key.decode()
                if isinstance(event.partition_key, bytes)
                else event.partition_key,
            }
        )
        if len(got) >= n:
            done.set()

    def on_init(_ctx):
        started.set()

    errors = []

    def on_error(_ctx, e):
        errors.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(
        target=client.receive,
        kwargs=dict(on_event=on_event, on_partition_initialize=on_init, on_error=on_error, max_wait_time=1, **kwargs),
        daemon=True,
    )
    t.start()
    if start == "@latest":
        started.wait(30)
        time.sleep(3)
        send(addr, hub, f"partition:{partition}", n, start=1000)
    done.wait(60)
    client.close()
    t.join(10)
    return {"events": got[:n], "errors": errors}


def main(argv):
    cmd, addr, hub = argv[1], argv[2], argv[3]
    if cmd == "cbs":
        out = cbs(addr, hub, argv[4] if len(argv) > 4 else None)
    elif cmd == "send":
        out = send(addr, hub, argv[4], int(argv[5]))
    elif cmd == "props":
        out = props(addr, hub)
    elif cmd == "receive":
        out = receive(addr, hub, argv[4], argv[5], int(argv[6]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
