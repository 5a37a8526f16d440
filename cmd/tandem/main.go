// Command tandem runs the Tandem message broker: MQTT and STOMP over one
// routing engine persisted in Pebble.
//
// With no flags it starts on embedded defaults (data in ./data, admin HTTP
// on 127.0.0.1:9090). Settings are layered: defaults < --config file <
// TANDEM_* environment variables < flags; configs/tandem.yaml documents
// them all. SIGINT or SIGTERM shuts down gracefully and exits 0. A bad
// configuration exits 2, a runtime failure 1, each after one line on
// stderr.
//
// `tandem ctl COMMAND` administers a running broker through its admin API
// (ctl.go): queues, bindings, policies, dead letters, connections.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(mainCode())
}

// mainCode runs the broker with the process's arguments, environment and
// signals, and returns the exit code.
func mainCode() int {
	if len(os.Args) > 1 && os.Args[1] == "passwd" {
		return passwd(os.Stdin, os.Stdout, os.Stderr)
	}
	if len(os.Args) > 1 && os.Args[1] == "ctl" {
		return ctl(os.Args[2:], os.Getenv, os.Stdout, os.Stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return run(ctx, process{
		args:        os.Args[1:],
		getenv:      os.Getenv,
		stderr:      os.Stderr,
		stopSignals: stop,
		hup:         hup,
	})
}
