package consumer

import (
	"context"
	"time"
)

// Why a transaction was aborted. GroupTransactSession.End reports an
// abort as committed == false with no error and keeps the cause to
// itself, so the reason is read from what the loop can see: its own
// produce error, its context, and whether the group moved partitions
// (a callback ran, or the generation changed) while the batch was open.

// Reasons, the label of transactions_aborted_total.
const (
	// abortRebalance: the group moved partitions while the batch was open
	// (revoked, lost, a new generation); the batch is read again by
	// whoever owns it now, with nothing to wait for.
	abortRebalance = "rebalance"
	// abortProduce: an output could not be produced.
	abortProduce = "produce_error"
	// abortRefused: the commit was refused without a rebalance seen:
	// the transaction coordinator answered CONCURRENT_TRANSACTIONS (it is
	// still writing the previous transaction's markers) or
	// TRANSACTION_ABORTABLE, the group coordinator moved and franz-go ran
	// out of retries (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE), or the
	// heartbeat before the commit failed. Retrying at once asks the same
	// busy coordinator again: the loop backs off.
	abortRefused = "commit_refused"
	// abortEndFailed: End returned an error (fenced, the outcome of
	// EndTxn unknown, the coordinator unreachable); the session cannot go
	// on.
	abortEndFailed = "end_failed"
	// abortShutdown: shutdown cut the transaction's end short.
	abortShutdown = "shutdown"
)

// abortReasons are every reason, exported at zero from the start so that a
// rate over them is defined before the first abort.
var abortReasons = []string{abortRebalance, abortProduce, abortRefused, abortEndFailed, abortShutdown}

// abortReason maps what is known of an aborted transaction to its reason;
// ctx is the one its End ran under.
func abortReason(ctx context.Context, produceErr, endErr error, rebalanced bool) string {
	switch {
	case ctx.Err() != nil:
		return abortShutdown
	case endErr != nil:
		return abortEndFailed
	case produceErr != nil:
		return abortProduce
	case rebalanced:
		return abortRebalance
	}
	return abortRefused
}

// Bounds of the back-off after a refused commit: from the first, short
// enough that a coordinator busy for a moment costs little, doubling to a
// cap that keeps a member whose coordinator stays away asking a few times
// a minute (the stall check makes it unready meanwhile).
const (
	refusedBackoffMin = 100 * time.Millisecond
	refusedBackoffMax = 5 * time.Second
)

// nextBackoff doubles d within [lo, hi].
func nextBackoff(d, lo, hi time.Duration) time.Duration {
	return min(max(2*d, lo), hi)
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
