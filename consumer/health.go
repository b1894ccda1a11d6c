package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// How a session that goes on running but gets nowhere is noticed. A
// session whose fetches fail retries them forever and stays in the group:
// without these, a revoked ACL or a deleted source topic leaves the
// service alive, ready and doing nothing.

// Defaults for Config.
const (
	DefaultLagInterval  = 10 * time.Second
	DefaultStallTimeout = 2 * time.Minute
	// defaultUnknownTopicGrace: a partition just created is unknown to its
	// leader for a moment; one unknown for this long is gone.
	defaultUnknownTopicGrace = 30 * time.Second
)

// Classes of fetch errors, the label of fetch_errors_total.
const (
	fetchAuthorization = "authorization" // fatal: a right was revoked
	fetchUnknownTopic  = "unknown_topic" // fatal once it lasts: the topic was deleted
	fetchDataLoss      = "data_loss"     // the log was truncated under the consumer; franz-go resumed
	fetchOutOfRange    = "offset_out_of_range"
	fetchGroup         = "group"     // the group session failed; franz-go rejoins
	fetchTransient     = "transient" // a leader moved, a broker is unreachable: franz-go retries
	fetchOther         = "other"     // fatal: a non-retryable error; the partition is not consumed again
)

// classifyFetchError maps an error a poll returned to its class, and
// says whether the session cannot recover from it. franz-go retries what
// is retryable by itself; it stops consuming a partition whose Kafka error
// is not (a non-retryable offset-fetch error drops the partition from the
// assignment, a non-retryable fetch error comes back at every fetch), and
// one whose batch would decompress past its limit. Errors of no known
// kind (a connection's, an EOF) are left to its retries: the stall check
// catches those that last.
func classifyFetchError(err error) (class string, fatal bool) {
	var dataLoss *kgo.ErrDataLoss
	var groupErr *kgo.ErrGroupSession
	var tooLarge *kgo.ErrDecompressTooLarge
	var kafkaErr *kerr.Error
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed),
		errors.Is(err, kerr.SaslAuthenticationFailed):
		return fetchAuthorization, true
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return fetchUnknownTopic, false
	case errors.As(err, &dataLoss):
		return fetchDataLoss, false
	case errors.Is(err, kerr.OffsetOutOfRange):
		return fetchOutOfRange, false
	case errors.As(err, &groupErr):
		return fetchGroup, false
	case errors.As(err, &tooLarge):
		return fetchOther, true
	case errors.As(err, &kafkaErr):
		// Brokers answer UNKNOWN_SERVER_ERROR for passing trouble too.
		if kafkaErr.Retriable || errors.Is(err, kerr.UnknownServerError) {
			return fetchTransient, false
		}
		return fetchOther, true
	}
	return fetchTransient, false
}

// fetchAdvice says what a fatal fetch error asks of a person.
func fetchAdvice(class string) string {
	switch class {
	case fetchAuthorization:
		return "the user may no longer read it: grant it Read on the source topics and the group (see the README's ACLs)"
	case fetchUnknownTopic:
		return "the topic was deleted or recreated"
	}
	return "the partition cannot be consumed"
}

// fetchErrors counts a poll's errors and returns the first that the
// session cannot recover from, naming the topic and partition.
func (l *loop) fetchErrors(fetches kgo.Fetches) error {
	var fatal error
	now := time.Now()
	fetches.EachError(func(topic string, partition int32, err error) {
		class, isFatal := classifyFetchError(err)
		l.cfg.Metrics.FetchErrors.WithLabelValues(class).Inc()
		where := fmt.Sprintf("topic %q partition %d", topic, partition)
		if topic == "" {
			where = "the group session"
		}
		if class == fetchUnknownTopic {
			since, last := l.unknownSince[topic], l.unknownLast[topic]
			if since.IsZero() || now.Sub(last) > l.cfg.unknownTopicGrace {
				since = now // a new episode
			}
			l.unknownSince[topic], l.unknownLast[topic] = since, now
			isFatal = now.Sub(since) >= l.cfg.unknownTopicGrace
			if isFatal {
				where = fmt.Sprintf("topic %q (unknown for %v)", topic, now.Sub(since).Round(time.Second))
			}
		}
		if class == fetchTransient {
			l.cfg.Logger.Debug("fetch error; the client retries", "topic", topic, "partition", partition, "class", class, "err", err)
		} else {
			l.cfg.Logger.Warn("fetch error", "topic", topic, "partition", partition, "class", class, "err", err)
		}
		if isFatal && fatal == nil {
			fatal = fmt.Errorf("consumer: fetching %s: %w: %s", where, err, fetchAdvice(class))
		}
	})
	return fatal
}

