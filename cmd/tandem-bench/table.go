package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// row holds the fields of either scenario's result that the table shows.
type row struct {
	header
	Producers    int `json:"producers"`
	Consumers    int `json:"consumers"`
	ReceiptEvery int `json:"receipt_every"`
	Rate         int `json:"rate"`
	counts
	ExactlyOnce bool           `json:"exactly_once"`
	SteadyRate  float64        `json:"steady_msgs_per_s"`
	Latency     latencySummary `json:"latency"`
	Errors      []string       `json:"errors"`
}

// printTable reads JSON results, one per line, from files and prints them
// in the order read: the STOMP results as one Markdown table, the MQTT
// results as another plus a summary by round (mqtttable.go).
func printTable(files []string, w io.Writer) error {
	if len(files) == 0 {
		return fmt.Errorf("table: no result files")
	}
	var rows []row
	var mrows []mqttRow
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			var scenario struct {
				Scenario string `json:"scenario"`
			}
			if err := json.Unmarshal([]byte(line), &scenario); err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", name, err)
			}
			if strings.HasPrefix(scenario.Scenario, "mqtt-") {
				var r mqttRow
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					f.Close()
					return fmt.Errorf("%s: %w", name, err)
				}
				mrows = append(mrows, r)
				continue
			}
			var r row
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", name, err)
			}
			rows = append(rows, r)
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if len(rows) > 0 {
		printSTOMPTable(rows, w)
	}
	if len(mrows) > 0 {
		if len(rows) > 0 {
			fmt.Fprintln(w)
		}
		printMQTTTable(mrows, w)
		fmt.Fprintln(w)
		printMQTTSummary(mrows, w)
	}
	return nil
}

// printSTOMPTable prints the STOMP results.
func printSTOMPTable(rows []row, w io.Writer) {
	fmt.Fprintln(w, "| broker | scenario | P/C | receipt every | sent | receipted | received | dup | lost | in doubt | msgs/s (steady) | p50 ms | p99 ms | p99.9 ms | max ms | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		rate, p50, p99, p999, mx := "", "", "", "", ""
		scenario := r.Scenario
		switch r.Scenario {
		case "stomp-queue":
			rate = fmt.Sprintf("%.0f", r.SteadyRate)
		case "stomp-latency":
			scenario = fmt.Sprintf("%s @%d/s", r.Scenario, r.Rate)
			p50, p99 = fmt.Sprintf("%.2f", r.Latency.P50), fmt.Sprintf("%.2f", r.Latency.P99)
			p999, mx = fmt.Sprintf("%.2f", r.Latency.P999), fmt.Sprintf("%.2f", r.Latency.Max)
		}
		fmt.Fprintf(w, "| %s | %s | %d/%d | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s | %s | %s | %d |\n",
			r.Label, scenario, r.Producers, r.Consumers, r.ReceiptEvery, r.Sent, r.Receipted, r.Received,
			r.Duplicates, r.Lost, r.InDoubt, rate, p50, p99, p999, mx, len(r.Errors))
	}
}
