package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

type loop struct {
	cfg  *Config
	sess *kgo.GroupTransactSession
	pool *matcher.Pool
	// watch loads the watchlist into the pool's matcher; nil when the
	// watch is off. watchCtx bounds its life (Run's).
	watch    *watchLoader
	watchCtx context.Context
	limits   *outputLimits
	health   *health
	// unknownSince and unknownLast: since when, and when last, each source
	// topic was reported unknown (see fetchErrors).
	unknownSince, unknownLast map[string]time.Time
	sizer                     *fetchSizer
	// started, if set, is called once, when the first session has started
	// (the topics are checked), and then cleared.
	started func()

	values  [][]byte
	results []matcher.Result
	// What the open transaction holds, counted once it commits.
	pendingFindings []pendingFinding
	pendingClasses  []string
	// pendingWatches: the watch entries produced; watchRefused: the
	// findings that open a watch and of which no entry could be made;
	// watchSkipped: why each finding whose watch was open already, or
	// ended by an operator, wrote none (an outcome of watch_entries_total).
	pendingWatches []pendingWatch
	watchRefused   int
	watchSkipped   []string
	// The no-gap protocol (nogap.go): the markers of the open transaction,
	// and those this member committed, by key, with their offsets.
	pendingMarks []pendingMark
	marked       map[markKey]int64

	// txnOpen is set from Begin until End returns without an error;
	// txnBegan is when the last Begin returned, zero if it failed.
	txnOpen  bool
	txnBegan time.Time

	// speaksV2: the session's client uses transactions v2 (see txnv2.go);
	// produced: outputs produced in the open transaction.
	speaksV2 bool
	produced int

	produceMu  sync.Mutex
	produceErr error
	rejected   []rejection // outputs the last flush refused
}

// run starts a session and consumes with it, building a new one when a
// transaction cannot end (see recovery.go), until ctx is cancelled or an
// error no new session can cure.
func (l *loop) run(ctx context.Context) error {
	sess, err := l.startSession(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped during start-up
		}
		return err
	}
	if l.started != nil {
		l.started()
		l.started = nil
	}
	if l.watch != nil {
		// After the start-up, which checks (or creates) the topic, and
		// before the first poll: see watchLoader.
		if err := l.watch.start(l.watchCtx); err != nil || ctx.Err() != nil {
			l.finish(sess, false)
			return err
		}
	}
	var backoff time.Duration
	var fenced fencings
	for {
		began := l.cfg.Stats.Committed.Load()
		err := l.runSession(ctx, sess)
		var failure *sessionFailure
		if err == nil || !errors.As(err, &failure) {
			// A transaction is open from Begin until End returns
			// without error; finish aborts one left open.
			l.finish(sess, l.txnOpen)
			return err
		}
		reason, fatal := classifySessionError(err)
		if !fatal && reason == rebuildFenced {
			if n := fenced.add(time.Now(), failure.open, l.cfg.TransactionTimeout); n >= duplicateFencings {
				err, fatal = duplicateIDError(l.cfg.TransactionalID, n, l.cfg.TransactionTimeout, err), true
			}
		}
		if fatal {
			l.finish(sess, l.txnOpen)
			return err
		}
		if l.cfg.Stats.Committed.Load() > began {
			backoff = 0 // the session did work: this is a new episode
		}
		sess, err = l.rebuild(ctx, sess, reason, failure, &backoff)
		if sess == nil {
			return err // nil once ctx is cancelled
		}
	}
}

