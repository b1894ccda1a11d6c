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
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// The watch (issue 13 §2), the Kafka side. A finding of a rule in
// opensWatch writes the user's watch entry (producer.WatchRecord) to the
// watchlist topic in the transaction of its alert: the entry is visible to
// read_committed readers exactly when the alert is, and a batch aborted
// and read again writes it again in the new transaction only. Every
// instance loads the topic (the loader below) into its matcher, whose
// post-quarantine rules then report the user's events.

// opensWatch are the rules (by key) whose findings open a watch: the
// Elastic rule, and an attachment of the quarantine policy that failed
// (AWS meant to quarantine the user; the user is no less exposed).
var opensWatch = map[string]bool{
	matcher.ElasticQuarantineRule.Key:      true,
	matcher.QuarantineAttachFailedRule.Key: true,
}

// openWatch produces the watch entry that finding f, read from r, opens,
// in the open transaction. A finding of which no entry can be made (no
// user, an event time that does not parse, a name IAM would not accept, an
// entry larger than the topic takes) keeps its alert: the refusal is
// logged and counted, never a reason to abort.
func (l *loop) openWatch(ctx context.Context, f matcher.Finding, r *kgo.Record, detected time.Time) {
	refuse := func(err error) {
		l.watchRefused++
		l.cfg.Logger.Warn("a finding that opens a watch could not open one; its alert is written, the user is not watched",
			"rule", f.Rule.Key, "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "event_id", f.Event.EventID, "err", err)
	}
	e, err := producer.NewWatchEntry(f, sourceOf(r), r.Timestamp, l.cfg.WatchFor, l.cfg.ContextLookback)
	if err != nil {
		refuse(err)
		return
	}
	// What the matcher would refuse when it loads the entry is refused
	// here, so that the topic holds only entries every instance uses.
	if _, err := matcher.NewWatchlist([]matcher.WatchEntry{watchEntry(e)}); err != nil {
		refuse(err)
		return
	}
	if s, _ := l.watchSnapshot(); s != nil {
		// The same quarantine read again (a duplicate delivery, a
		// backfill): its watch is open already, or an operator ended it.
		// Written again, it would run the look-back again and report the
		// gap's findings twice, or undo the operator's end.
		if _, open := s.entries[e.AlertID]; open || l.pendingWatch(e.AlertID) {
			l.watchSkipped = append(l.watchSkipped, "already_open")
			l.cfg.Logger.Info("a quarantine whose watch is open already: no entry written", "key", e.Key(), "alert_id", e.AlertID,
				"topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
			return
		}
		if endedCovers(s.ended, e.Key(), e.OpenedAt) {
			l.watchSkipped = append(l.watchSkipped, "ended")
			l.cfg.Logger.Info("a quarantine whose watch an operator ended: the watch is not opened again", "key", e.Key(),
				"alert_id", e.AlertID, "opened_at", e.OpenedAt, "ended_watch_opened_at", s.ended[e.Key()], "topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
			return
		}
	}
	rec, err := producer.WatchRecord(e, l.cfg.watchlistTopic(), detected)
	if err == nil {
		if n, limit := producer.RecordBytes(rec), l.limits.watchlist.Load(); int64(n) > limit {
			err = &tooLargeError{bytes: n, limit: limit}
		}
	}
	if err != nil {
		refuse(err)
		return
	}
	l.pendingWatches = append(l.pendingWatches, pendingWatch{alertID: e.AlertID})
	l.produce(ctx, output{rec: rec, source: r, finding: -1, watch: len(l.pendingWatches) - 1})
}

// pendingWatch reports whether the open transaction writes the entry of
// alertID already.
func (l *loop) pendingWatch(alertID string) bool {
	for _, w := range l.pendingWatches {
		if w.alertID == alertID && !w.dropped {
			return true
		}
	}
	return false
}

// pendingWatch is a watch entry of the open transaction: its alert, and
// what the metrics need once it commits.
type pendingWatch struct {
	alertID string
	// dropped: the broker refused the entry, and the source record is a
	// dead letter instead (see replace).
	dropped bool
}

// tooLargeError: a watch entry larger than the watchlist topic's
// max.message.bytes (a watch entry cannot be cut).
type tooLargeError struct {
	bytes int
	limit int64
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("consumer: the watch entry takes %d bytes, over the watchlist topic's max.message.bytes %d", e.bytes, e.limit)
}

// watchEntry is the matcher's view of a watch entry.
func watchEntry(e producer.WatchEntry) matcher.WatchEntry {
	return matcher.WatchEntry{Account: e.Account, UserName: e.UserName, OpenedAt: e.OpenedAt, Until: e.Until, AlertID: e.AlertID}
}

// The loader. Every instance reads the whole watchlist topic, whichever
// partitions of the sources it owns: the events of a watched user may be
// on any of them. It reads with a plain client (no group: every instance
// needs every entry), read_committed (an entry exists once its alert's
// transaction committed), from the start, and keeps every watch of a user
// it reads (successive.go: a user quarantined again has a watch per
// quarantine), until a tombstone or an end record removes them. After each
// poll that changed the set it
// hands the matcher a new immutable Watchlist (SetWatchlist swaps it
// atomically; the hot path takes no lock). Entries whose window has ended,
// by the detection clock, are dropped on a timer.
//
// The loop does not poll before the loader has read the topic up to its
// last stable offset as of start-up (caughtUp): a restarted instance would
// otherwise match the first batches without the watches it had, and miss
// the watched users' events in them.

// Loader timings.
const (
	// watchExpiryGrace is how long after its window an entry is kept:
	// CloudTrail delivers most events within minutes, not all of them.
	watchExpiryGrace = time.Hour
	// watchExpiryEvery is how often expired entries are looked for.
	watchExpiryEvery = time.Minute
	// watchCatchUpIdle: a loader below its start-up targets whose polls
	// have returned nothing for this long is at the end all the same (the
	// records up to a target were compacted away), and says so.
	watchCatchUpIdle = 10 * time.Second
	// watchFetchMaxWait is the loader's fetch wait: a new entry arrives
	// with the broker's answer, whatever the wait, and a short one keeps
	// the idle rule above quick.
	watchFetchMaxWait = 500 * time.Millisecond
)

// watchLoader keeps the current watch entries and the matcher's watchlist.
type watchLoader struct {
	cfg     *Config
	matcher *matcher.Matcher
	topic   string

	// Owned by run's goroutine.
	entries map[string]*userWatches // by key
	// ended is, by entry key, the opening time of the latest watch an
	// operator ended (an end record): an entry opened at or before it is
	// not applied, wherever it stands in the topic.
	ended map[string]time.Time
	// position is, per partition, the offset after the last record read
	// (data or control); targets the last stable offsets at start-up.
	position, targets map[int32]int64
	// opened are the entries applied since the last publish, which logs
	// them once the matcher has them.
	opened []producer.WatchEntry

	// marks are the markers read (the no-gap protocol, nogap.go), kept
	// whatever entries are loaded: a marker may be read before its entry
	// (they are on different partitions). entriesDirty: the entries changed
	// since the matcher's list was last built.
	marks        map[markKey]int64
	entriesDirty bool
	// snap is what the loop and the case worker read (see watchSnapshot);
	// tick is closed, and replaced, whenever a new one is published.
	snap   atomic.Pointer[watchSnapshot]
	tickMu sync.Mutex
	tick   chan struct{}

	// started is set by start, on Run's goroutine.
	started  bool
	caughtUp chan struct{} // closed once caught up
	done     chan struct{} // closed when run returns
	err      error         // why run returned, once done
}

func newWatchLoader(cfg *Config, m *matcher.Matcher) *watchLoader {
	return &watchLoader{cfg: cfg, matcher: m, topic: cfg.watchlistTopic(), entries: map[string]*userWatches{}, ended: map[string]time.Time{},
		position: map[int32]int64{}, targets: map[int32]int64{}, caughtUp: make(chan struct{}), done: make(chan struct{}),
		marks: map[markKey]int64{}, tick: make(chan struct{})}
}

// loaderClientOpts are the loader client's options: the session's seed
// brokers, logger and caller's options (TLS, SASL, tuning) from the same
// Config, and of its own:
//
//   - ConsumeTopics with no group: every instance reads every entry.
//   - ConsumeResetOffset(AtStart): the set is rebuilt from the whole
//     topic at every start; compaction keeps it small.
//   - FetchIsolationLevel(ReadCommitted): an entry of an aborted batch
//     never opened a watch; its replay writes it again.
//   - KeepControlRecords: the transaction markers move the position to
//     the last stable offset, which caught-up is measured against.
//   - FetchMaxWait: see watchFetchMaxWait.
func loaderClientOpts(cfg *Config) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumeTopics(cfg.watchlistTopic()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(watchFetchMaxWait),
	}
	if cfg.KafkaLogger != nil {
		opts = append(opts, kgo.WithLogger(kslog.New(cfg.KafkaLogger.With("client", "watchlist-loader"))))
	}
	return append(opts, cfg.ClientOpts...)
}

// start runs the loader until ctx is cancelled, and waits until it has
// caught up (nil), failed, or ctx is cancelled.
func (w *watchLoader) start(ctx context.Context) error {
	w.started = true
	go func() {
		defer close(w.done)
		w.err = w.run(ctx)
		if w.err != nil && ctx.Err() == nil {
			w.cfg.Logger.Error("watchlist loader stopped: watches opened from now on are not applied by this instance", "topic", w.topic, "err", w.err)
		}
	}()
	select {
	case <-w.caughtUp:
		return nil
	case <-w.done:
		if ctx.Err() != nil {
			return nil
		}
		return w.err
	case <-ctx.Done():
		return nil
	}
}

// failed returns why the loader stopped, nil while it runs or after a
// stop asked for.
func (w *watchLoader) failed() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

// ready reports whether the loader has caught up.
func (w *watchLoader) ready() bool {
	select {
	case <-w.caughtUp:
		return true
	default:
		return false
	}
}

func (w *watchLoader) run(ctx context.Context) error {
	cfg := w.cfg
	cl, err := kgo.NewClient(loaderClientOpts(cfg)...)
	if err != nil {
		return fmt.Errorf("consumer: watchlist loader: creating client: %w", err)
	}
	defer cl.Close()
	if err := w.readTargets(ctx, kadm.NewClient(cl)); err != nil {
		return err
	}
	if w.reached() {
		w.entriesDirty = true
		w.publish()
		w.caughtUpNow(0)
	}
	expiryEvery := cmp.Or(cfg.watchExpiryEvery, watchExpiryEvery)
	began := time.Now()
	var unknownSince time.Time // since when the topic has been unknown
	idleSince := time.Now()
	lastExpiry := time.Now()
	for {
		timeout := expiryEvery
		if !w.ready() {
			timeout = time.Second
		}
		pollCtx, cancel := context.WithTimeout(ctx, timeout)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		// A fetch error the client cannot recover from (a revoked right,
		// the topic deleted for longer than the grace) stops the loader,
		// and with it the instance (see loop.watchFailed): an instance
		// that no longer loads the watchlist would miss the users watched
		// from then on, unseen.
		var fatalErr error
		fetches.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) {
				return
			}
			class, fatal := classifyFetchError(err)
			cfg.Metrics.FetchErrors.WithLabelValues(class).Inc()
			if class == fetchUnknownTopic {
				if unknownSince.IsZero() {
					unknownSince = time.Now()
				}
				fatal = time.Since(unknownSince) >= cfg.unknownTopicGrace
			}
			if fatal && fatalErr == nil {
				fatalErr = fmt.Errorf("consumer: watchlist loader: fetching topic %q partition %d: %w: %s", topic, partition, err, fetchAdvice(class))
			}
			cfg.Logger.Warn("watchlist loader: fetch error", "topic", topic, "partition", partition, "class", class, "fatal", fatal, "err", err)
		})
		if fatalErr != nil {
			return fatalErr
		}
		changed := false
		n := 0
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			w.position[r.Partition] = max(w.position[r.Partition], r.Offset+1)
			if !r.Attrs.IsControl() && w.apply(r) {
				changed = true
			}
		})
		if n > 0 {
			idleSince, unknownSince = time.Now(), time.Time{}
		}
		if now := time.Now(); now.Sub(lastExpiry) >= expiryEvery {
			lastExpiry = now
			if w.expire() {
				changed = true
			}
		}
		if changed {
			w.entriesDirty = true
		}
		if !w.ready() {
			// One watchlist once caught up, not one per poll before; and
			// handed to the matcher before the loop may poll.
			reached := w.reached()
			if !reached && time.Since(idleSince) < watchCatchUpIdle {
				continue
			}
			if !reached {
				cfg.Logger.Warn("watchlist loader: below the start-up end offsets, but nothing more to read: taking the topic as read (its last records were compacted away)",
					"topic", w.topic, "position", w.position, "targets", w.targets)
			}
			w.expire()
			w.dropOrphanMarks()
			w.publish()
			w.caughtUpNow(time.Since(began))
			continue
		}
		if changed || n > 0 {
			// Read records move the position the assignment gate waits on.
			w.publish()
		}
	}
}

