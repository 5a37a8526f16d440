package main

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/mqtt"
	"github.com/tandem-mq/tandem/protocol"
	"github.com/tandem-mq/tandem/stomp"
)

// The admin API: JSON under /api/ on the admin listener, for operators
// and for `tandem ctl`. Every request needs the header "Authorization:
// Bearer TOKEN", the token being the content of <data_dir>/admin.token,
// made (32 random bytes, hex) at the first start and kept, mode 0600, so
// that whoever can read the data directory can administer the broker and
// nobody else. /healthz, /readyz and /metrics stay open: probes and
// Prometheus scrapers come without a token, the listener is on loopback by
// default, and they change nothing.
//
// The broker also writes <data_dir>/admin.addr, the admin listener's
// address (useful with port 0), so that `tandem ctl` run where the broker
// runs finds both with no flags. Errors are {"error": "..."} with a status
// code that says what kind they are.

// Files in the data directory.
const (
	tokenFile = "admin.token"
	addrFile  = "admin.addr"
)

// Bounds of the API's requests and answers.
const (
	apiMaxBody       = 64 << 10
	browseDefault    = 100
	browseMax        = 1000
	truncateDefault  = 64 << 10
	replayMaxDefault = 0 // all
)

// targets are what the API and the metrics read once the broker runs.
type targets struct {
	broker  *engine.Broker
	stomp   *stomp.Server
	mqtt    *mqtt.Server
	auth    *protocol.Authenticator
	limiter *protocol.ConnLimiter
}

// targetsRef holds the targets, nil until the broker is ready.
type targetsRef struct{ p atomic.Pointer[targets] }

func (r *targetsRef) get() *targets  { return r.p.Load() }
func (r *targetsRef) set(t *targets) { r.p.Store(t) }

// operations is what the admin listener serves besides health: the
// metrics and the API.
type operations struct {
	dataDir string
	targets targetsRef
	metrics *metrics
	token   string // set by loadToken before serving
	log     zerolog.Logger
}

func newOperations(dataDir string) *operations {
	o := &operations{dataDir: dataDir, log: zerolog.Nop()}
	o.metrics = newMetrics(&o.targets)
	return o
}

// observeSync feeds the fsync histogram (persist.Options.OnSync).
func (o *operations) observeSync(d time.Duration) { o.metrics.observeSync(d) }

// attach gives the API and the metrics the running broker and servers.
func (o *operations) attach(b *engine.Broker, ss *stomp.Server, ms *mqtt.Server, auth *protocol.Authenticator, limiter *protocol.ConnLimiter) {
	o.targets.set(&targets{broker: b, stomp: ss, mqtt: ms, auth: auth, limiter: limiter})
}

// loadToken reads <data_dir>/admin.token, creating it on first use.
func (o *operations) loadToken() error {
	path := filepath.Join(o.dataDir, tokenFile)
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return fmt.Errorf("admin token file %s is empty; delete it to have a new token made", path)
		}
		o.token = tok
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin token file: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	tok := hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("admin token file: %w", err)
	}
	_, werr := fmt.Fprintln(f, tok)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("admin token file %s: %w", path, err)
	}
	o.token = tok
	o.log.Info().Str("file", path).Msg("admin API token created")
	return nil
}

// writeAddr records the admin listener's address for tandem ctl: an
// unspecified host (0.0.0.0, ::) is written as loopback, where ctl
// reaches it.
func (o *operations) writeAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	path := filepath.Join(o.dataDir, addrFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(net.JoinHostPort(host, port)+"\n"), 0o644); err != nil {
		return fmt.Errorf("admin address file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("admin address file: %w", err)
	}
	return nil
}

