package consumer

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/matcher/lookback"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// The case worker writes the look-back of issue 13: for every watch entry
// (a quarantined user, written to the watchlist topic in the transaction of
// the finding that opened it) the context document, the user's activity in
// the window before the finding, to the context topic, keyed by the alert's
// id.
//
// Exactly once: the worker is a second GroupTransactSession, with a group
// and a transactional id of its own (the service's with ".context"), that
// consumes the watchlist topic one entry per transaction. The document and
// the entry's offset are committed in ONE transaction, so a crash or an
// abort between the look-back and the commit leaves the entry uncommitted
// and the document invisible to read_committed readers; the entry is read
// again, by this instance or the next owner of its partition, and the
// look-back re-run. Its key is the alert id, which does not depend on the
// run, so a compacted context topic and a SIEM deduplicating on the key see
// one document even from a reader that is not read_committed.
//
// The look-back reads the source topics directly, not through the group:
// ListOffsets by timestamp gives, on every partition, the first record
// written at or after the window's start (less lookbackSlack), and each
// partition is read from there up to its last stable offset as of the
// job's start; the Summarizer keeps only what is in the window by event
// time. Reads use clients of their own (no group, read_committed), at most
// LookbackPartitions partitions at once and LookbackBytesPerSecond in all,
// so that the main loop, which shares the brokers and the process, keeps
// its latency. Only what matcher.IdentityFilter passes is decoded; a key
// the look-back learns for the user costs another pass (lookback.Collect),
// over the same offsets.
//
// Where retention has deleted the start of the window (the partition's log
// start is where the timestamp search landed, and records were deleted
// before it), the document says the window is cut and from when the
// source topics hold it.

// Defaults for Config.
const (
	DefaultLookbackPartitions     = 2
	DefaultLookbackBytesPerSecond = 32 << 20
)

// lookbackSlack is read before the window's start: ListOffsets searches
// Kafka timestamps, which a producer with a slow clock may set earlier than
// the event's time, and a record read for nothing costs little.
const lookbackSlack = 5 * time.Minute

// lookbackStall bounds how long a partition read may get no record before
// the look-back gives up (and the entry is read again).
const lookbackStall = 30 * time.Second

// WatchlistTopic and ContextTopic are the case file's topics, named after
// the alerts topic.
func WatchlistTopic(alerts string) string { return alerts + ".watchlist" }

// ContextTopic is where context documents go; see WatchlistTopic.
func ContextTopic(alerts string) string { return alerts + ".context" }

// caseWorker is the case worker of one instance.
type caseWorker struct {
	cfg *Config // the service's
	// session is the configuration the worker's session is built from:
	// the service's, with the group, transactional id and topic of its own.
	session Config
	budget  *byteBudget
	// matchers by rule id: the finding an entry names is matched again
	// from its source record, with its rule alone.
	mu       sync.Mutex
	matchers map[string]*matcher.Matcher
	// gap is the matcher of the service's rules, for the post-quarantine
	// findings below the loop's markers (nogap.go).
	gap *matcher.Matcher
	// watch is the instance's watchlist loader, whose markers the worker
	// waits for; nil (tests of the document alone) skips the gap.
	watch *watchLoader

	// maxDoc is the most bytes a context document may have: the context
	// topic's max.message.bytes, read when a session starts, less the
	// record's key, headers and framing.
	maxDoc atomic.Int64

	// testBeforeEnd, if set, is called after the document is produced and
	// flushed and before the transaction ends: errCrashed ends the session
	// there, without End (a crash); another error aborts the transaction.
	testBeforeEnd func() error
}

func newCaseWorker(cfg *Config) *caseWorker {
	s := *cfg
	s.Group = cfg.Group + ".context"
	s.TransactionalID = cfg.TransactionalID + ".context"
	s.SourceTopics = []string{cfg.watchlistTopic()}
	s.health = newHealth(&s)
	s.limits, s.sizer = nil, nil // the loop's output limits and fetch sizes are the loop's
	s.kafkaHooks = cfg.Metrics.KafkaContext
	return &caseWorker{
		cfg: cfg, session: s, matchers: map[string]*matcher.Matcher{},
		budget: &byteBudget{
			rate: float64(cmp.Or(cfg.LookbackBytesPerSecond, DefaultLookbackBytesPerSecond)),
			slow: func() bool { return cfg.health != nil && cfg.health.behind.Load() },
		},
	}
}

