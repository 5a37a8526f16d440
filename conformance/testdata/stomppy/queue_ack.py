"""SEND with a receipt, SUBSCRIBE (client-individual; client on 1.0),
MESSAGE, ACK with a receipt; then a new connection shows the acked message
is gone: the first MESSAGE it gets is a marker sent after it subscribed."""

import stomptest as st

a = st.args(lambda p: p.add_argument("--queue", default="/queue/jobs"))


def scenario():
    conn, rec = st.connect(a.version, a.port, "worker")
    body = "job-1 over STOMP " + a.version
    conn.send(a.queue, body, receipt="send-1")
    rec.receipt("send-1")
    st.subscribe(conn, a.version, a.queue, "sub-1", "client-individual", receipt="sub-1")
    rec.receipt("sub-1")
    m = rec.message("MESSAGE with " + repr(body), lambda f: f.body == body)
    st.ack(conn, a.version, m, receipt="ack-1")
    rec.receipt("ack-1")
    st.disconnect(conn, rec)

    conn, rec = st.connect(a.version, a.port, "checker")
    st.subscribe(conn, a.version, a.queue, "sub-2", "auto", receipt="sub-2")
    rec.receipt("sub-2")
    conn.send(a.queue, "marker", receipt="send-marker")
    rec.receipt("send-marker")
    # The first MESSAGE after the ACK: the marker, unless the acked job
    # came back.
    rec.message("the first MESSAGE after reconnecting")
    st.disconnect(conn, rec)


st.main(scenario)