// removeAddr removes the address file at shutdown.
func (o *operations) removeAddr() error {
	err := os.Remove(filepath.Join(o.dataDir, addrFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin address file: %w", err)
	}
	return nil
}

// handler serves health, metrics and the API.
func (o *operations) handler(ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	health := newAdminHandler(ready)
	mux.Handle("/healthz", health)
	mux.Handle("/readyz", health)
	mux.Handle("GET /metrics", o.metrics.handler(o.log))
	api := http.NewServeMux()
	api.HandleFunc("GET /api/queues", o.listQueues)
	api.HandleFunc("GET /api/queues/{name}", o.getQueue)
	api.HandleFunc("PUT /api/queues/{name}", o.createQueue)
	api.HandleFunc("DELETE /api/queues/{name}", o.deleteQueue)
	api.HandleFunc("POST /api/queues/{name}/purge", o.purgeQueue)
	api.HandleFunc("GET /api/queues/{name}/messages", o.browseQueue)
	api.HandleFunc("POST /api/queues/{name}/replay", o.replayQueue)
	api.HandleFunc("GET /api/queues/{name}/policy", o.getPolicy)
	api.HandleFunc("PUT /api/queues/{name}/policy", o.setPolicy)
	api.HandleFunc("PATCH /api/queues/{name}/policy", o.setPolicy)
	api.HandleFunc("DELETE /api/queues/{name}/policy", o.setPolicy)
	api.HandleFunc("GET /api/bindings", o.listBindings)
	api.HandleFunc("POST /api/bindings", o.bind)
	api.HandleFunc("DELETE /api/bindings", o.unbind)
	api.HandleFunc("GET /api/subscriptions", o.listSubscriptions)
	api.HandleFunc("GET /api/connections", o.listConnections)
	api.HandleFunc("DELETE /api/connections/{protocol}/{id}", o.closeConnection)
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	mux.Handle("/api/", o.requireToken(api))
	return mux
}

// requireToken refuses requests without the bearer token, and requests
// before the broker is ready.
func (o *operations) requireToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || o.token == "" || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(o.token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tandem"`)
			msg := "missing or wrong admin token: send Authorization: Bearer <the token in " + tokenFile + " of the data directory>"
			o.log.Info().Str("remote", r.RemoteAddr).Str("path", r.URL.Path).Msg("admin API request refused: bad token")
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		if o.targets.get() == nil {
			writeError(w, http.StatusServiceUnavailable, "not ready: the broker is starting or stopping")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, apiMaxBody)
		h.ServeHTTP(w, r)
	})
}

// writeJSON writes v as the response. A write error means the client went
// away.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

// writeEngineError answers an error of the engine or an adapter with the
// status its kind calls for.
func (o *operations) writeEngineError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, engine.ErrNoQueue), errors.Is(err, protocol.ErrNoConnection):
		code = http.StatusNotFound
	case errors.Is(err, engine.ErrInvalidQueue), errors.Is(err, engine.ErrInvalidFilter),
		errors.Is(err, engine.ErrInvalidTopic), errors.Is(err, engine.ErrInvalidPolicy),
		errors.Is(err, protocol.ErrBadDestination):
		code = http.StatusBadRequest
	case errors.Is(err, engine.ErrQueueExists), errors.Is(err, engine.ErrTooManyQueues):
		code = http.StatusConflict
	case errors.Is(err, engine.ErrClosed):
		code = http.StatusServiceUnavailable
	}
	if code == http.StatusInternalServerError {
		o.log.Error().Err(err).Msg("admin API")
	}
	writeError(w, code, err.Error())
}

// decodeBody reads a JSON body into v; unknown fields are errors, so a
// misspelt key is caught. An empty body leaves v as it is.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("bad JSON body: %v", err)
	}
	return nil
}

// intParam reads an integer query parameter in [0, max], def if absent.
func intParam(r *http.Request, name string, def, max int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > max {
		return 0, fmt.Errorf("%s must be an integer from 0 to %d, got %q", name, max, s)
	}
	return n, nil
}

// Queues.

