package mqtt

import (
	"bytes"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// hook is the single mochi hook through which Tandem takes over every
// message-state decision (see the package comment).
type hook struct {
	mochi.HookBase
	s *Server
}

func (h *hook) ID() string { return "tandem" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnConnect,
		mochi.OnSessionEstablished, mochi.OnDisconnect, mochi.OnPacketRead,
		mochi.OnPacketEncode, mochi.OnPublish, mochi.OnWill:
		return true
	}
	return false
}

// OnConnectAuthenticate accepts every client: authentication is not
// implemented yet (without a hook providing it mochi refuses everyone).
func (h *hook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

// OnACLCheck allows everything; mochi consults it only for publishes,
// before OnPublish.
func (h *hook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// OnConnect applies the keepalive bounds and gives the connection its
// session (session.go): taken over from an open connection, resumed,
// discarded (clean session / clean start) or new. mochi is told every
// session is clean, so it forgets the client when it disconnects.
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	cfg := &h.s.cfg
	release, err := h.s.admit(cl)
	if err != nil {
		return err
	}
	connected := false
	defer func() {
		if !connected {
			release()
		}
	}()
	// mochi calls OnConnectAuthenticate only after OnConnect: credentials
	// are checked here, before a session is taken over or a will stored.
	ident, err := h.s.authenticate(cl, &pk)
	if err != nil {
		return err
	}
	lo, hi := uint16(cfg.KeepaliveMin/time.Second), uint16(cfg.KeepaliveMax/time.Second)
	ka := cl.State.Keepalive
	v5 := cl.Properties.ProtocolVersion == 5
	switch {
	case ka == 0 && !v5:
		// MQTT 3.1.1 keepalive 0: no keepalive, as the client asked and
		// cannot be told otherwise (a subscriber that only receives never
		// sends a packet). A dead peer is still found by TCP keepalive
		// (Go's listeners probe every 15 s).
	case ka == 0 || ka > hi:
		// Told to MQTT 5 clients (Server Keep Alive); an MQTT 3.1.1 client
		// with a longer keepalive is closed when silent for 1.5 times the
		// maximum (a 3.1.1 server may close an inactive connection at any
		// time, §3.1.2.10).
		ka = hi
	case ka < lo && v5:
		// Raised, and the client told. An MQTT 3.1.1 client cannot be
		// told, and the server MUST close the connection after 1.5 times
		// its keepalive [MQTT-3.1.2-24], so its short one is kept.
		ka = lo
	}
	if ka != cl.State.Keepalive {
		cl.State.Keepalive = ka
		// MQTT 5 clients are told (Server Keep Alive [MQTT-3.1.2-21]);
		// MQTT 3.1.1 has no way to tell them.
		cl.State.ServerKeepalive = cl.Properties.ProtocolVersion == 5
	}
	c := newConn(h.s, cl)
	c.ident = ident
	c.release = release
	if pk.Connect.WillFlag && validWillTopic(pk.Connect.WillTopic) && !c.mayPublish(pk.Connect.WillTopic) {
		c.log.Info().Str("topic", pk.Connect.WillTopic).Msg("will refused: not authorized")
		code := packets.ErrNotAuthorized
		if !c.v5 {
			code = packets.Err3NotAuthorized
		}
		_ = h.s.ms.SendConnack(cl, code, false, nil)
		return code
	}
	if pk.Connect.WillFlag && !validWillTopic(pk.Connect.WillTopic) {
		code := packets.ErrTopicNameInvalid
		if !c.v5 {
			code = packets.Err3ServerUnavailable // MQTT 3.1.1 has no better code
		}
		_ = h.s.ms.SendConnack(cl, code, false, nil)
		return code
	}
	clean := pk.Connect.Clean
	maxExpiry := uint32(cfg.SessionExpiryMax / time.Second)
	if c.v5 {
		// Read before mochi caps it to 0 in SendConnack (NewServer).
		c.reqExpiry = cl.Properties.Props.SessionExpiryInterval
		c.expiry = min(c.reqExpiry, maxExpiry)
	} else if !clean {
		c.expiry = maxExpiry // MQTT 3.1.1 sessions expire only by the cap
	}
	if !h.s.attach(c) {
		return ErrServerClosed
	}
	present, err := h.s.takeSession(c, clean, c.expiry)
	if err != nil {
		c.log.Error().Err(err).Msg("opening session")
		code := packets.ErrServerUnavailable
		if !c.v5 {
			code = packets.Err3ServerUnavailable
		}
		_ = h.s.ms.SendConnack(cl, code, false, nil)
		return err
	}
	c.present = present
	if err := h.s.connectWill(c, &pk, present); err != nil {
		c.log.Error().Err(err).Msg("storing will")
		code := packets.ErrServerUnavailable
		if !c.v5 {
			code = packets.Err3ServerUnavailable
		}
		_ = h.s.ms.SendConnack(cl, code, false, nil)
		return err
	}
	// mochi then forgets the client when it disconnects; for MQTT 5, the
	// session expiry cap of 0 (NewServer) does the same.
	cl.Properties.Clean = true
	connected = true
	return nil
}

// OnSessionEstablished runs after the CONNACK was written: it starts the
// connection's pipeline and writer. Packets after CONNECT are read only
// after it returns.
func (h *hook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	c := h.s.conn(cl)
	if c == nil || !c.start() {
		cl.Stop(ErrServerClosed)
		return
	}
	c.restore()
}

// OnDisconnect runs in the connection's read goroutine once its read loop
// ended.
func (h *hook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	if c := h.s.conn(cl); c != nil {
		c.teardown()
	}
}

// OnWill tells mochi to publish nothing: Tandem publishes wills itself
// through the engine (will.go), from the connection's teardown.
func (h *hook) OnWill(*mochi.Client, mochi.Will) (mochi.Will, error) {
	return mochi.Will{}, nil
}

// OnPacketRead sees every packet after CONNECT before mochi validates it.
// Returning packets.ErrRejectPacket ends the connection (mochi ignores any
// other error from this hook).
func (h *hook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	c := h.s.conn(cl)
	if c == nil {
		if pk.FixedHeader.Type == packets.Connect && pk.Connect.PasswordFlag && len(pk.Connect.Password) == 0 {
			// A zero-length password is valid too (MQTT 3.1.1 §3.1.3.5,
			// MQTT 5 §3.1.3.6); mochi refuses it the same way.
			pk.Connect.Password = emptyPassword
		}
		if pk.FixedHeader.Type == packets.Connect && pk.Connect.WillFlag && len(pk.Connect.WillPayload) == 0 {
			// A zero-length will payload is valid (MQTT 3.1.1 §3.1.3.3:
			// "zero or more bytes"; MQTT 5 §3.1.3.4: Binary Data), but
			// mochi calls it a protocol error: it is shown a placeholder
			// that connectWill recognises.
			pk.Connect.WillPayload = emptyWillPayload
		}
		return pk, nil
	}
	switch pk.FixedHeader.Type {
	case packets.Publish:
		// Handled here, not through mochi's processPublish and OnPublish:
		// mochi copies the whole packet into a (disabled) debug log call
		// for every publish a hook rejects, 14% of the CPU of a QoS 0
		// fan-in (docs/benchmarks.md). Aliases are resolved in
		// checkPublish; a publish mochi's validation refuses is left to
		// mochi, which ends the connection as the spec says.
		pk, err := c.checkPublish(pk)
		if err != nil || pk.FixedHeader.Type != packets.Publish {
			return pk, err
		}
		if pk.PublishValidate(uint16(h.s.cfg.TopicAliasMax)) != packets.CodeSuccess {
			return pk, nil
		}
		c.publish(pk)
		return handled(pk), nil
	case packets.Subscribe:
		if pk.SubscribeValidate() != packets.CodeSuccess {
			return pk, nil // mochi refuses it (DISCONNECT for MQTT 5)
		}
		c.subscribe(pk)
		return handled(pk), nil
	case packets.Unsubscribe:
		if pk.UnsubscribeValidate() != packets.CodeSuccess {
			return pk, nil
		}
		c.unsubscribe(pk)
		return handled(pk), nil
	case packets.Puback:
		c.clientPuback(pk)
	case packets.Pubrec:
		c.clientPubrec(pk)
		return handled(pk), nil
	case packets.Pubcomp:
		c.clientPubcomp(pk)
		return handled(pk), nil
	case packets.Pubrel:
		// In order with this client's publishes: the PUBCOMP follows the
		// record's deletion (pipeline.go).
		c.pipe.push(pubItem{qos: 2, pid: pk.PacketID, rel: true})
		return handled(pk), nil
	case packets.Disconnect:
		// Publishes before DISCONNECT are committed before the connection
		// goes (teardown waits for them too; this keeps their order with
		// mochi's DISCONNECT handling).
		c.pipe.barrier()
		// Only a normal DISCONNECT discards the will; MQTT 5 0x04
		// (Disconnect with Will Message) or any other reason publishes it.
		// A new expiry when CONNECT asked for 0 is a protocol error
		// (mochi closes the connection [MQTT-3.14.2-2]): the will goes too.
		badExpiry := c.v5 && pk.Properties.SessionExpiryIntervalFlag && pk.Properties.SessionExpiryInterval > 0 && c.reqExpiry == 0
		c.normal.Store((!c.v5 || pk.ReasonCode == packets.CodeSuccess.Code) && !badExpiry)
		if c.v5 && pk.Properties.SessionExpiryIntervalFlag && c.reqExpiry > 0 {
			// A new expiry for the session (capped). mochi is not shown it:
			// it believes the expiry is 0 and would call this a protocol
			// error; with a CONNECT expiry of 0 mochi's check stands
			// [MQTT-3.14.2-2].
			c.setExpiry(min(pk.Properties.SessionExpiryInterval, uint32(h.s.cfg.SessionExpiryMax/time.Second)))
			pk.Properties.SessionExpiryIntervalFlag = false
			pk.Properties.SessionExpiryInterval = 0
		}
	}
	return pk, nil
}

// handled turns a packet Tandem has dealt with into a PUBACK for an id
// that mochi's (always empty) inflight map does not hold, which mochi
// ignores (server.go processPuback).
func handled(pk packets.Packet) packets.Packet {
	return packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Puback},
		PacketID:        pk.PacketID,
		ProtocolVersion: pk.ProtocolVersion,
	}
}

