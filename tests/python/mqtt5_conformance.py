"""MQTT 5 conformance cases (issue 25), run with paho-mqtt 2.x against any broker.

One case per behaviour; each prints one JSON line {"case": …, "ok": bool, "detail": …} and
the script exits 0 once every case ran (what the broker did is in the lines, not the exit
status). Topics and client ids are unique per run, so the script can run again against the
same broker. The normative statement each case checks is named in its docstring (OASIS
MQTT Version 5.0).

usage: mqtt5_conformance.py HOST PORT [--username U --password P]
           [--deny-filter test/nosubscribe] [--server-keep-alive SECS] [--cases a,b,…]

--username/--password: every client logs in with them (the deny case needs a principal the
    broker's ACL denies --deny-filter to).
--server-keep-alive: the Server Keep Alive the broker is configured to send; the case
    checks the CONNACK carries it and that the broker holds a silent client to it.
"""
import argparse
import json
import queue
import socket
import struct
import sys
import threading
import time
import traceback
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 8.0  # for something that should come
QUIET = 2.0  # watched for something that should not come

parser = argparse.ArgumentParser()
parser.add_argument("host")
parser.add_argument("port", type=int)
parser.add_argument("--username")
parser.add_argument("--password")
parser.add_argument("--deny-filter", default="test/nosubscribe")
parser.add_argument("--server-keep-alive", type=int, default=0)
parser.add_argument("--cases", default="")
args = parser.parse_args()

RUN = uuid.uuid4().hex[:8]


def topic(case, *rest):
    return "/".join(["conf", RUN, case, *rest])


def props(kind, **values):
    p = Properties(kind)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def publish_props(**values):
    return props(PacketTypes.PUBLISH, **values)


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def prop_dict(p):
    """A message's v5 properties as a plain dict (names as paho spells them)."""
    if p is None:
        return {}
    out = {}
    for name in p.names.keys():
        attr = name.replace(" ", "")
        if hasattr(p, attr):
            out[attr] = getattr(p, attr)
    return out