// run runs sessions until ctx is cancelled: one that fails is closed and
// replaced after a growing pause, and the entry it held is read again. The
// worker never ends Run: the alerts go on without their context.
func (w *caseWorker) run(ctx context.Context) {
	var backoff time.Duration
	for ctx.Err() == nil {
		err := w.runSession(ctx)
		if ctx.Err() != nil {
			return
		}
		backoff = nextBackoff(backoff, rebuildBackoffMin, rebuildBackoffMax)
		w.cfg.Logger.Error("case worker: session failed; starting a new one", "err", err, "backoff", backoff)
		sleepCtx(ctx, backoff)
	}
}

// errCrashed ends a session as a crash would: testBeforeEnd returned it.
var errCrashed = errors.New("consumer: case worker crashed (test)")

func (w *caseWorker) runSession(ctx context.Context) error {
	cfg := &w.session
	sess, err := kgo.NewGroupTransactSession(append(ClientOpts(cfg), cfg.ClientOpts...)...)
	if err != nil {
		return fmt.Errorf("consumer: case worker: creating session: %w", err)
	}
	_, abortBudget, leave := shutdownBudgets(cfg.ShutdownTimeout)
	open := false
	defer func() {
		if open {
			actx, cancel := context.WithTimeout(context.Background(), abortBudget)
			_, _ = sess.End(actx, kgo.TryAbort)
			cancel()
		}
		closeSession(sess, leave, cfg)
	}()
	v2 := false
	if cfg.TransactionsV2 {
		v2, _ = speaksTransactionsV2(ctx, sess.Client())
	}
	w.readLimit(ctx, sess.Client())
	cfg.Logger.Info("case worker: consuming", "topic", cfg.SourceTopics[0], "group", cfg.Group,
		"transactional_id", cfg.TransactionalID, "context_topic", ContextTopic(w.cfg.AlertsTopic))
	var retry time.Duration
	for {
		fetches := sess.PollRecords(ctx, 1)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		var fatal error
		fetches.EachError(func(topic string, partition int32, err error) {
			class, isFatal := classifyFetchError(err)
			cfg.Logger.Warn("case worker: fetch error", "topic", topic, "partition", partition, "class", class, "err", err)
			if isFatal && fatal == nil {
				fatal = fmt.Errorf("consumer: case worker: fetching %q: %w", topic, err)
			}
		})
		if fatal != nil {
			return fatal
		}
		records := fetches.Records()
		if len(records) == 0 {
			if len(fetches) > 0 {
				sleepCtx(ctx, 250*time.Millisecond)
			}
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("consumer: case worker: beginning transaction: %w", err)
		}
		open = true
		began := time.Now()
		out, outcome, err := w.job(ctx, records[0])
		gap := 0 // post-quarantine alerts of the gap (nogap.go)
		for _, r := range out {
			if r.Topic == w.cfg.AlertsTopic {
				gap++
			}
		}
		if err != nil {
			// Read again after a pause: the source may be back.
			w.cfg.Metrics.Lookbacks.WithLabelValues("failed").Inc()
			retry = nextBackoff(retry, refusedBackoffMin, rebuildBackoffMax)
			cfg.Logger.Warn("case worker: look-back failed; the entry will be read again", "offset", records[0].Offset, "err", err, "backoff", retry)
			_, endErr := sess.End(ctx, kgo.TryAbort)
			open = endErr != nil
			if endErr != nil && ctx.Err() == nil {
				return fmt.Errorf("consumer: case worker: aborting: %w", endErr)
			}
			sleepCtx(ctx, retry)
			continue
		}
		e := kgo.AbortingFirstErrPromise(sess.Client())
		for _, r := range out {
			sess.Produce(ctx, r, e.Promise())
		}
		if err := sess.Client().Flush(ctx); err != nil {
			return fmt.Errorf("consumer: case worker: flushing: %w", err)
		}
		try := kgo.TransactionEndTry(e.Err() == nil)
		if w.testBeforeEnd != nil {
			if err := w.testBeforeEnd(); errors.Is(err, errCrashed) {
				open = false // a crash: nothing ends the transaction
				return err
			} else if err != nil {
				try = kgo.TryAbort
			}
		}
		if try == kgo.TryCommit && v2 && len(out) == 0 {
			openForOffsets(ctx, sess.Client(), cfg.TransactionalID, cfg.Group)
		}
		committed, err := sess.End(ctx, try)
		open = err != nil
		if err != nil {
			return fmt.Errorf("consumer: case worker: ending transaction: %w", err)
		}
		if !committed {
			// Read again after a pause: at once would produce into the
			// same refusal as fast as the broker answers.
			w.cfg.Metrics.Lookbacks.WithLabelValues("failed").Inc()
			retry = nextBackoff(retry, refusedBackoffMin, rebuildBackoffMax)
			cfg.Logger.Warn("case worker: transaction aborted; the entry will be read again", "offset", records[0].Offset, "produce_err", e.Err(), "backoff", retry)
			if errors.Is(e.Err(), kerr.MessageTooLarge) {
				w.readLimit(ctx, sess.Client()) // lowered since the session started
			}
			sleepCtx(ctx, retry)
			continue
		}
		retry = 0
		w.cfg.Metrics.Lookbacks.WithLabelValues(outcome).Inc()
		w.cfg.Metrics.GapFindings.Add(float64(gap))
		if outcome == "written" {
			w.cfg.Metrics.LookbackDuration.Observe(time.Since(began).Seconds())
			cfg.Logger.Info("case worker: context document written", "alert_id", string(out[0].Key), "gap_findings", gap,
				"took", time.Since(began).Round(time.Millisecond))
		}
	}
}

