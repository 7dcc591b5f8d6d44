/* kvmux client calls: kvmux_call, kvmux_try_call and every convenience
 * wrapper (get, set, del, incr, cas, wait, ping), all in terms of one
 * function, call_run.
 *
 * Design: a caller never touches the socket and never parses. Under the
 * client mutex it
 *   1. fails fast if the connection is dead (its fatal code);
 *   2. waits, up to its deadline, until a slot is FREE (a credit) and the
 *      outbound queue has room (queue_limit frames, queue_bytes_limit bytes,
 *      counting the batch the writer is sending; a single frame larger than
 *      the byte limit is admitted when the queue is empty, so no request is
 *      unsendable) -- kvmux_try_call returns KVMUX_EAGAIN instead of waiting;
 *   3. takes the slot, encodes its frame straight into the outbound buffer
 *      and kicks the writer only if it sleeps;
 *   4. releases the mutex and sleeps on its own wait record (below) until
 *      the reader (or a connection failure) completes it, or the deadline
 *      passes -- then, under the mutex again, the slot becomes a TOMBSTONE
 *      that keeps the id and the credit until the late reply arrives, and
 *      the call returns KVMUX_ETIMEDOUT.
 *
 * The wake path (many blocking threads on one connection). The
 * caller's wait record (kvmux__callwait) is on its stack; the slot points
 * to it. The completer writes the result into the record, frees the slot
 * and counts the caller out of the library, all under the mutex it already
 * holds for the whole batch of replies; then, after unlocking, it sets the
 * record's futex word to DONE and calls FUTEX_WAKE only if the caller
 * sleeps (word SLEEPING). The caller reads its result from its own record
 * without re-taking the client mutex: one futex wait and one wake per
 * call, no convoy of woken callers on the mutex the reader holds. The
 * reader wakes only the first record of a batch; each woken caller wakes
 * the next one (kvmux__call_chain_prepare), so the wakes run on the
 * callers' threads while the reader returns to the socket. A batch is
 * dealt into one chain per online CPU (up to 16), by the CPU each caller
 * last ran on (recorded with sched_getcpu() as it queues its request),
 * and the chains are woken in parallel. Why: on a VM a wake-up that
 * crosses CPUs costs 16-22 us against ~0.7 us on one CPU (bench/wakeup);
 * in one chain of 64 those costs add up serially, and a chain whose
 * callers all last ran on the waker's CPU tends to stay there (the
 * scheduler keeps a wakee on its previous CPU while no other CPU is
 * idle, and every chain keeps its CPU busy). Measured on 2 vCPUs, 64
 * threads: one chain ~75k calls/s, two dealt round-robin ~280k, two by
 * CPU ~400k; the reader waking all 64 itself was slower again
 * (docs/BENCHMARKS.md, "Blocking threads").
 * While a chain runs (c->chains), callers queue their next requests
 * without waking the writer; each chain's tail, which the reader kept
 * counted in active for it, kicks the writer for all of them
 * (call_chain_end); a chain of one has no tail and its caller kicks as
 * usual. Under the mutex a caller either sees a chain still running
 * (whose tail will see its request queued) or none (and kicks itself),
 * so no request waits for a kick that never comes. A
 * caller whose deadline passes takes the mutex and looks at finished:
 * if the completer got there first, the result stands (it waits the few
 * instructions until DONE, since the waker still reads the record);
 * otherwise it disowns the slot (tombstone), so a late reply can never
 * reach the record, nor a newer call. The futex word is private to the
 * process (FUTEX_PRIVATE_FLAG). A wake may reach an address whose record
 * has already returned (the caller saw DONE before the syscall); the
 * kernel only hashes the address, and every futex waiter here re-checks
 * its word, so such a wake is at worst a spurious one.
 * queue_limit bounds the frames the library holds (encoded, not yet
 * written). A call waiting for a credit holds nothing but its own stack,
 * so those are bounded by the number of calling threads; they are not
 * counted again (whether they count is not observable: with no credit
 * free, try_call says KVMUX_EAGAIN and kvmux_call waits either way).
 * Arguments are checked before anything is queued: a NULL or empty key is
 * KVMUX_EINVAL, a key or value over the server's negotiated limits (or a
 * frame over its max frame size) is KVMUX_ETOOBIG, decided locally.
 *
 * Waiters for a slot and waiters for queue room sleep on different
 * condition variables: a freed slot wakes one slot waiter (signal), a
 * drained queue wakes every room waiter (broadcast: many may now fit). A
 * waiter that leaves without using its wakeup (timeout) passes it on, so no
 * wakeup is lost. All waits are on CLOCK_MONOTONIC and bounded by the
 * call's deadline; kvmux_close wakes everyone, and active counts callers
 * inside so that close can wait for them to leave.
 *
 * The admission checks and the encoder (kvmux__call_check,
 * kvmux__call_encode, kvmux__queue_full) are shared with the async
 * submits in async.c, so both paths build identical frames under
 * identical limits. A credit a synchronous caller frees is first offered
 * to the async backlog (kvmux__async_pump), which never waits for it
 * behind threads that may sleep.
 *
 * After a GOAWAY (c->draining) new calls fail fast with KVMUX_ESHUTDOWN,
 * including those waiting for admission; calls already sent wait for
 * their answers.
 *
 * With automatic reconnect (reconnect.c) a fatal code or a GOAWAY means
 * "between connections": admission waits on conn_cond for the next one
 * (reconnect_wait, up to the call's deadline) or fails fast with
 * KVMUX_ECLOSED. A GET or PING whose connection died under it comes back
 * as KVMUX__ERETRY when retry_reads is on and goes through admission
 * again; nothing else is ever resent -- except in endpoints mode
 * (failover.c), where every read cut off comes back as KVMUX__ERETRY and
 * every request answered NOT_LEADER as KVMUX__EREDIRECT (at most
 * KVMUX__MAX_REDIRECTS of them, then KVMUX_ENOTLEADER).
 *
 * What it is not: the reply parsing is in reader.c, the socket writes in
 * writer.c, the connection failure in client.c, async requests in async.c.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client_internal.h"
#include "clock.h"

/* Request extras length per op (PING: its 8-byte payload). */
static unsigned call_extras_len(kvmux_op op) {
    switch (op) {
    case KVMUX_SET: return 8;
    case KVMUX_INCR: return 8;
    case KVMUX_CAS: return 16;
    case KVMUX_WAIT: return 12;
    case KVMUX_EXPIRE: return 8;
    case KVMUX_SCAN: return 12;
    case KVMUX_SLOWLOG: return 8;
    case KVMUX_PING: return 8;
    default: return 0;
    }
}

