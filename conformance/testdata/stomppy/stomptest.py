"""Shared helpers for the stomp.py conformance scripts.

Each script connects to a Tandem broker with stomp.py, drives one scenario
and prints what it observed as JSON lines on stdout, one object per event:
{"event": "receipt", "id": ...}, {"event": "message", "headers": ...,
"body": ...}, and so on. The Go test (conformance/stomppy_test.go) judges
those events against the STOMP specification. A wait that times out prints
{"event": "timeout", "waiting_for": ...} and the script exits with status 3;
an ERROR frame from the broker is printed as {"event": "error", ...}.

Nothing here sleeps to order events: every wait is on a frame arriving,
bounded by WAIT seconds.
"""

import argparse
import json
import queue
import sys
import threading
import time

import stomp

# Bound on every wait for a frame; far above what any step takes.
WAIT = 10.0


def emit(event, **fields):
    fields["event"] = event
    print(json.dumps(fields, sort_keys=True), flush=True)


def args(extra=None):
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--version", choices=["1.0", "1.1", "1.2"], required=True)
    if extra:
        extra(p)
    return p.parse_args()


class Timeout(Exception):
    pass


class Recorder(stomp.ConnectionListener):
    """Queues every frame stomp.py hands to the listener."""

    def __init__(self, name):
        self.name = name
        self.frames = queue.Queue()
        self.heartbeats = 0
        self.heartbeat_cond = threading.Condition()
        self.disconnected = threading.Event()

    def on_connected(self, frame):
        self.frames.put(("connected", frame))

    def on_message(self, frame):
        self.frames.put(("message", frame))

    def on_receipt(self, frame):
        self.frames.put(("receipt", frame))

    def on_error(self, frame):
        emit("error", conn=self.name, headers=dict(frame.headers), body=frame.body)
        self.frames.put(("error", frame))

    def on_heartbeat(self):
        with self.heartbeat_cond:
            self.heartbeats += 1
            self.heartbeat_cond.notify_all()

    def on_heartbeat_timeout(self):
        emit("heartbeat_timeout", conn=self.name)

    def on_disconnected(self):
        self.disconnected.set()

    def wait(self, kind, what, match=lambda f: True, timeout=WAIT):
        """Returns the next frame of kind that matches; frames of other kinds
        (or that do not match) are kept, in order, for later waits."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(what)
                try:
                    k, f = self.frames.get(timeout=left)
                except queue.Empty:
                    raise Timeout(what)
                if k == kind and match(f):
                    return f
                if k == "error":
                    skipped.append((k, f))
                    raise Timeout(what + " (an ERROR frame came instead)")
                skipped.append((k, f))
        finally:
            # Put back what this wait did not consume, ahead of anything
            # that arrived since.
            rest = []
            while True:
                try:
                    rest.append(self.frames.get_nowait())
                except queue.Empty:
                    break
            for item in skipped + rest:
                self.frames.put(item)

    def receipt(self, rid, timeout=WAIT):
        f = self.wait("receipt", "RECEIPT " + rid,
                      lambda f: f.headers.get("receipt-id") == rid, timeout)
        emit("receipt", conn=self.name, id=rid)
        return f

    def message(self, what, match=lambda f: True, timeout=WAIT):
        f = self.wait("message", what, match, timeout)
        emit("message", conn=self.name, headers=dict(f.headers), body=f.body)
        return f

    def wait_heartbeats(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self.heartbeat_cond:
            while self.heartbeats < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("%d heart-beats from the server" % n)
                self.heartbeat_cond.wait(left)
            return self.heartbeats


CONNECTIONS = {
    "1.0": stomp.Connection10,
    "1.1": stomp.Connection11,
    "1.2": stomp.Connection12,
}


def connect(version, port, name="c", heartbeats=(0, 0), headers=None):
    """Connects and returns (connection, recorder); prints the CONNECTED
    frame's headers."""
    cls = CONNECTIONS[version]
    kw = {"reconnect_attempts_max": 1}
    if version != "1.0":
        kw["heartbeats"] = heartbeats
    conn = cls([("127.0.0.1", port)], **kw)
    rec = Recorder(name)
    conn.set_listener("recorder", rec)
    conn.connect(wait=True, headers=headers or {})
    f = rec.wait("connected", "CONNECTED")
    emit("connected", conn=name, headers=dict(f.headers))
    return conn, rec


def ack(conn, version, frame, **kw):
    """ACKs a MESSAGE the way each version names it."""
    h = frame.headers
    if version == "1.0":
        conn.ack(h["message-id"], **kw)
    elif version == "1.1":
        conn.ack(h["message-id"], h["subscription"], **kw)
    else:
        conn.ack(h["ack"], **kw)


def nack(conn, version, frame, **kw):
    h = frame.headers
    if version == "1.1":
        conn.nack(h["message-id"], h["subscription"], **kw)
    else:
        conn.nack(h["ack"], **kw)


def subscribe(conn, version, dest, sid, ack_mode, receipt=None, headers=None):
    """SUBSCRIBEs; STOMP 1.0 has no client-individual mode, so it gets client."""
    if version == "1.0" and ack_mode == "client-individual":
        ack_mode = "client"
    h = dict(headers or {})
    if receipt:
        h["receipt"] = receipt
    conn.subscribe(dest, id=sid, ack=ack_mode, headers=h)


def disconnect(conn, rec, rid="bye"):
    conn.disconnect(receipt=rid)
    emit("disconnected", conn=rec.name, receipt_seen=True)


def main(scenario):
    """Runs scenario(), turning a timeout into an event and exit status 3."""
    try:
        scenario()
    except Timeout as e:
        emit("timeout", waiting_for=str(e))
        sys.stdout.flush()
        # Daemon threads of stomp.py must not keep the process alive.
        import os
        os._exit(3)
    emit("done")