// rebuild replaces a failed session: it closes the old one (leaving the
// group; what its transaction left open the new producer id aborts),
// then starts new ones after a growing back-off until one starts, ctx is
// cancelled (nil, nil), or a start-up fails for a reason other than
// unreachable brokers. The instance is not ready meanwhile.
func (l *loop) rebuild(ctx context.Context, old *kgo.GroupTransactSession, reason string, failure *sessionFailure, backoff *time.Duration) (*kgo.GroupTransactSession, error) {
	cfg := l.cfg
	cfg.Metrics.SetReady(func() bool { return false })
	cfg.Metrics.SessionRecreations.WithLabelValues(reason).Inc()
	_, _, leave := shutdownBudgets(cfg.ShutdownTimeout)
	closeSession(old, leave, cfg)
	l.txnOpen = false
	refusals := 0
	for attempt := 1; ; attempt++ {
		*backoff = nextBackoff(*backoff, rebuildBackoffMin, rebuildBackoffMax)
		attrs := []any{"reason", reason, "err", failure.err, "transactional_id", cfg.TransactionalID, "attempt", attempt, "backoff", *backoff}
		if failure.open >= 0 {
			attrs = append(attrs, "transaction_open_for", failure.open.Round(time.Millisecond))
		}
		cfg.Logger.Warn("rebuilding the Kafka session with the same transactional id", attrs...)
		sleepCtx(ctx, *backoff)
		if ctx.Err() != nil {
			return nil, nil
		}
		sess, err := l.startSession(ctx)
		switch {
		case err == nil:
			cfg.Logger.Info("session rebuilt", "reason", reason, "attempts", attempt)
			return sess, nil
		case ctx.Err() != nil:
			return nil, nil
		case isAuthError(err):
			return nil, err
		case !errors.Is(err, errStartTimedOut):
			// A start-up check that got an answer and refused (a topic
			// missing, a metadata error) is retried a few times: brokers
			// just restarted answer so for a moment. One that lasts is
			// what a restart would not cure either.
			refusals++
			if refusals >= maxStartRefusals {
				return nil, err
			}
		}
		failure = &sessionFailure{err: err, open: -1}
	}
}

// maxStartRefusals bounds the start-ups of a rebuild refused by a check
// (not timed out) before Run gives up.
const maxStartRefusals = 5

// runSession consumes with sess until ctx is cancelled (nil), a
// transaction cannot end (a *sessionFailure), or another error.
func (l *loop) runSession(ctx context.Context, sess *kgo.GroupTransactSession) error {
	l.sess = sess
	log := l.cfg.Logger
	log.Info("consuming", "topics", l.cfg.SourceTopics, "group", l.cfg.Group,
		"transactional_id", l.cfg.TransactionalID, "alerts", l.cfg.AlertsTopic, "dlq", l.cfg.DLQTopic,
		"workers", l.pool.Workers(), "max_batch", l.cfg.MaxBatch,
		"memory_limit", l.cfg.MemoryLimit, "fetch_max_bytes", l.sizer.maxBytes, "fetch_max_partition_bytes", l.sizer.partitionSize)

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go l.health.watch(watchCtx, sess.Client())

	l.speaksV2 = false
	if l.cfg.TransactionsV2 {
		v2, err := speaksTransactionsV2(ctx, sess.Client())
		if err != nil {
			log.Warn("cannot tell whether the brokers speak transactions v2; a batch that produces nothing may be aborted and read again", "err", err)
		}
		l.speaksV2 = v2
		log.Info("transactions v2 asked for", "brokers_speak_it", v2)
	}

	// The batch in flight is finished with a context that outlives ctx by
	// the end budget: a signal must not cut a transaction in half, nor
	// wait on it past the orchestrator's patience.
	endBudget, _, _ := shutdownBudgets(l.cfg.ShutdownTimeout)
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(endBudget, cancelWork) })
	defer stop()

	// A watchlist loader that stops on an error ends the session: the
	// poll waiting for records is cut short.
	pollCtx := ctx
	if l.watch != nil {
		var cancelPoll context.CancelFunc
		pollCtx, cancelPoll = context.WithCancel(ctx)
		defer cancelPoll()
		go func() {
			select {
			case <-l.watch.done:
				cancelPoll()
			case <-pollCtx.Done():
			}
		}()
	}

	failed := 0               // batches aborted in a row for produce errors
	var refused time.Duration // the last back-off after a refused commit
	for {
		var records []*kgo.Record
		var skipped []skip
		// With markers due (an entry loaded, a partition assigned), the
		// next batch carries them, and when no record comes soon a
		// transaction writes them alone: the case worker waits on them.
		// The signals first: a change after marksDue must wake the poll.
		snap, tick := l.watchSnapshot()
		moved := l.health.assignedSignal()
		marks := len(l.marksDue(snap)) > 0
		var thisPoll context.Context
		stopPoll := context.CancelFunc(func() {})
		switch {
		case marks:
			// Wait briefly for records to carry them (markerCoalesce).
			thisPoll, stopPoll = context.WithTimeout(pollCtx, markerCoalesce)
		case l.watch != nil:
			thisPoll, stopPoll = l.pollContext(pollCtx, snap.listOrNil(), tick, moved)
		default:
			thisPoll = pollCtx
		}
		fetches := l.sess.PollRecords(thisPoll, l.cfg.MaxBatch)
		cut := thisPoll.Err() != nil && ctx.Err() == nil // woken, or the markers' wait over
		stopPoll()
		if err := l.watchFailed(); err != nil {
			return err
		}
		if ctx.Err() != nil || fetches.IsClientClosed() {
			l.logStopping(ctx)
			return nil
		}
		if !(cut && len(fetches.Records()) == 0) {
			if err := l.fetchErrors(fetches); err != nil {
				return err
			}
			records = fetches.Records()
		}
		l.health.setBehind(len(records) > 0 && behindAfter(fetches, l.cfg.MaxBatch))
		switch {
		case len(records) > 0:
			l.sizer.adjust(l.sess.Client(), l.cfg.Logger)
			skipped = l.deletedBeforeRead(fetches)
		case marks:
			// Nothing came: a transaction of the markers alone.
		case cut:
			continue // the loader or an assignment woke the poll
		default:
			if len(fetches) > 0 {
				// The client retries on its own; do not spin on the errors
				// it reports meanwhile.
				select {
				case <-time.After(250 * time.Millisecond):
				case <-ctx.Done():
				}
			}
			continue
		}
		committed, reason, err := l.transact(work, records)
		if err != nil && ctx.Err() != nil {
			// Shutdown cut the transaction's end short: finish aborts it.
			log.Warn("shutdown cut the open transaction short", "err", err, "end_budget", endBudget)
			l.logStopping(ctx)
			return nil
		}
		if err != nil {
			open := time.Duration(-1)
			if !l.txnBegan.IsZero() {
				open = time.Since(l.txnBegan)
			}
			return &sessionFailure{err: err, open: open}
		}
		if committed {
			failed, refused = 0, 0
			l.health.committed(time.Now())
			l.countSkipped(skipped)
			continue
		}
		switch reason {
		case abortRebalance:
			refused = 0 // the batch is read again by its new owner: nothing to wait for
		case abortRefused:
			// The coordinator that refused is asked again only after a
			// growing pause: re-polling at once replays the batch into
			// the same refusal as fast as the broker answers.
			refused = nextBackoff(refused, refusedBackoffMin, refusedBackoffMax)
			log.Warn("transaction aborted without a rebalance: the commit was refused; replaying the batch after a pause",
				"reason", reason, "backoff", refused)
			sleepCtx(ctx, refused)
		case abortProduce:
			produceErr := l.producedErr()
			failed++
			if failed >= maxFailedBatches {
				return fmt.Errorf("consumer: %d batches in a row aborted, last produce error: %w", failed, produceErr)
			}
			backoff := time.Duration(failed) * 500 * time.Millisecond
			log.Warn("batch aborted after a produce error, replaying", "err", produceErr, "backoff", backoff)
			sleepCtx(ctx, backoff)
		}
	}
}

