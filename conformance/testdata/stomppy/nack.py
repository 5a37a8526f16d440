"""NACK (STOMP 1.1+): a NACKed message comes back (Tandem redelivers after
the queue's redelivery delay), marked as a redelivery."""

import stomptest as st

a = st.args(lambda p: p.add_argument("--queue", default="/queue/jobs"))


def scenario():
    conn, rec = st.connect(a.version, a.port, "worker")
    st.subscribe(conn, a.version, a.queue, "sub-1", "client-individual", receipt="sub-1")
    rec.receipt("sub-1")
    body = "flaky job " + a.version
    conn.send(a.queue, body, receipt="send-1")
    rec.receipt("send-1")
    first = rec.message("first delivery", lambda f: f.body == body)
    st.nack(conn, a.version, first, receipt="nack-1")
    rec.receipt("nack-1")
    second = rec.message("redelivery after NACK", lambda f: f.body == body)
    st.ack(conn, a.version, second, receipt="ack-2")
    rec.receipt("ack-2")
    st.disconnect(conn, rec)


st.main(scenario)
