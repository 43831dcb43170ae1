"""paho-mqtt over WebSocket over TLS (wss://HOST:PORT/mqtt), as browsers and paho users connect
behind no proxy: trusts CA, logs in with USER/PASSWORD, publishes one QoS 1 message to TOPIC.
Never fails itself; prints {"connack": reason or null, "puback": bool, "error": str}.

usage: mqtt_paho_wss.py HOST PORT CA USER PASSWORD TOPIC
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

host, port, ca, user, password, topic = sys.argv[1:7]
out = {"connack": None, "puback": False, "error": ""}
try:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="paho-wss", protocol=mqtt.MQTTv311, transport="websockets"
    )
    c.ws_set_options(path="/mqtt")
    c.tls_set(ca_certs=ca)
    c.username_pw_set(user, password)
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        out["connack"] = str(reason_code)
        connected.set()

    c.on_connect = on_connect
    c.connect(host, int(port))
    c.loop_start()
    if connected.wait(30) and out["connack"] == "Success":
        info = c.publish(topic, b"over wss", qos=1)
        info.wait_for_publish(30)
        out["puback"] = info.is_published()
    c.disconnect()
    c.loop_stop()
except Exception as e:  # the caller checks what happened
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