int kvmux__stale_applies(const kvmux_client *c, int op, uint8_t version) {
    return c->opts.stale_reads && version >= KVMUX_PROTO_V3 &&
           (op == KVMUX_GET || op == KVMUX_EXISTS || op == KVMUX_TTL || op == KVMUX_WAIT ||
            op == KVMUX_SCAN);
}

/* Check req against the negotiated limits and compute its frame size.
 * Returns 0 or KVMUX_EINVAL / KVMUX_ETOOBIG. */
int kvmux__call_check(const kvmux_client *c, const kvmux_request *req, size_t *flen) {
    int has_value = 0;
    switch (req->op) {
    case KVMUX_GET: case KVMUX_DEL: case KVMUX_INCR: case KVMUX_WAIT:
    case KVMUX_EXISTS: case KVMUX_TTL: case KVMUX_PERSIST:
        break;
    case KVMUX_EXPIRE:
        if (!kvmux_ttl_valid(req->ttl_ms)) return KVMUX_EINVAL; /* as SET, CAS */
        break;
    case KVMUX_SET: case KVMUX_CAS:
        /* The wire rule (kvmux_ttl_valid): the server would answer
         * BAD_REQUEST; every entry point refuses it here, before sending. */
        if (!kvmux_ttl_valid(req->ttl_ms)) return KVMUX_EINVAL;
        has_value = 1;
        break;
    case KVMUX_PING:
        *flen = KVMUX_FRAME_HDR_LEN + call_extras_len(KVMUX_PING);
        return 0;
    case KVMUX_STATS: case KVMUX_SCAN:
        break;
    case KVMUX_GROUP: case KVMUX_CLUSTER:
        has_value = 1;
        break;
    case KVMUX_SLOWLOG: case KVMUX_CLIENT_LIST:
        /* No key: the server would answer BAD_REQUEST. */
        if (req->key_len != 0) return KVMUX_EINVAL;
        break;
    default:
        return KVMUX_EINVAL;
    }
    /* STATS and SCAN may have an empty key (= no prefix); the
     * introspection ops have none. */
    int key_optional = req->op == KVMUX_STATS || req->op == KVMUX_SCAN ||
                       req->op == KVMUX_SLOWLOG || req->op == KVMUX_CLIENT_LIST;
    if (key_optional ? (!req->key && req->key_len != 0) : (!req->key || req->key_len == 0))
        return KVMUX_EINVAL;
    /* Relaxed loads: without the lock this is only the early pass, which
     * admission repeats under it (client_internal.h, the limits). */
    uint32_t max_frame = atomic_load_explicit(&c->peer_max_frame, memory_order_relaxed);
    uint8_t version = atomic_load_explicit(&c->version, memory_order_relaxed);
    if (req->key_len > atomic_load_explicit(&c->max_key, memory_order_relaxed))
        return KVMUX_ETOOBIG;
    size_t vlen = has_value ? req->value_len : 0;
    if (has_value && vlen > 0 && !req->value) return KVMUX_EINVAL;
    if (vlen > atomic_load_explicit(&c->max_value, memory_order_relaxed)) return KVMUX_ETOOBIG;
    /* key_len <= 65535 and vlen <= u32 max: no overflow in size_t. On v2
     * every request carries its deadline (a u32 prefix). */
    size_t n = KVMUX_FRAME_HDR_LEN + call_extras_len(req->op) + req->key_len + vlen;
    if (version >= KVMUX_PROTO_V2) n += KVMUX_PREFIX_LEN;
    size_t sess = kvmux__session_on(c, req->op) ? KVMUX_SESSION_PREFIX_LEN : 0;
    n += sess;
    if (kvmux__stale_applies(c, req->op, version)) n += KVMUX_STALE_PREFIX_LEN;
    if (n > max_frame) {
        /* v2 sends it fragmented (bigsend.c; both drivers) if the head
         * of its first frame fits. */
        size_t head = KVMUX_FRAME_HDR_LEN + 2 * KVMUX_PREFIX_LEN + sess +
                      call_extras_len(req->op) + req->key_len;
        if (version < KVMUX_PROTO_V2 || head >= max_frame || vlen > UINT32_MAX)
            return KVMUX_ETOOBIG;
    }
    *flen = n;
    return 0;
}

