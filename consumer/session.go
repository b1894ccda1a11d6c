package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The session's life: startSession builds it and runs the start-up;
// finish ends it within the shutdown budget. Run builds one session, and
// a new one (a new client with the same transactional id) when a
// transaction cannot end: see recovery.go.

// shutdownBudgets splits ShutdownTimeout, the whole time from the signal to
// Run's return, into the time the open transaction has to end, the time
// an abort of it on a fresh context has if that was cut, and the time
// leaving the group has.
func shutdownBudgets(total time.Duration) (end, abort, leave time.Duration) {
	abort = min(5*time.Second, total/4)
	leave = min(5*time.Second, total/4)
	return total - abort - leave, abort, leave
}

// startSession builds a session from ClientOpts and runs the start-up
// (checks, output limits, producer id) within StartupTimeout. The session
// is ready to poll; readiness then follows its group membership.
func (l *loop) startSession(ctx context.Context) (*kgo.GroupTransactSession, error) {
	cfg := l.cfg
	sess, err := kgo.NewGroupTransactSession(append(ClientOpts(cfg), cfg.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("consumer: creating session: %w", err)
	}
	startCtx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	err = startup(startCtx, sess.Client(), cfg)
	if err == nil {
		err = cfg.limits.read(startCtx, kadm.NewClient(sess.Client()), cfg)
	}
	if err != nil {
		if startCtx.Err() != nil && ctx.Err() == nil {
			// The brokers did not answer in time: a rebuild tries again.
			err = fmt.Errorf("consumer: %w (%v): %w", errStartTimedOut, cfg.StartupTimeout, err)
		}
		_, _, leave := shutdownBudgets(cfg.ShutdownTimeout)
		closeSession(sess, leave, cfg)
		return nil, err
	}
	// Ready once started, in the group and not stalled: not before the
	// start-up checks, which can still fail.
	l.health.lastCommit.Store(time.Now().UnixNano())
	// With the watch on, not before the watchlist is loaded either.
	cfg.Metrics.SetReady(func() bool { return (l.watch == nil || l.watch.ready()) && l.health.ready(sess.Client()) })
	return sess, nil
}

// finish ends the session: it aborts the transaction left open when its
// End was cut short (the shutdown budget ran out, or End failed), within
// the abort budget, then leaves the group within the leave budget.
//
// End cut by its context leaves the transaction open on the broker, where
// it stays until the transaction timeout and the broker's next sweep for
// timed-out transactions (10 s by default): read_committed readers of the
// partitions it wrote and the next owner of the offsets it committed wait
// that long. Aborting it takes one request to the transaction coordinator,
// which does not wait on the group the way End's commit does. franz-go
// says not to manage a session's transactions through its client; this is
// the session's last act, the client is closed right after.
func (l *loop) finish(sess *kgo.GroupTransactSession, txnOpen bool) {
	cfg := l.cfg
	_, abortBudget, leaveBudget := shutdownBudgets(cfg.ShutdownTimeout)
	if txnOpen {
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), abortBudget)
		cl := sess.Client()
		err := cl.AbortBufferedRecords(ctx)
		if err == nil {
			err = cl.EndTransaction(ctx, kgo.TryAbort)
		}
		cancel()
		if err != nil {
			cfg.Logger.Error("could not abort the open transaction; the broker aborts it after the transaction timeout",
				"transactional_id", cfg.TransactionalID, "transaction_timeout", cfg.TransactionTimeout, "err", err)
		} else {
			cfg.Logger.Info("aborted the open transaction; its batch will be read again by the group", "took", time.Since(began).Round(time.Millisecond))
		}
	}
	closeSession(sess, leaveBudget, cfg)
}

// closeSession leaves the group and closes the client, giving up after
// budget: Close waits for the group to be left, and leaving waits for an
// ongoing join. A member that could not leave is removed by the group when
// its session times out.
func closeSession(sess *kgo.GroupTransactSession, budget time.Duration, cfg *Config) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	leaveErr := sess.Client().LeaveGroupContext(ctx)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		sess.Close()
	}()
	select {
	case <-closed:
		if leaveErr != nil {
			cfg.Logger.Warn("leaving the group", "err", leaveErr, "took", time.Since(began).Round(time.Millisecond))
		}
	case <-ctx.Done():
		cfg.Logger.Warn("the client did not close within the shutdown budget; the group removes this member when its session times out",
			"budget", budget, "session_timeout", cfg.SessionTimeout, "leave_err", leaveErr)
	}
}
