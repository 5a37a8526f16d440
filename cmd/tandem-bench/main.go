// Command tandem-bench is Tandem's load tool. Each scenario is a
// subcommand and talks to any broker through its standard protocol, so the
// same run measures Tandem and, for comparison, RabbitMQ, Mosquitto,
// nats-server and a plain mochi broker:
//
//	tandem-bench stomp-queue   [flags]  durable-queue throughput, counted exactly
//	tandem-bench stomp-latency [flags]  end-to-end latency at a fixed rate
//	tandem-bench mqtt-fanin    [flags]  QoS 0, 4 publishers into one wildcard subscriber
//	tandem-bench mqtt-fanout   [flags]  QoS 0, 1 publisher to 50 subscribers
//	tandem-bench mqtt-persist  [flags]  QoS 1 into a persistent session, counted exactly
//	tandem-bench mqtt-latency  [flags]  QoS 1 latency at a fixed rate
//	tandem-bench mqtt-idle     [flags]  broker memory per idle connection
//	tandem-bench mochi-serve   [flags]  run a plain mochi MQTT broker (a peer)
//	tandem-bench table FILE...          a Markdown table of JSON results
//
// A scenario prints its result as one JSON object on stdout and one human
// line on stderr. It exits 0 when every message was receipted and delivered
// exactly once, 3 when the counts show loss, duplicates or errors, 2 for
// bad flags and 1 when it could not run. Every scenario is bounded by
// --timeout. compare-rabbitmq.sh runs the STOMP scenarios against Tandem
// and RabbitMQ, compare-mqtt.sh the MQTT ones against Tandem, Mosquitto,
// nats-server and mochi, and each prints a table.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const (
	exitOK       = 0
	exitRuntime  = 1
	exitUsage    = 2
	exitMiscount = 3
)

