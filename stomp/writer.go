package stomp

import "github.com/go-stomp/stomp/v3/frame"

// This file is the STOMP frame encoder. Unlike go-stomp's frame.Writer it
// escapes headers only when the version and frame call for it, and it
// appends to a caller's buffer instead of flushing after every frame, so
// the server can batch frames into one write.

// AppendFrame appends the wire encoding of f to dst and returns the
// extended buffer: the command and EOL, each header as "key:value" and EOL,
// a blank line, the body and a NUL. A nil f appends a heart-beat EOL. It
// never writes or flushes anything, and it adds no headers: a body that
// contains NUL needs a content-length header from the caller.
//
// With escape set, keys and values are escaped as v defines (STOMP 1.2
// "Value Encoding"): backslash as \\, LF as \n and colon as \c, and for V12
// CR as \r. STOMP 1.1 has no escape for CR, so for V11 a CR is written as
// is (a CR that ends a value is then lost, as the peer strips it with the
// EOL). The caller passes escape=false for STOMP 1.0 and for CONNECTED
// frames, which are never escaped.
//
// Without escaping, a CR or LF in a key or value, or a colon in a key,
// cannot be represented; each is written as a space, so that a header
// copied from another client can never end the line early or inject a
// header of its own. The command is written as is: it comes from the
// server, never from a client.
func AppendFrame(dst []byte, f *frame.Frame, v Version, escape bool) []byte {
	if f == nil {
		return append(dst, '\n')
	}
	dst = append(dst, f.Command...)
	dst = append(dst, '\n')
	if f.Header != nil {
		n := f.Header.Len()
		for i := 0; i < n; i++ {
			key, value := f.Header.GetAt(i)
			dst = appendHeaderText(dst, key, v, escape, true)
			dst = append(dst, ':')
			dst = appendHeaderText(dst, value, v, escape, false)
			dst = append(dst, '\n')
		}
	}
	dst = append(dst, '\n')
	dst = append(dst, f.Body...)
	return append(dst, 0)
}

// appendHeaderText appends a header key (isKey) or value, escaped or
// sanitised as AppendFrame describes.
func appendHeaderText(dst []byte, s string, v Version, escape, isKey bool) []byte {
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; c == '\n' || c == '\r' || c == ':' || c == '\\' {
			break
		}
	}
	if i == len(s) {
		return append(dst, s...) // the common case: nothing to escape
	}
	dst = append(dst, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if !escape {
			if c == '\n' || c == '\r' || (c == ':' && isKey) {
				c = ' '
			}
			dst = append(dst, c)
			continue
		}
		switch {
		case c == '\\':
			dst = append(dst, '\\', '\\')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == ':':
			dst = append(dst, '\\', 'c')
		case c == '\r' && v >= V12:
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
