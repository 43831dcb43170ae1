"""What barnabas' AMQP listener says in its Open frame, and how a large message travels, seen
by python3-qpid-proton (Debian) as users run it.

usage:
  amqp_open.py URL ADDRESS SIZE
      opens a connection (SASL ANONYMOUS), reads the gateway's max-frame-size, channel-max and
      idle time-out from its Open frame, then sends one message whose body is SIZE bytes
      (b"0123456789" repeated) to ADDRESS and waits for it to be accepted. Frames are traced
      (PN_TRACE_FRM, on stderr of a child process) to count the TRANSFER frames the message
      went out in. Prints {"max_frame_size", "channel_max", "idle_timeout_ms", "transfers",
      "accepted"}.
"""
import json
import os
import re
import subprocess
import sys


def child(url, address, size):
    from proton import Message
    from proton.utils import BlockingConnection

    conn = BlockingConnection(url, timeout=60, allowed_mechs="ANONYMOUS")
    transport = conn.conn.transport
    seen = {
        "max_frame_size": transport.remote_max_frame_size,
        "channel_max": transport.remote_channel_max,
        # proton reports it in seconds (a float), the Open frame carries milliseconds
        "idle_timeout_ms": round(transport.remote_idle_timeout * 1000),
    }
    sender = conn.create_sender(address)
    body = (b"0123456789" * (size // 10 + 1))[:size]
    sender.send(Message(body=body))  # blocks until settled; raises if not accepted
    seen["accepted"] = True
    conn.close()
    print(json.dumps(seen))


def main():
    if sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    url, address, size = sys.argv[1], sys.argv[2], sys.argv[3]
    env = dict(os.environ, PN_TRACE_FRM="1")
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, address, size],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        sys.exit(f"child failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-4000:]}")
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # Outgoing frames are traced as "-> @transfer(20) [...]" (proton 0.37: "[..]:0 -> @transfer").
    seen["transfers"] = len(re.findall(r"-> @transfer\(20\)", out.stderr))
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
