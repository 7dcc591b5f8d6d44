/* SipHash-2-4 (Aumasson & Bernstein): a keyed 64-bit hash for hash tables
 * whose keys come from the network. With a secret random key per process an
 * attacker cannot precompute colliding keys, so chains stay short. */
#ifndef KVMUX_SIPHASH_H
#define KVMUX_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_SIPHASH_KEY_LEN 16

/* SipHash-2-4 of data[0..len) under the 16-byte key k. Reads exactly len
 * bytes; data may be NULL when len is 0. Thread-safe: yes (pure). */
uint64_t kvmux_siphash24(const uint8_t k[KVMUX_SIPHASH_KEY_LEN],
                         const void *data, size_t len);

/* Fill out[0..len) with random bytes from getrandom(2), falling back to
 * /dev/urandom. Returns 0, or -1 if neither source works (the caller
 * decides; a hash table must not silently use a predictable key).
 * Thread-safe: yes. */
int kvmux_random_bytes(void *out, size_t len);

#endif