// health follows what readiness and the lag gauge need: the partitions
// this member owns, their lag, and when it last committed.
type health struct {
	cfg *Config

	mu    sync.Mutex
	owned map[string]map[int32]bool

	// moves counts the callbacks that added or took partitions: an abort
	// across a change of it was a rebalance's.
	moves      atomic.Int64
	lag        atomic.Int64 // records, over the owned partitions, at the last measure
	lagSince   atomic.Int64 // unix nanoseconds since when lag has been above 0; 0 without lag
	lastCommit atomic.Int64 // unix nanoseconds of the last commit, or of the session's start
	stalled    atomic.Bool
	// behind is the loop's word after each poll (behindAfter): look-backs
	// read slower while it holds.
	behind atomic.Bool

	// gate, if set, runs in OnPartitionsAssigned before the new partitions
	// are fetched (the no-gap protocol's assignment gate, nogap.go);
	// assignedCh is closed, and replaced, after each assignment.
	gate       func(context.Context, *kgo.Client)
	assignedCh chan struct{}
}

func newHealth(cfg *Config) *health {
	return &health{cfg: cfg, owned: map[string]map[int32]bool{}, assignedCh: make(chan struct{})}
}

// assigned and gone are the session's partition callbacks.
func (h *health) assigned(ctx context.Context, cl *kgo.Client, added map[string][]int32) {
	if len(added) > 0 {
		h.moves.Add(1)
		if h.gate != nil {
			h.gate(ctx, cl)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for t, ps := range added {
		if h.owned[t] == nil {
			h.owned[t] = map[int32]bool{}
		}
		for _, p := range ps {
			h.owned[t][p] = true
		}
	}
	close(h.assignedCh)
	h.assignedCh = make(chan struct{})
}

// assignedSignal returns a channel closed at the next assignment.
func (h *health) assignedSignal() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.assignedCh
}

func (h *health) gone(_ context.Context, _ *kgo.Client, gone map[string][]int32) {
	if len(gone) > 0 {
		h.moves.Add(1)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for t, ps := range gone {
		for _, p := range ps {
			delete(h.owned[t], p)
			h.cfg.Metrics.DropLag(t, p)
		}
		if len(h.owned[t]) == 0 {
			delete(h.owned, t)
		}
	}
}

func (h *health) snapshot() map[string][]int32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]int32, len(h.owned))
	for t, ps := range h.owned {
		for p := range ps {
			out[t] = append(out[t], p)
		}
	}
	return out
}

// setBehind records whether the loop was left behind by its last poll.
func (h *health) setBehind(b bool) {
	if h.behind.Swap(b) == b {
		return
	}
	v := 0.0
	if b {
		v = 1
	}
	h.cfg.Metrics.LoopBehind.Set(v)
}

// committed records a commit.
func (h *health) committed(at time.Time) {
	h.lastCommit.Store(at.UnixNano())
	h.cfg.Metrics.LastCommit.Set(float64(at.UnixNano()) / 1e9)
}

