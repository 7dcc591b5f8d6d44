#!/bin/sh
# Build and run the kvmux libFuzzer harnesses (clang required).
#   tests/fuzz/run_fuzz.sh OUT_DIR [SECONDS_PER_HARNESS]
# Server input (fuzz_server_input.c) needs the server sources too; its
# seeds are [control byte] + client-side vectors (see seed_server below).
# Client response path (fuzz_client_response.c) needs the client sources;
# its seeds are [control byte] + server-side vectors (seed_client below).
# Seeds: every vector of tests/vectors/frames.hex as one file (decoder), and
# for the stream harness a 3-byte setup prefix followed by the v2 vectors
# sent in each direction (see fuzz_stream_v2.c for the input format).
set -eu
out=${1:?usage: run_fuzz.sh OUT_DIR [SECONDS]}
secs=${2:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out/corpus_decode" "$out/corpus_stream" "$out/corpus_server" "$out/corpus_client" "$out/corpus_map"
cflags="-g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I$root/src/proto"
for h in fuzz_frame_decode fuzz_stream_v2; do
  clang $cflags -o "$out/$h" "$root/tests/fuzz/$h.c" "$root"/src/proto/*.c
done
# The single-node server: src/replica without the C-Raft glue (node.c,
# transport.c), as a build without KVMUX_WITH_RAFT has it.
srv_src="$(ls "$root"/src/server/*.c | grep -v '/main\.c$') $(ls "$root"/src/replica/*.c | grep -Ev '/(node|transport)\.c$')"
# src/client: kvmuxd's map watcher (src/server/mapclient.c) is a libkvmux client.
clang $cflags -I"$root/include" -I"$root/src/cluster" -I"$root/src/server" -I"$root/src/replica" -I"$root/src/common" -o "$out/fuzz_server_input" \
  "$root/tests/fuzz/fuzz_server_input.c" $srv_src "$root"/src/proto/*.c "$root"/src/cluster/*.c "$root"/src/common/*.c "$root"/src/client/*.c -lpthread
clang $cflags -I"$root/src/cluster" -o "$out/fuzz_map_decode" "$root/tests/fuzz/fuzz_map_decode.c" \
  "$root"/src/cluster/*.c "$root"/src/proto/*.c
clang $cflags -I"$root/include" -I"$root/src/cluster" -I"$root/src/client" -I"$root/src/common" \
  -o "$out/fuzz_client_response" "$root/tests/fuzz/fuzz_client_response.c" \
  "$root"/src/client/*.c "$root"/src/proto/*.c "$root"/src/cluster/*.c "$root"/src/common/*.c -lpthread
hex() { grep "^$1 " "$root/tests/vectors/frames.hex" | cut -d' ' -f2- | tr -cd '0-9a-f'; }
for name in $(grep -v '^#' "$root/tests/vectors/frames.hex" | cut -d' ' -f1 | grep .); do
  hex "$name" | xxd -r -p > "$out/corpus_decode/$name"
done
# Stream seeds: [role (bit 0 set: we are the server) | v1-peer bit][window]
# [window], then frames in the direction of our role.
to_server="req_get_v2 req_set_more cont_more cont_last window_update_conn cancel req_cas_deadline_more window_update_msg ping_v2"
to_client="resp_get_more resp_cont_last window_update_msg resp_canceled goaway window_update_conn ping_v2"
# (the server seed ends with a PING whose opaque starts with 'G': GOAWAY)
{ printf '\001\020\020'; for v in $to_server; do hex "$v" | xxd -r -p; done;
  printf 'k\002\006\000\000\000\000\000\000\010\000\000\000\000\000\010GGGGGGGG'; } > "$out/corpus_stream/server"
{ printf '\000\020\020'; for v in $to_client; do hex "$v" | xxd -r -p; done; } > "$out/corpus_stream/client"
{ printf '\001\377\377'; for v in req_set_more cont_more cont_last; do hex "$v" | xxd -r -p; done; } > "$out/corpus_stream/server_big"
# Server seeds: control byte (0x80: v1 HELLO prepended, 0x40: v2 HELLO, low
# bits: read size) then requests from the vectors.
seed_server() { # NAME CTL VECTOR...
  f="$out/corpus_server/$1"; ctl=$2; shift 2
  { printf "\\$ctl"; for v in "$@"; do hex "$v" | xxd -r -p; done; } > "$f"
}
seed_server v1_all 200 req_get req_set req_del req_incr req_cas req_wait ping req_get req_stats req_stats_prefix
seed_server v1_raw 000 hello req_set req_get req_incr req_incr req_del
seed_server v1_split 203 req_set req_get ping req_cas
seed_server v2_all 100 req_get_v2 req_get_deadline req_set_deadline req_set_more cont_more cont_last req_get_v2 ping_v2
seed_server v2_cancel 100 req_cas_deadline_more window_update_msg cancel window_update_conn req_get_v2 goaway
seed_server v2_split 105 req_set_more cont_more cont_last req_get_v2 req_wait
seed_server v1_keys 200 req_set req_exists req_ttl req_expire req_persist req_scan req_scan_prefix req_ttl
seed_server v2_keys 100 req_expire_deadline req_get_v2 req_expire_deadline
seed_server v1_introspect 200 req_set req_slowlog_get req_slowlog_len req_client_list req_slowlog_bad_sub req_slowlog_reset
seed_server v2_introspect 100 req_get_deadline req_client_list_deadline req_get_v2
# Client seeds: control byte (low 2 bits: 1 = v1 HELLO_ACK prepended, 2 = v2;
# bits 3..5 chunk size; 0x40 cancel; 0x80 close in a callback; see
# fuzz_client_response.c), then server frames from the vectors; a name
# written 2:NAME is a v1 vector sent with the v2 header version byte.
seed_client() { # NAME CTL VECTOR...
  f="$out/corpus_client/$1"; ctl=$2; shift 2
  { printf "\\$ctl"; for v in "$@"; do
      case $v in 2:*) hex "${v#2:}" | sed 's/^6b01/6b02/';; *) hex "$v";; esac | xxd -r -p
    done; } > "$f"
}
seed_client v1_ok 001 resp_get_ok resp_set_ok resp_del_ok resp_incr_ok resp_cas_ok resp_wait_ok resp_busy ping resp_stats_ok
seed_client v1_err 001 resp_get_not_found resp_cas_mismatch resp_set_too_large resp_wait_timeout resp_incr_overflow resp_unknown_op resp_shutting_down error_bad_length
seed_client v1_raw 000 hello_ack resp_get_ok resp_get_ok resp_incr_not_integer resp_internal pong
seed_client v1_only 004 hello_ack resp_get_ok error_unsupported_version
seed_client v2_frag 002 resp_get_more 2:resp_set_ok resp_cont_last resp_canceled window_update_conn window_update_msg ping_v2 2:resp_del_ok goaway 2:resp_incr_ok
seed_client v2_raw 000 hello_ack_v2 resp_get_ok_v2 2:resp_cas_mismatch 2:resp_wait_ok goaway_flood error_flood
seed_client v2_split 012 resp_get_more resp_get_ok_v2 resp_cont_last ping_v2 2:resp_wait_ok 2:resp_stats_ok
seed_client v2_cancel 102 2:resp_set_ok resp_get_more resp_cont_last 2:resp_busy
seed_client v2_close 202 resp_get_ok_v2 2:resp_set_ok
seed_client v2_oom 002 resp_out_of_memory 2:resp_get_ok resp_get_more resp_cont_last
seed_client v1_keys 001 resp_exists_ok resp_ttl_ok resp_ttl_none resp_expire_ok resp_persist_not_found resp_scan_ok resp_scan_done
seed_client v2_keys 002 2:resp_ttl_ok 2:resp_scan_ok 2:resp_exists_ok
seed_client v1_introspect 001 resp_slowlog_get_ok resp_slowlog_len_ok resp_slowlog_reset_ok resp_client_list_ok
seed_client v2_introspect 002 2:resp_client_list_ok 2:resp_slowlog_get_ok
"$out/fuzz_frame_decode" -max_total_time="$secs" -print_final_stats=1 "$out/corpus_decode"
"$out/fuzz_stream_v2" -max_total_time="$secs" -print_final_stats=1 "$out/corpus_stream"
"$out/fuzz_server_input" -max_total_time="$secs" -print_final_stats=1 "$out/corpus_server"
"$out/fuzz_map_decode" -max_total_time="$secs" -print_final_stats=1 "$out/corpus_map"
cp "$(dirname "$0")"/regress/client_* "$out/corpus_client/" 2>/dev/null || true  # inputs that once crashed
"$out/fuzz_client_response" -max_total_time="$secs" -max_len=8192 -print_final_stats=1 "$out/corpus_client"
