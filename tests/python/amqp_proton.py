"""python3-qpid-proton (Debian) against barnabas' AMQP listener, as users run it.

usage:
  amqp_proton.py send URL ADDRESS COUNT [PREFIX]
      BlockingConnection sender; COUNT messages (bodies PREFIX-n, default proton-n) with key
      annotation, application property and message-id; prints {"accepted": n}
  amqp_proton.py receive URL SOURCE COUNT ACCEPT [TIMEOUT]
      BlockingReceiver on SOURCE; takes COUNT messages, accepts the first ACCEPT of them, then
      closes the connection without settling the rest; prints a JSON list of
      {"body", "annotations", "properties"}
  amqp_proton.py load URL ADDRESS PREFIX
      sends PREFIX-n until killed, printing each body once the gateway accepted it
  amqp_proton.py idle URL SOURCE COUNT
      a receiver on SOURCE that grants no credit until a line arrives on stdin, then takes
      and accepts COUNT messages; prints {"received": n, "first": body, "last": body}
  amqp_proton.py send_props URL ADDRESS JSON
      one message whose application-properties are the JSON object; prints {"accepted": 1}
  amqp_proton.py receivers URL SOURCE COUNT
      COUNT receiver links on SOURCE over one connection; prints {"alive": n, "errors": [...]}
      (a link the gateway closed is an error, one waiting for messages is alive)
  amqp_proton.py try URL send|receive ADDRESS
      one message sent to (or received from) ADDRESS; a refusal (proton's exceptions, a
      transfer not accepted) is an answer, printed as {"ok", "error", "kind", "condition",
      "outcome", "sasl_outcome"}; any other error fails the script; env AMQP_CA (amqps),
      AMQP_CERT/AMQP_KEY (client certificate), AMQP_MECHS (SASL mechanisms offered),
      AMQP_NO_SASL (skip SASL: the AMQP header straight away)
"""
import json
import os
import sys
import time

from proton import Delivery, Message, ProtonException, SSLDomain, symbol
from proton.utils import BlockingConnection


def send(url, address, count, prefix="proton"):
    conn = BlockingConnection(url, timeout=60, allowed_mechs="PLAIN ANONYMOUS")
    sender = conn.create_sender(address)
    accepted = 0
    for i in range(count):
        m = Message(
            body=f"{prefix}-{i}",
            id=f"msg-{i}",
            properties={"seq": i, "origin": "proton"},
            annotations={symbol("x-opt-kafka-key"): f"pk{i % 3}"},
        )
        sender.send(m)  # blocks until the gateway settles it; raises if rejected
        accepted += 1
    conn.close()
    print(json.dumps({"accepted": accepted}))