// watch measures the lag every LagInterval until ctx ends.
func (h *health) watch(ctx context.Context, cl *kgo.Client) {
	adm := kadm.NewClient(cl)
	tick := time.NewTicker(h.cfg.LagInterval)
	defer tick.Stop()
	for {
		h.measure(ctx, adm)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// measure sets each owned partition's lag: its last stable offset (what
// read_committed sees) less the group's committed offset, or less its log
// start where nothing is committed or the commit is below it. A partition
// whose offsets cannot be listed keeps its last value.
func (h *health) measure(ctx context.Context, adm *kadm.Client) {
	owned := h.snapshot()
	var total int64
	if len(owned) > 0 {
		topics := make([]string, 0, len(owned))
		for t := range owned {
			topics = append(topics, t)
		}
		ctx, cancel := context.WithTimeout(ctx, h.cfg.LagInterval)
		committed, errC := adm.FetchOffsets(ctx, h.cfg.Group)
		stable, errS := adm.ListCommittedOffsets(ctx, topics...)
		starts, errL := adm.ListStartOffsets(ctx, topics...)
		cancel()
		if err := errors.Join(errC, errS, errL); err != nil {
			if ctx.Err() == nil {
				h.cfg.Logger.Debug("measuring the lag", "err", err)
			}
			return
		}
		for t, ps := range owned {
			for _, p := range ps {
				end, ok := stable.Lookup(t, p)
				start, ok2 := starts.Lookup(t, p)
				if !ok || !ok2 || end.Err != nil || start.Err != nil {
					continue
				}
				from := start.Offset
				if c, ok := committed.Lookup(t, p); ok && c.Err == nil && c.At > from {
					from = c.At
				}
				lag := max(end.Offset-from, 0)
				h.cfg.Metrics.SetLag(t, p, lag)
				total += lag
			}
		}
	}
	h.lag.Store(total)
	now := time.Now()
	switch {
	case total == 0:
		h.lagSince.Store(0)
	case h.lagSince.Load() == 0:
		h.lagSince.Store(now.UnixNano())
	}
	h.checkStall(now)
}

// checkStall decides whether the member is stalled: lag, and no commit
// for StallTimeout since the later of the last commit and the lag's
// appearance. It logs each change.
func (h *health) checkStall(now time.Time) bool {
	since := max(h.lastCommit.Load(), h.lagSince.Load())
	idle := now.Sub(time.Unix(0, since))
	stalled := h.lag.Load() > 0 && idle >= h.cfg.StallTimeout
	if was := h.stalled.Swap(stalled); was != stalled {
		if stalled {
			h.cfg.Logger.Warn("stalled: records wait and nothing has committed; /readyz fails until a commit",
				"lag", h.lag.Load(), "no_commit_for", idle.Round(time.Second), "stall_timeout", h.cfg.StallTimeout)
		} else {
			h.cfg.Logger.Info("no longer stalled", "lag", h.lag.Load())
		}
	}
	return stalled
}

// ready is readiness: in the group, and not stalled.
func (h *health) ready(cl *kgo.Client) bool {
	member, _ := cl.GroupMetadata()
	return member != "" && !h.checkStall(time.Now())
}

// skip is a run of a partition's offsets deleted before the group read
// them.
type skip struct {
	topic     string
	partition int32
	from, to  int64 // the committed offset and the first offset still there
}

// deletedBeforeRead finds the partitions of a poll whose committed offset
// is below their log start: retention deleted records while the group
// lagged, and franz-go, finding the offset out of range, resumed at the log
// start and said so at info level only. The group's committed offsets are
// the ones the client loaded or last committed: every batch commits the
// whole of what it polled, and an abort rewinds to them.
func (l *loop) deletedBeforeRead(fetches kgo.Fetches) []skip {
	var out []skip
	var committed map[string]map[int32]kgo.EpochOffset
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 || p.LogStartOffset <= 0 {
			return
		}
		if committed == nil {
			committed = l.sess.Client().CommittedOffsets()
		}
		c, ok := committed[p.Topic][p.Partition]
		if !ok || c.Offset < 0 || c.Offset >= p.LogStartOffset {
			return
		}
		if to := min(p.Records[0].Offset, p.LogStartOffset); to > c.Offset {
			out = append(out, skip{topic: p.Topic, partition: p.Partition, from: c.Offset, to: to})
		}
	})
	return out
}

// countSkipped reports the skips of a batch once it has committed.
func (l *loop) countSkipped(skips []skip) {
	for _, s := range skips {
		l.cfg.Metrics.RecordsSkipped.WithLabelValues(s.topic).Add(float64(s.to - s.from))
		l.cfg.Logger.Warn("records deleted before they were read: retention ran while the group lagged, and it resumed at the log start",
			"topic", s.topic, "partition", s.partition, "committed_offset", s.from, "log_start_offset", s.to, "skipped", s.to-s.from)
	}
}