const usage = `Usage: tandem-bench SCENARIO [flags]

Scenarios:
  stomp-queue     P producers send persistent messages with receipts to a durable
                  queue, C consumers ack each (client-individual); exact counts of
                  sent, receipted, received, duplicates and lost; steady msgs/s
  stomp-latency   a fixed total rate for a duration; p50/p99/p99.9/max latency
                  from SEND to MESSAGE
  mqtt-fanin      QoS 0: 4 publishers, one subscriber on tb/RUN/+; deliveries/s
  mqtt-fanout     QoS 0: 1 publisher, 50 subscribers on its topic; deliveries/s
  mqtt-persist    QoS 1: 4 pipelining publishers, one subscriber in a persistent
                  session; msgs/s with every message PUBACKed, lost and duplicates
  mqtt-latency    QoS 1 at a fixed rate into a persistent session; p50/p99/max
                  from PUBLISH to delivery
  mqtt-idle       N idle connections; the broker's VmRSS per connection (--pid)
  mochi-serve     run a plain mochi broker (allow-all hook, one TCP listener)
                  until SIGINT/SIGTERM
  table FILE...   print the JSON results in FILEs (one per line) as Markdown tables

Run "tandem-bench SCENARIO -h" for a scenario's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "stomp-queue":
		var cfg queueConfig
		if code, ok := parse(args, cfg.flags, cfg.validate, stderr); !ok {
			return code
		}
		res, err := runQueue(ctx, cfg)
		return report(res, res.human(), res.ok(), err, cfg.out, stdout, stderr)
	case "stomp-latency":
		var cfg latencyConfig
		if code, ok := parse(args, cfg.flags, cfg.validate, stderr); !ok {
			return code
		}
		res, err := runLatency(ctx, cfg)
		return report(res, res.human(), res.ok(), err, cfg.out, stdout, stderr)
	case "mqtt-fanin", "mqtt-fanout", "mqtt-persist", "mqtt-latency":
		cfg := mqttConfig{scenario: args[0]}
		if code, ok := parse(args, cfg.flags, cfg.validate, stderr); !ok {
			return code
		}
		res, err := runMQTT(ctx, cfg)
		return report(res, res.human(), res.ok(), err, cfg.out, stdout, stderr)
	case "mqtt-idle":
		var cfg idleConfig
		if code, ok := parse(args, cfg.flags, cfg.validate, stderr); !ok {
			return code
		}
		res, err := runIdle(ctx, cfg)
		return report(res, res.human(), res.ok(), err, cfg.out, stdout, stderr)
	case "mochi-serve":
		var cfg mochiConfig
		if code, ok := parse(args, cfg.flags, cfg.validate, stderr); !ok {
			return code
		}
		err := serveMochi(ctx, cfg, stderr, func(addr string) {
			fmt.Fprintf(stderr, "mochi-serve: listening on %s\n", addr)
		})
		if err != nil {
			fmt.Fprintf(stderr, "tandem-bench: %v\n", err)
			return exitRuntime
		}
		return exitOK
	case "table":
		if err := printTable(args[1:], stdout); err != nil {
			fmt.Fprintf(stderr, "tandem-bench: %v\n", err)
			return exitRuntime
		}
		return exitOK
	}
	fmt.Fprintf(stderr, "tandem-bench: unknown scenario %q\n\n%s", args[0], usage)
	return exitUsage
}

// parse parses a scenario's flags. It returns false with the exit code when
// the program should stop.
func parse(args []string, define func(*flag.FlagSet), validate func() error, stderr io.Writer) (int, bool) {
	fs := flag.NewFlagSet("tandem-bench "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	define(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tandem-bench: unexpected argument %q\n", fs.Arg(0))
		return exitUsage, false
	}
	if err := validate(); err != nil {
		fmt.Fprintf(stderr, "tandem-bench: %v\n", err)
		return exitUsage, false
	}
	return exitOK, true
}

// report writes the result as JSON (to stdout, or appended to out) and the
// human line to stderr, and returns the exit code.
func report(res any, human string, ok bool, err error, out string, stdout, stderr io.Writer) int {
	if err != nil {
		fmt.Fprintf(stderr, "tandem-bench: %v\n", err)
		return exitRuntime
	}
	b, jerr := json.Marshal(res)
	if jerr != nil {
		fmt.Fprintf(stderr, "tandem-bench: %v\n", jerr)
		return exitRuntime
	}
	b = append(b, '\n')
	w := stdout
	if out != "" {
		f, ferr := os.OpenFile(out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if ferr != nil {
			fmt.Fprintf(stderr, "tandem-bench: %v\n", ferr)
			return exitRuntime
		}
		defer f.Close()
		w = f
	}
	if _, werr := w.Write(b); werr != nil {
		fmt.Fprintf(stderr, "tandem-bench: %v\n", werr)
		return exitRuntime
	}
	fmt.Fprintln(stderr, human)
	if !ok {
		return exitMiscount
	}
	return exitOK
}

// common are the flags every scenario has.
type common struct {
	broker  brokerOptions
	dest    string
	label   string
	out     string
	timeout time.Duration
}

func (c *common) flags(fs *flag.FlagSet, dest string) {
	fs.StringVar(&c.broker.addr, "addr", "127.0.0.1:61613", "broker STOMP `host:port`")
	fs.StringVar(&c.broker.login, "login", "", "CONNECT login (RabbitMQ: guest)")
	fs.StringVar(&c.broker.passcode, "passcode", "", "CONNECT passcode (RabbitMQ: guest)")
	fs.StringVar(&c.broker.host, "host", "", "CONNECT host header (RabbitMQ: the vhost, /); default the address's host")
	fs.StringVar(&c.dest, "dest", dest, "destination")
	fs.StringVar(&c.label, "label", "", "name of the broker in the report, e.g. tandem or rabbitmq")
	fs.StringVar(&c.out, "json", "", "append the JSON result to this `file` instead of printing it")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "hard deadline for the whole scenario")
}

func (c *common) validate() error {
	if c.timeout <= 0 || c.timeout > 24*time.Hour {
		return errors.New("--timeout must be positive and at most 24h")
	}
	if c.broker.addr == "" || c.dest == "" {
		return errors.New("--addr and --dest must not be empty")
	}
	return nil
}

// header opens every result.
type header struct {
	Scenario string `json:"scenario"`
	Label    string `json:"label,omitempty"`
	Addr     string `json:"addr"`
	Dest     string `json:"dest"`
	Run      string `json:"run"`     // this run's id, in every message's x-bench-run
	Started  string `json:"started"` // RFC 3339
}

func (c *common) header(scenario string) header {
	var id [6]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return header{
		Scenario: scenario,
		Label:    c.label,
		Addr:     c.broker.addr,
		Dest:     c.dest,
		Run:      hex.EncodeToString(id[:]),
		Started:  time.Now().UTC().Format(time.RFC3339),
	}
}
