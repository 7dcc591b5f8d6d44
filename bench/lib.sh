# bench/lib.sh: what every bench script needs around the measurement itself:
# a work directory, free loopback ports, starting kvmuxd / redis-server /
# memcached and waiting until each answers, running a load generator so that
# ^C reaches the script at once, and stopping on exit exactly the processes
# the script started (by PID; never by name).
#
# Use: `. "$(dirname "$0")/lib.sh"` then `bench_init NAME` once (after the
# option parsing, so -h prints nothing and starts nothing). Functions report
# failures on stderr prefixed with "NAME.sh:" and exit 1 (bench_die).
#
# Servers are always loopback only (127.0.0.1) on ephemeral ports: kvmuxd
# picks its own (--port 0, read back from its "listening on" line); redis
# and memcached cannot (port 0 disables TCP for both), so a port is picked
# by a bind test and the start is retried on another port if it loses a race.
#
# Not here: anything that measures. The scripts' tables and options stay in
# the scripts.

BENCH_NAME=bench
BENCH_WORK=""
BENCH_PIDS=()        # servers and tools to stop on exit, in start order
BENCH_EXIT_HOOKS=()  # extra commands for the exit trap (eval'd)
BENCH_TOOL_PID=""
BENCH_GPIDS=() BENCH_GPORTS=() BENCH_GHOSTS=""  # bench_start_group

bench_die() {
    echo "$BENCH_NAME.sh: $*" >&2
    exit 1
}

# bench_init NAME: work directory $BENCH_WORK (removed on exit), exit trap
# that stops every tracked PID, ^C / TERM -> exit 130 (which runs the trap).
bench_init() {
    BENCH_NAME=$1
    BENCH_WORK=$(mktemp -d "/tmp/kvmux-$BENCH_NAME.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_track() { BENCH_PIDS+=("$1"); }

# Stop one PID this script started: TERM, up to 5 s, then KILL; reap it.
bench_stop() {
    local pid=$1 _
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    BENCH_PIDS=("${keep[@]}")
}

bench_cleanup() {
    local pid hook
    # Signal all first, then wait for each: a slow one does not delay the rest.
    for pid in $BENCH_TOOL_PID "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in $BENCH_TOOL_PID "${BENCH_PIDS[@]}"; do bench_stop "$pid"; done
    for hook in "${BENCH_EXIT_HOOKS[@]}"; do eval "$hook" || true; done
    [ -n "$BENCH_WORK" ] && rm -rf "$BENCH_WORK"
    return 0
}

# bench_run_tool OUT CMD...: run CMD with stdout to the file OUT (use >>
# semantics with OUT prefixed by '+'), in the background, and wait for it:
# bash runs a trap only once a foreground command has finished, but `wait`
# returns at once on a trapped signal. Returns CMD's status.
bench_run_tool() {
    local out=$1 rc=0
    shift
    if [ "${out:0:1}" = "+" ]; then "$@" >>"${out:1}" & else "$@" >"$out" & fi
    BENCH_TOOL_PID=$!
    wait "$BENCH_TOOL_PID" || rc=$?
    BENCH_TOOL_PID=""
    return "$rc"
}

# A free loopback port: ask the kernel for one, then confirm it still binds.
# Without python3: a random port of the ephemeral range with no listener in
# /proc/net/tcp (racier; the starters retry on a collision).
bench_free_port() {
    if command -v python3 >/dev/null; then
        python3 - <<'EOF'
import socket
for _ in range(50):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        t.close()
    print(port)
    break
EOF
        return
    fi
    local lo hi port hex _
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    for _ in $(seq 50); do
        port=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
        hex=$(printf ':%04X ' "$port")
        grep -q "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$port"; return; }
    done
}

# Resident set size of a process in KiB ("-" if gone).
bench_rss_kb() {
    sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null || echo -
}

# bench_cpu_ms PID: user + system CPU time of a running process (all its
# threads), in milliseconds, from /proc/PID/stat (clock-tick resolution,
# 10 ms here); "-" if it is gone. Fields 14 and 15 count from after the
# command name, which may hold spaces, so cut at the last ')'.
bench_cpu_ms() {
    local st hz
    st=$(cat "/proc/$1/stat" 2>/dev/null) || { echo -; return 0; }
    hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
    awk -v hz="$hz" '{ print int(($12 + $13) * 1000 / hz) }' <<<"${st##*) }"
}

# bench_start_kvmuxd TAG KVMUXD [ARGS...]: kvmuxd on 127.0.0.1, port 0; sets
# BENCH_PID and BENCH_PORT (from its "listening on ADDR:PORT" line). Output
# in $BENCH_WORK/TAG.out / .err.
bench_start_kvmuxd() {
    local tag=$1 bin=$2 _
    shift 2
    # Create the files first: the child opens them only after the fork, and
    # a read before that would fail (and end the script under set -e).
    : >"$BENCH_WORK/$tag.out"
    : >"$BENCH_WORK/$tag.err"
    "$bin" --bind 127.0.0.1 --port 0 "$@" >>"$BENCH_WORK/$tag.out" 2>>"$BENCH_WORK/$tag.err" &
    BENCH_PID=$!
    bench_track "$BENCH_PID"
    BENCH_PORT=""
    for _ in $(seq 100); do
        BENCH_PORT=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\).*/\1/p' "$BENCH_WORK/$tag.out" | head -1)
        [ -n "$BENCH_PORT" ] && break
        kill -0 "$BENCH_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$BENCH_PORT" ] || { cat "$BENCH_WORK/$tag.err" >&2; bench_die "kvmuxd $* did not start"; }
}

