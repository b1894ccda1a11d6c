package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// The no-gap protocol (issue 13 §2; docs/rules.md has the argument).
// Between the commit of watch entry E and the moment an instance's loader
// has it, that instance matches the user's events unwatched. So, per
// source partition p, the boundary m_p is the first offset the loop
// matched WITH E: the loop writes it, as a marker (producer.WatchMark), in
// the transaction of the first batch it matches with E, and covers the
// offsets from m_p on; the case worker waits for E's marker on every
// source partition and covers the offsets below m_p (the context document
// and the post-quarantine findings the loop missed there), in the
// transaction of the document. The two ranges are disjoint, so no finding
// is written twice, and together they are the whole partition.
//
//   - One snapshot of the loader (watchSnapshot) per transaction: the batch
//     is matched with its watchlist (Pool.MatchWatchlist) and the markers
//     are written for its entries, so "matched with E" holds for every
//     record of the batch on p, and for every later one (the loader never
//     forgets E before it ends).
//   - A marker is written for every partition the member owns with no
//     marker of E known: read by the loader, or written by this member in
//     a transaction that committed (pending until then, forgotten on
//     abort: the batch is replayed and they are written again). Its offset
//     is the first of the batch's records on p, else p's position (the
//     offset of the next record the member reads there), else -1 (the
//     group had neither committed nor consumed p: every record of p will be
//     matched with E).
//   - An idle member is woken (its poll cancelled) when the loader publishes
//     a new watchlist, or partitions are assigned, and writes its markers in
//     a transaction of its own.
//   - The assignment gate: before a newly assigned partition is fetched
//     (franz-go fetches it only once OnPartitionsAssigned returns), the
//     member's loader reads the watchlist topic up to its last stable
//     offsets. The entries and markers the previous owner committed are
//     then known: the new owner matches with E from its first record and
//     does not write a second marker.

// markKey names a marker: an entry (by its alert id) and a source partition.
type markKey struct {
	alertID, topic string
	partition      int32
}

// watchSnapshot is what the loader had read when it published it: the
// matcher's list, the current entries by alert id, their markers, the
// watches operators ended, and the loader's position on the watchlist
// topic. Immutable.
type watchSnapshot struct {
	list     *matcher.Watchlist
	entries  map[string]producer.WatchEntry
	marks    map[markKey]int64
	position map[int32]int64
	// ended is the loader's: by entry key, the opening time of the latest
	// watch an operator ended.
	ended map[string]time.Time
	// first is, by alert id, the record that opened the watch.
	first map[string]recordAt
	// gap is, by alert id, the windows of calls the watch's case worker
	// reports below its markers (successive.go).
	gap map[string][]matcher.WatchEntry
	// opened is, by alert id, the watch as its quarantine opened it: what
	// a post-quarantine alert names, whichever part of the window the
	// matcher had for it (successive.go).
	opened map[string]*matcher.WatchEntry
}

// asOpened returns f naming its watch as the quarantine opened it.
func (s *watchSnapshot) asOpened(f matcher.Finding) matcher.Finding {
	if f.Watch != nil && s != nil {
		if w, ok := s.opened[f.Watch.AlertID]; ok {
			f.Watch = w
		}
	}
	return f
}

// markerRecheck is how often an idle member with entries loaded looks
// again for markers it owes.
const markerRecheck = 2 * time.Second

// markerFetchTimeout bounds the group offset fetch of a marker: the
// transaction is open meanwhile, and a failure aborts it to be tried again.
const markerFetchTimeout = 10 * time.Second

// markerGateTimeout bounds the assignment gate's wait: the callback holds
// the group's rebalance, so a loader that cannot catch up (the watchlist
// topic unreachable) must not hold it for ever.
const markerGateTimeout = 30 * time.Second

