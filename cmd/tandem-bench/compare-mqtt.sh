#!/usr/bin/env bash
# compare-mqtt.sh runs tandem-bench's MQTT scenarios against Tandem,
# a plain mochi broker (tandem-bench mochi-serve), nats-server with
# JetStream and its MQTT listener, and Mosquitto, in one run, and prints
# Markdown tables: every result, then one line per round and scenario with
# each broker's figure and the issue's targets. All four brokers listen on
# 127.0.0.1 only and keep their data in a temporary directory; the script
# stops exactly the processes it started, by PID.
#
#   cmd/tandem-bench/compare-mqtt.sh              # 1 round
#   ROUNDS=3 cmd/tandem-bench/compare-mqtt.sh     # 3 rounds
#
# In each round every scenario runs against the four brokers in turn
# (tandem, mochi, nats, mosquitto): mqtt-fanin, mqtt-fanout, mqtt-persist,
# mqtt-latency, mqtt-idle. Each broker is restarted (same data directory)
# just before its mqtt-idle run, so that memory left over from the load
# before does not hide what the idle connections take.
#
# Environment (all optional):
#   ROUNDS=1                    rounds
#   BROKERS="tandem mochi nats mosquitto"   which brokers, in this order
#   SCENARIOS="mqtt-fanin mqtt-fanout mqtt-persist mqtt-latency mqtt-idle"
#   FANIN_COUNT=2000000 FANOUT_COUNT=100000 PERSIST_COUNT=200000
#   LATENCY_RATE=1000 LATENCY_DURATION=20s IDLE_CONNS=5000
#   TANDEM_PORT=21883 MOCHI_PORT=21884 NATS_MQTT_PORT=21885 NATS_PORT=24222
#   MOSQUITTO_PORT=21886        MQTT ports (and nats' client port) on 127.0.0.1
#   TANDEM_REV=COMMIT           build tandem from this commit (git archive)
#                               instead of the working tree
#   PERF=DIR                    record a perf profile of tandem during each of
#                               its fan-in, fan-out and persist runs into DIR
#                               (perf slows the broker: not for figures)
#   KEEP=1                      keep the temporary directory
#   OUT=FILE                    also copy the JSON results (one per line) here
set -euo pipefail

ROUNDS=${ROUNDS:-1}
BROKERS=${BROKERS:-tandem mochi nats mosquitto}
SCENARIOS=${SCENARIOS:-mqtt-fanin mqtt-fanout mqtt-persist mqtt-latency mqtt-idle}
FANIN_COUNT=${FANIN_COUNT:-2000000}
FANOUT_COUNT=${FANOUT_COUNT:-100000}
PERSIST_COUNT=${PERSIST_COUNT:-200000}
LATENCY_RATE=${LATENCY_RATE:-1000}
LATENCY_DURATION=${LATENCY_DURATION:-20s}
IDLE_CONNS=${IDLE_CONNS:-5000}
TANDEM_PORT=${TANDEM_PORT:-21883}
MOCHI_PORT=${MOCHI_PORT:-21884}
NATS_MQTT_PORT=${NATS_MQTT_PORT:-21885}
NATS_PORT=${NATS_PORT:-24222}
MOSQUITTO_PORT=${MOSQUITTO_PORT:-21886}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/tandem-bench-mqtt.XXXXXX)
# Mosquitto drops root for its own user, which must reach its directory.
chmod 755 "$work"
results=$work/results.jsonl
declare -A pid=()  # broker -> PID of the process this script started
declare -A port=([tandem]=$TANDEM_PORT [mochi]=$MOCHI_PORT [nats]=$NATS_MQTT_PORT [mosquitto]=$MOSQUITTO_PORT)
perf_pid=""

log() { printf '== %s\n' "$*" >&2; }

