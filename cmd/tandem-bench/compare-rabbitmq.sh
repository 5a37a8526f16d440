#!/usr/bin/env bash
# compare-rabbitmq.sh runs tandem-bench's STOMP scenarios against Tandem and
# RabbitMQ, one broker after the other, in one run, and prints a Markdown
# table. Both brokers listen on 127.0.0.1 only and keep their data in a
# temporary directory; the script stops exactly the processes it started.
#
#   cmd/tandem-bench/compare-rabbitmq.sh            # 1 round
#   ROUNDS=2 cmd/tandem-bench/compare-rabbitmq.sh   # 2 rounds, alternating
#
# Environment (all optional):
#   ROUNDS=1                  rounds; each runs both scenarios on both brokers
#   COUNT=200000              stomp-queue messages per run
#   RATE=1000 DURATION=20s    stomp-latency rate and duration
#   PRODUCERS=4 CONSUMERS=4   stomp-queue connections
#   RABBIT_STOMP_PORT=61623 RABBIT_AMQP_PORT=25682 RABBIT_DIST_PORT=25692
#   RABBIT_EPMD_PORT=4379     RabbitMQ's ports (its epmd too), all on 127.0.0.1
#   TANDEM_STOMP_PORT=61633   Tandem's STOMP port on 127.0.0.1
#   KEEP=1                    keep the temporary directory
#   OUT=FILE                  also copy the JSON results (one per line) here
set -euo pipefail

ROUNDS=${ROUNDS:-1}
COUNT=${COUNT:-200000}
RATE=${RATE:-1000}
DURATION=${DURATION:-20s}
PRODUCERS=${PRODUCERS:-4}
CONSUMERS=${CONSUMERS:-4}
RABBIT_STOMP_PORT=${RABBIT_STOMP_PORT:-61623}
RABBIT_AMQP_PORT=${RABBIT_AMQP_PORT:-25682}
RABBIT_DIST_PORT=${RABBIT_DIST_PORT:-25692}
RABBIT_EPMD_PORT=${RABBIT_EPMD_PORT:-4379}
TANDEM_STOMP_PORT=${TANDEM_STOMP_PORT:-61633}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/tandem-bench.XXXXXX)
results=$work/results.jsonl
tandem_pid=""
rabbit_pid=""
rabbit_started=""
epmd_ours=""

log() { printf '== %s\n' "$*" >&2; }

# RabbitMQ's scripts, run directly (not Debian's su wrapper), with every
# path, port and the Erlang cookie inside $work.
rabbit_env() {
	env HOME="$work/rabbit-home" \
		RABBITMQ_NODENAME=tandembench@localhost \
		RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
		RABBITMQ_NODE_PORT="$RABBIT_AMQP_PORT" \
		RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" \
		ERL_EPMD_ADDRESS=127.0.0.1 \
		ERL_EPMD_PORT="$RABBIT_EPMD_PORT" \
		RABBITMQ_CONF_ENV_FILE="$work/rabbitmq-env.conf" \
		RABBITMQ_CONFIG_FILE="$work/rabbitmq.conf" \
		RABBITMQ_ENABLED_PLUGINS_FILE="$work/enabled_plugins" \
		RABBITMQ_MNESIA_BASE="$work/rabbit-mnesia" \
		RABBITMQ_LOG_BASE="$work/rabbit-log" \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
		RABBITMQ_CTL_DIST_PORT_MIN="$((RABBIT_DIST_PORT + 1))" \
		RABBITMQ_CTL_DIST_PORT_MAX="$((RABBIT_DIST_PORT + 10))" \
		"$@"
}
rabbitbin=/usr/lib/rabbitmq/bin

cleanup() {
	local rc=$?
	set +e
	if [[ -n $tandem_pid ]]; then
		log "stopping tandem (pid $tandem_pid)"
		kill -TERM "$tandem_pid" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$tandem_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$tandem_pid" 2>/dev/null
		wait "$tandem_pid" 2>/dev/null
	fi
	if [[ -n $rabbit_started ]]; then
		log "stopping rabbitmq node tandembench@localhost (pid $rabbit_pid)"
		rabbit_env timeout 60 "$rabbitbin/rabbitmqctl" -n tandembench@localhost stop >/dev/null 2>&1
	fi
	if [[ -n $rabbit_pid ]]; then
		for _ in $(seq 100); do kill -0 "$rabbit_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$rabbit_pid" 2>/dev/null
		wait "$rabbit_pid" 2>/dev/null
	fi
	if [[ -n $epmd_ours ]]; then
		# The epmd on our own port and address was started by our node.
		ERL_EPMD_PORT=$RABBIT_EPMD_PORT timeout 10 epmd -kill >/dev/null 2>&1
	fi
	if [[ -n ${KEEP:-} ]]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT

# wait_port HOST PORT SECONDS waits until a TCP listener answers.
wait_port() {
	local deadline=$((SECONDS + $3))
	while ((SECONDS < deadline)); do
		if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
		sleep 0.2
	done
	return 1
}

# port_free PORT fails when something listens on 127.0.0.1:PORT already.
port_free() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		echo "compare-rabbitmq.sh: 127.0.0.1:$1 is in use; set another port (see the header)" >&2
		return 1
	fi
}

install_rabbitmq() {
	if [[ -x $rabbitbin/rabbitmq-server ]]; then return; fi
	log "installing rabbitmq-server"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y rabbitmq-server >"$work/apt.log" 2>&1; then
		apt-get update >>"$work/apt.log" 2>&1
		apt-get install -y rabbitmq-server >>"$work/apt.log" 2>&1
	fi
}

