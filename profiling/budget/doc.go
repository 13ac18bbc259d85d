// Package budget bounds the memory a long-running caller spends on bytes
// that come back from targets: profiles, recordings, agent logs. Each of
// those is written by the target, which in a cluster is a pod whose own
// user is the least trusted party on the node; a file it swaps for a
// 900 MiB sparse one must cost one dropped window, not the caller.
//
// A Budget is a number of bytes shared by everything in flight; a Buffer
// is one such thing, charged for every byte it holds until Released.
// Over budget is an error (ErrExhausted) the caller counts and drops,
// never an allocation. Limit reads the caller's own memory limit from its
// cgroup, so a node agent can size its budget from what it may use.
package budget
