"""Heart-beats (STOMP 1.1+). stomp.py offers and asks for heart-beats; the
CONNECTED frame's heart-beat header answers, the server's heart-beats
arrive, and the connection outlives many intervals while only heart-beats
flow. Then a raw client that promised heart-beats and goes silent is
dropped."""

import socket
import time

import stomptest as st

a = st.args(lambda p: p.add_argument("--interval", type=int, default=300))


def scenario():
    hb = a.interval
    conn, rec = st.connect(a.version, a.port, "beating", heartbeats=(hb, hb))
    start = time.monotonic()
    n = rec.wait_heartbeats(5, timeout=st.WAIT)
    st.emit("heartbeats", count=n, seconds=round(time.monotonic() - start, 3))
    conn.send("/queue/hb", "still here", receipt="alive")
    rec.receipt("alive")
    st.disconnect(conn, rec)

    # A client that promises heart-beats every 100 ms and then says
    # nothing: the server may consider the connection dead.
    s = socket.create_connection(("127.0.0.1", a.port), timeout=st.WAIT)
    s.sendall(("CONNECT\naccept-version:%s\nhost:localhost\nheart-beat:100,0\n\n\0" % a.version).encode())
    start = time.monotonic()
    data = b""
    closed = False
    while time.monotonic() - start < st.WAIT:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            closed = True
            break
        data += chunk
    s.close()
    frames = [f for f in data.split(b"\0") if f.strip(b"\n")]
    st.emit("silent_client", closed=closed, seconds=round(time.monotonic() - start, 3),
            commands=[f.lstrip(b"\n").split(b"\n", 1)[0].decode() for f in frames],
            frames=[f.decode(errors="replace") for f in frames])


st.main(scenario)