/* 1 if a request of frame size flen travels fragmented. */
static int call_is_big(const kvmux_client *c, size_t flen) {
    return flen > atomic_load_explicit(&c->peer_max_frame, memory_order_relaxed);
}

/* Admission's check (lock held): req against the current limits, which a
 * reconnect may have changed since the early pass (its only writer holds
 * this lock). *flen is updated; *big is made to match: freed if the value
 * now fits one frame, prepared (copied under the lock: only right after a
 * reconnect to a server with a smaller frame size) if it no longer does.
 * Returns 0, KVMUX_EINVAL, KVMUX_ETOOBIG or KVMUX_ENOMEM. */
static int call_recheck(kvmux_client *c, const kvmux_request *req, size_t *flen,
                        kvmux__bigmsg **big) {
    int rc = kvmux__call_check(c, req, flen);
    if (rc != 0) return rc;
    if (call_is_big(c, *flen) == (*big != NULL)) return 0;
    if (*big) {
        kvmux__big_free(*big);
        *big = NULL;
        return 0;
    }
    return kvmux__big_prepare(c, req, NULL, big);
}

int kvmux__call_prepare(kvmux_client *c, const kvmux_request *req, size_t flen,
                        struct kvmux_future *steal, kvmux__bigmsg **big) {
    *big = NULL;
    if (call_is_big(c, flen)) return kvmux__big_prepare(c, req, steal, big);
    return kvmux__out_reserve(c, flen);
}

/* Milliseconds left until deadline (monotonic ms) as a DEADLINE value:
 * at least 1 (the caller has not given up yet; 0 would mean "expired"). */
uint32_t kvmux__deadline_left(int64_t deadline, int64_t now) {
    if (now < 0) now = kvmux__now_ms();
    int64_t left = deadline - now;
    if (left < 1) return 1;
    if (left > (int64_t)UINT32_MAX) return UINT32_MAX;
    return (uint32_t)left;
}

/* Encode req as frame id at the end of c->out (room reserved), or start
 * its fragmented transfer big. seq (NULL: never a session write): a write
 * numbered in the session keeps its number across resends; 0 = not
 * numbered yet, given the next one here (under the lock, so numbers are
 * handed out in the order frames are queued). */
int kvmux__call_encode(kvmux_client *c, const kvmux_request *req, uint32_t id,
                       kvmux__bigmsg *big, int64_t deadline, int64_t now, uint64_t *seq) {
    uint8_t ext[16];
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = c->version;
    f.type = KVMUX_FRAME_REQUEST;
    f.code = (uint8_t)req->op;
    f.request_id = id;
    f.extras = ext;
    f.extras_len = (uint8_t)call_extras_len(req->op);
    switch (req->op) {
    case KVMUX_PING:
        f.type = KVMUX_FRAME_PING;
        f.code = 0;
        kvmux_store_u64be(ext, id); /* opaque payload; the PONG echoes it */
        break;
    case KVMUX_SET:
        kvmux_store_u64be(ext, req->ttl_ms);
        break;
    case KVMUX_INCR:
        kvmux_store_u64be(ext, (uint64_t)req->delta); /* two's complement */
        break;
    case KVMUX_CAS:
        kvmux_store_u64be(ext, req->version);
        kvmux_store_u64be(ext + 8, req->ttl_ms);
        break;
    case KVMUX_WAIT:
        kvmux_store_u64be(ext, req->version);
        kvmux_store_u32be(ext + 8, req->wait_ms);
        break;
    case KVMUX_EXPIRE:
        kvmux_store_u64be(ext, req->ttl_ms);
        break;
    case KVMUX_SCAN:
        kvmux_store_u64be(ext, req->cursor);
        kvmux_store_u32be(ext + 8, req->count);
        break;
    case KVMUX_SLOWLOG:
        kvmux_store_u32be(ext, req->subcommand);
        kvmux_store_u32be(ext + 4, req->count);
        break;
    default:
        break;
    }
    if (req->op != KVMUX_PING) {
        f.key = req->key;
        f.key_len = (uint16_t)req->key_len;
        if (c->version >= KVMUX_PROTO_V2) {
            /* The server may drop work nobody waits for any more (a
             * parked WAIT, a queued request) and answer TIMEOUT. */
            f.flags = KVMUX_FLAG_DEADLINE;
            f.deadline_ms = kvmux__deadline_left(deadline, now);
        }
        if (seq && kvmux__session_on(c, req->op)) {
            f.flags |= KVMUX_FLAG_SESSION;
            f.session_seq = kvmux__session_wire_seq(c, seq);
        }
        if (kvmux__stale_applies(c, req->op, c->version)) {
            f.flags |= KVMUX_FLAG_STALE;
            f.min_version = atomic_load_explicit(&c->stale_min, memory_order_relaxed);
        }
    }
    if (big) {
        big->deadline = deadline;
        if (kvmux__big_start(c, big, &f) != 0) {
            kvmux__big_free(big);
            return KVMUX_ETOOBIG;
        }
        kvmux__writer_kick(c);
        return 0;
    }
    if (req->op == KVMUX_SET || req->op == KVMUX_CAS || req->op == KVMUX_GROUP ||
        req->op == KVMUX_CLUSTER) {
        f.value = req->value;
        f.value_len = (uint32_t)req->value_len;
    }
    c->out.len += kvmux_frame_encode(c->out.data + c->out.len, &f);
    c->out.frames++;
    return 0;
}