class Client:
    """A paho v5 client whose events land in queues the cases read."""

    def __init__(self, name, manual_ack=False):
        self.client_id = f"conf-{RUN}-{name}"
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        if args.username:
            self.c.username_pw_set(args.username, args.password)
        self.messages = queue.Queue()
        self.connack = queue.Queue()
        self.subacks = queue.Queue()
        self.acks = {}
        self.acked = threading.Condition()
        self.disconnected = threading.Event()
        self.c.on_connect = lambda c, u, flags, rc, p: self.connack.put((flags, rc, p))
        self.c.on_message = lambda c, u, m: self.messages.put((time.monotonic(), m))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put((mid, rcs))
        self.c.on_publish = self._published
        self.c.on_disconnect = lambda *a: self.disconnected.set()

    def _published(self, c, u, mid, rc, p):
        with self.acked:
            self.acks[mid] = rc
            self.acked.notify_all()

    def connect(self, clean_start=True, keepalive=60, **connect_props):
        p = props(PacketTypes.CONNECT, **connect_props) if connect_props else None
        self.disconnected.clear()
        self.c.connect(args.host, args.port, keepalive, clean_start=clean_start, properties=p)
        self.c.loop_start()
        try:
            flags, rc, cp = self.connack.get(timeout=WAIT)
        except queue.Empty:
            raise Fail(f"{self.client_id}: no CONNACK")
        check(not rc.is_failure, f"{self.client_id}: CONNACK {rc}")
        self.session_present = flags.session_present
        self.connack_props = prop_dict(cp)
        return self

    def subscribe(self, *filters, qos=1, **sub_props):
        p = props(PacketTypes.SUBSCRIBE, **sub_props) if sub_props else None
        _, mid = self.c.subscribe([(f, qos) for f in filters], properties=p)
        while True:
            try:
                got, rcs = self.subacks.get(timeout=WAIT)
            except queue.Empty:
                raise Fail(f"{self.client_id}: no SUBACK")
            if got == mid:
                return [rc.value for rc in rcs]

    def publish(self, t, payload, qos=1, retain=False, properties=None):
        info = self.c.publish(t, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0:
            return 0
        deadline = time.monotonic() + WAIT
        with self.acked:
            while info.mid not in self.acks:
                left = deadline - time.monotonic()
                check(left > 0, f"{self.client_id}: no ack for a QoS {qos} publish to {t}")
                self.acked.wait(left)
            rc = self.acks.pop(info.mid)
        check(not rc.is_failure, f"{self.client_id}: publish to {t} refused: {rc}")
        return rc.value

    def receive(self, n, within=WAIT):
        """Up to n messages within `within` seconds."""
        out = []
        deadline = time.monotonic() + within
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                out.append(self.messages.get(timeout=left)[1])
            except queue.Empty:
                break
        return out

    def quiet(self, within=QUIET):
        """Messages that arrive within `within` seconds (expected: none)."""
        return self.receive(1_000_000, within)

    def disconnect(self, **disconnect_props):
        p = props(PacketTypes.DISCONNECT, **disconnect_props) if disconnect_props else None
        self.c.disconnect(properties=p)
        self.disconnected.wait(WAIT)
        self.c.loop_stop()

    def drop(self):
        """Closes the network connection without DISCONNECT (an abnormal close: the will)."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def payloads(msgs):
    return [m.payload for m in msgs]


# --------------------------------------------------------------------------------------------
# Cases


def case_user_properties():
    """User properties reach the subscriber unaltered and in order, nothing added
    [MQTT-3.3.2-17] [MQTT-3.3.2-18]."""
    t = topic("userprops")
    sub = Client("up-sub").connect()
    sub.subscribe(t)
    pub = Client("up-pub").connect()
    sent = [("a", "1"), ("b", "2"), ("a", "3"), ("unit", "celsius"), ("é", "ü")]
    pub.publish(t, b"x", properties=publish_props(UserProperty=sent))
    got = sub.receive(1)
    check(got, "no delivery")
    up = [tuple(x) for x in prop_dict(got[0].properties).get("UserProperty", [])]
    check(up == sent, f"user properties {up} != {sent}")
    sub.disconnect()
    pub.disconnect()
    return f"{len(sent)} user properties as sent"


def case_request_response():
    """Payload Format Indicator, Content Type, Response Topic and Correlation Data are
    forwarded unaltered [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16]
    [MQTT-3.3.2-20]; request/response between two
    clients (4.10)."""
    req_t, resp_t = topic("rr", "request"), topic("rr", "response")
    responder = Client("rr-responder").connect()
    responder.subscribe(req_t)
    requester = Client("rr-requester").connect()
    requester.subscribe(resp_t)
    corr = uuid.uuid4().bytes
    requester.publish(
        req_t,
        '{"q":"ping"}'.encode(),
        properties=publish_props(
            PayloadFormatIndicator=1,
            ContentType="application/json",
            ResponseTopic=resp_t,
            CorrelationData=corr,
        ),
    )
    got = responder.receive(1)
    check(got, "the responder never received the request")
    p = prop_dict(got[0].properties)
    check(p.get("PayloadFormatIndicator") == 1, f"payload format indicator: {p}")
    check(p.get("ContentType") == "application/json", f"content type: {p}")
    check(p.get("ResponseTopic") == resp_t, f"response topic: {p}")
    check(p.get("CorrelationData") == corr, f"correlation data: {p}")
    responder.publish(
        p["ResponseTopic"], b"pong", properties=publish_props(CorrelationData=p["CorrelationData"])
    )
    answer = requester.receive(1)
    check(answer, "the requester never received the response")
    ap = prop_dict(answer[0].properties)
    check(answer[0].payload == b"pong" and ap.get("CorrelationData") == corr, f"response {ap}")
    responder.disconnect()
    requester.disconnect()
    return "request and response matched by correlation data"


def case_message_expiry():
    """Messages queued for a disconnected session: an expired one is not delivered, the
    others carry the remaining interval [MQTT-3.3.2-5] [MQTT-3.3.2-6]."""
    t = topic("expiry")
    sub = Client("exp-sub").connect(SessionExpiryInterval=300)
    sub.subscribe(t, qos=1)
    sub.disconnect()
    pub = Client("exp-pub").connect()
    pub.publish(t, b"short", properties=publish_props(MessageExpiryInterval=2))
    pub.publish(t, b"long", properties=publish_props(MessageExpiryInterval=120))
    pub.publish(t, b"never")
    pub.disconnect()
    time.sleep(4)
    sub.connect(clean_start=False, SessionExpiryInterval=0)
    check(sub.session_present, "session not present after reconnect")
    got = sub.receive(2) + sub.quiet(QUIET)
    by = {m.payload: prop_dict(m.properties) for m in got}
    check(b"short" not in by, "the expired message was delivered")
    check(b"long" in by and b"never" in by, f"queued messages missing: {sorted(by)}")
    left = by[b"long"].get("MessageExpiryInterval")
    check(left is not None and 0 < left <= 117, f"remaining interval {left} (sent 120, 4 s ago)")
    check("MessageExpiryInterval" not in by[b"never"], "expiry on a message sent without one")
    sub.disconnect()
    return f"expired dropped; remaining interval {left} of 120"


def case_new_subscription_only_after_suback():
    """A new subscription gets only messages published after its SUBACK — for a clean
    start and for a filter added to a persistent session with older messages still queued
    (3.8.4; 4.1: a session's subscriptions decide what it is sent)."""
    t, t2, t3 = topic("fresh", "a"), topic("fresh", "b"), topic("fresh", "c")
    pub = Client("fresh-pub").connect()
    pub.publish(t, b"before")
    sub = Client("fresh-sub").connect()
    sub.subscribe(t)
    pub.publish(t, b"after")
    got = sub.receive(1) + sub.quiet(1.0)
    check(payloads(got) == [b"after"], f"clean start got {payloads(got)}")
    sub.disconnect()
    # A persistent session subscribed to t2 is away while messages go to t2 and t3; back,
    # it subscribes t3: it gets t2's queued message, but none of t3's from before.
    per = Client("fresh-persistent").connect(SessionExpiryInterval=300)
    per.subscribe(t2)
    per.disconnect()
    pub.publish(t2, b"queued")
    pub.publish(t3, b"before-suback")
    per.connect(clean_start=False, SessionExpiryInterval=0)
    per.subscribe(t3)
    pub.publish(t3, b"after-suback")
    got = per.receive(2) + per.quiet(1.5)
    seen = sorted((m.topic, m.payload) for m in got)
    want = sorted([(t2, b"queued"), (t3, b"after-suback")])
    check(seen == want, f"persistent session got {seen}, want {want}")
    per.disconnect()
    pub.disconnect()
    return "only what followed each SUBACK (plus the session's own queue)"


def case_client_topic_aliases():
    """Topic aliases the client sets are applied across publishes on its connection,
    reassigned when it sends a new topic with a known alias [MQTT-3.3.2-12]."""
    ta, tb, tc = topic("alias-in", "a"), topic("alias-in", "b"), topic("alias-in", "c")
    sub = Client("ain-sub").connect()
    sub.subscribe(topic("alias-in", "#"))
    pub = Client("ain-pub").connect()
    tam = pub.connack_props.get("TopicAliasMaximum", 0)
    check(tam >= 2, f"Topic Alias Maximum {tam} in CONNACK")
    seq = [(ta, 1, b"1"), ("", 1, b"2"), (tb, 2, b"3"), ("", 1, b"4"), ("", 2, b"5"),
           (tc, 1, b"6"), ("", 1, b"7")]
    for t, alias, body in seq:
        pub.publish(t, body, properties=publish_props(TopicAlias=alias))
    got = sub.receive(len(seq))
    seen = [(m.topic, m.payload) for m in got]
    want = [(ta, b"1"), (ta, b"2"), (tb, b"3"), (ta, b"4"), (tb, b"5"), (tc, b"6"), (tc, b"7")]
    check(sorted(seen) == sorted(want), f"got {seen}")
    sub.disconnect()
    pub.disconnect()
    return f"{len(seq)} publishes over 2 aliases, one reassigned"


def publish_size(t, payload_len, qos=1):
    """Bytes of a v5 PUBLISH without properties (as a broker sends it to a client that
    set no Topic Alias Maximum and no subscription identifier): fixed header, topic, packet
    id, property length 0, payload (3.3)."""
    rest = 2 + len(t.encode()) + (2 if qos else 0) + 1 + payload_len
    return 1 + len(varint(rest)) + rest


def case_maximum_packet_size():
    """The client's Maximum Packet Size: a message whose PUBLISH would be larger is not sent
    to it [MQTT-3.1.2-24] and is treated as delivered, so later ones still come
    [MQTT-3.1.2-25]; one exactly at the limit is sent."""
    limit = 512
    t = topic("maxpacket")
    fits = next(n for n in range(limit, 0, -1) if publish_size(t, n) <= limit)
    check(publish_size(t, fits) == limit, "no payload size gives a packet of exactly 512")
    sub = Client("mps-sub").connect(MaximumPacketSize=limit)
    sub.subscribe(t, qos=1)
    pub = Client("mps-pub").connect()
    sent = [b"small-1", b"L" * 2000, b"E" * fits, b"O" * (fits + 1), b"small-2"]
    for body in sent:
        pub.publish(t, body)
    got = sub.receive(3) + sub.quiet(1.0)
    sizes = [publish_size(t, len(m.payload)) for m in got]
    check(all(s <= limit for s in sizes), f"packets above {limit} bytes were sent: {sizes}")
    want = [b"small-1", b"E" * fits, b"small-2"]
    check(payloads(got) == want,
          f"got payloads of {[len(p) for p in payloads(got)]} bytes, "
          f"want 7, {fits} (a packet of exactly {limit}) and 7")
    sub.disconnect()
    pub.disconnect()
    return (f"2 000-byte and {limit + 1}-byte packets skipped; the {limit}-byte one "
            "and the later ones delivered")


def case_receive_maximum():
    """The client's Receive Maximum bounds unacknowledged QoS 1 and QoS 2 deliveries
    [MQTT-3.3.4-9], with QoS 1 and 2 mixed; acknowledging lets the rest through."""
    t = topic("recvmax")
    sub = Client("rm-sub", manual_ack=True).connect(ReceiveMaximum=2)
    sub.subscribe(t, qos=2)
    pub = Client("rm-pub").connect()
    n = 8
    for i in range(n):
        pub.publish(t, f"m{i}".encode(), qos=1 + i % 2)
    def describe(ms):
        return ", ".join(
            f"{m.payload.decode()} (QoS {m.qos}{', PUBREC sent, no PUBCOMP' if m.qos == 2 else ''})"
            for m in ms)

    first = sub.receive(2)
    check(len(first) == 2, f"{len(first)} deliveries before any ack")
    extra = sub.quiet(1.5)
    check(not extra, "unacknowledged with Receive Maximum 2: " + describe(first + extra))
    got = list(first)
    while len(got) < n:
        # Acknowledge the oldest of the two; one more may come, not two.
        m = got[len(got) - 2]
        sub.c.ack(m.mid, m.qos)
        more = sub.receive(1, within=WAIT)
        check(more, f"nothing after acknowledging {m.payload.decode()}; {len(got)} of {n}")
        got += more
        late = sub.quiet(0.3)
        check(not late, f"after acknowledging {m.payload.decode()}, unacknowledged with "
              "Receive Maximum 2: " + describe(got[-2:] + late))
    for m in got[-2:]:
        sub.c.ack(m.mid, m.qos)
    qos = [m.qos for m in got]
    check(sorted(payloads(got)) == sorted(f"m{i}".encode() for i in range(n)), payloads(got))
    check(set(qos) == {1, 2}, f"QoS of deliveries {qos}")
    sub.disconnect()
    pub.disconnect()
    return f"{n} deliveries (QoS {qos}), never more than 2 unacknowledged"


def will_client(name, will_t, delay, expiry, body):
    c = Client(name)
    wp = props(
        PacketTypes.WILLMESSAGE,
        WillDelayInterval=delay,
        UserProperty=[("k", "v1"), ("k", "v2")],
        ContentType="text/plain",
        PayloadFormatIndicator=1,
        ResponseTopic=will_t + "/r",
        CorrelationData=b"\x00\x01will",
    )
    c.c.will_set(will_t, body, qos=1, properties=wp)
    return c.connect(SessionExpiryInterval=expiry)


def check_will(m, t, body):
    p = prop_dict(m.properties)
    check(m.topic == t and m.payload == body, f"will {m.topic} {m.payload}")
    check([tuple(x) for x in p.get("UserProperty", [])] == [("k", "v1"), ("k", "v2")],
          f"will user properties {p}")
    check(p.get("ContentType") == "text/plain", f"will content type {p}")
    check(p.get("PayloadFormatIndicator") == 1, f"will payload format {p}")
    check(p.get("ResponseTopic") == t + "/r", f"will response topic {p}")
    check(p.get("CorrelationData") == b"\x00\x01will", f"will correlation data {p}")


def case_will_delay():
    """The will is published once, Will Delay Interval after an abnormal close, with its
    payload and properties, user properties in order ([MQTT-3.1.2-8],
    [MQTT-3.1.3-10]; 3.1.3.2)."""
    t = topic("will", "delay")
    body = "gone 🦉".encode()
    watcher = Client("will-watch").connect()
    watcher.subscribe(t)
    w = will_client("will-delay", t, 2, 60, body)
    w.drop()
    dropped = time.monotonic()
    early = watcher.quiet(1.2)
    check(not early, f"will before its delay: {payloads(early)}")
    got = watcher.receive(1)
    check(got, "no will within the delay plus 8 s")
    after = time.monotonic() - dropped
    check_will(got[0], t, body)
    again = watcher.quiet(2.5)
    check(not again, f"will published {1 + len(again)} times")
    watcher.disconnect()
    return f"one will {after:.1f} s after the close (delay 2 s)"


def case_will_delay_capped_by_session_expiry():
    """A will whose delay outlasts the session is published when the session ends:
    after min(Will Delay Interval, Session Expiry Interval) ([MQTT-3.1.2-8]; 3.1.3.2.2)."""
    t = topic("will", "capped")
    watcher = Client("will-cap-watch").connect()
    watcher.subscribe(t)
    w = will_client("will-capped", t, 60, 2, b"session over")
    w.drop()
    dropped = time.monotonic()
    got = watcher.receive(1, within=10)
    check(got, "no will within 10 s (session expiry 2 s, will delay 60 s)")
    after = time.monotonic() - dropped
    check(after >= 1.5, f"will after {after:.1f} s, before the session expired")
    check_will(got[0], t, b"session over")
    watcher.disconnect()
    return f"will {after:.1f} s after the close (delay 60 s, session expiry 2 s)"


def case_will_cancelled_by_reconnect():
    """A client that reconnects within its Will Delay Interval has no will published
    ([MQTT-3.1.2-8]; 3.1.3.2.2)."""
    t = topic("will", "back")
    watcher = Client("will-back-watch").connect()
    watcher.subscribe(t)
    w = will_client("will-back", t, 3, 60, b"should not appear")
    w.drop()
    time.sleep(1.0)
    w2 = Client("will-back")
    w2.connect(clean_start=False, SessionExpiryInterval=0)
    got = watcher.quiet(4.0)
    check(not got, f"will published though the client came back: {payloads(got)}")
    w2.disconnect()
    return "no will after a reconnect within the delay"


def case_subscribe_denied():
    """A filter the broker's authorization denies gets SUBACK 0x87 Not authorized, the
    others in the same SUBSCRIBE are granted (3.9.3), and it gets no deliveries."""
    deny = args.deny_filter
    allowed = topic("deny", "allowed")
    sub = Client("deny-sub").connect()
    rcs = sub.subscribe(deny, allowed)
    pub = Client("deny-pub").connect()
    marker = f"denied-{RUN}".encode()
    pub.publish(deny, marker, qos=0)
    pub.publish(allowed, b"allowed")
    got = sub.receive(1) + sub.quiet(1.5)
    seen = "deliveries " + str(payloads(got))
    check(rcs[0] == 0x87,
          f"SUBACK codes {[hex(c) for c in rcs]} (want 0x87 for {deny}); {seen}")
    check(rcs[1] in (0, 1, 2), f"the allowed filter got {hex(rcs[1])}")
    check(payloads(got) == [b"allowed"], seen)
    sub.disconnect()
    pub.disconnect()
    return f"{deny} 0x87, no deliveries; allowed filter granted"


def raw_connect(keepalive):
    """A v5 CONNECT on a plain socket (clean start, keep-alive `keepalive`); returns the
    socket and the CONNACK's properties as {id: value} for the ones read here."""
    s = socket.create_connection((args.host, args.port), timeout=WAIT)
    cid = f"conf-{RUN}-raw-ka".encode()
    flags = 0x02
    payload = struct.pack(">H", len(cid)) + cid
    if args.username:
        flags |= 0x80 | 0x40
        u, p = args.username.encode(), args.password.encode()
        payload += struct.pack(">H", len(u)) + u + struct.pack(">H", len(p)) + p
    var = b"\x00\x04MQTT\x05" + bytes([flags]) + struct.pack(">H", keepalive) + b"\x00"
    body = var + payload
    s.sendall(bytes([0x10]) + varint(len(body)) + body)
    first = s.recv(1)
    check(first == b"\x20", f"not a CONNACK: {first!r}")
    length = read_varint(s)
    data = b""
    while len(data) < length:
        chunk = s.recv(length - len(data))
        check(chunk, "closed inside the CONNACK")
        data += chunk
    check(data[1] == 0, f"CONNACK reason {data[1]:#x}")
    return s, data


def varint(n):
    out = b""
    while True:
        b, n = n % 128, n // 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def read_varint(s):
    mult, value = 1, 0
    while True:
        b = s.recv(1)[0]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value
        mult *= 128


def case_server_keep_alive():
    """Server Keep Alive in CONNACK when the broker is configured with one; the client must
    use it [MQTT-3.2.2-21], and the broker holds the client to it (3.1.2.10)."""
    want = args.server_keep_alive
    check(want > 0, "no --server-keep-alive: the broker is not configured with one")
    c = Client("ska").connect(keepalive=60)
    got = c.connack_props.get("ServerKeepAlive")
    check(got == want, f"Server Keep Alive {got} in CONNACK (want {want})")
    c.disconnect()
    # A client that said 60 s and then stays silent is closed after 1.5 × the server's value.
    s, _ = raw_connect(60)
    start = time.monotonic()
    s.settimeout(want * 1.5 + 6)
    closed = None
    try:
        while True:
            data = s.recv(1024)  # a v5 broker may send DISCONNECT 0x8D first
            if not data:
                closed = time.monotonic() - start
                break
    except socket.timeout:
        pass
    except OSError:
        closed = time.monotonic() - start
    s.close()
    check(closed is not None, f"a silent client was not closed within {want * 1.5 + 6:.0f} s")
    check(closed >= want, f"closed after {closed:.1f} s, before the keep-alive of {want} s")
    return f"Server Keep Alive {got}; a silent client closed after {closed:.1f} s"


def case_server_topic_aliases():
    """The broker may use topic aliases towards the client, up to the Topic Alias Maximum
    the client sent [MQTT-3.1.2-26] [MQTT-3.3.2-11], never 0 [MQTT-3.3.2-8] (a zero-length topic
    only with an alias the broker set on this connection)."""
    ts = [topic("alias-out", f"device-{i}", "telemetry") for i in range(3)]
    sub = Client("aout-sub").connect(TopicAliasMaximum=2)
    sub.subscribe(topic("alias-out", "#"))
    pub = Client("aout-pub").connect()
    sent = []
    for round_ in range(3):
        for t in ts:
            body = f"{t}|{round_}".encode()
            pub.publish(t, body)
            sent.append((t, body))
    got = sub.receive(len(sent))
    aliases, used, resolved = {}, 0, []
    for m in got:
        alias = getattr(m.properties, "TopicAlias", None) if m.properties else None
        t = m.topic
        if alias is not None:
            check(1 <= alias <= 2, f"alias {alias} beyond the client's Topic Alias Maximum 2")
            if t:
                aliases[alias] = t
            else:
                check(alias in aliases, f"alias {alias} used before it was set")
                t = aliases[alias]
                used += 1
        else:
            check(t, "empty topic without an alias")
        resolved.append((t, m.payload))
    check(sorted(resolved) == sorted(sent), f"resolved {resolved}")
    check(used > 0, "no delivery used a topic alias (full topic names only)")
    sub.disconnect()
    pub.disconnect()
    return f"{used} of {len(got)} deliveries by alias only, aliases {sorted(aliases)}"


def case_session_expiry():
    """A session outlives its connection for its Session Expiry Interval and no longer: back
    within it, the session is present with what was queued for it; back after it, a new
    session with no subscription ([MQTT-3.1.2-23], 3.1.2.11.2; [MQTT-3.2.2-2], [MQTT-3.2.2-3])."""
    t = topic("session-expiry")
    pub = Client("sexp-pub").connect()
    sub = Client("sexp-sub").connect(SessionExpiryInterval=2)
    sub.subscribe(t)
    sub.disconnect()
    pub.publish(t, b"kept")
    sub.connect(clean_start=False, SessionExpiryInterval=2)
    check(sub.session_present, "back within the expiry interval: no session present")
    got = sub.receive(1)
    check(payloads(got) == [b"kept"], f"within the interval got {payloads(got)}")
    sub.disconnect()
    time.sleep(4)  # the 2 s interval, with room: expiry is the condition under test
    pub.publish(t, b"after-expiry")
    sub.connect(clean_start=False, SessionExpiryInterval=0)
    check(not sub.session_present, "the session outlived its 2 s expiry interval")
    got = sub.quiet(1.5)
    check(got == [], f"an expired session still received {payloads(got)}")
    sub.disconnect()
    pub.disconnect()
    return "kept within 2 s, gone after 4 s"


def raw_publish(s, t, alias, payload=b"x"):
    """A v5 QoS 0 PUBLISH of `payload` to topic `t` (may be empty), with Topic Alias `alias`
    unless it is None."""
    props = b"" if alias is None else b"\x23" + struct.pack(">H", alias)
    body = struct.pack(">H", len(t.encode())) + t.encode() + varint(len(props)) + props + payload
    s.sendall(bytes([0x30]) + varint(len(body)) + body)


def raw_disconnect_reason(s):
    """The reason code of the DISCONNECT the server sends next on `s`; a string saying what
    came instead (another packet, the connection closed without one, nothing)."""
    try:
        first = s.recv(1)
    except socket.timeout:
        return "no answer"
    if first != b"\xe0":
        return f"packet {first!r}" if first else "closed without a DISCONNECT"
    length = read_varint(s)
    data = s.recv(length) if length else b""
    return data[0] if data else 0


def case_invalid_topic_aliases():
    """A Topic Alias above the Topic Alias Maximum the broker sent in its CONNACK (which the
    client MUST NOT send, [MQTT-3.3.2-9]) ends the connection with DISCONNECT 0x94 (Topic
    Alias invalid, 3.3.2.3.4); an alias with an empty topic the connection never set, and an
    empty topic without an alias, are refused too (Protocol Errors, 3.3.2.3.4 and 3.3.4). An
    alias at the maximum is set and used."""
    probe = Client("alias-max").connect()
    tam = probe.connack_props.get("TopicAliasMaximum", 0)
    probe.disconnect()
    check(tam >= 1, f"Topic Alias Maximum {tam} in CONNACK")
    s, _ = raw_connect(60)
    t = topic("alias-bad", "a")
    raw_publish(s, t, tam)
    raw_publish(s, "", tam)
    s.sendall(b"\xc0\x00")
    check(s.recv(2) == b"\xd0\x00", f"alias {tam} (the maximum) set and used: no PINGRESP")
    raw_publish(s, t, tam + 1)
    reason = raw_disconnect_reason(s)
    check(reason == 0x94, f"alias {tam + 1} above the maximum {tam}: {reason}")
    s.close()
    # A Protocol Error: the server closes, with DISCONNECT 0x94 or 0x82 or without one (4.13:
    # sending the DISCONNECT first is a MAY).
    refused = (0x94, 0x82, "closed without a DISCONNECT")
    for what, alias in [("an alias never set, with an empty topic", 1),
                        ("an empty topic without an alias", None)]:
        s, _ = raw_connect(60)
        raw_publish(s, "", alias)
        reason = raw_disconnect_reason(s)
        check(reason in refused, f"{what}: {reason}")
        s.close()
    return f"alias {tam + 1} above the maximum {tam}: 0x94; an unknown alias and no topic: refused"


CASES = [
    ("user_properties", case_user_properties),
    ("request_response", case_request_response),
    ("message_expiry", case_message_expiry),
    ("new_subscription_only_after_suback", case_new_subscription_only_after_suback),
    ("session_expiry", case_session_expiry),
    ("client_topic_aliases", case_client_topic_aliases),
    ("invalid_topic_aliases", case_invalid_topic_aliases),
    ("maximum_packet_size", case_maximum_packet_size),
    ("receive_maximum", case_receive_maximum),
    ("will_delay", case_will_delay),
    ("will_delay_capped_by_session_expiry", case_will_delay_capped_by_session_expiry),
    ("will_cancelled_by_reconnect", case_will_cancelled_by_reconnect),
    ("subscribe_denied", case_subscribe_denied),
    ("server_keep_alive", case_server_keep_alive),
    ("server_topic_aliases", case_server_topic_aliases),
]


def main():
    wanted = set(filter(None, args.cases.split(",")))
    unknown = wanted - {name for name, _ in CASES}
    if unknown:
        sys.exit(f"unknown cases: {sorted(unknown)}")
    for name, fn in CASES:
        if wanted and name not in wanted:
            continue
        started = time.monotonic()
        try:
            detail, ok = fn(), True
        except Fail as e:
            detail, ok = str(e), False
        except Exception as e:  # a client error is a failed case, not a crashed run
            detail, ok = f"{type(e).__name__}: {e} {traceback.format_exc(limit=2)}", False
        print(json.dumps({"case": name, "ok": ok, "detail": detail,
                          "secs": round(time.monotonic() - started, 1)}), flush=True)


main()