// apiQueue is a queue with its figures.
type apiQueue struct {
	Name     string `json:"name"`
	Durable  bool   `json:"durable"`
	Messages int64  `json:"messages"`
	Ready    int64  `json:"ready"`
	Unacked  int    `json:"unacked"`
	Bytes    int64  `json:"bytes"`
	// OldestAge is the age in seconds of the oldest message, 0 for none.
	OldestAge    float64   `json:"oldest_message_age_seconds"`
	Consumers    int       `json:"consumers"`
	Published    uint64    `json:"published"`
	Delivered    uint64    `json:"delivered"`
	Acked        uint64    `json:"acked"`
	Redelivered  uint64    `json:"redelivered"`
	DeadLettered uint64    `json:"dead_lettered"`
	Expired      uint64    `json:"expired"`
	Dropped      uint64    `json:"dropped"`
	Policy       apiPolicy `json:"policy"`
	Override     apiPolicy `json:"override"`
}

func queueOf(qi engine.QueueInfo, now time.Time) apiQueue {
	return apiQueue{
		Name: qi.Name, Durable: qi.Durable,
		Messages: qi.Messages, Ready: qi.Messages - int64(qi.Unacked), Unacked: qi.Unacked, Bytes: qi.Bytes,
		OldestAge: math.Round(oldestAge(qi, now).Seconds()*1000) / 1000,
		Consumers: qi.Consumers,
		Published: qi.Stats.Published, Delivered: qi.Stats.Delivered, Acked: qi.Stats.Acked,
		Redelivered: qi.Stats.Redelivered, DeadLettered: qi.Stats.DeadLettered,
		Expired: qi.Stats.Expired, Dropped: qi.Stats.Dropped,
		Policy: apiPolicyOf(qi.Policy), Override: apiPolicyOf(qi.Override),
	}
}

func (o *operations) listQueues(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	qs := o.targets.get().broker.QueueFigures()
	out := make([]apiQueue, len(qs))
	for i, qi := range qs {
		out[i] = queueOf(qi, now)
	}
	writeJSON(w, http.StatusOK, out)
}

func (o *operations) getQueue(w http.ResponseWriter, r *http.Request) {
	qi, err := o.targets.get().broker.QueueFigure(r.PathValue("name"))
	if err != nil {
		o.writeEngineError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, queueOf(qi, time.Now()))
}

// checkQueueName refuses the names the broker keeps for itself.
func checkQueueName(name string) error {
	if err := engine.ValidateQueueName(name); err != nil {
		return err
	}
	if strings.HasPrefix(name, "$") {
		return fmt.Errorf("%w: %q: names starting with '$' are the broker's own", engine.ErrInvalidQueue, name)
	}
	return nil
}

// createQueueRequest is the optional body of PUT /api/queues/{name}.
type createQueueRequest struct {
	Policy apiPolicy `json:"policy"`
}

func (o *operations) createQueue(w http.ResponseWriter, r *http.Request) {
	b := o.targets.get().broker
	name := r.PathValue("name")
	if err := checkQueueName(name); err != nil {
		o.writeEngineError(w, err)
		return
	}
	var req createQueueRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, err := req.Policy.policy()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	_, err = b.QueueInfo(name)
	existed := err == nil
	if err := b.DeclareQueue(name, engine.QueueOptions{Policy: p}); err != nil {
		o.writeEngineError(w, err)
		return
	}
	qi, err := b.QueueFigure(name)
	if err != nil {
		o.writeEngineError(w, err)
		return
	}
	code := http.StatusCreated
	if existed {
		code = http.StatusOK
	}
	o.log.Info().Str("queue", name).Bool("existed", existed).Msg("admin: queue declared")
	writeJSON(w, code, queueOf(qi, time.Now()))
}