/* 1 if a frame of flen bytes does not fit in the outbound queue now. */
int kvmux__queue_full(const kvmux_client *c, size_t flen) {
    if (call_is_big(c, flen)) {
        /* Fragmented transfers have their own byte bound, so a large value
         * never blocks small requests; one is always admitted alone. */
        size_t lim = c->opts.queue_bytes_limit;
        return c->big_n > 0 && (flen > lim || c->big_bytes > lim - flen);
    }
    if ((uint64_t)c->out.frames + c->wr_frames >= c->opts.queue_limit) return 1;
    size_t used = c->out.len + c->wr_bytes;
    if (used == 0) return 0; /* an empty queue admits any single frame */
    return flen > c->opts.queue_bytes_limit || used > c->opts.queue_bytes_limit - flen;
}

/* Wait on cv until woken or deadline (lock held). Returns 1 if the
 * deadline has passed. */
static int call_wait(kvmux_client *c, pthread_cond_t *cv, const struct timespec *deadline) {
    return pthread_cond_timedwait(cv, &c->mu, deadline) == ETIMEDOUT;
}

/* A caller leaving the library (lock held). */
static void call_leave(kvmux_client *c) {
    c->active--;
    if (c->closing && c->active == 0) pthread_cond_broadcast(&c->idle_cond);
}

/* futex(2) on a wait record's word: sleep while it equals val, until the
 * absolute CLOCK_MONOTONIC time abs (NULL: no limit). Returns 0 or an
 * errno value (ETIMEDOUT, EAGAIN: the word changed, EINTR). */
static int call_futex_wait(atomic_uint *word, unsigned val, const struct timespec *abs) {
    /* FUTEX_WAIT_BITSET takes an absolute time on CLOCK_MONOTONIC, so no
     * clock read per sleep. */
    long r = syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val,
                     abs, NULL, FUTEX_BITSET_MATCH_ANY);
    return r == 0 ? 0 : errno;
}

/* Set w's word DONE and wake its caller if it sleeps. */
static void call_wake_one(kvmux__callwait *w) {
    unsigned old = atomic_exchange_explicit(&w->word, KVMUX__CW_DONE, memory_order_release);
    if (old == KVMUX__CW_SLEEPING)
        syscall(SYS_futex, (unsigned *)&w->word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL,
                NULL, 0);
}

int kvmux__call_chain_prepare(kvmux_client *c, kvmux__callwait *w, kvmux__callwait **heads) {
    /* Chain n takes the records whose callers last ran on a CPU = n
     * modulo the chain count, in list order. */
    kvmux__callwait *head[KVMUX__MAX_WAKE_CHAINS] = {0};
    kvmux__callwait *tail[KVMUX__MAX_WAKE_CHAINS];
    while (w) {
        kvmux__callwait *next = w->wnext;
        w->wnext = NULL;
        int n = (w->cpu < 0 ? 0 : w->cpu) % c->wake_chains;
        if (head[n]) tail[n]->wnext = w;
        else head[n] = w;
        tail[n] = w;
        w = next;
    }
    int k = 0;
    for (int n = 0; n < c->wake_chains; n++) {
        if (!head[n]) continue;
        heads[k++] = head[n];
        if (tail[n] == head[n]) continue; /* a chain of one: its caller kicks */
        tail[n]->chain_tail = 1;
        c->active++; /* the tail touches c once more (call_chain_end) */
        c->chains++;
    }
    return k;
}

void kvmux__call_wake_first(kvmux__callwait *w) {
    if (w) call_wake_one(w);
}

/* The tail of a wake chain (call.c's caller, lock not held): the chain's
 * callers queued requests without kicking the writer; kick it once for
 * all of them, and leave the library. */
static void call_chain_end(kvmux_client *c) {
    pthread_mutex_lock(&c->mu);
    c->chains--;
    if (c->out.len > 0 || kvmux__big_ready(c)) kvmux__writer_kick(c);
    call_leave(c);
    pthread_mutex_unlock(&c->mu);
}

void kvmux__call_wake_all(kvmux__callwait *w) {
    while (w) {
        /* The record may be gone the moment its word is DONE. */
        kvmux__callwait *next = w->wnext;
        w->wnext = NULL; /* no chain: its caller must not wake it again */
        unsigned old = atomic_exchange_explicit(&w->word, KVMUX__CW_DONE, memory_order_release);
        if (old == KVMUX__CW_SLEEPING)
            syscall(SYS_futex, (unsigned *)&w->word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL,
                    NULL, 0);
        w = next;
    }
}

/* Wait until w's word is DONE or the deadline passes (no lock held).
 * Returns 1 when DONE, 0 on timeout. */
