/* raftfix.h: a work-around for a C-Raft 0.22.1 follower bug, applied at
 * the raft_io level by src/replica/node.c (raft_uv) and by
 * tests/replica/sim_test.c (the in-memory fixture). Header only: the
 * simulation and kvmuxd share it, and only their raft_io wrappers call it.
 *
 * The bug (C-Raft 0.22.1 replication.c, still so upstream in Dec 2025): a
 * follower that compacted its log behind a snapshot of its own (it keeps
 * `trailing` entries) answers an AppendEntries whose prev_log_index lies
 * below its first kept entry with "missing previous entry -> reject"
 * (checkLogMatchingProperty: TrailTermOf is 0 there), although every entry
 * up to its snapshot is committed and so equal to the leader's. The
 * follower also says its log is longer, so the leader steps its next index
 * down by one per round trip:
 *   - if the leader still holds entry 1 (it never compacted, or a restart
 *     loaded raft_uv's whole first segment back), it ends up sending
 *     entries from index 1 with prev_log_index 0; checkConflictingEntries
 *     finds no term at index 1 and takes them all as new, TrailAppend puts
 *     them after the follower's last entry, and replicationAppend then
 *     persists TrailLastIndex - index + 1 entries from a message that holds
 *     fewer: a heap over-read (the debug build asserts in trailEnsureRecord;
 *     the release build crashes in log.c refsDecr or writes garbage);
 *   - otherwise the leader falls back to its snapshot, which the follower
 *     answers with "have more recent snapshot", and the two go round again:
 *     the follower is left behind until the leadership changes.
 * sim_test seed 28787 hit the first (docs/TESTING.md "Deterministic
 * simulation").
 *
 * The fix: entries up to a snapshot this replica stored are committed, so
 * they are the leader's too (Leader Completeness). An AppendEntries whose
 * prev_log_index is below that snapshot's index is rewritten to start at
 * it: the entries it already covers are dropped and prev becomes the
 * snapshot's (index, term), which the follower's check always finds. The
 * follower's answer (prev + entries) is the same index the leader expects.
 * A message from a stale leader is rejected on its term as before. */
#ifndef KVMUX_RAFTFIX_H
#define KVMUX_RAFTFIX_H

#include <raft.h>
#include <string.h>

/* Rewrite AppendEntries message m, received by a replica whose latest
 * stored snapshot (own or installed; 0 if none) is snap_index with term
 * snap_term, so that it does not start below that snapshot. Entries it
 * drops are released (raft_free of the batch and the array when none is
 * left; the entries of one message share one batch, which the remaining
 * ones still point to). Other messages are left alone. Returns 1 if m was
 * rewritten, 0 if not. */
static inline int kvmux_raftfix_trim_append(struct raft_message *m, raft_index snap_index,
                                            raft_term snap_term) {
    struct raft_append_entries *a = &m->append_entries;
    if (m->type != RAFT_APPEND_ENTRIES || snap_index == 0 || snap_term == 0 ||
        a->prev_log_index >= snap_index)
        return 0;
    raft_index drop = snap_index - a->prev_log_index;
    if (drop >= a->n_entries) {
        if (a->n_entries > 0) {
            raft_free(a->entries[0].batch);
            raft_free(a->entries);
        }
        a->entries = NULL;
        a->n_entries = 0;
    } else {
        memmove(a->entries, a->entries + drop, (size_t)(a->n_entries - drop) * sizeof *a->entries);
        a->n_entries -= (unsigned)drop;
    }
    a->prev_log_index = snap_index;
    a->prev_log_term = snap_term;
    return 1;
}

#endif
