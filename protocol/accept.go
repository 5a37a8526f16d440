package protocol

import (
	"errors"
	"net"
	"time"

	"github.com/rs/zerolog"
)

// AcceptLoop accepts connections on ln and hands each to handle until
// accepting fails for good. A timeout error (such as running out of file
// descriptors) is logged and retried after a backoff that grows to one
// second, as net/http's Server does. When the accept error comes from the
// owner closing ln (closing reports true), AcceptLoop returns nil;
// otherwise it returns the error.
func AcceptLoop(ln net.Listener, log zerolog.Logger, closing func() bool, handle func(net.Conn)) error {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if closing() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept")
				t := time.NewTimer(backoff)
				<-t.C
				continue
			}
			return err
		}
		backoff = 0
		handle(nc)
	}
}
