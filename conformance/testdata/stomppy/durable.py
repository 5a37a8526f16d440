"""A durable topic subscription in RabbitMQ's dialect (id, durable:true,
auto-delete:false) keeps the messages published while its subscriber is
disconnected, and hands them over when it subscribes again."""

import stomptest as st

a = st.args()

TOPIC = "/topic/news.sports"
DURABLE = {"durable": "true", "auto-delete": "false"}


def scenario():
    sub, rec = st.connect(a.version, a.port, "fan")
    st.subscribe(sub, a.version, TOPIC, "sports-fan", "client-individual", receipt="sub-1", headers=DURABLE)
    rec.receipt("sub-1")

    pub, prec = st.connect(a.version, a.port, "publisher")
    pub.send(TOPIC, "live-1", receipt="live-1")
    prec.receipt("live-1")
    m = rec.message("live-1", lambda f: f.body == "live-1")
    st.ack(sub, a.version, m, receipt="ack-live-1")
    rec.receipt("ack-live-1")
    # Leave without UNSUBSCRIBE: the subscription stays.
    st.disconnect(sub, rec)

    for i in range(1, 4):
        pub.send(TOPIC, "offline-%d" % i, receipt="offline-%d" % i)
        prec.receipt("offline-%d" % i)

    sub, rec = st.connect(a.version, a.port, "fan-again")
    st.subscribe(sub, a.version, TOPIC, "sports-fan", "client-individual", receipt="sub-2", headers=DURABLE)
    rec.receipt("sub-2")
    for i in range(1, 4):
        m = rec.message("offline-%d" % i, lambda f: f.body.startswith("offline-"))
        st.ack(sub, a.version, m, receipt="ack-%d" % i)
        rec.receipt("ack-%d" % i)
    pub.send(TOPIC, "end", receipt="end")
    prec.receipt("end")
    m = rec.message("end marker", lambda f: f.body == "end")
    st.ack(sub, a.version, m, receipt="ack-end")
    rec.receipt("ack-end")
    # End the durable subscription for good (RabbitMQ: UNSUBSCRIBE with
    # the durable header).
    st.unsubscribe(sub, a.version, TOPIC, "sports-fan", receipt="unsub", headers=DURABLE)
    rec.receipt("unsub")
    st.disconnect(sub, rec)
    st.disconnect(pub, prec)


st.main(scenario)
