package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/producer"
)

// An operator's view of the watchlist: the `quarantine-watch watchlist`
// subcommand lists the entries and ends a watch. It reads the topic as the
// loader does (read_committed, from the start; of a user's entries, the
// one opened last)
// and ends a watch the way the topic is always written: in a transaction,
// with an end record, which every instance's loader applies at once and
// which keeps the same quarantine, read again, from opening the watch anew,
// and the entry's tombstone, which compaction keeps until
// delete.retention.ms.

// WatchlistEntries reads the watchlist topic of cfg.AlertsTopic up to its
// last stable offsets as of the call and returns the current entries (of
// each user, the watch opened last), ordered by key, expired ones included, with the number of records
// skipped as not valid entries (each logged on cfg.Logger, if set). It
// uses cfg.Brokers and cfg.ClientOpts (TLS, SASL).
func WatchlistEntries(ctx context.Context, cfg Config) ([]producer.WatchEntry, int, error) {
	topic := WatchlistTopic(cfg.AlertsTopic)
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(watchFetchMaxWait),
	}, cfg.ClientOpts...)...)
	if err != nil {
		return nil, 0, fmt.Errorf("consumer: watchlist: creating client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	var ends kadm.ListedOffsets
	if err == nil {
		ends, err = adm.ListCommittedOffsets(ctx, topic)
	}
	if err == nil {
		err = errors.Join(starts.Error(), ends.Error())
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil, 0, fmt.Errorf("consumer: watchlist topic %q does not exist (is --alerts-topic right?)", topic)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("consumer: watchlist: listing the offsets of %q: %w", topic, err)
	}
	position, targets := map[int32]int64{}, map[int32]int64{}
	starts.Each(func(o kadm.ListedOffset) { position[o.Partition] = o.Offset })
	ends.Each(func(o kadm.ListedOffset) { targets[o.Partition] = o.Offset })
	reached := func() bool {
		for p, t := range targets {
			if position[p] < t {
				return false
			}
		}
		return true
	}
	entries := map[string]producer.WatchEntry{}
	ended := map[string]time.Time{} // as the loader keeps it
	skipped := 0
	idleSince := time.Now()
	for !reached() && time.Since(idleSince) < watchCatchUpIdle {
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("consumer: watchlist: reading %q: %w", topic, ctx.Err())
		}
		var fetchErr error
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && fetchErr == nil {
				if _, fatal := classifyFetchError(err); fatal {
					fetchErr = fmt.Errorf("consumer: watchlist: reading %q partition %d: %w", t, p, err)
				}
			}
		})
		if fetchErr != nil {
			return nil, 0, fetchErr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			idleSince = time.Now()
			position[r.Partition] = max(position[r.Partition], r.Offset+1)
			if r.Attrs.IsControl() {
				return
			}
			skip := func(err error) {
				skipped++
				if cfg.Logger != nil {
					cfg.Logger.Warn("skipping a record that is not a valid watch entry", "partition", r.Partition, "offset", r.Offset, "err", err)
				}
			}
			if key, ok := producer.EndedWatchKey(r.Key); ok {
				if r.Value == nil {
					delete(ended, key)
					return
				}
				e, err := producer.DecodeWatchEnd(r.Key, r.Value)
				if err != nil {
					skip(err)
					return
				}
				noteEnd(ended, key, e.OpenedAt)
				if have, ok := entries[key]; ok && endedCovers(ended, key, have.OpenedAt) {
					delete(entries, key)
				}
				return
			}
			if !strings.HasPrefix(string(r.Key), producer.WatchKeyPrefix) {
				return
			}
			if r.Value == nil {
				delete(entries, string(r.Key))
				return
			}
			e, err := producer.DecodeWatchEntry(r.Key, r.Value)
			if err != nil {
				skip(err)
				return
			}
			// The user's watch opened last is the one listed (and ended,
			// with the earlier ones): quarantines close together may be
			// written out of their order.
			if have, ok := entries[string(r.Key)]; !endedCovers(ended, string(r.Key), e.OpenedAt) && (!ok || !e.OpenedAt.Before(have.OpenedAt)) {
				entries[string(r.Key)] = e
			}
		})
	}
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]producer.WatchEntry, len(keys))
	for i, k := range keys {
		out[i] = entries[k]
	}
	return out, skipped, nil
}

// ErrNoWatch is returned by EndWatch when the user is not watched.
var ErrNoWatch = errors.New("consumer: no such watch")

// EndWatch ends the watch of userName in account: it checks that the
// watchlist has an entry for the user (ErrNoWatch otherwise) and writes
// its end record and its tombstone in a transaction of its own, as
// transactionalID. A quarantine of the user at or before the ended one
// does not open the watch again; a later one does. The
// instances stop reporting the user's events once their loaders read it;
// the context document and the alerts already written stay.
func EndWatch(ctx context.Context, cfg Config, transactionalID, account, userName string) (producer.WatchEntry, error) {
	entries, _, err := WatchlistEntries(ctx, cfg)
	if err != nil {
		return producer.WatchEntry{}, err
	}
	key := producer.WatchKey(account, userName)
	i := slices.IndexFunc(entries, func(e producer.WatchEntry) bool { return e.Key() == key })
	if i < 0 {
		return producer.WatchEntry{}, fmt.Errorf("%w: %s (account %s, user %s)", ErrNoWatch, key, account, userName)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.TransactionalID(transactionalID),
		kgo.RecordPartitioner(outputPartitioner()), // the service's placement of watchlist keys
	}, cfg.ClientOpts...)...)
	if err != nil {
		return producer.WatchEntry{}, fmt.Errorf("consumer: watchlist: creating client: %w", err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		return producer.WatchEntry{}, fmt.Errorf("consumer: watchlist: beginning transaction: %w", err)
	}
	topic := WatchlistTopic(cfg.AlertsTopic)
	end, err := producer.WatchEndRecord(entries[i], topic, time.Now())
	if err != nil {
		return producer.WatchEntry{}, fmt.Errorf("consumer: watchlist: the end record of %s: %w", key, err)
	}
	// The end record first: it keeps the same quarantine, read again,
	// from opening the watch anew; the tombstone lets compaction drop the
	// entry.
	perr := cl.ProduceSync(ctx, end, producer.WatchTombstone(account, userName, topic)).FirstErr()
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(perr == nil)); err != nil || perr != nil {
		return producer.WatchEntry{}, fmt.Errorf("consumer: watchlist: writing the end of %s as transactional id %q: %w", key, transactionalID, errors.Join(perr, err))
	}
	return entries[i], nil
}
