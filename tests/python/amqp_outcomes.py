"""python-qpid-proton senders that look at each transfer's outcome as the gateway sends it.

usage:
  amqp_outcomes.py order URL ADDRESS COUNT BIG_EVERY BIG_SIZE
      sends COUNT unsettled transfers at once (as far as the link credit goes), tagged "0",
      "1", …; every BIG_EVERY-th one (n % BIG_EVERY == BIG_EVERY - 1) has a body of BIG_SIZE
      bytes, the others "order-n". Prints the outcomes in the order proton saw their
      dispositions arrive: a JSON list of {"tag", "outcome", "condition"}
  amqp_outcomes.py undecodable URL ADDRESS
      on one link: a transfer whose payload is an amqp-value section cut short (a str8 that
      says 200 bytes and holds 3), then a transfer whose amqp-value is an int (a body of
      another type), then a good one ("after-undecodable"); prints a JSON list of
      {"outcome", "condition", "description"}, one per transfer, in that order
"""
import json
import sys

from proton import Delivery, Message
from proton.handlers import MessagingHandler
from proton.reactor import Container
from proton.utils import BlockingConnection

OUTCOMES = {
    Delivery.ACCEPTED: "accepted",
    Delivery.REJECTED: "rejected",
    Delivery.RELEASED: "released",
    Delivery.MODIFIED: "modified",
}


def outcome_of(delivery):
    condition = delivery.remote.condition
    return {
        "outcome": OUTCOMES.get(delivery.remote_state, str(delivery.remote_state)),
        "condition": condition.name if condition is not None else None,
        "description": condition.description if condition is not None else None,
    }


class Ordered(MessagingHandler):
    """Sends every transfer as soon as there is credit and notes each outcome as it comes."""

    def __init__(self, url, address, count, big_every, big_size):
        super().__init__(auto_settle=True)
        self.url, self.address, self.count = url, address, count
        self.big_every, self.big_size = big_every, big_size
        self.sent = 0
        self.seen = []
        self.failure = None

    def on_start(self, event):
        conn = event.container.connect(self.url, allowed_mechs="PLAIN ANONYMOUS")
        event.container.create_sender(conn, self.address)
        self.timer = event.container.schedule(60, self)

    def on_timer_task(self, event):
        self.failure = f"only {len(self.seen)} of {self.count} outcomes within 60 s"
        event.container.stop()

    def on_sendable(self, event):
        while event.sender.credit and self.sent < self.count:
            n = self.sent
            big = n % self.big_every == self.big_every - 1
            body = "x" * self.big_size if big else f"order-{n}"
            event.sender.send(Message(body=body), tag=str(n))
            self.sent += 1

    def note(self, event):
        tag = event.delivery.tag
        if isinstance(tag, bytes):
            tag = tag.decode()
        self.seen.append({"tag": tag, **outcome_of(event.delivery)})
        if len(self.seen) == self.count:
            self.timer.cancel()
            event.connection.close()

    on_accepted = note
    on_rejected = note
    on_released = note
    on_modified = note

    def on_transport_error(self, event):
        self.failure = f"transport error: {event.transport.condition}"

    def on_link_error(self, event):
        self.failure = f"link error: {event.link.remote_condition}"
        event.connection.close()


def order(url, address, count, big_every, big_size):
    handler = Ordered(url, address, count, big_every, big_size)
    Container(handler).run()
    if handler.failure:
        sys.exit(f"{handler.failure}; seen: {handler.seen}")
    print(json.dumps(handler.seen))


def send_raw(connection, sender, tag, payload):
    """One unsettled transfer of these payload bytes; returns its outcome."""
    connection.wait(lambda: sender.link.credit > 0, msg="link credit", timeout=30)
    delivery = sender.link.delivery(tag)
    sender.link.stream(payload)
    sender.link.advance()
    connection.wait(lambda: delivery.remote_state != 0 or delivery.settled,
                    msg=f"an outcome for transfer {tag!r}", timeout=30)
    out = outcome_of(delivery)
    delivery.settle()
    return out


def undecodable(url, address):
    conn = BlockingConnection(url, timeout=30, allowed_mechs="PLAIN ANONYMOUS")
    sender = conn.create_sender(address)
    # 0x00 0x53 0x77: the amqp-value section; 0xa1 200: a str8 of 200 bytes; then only 3.
    cut_short = b"\x00\x53\x77\xa1\xc8abc"
    answers = [send_raw(conn, sender, "cut-short", cut_short)]
    answers.append(send_raw(conn, sender, "an-int", Message(body=42).encode()))
    answers.append(send_raw(conn, sender, "good", Message(body="after-undecodable").encode()))
    conn.close()
    print(json.dumps(answers))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "order":
        order(sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:7]))
    elif cmd == "undecodable":
        undecodable(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
