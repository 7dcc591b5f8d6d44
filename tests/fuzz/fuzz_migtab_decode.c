/* libFuzzer harness for the migration table decoder (src/cluster/migtab.c,
 * docs/PROTOCOL.md 18.6, the KVMG answer of CLUSTER migrations / mwatch).
 *
 * Checks the contract, not just "does not crash":
 *   - kvmux_migtab_decode accepts only canonical encodings: an accepted
 *     input re-encodes to exactly the same bytes, and every record obeys
 *     the rules the decoder promises (ascending ids, ranges, groups,
 *     states, acks, end epochs, printable reasons);
 *   - a refusal always comes with a reason.
 * The input is copied into a heap buffer of exactly len bytes, so ASan
 * catches any read past the end. Not part of ctest (migrate_fsm_test runs
 * a bounded mutation loop in every build); build with
 *   clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *         -Isrc/proto -Isrc/cluster tests/fuzz/fuzz_migtab_decode.c \
 *         src/cluster/[all .c files] src/proto/[all .c files]
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "migtab.h"

static kvmux_migtab t;
static uint8_t out[KVMUX_MIG_WIRE_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
    uint8_t *p = fuzz_exact_copy(data, len);
    if (!p) return 0;
    char err[256];
    err[0] = '\0';
    if (kvmux_migtab_decode(&t, p, len, err, sizeof err) == 0) {
        if (t.n > KVMUX_MIG_MAX_RECORDS) abort();
        for (uint16_t i = 0; i < t.n; i++) {
            const kvmux_migrec *r = &t.rec[i];
            if (r->id == 0 || (i && r->id <= t.rec[i - 1].id) || r->first > r->last ||
                r->last >= KVMUX_SLOTS || !r->src || !r->dst || r->src == r->dst ||
                r->state < 1 || r->state > 3 || r->acks > 3 ||
                (r->end_epoch && r->state != KVMUX_MIG_COMMITTED) ||
                r->reason_len > KVMUX_MIG_REASON_MAX || strlen(r->reason) != r->reason_len)
                abort();
        }
        size_t n = kvmux_migtab_encode(&t, out, sizeof out);
        fuzz_same_bytes(out, n, p, len);
    } else {
        fuzz_refusal_has_reason(err);
    }
    free(p);
    return 0;
}