// OnPublish is not reached for client publishes (OnPacketRead hands them
// to the pipeline); should mochi call it anyway, the publish goes to the
// pipeline the same way, and mochi is told to do nothing more with it: no
// ack, no retain, no fan-out.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if c := h.s.conn(cl); c != nil {
		c.publish(pk)
	}
	return pk, packets.ErrRejectPacket
}

// OnPacketEncode fixes mochi's CONNACK: session present and the granted
// session expiry are Tandem's, and MQTT 5 clients are told the limits
// mochi does not advertise.
//
// It also keeps mochi's writes to MQTT 3.1.1 clients within that version:
// a refused CONNECT gets a 3.1.1 return code, or no CONNACK at all for a
// malformed one [MQTT-3.1.4-1], and no DISCONNECT is ever written (3.1.1
// has no server DISCONNECT: the connection just closes). Setting
// Mods.MaxSize to 1 makes mochi's WritePacket refuse the packet unwritten.
func (h *hook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	v5 := cl.Properties.ProtocolVersion == 5
	switch {
	case pk.FixedHeader.Type == packets.Disconnect && !v5:
		pk.Mods.MaxSize = 1
		return pk
	case pk.FixedHeader.Type != packets.Connack:
		return pk
	case pk.ReasonCode != 0 && pk.ReasonCode < packets.ErrUnspecifiedError.Code:
		return pk // an MQTT 3.1.1 refusal mochi mapped already
	case pk.ReasonCode >= packets.ErrUnspecifiedError.Code:
		if !v5 {
			if code, ok := v3ConnackCode(pk.ReasonCode); ok {
				pk.ReasonCode = code
			} else {
				pk.Mods.MaxSize = 1
			}
		}
		return pk
	}
	c := h.s.conn(cl)
	pk.SessionPresent = c != nil && c.present
	if cl.Properties.ProtocolVersion == 5 {
		p := &pk.Properties
		p.MaximumPacketSize = uint32(h.s.cfg.MaxPacketSize)
		p.TopicAliasMaximum = uint16(h.s.cfg.TopicAliasMax)
		p.RetainAvailable, p.RetainAvailableFlag = 1, true
		p.SharedSubAvailable, p.SharedSubAvailableFlag = 1, true
		p.SessionExpiryInterval, p.SessionExpiryIntervalFlag = 0, false
		if c != nil && c.expiry != c.reqExpiry {
			p.SessionExpiryInterval, p.SessionExpiryIntervalFlag = c.expiry, true // [MQTT-3.2.2.3.2]
		}
	}
	return pk
}