static int call_sleep(kvmux__callwait *w, const struct timespec *deadline) {
    for (;;) {
        unsigned v = atomic_load_explicit(&w->word, memory_order_acquire);
        if (v == KVMUX__CW_DONE) return 1;
        if (v == KVMUX__CW_PENDING &&
            !atomic_compare_exchange_weak_explicit(&w->word, &v, KVMUX__CW_SLEEPING,
                                                   memory_order_acquire, memory_order_acquire))
            continue; /* DONE meanwhile, or a spurious CAS failure */
        if (call_futex_wait(&w->word, KVMUX__CW_SLEEPING, deadline) == ETIMEDOUT) {
            return atomic_load_explicit(&w->word, memory_order_acquire) == KVMUX__CW_DONE;
        }
    }
}

/* The one call path; see the file comment. reply (may be NULL) receives
 * version/number/value; vout (may be NULL) receives GET/WAIT values as one
 * kvmux_value instead. */
static int call_run(kvmux_client *c, const kvmux_request *req, kvmux_reply *reply,
                    kvmux_value **vout, int timeout_ms, int try_only) {
    if (reply) memset(reply, 0, sizeof *reply);
    if (vout) *vout = NULL;
    if (!c || !req || timeout_ms < KVMUX_TIMEOUT_DEFAULT) return KVMUX_EINVAL;
    if (c->router) return kvmux__cluster_call(c, req, reply, vout, timeout_ms, try_only);
    /* On an event-loop client nothing would drive the socket while we
     * block: the loop thread is the caller. */
    if (c->mode == KVMUX__MODE_LOOP) return KVMUX_EINVAL;
    size_t flen = 0;
    int rc = kvmux__call_check(c, req, &flen);
    if (rc != 0) return rc;
    int64_t tmo = timeout_ms == KVMUX_TIMEOUT_DEFAULT ? c->opts.request_timeout_ms : timeout_ms;
    /* One clock read gives both forms of the deadline, and both name the
     * same instant: the whole millisecond DEADLINE is computed from
     * (kvmux__deadline_left). Were the futex wait to end up to 1 ms later
     * than that, the server -- which counts from the same millisecond and
     * only starts on receipt -- could give up first and answer TIMEOUT
     * while we still wait, instead of our timer firing and a transfer
     * still uploading being CANCELed (client_v2_upload_timeout_test). */
    struct timespec deadline = kvmux__deadline(tmo);
    int64_t deadline_ms = (int64_t)deadline.tv_sec * 1000 + deadline.tv_nsec / 1000000;
    deadline.tv_nsec -= deadline.tv_nsec % 1000000;
    /* A fragmented value is copied (once) before taking the lock: copying
     * 64 MiB under it would stall every other caller and the reader. */
    kvmux__bigmsg *big = NULL;
    if (call_is_big(c, flen)) {
        /* Fail fast on a dead or draining connection before copying up to
         * max_value_size bytes; admission below checks again under the
         * lock, so this is only a shortcut. */
        pthread_mutex_lock(&c->mu);
        int dead = 0;
        if ((c->fatal || c->draining) && !kvmux__reconnecting(c))
            dead = c->fatal ? c->fatal : KVMUX_ESHUTDOWN;
        pthread_mutex_unlock(&c->mu);
        if (dead) return dead;
        rc = kvmux__big_prepare(c, req, NULL, &big);
        if (rc != 0) return rc;
    }

    pthread_mutex_lock(&c->mu);
    c->active++;
    int timed_out = 0;
    unsigned redirects = 0; /* NOT_LEADER answers followed */
    uint64_t seq = 0;       /* session write: its number, kept for resends */
    unsigned unknowns = 0;  /* OUTCOME_UNKNOWN answers resent */
    kvmux__slot *s = NULL;
    uint32_t id = 0;

    /* Admission: a credit and queue room, both at once. */
admit:
    for (;;) {
        if ((c->fatal || c->draining) && kvmux__reconnecting(c)) {
            /* Between connections: wait for the next one, or fail fast. */
            if (!c->opts.reconnect_wait || try_only) {
                rc = KVMUX_ECLOSED;
                goto leave;
            }
            if (timed_out) {
                rc = KVMUX_ETIMEDOUT;
                goto leave;
            }
            timed_out = call_wait(c, &c->conn_cond, &deadline);
            continue;
        }
        if (c->fatal) {
            rc = c->fatal;
            goto leave;
        }
        if (c->draining) {
            /* GOAWAY: nothing new on this connection (safe to retry). */
            rc = KVMUX_ESHUTDOWN;
            goto leave;
        }
        rc = call_recheck(c, req, &flen, &big);
        if (rc != 0) goto leave;
        int no_slot = c->pending.nfree == 0;
        if (!no_slot && !kvmux__queue_full(c, flen)) break;
        if (try_only) {
            rc = KVMUX_EAGAIN;
            goto leave;
        }
        if (timed_out) {
            rc = KVMUX_ETIMEDOUT;
            goto leave;
        }
        if (no_slot) {
            c->slot_waiters++;
            timed_out = call_wait(c, &c->slot_cond, &deadline);
            c->slot_waiters--;
        } else {
            c->queue_waiters++;
            timed_out = call_wait(c, &c->queue_cond, &deadline);
            c->queue_waiters--;
        }
    }
    if (!big) {
        rc = kvmux__out_reserve(c, flen);
        if (rc != 0) goto leave;
    }
    s = kvmux__pending_take(&c->pending, &id);
    s->op = (uint8_t)req->op;
    s->want_value = vout != NULL;
    /* Which send round carries it (failover.c: unsent at a loss?). */
    uint64_t out_round = big ? UINT64_MAX : c->out_rounds;
    rc = kvmux__call_encode(c, req, id, big, deadline_ms, -1, &seq); /* it may have waited */
    big = NULL; /* started, or freed by call_encode */
    if (rc != 0) {
        kvmux__pending_release(&c->pending, s);
        s = NULL;
        goto leave;
    }
    kvmux__callwait w;
    atomic_init(&w.word, KVMUX__CW_PENDING);
    w.finished = 0;
    w.result = 0;
    memset(&w.reply, 0, sizeof w.reply);
    w.value = NULL;
    w.wnext = NULL;
    w.chain_tail = 0;
    w.out_round = out_round;
    w.seq = seq;
    w.unknowns = unknowns;
    w.cpu = sched_getcpu();
    s->owner = KVMUX__OWNER_CALL;
    s->u.w = &w;
    /* While a wake chain runs, its tail kicks the writer for everyone. */
    if (c->chains == 0) kvmux__writer_kick(c);
    pthread_mutex_unlock(&c->mu);

    /* Wait for the reply on our own record, without the client mutex. */
    if (!call_sleep(&w, &deadline)) {
        pthread_mutex_lock(&c->mu);
        if (!w.finished) {
            /* Still unanswered: the slot keeps the id and the credit
             * until the late reply, which finds no owner. Still uploading
             * its value: stop it and CANCEL (within the cancel rate; else
             * the upload ends and DEADLINE applies). */
            if (kvmux__big_sending(c, s->id)) {
                kvmux__slot_abandon(c, s);
            } else {
                kvmux__slot_disown(&c->pending, s);
                kvmux__pending_tombstone(&c->pending, s);
            }
            /* A write given up on no longer holds a redirect's drain. */
            if (c->redirecting) kvmux__failover_drain_check(c);
            rc = KVMUX_ETIMEDOUT;
            goto leave;
        }
        /* Completed as the deadline passed: the result stands. The waker
         * is about to set DONE (it still reads the record): wait for it. */
        pthread_mutex_unlock(&c->mu);
        while (!call_sleep(&w, NULL)) {
        }
    }
    /* Pass the wake on (kvmux__call_wake_chain): the next record is
     * alive, its caller waits for DONE whatever its deadline. */
    if (w.wnext) call_wake_one(w.wnext);
    if (w.chain_tail) call_chain_end(c);
    s = NULL;
    rc = w.result;
    unknowns = w.unknowns;
    seq = w.seq; /* failover.c may have found it never left (no RETRY) */
    if (rc == KVMUX__ERETRY || rc == KVMUX__EREDIRECT) {
        /* retry_reads, or endpoints mode (failover.c): the request never
         * got its answer (a read cut off, or NOT_LEADER: not processed);
         * send it again on the next connection, within the same deadline
         * (still counted in active: the completer left us in). A request
         * redirected too often gives up. */
        pthread_mutex_lock(&c->mu);
        timed_out = 0;
        if (rc == KVMUX__EREDIRECT && ++redirects > KVMUX__MAX_REDIRECTS) {
            rc = KVMUX_ENOTLEADER;
            goto leave;
        }
        goto admit;
    }
    /* The completer freed the slot and counted us out of the library:
     * from here on the client may be closed under us; only w is ours. */
    if (reply && (rc == KVMUX_OK || rc == KVMUX_EVERSION || w.reply.value)) {
        *reply = w.reply;
        w.reply.value = NULL;
    }
    if (vout && rc == KVMUX_OK) {
        *vout = w.value;
        w.value = NULL;
    }
    free(w.reply.value); /* whatever was not taken */
    free(w.value);
    return rc;

leave:
    /* Pass on a slot wakeup this caller may have consumed without using. */
    if (c->slot_waiters > 0 && c->pending.nfree > 0) pthread_cond_signal(&c->slot_cond);
    call_leave(c);
    pthread_mutex_unlock(&c->mu);
    kvmux__big_free(big); /* prepared, never admitted */
    return rc;
}