// job runs the look-back of one watchlist record. It returns the context
// document to produce (nil for none) and the outcome to count once it
// commits; an error means the entry is to be read again.
func (w *caseWorker) job(ctx context.Context, rec *kgo.Record) ([]*kgo.Record, string, error) {
	log := w.cfg.Logger
	if !bytes.HasPrefix(rec.Key, []byte(producer.WatchKeyPrefix)) {
		// Reserved for other state in the same topic.
		log.Debug("case worker: skipping a watchlist record that is not an entry", "key", string(rec.Key), "offset", rec.Offset)
		return nil, "other_key", nil
	}
	if rec.Value == nil {
		log.Info("case worker: watch ended", "key", string(rec.Key))
		return nil, "ended", nil
	}
	entry, err := producer.DecodeWatchEntry(rec.Key, rec.Value)
	if err != nil {
		log.Error("case worker: skipping a watchlist record that is not a watch entry", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return nil, "bad_entry", nil
	}
	if dup, err := w.readAgain(ctx, &entry, rec); err != nil {
		return nil, "", err
	} else if dup {
		log.Info("case worker: the same quarantine's entry again; its look-back ran for the first", "alert_id", entry.AlertID,
			"partition", rec.Partition, "offset", rec.Offset)
		return nil, "duplicate", nil
	}
	// An entry's look-back of zero is the service's.
	lb := cmp.Or(entry.Lookback, w.cfg.ContextLookback, lookback.DefaultLookback)
	log.Info("case worker: look-back started", "alert_id", entry.AlertID, "account", entry.Account, "user", entry.UserName,
		"opened_at", entry.OpenedAt, "lookback", lb, "watchlist_offset", rec.Offset)
	gap, err := w.gapAlerts(ctx, &entry, rec)
	if err != nil {
		return nil, "", err
	}
	doc, err := w.lookback(ctx, &entry, lb)
	if errors.Is(err, errDocTooLarge) {
		log.Error("case worker: the context document cannot be cut to fit the context topic; the entry is committed without one",
			"alert_id", entry.AlertID, "err", err)
		return gap, "too_large", nil // the gap's findings go out all the same
	}
	if err != nil {
		return nil, "", err
	}
	// The record's timestamp is left to the client (the time of the
	// produce): retention of the context topic runs from when the document
	// was written, as the alerts' from their detection.
	return append([]*kgo.Record{{
		Topic: ContextTopic(w.cfg.AlertsTopic), Key: []byte(entry.AlertID), Value: doc,
		Headers: []kgo.RecordHeader{
			{Key: producer.HeaderContentType, Value: []byte(producer.ContentTypeJSON)},
			{Key: producer.HeaderRuleID, Value: []byte(entry.RuleID)},
			{Key: producer.HeaderSchemaVersion, Value: []byte(w.cfg.Encoder.SchemaVersion())},
			{Key: producer.HeaderAlertFormat, Value: []byte(w.cfg.Encoder.Format())},
		},
	}}, gap...), "written", nil
}

// readAgain reports whether rec is not the record that opened its watch
// but the same quarantine's entry written again (read twice before an
// instance's loader had the first). It waits until this instance's loader
// has read past rec: the first record is before it on the same partition.
func (w *caseWorker) readAgain(ctx context.Context, entry *producer.WatchEntry, rec *kgo.Record) (bool, error) {
	if w.watch == nil {
		return false, nil
	}
	for {
		s, tick := w.watch.current()
		if s != nil && s.position[rec.Partition] > rec.Offset {
			first, ok := s.first[entry.AlertID]
			return ok && first != (recordAt{rec.Partition, rec.Offset}), nil
		}
		select {
		case <-tick:
		case <-time.After(time.Second):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// lookback computes the context document of entry over a window of lb.
func (w *caseWorker) lookback(ctx context.Context, entry *producer.WatchEntry, lb time.Duration) ([]byte, error) {
	base, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(w.cfg.Brokers...)}, w.cfg.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("consumer: look-back client: %w", err)
	}
	defer base.Close()
	end := entry.OpenedAt.UTC()
	finding, found, err := w.finding(ctx, entry)
	if err != nil {
		return nil, err
	}
	if !found {
		w.cfg.Logger.Warn("case worker: the finding's source record could not be read again; its own event is counted in the look-back",
			"alert_id", entry.AlertID, "topic", entry.Source.Topic, "partition", entry.Source.Partition, "offset", entry.Source.Offset)
	}
	sum, err := lookback.New(lookback.Config{
		Subject: lookback.Subject{Account: entry.Account, UserName: entry.UserName},
		End:     end, Lookback: lb, Exclude: finding.Event.EventID,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer: %w: %w", producer.ErrBadWatchEntry, err)
	}
	parts, dataStart, err := w.ranges(ctx, kadm.NewClient(base), sum.Start())
	if err != nil {
		return nil, err
	}
	err = lookback.Collect(sum, func(f *matcher.IdentityFilter) error {
		return w.pass(ctx, parts, f, sum, &dataStart)
	})
	if err != nil {
		return nil, err
	}
	window := producer.ContextWindow{Lookback: lb, Start: sum.Start(), End: end, DataStart: dataStart.at(sum.Start())}
	// Without the finding's record the document's id is set to the
	// entry's: it is the alert's, whatever event stands in for the finding.
	// A document over the topic's limit is cut (the lists shortened to
	// their most frequent values, the cuts listed) until it fits.
	var encode func() ([]byte, error)
	var cut func() bool
	if w.cfg.Encoder.Format() == producer.FormatOCSF {
		src := producer.Source{Topic: entry.Source.Topic, Partition: entry.Source.Partition, Offset: entry.Source.Offset}
		d, err := producer.NewOCSFContext(finding, src, sum.Summary(), window)
		if err != nil {
			return nil, fmt.Errorf("consumer: context document: %w", err)
		}
		d.SetAlertID(entry.AlertID)
		encode = func() ([]byte, error) { return producer.EncodeOCSFContext(d) }
		cut = d.Enrichments[0].Data.Summary.Cut
	} else {
		c, err := producer.NewECSContext(finding, sum.Summary(), window)
		if err != nil {
			return nil, fmt.Errorf("consumer: context document: %w", err)
		}
		c.QuarantineWatch.AlertID = entry.AlertID
		encode = func() ([]byte, error) { return producer.EncodeContext(c) }
		cut = c.Cut
	}
	limit := int(w.maxDoc.Load())
	for {
		doc, err := encode()
		if err != nil || len(doc) <= limit {
			return doc, err
		}
		if !cut() {
			return nil, fmt.Errorf("%w: %d bytes with every list cut to one entry, over the context topic's limit of %d", errDocTooLarge, len(doc), limit)
		}
	}
}

// errDocTooLarge marks a document that cannot be cut to fit: the entry is
// committed without one (reading it again would not help).
var errDocTooLarge = errors.New("consumer: context document too large")

// docOverhead is what a context record holds besides its value: the key
// (an alert id), the headers and the record's framing in its batch.
const docOverhead = 512

// readLimit reads the context topic's max.message.bytes into maxDoc; a
// limit that cannot be read is taken to be Kafka's default, with a warning.
func (w *caseWorker) readLimit(ctx context.Context, cl *kgo.Client) {
	topic := ContextTopic(w.cfg.AlertsTopic)
	configs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topic)
	v, err := maxMessageBytes(configs, err, topic)
	if err != nil {
		w.cfg.Logger.Warn("case worker: cannot read the context topic's max.message.bytes; documents are cut to fit the default instead (allow DescribeConfigs on the topic)",
			"topic", topic, "assumed", unknownMaxMessageBytes, "err", err)
		v = unknownMaxMessageBytes
	}
	w.maxDoc.Store(max(v-docOverhead, docOverhead))
}

// finding reads the entry's source record again and returns the finding
// the entry names, the one whose alert id is the entry's. When the record
// is gone (retention) or holds no such finding, it returns one made from
// the entry, and found is false.
func (w *caseWorker) finding(ctx context.Context, entry *producer.WatchEntry) (f matcher.Finding, found bool, err error) {
	rule := &matcher.Rule{ID: entry.RuleID}
	for _, r := range matcher.AllRules {
		if r.ID == entry.RuleID {
			rule = r
		}
	}
	f = matcher.Finding{Rule: rule, Event: matcher.Event{
		EventTime: entry.OpenedAt.UTC().Format(time.RFC3339), RecipientAccountID: entry.Account,
		TargetKind: matcher.TargetUser, TargetName: entry.UserName,
	}}
	m, err := w.matcher(rule)
	if err != nil {
		return f, false, nil // a rule this version does not know
	}
	src := entry.Source
	if !slices.Contains(w.cfg.SourceTopics, src.Topic) {
		// Not a topic this service reads (an entry of another
		// deployment, a topic since renamed): not one to wait on.
		return f, false, nil
	}
	sc := m.NewScanner()
	var fs []matcher.Finding
	err = w.read(ctx, partRange{topic: src.Topic, partition: src.Partition, from: src.Offset, to: src.Offset + 1}, false, func(r *kgo.Record) {
		if r.Offset != src.Offset {
			return
		}
		res := sc.Match(r.Value, fs[:0])
		for _, got := range res.Findings {
			if producer.EventAlertID(got.Rule.ID, &got.Event) == entry.AlertID {
				f, found = got, true
			}
		}
	})
	if err != nil && ctx.Err() == nil {
		// The record cannot be read (deleted under the read, a partition
		// that no longer exists): the look-back goes on without it, as
		// when retention took it, rather than hold the worker on it.
		w.cfg.Logger.Warn("case worker: reading the finding's source record", "alert_id", entry.AlertID, "err", err)
		return f, false, nil
	}
	return f, found, err
}

func (w *caseWorker) matcher(rule *matcher.Rule) (*matcher.Matcher, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m, ok := w.matchers[rule.ID]; ok {
		return m, nil
	}
	if !slices.Contains(matcher.AllRules, rule) {
		return nil, fmt.Errorf("consumer: unknown rule %q", rule.ID)
	}
	mc := w.cfg.Matcher
	mc.Rules = []*matcher.Rule{rule}
	m, err := matcher.New(mc)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	w.matchers[rule.ID] = m
	return m, nil
}

// partRange is the offsets [from, to) of one source partition.
type partRange struct {
	topic     string
	partition int32
	from, to  int64
	// cut: records before from were deleted and from is the log start,
	// so the window may start before what the partition holds.
	cut bool
}

// dataStart is when the source topics hold the window from: the latest
// first record of a cut partition.
type dataStart struct {
	cut     bool
	unknown bool // a cut partition held nothing to date it by
	latest  time.Time
}

// at is the window's DataStart for producer.ContextWindow: start when no
// partition was cut, zero when a cut one could not be dated.
func (d *dataStart) at(start time.Time) time.Time {
	switch {
	case !d.cut:
		return start
	case d.unknown || d.latest.IsZero():
		return time.Time{}
	}
	return d.latest
}

// ranges lists, on every partition of the source topics, the offsets a
// look-back from start reads, and notes the partitions whose log start is
// after it.
func (w *caseWorker) ranges(ctx context.Context, adm *kadm.Client, start time.Time) ([]partRange, dataStart, error) {
	var ds dataStart
	topics := w.cfg.SourceTopics
	from, err := adm.ListOffsetsAfterMilli(ctx, start.Add(-lookbackSlack).UnixMilli(), topics...)
	if err == nil {
		err = from.Error()
	}
	if err != nil {
		return nil, ds, fmt.Errorf("consumer: look-back: listing offsets by time: %w", err)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, ds, fmt.Errorf("consumer: look-back: listing end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, ds, fmt.Errorf("consumer: look-back: listing start offsets: %w", err)
	}
	var parts []partRange
	ends.Each(func(e kadm.ListedOffset) {
		p := partRange{topic: e.Topic, partition: e.Partition, to: e.Offset}
		s, _ := starts.Lookup(e.Topic, e.Partition)
		f, ok := from.Lookup(e.Topic, e.Partition)
		p.from = s.Offset
		if ok && f.Offset >= 0 {
			p.from = max(f.Offset, s.Offset)
		}
		p.from = min(p.from, p.to)
		p.cut = s.Offset > 0 && p.from == s.Offset
		if p.cut {
			ds.cut = true
			if p.from == p.to {
				ds.unknown = true // all of it deleted: nothing says when
			}
		}
		parts = append(parts, p)
	})
	slices.SortFunc(parts, func(a, b partRange) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	return parts, ds, nil
}

// pass reads every range with f, at most LookbackPartitions at once, and
// offers each candidate to sum as it is found, so that what the look-back
// holds is the summarizer's events in the window, not every candidate's
// text (the summary does not depend on the order). The first record of a
// cut partition dates where its data starts.
func (w *caseWorker) pass(ctx context.Context, parts []partRange, f *matcher.IdentityFilter, sum *lookback.Summarizer, ds *dataStart) error {
	firsts := make([]time.Time, len(parts))
	errs := make([]error, len(parts))
	sem := make(chan struct{}, cmp.Or(w.cfg.LookbackPartitions, DefaultLookbackPartitions))
	var mu sync.Mutex // sum
	var wg sync.WaitGroup
	for i, p := range parts {
		if p.from >= p.to {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			// A Scanner per read: they are not safe for concurrent use,
			// and Select uses no rule, so the service's rules serve.
			m, err := w.matcher(matcher.ElasticQuarantineRule)
			if err != nil {
				errs[i] = err
				return
			}
			sc := m.NewScanner()
			var buf []matcher.Candidate
			errs[i] = w.read(ctx, p, true, func(r *kgo.Record) {
				if firsts[i].IsZero() {
					firsts[i] = r.Timestamp
				}
				got, _ := sc.Select(r.Value, f, buf)
				if len(got) > 0 {
					mu.Lock()
					for _, c := range got {
						_ = sum.Add(c.Text, c.Shape) // what it cannot read, the summary counts
					}
					mu.Unlock()
				}
				clear(got) // the texts are the summarizer's to keep or drop
				buf = got[:0]
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i, p := range parts {
		if p.cut && !firsts[i].IsZero() && firsts[i].After(ds.latest) {
			ds.latest = firsts[i].UTC()
		}
	}
	return nil
}

// read calls fn for each data record of p, in offset order, with a client
// of its own: no group, read_committed, and control records kept, so that
// the end of a range that closes with a transaction marker is seen. With
// recycle, the records and the buffers they were decompressed into are
// reused once fn returns (fn keeps nothing of them): a look-back reads
// gigabytes, and without it the garbage collector, which the main loop
// shares, would collect all of them.
func (w *caseWorker) read(ctx context.Context, p partRange, recycle bool, fn func(*kgo.Record)) error {
	if p.from >= p.to {
		return nil
	}
	var pools []kgo.Opt
	if recycle {
		pools = append(pools, kgo.WithPools(lookbackPools))
	}
	opts := append(append([]kgo.Opt{
		kgo.SeedBrokers(w.cfg.Brokers...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.topic: {p.partition: kgo.NewOffset().At(p.from)}}),
		// One partition per client, fetched a megabyte at a time: the
		// look-back holds little, and the byte budget paces it.
		kgo.FetchMaxBytes(1 << 20),
		kgo.FetchMaxPartitionBytes(1 << 20),
	}, pools...), w.cfg.ClientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("consumer: look-back client: %w", err)
	}
	defer cl.Close()
	next := p.from
	progress := time.Now()
	for next < p.to {
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var fatal error
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) {
				return
			}
			if _, isFatal := classifyFetchError(err); isFatal && fatal == nil {
				fatal = fmt.Errorf("consumer: look-back: reading %s/%d: %w", topic, partition, err)
			}
		})
		if fatal != nil {
			return fatal
		}
		var n, bytes int
		fetches.EachRecord(func(r *kgo.Record) {
			if recycle {
				defer r.Recycle()
			}
			if r.Offset < next || r.Offset >= p.to {
				if r.Offset >= p.to {
					next = p.to
				}
				return
			}
			next = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			n++
			bytes += len(r.Value)
			fn(r)
		})
		if n > 0 || next >= p.to {
			progress = time.Now()
		} else if time.Since(progress) > lookbackStall {
			return fmt.Errorf("consumer: look-back: %s/%d: no record for %v at offset %d of [%d, %d)", p.topic, p.partition, lookbackStall, next, p.from, p.to)
		}
		w.cfg.Metrics.LookbackRecords.Add(float64(n))
		if err := w.budget.wait(ctx, bytes); err != nil {
			return err
		}
	}
	return nil
}

// byteBudget paces look-back reads to rate bytes per second in all, and to
// rate/lookbackBehindShare while slow says the main loop is behind:
// detection first, the context after. Never to nothing: a loop that is
// always behind (an instance too small for its traffic) still gets its
// documents, later.
type byteBudget struct {
	mu   sync.Mutex
	rate float64
	slow func() bool // nil: never slowed
	next time.Time
}

// lookbackBehindShare divides the look-backs' rate while the loop is
// behind.
const lookbackBehindShare = 16

// wait returns when n more bytes may be read.
func (b *byteBudget) wait(ctx context.Context, n int) error {
	if d := time.Until(b.reserve(n, time.Now())); d > 0 {
		sleepCtx(ctx, d)
	}
	return ctx.Err()
}

// reserve takes n bytes from the budget at now and returns when they are
// paid for.
func (b *byteBudget) reserve(n int, now time.Time) time.Time {
	if n <= 0 {
		return now
	}
	rate := b.rate
	if b.slow != nil && b.slow() {
		rate /= lookbackBehindShare
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next.Before(now) {
		b.next = now
	}
	b.next = b.next.Add(time.Duration(float64(n) / rate * float64(time.Second)))
	return b.next
}

// lookbackPools are the look-back reads' kgo pools (see read): their
// decompression buffers and record slices, shared by every read.
var lookbackPools = &recyclePools{}

// recyclePools implements kgo.PoolDecompressBytes and kgo.PoolRecords
// with sync.Pools.
type recyclePools struct {
	bufs, recs sync.Pool
}

// GetDecompressBytes returns a pooled buffer, or a new one sized for
// CloudTrail's usual ratio; kgo grows one that is too small.
func (p *recyclePools) GetDecompressBytes(compressed []byte, _ kgo.CompressionCodecType) []byte {
	if b, ok := p.bufs.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, 8*len(compressed))
}

// PutDecompressBytes takes a buffer back.
func (p *recyclePools) PutDecompressBytes(b []byte) { p.bufs.Put(&b) }

// GetRecords returns a pooled record slice of capacity n or more.
func (p *recyclePools) GetRecords(n int) []kgo.Record {
	if rs, ok := p.recs.Get().(*[]kgo.Record); ok && cap(*rs) >= n {
		return (*rs)[:n]
	}
	return make([]kgo.Record, n)
}

// PutRecords takes a record slice back.
func (p *recyclePools) PutRecords(rs []kgo.Record) { p.recs.Put(&rs) }