// applyMark keeps a marker record; a tombstone forgets it. A record that
// is not a marker is logged, counted and skipped, as a bad entry is.
func (w *watchLoader) applyMark(r *kgo.Record) bool {
	if r.Value == nil {
		for k := range w.marks {
			if producer.WatchMarkKey(k.alertID, k.topic, k.partition) == string(r.Key) {
				delete(w.marks, k)
			}
		}
		return false
	}
	m, err := producer.DecodeWatchMark(r.Key, r.Value)
	if err != nil {
		w.cfg.Metrics.WatchlistSkipped.Inc()
		w.cfg.Logger.Warn("watchlist loader: skipping a record that is not a valid marker",
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		return false
	}
	// The latest wins, as compaction keeps it.
	w.marks[markKey{m.AlertID, m.Topic, m.Partition}] = m.Offset
	return false
}

// dropOrphanMarks forgets the markers of entries not loaded (ended,
// expired). It runs once caught up at start-up only: later, a
// marker may be read just before its entry, which is on another partition.
func (w *watchLoader) dropOrphanMarks() {
	alerts := map[string]bool{}
	for _, u := range w.entries {
		for _, l := range u.watches {
			alerts[l.AlertID] = true
		}
	}
	maps.DeleteFunc(w.marks, func(k markKey, _ int64) bool { return !alerts[k.alertID] })
}

// publishSnapshot publishes what the loader has read, and wakes whoever
// waits on it.
func (w *watchLoader) publishSnapshot() {
	s := &watchSnapshot{list: w.matcher.Watchlist(), entries: make(map[string]producer.WatchEntry, len(w.entries)),
		marks: map[markKey]int64{}, position: maps.Clone(w.position), ended: maps.Clone(w.ended), first: make(map[string]recordAt, len(w.entries)),
		gap: make(map[string][]matcher.WatchEntry, len(w.entries)), opened: make(map[string]*matcher.WatchEntry, len(w.entries))}
	for _, u := range w.entries {
		for _, l := range u.watches {
			s.entries[l.AlertID] = l.WatchEntry
			s.first[l.AlertID] = l.first
			s.gap[l.AlertID] = l.gapWindows()
			opened := watchEntry(l.WatchEntry)
			s.opened[l.AlertID] = &opened
		}
	}
	for k, o := range w.marks {
		if _, ok := s.entries[k.alertID]; ok {
			s.marks[k] = o
		}
	}
	w.snap.Store(s)
	w.tickMu.Lock()
	close(w.tick)
	w.tick = make(chan struct{})
	w.tickMu.Unlock()
}

// current returns the last snapshot (nil before the loader caught up) and
// a channel closed when the next one is published.
func (w *watchLoader) current() (*watchSnapshot, <-chan struct{}) {
	w.tickMu.Lock()
	tick := w.tick
	w.tickMu.Unlock()
	return w.snap.Load(), tick
}

// gate is the assignment gate: it returns once the loader has published
// a snapshot read up to the watchlist topic's last stable offsets as of
// now, or after markerGateTimeout, or when ctx ends. It runs in
// OnPartitionsAssigned: it only reads, and never ends or closes anything.
func (w *watchLoader) gate(ctx context.Context, cl *kgo.Client) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, markerGateTimeout)
	defer cancel()
	ends, err := w.listEnds(ctx, cl)
	if err != nil {
		w.cfg.Logger.Warn("assignment gate: cannot list the watchlist's last stable offsets; fetching the new partitions with the watchlist as loaded",
			"topic", w.topic, "waited", time.Since(began).Round(time.Millisecond), "err", err)
		return
	}
	lastLog := time.Now()
	for {
		snap, tick := w.current()
		if snap != nil && snap.reached(ends) {
			if took := time.Since(began); took > time.Second {
				w.cfg.Logger.Info("assignment gate: the watchlist is loaded up to the assignment", "took", took.Round(time.Millisecond))
			}
			return
		}
		select {
		case <-tick:
		case <-time.After(time.Second):
		case <-ctx.Done():
			w.cfg.Logger.Warn("assignment gate: the watchlist loader did not reach the watchlist's last stable offsets; fetching the new partitions anyway",
				"topic", w.topic, "waited", time.Since(began).Round(time.Millisecond))
			return
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			w.cfg.Logger.Info("assignment gate: waiting for the watchlist loader before fetching newly assigned partitions",
				"topic", w.topic, "waited", time.Since(began).Round(time.Second))
		}
	}
}

// listEnds lists the watchlist topic's last stable offsets. While the
// topic is unknown it retries until ctx ends: the group's first assignment
// can come while start-up is still creating the topic. Any other error is
// returned at once, and the gate lets the member fetch.
func (w *watchLoader) listEnds(ctx context.Context, cl *kgo.Client) (kadm.ListedOffsets, error) {
	adm := kadm.NewClient(cl)
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		ends, err := adm.ListCommittedOffsets(ctx, w.topic)
		if err == nil {
			err = ends.Error()
		}
		if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return ends, err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, err
		}
	}
}

func (s *watchSnapshot) reached(ends kadm.ListedOffsets) bool {
	ok := true
	ends.Each(func(o kadm.ListedOffset) {
		if s.position[o.Partition] < o.Offset {
			ok = false
		}
	})
	return ok
}