// v3ConnackCode maps an MQTT 5 CONNACK reason mochi chose to the MQTT 3.1.1
// return code; false for a malformed or protocol-violating CONNECT, which
// gets no CONNACK.
func v3ConnackCode(reason byte) (byte, bool) {
	switch reason {
	case packets.ErrMalformedPacket.Code, packets.ErrProtocolViolation.Code:
		return 0, false
	case packets.ErrUnsupportedProtocolVersion.Code:
		return packets.Err3UnsupportedProtocolVersion.Code, true
	case packets.ErrUnspecifiedError.Code, packets.ErrClientIdentifierNotValid.Code:
		// mochi's only 0x80 at CONNECT: clean session 0 with an empty
		// client id [MQTT-3.1.3-8].
		return packets.Err3ClientIdentifierNotValid.Code, true
	case packets.ErrBadUsernameOrPassword.Code, packets.ErrMalformedUsername.Code, packets.ErrMalformedPassword.Code:
		return packets.ErrMalformedUsernameOrPassword.Code, true
	case packets.ErrNotAuthorized.Code, packets.ErrBanned.Code:
		return packets.Err3NotAuthorized.Code, true
	}
	return packets.Err3ServerUnavailable.Code, true
}

// encode encodes a packet Tandem writes itself.
func encode(pk packets.Packet) []byte {
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	case packets.Suback:
		err = pk.SubackEncode(&buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(&buf)
	}
	if err != nil {
		return nil
	}
	return buf.Bytes()
}
