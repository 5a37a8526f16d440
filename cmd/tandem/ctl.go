package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandem-mq/tandem/protocol"
)

// `tandem ctl` is the command line of the admin API (api.go): a plain HTTP
// client. Run where the broker runs, it needs no flags: it reads the API's
// address and token from the data directory (admin.addr, admin.token),
// found as the broker finds it (--data, else TANDEM_DATA_DIR, else
// ./data; or the data_dir of --config). --addr and --token (or
// TANDEM_ADMIN_TOKEN) reach a broker elsewhere.

const ctlUsage = `Usage: tandem ctl [flags] COMMAND [ARGS]

Administer a running Tandem broker through its admin API.

Commands:
  queues                         list queues with their figures
  queue show NAME                one queue: figures and policy
  queue create NAME [POLICY]     declare a durable queue (with its own policy)
  queue delete NAME              delete a queue and every message in it
  purge NAME                     remove a queue's ready messages
  bindings                       list bindings (topic filter -> queue)
  bind QUEUE TOPIC               route topics matching TOPIC into QUEUE
  unbind QUEUE TOPIC             remove that binding
  policy show NAME               a queue's own policy and its effective one
  policy set NAME POLICY         change a queue's own policy (at once, kept across restarts)
  policy clear NAME              drop a queue's own policy (back to the configured one)
  dlq browse NAME [--limit N]    list messages of a (dead-letter) queue without consuming them
  dlq replay NAME [--limit N]    move dead letters back to the queues they died in
  subscriptions                  list MQTT persistent sessions, shared and durable subscriptions
  connections                    list client connections (both protocols)
  close PROTOCOL ID              close a connection (mqtt CLIENT-ID, or stomp SESSION-ID)
  metrics [--all]                print the broker's tandem_* metrics (--all: every series)

POLICY flags: --ttl 30s  --max-length N  --max-bytes 1GiB  --overflow reject-publish|drop-head|dead-letter
  --max-deliveries N  --redelivery-delay 1s  --redelivery-multiplier 2  --redelivery-max-delay 1m
  --redelivery-jitter 0.1  --dlq NAME (- for none)

Flags (anywhere on the line):
`

// ctlFlags are the flags every command takes.
type ctlFlags struct {
	addr, token, data, config string
	json                      bool
	limit, truncate           int
	all                       bool
	policy                    map[string]*string
}

// policyFlags are the POLICY flags and the API keys they set.
var policyFlags = []struct{ flag, key, kind, help string }{
	{"ttl", "ttl", "duration", "message time to live"},
	{"max-length", "max_length", "int", "most messages (-1: no count limit)"},
	{"max-bytes", "max_bytes", "bytes", "most bytes (\"512MiB\")"},
	{"overflow", "overflow", "string", "reject-publish, drop-head or dead-letter"},
	{"max-deliveries", "max_deliveries", "int", "delivery attempts before dead-lettering (-1: unlimited)"},
	{"redelivery-delay", "redelivery_delay", "duration", "delay before the first redelivery"},
	{"redelivery-multiplier", "redelivery_multiplier", "float", "delay factor at each further attempt"},
	{"redelivery-max-delay", "redelivery_max_delay", "duration", "cap on the redelivery delay"},
	{"redelivery-jitter", "redelivery_jitter", "float", "spread each delay by up to this fraction"},
	{"dlq", "dead_letter_queue", "string", "dead-letter queue (- for none)"},
}