// readTargets reads each partition's start and last stable offsets: the
// loader has caught up once it has read past every last stable offset.
func (w *watchLoader) readTargets(ctx context.Context, adm *kadm.Client) error {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		starts, err := adm.ListStartOffsets(ctx, w.topic)
		var ends kadm.ListedOffsets
		if err == nil {
			ends, err = adm.ListCommittedOffsets(ctx, w.topic)
		}
		if err == nil {
			err = errors.Join(starts.Error(), ends.Error())
		}
		if err == nil {
			starts.Each(func(o kadm.ListedOffset) { w.position[o.Partition] = o.Offset })
			ends.Each(func(o kadm.ListedOffset) { w.targets[o.Partition] = o.Offset })
			return nil
		}
		if isAuthError(err) {
			return fmt.Errorf("consumer: watchlist loader: listing the offsets of %q: %w", w.topic, err)
		}
		w.cfg.Logger.Warn("watchlist loader: listing offsets; retrying", "topic", w.topic, "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *watchLoader) reached() bool {
	for p, target := range w.targets {
		if w.position[p] < target {
			return false
		}
	}
	return true
}

func (w *watchLoader) caughtUpNow(took time.Duration) {
	watches := 0
	for _, u := range w.entries {
		watches += len(u.watches)
	}
	w.cfg.Logger.Info("watchlist loaded", "topic", w.topic, "users", len(w.entries), "entries", watches, "took", took.Round(time.Millisecond))
	w.cfg.Metrics.WatchlistCaughtUp.Set(1)
	close(w.caughtUp)
}

// apply applies one record to the entries and reports whether they
// changed. A record that is not a valid entry is logged, counted and
// skipped: the topic is written by this service and by operators'
// tombstones, and nothing on it may stop an instance.
func (w *watchLoader) apply(r *kgo.Record) bool {
	if bytes.HasPrefix(r.Key, []byte(producer.WatchMarkKeyPrefix)) {
		return w.applyMark(r)
	}
	if bytes.HasPrefix(r.Key, []byte(producer.WatchEndKeyPrefix)) {
		return w.applyEnd(r)
	}
	if !bytes.HasPrefix(r.Key, []byte(producer.WatchKeyPrefix)) {
		return false // another kind of state in the same topic
	}
	skip := func(err error) bool {
		w.cfg.Metrics.WatchlistSkipped.Inc()
		w.cfg.Logger.Warn("watchlist loader: skipping a record that is not a valid watch entry",
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		return false
	}
	if r.Value == nil {
		if _, _, err := producer.ParseWatchKey(r.Key); err != nil {
			return skip(err)
		}
		_, had := w.entries[string(r.Key)]
		delete(w.entries, string(r.Key))
		if had {
			w.cfg.Logger.Info("watch ended by a tombstone", "key", string(r.Key), "offset", r.Offset)
		}
		return had
	}
	e, err := producer.DecodeWatchEntry(r.Key, r.Value)
	if err != nil {
		return skip(err)
	}
	if _, err := matcher.NewWatchlist([]matcher.WatchEntry{watchEntry(e)}); err != nil {
		return skip(err)
	}
	if endedCovers(w.ended, string(r.Key), e.OpenedAt) {
		w.cfg.Logger.Info("watch entry not applied: an operator ended its watch", "key", string(r.Key), "alert_id", e.AlertID,
			"opened_at", e.OpenedAt, "offset", r.Offset)
		return false
	}
	le := loadedEntry{WatchEntry: e, written: r.Timestamp, first: recordAt{r.Partition, r.Offset}}
	if w.expired(le) {
		return false // an old entry: its window is over
	}
	u := w.entries[string(r.Key)]
	if u == nil {
		u = &userWatches{}
		w.entries[string(r.Key)] = u
	}
	if !u.add(le) {
		return false // the same quarantine read again
	}
	w.opened = append(w.opened, e)
	return true
}

// applyEnd applies an end record: the entry it names, and any entry
// opened before it, is ended. A record that is not one is logged, counted
// and skipped, as a bad entry is; a tombstone of an end record forgets it.
func (w *watchLoader) applyEnd(r *kgo.Record) bool {
	key, _ := producer.EndedWatchKey(r.Key)
	if r.Value == nil {
		delete(w.ended, key)
		return false
	}
	e, err := producer.DecodeWatchEnd(r.Key, r.Value)
	if err != nil {
		w.cfg.Metrics.WatchlistSkipped.Inc()
		w.cfg.Logger.Warn("watchlist loader: skipping a record that is not a valid end record",
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		return false
	}
	noteEnd(w.ended, key, e.OpenedAt)
	u, ok := w.entries[key]
	if !ok {
		return false
	}
	n := len(u.watches)
	u.watches = slices.DeleteFunc(u.watches, func(l loadedEntry) bool { return endedCovers(w.ended, key, l.OpenedAt) })
	if len(u.watches) == 0 {
		delete(w.entries, key)
	}
	if len(u.watches) < n {
		w.cfg.Logger.Info("watch ended by an operator", "key", key, "alert_id", e.AlertID, "watches_ended", n-len(u.watches), "offset", r.Offset)
	}
	return len(u.watches) < n
}

// noteEnd records in ended that the watch of key opened at openedAt was
// ended by an operator; the latest such watch is what counts.
func noteEnd(ended map[string]time.Time, key string, openedAt time.Time) {
	if at, ok := ended[key]; !ok || openedAt.After(at) {
		ended[key] = openedAt
	}
}

// endedCovers reports whether an entry of key opened at openedAt belongs
// to a watch an operator ended: it was opened at or before the latest
// ended one.
func endedCovers(ended map[string]time.Time, key string, openedAt time.Time) bool {
	at, ok := ended[key]
	return ok && !openedAt.After(at)
}

// loadedEntry is a watch entry and when it was written (its record's
// timestamp).
type loadedEntry struct {
	producer.WatchEntry
	written time.Time
	// first is the record that opened the watch: the first of its
	// entry's records with this alert id (the same quarantine read again
	// writes another, which the case worker skips).
	first recordAt
	// gap is what of its window its case worker covers (successive.go).
	gap []span
}

// recordAt is where a record is on the watchlist topic.
type recordAt struct {
	partition int32
	offset    int64
}

// expired reports whether an entry's watch is over: its event-time window
// has ended, and as long a time has passed since it was written. The second
// keeps the watch of a quarantine found in old events (a group reading a
// topic's retention from the start, a replay) for the events of its window
// read after it, which the detection clock alone would drop at once.
func (w *watchLoader) expired(e loadedEntry) bool {
	return w.expiredWindow(e.OpenedAt, e.Until, e.written)
}

// expiredWindow is expired for a window (opened, until] of an entry
// written at written.
func (w *watchLoader) expiredWindow(opened, until, written time.Time) bool {
	end := until
	if lasts := written.Add(until.Sub(opened)); lasts.After(end) {
		end = lasts
	}
	return end.Add(watchExpiryGrace).Before(w.cfg.Now())
}

// expire drops the watches whose window (the one the matcher has) has
// ended, and reports whether any was.
func (w *watchLoader) expire() bool {
	dropped := false
	for k, u := range w.entries {
		ends := u.windowEnds()
		kept := u.watches[:0]
		for i, l := range u.watches {
			if !w.expiredWindow(l.OpenedAt, maxTime(ends[i], l.OpenedAt.Add(time.Nanosecond)), l.written) {
				kept = append(kept, l)
			}
		}
		dropped = dropped || len(kept) < len(u.watches)
		u.watches = kept
		if len(kept) == 0 {
			delete(w.entries, k)
		}
	}
	return dropped
}

// publish hands the matcher the current entries, when they changed, and
// publishes a new snapshot.
func (w *watchLoader) publish() {
	if w.entriesDirty {
		w.publishList()
	}
	w.publishSnapshot()
}

func (w *watchLoader) publishList() {
	list := make([]matcher.WatchEntry, 0, len(w.entries))
	for _, u := range w.entries {
		list = append(list, u.windows()...)
	}
	wl, err := matcher.NewWatchlist(list)
	if err != nil {
		// Each entry passed NewWatchlist alone, keys are unique per
		// (account, lowercase user), and a user's windows follow one
		// another: this is a bug, not input.
		w.cfg.Logger.Error("watchlist loader: the matcher refused the watchlist; keeping the previous one", "entries", len(list), "err", err)
		return
	}
	w.matcher.SetWatchlist(wl)
	w.entriesDirty = false
	w.cfg.Metrics.WatchlistEntries.Set(float64(wl.Len()))
	if w.ready() {
		// From here on the matcher watches the user (the entries loaded
		// at start-up are summed up by "watchlist loaded").
		for _, e := range w.opened {
			w.cfg.Logger.Info("watch applied", "key", e.Key(), "alert_id", e.AlertID, "opened_at", e.OpenedAt, "until", e.Until, "entries", wl.Len())
		}
	}
	w.opened = w.opened[:0]
}