func (o *operations) deleteQueue(w http.ResponseWriter, r *http.Request) {
	b := o.targets.get().broker
	name := r.PathValue("name")
	if strings.HasPrefix(name, "$mqtt/") || strings.HasPrefix(name, "$mqtt-clean/") || strings.HasPrefix(name, "$tmp/") {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q belongs to a client's session or connection: close the connection, or let the session expire", name))
		return
	}
	if err := b.DeleteQueue(name); err != nil {
		o.writeEngineError(w, err)
		return
	}
	if strings.HasPrefix(name, "$share/") {
		// A STOMP durable subscription's record goes with its queue.
		if err := b.ApplyKV([]engine.KVOp{{NS: protocol.DurableSubscriptionNS, Key: name, Delete: true}}, true); err != nil {
			o.writeEngineError(w, err)
			return
		}
	}
	o.log.Info().Str("queue", name).Msg("admin: queue deleted")
	w.WriteHeader(http.StatusNoContent)
}

// purged is the answer of a purge.
type purged struct {
	Queue  string `json:"queue"`
	Purged int64  `json:"purged"`
}

func (o *operations) purgeQueue(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	n, err := o.targets.get().broker.Purge(name)
	if err != nil {
		o.writeEngineError(w, err)
		return
	}
	o.log.Info().Str("queue", name).Int64("purged", n).Msg("admin: queue purged")
	writeJSON(w, http.StatusOK, purged{Queue: name, Purged: n})
}

// apiMessage is a browsed message.
type apiMessage struct {
	Seq        uint64 `json:"seq"`
	ID         uint64 `json:"id"`
	Deliveries uint32 `json:"deliveries"`
	// Destination is where the message was published: a topic, or the
	// queue's name.
	Destination string      `json:"destination"`
	ToQueue     bool        `json:"to_queue"`
	QoS         uint8       `json:"qos"`
	PublishedAt time.Time   `json:"published_at"`
	ExpiresAt   *time.Time  `json:"expires_at,omitempty"`
	Headers     []apiHeader `json:"headers"`
	Size        int         `json:"payload_bytes"`
	// Payload is the body, as text when it is UTF-8 (payload_encoding
	// "string"), else in base64 ("base64"); cut to the truncate parameter.
	Payload   string `json:"payload"`
	Encoding  string `json:"payload_encoding"`
	Truncated bool   `json:"payload_truncated,omitempty"`
}

type apiHeader struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// browsed is the answer of a browse.
type browsed struct {
	Queue    string       `json:"queue"`
	Messages []apiMessage `json:"messages"`
}