int kvmux__call_run(kvmux_client *c, const kvmux_request *req, kvmux_reply *reply,
                    kvmux_value **vout, int timeout_ms, int try_only) {
    return call_run(c, req, reply, vout, timeout_ms, try_only);
}

int kvmux_call(kvmux_client *c, const kvmux_request *req, kvmux_reply *reply,
               int timeout_ms) {
    return call_run(c, req, reply, NULL, timeout_ms, 0);
}

int kvmux_try_call(kvmux_client *c, const kvmux_request *req, kvmux_reply *reply,
                   int timeout_ms) {
    return call_run(c, req, reply, NULL, timeout_ms, 1);
}

void kvmux_reply_free(kvmux_reply *reply) {
    if (!reply) return;
    free(reply->value);
    memset(reply, 0, sizeof *reply);
}

void kvmux_value_free(kvmux_value *v) {
    free(v); /* data lives in the same allocation */
}

/* A request for op on key, everything else zero. */
static kvmux_request call_req(kvmux_op op, const void *key, size_t key_len) {
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.key = key;
    r.key_len = key_len;
    return r;
}

int kvmux_get(kvmux_client *c, const void *key, size_t key_len, kvmux_value **out,
              int timeout_ms) {
    if (!out) return KVMUX_EINVAL;
    kvmux_request r = call_req(KVMUX_GET, key, key_len);
    return call_run(c, &r, NULL, out, timeout_ms, 0);
}