# bench_wait_ready PID PROBE...: up to 10 s until the command PROBE succeeds;
# returns 1 if PID died or time ran out.
bench_wait_ready() {
    local pid=$1 _
    shift
    for _ in $(seq 100); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# etcd's /health over bash's /dev/tcp (no curl needed).
bench_etcd_health() {
    local reply=""
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    reply=$(timeout 2 cat <&3 || true)
    exec 3<&- 3>&-
    [[ "$reply" == *'"health":"true"'* ]]
}

bench_redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]; }

# memcached's "version" over bash's /dev/tcp (no client tool needed).
bench_memcached_ping() {
    local line=""
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'version\r\n' >&3
    read -r -t 2 line <&3 || true
    exec 3<&- 3>&-
    [ "${line:0:8}" = "VERSION " ]
}

# bench_start_redis TAG [ARGS...]: redis-server on 127.0.0.1, free port, no
# persistence (--save '' --appendonly no; ARGS come after, so they may
# override); sets BENCH_PID, BENCH_PORT. Log in $BENCH_WORK/TAG.log.
bench_start_redis() {
    local tag=$1 _
    shift
    for _ in 1 2 3; do
        BENCH_PORT=$(bench_free_port)
        [ -n "$BENCH_PORT" ] || bench_die "no free port for redis"
        redis-server --port "$BENCH_PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --protected-mode yes --daemonize no --logfile "$BENCH_WORK/$tag.log" "$@" &
        BENCH_PID=$!
        bench_track "$BENCH_PID"
        bench_wait_ready "$BENCH_PID" bench_redis_ping "$BENCH_PORT" && return 0
        bench_stop "$BENCH_PID"
    done
    cat "$BENCH_WORK/$tag.log" >&2
    bench_die "redis-server did not start"
}

# bench_start_memcached TAG [ARGS...]: memcached on 127.0.0.1, free port, TCP
# only (-U 0); as root it needs -u, given as root. Sets BENCH_PID,
# BENCH_PORT. Output in $BENCH_WORK/TAG.err.
bench_start_memcached() {
    local tag=$1 _ user=()
    shift
    [ "$(id -u)" = 0 ] && user=(-u root)
    for _ in 1 2 3; do
        BENCH_PORT=$(bench_free_port)
        [ -n "$BENCH_PORT" ] || bench_die "no free port for memcached"
        memcached "${user[@]}" -l 127.0.0.1 -p "$BENCH_PORT" -U 0 "$@" \
            >"$BENCH_WORK/$tag.out" 2>"$BENCH_WORK/$tag.err" &
        BENCH_PID=$!
        bench_track "$BENCH_PID"
        bench_wait_ready "$BENCH_PID" bench_memcached_ping "$BENCH_PORT" && return 0
        bench_stop "$BENCH_PID"
    done
    cat "$BENCH_WORK/$tag.err" >&2
    bench_die "memcached did not start"
}

# bench_start_group N KVMUXD [ARGS...]: a replicated group of N kvmuxd
# (--replica-id 1..N, all --bootstrap) on 127.0.0.1, each with a client and
# a Raft port from bench_free_port, its Raft data in $BENCH_WORK/rI (emptied
# first, so a script may start a group again after bench_stop_group), its
# output in $BENCH_WORK/rI.out / .err; ARGS go to every replica. Sets
# BENCH_GPIDS[1..N], BENCH_GPORTS[1..N] (client ports) and BENCH_GHOSTS
# (the client addresses, comma separated: an endpoint list). Returns once
# they are started, not ready: see bench_wait_group.
bench_start_group() {
    local n=$1 bin=$2 i rp peers=""
    shift 2
    BENCH_GPIDS=() BENCH_GPORTS=() BENCH_GHOSTS=""
    for i in $(seq "$n"); do
        rp=$(bench_free_port)
        BENCH_GPORTS[$i]=$(bench_free_port)
        peers+="${peers:+,}$i=127.0.0.1:$rp/127.0.0.1:${BENCH_GPORTS[$i]}"
        BENCH_GHOSTS+="${BENCH_GHOSTS:+,}127.0.0.1:${BENCH_GPORTS[$i]}"
    done
    for i in $(seq "$n"); do
        rm -rf "$BENCH_WORK/r$i"
        mkdir -p "$BENCH_WORK/r$i"
        "$bin" --bind 127.0.0.1 --port "${BENCH_GPORTS[$i]}" --replica-id "$i" \
            --replica-dir "$BENCH_WORK/r$i" --peers "$peers" --bootstrap "$@" \
            >"$BENCH_WORK/r$i.out" 2>"$BENCH_WORK/r$i.err" &
        BENCH_GPIDS[$i]=$!
        bench_track "${BENCH_GPIDS[$i]}"
    done
}

# bench_wait_group CLI: up to 15 s until a SET (key group:ready) through
# the endpoint list $BENCH_GHOSTS succeeds, i.e. the group has a leader
# that commits; else the replicas' last errors and bench_die.
bench_wait_group() {
    local _
    for _ in $(seq 150); do
        "$1" -h "$BENCH_GHOSTS" -t 1000 set group:ready 1 >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -5 "$BENCH_WORK"/r*.err >&2
    bench_die "the kvmux group elected no leader in 15 s"
}

# bench_group_member CLI ROLE: the index (1..N) of the first member of the
# group whose "stats replica_role" says ROLE (leader, follower); prints
# nothing if none does. Always returns 0.
bench_group_member() {
    local i
    for i in "${!BENCH_GPORTS[@]}"; do
        if "$1" -h 127.0.0.1 -p "${BENCH_GPORTS[$i]}" stats replica_role 2>/dev/null | grep -q "$2"; then
            echo "$i"
            return 0
        fi
    done
    return 0
}

# bench_stop_group: stop every replica bench_start_group started.
bench_stop_group() {
    local pid
    for pid in "${BENCH_GPIDS[@]}"; do bench_stop "$pid"; done
}