# stop_pid PID NAME sends SIGTERM, waits up to 10 s, then SIGKILL.
stop_pid() {
	local p=$1 name=$2
	log "stopping $name (pid $p)"
	kill -TERM "$p" 2>/dev/null || return 0
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	set +e
	if [[ -n $perf_pid ]]; then kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null; fi
	for b in "${!pid[@]}"; do stop_pid "${pid[$b]}" "$b"; done
	if [[ -n ${KEEP:-} ]]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT

# wait_port PORT SECONDS waits until a TCP listener on 127.0.0.1 answers.
wait_port() {
	local deadline=$((SECONDS + $2))
	while ((SECONDS < deadline)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

# port_free PORT fails when something listens on 127.0.0.1:PORT already.
port_free() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		echo "compare-mqtt.sh: 127.0.0.1:$1 is in use; set another port (see the header)" >&2
		return 1
	fi
}

# started NAME PID PORT LOG waits for the broker's port, or shows its log.
started() {
	pid[$1]=$2
	if ! wait_port "$3" 60 || ! kill -0 "$2" 2>/dev/null; then
		echo "compare-mqtt.sh: $1 did not start; its log:" >&2
		tail -n 30 "$4" >&2
		return 1
	fi
}

install_peers() {
	local missing=()
	[[ " $BROKERS " == *" mosquitto "* ]] && ! command -v mosquitto >/dev/null && ! [[ -x /usr/sbin/mosquitto ]] && missing+=(mosquitto)
	[[ " $BROKERS " == *" nats "* ]] && ! command -v nats-server >/dev/null && ! [[ -x /usr/sbin/nats-server ]] && missing+=(nats-server)
	if ((${#missing[@]} == 0)); then return; fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y "${missing[@]}" >"$work/apt.log" 2>&1; then
		apt-get update >>"$work/apt.log" 2>&1
		apt-get install -y "${missing[@]}" >>"$work/apt.log" 2>&1
	fi
}

build() {
	log "building tandem-bench"
	(cd "$repo" && go build -o "$work/tandem-bench" ./cmd/tandem-bench)
	if [[ -n ${TANDEM_REV:-} ]]; then
		log "building tandem from commit $TANDEM_REV"
		mkdir -p "$work/src"
		(cd "$repo" && git archive "$TANDEM_REV") | tar -x -C "$work/src"
		(cd "$work/src" && go build -o "$work/tandem" ./cmd/tandem)
	else
		log "building tandem from the working tree ($(cd "$repo" && git describe --always --dirty))"
		(cd "$repo" && go build -o "$work/tandem" ./cmd/tandem)
	fi
}

start_tandem() {
	port_free "$TANDEM_PORT"
	TANDEM_MQTT_ADDR=127.0.0.1:$TANDEM_PORT \
		TANDEM_STOMP_ADDR=127.0.0.1:0 TANDEM_ADMIN_ADDR=127.0.0.1:0 TANDEM_WS_ADDR=127.0.0.1:0 \
		"$work/tandem" --data "$work/tandem-data" --log-format json >"$work/tandem.log" 2>&1 &
	started tandem $! "$TANDEM_PORT" "$work/tandem.log"
	grep '"message":"ready"' "$work/tandem.log" >&2 || true
}

start_mochi() {
	port_free "$MOCHI_PORT"
	"$work/tandem-bench" mochi-serve --addr "127.0.0.1:$MOCHI_PORT" >"$work/mochi.log" 2>&1 &
	started mochi $! "$MOCHI_PORT" "$work/mochi.log"
}

start_nats() {
	port_free "$NATS_MQTT_PORT"
	port_free "$NATS_PORT"
	mkdir -p "$work/nats"
	# MQTT in nats-server needs JetStream, and JetStream a server_name.
	# JetStream's file store writes every message but fsyncs only every
	# 2 minutes (nats-server 2.9 has no per-message sync).
	cat >"$work/nats/nats.conf" <<-EOF
		server_name: tandembench
		listen: 127.0.0.1:$NATS_PORT
		jetstream {
		  store_dir: "$work/nats/js"
		}
		mqtt {
		  listen: 127.0.0.1:$NATS_MQTT_PORT
		}
	EOF
	nats-server -c "$work/nats/nats.conf" >"$work/nats/nats.log" 2>&1 &
	started nats $! "$NATS_MQTT_PORT" "$work/nats/nats.log"
}

start_mosquitto() {
	port_free "$MOSQUITTO_PORT"
	mkdir -p "$work/mosquitto"
	if id mosquitto >/dev/null 2>&1; then chown mosquitto "$work/mosquitto"; fi
	# persistence true keeps sessions in memory and writes them to disk on
	# exit and every autosave_interval (30 min), never per message.
	# max_inflight_messages follows Tandem's mqtt.max_inflight (1024).
	# max_queued_messages 0 (no limit): with 100000 (Tandem's
	# session_queue_max_length) Mosquitto 2.0.11 dropped about 45,000 of
	# mqtt-persist's 200,000 messages with a backlog well under 100,000.
	cat >"$work/mosquitto/mosquitto.conf" <<-EOF
		listener $MOSQUITTO_PORT 127.0.0.1
		allow_anonymous true
		persistence true
		persistence_location $work/mosquitto/
		max_inflight_messages 1024
		max_queued_messages 0
		log_dest stderr
		log_type error
		log_type warning
		log_type notice
	EOF
	mosquitto -c "$work/mosquitto/mosquitto.conf" >"$work/mosquitto/mosquitto.log" 2>&1 &
	started mosquitto $! "$MOSQUITTO_PORT" "$work/mosquitto/mosquitto.log"
}

# restart BROKER stops the broker and starts it again on the same data.
restart() {
	stop_pid "${pid[$1]}" "$1"
	unset "pid[$1]"
	"start_$1"
}

# perf_start NAME starts recording tandem if PERF is set.
perf_start() {
	if [[ -z ${PERF:-} ]]; then return; fi
	mkdir -p "$PERF"
	perf record -F 999 -g -p "${pid[tandem]}" -o "$PERF/$1.perf.data" >"$PERF/$1.perf.log" 2>&1 &
	perf_pid=$!
	sleep 0.5 # perf attaches asynchronously
}

perf_stop() {
	if [[ -z $perf_pid ]]; then return; fi
	kill -INT "$perf_pid" 2>/dev/null || true
	wait "$perf_pid" 2>/dev/null || true
	perf_pid=""
}

# bench BROKER SCENARIO ROUND runs one scenario against one broker. A run
# that counts loss, duplicates or errors (exit 3) is reported in the
# table, not fatal.
bench() {
	local b=$1 s=$2 round=$3 rc=0
	local args=(--addr "127.0.0.1:${port[$b]}" --label "$b" --round "$round" --json "$results" --timeout 5m)
	case $s in
	mqtt-fanin) args+=(--count "$FANIN_COUNT") ;;
	mqtt-fanout) args+=(--count "$FANOUT_COUNT") ;;
	mqtt-persist) args+=(--count "$PERSIST_COUNT") ;;
	mqtt-latency) args+=(--rate "$LATENCY_RATE" --duration "$LATENCY_DURATION") ;;
	mqtt-idle)
		restart "$b"
		args+=(--conns "$IDLE_CONNS" --pid "${pid[$b]}")
		;;
	esac
	# Other work on the machine shows in the load average before a run.
	log "round $round: $s against $b (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	if [[ $b == tandem && $s =~ ^mqtt-(fanin|fanout|persist)$ ]]; then perf_start "$s-r$round"; fi
	"$work/tandem-bench" "$s" "${args[@]}" || rc=$?
	perf_stop
	if ((rc != 0 && rc != 3)); then return "$rc"; fi
}

# Idle connections need a descriptor each on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
install_peers
build
for b in $BROKERS; do "start_$b"; done

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(go version | cut -d' ' -f3), open files $(ulimit -n)"
[[ -n ${pid[mosquitto]:-} ]] && log "mosquitto: $(mosquitto -h 2>/dev/null | head -n 1)"
[[ -n ${pid[nats]:-} ]] && log "nats: $(nats-server --version)"
for round in $(seq "$ROUNDS"); do
	for s in $SCENARIOS; do
		for b in $BROKERS; do bench "$b" "$s" "$round"; done
	done
done
for b in "${!pid[@]}"; do
	log "$b VmRSS at the end: $(awk '/VmRSS/ {print $2, $3}' "/proc/${pid[$b]}/status")"
done
if [[ -n ${pid[mosquitto]:-} ]] && grep -q "dropped" "$work/mosquitto/mosquitto.log"; then
	log "mosquitto dropped messages:"
	grep "dropped" "$work/mosquitto/mosquitto.log" | head -n 5 >&2
fi

"$work/tandem-bench" table "$results"
if [[ -n ${OUT:-} ]]; then cp "$results" "$OUT"; fi