int kvmux_stats(kvmux_client *c, const char *prefix, kvmux_value **out, int timeout_ms) {
    if (!out) return KVMUX_EINVAL;
    size_t plen = prefix ? strlen(prefix) : 0;
    kvmux_request r = call_req(KVMUX_STATS, plen ? prefix : NULL, plen);
    return call_run(c, &r, NULL, out, timeout_ms, 0);
}

int kvmux_set(kvmux_client *c, const void *key, size_t key_len, const void *value,
              size_t value_len, uint64_t ttl_ms, uint64_t *version_out, int timeout_ms) {
    if (!kvmux_ttl_valid(ttl_ms)) return KVMUX_EINVAL; /* the wire rule, checked early */
    kvmux_request r = call_req(KVMUX_SET, key, key_len);
    r.value = value;
    r.value_len = value_len;
    r.ttl_ms = ttl_ms;
    kvmux_reply rep;
    int rc = call_run(c, &r, &rep, NULL, timeout_ms, 0);
    if (version_out) *version_out = rep.version;
    kvmux_reply_free(&rep); /* a WRONG_SHARD / TRY_AGAIN answer's value */
    return rc;
}

int kvmux_del(kvmux_client *c, const void *key, size_t key_len, int timeout_ms) {
    kvmux_request r = call_req(KVMUX_DEL, key, key_len);
    return call_run(c, &r, NULL, NULL, timeout_ms, 0);
}

int kvmux_incr(kvmux_client *c, const void *key, size_t key_len, int64_t delta,
               int64_t *result_out, int timeout_ms) {
    kvmux_request r = call_req(KVMUX_INCR, key, key_len);
    r.delta = delta;
    kvmux_reply rep;
    int rc = call_run(c, &r, &rep, NULL, timeout_ms, 0);
    if (result_out) *result_out = rep.number;
    kvmux_reply_free(&rep); /* a WRONG_SHARD / TRY_AGAIN answer's value */
    return rc;
}

int kvmux_cas(kvmux_client *c, const void *key, size_t key_len, uint64_t expected_version,
              const void *value, size_t value_len, uint64_t ttl_ms, uint64_t *version_out,
              int timeout_ms) {
    if (!kvmux_ttl_valid(ttl_ms)) return KVMUX_EINVAL; /* the wire rule, checked early */
    kvmux_request r = call_req(KVMUX_CAS, key, key_len);
    r.version = expected_version;
    r.value = value;
    r.value_len = value_len;
    r.ttl_ms = ttl_ms;
    kvmux_reply rep;
    int rc = call_run(c, &r, &rep, NULL, timeout_ms, 0);
    if (version_out) *version_out = rep.version; /* new, or current on EVERSION */
    kvmux_reply_free(&rep); /* a WRONG_SHARD / TRY_AGAIN answer's value */
    return rc;
}

int kvmux_wait(kvmux_client *c, const void *key, size_t key_len, uint64_t version,
               uint32_t wait_ms, kvmux_value **out, int timeout_ms) {
    if (!out) return KVMUX_EINVAL;
    *out = NULL;
    if (!c) return KVMUX_EINVAL;
    if (timeout_ms == KVMUX_TIMEOUT_DEFAULT) {
        /* The server holds the call for up to wait_ms; allow the usual
         * request time on top for the round trip. */
        int64_t t = (int64_t)wait_ms + c->opts.request_timeout_ms;
        timeout_ms = t > INT_MAX ? INT_MAX : (int)t;
    }
    kvmux_request r = call_req(KVMUX_WAIT, key, key_len);
    r.version = version;
    r.wait_ms = wait_ms;
    return call_run(c, &r, NULL, out, timeout_ms, 0);
}

int kvmux_ping(kvmux_client *c, int timeout_ms) {
    kvmux_request r = call_req(KVMUX_PING, NULL, 0);
    return call_run(c, &r, NULL, NULL, timeout_ms, 0);
}

/* ---- key space ---- */

/* EXISTS, EXPIRE and PERSIST: a key, maybe a TTL, and the key's version
 * back. */
static int call_key_version(kvmux_client *c, kvmux_op op, const void *key, size_t key_len,
                            uint64_t ttl_ms, uint64_t *version_out, int timeout_ms) {
    kvmux_request r = call_req(op, key, key_len);
    r.ttl_ms = ttl_ms;
    kvmux_reply rep;
    int rc = call_run(c, &r, &rep, NULL, timeout_ms, 0);
    if (version_out) *version_out = rep.version;
    kvmux_reply_free(&rep); /* a WRONG_SHARD / TRY_AGAIN answer's value */
    return rc;
}

int kvmux_exists(kvmux_client *c, const void *key, size_t key_len, uint64_t *version_out,
                 int timeout_ms) {
    return call_key_version(c, KVMUX_EXISTS, key, key_len, 0, version_out, timeout_ms);
}

int kvmux_ttl(kvmux_client *c, const void *key, size_t key_len, int64_t *ttl_ms_out,
              int timeout_ms) {
    kvmux_request r = call_req(KVMUX_TTL, key, key_len);
    kvmux_reply rep;
    int rc = call_run(c, &r, &rep, NULL, timeout_ms, 0);
    if (ttl_ms_out) *ttl_ms_out = rc == 0 ? rep.number : 0;
    kvmux_reply_free(&rep); /* a WRONG_SHARD / TRY_AGAIN answer's value */
    return rc;
}

