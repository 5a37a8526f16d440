package main

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
)

// The live page (websocket.live_page): one self-contained HTML file where
// a person subscribes to a topic filter, watches messages arrive and
// publishes one, over the broker's own /stomp endpoint. It loads nothing
// else, so it works offline.
//
//go:embed live/index.html
var livePage []byte

// liveCSP is the live page's Content-Security-Policy: its one inline
// script and one inline style are allowed by their hashes, and nothing
// else is: no other script, no connection to another origin than the
// page's own.
var liveCSP = fmt.Sprintf("default-src 'none'; script-src %s; style-src %s; connect-src 'self'; "+
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	inlineHash(livePage, "script"), inlineHash(livePage, "style"))

// liveHandler serves the live page at "/" of the WebSocket listeners.
func liveHandler() http.Handler {
	length := strconv.Itoa(len(livePage))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Length", length)
		h.Set("Content-Security-Policy", liveCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(livePage)
	})
}

// inlineHash is the CSP source ('sha256-…') of the text inside the first
// <tag>…</tag> of page. A page without one is a build mistake: it panics
// when the binary (or any test of this package) starts.
func inlineHash(page []byte, tag string) string {
	_, rest, ok := bytes.Cut(page, []byte("<"+tag+">"))
	if ok {
		var body []byte
		body, _, ok = bytes.Cut(rest, []byte("</"+tag+">"))
		if ok {
			sum := sha256.Sum256(body)
			return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		}
	}
	panic("live page: no <" + tag + "> element")
}