// marksDue returns the markers the member owes for snapshot s, with no
// offset yet: the entries' on every owned source partition with no marker
// known. Sorted, for a stable order of records.
func (l *loop) marksDue(s *watchSnapshot) []markKey {
	if s == nil || len(s.entries) == 0 {
		return nil
	}
	var due []markKey
	owned := l.health.snapshot()
	for alert := range s.entries {
		for topic, ps := range owned {
			for _, p := range ps {
				k := markKey{alert, topic, p}
				if _, ok := s.marks[k]; ok {
					continue
				}
				if _, ok := l.marked[k]; ok {
					continue
				}
				due = append(due, k)
			}
		}
	}
	slices.SortFunc(due, func(a, b markKey) int {
		return cmp.Or(cmp.Compare(a.alertID, b.alertID), cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	return due
}

// writeMarks produces, in the open transaction, the markers due (marksDue
// of the transaction's snapshot): at the first offset of records on the
// partition, else at its position.
func (l *loop) writeMarks(ctx context.Context, due []markKey, records []*kgo.Record) {
	l.pendingMarks = l.pendingMarks[:0]
	if len(due) == 0 {
		return
	}
	first := map[markKey]int64{}
	for _, r := range records {
		k := markKey{"", r.Topic, r.Partition}
		if o, ok := first[k]; !ok || r.Offset < o {
			first[k] = r.Offset
		}
	}
	cl := l.sess.Client()
	uncommitted := cl.UncommittedOffsets()
	// A partition this member has not read from starts at the group's
	// committed offset. It is asked of the group, not of the client, whose
	// own copy is filled only once its offset fetch after the assignment
	// has answered: a marker written before would say -1 (every record
	// matched with the entry) for a partition whose earlier records the
	// previous owner matched without it.
	//
	// When the group's coordinator cannot answer (a broker down), those
	// markers wait for a later transaction: this one has no record of
	// their partitions, so it matches none of them with the entry, and the
	// marker written later is still the first offset matched with it.
	// Aborting the batch for them would replay it into the same failure
	// until the member gave up.
	var committed kadm.OffsetResponses
	fetched := true
	for _, k := range due {
		_, inBatch := first[markKey{"", k.topic, k.partition}]
		_, read := uncommitted[k.topic][k.partition]
		if !inBatch && !read && committed == nil && fetched {
			var err error
			fctx, cancel := context.WithTimeout(ctx, markerFetchTimeout)
			committed, err = kadm.NewClient(cl).FetchOffsets(fctx, l.cfg.Group)
			cancel()
			if err == nil {
				err = committed.Error()
			}
			if err != nil {
				fetched = false
				l.cfg.Logger.Warn("watch markers: the group's committed offsets could not be fetched; the markers of partitions this member has not read wait for a later transaction",
					"err", err)
			}
		}
	}
	for _, k := range due {
		offset := int64(-1)
		if o, ok := first[markKey{"", k.topic, k.partition}]; ok {
			offset = o
		} else if o, ok := uncommitted[k.topic][k.partition]; ok && o.Offset >= 0 {
			offset = o.Offset
		} else if !fetched {
			continue // its place is not known: written later
		} else if o, ok := committed.Lookup(k.topic, k.partition); ok && o.At >= 0 {
			offset = o.At
		}
		rec, err := producer.WatchMarkRecord(producer.WatchMark{AlertID: k.alertID, Topic: k.topic, Partition: k.partition, Offset: offset}, l.cfg.watchlistTopic())
		if err != nil {
			// The entry's alert id was checked when it was loaded: a bug.
			l.setProduceErr(fmt.Errorf("consumer: marker of %s on %s/%d: %w", k.alertID, k.topic, k.partition, err))
			return
		}
		l.pendingMarks = append(l.pendingMarks, pendingMark{key: k, offset: offset})
		l.produce(ctx, output{rec: rec, finding: -1, watch: -1})
	}
}

// markerCoalesce is how long a member with markers due waits for records
// to write them with: what is buffered, or what arrives within it, else
// none (a transaction of markers alone). A transaction of markers alone is
// for a member that gets no records, because it costs the loop twice:
//   - it commits no offsets, so franz-go's GroupTransactSession.End sends
//     no TxnOffsetCommit, cannot tell that the brokers have KIP-447, and
//     holds its rebalance lock for 500 ms after the commit, which End
//     itself waits for (txn.go, "sleeping 500ms before allowing a
//     rebalance to continue"): every record behind it waits half a second;
//   - under transactions v2, begun right after the previous transaction,
//     its produce meets that transaction's markers still being written
//     (CONCURRENT_TRANSACTIONS), which franz-go retries after 250 ms and
//     more.
//
// A batch of records opens its transaction with the offsets' commit first,
// retried at once (openForOffsets), and the markers ride in it. The wait
// is longer than a busy member's fetch takes (TestMarkersRideWithTraffic),
// and short beside the look-back that waits for the markers.
const markerCoalesce = time.Second

// pendingMark is a marker of the open transaction.
type pendingMark struct {
	key    markKey
	offset int64
}

// markedCommitted records the open transaction's markers once it has
// committed, and forgets those of entries no longer loaded.
func (l *loop) markedCommitted(s *watchSnapshot) {
	for _, m := range l.pendingMarks {
		l.marked[m.key] = m.offset
		l.cfg.Logger.Debug("watch marker written", "alert_id", m.key.alertID, "topic", m.key.topic, "partition", m.key.partition, "offset", m.offset)
	}
	l.cfg.Metrics.WatchMarks.Add(float64(len(l.pendingMarks)))
	l.pendingMarks = l.pendingMarks[:0]
	if s != nil {
		maps.DeleteFunc(l.marked, func(k markKey, _ int64) bool { _, ok := s.entries[k.alertID]; return !ok })
	}
}

// pollContext returns the context of one poll: ctx, cancelled early when
// the loader publishes a watchlist other than list or partitions are
// assigned, so that an idle member writes the markers it owes.
func (l *loop) pollContext(ctx context.Context, list *matcher.Watchlist, tick, moved <-chan struct{}) (context.Context, context.CancelFunc) {
	pollCtx, cancel := context.WithCancel(ctx)
	// With entries loaded, the poll is cut short now and then all the
	// same: a wake missed by a race this code did not foresee would
	// otherwise hold a case worker for as long as the member is idle.
	recheck := time.NewTimer(markerRecheck)
	if list.Len() == 0 {
		recheck.Stop()
	}
	go func() {
		defer recheck.Stop()
		for {
			select {
			case <-pollCtx.Done():
				return
			case <-recheck.C:
				cancel()
				return
			case <-moved:
				cancel()
				return
			case <-tick:
				s, next := l.watch.current()
				if s != nil && s.list != list {
					cancel()
					return
				}
				tick = next
			}
		}
	}()
	return pollCtx, cancel
}

// gapMarks waits until a marker of entry is known on every partition of
// every source topic and returns them, with the windows of the entry's gap. ok is
// false when the entry is no longer loaded (ended, expired, or one of more
// than maxWatchesPerUser): no loop writes its markers.
func (w *caseWorker) gapMarks(ctx context.Context, entry *producer.WatchEntry, at *kgo.Record, parts []partRange) (map[markKey]int64, []matcher.WatchEntry, bool, error) {
	began := time.Now()
	lastLog := began
	waiting := false
	defer func() {
		if waiting {
			w.cfg.Metrics.MarkersWaiting.Set(0)
		}
		w.cfg.Metrics.MarkerWait.Observe(time.Since(began).Seconds())
	}()
	for {
		s, tick := w.watch.current()
		// The worker may read the entry before this instance's loader:
		// an entry not loaded is ended only once the loader is past it.
		if s != nil && s.position[at.Partition] > at.Offset {
			if _, ok := s.entries[entry.AlertID]; !ok {
				return nil, nil, false, nil
			}
			marks := map[markKey]int64{}
			var missing []string
			for _, p := range parts {
				k := markKey{entry.AlertID, p.topic, p.partition}
				o, ok := s.marks[k]
				if !ok {
					missing = append(missing, fmt.Sprintf("%s/%d", p.topic, p.partition))
					continue
				}
				marks[k] = o
			}
			if len(missing) == 0 {
				return marks, s.gap[entry.AlertID], true, nil
			}
			if !waiting {
				waiting = true
				w.cfg.Metrics.MarkersWaiting.Set(1)
			}
			if time.Since(lastLog) >= 5*time.Second {
				lastLog = time.Now()
				w.cfg.Logger.Info("case worker: waiting for the loop's markers of the watch entry before covering the gap below them",
					"alert_id", entry.AlertID, "missing", missing, "waited", time.Since(began).Round(time.Second))
			}
		}
		select {
		case <-tick:
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, nil, false, ctx.Err()
		}
	}
}

// gapFindings returns the alerts of the post-quarantine findings of entry
// in the records the loop matched without it: on each partition, from the
// first record written at or after the window's start (less lookbackSlack)
// up to the marker. The matcher decides, with the service's rules and a
// watchlist of the entry's gap alone (what of its window no watch of the
// user applied before it had: successive.go), as the loop would have.
func (w *caseWorker) gapFindings(ctx context.Context, adm *kadm.Client, entry *producer.WatchEntry, gap []matcher.WatchEntry, marks map[markKey]int64) ([]*kgo.Record, error) {
	if len(gap) == 0 {
		return nil, nil // watches of the user applied before it had all of its window
	}
	var parts []partRange
	for k, m := range marks {
		if m > 0 {
			parts = append(parts, partRange{topic: k.topic, partition: k.partition, to: m})
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	slices.SortFunc(parts, func(a, b partRange) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	from, err := adm.ListOffsetsAfterMilli(ctx, gap[0].OpenedAt.Add(-lookbackSlack).UnixMilli(), w.cfg.SourceTopics...)
	if err == nil {
		err = from.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("consumer: gap: listing offsets by time: %w", err)
	}
	m, err := w.gapMatcher()
	if err != nil {
		return nil, err
	}
	list, err := matcher.NewWatchlist(gap)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w: %w", producer.ErrBadWatchEntry, err)
	}
	sc := m.NewScanner()
	detected := w.cfg.Now()
	opened := watchEntry(*entry) // what its alerts name: gap is a part of it
	limit := unknownMaxMessageBytes
	if w.cfg.limits != nil {
		limit = int(w.cfg.limits.alerts.Load())
	}
	var out []*kgo.Record
	var fs []matcher.Finding
	for _, p := range parts {
		if f, ok := from.Lookup(p.topic, p.partition); ok && f.Offset >= 0 {
			p.from = f.Offset
		}
		err := w.read(ctx, p, false, func(r *kgo.Record) {
			res := sc.MatchWatchlist(list, r.Value, fs[:0])
			fs = res.Findings
			for _, f := range res.Findings {
				if f.Watch == nil || f.Watch.AlertID != entry.AlertID {
					continue
				}
				f.Watch = &opened
				rec, err := producer.EncodeRecord(w.cfg.Encoder, f, sourceOf(r), detected, w.cfg.AlertsTopic)
				if err == nil {
					rec, err = producer.FitAlert(w.cfg.Encoder, rec, limit)
				}
				if err != nil {
					w.cfg.Logger.Error("case worker: a post-quarantine finding of the gap cannot be encoded", "alert_id", entry.AlertID,
						"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
					continue
				}
				out = append(out, rec)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// gapMatcher is the matcher of the service's rules, for the gap.
func (w *caseWorker) gapMatcher() (*matcher.Matcher, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gap == nil {
		m, err := matcher.New(w.cfg.Matcher)
		if err != nil {
			return nil, fmt.Errorf("consumer: %w", err)
		}
		w.gap = m
	}
	return w.gap, nil
}

// watchSnapshot returns the loader's current snapshot and the channel of
// the next; nil and nil with the watch off.
func (l *loop) watchSnapshot() (*watchSnapshot, <-chan struct{}) {
	if l.watch == nil {
		return nil, nil
	}
	return l.watch.current()
}

// listOrNil is the snapshot's watchlist, nil for a nil snapshot.
func (s *watchSnapshot) listOrNil() *matcher.Watchlist {
	if s == nil {
		return nil
	}
	return s.list
}

// gapAlerts returns the post-quarantine alerts of entry below the loop's
// markers, once every source partition has one; none without a loader,
// or when the entry is no longer loaded (logged: the window of an entry
// ended before its markers were written is not covered).
func (w *caseWorker) gapAlerts(ctx context.Context, entry *producer.WatchEntry, at *kgo.Record) ([]*kgo.Record, error) {
	if w.watch == nil {
		return nil, nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(w.cfg.Brokers...)}, w.cfg.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("consumer: gap client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, w.cfg.SourceTopics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("consumer: gap: listing the source partitions: %w", err)
	}
	var parts []partRange
	ends.Each(func(o kadm.ListedOffset) { parts = append(parts, partRange{topic: o.Topic, partition: o.Partition}) })
	marks, gap, ok, err := w.gapMarks(ctx, entry, at, parts)
	if err != nil {
		return nil, err
	}
	if !ok {
		w.cfg.Logger.Warn("case worker: the watch entry is no longer loaded (ended or expired); its document is written without the gap's post-quarantine findings",
			"alert_id", entry.AlertID)
		return nil, nil
	}
	return w.gapFindings(ctx, adm, entry, gap, marks)
}
