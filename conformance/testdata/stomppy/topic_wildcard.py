"""Topic subscriptions with wildcards: /topic/sensors.*.temp (one level)
and /topic/sensors.# (the rest). A publisher on another connection sends to
matching and non-matching topics; the end marker matches only '#'."""

import stomptest as st

a = st.args()

SENDS = [
    ("/topic/sensors.room1.temp", "t1"),
    ("/topic/sensors.room1.humidity", "h1"),
    ("/topic/sensors.room1.temp.raw", "r1"),
    ("/topic/other.room1.temp", "o1"),
    ("/topic/sensors.end", "end"),
]


def scenario():
    sub, rec = st.connect(a.version, a.port, "subscriber")
    st.subscribe(sub, a.version, "/topic/sensors.*.temp", "one-level", "auto", receipt="s1")
    rec.receipt("s1")
    st.subscribe(sub, a.version, "/topic/sensors.#", "all-levels", "auto", receipt="s2")
    rec.receipt("s2")

    pub, prec = st.connect(a.version, a.port, "publisher")
    for i, (dest, body) in enumerate(SENDS):
        pub.send(dest, body, receipt="p%d" % i)
        prec.receipt("p%d" % i)

    # Deliveries to one connection keep publish order, so every earlier
    # match is in by the time the end marker arrives; print them all.
    last = rec.wait("message", "end marker on sensors.#", lambda f: f.body == "end")
    for f in rec.drain("message") + [last]:
        st.emit("message", conn="subscriber", headers=dict(f.headers), body=f.body)
    st.disconnect(pub, prec)
    st.disconnect(sub, rec)


st.main(scenario)
