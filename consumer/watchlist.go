package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

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
	l.pendingWatches = append(l.pendingWatches, pendingWatch{})
	l.produce(ctx, output{rec: rec, source: r, finding: -1, watch: len(l.pendingWatches) - 1})
}

// pendingWatch is what the metrics need of a watch entry once it commits.
type pendingWatch struct {
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
