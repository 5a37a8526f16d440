"""Transactions: SENDs and ACKs inside BEGIN...COMMIT take effect on COMMIT,
and inside BEGIN...ABORT never."""

import stomptest as st

a = st.args()

Q = "/queue/txn"
QA = "/queue/txn.ack"


def scenario():
    conn, rec = st.connect(a.version, a.port, "client")
    st.subscribe(conn, a.version, Q, "txn", "auto", receipt="sub")
    rec.receipt("sub")

    # Committed SEND: held back until COMMIT.
    conn.begin("tx1", receipt="begin-1")
    rec.receipt("begin-1")
    conn.send(Q, "in-tx1", transaction="tx1", receipt="send-tx1")
    rec.receipt("send-tx1")
    conn.send(Q, "outside-1", receipt="send-out1")
    rec.receipt("send-out1")
    rec.message("outside-1", lambda f: f.body == "outside-1")
    # outside-1 was sent after in-tx1 to the same queue: had in-tx1 been
    # enqueued at its SEND, it would be here already.
    st.emit("pending", conn="client", before="COMMIT tx1", bodies=rec.pending("message"))
    conn.commit("tx1", receipt="commit-1")
    rec.receipt("commit-1")
    rec.message("in-tx1 after COMMIT", lambda f: f.body == "in-tx1")

    # Aborted SEND: never delivered.
    conn.begin("tx2", receipt="begin-2")
    rec.receipt("begin-2")
    conn.send(Q, "in-tx2", transaction="tx2", receipt="send-tx2")
    rec.receipt("send-tx2")
    conn.abort("tx2", receipt="abort-2")
    rec.receipt("abort-2")
    conn.send(Q, "outside-2", receipt="send-out2")
    rec.receipt("send-out2")
    rec.message("outside-2", lambda f: f.body == "outside-2")
    st.emit("pending", conn="client", after="ABORT tx2", bodies=rec.pending("message"))

    # ACK in an aborted transaction: the message stays unacked, so it comes
    # back to the next consumer once this one disconnects.
    st.subscribe(conn, a.version, QA, "acks", "client-individual", receipt="sub-acks")
    rec.receipt("sub-acks")
    conn.send(QA, "to-ack", receipt="send-ack")
    rec.receipt("send-ack")
    m = rec.message("to-ack", lambda f: f.body == "to-ack")
    conn.begin("tx3", receipt="begin-3")
    rec.receipt("begin-3")
    st.ack(conn, a.version, m, transaction="tx3", receipt="ack-tx3")
    rec.receipt("ack-tx3")
    conn.abort("tx3", receipt="abort-3")
    rec.receipt("abort-3")
    st.disconnect(conn, rec)

    conn, rec = st.connect(a.version, a.port, "client2")
    st.subscribe(conn, a.version, QA, "acks", "client-individual", receipt="sub-acks2")
    rec.receipt("sub-acks2")
    m = rec.message("to-ack again after the aborted ACK", lambda f: f.body == "to-ack")
    # ACK in a committed transaction: gone for good.
    conn.begin("tx4", receipt="begin-4")
    rec.receipt("begin-4")
    st.ack(conn, a.version, m, transaction="tx4", receipt="ack-tx4")
    rec.receipt("ack-tx4")
    conn.commit("tx4", receipt="commit-4")
    rec.receipt("commit-4")
    st.disconnect(conn, rec)

    conn, rec = st.connect(a.version, a.port, "client3")
    st.subscribe(conn, a.version, QA, "acks", "auto", receipt="sub-acks3")
    rec.receipt("sub-acks3")
    conn.send(QA, "marker", receipt="send-marker")
    rec.receipt("send-marker")
    rec.message("the first MESSAGE after the committed ACK")
    st.disconnect(conn, rec)


st.main(scenario)