// watchFailed returns the error that stopped the watchlist loader, if it
// stopped on one: this instance no longer learns of new watches, and a
// restart (whose start-up checks name what is missing) is better than
// consuming blind to them.
func (l *loop) watchFailed() error {
	if l.watch == nil {
		return nil
	}
	if err := l.watch.failed(); err != nil {
		return fmt.Errorf("consumer: the watchlist loader stopped, and this instance would miss the users watched from now on: %w", err)
	}
	return nil
}

func (l *loop) logStopping(ctx context.Context) {
	st := l.cfg.Stats
	l.cfg.Logger.Info("stopping", "reason", context.Cause(ctx),
		"records", st.Records.Load(), "findings", st.Findings.Load(), "dead_letters", st.DeadLetters.Load(),
		"transactions_committed", st.Committed.Load(), "transactions_aborted", st.Aborted.Load())
}

// transact evaluates one polled batch and ends its transaction. It reports
// whether the transaction committed and, if not, why (see abortReason);
// an error is not retryable (see GroupTransactSession.End).
func (l *loop) transact(ctx context.Context, records []*kgo.Record) (bool, string, error) {
	began := time.Now()
	moves := l.health.moves.Load()
	_, generation := l.sess.Client().GroupMetadata()
	if err := l.sess.Begin(); err != nil {
		l.txnBegan = time.Time{}
		return false, "", fmt.Errorf("consumer: beginning transaction: %w", err)
	}
	l.txnOpen = true
	l.txnBegan = began
	l.setProduceErr(nil)
	l.produced = 0
	l.takeRejected() // left by a transaction whose flush failed
	n := len(records)
	if cap(l.values) < n {
		l.values = make([][]byte, n)
		l.results = make([]matcher.Result, n)
	}
	l.values, l.results = l.values[:n], l.results[:n]
	// The batch's records and results must not outlive it: the next fetch
	// arrives while they are matched, and the budget has room for two.
	defer func() {
		clear(l.values)
		clear(l.results)
	}()
	var bytes int64
	for i, r := range records {
		l.values[i] = r.Value
		bytes += int64(len(r.Value))
	}
	// One snapshot of the watchlist per transaction: the batch is matched
	// with the list the markers are written for (nogap.go).
	snap, _ := l.watchSnapshot()
	m := l.cfg.Metrics
	phase := time.Now()
	observe := func(name string) {
		now := time.Now()
		m.BatchPhase.WithLabelValues(name).Observe(now.Sub(phase).Seconds())
		phase = now
	}
	if l.watch != nil {
		l.pool.MatchWatchlist(snap.listOrNil(), l.values, l.results)
	} else {
		l.pool.Match(l.values, l.results)
	}
	observe("match")
	// Under transactions v2 the batch's first write opens the transaction
	// at the broker; opened before the outputs (findings, dead letters,
	// the watch's markers) are produced, their produce does not wait at
	// the broker for the previous transaction's markers (see txnv2.go).
	due := l.marksDue(snap)
	opened := l.speaksV2 && (hasOutputs(l.results) || len(due) > 0)
	if opened {
		openForOffsets(ctx, l.sess.Client(), l.cfg.TransactionalID, l.cfg.Group)
		observe("open")
	}
	if len(due) > 0 {
		l.writeMarks(ctx, due, records)
		observe("markers")
	} else {
		l.pendingMarks = l.pendingMarks[:0]
	}

	detected := l.cfg.Now()
	l.pendingFindings = l.pendingFindings[:0]
	l.pendingClasses = l.pendingClasses[:0]
	l.pendingWatches = l.pendingWatches[:0]
	l.watchRefused = 0
	l.watchSkipped = l.watchSkipped[:0]
	var oldest time.Time
	if n > 0 {
		oldest = records[0].Timestamp
	}
	for i, res := range l.results {
		r := records[i]
		if r.Timestamp.Before(oldest) {
			oldest = r.Timestamp
		}
		src := sourceOf(r)
		for _, f := range res.Findings {
			out, err := producer.EncodeRecord(l.cfg.Encoder, snap.asOpened(f), src, detected, l.cfg.AlertsTopic)
			if err == nil {
				out, err = producer.FitAlert(l.cfg.Encoder, out, int(l.limits.alerts.Load()))
			}
			if err != nil {
				// An alert too large for its topic even cut, or one
				// that cannot be encoded (a bug, not bad input): the
				// record goes where a person finds it.
				res.Err = errors.Join(res.Err, err)
				continue
			}
			l.pendingFindings = append(l.pendingFindings, pendingFinding{rule: f.Rule.Key, at: r.Timestamp})
			l.produce(ctx, output{rec: out, source: r, finding: len(l.pendingFindings) - 1, watch: -1})
			if l.cfg.watching() && opensWatch[f.Rule.Key] {
				l.openWatch(ctx, f, r, detected)
			}
		}
		if res.Err != nil {
			dead := producer.DeadLetter(r.Value, r.Key, src, res.Err, l.cfg.DLQTopic, int(l.limits.dlq.Load()))
			l.produce(ctx, output{rec: dead, source: r, finding: -1, watch: -1})
			l.pendingClasses = append(l.pendingClasses, producer.Classify(res.Err))
			l.cfg.Logger.Warn("dead letter", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", res.Err)
		}
	}

	// End flushes too, but the produce results must be known before
	// deciding whether to try a commit, and a record the broker refused
	// replaced.
	if err := l.sess.Client().Flush(ctx); err != nil {
		l.setProduceErr(fmt.Errorf("flushing: %w", err))
	} else if refused := l.takeRejected(); len(refused) > 0 {
		if err := l.settle(ctx, refused); err != nil {
			l.setProduceErr(err)
		}
	}
	observe("produce")
	produceErr := l.producedErr()
	try := kgo.TryCommit
	if produceErr != nil {
		try = kgo.TryAbort
	}
	if try == kgo.TryCommit && l.speaksV2 && l.produced == 0 && !opened {
		openForOffsets(ctx, l.sess.Client(), l.cfg.TransactionalID, l.cfg.Group)
		observe("open")
	}
	committed, err := l.sess.End(ctx, try)
	l.txnOpen = err != nil
	observe("end")
	m.BatchDuration.Observe(time.Since(began).Seconds())
	var reason string
	if err != nil || !committed {
		_, nowGeneration := l.sess.Client().GroupMetadata()
		reason = abortReason(ctx, produceErr, err, l.health.moves.Load() != moves || nowGeneration != generation)
		l.cfg.Stats.Aborted.Add(1)
		m.Transactions.WithLabelValues("aborted").Inc()
		m.TransactionsAborted.WithLabelValues(reason).Inc()
	}
	if err != nil {
		return false, reason, fmt.Errorf("consumer: ending transaction: %w", err)
	}
	if !committed {
		l.cfg.Logger.Info("transaction aborted; the batch will be read again", "records", n, "reason", reason, "produce_err", produceErr)
		return false, reason, nil
	}
	var findings int64
	for _, f := range l.pendingFindings {
		if !f.dropped {
			findings++
		}
	}
	st := l.cfg.Stats
	st.Committed.Add(1)
	st.Records.Add(int64(n))
	st.Bytes.Add(bytes)
	st.Findings.Add(findings)
	st.DeadLetters.Add(int64(len(l.pendingClasses)))

	now := time.Now()
	m.Transactions.WithLabelValues("committed").Inc()
	m.RecordsConsumed.Add(float64(n))
	m.BytesConsumed.Add(float64(bytes))
	if n > 0 {
		m.CommitLatency.Observe(now.Sub(oldest).Seconds())
	}
	l.markedCommitted(snap)
	for _, f := range l.pendingFindings {
		if f.dropped {
			continue
		}
		m.Findings.WithLabelValues(f.rule).Inc()
		m.DetectionLatency.Observe(now.Sub(f.at).Seconds())
	}
	for _, class := range l.pendingClasses {
		m.DeadLetters.WithLabelValues(class).Inc()
	}
	refused := l.watchRefused
	for _, w := range l.pendingWatches {
		if w.dropped {
			refused++
		} else {
			m.WatchEntries.WithLabelValues("written").Inc()
		}
	}
	m.WatchEntries.WithLabelValues("refused").Add(float64(refused))
	for _, outcome := range l.watchSkipped {
		m.WatchEntries.WithLabelValues(outcome).Inc()
	}
	return true, "", nil
}

// hasOutputs reports whether a batch's results produce anything: a
// finding or a dead letter.
func hasOutputs(results []matcher.Result) bool {
	for _, res := range results {
		if len(res.Findings) > 0 || res.Err != nil {
			return true
		}
	}
	return false
}

// pendingFinding is what the metrics need of a finding once it commits.
type pendingFinding struct {
	rule string
	at   time.Time // the source record's timestamp
	// dropped: its alert was refused, and the source record is a dead
	// letter instead (see settle).
	dropped bool
}

// setProduceErr keeps the first produce error of a transaction; nil resets
// it when a transaction begins.
func (l *loop) setProduceErr(err error) {
	l.produceMu.Lock()
	defer l.produceMu.Unlock()
	if err == nil || l.produceErr == nil {
		l.produceErr = err
	}
}

func (l *loop) producedErr() error {
	l.produceMu.Lock()
	defer l.produceMu.Unlock()
	return l.produceErr
}

// behindAfter reports whether a poll left more than a batch (maxBatch) to
// read on the partitions it returned records of: their last stable offsets
// (high watermarks, where the broker gives none) are that far past its last
// records. A loop catching up on a backlog is behind; one that keeps up
// with its traffic is not, nor one whose poll returned nothing. (A poll cut
// at maxBatch says nothing alone: the traffic may have ended there.)
func behindAfter(fetches kgo.Fetches, maxBatch int) bool {
	var left int64
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		end := p.LastStableOffset
		if end < 0 {
			end = p.HighWatermark
		}
		if n := end - (p.Records[len(p.Records)-1].Offset + 1); n > 0 {
			left += n
		}
	})
	return left > int64(maxBatch)
}
