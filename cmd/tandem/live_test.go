package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// The live page is self-contained: one inline script and one inline
// style, which its Content-Security-Policy allows by hash, and nothing
// loaded from anywhere. conformance/browser_test.go runs it in Chromium.
func TestLivePageIsSelfContained(t *testing.T) {
	for _, tag := range []string{"<script", "<style"} {
		if n := bytes.Count(livePage, []byte(tag)); n != 1 {
			t.Errorf("the live page has %d %s> elements, want 1 (the CSP allows one, by its hash)", n, tag)
		}
	}
	if m := regexp.MustCompile(`(?i)\b(src|href)\s*=|@import|url\(`).Find(livePage); m != nil {
		t.Errorf("the live page loads something (%q); it must work offline, from the broker alone", m)
	}
	for _, tag := range []string{"script", "style"} {
		if h := inlineHash(livePage, tag); !strings.Contains(liveCSP, tag+"-src "+h) {
			t.Errorf("CSP %q lacks the %s hash %s", liveCSP, tag, h)
		}
	}
}

func TestLiveHandler(t *testing.T) {
	srv := httptest.NewServer(liveHandler())
	defer srv.Close()
	for _, method := range []string{"GET", "HEAD"} {
		req, err := http.NewRequest(method, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := livePage
		if method == "HEAD" {
			want = nil
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			t.Errorf("%s: %d with %d bytes, want 200 with %d", method, resp.StatusCode, len(body), len(want))
		}
		for k, v := range map[string]string{
			"Content-Type":            "text/html; charset=utf-8",
			"Content-Security-Policy": liveCSP,
			"X-Content-Type-Options":  "nosniff",
		} {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", method, k, got, v)
			}
		}
	}
}