// ctl runs `tandem ctl ARGS` and returns the exit code: 0, 1 when the
// broker could not be reached or refused, 2 for a bad command line.
func ctl(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var f ctlFlags
	fs := flag.NewFlagSet("tandem ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.addr, "addr", "", "admin API `host:port` (default: read from DATA/admin.addr)")
	fs.StringVar(&f.token, "token", "", "admin API `token` (default: env TANDEM_ADMIN_TOKEN, else DATA/admin.token)")
	fs.StringVar(&f.data, "data", "", "the broker's data `dir`ectory (default ./data; env TANDEM_DATA_DIR)")
	fs.StringVar(&f.config, "config", "", "the broker's YAML configuration `file`, for its data_dir")
	fs.BoolVar(&f.json, "json", false, "print the API's JSON answer")
	fs.IntVar(&f.limit, "limit", 0, "dlq browse: most messages (default 100); dlq replay: most messages (default all)")
	fs.IntVar(&f.truncate, "truncate", 0, "dlq browse: cut payloads to this many bytes (default 64KiB)")
	fs.BoolVar(&f.all, "all", false, "metrics: every series, not only tandem_*")
	f.policy = map[string]*string{}
	for _, p := range policyFlags {
		f.policy[p.flag] = fs.String(p.flag, "", p.help)
	}
	pos, err := parseAnywhere(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		_, _ = fmt.Fprint(stdout, ctlUsage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return exitOK
	}
	if err == nil && len(pos) == 0 {
		err = errors.New("no command (see tandem ctl -h)")
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "tandem ctl: %v\n", err)
		return exitConfig
	}
	c := &ctlClient{f: f, getenv: getenv, out: stdout, http: &http.Client{Timeout: 30 * time.Second}}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if err := c.run(pos, set); err != nil {
		_, _ = fmt.Fprintf(stderr, "tandem ctl: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitConfig
		}
		return exitRuntime
	}
	return exitOK
}

// parseAnywhere parses flags wherever they are among the positional
// arguments, which it returns in order. "--" ends the flags.
func parseAnywhere(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// Parse stops at the first positional argument, or after "--".
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a bad command line (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// ctlClient talks to one broker's admin API.
type ctlClient struct {
	f      ctlFlags
	getenv func(string) string
	out    io.Writer
	http   *http.Client

	base, token string // resolved by connect
}

// dataDir is the broker's data directory, found as the broker finds it.
func (c *ctlClient) dataDir() (string, error) {
	if c.f.config != "" {
		cfg, err := loadConfig(flags{config: c.f.config, data: c.f.data}, c.getenv)
		if err != nil {
			return "", err
		}
		return cfg.DataDir, nil
	}
	if c.f.data != "" {
		return c.f.data, nil
	}
	if d := c.getenv("TANDEM_DATA_DIR"); d != "" {
		return d, nil
	}
	return defaultDataDir, nil
}

// connect resolves the API's address and, when needToken, its token.
func (c *ctlClient) connect(needToken bool) error {
	addr, token := c.f.addr, c.f.token
	if token == "" {
		token = c.getenv("TANDEM_ADMIN_TOKEN")
	}
	if addr == "" || (needToken && token == "") {
		dir, err := c.dataDir()
		if err != nil {
			return err
		}
		if addr == "" {
			b, err := os.ReadFile(filepath.Join(dir, addrFile))
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("no broker address: %s does not exist; is a broker running on data directory %s? (else give --addr, or --data)",
					filepath.Join(dir, addrFile), dir)
			}
			if err != nil {
				return err
			}
			addr = strings.TrimSpace(string(b))
		}
		if needToken && token == "" {
			b, err := os.ReadFile(filepath.Join(dir, tokenFile))
			if err != nil {
				return fmt.Errorf("no admin token: %w (give --token, or run where the broker's data directory %s is readable)", unwrapPathErrorKeep(err), dir)
			}
			token = strings.TrimSpace(string(b))
		}
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	c.base, c.token = strings.TrimSuffix(addr, "/"), token
	return nil
}

// unwrapPathErrorKeep keeps the path of a *os.PathError (it is the news
// here) but drops the operation.
func unwrapPathErrorKeep(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// call sends one API request and decodes the answer into out (nil: none
// expected). With --json, it prints the answer as it came instead and
// returns errPrinted.
func (c *ctlClient) call(method, path string, query url.Values, body, out any) error {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the broker's admin API: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var ae apiError
		if json.Unmarshal(data, &ae) == nil && ae.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", ae.Error, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	if c.f.json {
		if len(data) > 0 {
			_, err = c.out.Write(data)
		}
		if err != nil {
			return err
		}
		return errPrinted
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("unexpected answer: %w", err)
		}
	}
	return nil
}

// errPrinted means the answer was printed as JSON: nothing more to do.
var errPrinted = errors.New("printed")

// run carries out one command.
func (c *ctlClient) run(pos []string, set map[string]bool) error {
	cmd, args := pos[0], pos[1:]
	nargs := func(want int, names string) error {
		if len(args) != want {
			return usagef("usage: tandem ctl %s %s", cmd, names)
		}
		return nil
	}
	sub := ""
	switch cmd {
	case "queue", "policy", "dlq":
		if len(args) == 0 {
			return usagef("%s needs a subcommand (see tandem ctl -h)", cmd)
		}
		sub, args = args[0], args[1:]
		cmd += " " + sub
	}
	if cmd != "queue create" && cmd != "policy set" {
		for _, p := range policyFlags {
			if set[p.flag] {
				return usagef("--%s is for queue create and policy set", p.flag)
			}
		}
	}
	var err error
	switch cmd {
	case "queues", "bindings", "subscriptions", "connections":
		err = nargs(0, "")
	case "queue show", "queue create", "queue delete", "purge", "policy show", "policy set", "policy clear", "dlq browse", "dlq replay":
		err = nargs(1, "NAME")
	case "bind", "unbind":
		err = nargs(2, "QUEUE TOPIC")
	case "close":
		err = nargs(2, "PROTOCOL ID")
	case "metrics":
		err = nargs(0, "[--all]")
	default:
		return usagef("unknown command %q (see tandem ctl -h)", cmd)
	}
	if err != nil {
		return err
	}
	if err := c.connect(cmd != "metrics"); err != nil {
		return err
	}
	err = c.dispatch(cmd, args)
	if errors.Is(err, errPrinted) {
		return nil
	}
	return err
}

func queuePath(name string) string { return "/api/queues/" + url.PathEscape(name) }

func (c *ctlClient) dispatch(cmd string, args []string) error {
	switch cmd {
	case "queues":
		var qs []apiQueue
		if err := c.call("GET", "/api/queues", nil, nil, &qs); err != nil {
			return err
		}
		return c.table(func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tMESSAGES\tREADY\tUNACKED\tCONSUMERS\tOLDEST\tPUBLISHED\tDELIVERED\tACKED\tREDELIVERED\tDEAD-LETTERED\tEXPIRED")
			for _, q := range qs {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", q.Name, q.Messages, q.Ready, q.Unacked,
					q.Consumers, age(q.OldestAge), q.Published, q.Delivered, q.Acked, q.Redelivered, q.DeadLettered, q.Expired)
			}
		})
	case "queue show":
		var q apiQueue
		if err := c.call("GET", queuePath(args[0]), nil, nil, &q); err != nil {
			return err
		}
		return c.table(func(w io.Writer) {
			durable := "durable"
			if !q.Durable {
				durable = "temporary"
			}
			fmt.Fprintf(w, "queue\t%s (%s)\n", q.Name, durable)
			fmt.Fprintf(w, "messages\t%d (ready %d, unacked %d), %d bytes\n", q.Messages, q.Ready, q.Unacked, q.Bytes)
			fmt.Fprintf(w, "oldest message\t%s\n", age(q.OldestAge))
			fmt.Fprintf(w, "consumers\t%d\n", q.Consumers)
			fmt.Fprintf(w, "since start\tpublished %d, delivered %d, acked %d, redelivered %d, dead-lettered %d, expired %d, dropped %d\n",
				q.Published, q.Delivered, q.Acked, q.Redelivered, q.DeadLettered, q.Expired, q.Dropped)
			fmt.Fprintf(w, "policy\t%s\n", policyLine(q.Policy))
			fmt.Fprintf(w, "own policy\t%s\n", policyLine(q.Override))
		})
	case "queue create":
		body, err := c.policyBody()
		if err != nil {
			return err
		}
		var q apiQueue
		if err := c.call("PUT", queuePath(args[0]), nil, map[string]any{"policy": body}, &q); err != nil {
			return err
		}
		return c.printf("queue %s declared; policy: %s\n", q.Name, policyLine(q.Policy))
	case "queue delete":
		if err := c.call("DELETE", queuePath(args[0]), nil, nil, nil); err != nil {
			return err
		}
		return c.printf("queue %s deleted\n", args[0])
	case "purge":
		var p purged
		if err := c.call("POST", queuePath(args[0])+"/purge", nil, nil, &p); err != nil {
			return err
		}
		return c.printf("purged %d messages from %s\n", p.Purged, p.Queue)
	case "bindings":
		var bs []apiBinding
		if err := c.call("GET", "/api/bindings", nil, nil, &bs); err != nil {
			return err
		}
		return c.table(func(w io.Writer) {
			fmt.Fprintln(w, "TOPIC\tQUEUE")
			for _, b := range bs {
				fmt.Fprintf(w, "%s\t%s\n", b.Topic, b.Queue)
			}
		})
	case "bind":
		var b apiBinding
		if err := c.call("POST", "/api/bindings", nil, apiBinding{Queue: args[0], Topic: args[1]}, &b); err != nil {
			return err
		}
		return c.printf("bound %s -> %s\n", b.Topic, b.Queue)
	case "unbind":
		q := url.Values{"queue": {args[0]}, "topic": {args[1]}}
		if err := c.call("DELETE", "/api/bindings", q, nil, nil); err != nil {
			return err
		}
		return c.printf("unbound %s -> %s\n", args[1], args[0])
	case "policy show", "policy set", "policy clear":
		method, path := "GET", queuePath(args[0])+"/policy"
		var body any
		switch cmd {
		case "policy set":
			p, err := c.policyBody()
			if err != nil {
				return err
			}
			if len(p) == 0 {
				return usagef("policy set needs at least one POLICY flag (see tandem ctl -h)")
			}
			method, body = "PATCH", p
		case "policy clear":
			method = "DELETE"
		}
		var p apiQueuePolicy
		if err := c.call(method, path, nil, body, &p); err != nil {
			return err
		}
		return c.table(func(w io.Writer) {
			fmt.Fprintf(w, "queue\t%s\n", p.Queue)
			fmt.Fprintf(w, "own policy\t%s\n", policyLine(p.Override))
			fmt.Fprintf(w, "effective\t%s\n", policyLine(p.Effective))
		})
	case "dlq browse":
		q := url.Values{}
		if c.f.limit > 0 {
			q.Set("limit", strconv.Itoa(c.f.limit))
		}
		if c.f.truncate > 0 {
			q.Set("truncate", strconv.Itoa(c.f.truncate))
		}
		var b browsed
		if err := c.call("GET", queuePath(args[0])+"/messages", q, nil, &b); err != nil {
			return err
		}
		return c.table(func(w io.Writer) {
			fmt.Fprintln(w, "SEQ\tDELIVERIES\tPUBLISHED\tREASON\tFROM\tPAYLOAD")
			for _, m := range b.Messages {
				reason, from := "-", "-"
				for _, h := range m.Headers {
					switch h.Key {
					case "x-death-reason":
						reason = h.Value
					case "x-original-destination":
						from = h.Value
					}
				}
				payload := m.Payload
				if m.Encoding != "string" {
					payload = "base64:" + payload
				}
				if len(payload) > 60 {
					payload = payload[:57] + "..."
				}
				fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\t%q\n", m.Seq, m.Deliveries, m.PublishedAt.Local().Format(time.DateTime), reason, from, payload)
			}
		})
	case "dlq replay":
		q := url.Values{}
		if c.f.limit > 0 {
			q.Set("limit", strconv.Itoa(c.f.limit))
		}
		var r replayed
		if err := c.call("POST", queuePath(args[0])+"/replay", q, nil, &r); err != nil {
			return err
		}
		return c.printf("replayed %d messages from %s to the queues they died in; %d left\n", r.Replayed, r.Queue, r.Left)
	case "subscriptions":
		var ss []apiSubscription
		if err := c.call("GET", "/api/subscriptions", nil, nil, &ss); err != nil {
			return err
		}
		return c.table(func(w io.Writer) {
			fmt.Fprintln(w, "KIND\tNAME\tFILTERS\tQUEUE\tCONNECTED\tMESSAGES\tUNACKED\tCONSUMERS\tEXPIRES")
			for _, s := range ss {
				exp := "-"
				if s.ExpiresAt != nil {
					exp = s.ExpiresAt.Local().Format(time.DateTime)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%d\t%d\t%d\t%s\n", s.Kind, s.Name, strings.Join(s.Filters, ", "), s.Queue,
					s.Connected, s.Messages, s.Unacked, s.Consumers, exp)
			}
		})
	case "connections":
		var cs []protocol.ConnInfo
		if err := c.call("GET", "/api/connections", nil, nil, &cs); err != nil {
			return err
		}
		return c.table(func(w io.Writer) {
			fmt.Fprintln(w, "PROTOCOL\tID\tTRANSPORT\tREMOTE\tUSER\tCLIENT-ID\tVERSION\tSUBSCRIPTIONS")
			for _, cn := range cs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cn.Protocol, cn.ID, cn.Transport, cn.Remote,
					dash(cn.User), dash(cn.ClientID), cn.Version, dash(strings.Join(cn.Subscriptions, " ")))
			}
		})
	case "close":
		path := "/api/connections/" + url.PathEscape(args[0]) + "/" + url.PathEscape(args[1])
		if err := c.call("DELETE", path, nil, nil, nil); err != nil {
			return err
		}
		return c.printf("closed %s connection %s\n", args[0], args[1])
	case "metrics":
		return c.metrics()
	}
	return usagef("unknown command %q", cmd)
}