def plain(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode(errors="replace")
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def receive(url, source, count, accept, timeout):
    conn = BlockingConnection(url, timeout=timeout, allowed_mechs="PLAIN ANONYMOUS")
    receiver = conn.create_receiver(source, credit=count)
    out = []
    for i in range(count):
        m = receiver.receive(timeout=timeout)
        out.append(
            {
                "body": plain(m.body),
                "annotations": {str(k): plain(v) for k, v in (m.annotations or {}).items()},
                "properties": {str(k): plain(v) for k, v in (m.properties or {}).items()},
            }
        )
        if i < accept:
            receiver.accept()
    # The rest stays unsettled: closing the connection leaves them to be redelivered.
    conn.close()
    print(json.dumps(out))


SASL_OUTCOMES = {0: "ok", 1: "auth", 2: "sys", 3: "sys-perm", 4: "sys-temp"}


class Recording(BlockingConnection):
    """A BlockingConnection that notes what the transport said when it closed (its error
    condition and the SASL outcome): the refusal of a login is only visible there."""

    seen = {}

    def on_transport_closed(self, event):
        transport = event.transport
        if transport.condition is not None:
            Recording.seen["transport_condition"] = transport.condition.name
        try:
            outcome = transport.sasl().outcome
        except Exception:  # no SASL layer (AMQP_NO_SASL)
            outcome = None
        if outcome is not None:
            Recording.seen["sasl_outcome"] = SASL_OUTCOMES.get(outcome, str(outcome))
        super().on_transport_closed(event)


class Refused(Exception):
    """A transfer the gateway settled with another outcome than accepted."""

    def __init__(self, delivery):
        outcomes = {Delivery.REJECTED: "rejected", Delivery.RELEASED: "released",
                    Delivery.MODIFIED: "modified"}
        self.outcome = outcomes.get(delivery.remote_state, str(delivery.remote_state))
        condition = delivery.remote.condition
        self.condition = condition.name if condition is not None else None
        super().__init__(f"transfer {self.outcome}: {condition}")


def attempt(url, what, address):
    """One send or receive; prints {"ok", "error", "kind", "condition", "outcome",
    "sasl_outcome"}: `kind` is the exception's class (a refusal is an answer here), `condition`
    the AMQP error condition of the closed link or connection (or of the transport, for a
    refused login), `outcome` a send's delivery outcome, `sasl_outcome` the SASL outcome when
    the connection failed. Only proton's own exceptions are answers: anything else fails the
    script (and so the test). A send's body is "try", or AMQP_BODY_BYTES bytes of "x"."""
    ssl_domain = None
    if os.environ.get("AMQP_CA"):  # amqps: trust this CA, check the host name
        ssl_domain = SSLDomain(SSLDomain.MODE_CLIENT)
        ssl_domain.set_trusted_ca_db(os.environ["AMQP_CA"])
        ssl_domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
        if os.environ.get("AMQP_CERT"):  # a client certificate (for SASL EXTERNAL)
            ssl_domain.set_credentials(os.environ["AMQP_CERT"], os.environ["AMQP_KEY"], None)
    mechs = os.environ.get("AMQP_MECHS", "PLAIN ANONYMOUS")
    extra = {"sasl_enabled": False} if os.environ.get("AMQP_NO_SASL") else {}
    answer = {"ok": False, "error": "", "kind": "", "condition": None, "outcome": None,
              "sasl_outcome": None}
    try:
        conn = Recording(url, timeout=20, allowed_mechs=mechs, ssl_domain=ssl_domain, **extra)
        try:
            if what == "send":
                body = "x" * int(os.environ["AMQP_BODY_BYTES"]) if os.environ.get(
                    "AMQP_BODY_BYTES") else "try"
                delivery = conn.create_sender(address).send(Message(body=body), error_states=[])
                if delivery.remote_state != Delivery.ACCEPTED:
                    raise Refused(delivery)
                answer["outcome"] = "accepted"
            else:
                conn.create_receiver(address, credit=1).receive(timeout=20)
                conn.receiver = None
        finally:
            conn.close()
        answer["ok"] = True
    except (ProtonException, Refused) as e:  # the refusal is what the caller checks
        answer["error"] = f"{type(e).__name__}: {e}"
        answer["kind"] = type(e).__name__
        answer["condition"] = getattr(e, "condition", None) or Recording.seen.get(
            "transport_condition")
        answer["outcome"] = getattr(e, "outcome", None)
        answer["sasl_outcome"] = Recording.seen.get("sasl_outcome")
    print(json.dumps(answer))


def send_props(url, address, props):
    conn = BlockingConnection(url, timeout=30, allowed_mechs="PLAIN ANONYMOUS")
    conn.create_sender(address).send(Message(body="with-props", properties=json.loads(props)))
    conn.close()
    print(json.dumps({"accepted": 1}))


def receivers(url, source, count):
    conn = BlockingConnection(url, timeout=30, allowed_mechs="PLAIN ANONYMOUS")
    links, errors = [], []
    for _ in range(count):
        try:
            links.append(conn.create_receiver(source, credit=1, name=f"receiver-{len(links)}"))
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    time.sleep(1)
    alive = 0
    for link in links:
        try:
            link.receive(timeout=0.3)
        except Exception as e:
            if type(e).__name__ == "Timeout":
                alive += 1
            else:
                errors.append(f"{type(e).__name__}: {e}")
    try:
        conn.close()
    except Exception:
        pass
    print(json.dumps({"alive": alive, "errors": errors}))


def load(url, address, prefix):
    """Sends PREFIX-n one at a time until killed; prints each body once it is accepted.
    Reconnects after any error (a rejected or released transfer, a dropped connection)."""
    n = 0
    while True:
        try:
            conn = BlockingConnection(url, timeout=30, allowed_mechs="PLAIN ANONYMOUS")
            sender = conn.create_sender(address)
            while True:
                body = f"{prefix}-{n}"
                n += 1
                sender.send(Message(body=body))  # returns once accepted, raises otherwise
                print(body, flush=True)
        except Exception:
            time.sleep(0.2)


def idle(url, source, count):
    """A receiver without credit until stdin says go; then it reads COUNT messages."""
    conn = BlockingConnection(url, timeout=60, allowed_mechs="PLAIN ANONYMOUS")
    receiver = conn.create_receiver(source, credit=0)
    sys.stdin.readline()
    bodies = []
    for _ in range(count):
        if receiver.link.credit < 10:
            receiver.flow(100)
        bodies.append(plain(receiver.receive(timeout=60).body))
        receiver.accept()
    conn.close()
    print(json.dumps({"received": len(bodies), "first": bodies[0], "last": bodies[-1]}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "load":
        load(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "idle":
        idle(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "send_props":
        send_props(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "receivers":
        receivers(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "try":
        attempt(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "send":
        send(sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:6])
    elif cmd == "receive":
        timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 60
        receive(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), timeout)
    else:
        sys.exit(f"unknown command {cmd}")