func (o *operations) browseQueue(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	limit, err := intParam(r, "limit", browseDefault, browseMax)
	if err == nil && limit == 0 {
		limit = browseDefault
	}
	var truncate int
	if err == nil {
		truncate, err = intParam(r, "truncate", truncateDefault, math.MaxInt32)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	es, err := o.targets.get().broker.Browse(name, limit)
	if err != nil {
		o.writeEngineError(w, err)
		return
	}
	out := browsed{Queue: name, Messages: make([]apiMessage, 0, len(es))}
	for _, e := range es {
		m := e.Msg
		am := apiMessage{
			Seq: e.Seq, ID: e.MsgID, Deliveries: e.Deliveries,
			Destination: m.Topic, ToQueue: m.ToQueue, QoS: m.QoS,
			PublishedAt: time.Unix(0, m.PublishedAt).UTC(),
			Headers:     make([]apiHeader, len(m.Props)),
			Size:        len(m.Body),
		}
		if exp := e.ExpiresAt; exp != 0 {
			t := time.Unix(0, exp).UTC()
			am.ExpiresAt = &t
		}
		for i, p := range m.Props {
			am.Headers[i] = apiHeader{p.Key, p.Value}
		}
		body := m.Body
		if truncate > 0 && len(body) > truncate {
			body, am.Truncated = body[:truncate], true
		}
		if utf8.Valid(body) {
			am.Payload, am.Encoding = string(body), "string"
		} else {
			am.Payload, am.Encoding = base64.StdEncoding.EncodeToString(body), "base64"
		}
		out.Messages = append(out.Messages, am)
	}
	writeJSON(w, http.StatusOK, out)
}

// replayed is the answer of a replay.
type replayed struct {
	Queue    string `json:"queue"`
	Replayed int    `json:"replayed"`
	Left     int64  `json:"left"`
}

func (o *operations) replayQueue(w http.ResponseWriter, r *http.Request) {
	b := o.targets.get().broker
	name := r.PathValue("name")
	limit, err := intParam(r, "limit", replayMaxDefault, math.MaxInt32)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	n, err := b.Replay(name, limit)
	if err != nil {
		o.writeEngineError(w, err)
		return
	}
	out := replayed{Queue: name, Replayed: n}
	if qi, err := b.QueueInfo(name); err == nil {
		out.Left = qi.Messages
	}
	o.log.Info().Str("queue", name).Int("replayed", n).Msg("admin: dead letters replayed")
	writeJSON(w, http.StatusOK, out)
}

// Policies.

// apiPolicy is engine.Policy as the API writes it: durations as strings
// ("1s", "1m30s"), max_bytes in bytes (a string with a unit, "1GiB", is
// accepted too). An absent or zero field is unset.
type apiPolicy struct {
	MaxDeliveries        int          `json:"max_deliveries,omitempty"`
	RedeliveryDelay      jsonDuration `json:"redelivery_delay,omitempty"`
	RedeliveryMultiplier float64      `json:"redelivery_multiplier,omitempty"`
	RedeliveryMaxDelay   jsonDuration `json:"redelivery_max_delay,omitempty"`
	RedeliveryJitter     float64      `json:"redelivery_jitter,omitempty"`
	TTL                  jsonDuration `json:"ttl,omitempty"`
	MaxLength            int64        `json:"max_length,omitempty"`
	MaxBytes             jsonBytes    `json:"max_bytes,omitempty"`
	Overflow             string       `json:"overflow,omitempty"`
	DeadLetterQueue      string       `json:"dead_letter_queue,omitempty"`
}

func apiPolicyOf(p engine.Policy) apiPolicy {
	return apiPolicy{
		MaxDeliveries:        p.MaxDeliveries,
		RedeliveryDelay:      jsonDuration(p.RedeliveryDelay),
		RedeliveryMultiplier: p.RedeliveryMultiplier,
		RedeliveryMaxDelay:   jsonDuration(p.RedeliveryMaxDelay),
		RedeliveryJitter:     p.RedeliveryJitter,
		TTL:                  jsonDuration(p.TTL),
		MaxLength:            p.MaxLength,
		MaxBytes:             jsonBytes(p.MaxBytes),
		Overflow:             string(p.Overflow),
		DeadLetterQueue:      p.DeadLetterQueue,
	}
}

// policy returns the engine policy, or why it cannot be one. Ranges are
// checked by the engine once it is merged with the configured policy.
func (a apiPolicy) policy() (engine.Policy, error) {
	if a.RedeliveryDelay < 0 || a.RedeliveryMaxDelay < 0 || a.TTL < 0 || a.MaxBytes < 0 {
		return engine.Policy{}, fmt.Errorf("%w: durations and max_bytes must not be negative", engine.ErrInvalidPolicy)
	}
	return engine.Policy{
		MaxDeliveries:        a.MaxDeliveries,
		RedeliveryDelay:      time.Duration(a.RedeliveryDelay),
		RedeliveryMultiplier: a.RedeliveryMultiplier,
		RedeliveryMaxDelay:   time.Duration(a.RedeliveryMaxDelay),
		RedeliveryJitter:     a.RedeliveryJitter,
		TTL:                  time.Duration(a.TTL),
		MaxLength:            a.MaxLength,
		MaxBytes:             int64(a.MaxBytes),
		Overflow:             engine.Overflow(a.Overflow),
		DeadLetterQueue:      a.DeadLetterQueue,
	}, nil
}

// jsonDuration is a time.Duration written as "1m30s".
type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"30s\" or \"1h\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q", s)
	}
	*d = jsonDuration(v)
	return nil
}