start_rabbitmq() {
	port_free "$RABBIT_STOMP_PORT"
	port_free "$RABBIT_AMQP_PORT"
	port_free "$RABBIT_DIST_PORT"
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$RABBIT_EPMD_PORT") 2>/dev/null; then epmd_ours=1; fi
	mkdir -p "$work/rabbit-home" "$work/rabbit-mnesia" "$work/rabbit-log"
	: >"$work/rabbitmq-env.conf"
	cat >"$work/rabbitmq.conf" <<-EOF
		listeners.tcp.default = 127.0.0.1:$RABBIT_AMQP_PORT
		stomp.listeners.tcp.1 = 127.0.0.1:$RABBIT_STOMP_PORT
	EOF
	log "enabling rabbitmq_stomp"
	rabbit_env "$rabbitbin/rabbitmq-plugins" --offline enable rabbitmq_stomp >"$work/plugins.log" 2>&1
	log "starting rabbitmq (STOMP on 127.0.0.1:$RABBIT_STOMP_PORT, data in $work/rabbit-mnesia)"
	rabbit_env "$rabbitbin/rabbitmq-server" >"$work/rabbit.out" 2>&1 &
	rabbit_pid=$!
	rabbit_started=1
	# The node registers with epmd a few seconds after it starts; before
	# that await_startup fails at once, so ask again until a deadline.
	local deadline=$((SECONDS + 120)) up=""
	while ((SECONDS < deadline)) && kill -0 "$rabbit_pid" 2>/dev/null; do
		if rabbit_env timeout 60 "$rabbitbin/rabbitmqctl" -n tandembench@localhost await_startup >"$work/await.log" 2>&1; then
			up=1
			break
		fi
		sleep 1
	done
	if [[ -z $up ]] || ! wait_port 127.0.0.1 "$RABBIT_STOMP_PORT" 30; then
		echo "compare-rabbitmq.sh: rabbitmq did not start; see below" >&2
		tail -n 30 "$work/rabbit.out" "$work/await.log" >&2
		return 1
	fi
	rabbit_env timeout 60 "$rabbitbin/rabbitmqctl" -n tandembench@localhost status 2>/dev/null |
		grep -iE 'RabbitMQ version|Erlang configuration' >"$work/rabbit-version.txt" || true
}

start_tandem() {
	port_free "$TANDEM_STOMP_PORT"
	log "building tandem and tandem-bench"
	(cd "$repo" && go build -o "$work/tandem" ./cmd/tandem && go build -o "$work/tandem-bench" ./cmd/tandem-bench)
	log "starting tandem (STOMP on 127.0.0.1:$TANDEM_STOMP_PORT, data in $work/tandem-data)"
	TANDEM_STOMP_ADDR=127.0.0.1:$TANDEM_STOMP_PORT \
		TANDEM_ADMIN_ADDR=127.0.0.1:0 TANDEM_MQTT_ADDR=127.0.0.1:0 TANDEM_WS_ADDR=127.0.0.1:0 \
		"$work/tandem" --data "$work/tandem-data" --log-format json >"$work/tandem.log" 2>&1 &
	tandem_pid=$!
	local deadline=$((SECONDS + 60))
	until grep -q '"message":"ready"' "$work/tandem.log"; do
		if ((SECONDS >= deadline)) || ! kill -0 "$tandem_pid" 2>/dev/null; then
			echo "compare-rabbitmq.sh: tandem did not get ready" >&2
			tail -n 20 "$work/tandem.log" >&2
			return 1
		fi
		sleep 0.1
	done
	grep '"message":"ready"' "$work/tandem.log" >&2
}

# bench LABEL ADDR ROUND [extra flags...] runs both scenarios against one
# broker. A run that counts loss or duplicates (exit 3) is reported in the
# table, not fatal.
bench() {
	local label=$1 addr=$2 round=$3
	shift 3
	local rc=0
	log "$label round $round: stomp-queue"
	"$work/tandem-bench" stomp-queue --addr "$addr" --label "$label" --json "$results" \
		--dest "/queue/bench-r$round" --producers "$PRODUCERS" --consumers "$CONSUMERS" \
		--count "$COUNT" --timeout 10m "$@" || rc=$?
	if ((rc != 0 && rc != 3)); then return "$rc"; fi
	rc=0
	log "$label round $round: stomp-latency"
	"$work/tandem-bench" stomp-latency --addr "$addr" --label "$label" --json "$results" \
		--dest "/queue/bench-latency-r$round" --rate "$RATE" --duration "$DURATION" \
		--timeout 5m "$@" || rc=$?
	if ((rc != 0 && rc != 3)); then return "$rc"; fi
}

install_rabbitmq
start_tandem
start_rabbitmq

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
log "rabbitmq: $(tr -s ' \n' ' ' <"$work/rabbit-version.txt")"
for round in $(seq "$ROUNDS"); do
	bench tandem "127.0.0.1:$TANDEM_STOMP_PORT" "$round"
	bench rabbitmq "127.0.0.1:$RABBIT_STOMP_PORT" "$round" --login guest --passcode guest --host /
done

log "RabbitMQ queues (name, durable, messages left):"
rabbit_env timeout 60 "$rabbitbin/rabbitmqctl" -n tandembench@localhost list_queues name durable messages >&2 2>/dev/null || true

"$work/tandem-bench" table "$results"
if [[ -n ${OUT:-} ]]; then cp "$results" "$OUT"; fi
