package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// In-process recovery. A session whose transaction cannot end (its
// producer was fenced after a stall or an outage longer than the
// transaction timeout, EndTxn's outcome is unknown, the coordinator is
// gone) cannot go on: franz-go's End rewinds to the session's own view of
// the committed offsets, which is stale once an outcome is unknown. Run
// builds a new session instead of exiting: a new client with the same
// transactional id, whose start-up initialises the producer id at once
// (fencing the old epoch and aborting what it left open) and whose group
// member reads the committed offsets from the broker. A restart would do
// the same; doing it in process keeps the pod, its logs and its metrics,
// and does not crash-loop a whole group through a broker outage.
//
// What a restart cannot fix ends Run: a missing right, and a transactional
// id used by another process, which shows as fencing while this process
// did not stall.

// Reasons a session was rebuilt, the label of session_recreations_total.
const (
	// rebuildFenced: the producer epoch was fenced (PRODUCER_FENCED,
	// INVALID_PRODUCER_EPOCH, INVALID_PRODUCER_ID_MAPPING): the broker
	// aborted a transaction open past the transaction timeout (this
	// process stalled, or the cluster was away that long), or another
	// producer took the transactional id.
	rebuildFenced = "fenced"
	// rebuildUnreachable: the coordinator or the brokers did not answer
	// (a timeout, a connection error, NOT_COORDINATOR past the retries):
	// the transaction's outcome is unknown.
	rebuildUnreachable = "unreachable"
	// rebuildFailed: any other error ending a transaction.
	rebuildFailed = "transaction_failed"
)

// rebuildReasons are every reason, exported at zero from the start.
var rebuildReasons = []string{rebuildFenced, rebuildUnreachable, rebuildFailed}

// Bounds of the back-off between session rebuilds: the first is soon, a
// cluster that stays away is asked every half minute.
const (
	rebuildBackoffMin = 500 * time.Millisecond
	rebuildBackoffMax = 30 * time.Second
)

// Duplicate transactional id: this many fencings of transactions open for
// less than the transaction timeout, within the window, end Run. One such
// fencing can have other causes; two processes sharing an id fence each
// other at every rebuild.
const (
	duplicateFencings = 3
	duplicateWindow   = 10 * time.Minute
)

// errStartTimedOut: a session's start-up did not reach the brokers within
// StartupTimeout.
var errStartTimedOut = errors.New("start-up timed out")

// sessionFailure is an error ending a transaction, which a new session
// may cure.
type sessionFailure struct {
	err error
	// open is how long the transaction had been open when it failed
	// (since Begin, on the monotonic clock, which runs while the process
	// is stopped); negative when no transaction was open.
	open time.Duration
}

func (f *sessionFailure) Error() string { return f.err.Error() }
func (f *sessionFailure) Unwrap() error { return f.err }

// classifySessionError maps an error that ended a session to the reason
// of its rebuild, or says a new session cannot cure it. It is the one
// place these errors are mapped.
func classifySessionError(err error) (reason string, fatal bool) {
	var netErr net.Error
	var kafkaErr *kerr.Error
	var firstRead *kgo.ErrFirstReadEOF
	switch {
	case isAuthError(err):
		return "", true
	case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch),
		errors.Is(err, kerr.InvalidProducerIDMapping):
		return rebuildFenced, false
	case errors.Is(err, errStartTimedOut), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr), errors.Is(err, net.ErrClosed), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &firstRead):
		return rebuildUnreachable, false
	case errors.As(err, &kafkaErr) && kafkaErr.Retriable:
		return rebuildUnreachable, false
	}
	return rebuildFailed, false
}

// fencings tracks the fencings this process cannot explain by a stall.
type fencings struct {
	at []time.Time
}

// add records a fencing of a transaction open for open, at now, and
// returns how many unexplained ones fall within the window. A transaction
// open for the transaction timeout or longer explains its fencing: the
// broker aborted it.
func (f *fencings) add(now time.Time, open, timeout time.Duration) int {
	if open < 0 || open >= timeout {
		return 0
	}
	kept := f.at[:0]
	for _, t := range f.at {
		if now.Sub(t) < duplicateWindow {
			kept = append(kept, t)
		}
	}
	f.at = append(kept, now)
	return len(f.at)
}

// duplicateIDError is Run's error once the transactional id is taken to
// be another process's too.
func duplicateIDError(id string, n int, timeout time.Duration, last error) error {
	return fmt.Errorf("consumer: transactional id %q was fenced %d times within %v, each time in a transaction open for less than "+
		"the transaction timeout (%v), so not because this process stalled: another process likely uses the same transactional id; "+
		"give every instance its own (--transactional-id): %w", id, n, duplicateWindow, timeout, last)
}
