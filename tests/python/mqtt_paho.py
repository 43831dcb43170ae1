"""paho-mqtt against barnabas, as users run it: a v5 publish with user properties and a
v3.1.1 publish over TCP, and a v3.1.1 subscriber over WebSocket (path /mqtt) that receives a
publish made by a v5 client. Prints one JSON object with what happened.

usage: mqtt_paho.py HOST MQTT_PORT WS_PORT
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, ws_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
TIMEOUT = 60
results = {}


def connected(client):
    ev = threading.Event()
    client.on_connect = lambda *a: ev.set()
    return ev


# 1. v5 over TCP: QoS 1 publish with a user property; record the PUBACK reason.
v5 = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-v5", protocol=mqtt.MQTTv5)
ok = connected(v5)
v5.connect(host, port)
v5.loop_start()
assert ok.wait(TIMEOUT), "v5 CONNACK"
acked = threading.Event()


def v5_published(client, userdata, mid, reason_code, properties):
    results["v5_puback"] = reason_code.value
    acked.set()


v5.on_publish = v5_published
props = Properties(PacketTypes.PUBLISH)
props.UserProperty = ("unit", "celsius")
v5.publish("sensors/p5/telemetry", b"21.5", qos=1, properties=props)
assert acked.wait(TIMEOUT), "v5 PUBACK"

# 2. v3.1.1 over TCP: QoS 1 publish.
v3 = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-v311", protocol=mqtt.MQTTv311)
ok = connected(v3)
v3.connect(host, port)
v3.loop_start()
assert ok.wait(TIMEOUT), "v3.1.1 CONNACK"
info = v3.publish("sensors/p3/telemetry", b"19.0", qos=1)
info.wait_for_publish(TIMEOUT)
results["v311_puback"] = info.is_published()

# 3. v3.1.1 over WebSocket: subscribe, then the v5 client publishes to it.
ws = mqtt.Client(
    CallbackAPIVersion.VERSION2, client_id="paho-ws", protocol=mqtt.MQTTv311, transport="websockets"
)
ws.ws_set_options(path="/mqtt")
ok = connected(ws)
subscribed = threading.Event()
received = threading.Event()
ws.on_subscribe = lambda *a: subscribed.set()


def ws_message(client, userdata, msg):
    results["ws_received"] = {"topic": msg.topic, "payload": msg.payload.decode()}
    received.set()


ws.on_message = ws_message
ws.connect(host, ws_port)
ws.loop_start()
assert ok.wait(TIMEOUT), "WebSocket CONNACK"
ws.subscribe("devices/+/commands", qos=1)
assert subscribed.wait(TIMEOUT), "WebSocket SUBACK"
v5.publish("devices/p2/commands", b"hello over websocket", qos=1)
assert received.wait(TIMEOUT), "delivery over WebSocket"

for c in (v5, v3, ws):
    c.disconnect()
    c.loop_stop()
print(json.dumps(results))