// jsonBytes is a byte count, read from a number or a string with a unit.
type jsonBytes int64

func (n *jsonBytes) UnmarshalJSON(b []byte) error {
	var i int64
	if err := json.Unmarshal(b, &i); err == nil {
		*n = jsonBytes(i)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a byte size is a number or a string such as \"512MiB\", got %s", b)
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*n = jsonBytes(v)
	return nil
}

// apiQueuePolicy is a queue's override and the effective policy it makes.
type apiQueuePolicy struct {
	Queue     string    `json:"queue"`
	Override  apiPolicy `json:"override"`
	Effective apiPolicy `json:"effective"`
}

func (o *operations) getPolicy(w http.ResponseWriter, r *http.Request) {
	qi, err := o.targets.get().broker.QueueInfo(r.PathValue("name"))
	if err != nil {
		o.writeEngineError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiQueuePolicy{Queue: qi.Name, Override: apiPolicyOf(qi.Override), Effective: apiPolicyOf(qi.Policy)})
}

// setPolicy replaces (PUT), amends (PATCH: the fields given replace
// theirs) or clears (DELETE) a queue's override. It applies at once and is
// stored with the queue, so it survives restarts.
func (o *operations) setPolicy(w http.ResponseWriter, r *http.Request) {
	b := o.targets.get().broker
	name := r.PathValue("name")
	qi, err := b.QueueInfo(name)
	if err != nil {
		o.writeEngineError(w, err)
		return
	}
	var p engine.Policy
	if r.Method != http.MethodDelete {
		var ap apiPolicy
		if err := decodeBody(r, &ap); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if p, err = ap.policy(); err != nil {
			o.writeEngineError(w, err)
			return
		}
		if r.Method == http.MethodPatch {
			p = qi.Override.Merge(p)
		}
	}
	if err := b.SetPolicy(name, p); err != nil {
		o.writeEngineError(w, err)
		return
	}
	if qi, err = b.QueueInfo(name); err != nil {
		o.writeEngineError(w, err)
		return
	}
	o.log.Info().Str("queue", name).Interface("override", qi.Override).Msg("admin: queue policy set")
	writeJSON(w, http.StatusOK, apiQueuePolicy{Queue: qi.Name, Override: apiPolicyOf(qi.Override), Effective: apiPolicyOf(qi.Policy)})
}

// Bindings.

// apiBinding is a binding in engine terms: a topic filter (levels split by
// '/') and a queue. Requests may also write the topic as a STOMP
// destination (/topic/sensors.#) and the queue as /queue/NAME.
type apiBinding struct {
	Queue string `json:"queue"`
	Topic string `json:"topic"`
}

func (o *operations) listBindings(w http.ResponseWriter, _ *http.Request) {
	bs := o.targets.get().broker.Bindings()
	out := make([]apiBinding, len(bs))
	for i, bd := range bs {
		out[i] = apiBinding{Queue: bd.Queue, Topic: bd.Filter}
	}
	writeJSON(w, http.StatusOK, out)
}

func (o *operations) bind(w http.ResponseWriter, r *http.Request) {
	var req apiBinding
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	queue, filter, err := BindingConfig(req).engineBinding()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := o.targets.get().broker.Bind(filter, queue); err != nil {
		o.writeEngineError(w, err)
		return
	}
	o.log.Info().Str("queue", queue).Str("topic", filter).Msg("admin: binding added")
	writeJSON(w, http.StatusCreated, apiBinding{Queue: queue, Topic: filter})
}

