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
import os
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
    """Keeps every frame stomp.py hands to the listener, in arrival order,
    until a wait consumes it."""

    def __init__(self, name):
        self.name = name
        self.cond = threading.Condition()
        self.frames = []  # (kind, frame), oldest first; guarded by cond
        self.heartbeats = 0  # guarded by cond

    def _put(self, kind, frame):
        with self.cond:
            self.frames.append((kind, frame))
            self.cond.notify_all()

    def on_connected(self, frame):
        self._put("connected", frame)

    def on_message(self, frame):
        self._put("message", frame)

    def on_receipt(self, frame):
        self._put("receipt", frame)

    def on_error(self, frame):
        emit("error", conn=self.name, headers=dict(frame.headers), body=frame.body)
        self._put("error", frame)

    def on_heartbeat(self):
        with self.cond:
            self.heartbeats += 1
            self.cond.notify_all()

    def on_heartbeat_timeout(self):
        emit("heartbeat_timeout", conn=self.name)

    def wait(self, kind, what, match=lambda f: True, timeout=WAIT):
        """Removes and returns the oldest frame of kind that matches; other
        frames stay, in order, for later waits. An ERROR frame ends the
        wait."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, (k, f) in enumerate(self.frames):
                    if k == kind and match(f):
                        del self.frames[i]
                        return f
                    if k == "error":
                        raise Timeout(what + " (an ERROR frame came instead)")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(what)
                self.cond.wait(left)

    def pending(self, kind):
        """Returns the bodies of the frames of kind received and not yet
        consumed by a wait, leaving them in place."""
        with self.cond:
            return [f.body for k, f in self.frames if k == kind]

    def drain(self, kind):
        """Removes and returns the frames of kind received so far."""
        with self.cond:
            out = [f for k, f in self.frames if k == kind]
            self.frames = [(k, f) for k, f in self.frames if k != kind]
            return out

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
        with self.cond:
            while self.heartbeats < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("%d heart-beats from the server" % n)
                self.cond.wait(left)
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
        # stomp.py declares the server dead after 1.5 intervals without a
        # heart-beat; on a loaded CI machine allow 3 (the spec leaves the
        # tolerance to the receiver).
        kw["heart_beat_receive_scale"] = 3
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


def unsubscribe(conn, version, dest, sid, receipt=None, headers=None):
    h = dict(headers or {})
    if receipt:
        h["receipt"] = receipt
    if version == "1.0":
        conn.unsubscribe(destination=dest, id=sid, headers=h)
    else:
        conn.unsubscribe(sid, headers=h)


def disconnect(conn, rec, rid="bye"):
    """DISCONNECTs with a receipt and waits for it (STOMP 1.2: graceful
    shutdown)."""
    conn.disconnect(receipt=rid)
    rec.receipt(rid)


def main(scenario):
    """Runs scenario(), turning a timeout into an event and exit status 3."""
    try:
        scenario()
    except Timeout as e:
        emit("timeout", waiting_for=str(e))
        sys.stdout.flush()
        # Daemon threads of stomp.py must not keep the process alive.
        os._exit(3)
    emit("done")