int kvmux_expire(kvmux_client *c, const void *key, size_t key_len, uint64_t ttl_ms,
                 uint64_t *version_out, int timeout_ms) {
    if (!kvmux_ttl_valid(ttl_ms)) { /* the wire rule, checked early as for SET */
        if (version_out) *version_out = 0;
        return KVMUX_EINVAL;
    }
    return call_key_version(c, KVMUX_EXPIRE, key, key_len, ttl_ms, version_out, timeout_ms);
}

int kvmux_persist(kvmux_client *c, const void *key, size_t key_len, uint64_t *version_out,
                  int timeout_ms) {
    return call_key_version(c, KVMUX_PERSIST, key, key_len, 0, version_out, timeout_ms);
}

int kvmux_scan_next(const uint8_t *list, size_t list_len, size_t *offset,
                    const uint8_t **key, size_t *key_len) {
    if (!offset || !key || !key_len || (!list && list_len)) return 0;
    uint16_t kl = 0;
    int rc = kvmux_scan_next_key(list, list_len, offset, key, &kl);
    *key_len = kl;
    return rc == 1;
}

void kvmux_keys_free(kvmux_keys *k) { free(k); }

/* One allocation: the struct, the key array, then the key list bytes the
 * entries point into. */
static int keys_build(const kvmux_reply *rep, kvmux_keys **out) {
    long n = kvmux_scan_count_keys(rep->value, rep->value_len);
    if (n < 0) return KVMUX_EPROTO; /* the reader checked it: unreachable */
    size_t arr = (size_t)n * sizeof(struct kvmux_key);
    kvmux_keys *k = malloc(sizeof *k + arr + rep->value_len + 1);
    if (!k) return KVMUX_ENOMEM;
    k->cursor = rep->version;
    k->count = (size_t)n;
    k->keys = (struct kvmux_key *)(k + 1);
    uint8_t *bytes = (uint8_t *)k->keys + arr;
    if (rep->value_len) memcpy(bytes, rep->value, rep->value_len);
    size_t off = 0;
    for (size_t i = 0; i < (size_t)n; i++)
        kvmux_scan_next(bytes, rep->value_len, &off, &k->keys[i].data, &k->keys[i].len);
    *out = k;
    return 0;
}

int kvmux_scan(kvmux_client *c, uint64_t cursor, const void *prefix, size_t prefix_len,
               uint32_t count, kvmux_keys **out, int timeout_ms) {
    if (!out) return KVMUX_EINVAL;
    *out = NULL;
    kvmux_request r = call_req(KVMUX_SCAN, prefix_len ? prefix : NULL, prefix_len);
    r.cursor = cursor;
    r.count = count;
    kvmux_reply rep;
    int rc = call_run(c, &r, &rep, NULL, timeout_ms, 0);
    if (rc == 0) rc = keys_build(&rep, out);
    kvmux_reply_free(&rep);
    return rc;
}

/* ---- introspection ---- */

/* SLOWLOG sub (count for GET): the reply's u64 in *n_out, the text in
 * *out when out is not NULL. */
static int call_slowlog(kvmux_client *c, uint32_t sub, uint32_t count, kvmux_value **out,
                        uint64_t *n_out, int timeout_ms) {
    kvmux_request r = call_req(KVMUX_SLOWLOG, NULL, 0);
    r.subcommand = sub;
    r.count = count;
    kvmux_reply rep;
    int rc = call_run(c, &r, out ? NULL : &rep, out, timeout_ms, 0);
    if (n_out) *n_out = rc == 0 ? rep.version : 0;
    if (!out) kvmux_reply_free(&rep); /* LEN, RESET: an empty value */
    return rc;
}

int kvmux_slowlog_get(kvmux_client *c, uint32_t count, kvmux_value **out, int timeout_ms) {
    if (!out) return KVMUX_EINVAL;
    *out = NULL;
    if (!c) return KVMUX_EINVAL;
    return call_slowlog(c, KVMUX_SLOWLOG_GET, count, out, NULL, timeout_ms);
}

int kvmux_slowlog_len(kvmux_client *c, uint64_t *len_out, int timeout_ms) {
    if (!len_out) return KVMUX_EINVAL;
    *len_out = 0;
    if (!c) return KVMUX_EINVAL;
    return call_slowlog(c, KVMUX_SLOWLOG_LEN, 0, NULL, len_out, timeout_ms);
}

int kvmux_slowlog_reset(kvmux_client *c, uint64_t *dropped_out, int timeout_ms) {
    if (dropped_out) *dropped_out = 0;
    if (!c) return KVMUX_EINVAL;
    return call_slowlog(c, KVMUX_SLOWLOG_RESET, 0, NULL, dropped_out, timeout_ms);
}

int kvmux_client_list(kvmux_client *c, kvmux_value **out, int timeout_ms) {
    if (!out) return KVMUX_EINVAL;
    *out = NULL;
    if (!c) return KVMUX_EINVAL;
    kvmux_request r = call_req(KVMUX_CLIENT_LIST, NULL, 0);
    return call_run(c, &r, NULL, out, timeout_ms, 0);
}