func (o *operations) unbind(w http.ResponseWriter, r *http.Request) {
	b := o.targets.get().broker
	q := r.URL.Query()
	queue, filter, err := BindingConfig{Queue: q.Get("queue"), Topic: q.Get("topic")}.engineBinding()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	found := false
	for _, bd := range b.Bindings() {
		if bd.Queue == queue && bd.Filter == filter {
			found = true
			break
		}
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no binding of %q to queue %q", filter, queue))
		return
	}
	if err := b.Unbind(filter, queue); err != nil {
		o.writeEngineError(w, err)
		return
	}
	o.log.Info().Str("queue", queue).Str("topic", filter).Msg("admin: binding removed")
	w.WriteHeader(http.StatusNoContent)
}

// Subscriptions and connections.

// apiSubscription is a subscription that outlives its consumers: an MQTT
// persistent session ("mqtt-session"), a STOMP durable subscription
// ("durable") or an MQTT shared subscription group ("shared"; one with the
// same name and filter as a STOMP durable subscription is that one).
type apiSubscription struct {
	Kind      string     `json:"kind"`
	Name      string     `json:"name"`
	Filters   []string   `json:"filters"`
	Queue     string     `json:"queue"`
	Connected bool       `json:"connected"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Messages  int64      `json:"messages"`
	Unacked   int        `json:"unacked"`
	Consumers int        `json:"consumers"`
}

func (o *operations) listSubscriptions(w http.ResponseWriter, _ *http.Request) {
	t := o.targets.get()
	durable := map[string]bool{}
	err := t.broker.ScanKV(protocol.DurableSubscriptionNS, func(key string, _ []byte) error {
		durable[key] = true
		return nil
	})
	if err != nil {
		o.writeEngineError(w, err)
		return
	}
	figures := func(s *apiSubscription) {
		if qi, err := t.broker.QueueInfo(s.Queue); err == nil {
			s.Messages, s.Unacked, s.Consumers = qi.Messages, qi.Unacked, qi.Consumers
		}
	}
	out := []apiSubscription{}
	for _, ss := range t.mqtt.Sessions() {
		s := apiSubscription{Kind: "mqtt-session", Name: ss.ClientID, Queue: ss.Queue, Connected: ss.Connected, Filters: []string{}}
		for _, f := range ss.Filters {
			s.Filters = append(s.Filters, fmt.Sprintf("%s (QoS %d)", f.Filter, f.QoS))
		}
		if !ss.ExpiresAt.IsZero() {
			at := ss.ExpiresAt.UTC()
			s.ExpiresAt = &at
		}
		figures(&s)
		out = append(out, s)
	}
	for _, qi := range t.broker.Queues() {
		rest, ok := strings.CutPrefix(qi.Name, "$share/")
		if !ok {
			continue
		}
		name, filter, _ := strings.Cut(rest, "/")
		s := apiSubscription{Kind: "shared", Name: name, Filters: []string{filter}, Queue: qi.Name,
			Connected: qi.Consumers > 0, Messages: qi.Messages, Unacked: qi.Unacked, Consumers: qi.Consumers}
		if durable[qi.Name] {
			s.Kind = "durable"
		}
		out = append(out, s)
	}
	writeJSON(w, http.StatusOK, out)
}

func (o *operations) listConnections(w http.ResponseWriter, _ *http.Request) {
	t := o.targets.get()
	out := append(t.mqtt.Connections(), t.stomp.Connections()...)
	if out == nil {
		out = []protocol.ConnInfo{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (o *operations) closeConnection(w http.ResponseWriter, r *http.Request) {
	t := o.targets.get()
	proto, id := r.PathValue("protocol"), r.PathValue("id")
	var err error
	switch proto {
	case "mqtt":
		err = t.mqtt.CloseConnection(id)
	case "stomp":
		err = t.stomp.CloseConnection(id)
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("protocol must be mqtt or stomp, got %q", proto))
		return
	}
	if err != nil {
		if errors.Is(err, protocol.ErrNoConnection) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no %s connection %q", proto, id))
			return
		}
		o.writeEngineError(w, err)
		return
	}
	o.log.Info().Str("protocol", proto).Str("id", id).Msg("admin: connection closed")
	w.WriteHeader(http.StatusNoContent)
}
