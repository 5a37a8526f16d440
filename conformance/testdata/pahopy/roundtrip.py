"""One MQTT round trip with paho-mqtt (Debian package python3-paho-mqtt).

A subscriber and a publisher connect (MQTT 3.1.1 or 5.0, clean sessions);
the subscriber subscribes at QoS 1 and, on a second filter, at QoS 2; the
publisher publishes at QoS 1 (with MQTT 5 properties when --version 5), at
QoS 0 and at QoS 2, waiting for each on_publish (QoS 1: the PUBACK; QoS 2:
the PUBCOMP); the subscriber receives all three. Every observation is printed as one JSON line,
{"event": ..., ...}; conformance/pahopy_test.go judges them. A wait that
times out prints {"event": "timeout", "waiting_for": ...} and exits 3.

Nothing here sleeps to order events: every wait is on a callback, bounded
by WAIT seconds. Written for paho-mqtt 1.x (Debian's 1.6) and 2.x.
"""

import argparse
import json
import sys
import threading

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0
PAYLOAD = b"\x00paho\x00\xff\x01 round trip\x00"


# emit runs on paho's network threads as well as the main thread.
_emit_lock = threading.Lock()


def emit(event, **fields):
    fields["event"] = event
    line = json.dumps(fields, sort_keys=True) + "\n"
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def props_dict(props):
    """The MQTT 5 properties as JSON-able values (bytes as hex)."""
    out = {}
    if props is None:
        return out
    # json() renders bytes as hex and user properties as (key, value) pairs.
    for name, v in props.json().items():
        if isinstance(v, list):
            v = [list(x) if isinstance(x, tuple) else x for x in v]
        out[name] = v
    return out


class Client:
    def __init__(self, name, version):
        self.name = name
        self.v5 = version == "5"
        self.cond = threading.Condition()
        self.events = []  # (kind, value), oldest first; guarded by cond
        kwargs = {"client_id": "paho-" + name + "-" + version}
        if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
            kwargs["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION1
        if self.v5:
            kwargs["protocol"] = mqtt.MQTTv5
        else:
            kwargs["protocol"] = mqtt.MQTTv311
            kwargs["clean_session"] = True
        self.c = mqtt.Client(**kwargs)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect

    def _put(self, kind, value):
        with self.cond:
            self.events.append((kind, value))
            self.cond.notify_all()

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        rc = getattr(rc, "value", rc)
        emit("connack", conn=self.name, rc=int(rc), props=props_dict(properties))
        self._put("connack", int(rc))

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        codes = [int(getattr(g, "value", g)) for g in granted]
        self._put("suback", (mid, codes))

    def _on_publish(self, client, userdata, mid):
        self._put("publish", mid)

    def _on_message(self, client, userdata, msg):
        emit("message", conn=self.name, topic=msg.topic, qos=msg.qos, payload=msg.payload.hex(),
             props=props_dict(getattr(msg, "properties", None)) if self.v5 else {})
        self._put("message", msg.payload)

    def _on_disconnect(self, client, userdata, rc, properties=None):
        rc = getattr(rc, "value", rc)
        emit("disconnect", conn=self.name, rc=int(rc))

    def wait(self, what, match):
        """Removes and returns the first event of kind what for which
        match(value) holds, waiting up to WAIT seconds."""
        with self.cond:
            def find():
                for i, (k, v) in enumerate(self.events):
                    if k == what and match(v):
                        return i
                return None
            if not self.cond.wait_for(lambda: find() is not None, timeout=WAIT):
                emit("timeout", conn=self.name, waiting_for=what)
                sys.exit(3)
            return self.events.pop(find())[1]

    def connect(self, port):
        if self.v5:
            self.c.connect("127.0.0.1", port, keepalive=30, clean_start=True)
        else:
            self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        self.wait("connack", lambda rc: True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--version", choices=["3.1.1", "5"], required=True)
    a = p.parse_args()
    emit("paho", version=paho.mqtt.__version__)

    sub = Client("sub", a.version)
    pub = Client("pub", a.version)
    sub.connect(a.port)
    pub.connect(a.port)

    for filt, qos in (("paho/+/data", 1), ("paho/qos2", 2)):
        rc, mid = sub.c.subscribe(filt, qos=qos)
        _, codes = sub.wait("suback", lambda v, mid=mid: v[0] == mid)
        emit("suback", conn="sub", filter=filt, requested=qos, granted=codes)

    props = None
    if a.version == "5":
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "paho/replies"
        props.CorrelationData = b"\x00corr-7\xff"
        props.UserProperty = ("unit", "C")
        props.UserProperty = ("sensor", "t1")
        props.ContentType = "application/octet-stream"
    for topic, qos in (("paho/q1/data", 1), ("paho/q0/data", 0), ("paho/qos2", 2)):
        info = pub.c.publish(topic, PAYLOAD, qos=qos, properties=props) if props else pub.c.publish(topic, PAYLOAD, qos=qos)
        pub.wait("publish", lambda mid, m=info.mid: mid == m)
        emit("published", conn="pub", topic=topic, qos=qos)
        sub.wait("message", lambda v: True)

    for c in (pub, sub):
        c.c.disconnect()
        c.c.loop_stop()
    emit("done")


if __name__ == "__main__":
    main()