// metrics prints the tandem_* series of /metrics (every series with
// --all), without the HELP and TYPE lines.
func (c *ctlClient) metrics() error {
	resp, err := c.http.Get(c.base + "/metrics")
	if err != nil {
		return fmt.Errorf("cannot reach the broker's admin listener: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/metrics: HTTP %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || (!c.f.all && !strings.HasPrefix(line, "tandem_")) {
			continue
		}
		if _, err := fmt.Fprintln(c.out, line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// policyBody is the JSON object the POLICY flags given make.
func (c *ctlClient) policyBody() (map[string]any, error) {
	body := map[string]any{}
	for _, p := range policyFlags {
		v := *c.f.policy[p.flag]
		if v == "" {
			continue
		}
		switch p.kind {
		case "int":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, usagef("--%s wants an integer, got %q", p.flag, v)
			}
			body[p.key] = n
		case "float":
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, usagef("--%s wants a number, got %q", p.flag, v)
			}
			body[p.key] = x
		case "duration":
			if _, err := time.ParseDuration(v); err != nil {
				return nil, usagef("--%s wants a duration such as 30s or 5m, got %q", p.flag, v)
			}
			body[p.key] = v
		default:
			body[p.key] = v
		}
	}
	return body, nil
}

// policyLine writes a policy on one line, "-" when nothing is set.
func policyLine(p apiPolicy) string {
	var parts []string
	add := func(k string, set bool, v any) {
		if set {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	add("max_deliveries", p.MaxDeliveries != 0, p.MaxDeliveries)
	add("redelivery_delay", p.RedeliveryDelay != 0, time.Duration(p.RedeliveryDelay))
	add("redelivery_multiplier", p.RedeliveryMultiplier != 0, p.RedeliveryMultiplier)
	add("redelivery_max_delay", p.RedeliveryMaxDelay != 0, time.Duration(p.RedeliveryMaxDelay))
	add("redelivery_jitter", p.RedeliveryJitter != 0, p.RedeliveryJitter)
	add("ttl", p.TTL != 0, time.Duration(p.TTL))
	add("max_length", p.MaxLength != 0, p.MaxLength)
	add("max_bytes", p.MaxBytes != 0, ByteSize(p.MaxBytes))
	add("overflow", p.Overflow != "", p.Overflow)
	add("dead_letter_queue", p.DeadLetterQueue != "", p.DeadLetterQueue)
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// age writes an age in seconds for a table, "-" for none.
func age(s float64) string {
	if s <= 0 {
		return "-"
	}
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// table writes aligned columns (tab-separated cells).
func (c *ctlClient) table(fill func(io.Writer)) error {
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fill(tw)
	return tw.Flush()
}

func (c *ctlClient) printf(format string, args ...any) error {
	_, err := fmt.Fprintf(c.out, format, args...)
	return err
}
