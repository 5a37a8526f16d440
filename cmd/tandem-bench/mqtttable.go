package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// mqttRow holds the fields of any MQTT result that the tables show.
type mqttRow struct {
	mqttHeader
	Publishers  int  `json:"publishers"`
	Subscribers int  `json:"subscribers"`
	QoS         byte `json:"qos"`
	Persistent  bool `json:"persistent"`
	Rate        int  `json:"rate"`
	mqttCounts
	OK           bool            `json:"ok"`
	SteadyRate   float64         `json:"steady_msgs_per_s"`
	Latency      *latencySummary `json:"latency"`
	Conns        int             `json:"conns"`
	Alive        int             `json:"alive"`
	PerConnBytes float64         `json:"rss_per_conn_bytes"`
	Errors       []string        `json:"errors"`
}

// printMQTTTable prints every MQTT result as one Markdown table row.
func printMQTTTable(rows []mqttRow, w io.Writer) {
	fmt.Fprintln(w, "| round | broker | scenario | P/S | QoS | sent | acked | received | dup | lost | in doubt | dropped (QoS 0) | deliveries/s (steady) | p50 ms | p99 ms | max ms | idle conns alive | RSS KiB/conn | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		if r.Scenario == "mqtt-idle" {
			fmt.Fprintf(w, "| %d | %s | %s | | | | | | | | | | | | | | %d/%d | %.1f | %d |\n",
				r.Round, r.Label, r.Scenario, r.Alive, r.Conns, r.PerConnBytes/1024, len(r.Errors))
			continue
		}
		scenario := r.Scenario
		if r.Rate > 0 {
			scenario = fmt.Sprintf("%s @%d/s", r.Scenario, r.Rate)
		}
		if r.Persistent {
			scenario += " (persistent)"
		}
		acked := ""
		if r.QoS > 0 {
			acked = strconv.FormatInt(r.Acked, 10)
		}
		p50, p99, mx := "", "", ""
		if r.Latency != nil {
			p50, p99, mx = fmt.Sprintf("%.2f", r.Latency.P50), fmt.Sprintf("%.2f", r.Latency.P99), fmt.Sprintf("%.2f", r.Latency.Max)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %d/%d | %d | %d | %s | %d/%d | %d | %d | %d | %d | %s | %s | %s | %s | | | %d |\n",
			r.Round, r.Label, scenario, r.Publishers, r.Subscribers, r.QoS, r.Sent, acked, r.Received, r.Expected,
			r.Duplicates, r.Lost, r.InDoubt, r.Dropped, thousands(r.SteadyRate), p50, p99, mx, len(r.Errors))
	}
}

// mqttTargets are issue 4's targets: in each scenario named, Tandem's
// steady rate at least that of the broker labelled so, in the same round.
var mqttTargets = map[string]string{
	"mqtt-fanin":   "mochi",
	"mqtt-fanout":  "mochi",
	"mqtt-persist": "nats",
}

// mqttScenarioOrder is the order of the summary's lines within a round.
var mqttScenarioOrder = []string{"mqtt-fanin", "mqtt-fanout", "mqtt-persist", "mqtt-latency", "mqtt-idle"}

// summaryLine is one (round, scenario) of the summary: each broker's main
// figure, and the target's verdict where there is one.
type summaryLine struct {
	round    int
	scenario string
	values   map[string]string // by label
	target   string            // e.g. "tandem >= mochi"; "" for none
	ratio    float64           // tandem / the other; 0 when either is missing
	met      bool
}

// summarizeMQTT builds the summary's lines and the labels in the order they
// first appear.
func summarizeMQTT(rows []mqttRow) (lines []summaryLine, labels []string) {
	type key struct {
		round    int
		scenario string
	}
	byKey := map[key]*summaryLine{}
	rates := map[key]map[string]mqttRow{}
	for _, r := range rows {
		if !slices.Contains(labels, r.Label) {
			labels = append(labels, r.Label)
		}
		k := key{r.Round, r.Scenario}
		l := byKey[k]
		if l == nil {
			l = &summaryLine{round: r.Round, scenario: r.Scenario, values: map[string]string{}}
			byKey[k] = l
			rates[k] = map[string]mqttRow{}
		}
		rates[k][r.Label] = r
		switch {
		case r.Scenario == "mqtt-idle":
			l.values[r.Label] = fmt.Sprintf("%.1f KiB/conn", r.PerConnBytes/1024)
		case r.Latency != nil:
			l.values[r.Label] = fmt.Sprintf("p99 %.2f ms", r.Latency.P99)
		default:
			l.values[r.Label] = thousands(r.SteadyRate) + "/s"
		}
		if !r.OK || len(r.Errors) > 0 {
			l.values[r.Label] += " (NOT ok)"
		}
	}
	for k, l := range byKey {
		other, ok := mqttTargets[k.scenario]
		if !ok {
			continue
		}
		l.target = "tandem >= " + other
		t, tok := rates[k]["tandem"]
		o, ook := rates[k][other]
		if tok && ook && o.SteadyRate > 0 {
			l.ratio = t.SteadyRate / o.SteadyRate
			l.met = l.ratio >= 1 && t.OK && len(t.Errors) == 0
		}
	}
	for _, l := range byKey {
		lines = append(lines, *l)
	}
	slices.SortFunc(lines, func(a, b summaryLine) int {
		if a.round != b.round {
			return a.round - b.round
		}
		return slices.Index(mqttScenarioOrder, a.scenario) - slices.Index(mqttScenarioOrder, b.scenario)
	})
	return lines, labels
}

// printMQTTSummary prints one line per round and scenario with each
// broker's main figure (deliveries/s, p99, or memory per connection) and
// the targets.
func printMQTTSummary(rows []mqttRow, w io.Writer) {
	lines, labels := summarizeMQTT(rows)
	fmt.Fprintf(w, "| round | scenario | %s | target | ratio | met |\n", strings.Join(labels, " | "))
	fmt.Fprintf(w, "|---|---|%s---|---|---|\n", strings.Repeat("---|", len(labels)))
	for _, l := range lines {
		vals := make([]string, len(labels))
		for i, lb := range labels {
			vals[i] = l.values[lb]
		}
		ratio, met := "", ""
		if l.target != "" {
			met = "no"
			if l.met {
				met = "yes"
			}
			if l.ratio > 0 {
				ratio = fmt.Sprintf("%.2fx", l.ratio)
			}
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s |\n", l.round, l.scenario, strings.Join(vals, " | "), l.target, ratio, met)
	}
}

// thousands formats a rate as a whole number with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
