package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The in-process contenders run in a child process of the benchmark (it
// executes itself with the contender's name as the first argument), so
// that each one's CPU time and peak RSS are measured from /proc exactly as
// those of quarantine-watch and the Kafka Streams peer.

// childFlags are the arguments of "e2e ceiling" and "e2e naive".
type childFlags struct {
	brokers, topic, group, output, txnID string
	maxBatch                             int
}

// childMain runs a contender subcommand until SIGTERM and returns the exit
// code.
func childMain(name string, args []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var f childFlags
	fs.StringVar(&f.brokers, "brokers", "", "bootstrap brokers, comma-separated")
	fs.StringVar(&f.topic, "topic", "", "source topic")
	fs.StringVar(&f.group, "group", "", "consumer group")
	fs.StringVar(&f.output, "output", "", "findings topic (naive)")
	fs.StringVar(&f.txnID, "transactional-id", "", "transactional id (naive)")
	fs.IntVar(&f.maxBatch, "max-batch", 4096, "records per transaction (naive)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("contender", name)
	var err error
	switch name {
	case "ceiling":
		err = runCeiling(ctx, f, log)
	case "naive":
		err = runNaive(ctx, f, log)
	}
	if err != nil {
		log.Error("failed", "err", err)
		return 1
	}
	return 0
}

// runCeiling is the physical bound: a franz-go group consumer that reads the
// whole topic read_committed, touches nothing but each value's length, and
// commits the polled offsets every 100 ms (so the benchmark sees where it is
// the way it sees the others).
func runCeiling(ctx context.Context, f childFlags, log *slog.Logger) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(f.brokers, ",")...),
		kgo.ConsumerGroup(f.group),
		kgo.ConsumeTopics(f.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.AutoCommitInterval(100*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	var records, bytes int64
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			log.Info("stopping", "records", records, "bytes", bytes)
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			records++
			bytes += int64(len(r.Value))
		})
	}
}

// runNaive is the baseline a first version would be: a franz-go
// GroupTransactSession loop, as in quarantine-watch, that decodes every
// record with encoding/json into a map[string]any and applies the rule to
// the map, on one goroutine, producing each finding (the input record) in
// the transaction of its batch.
func runNaive(ctx context.Context, f childFlags, log *slog.Logger) error {
	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(strings.Split(f.brokers, ",")...),
		kgo.ConsumerGroup(f.group),
		kgo.ConsumeTopics(f.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.TransactionalID(f.txnID),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DefaultProduceTopic(f.output),
	)
	if err != nil {
		return err
	}
	defer sess.Close()
	// A transaction in flight is ended even after SIGTERM.
	work := context.WithoutCancel(ctx)
	var (
		mu      sync.Mutex
		prodErr error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			prodErr = errors.Join(prodErr, err)
			mu.Unlock()
		}
	}
	var records, findings int64
	for {
		fs := sess.PollRecords(ctx, f.maxBatch)
		if ctx.Err() != nil || fs.IsClientClosed() {
			log.Info("stopping", "records", records, "findings", findings)
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			log.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		recs := fs.Records()
		if len(recs) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("naive: beginning transaction: %w", err)
		}
		mu.Lock()
		prodErr = nil
		mu.Unlock()
		var n int64
		for _, r := range recs {
			var doc map[string]any
			if err := json.Unmarshal(r.Value, &doc); err != nil {
				continue // the benchmark writes no malformed record
			}
			if naiveMatch(doc) {
				sess.Produce(work, &kgo.Record{Key: r.Key, Value: r.Value}, promise)
				n++
			}
		}
		if err := sess.Client().Flush(work); err != nil {
			promise(nil, err)
		}
		mu.Lock()
		try := kgo.TryCommit
		if prodErr != nil {
			log.Warn("produce failed, aborting", "err", prodErr)
			try = kgo.TryAbort
		}
		mu.Unlock()
		committed, err := sess.End(work, try)
		if err != nil {
			return fmt.Errorf("naive: ending transaction: %w", err)
		}
		if committed {
			records += int64(len(recs))
			findings += n
		}
	}
}

// marker is what the rule looks for in the request parameters.
const marker = "AWSCompromisedKeyQuarantine"

// naiveMatch is Elastic's rule on a decoded CloudTrail record: eventName is
// AttachUserPolicy, errorCode and errorMessage are absent, null or "", and
// a key or string value of requestParameters, at any depth, contains the
// marker.
func naiveMatch(rec map[string]any) bool {
	if name, _ := rec["eventName"].(string); name != "AttachUserPolicy" {
		return false
	}
	if nonEmpty(rec, "errorCode") || nonEmpty(rec, "errorMessage") {
		return false
	}
	return containsMarker(rec["requestParameters"])
}

func nonEmpty(rec map[string]any, key string) bool {
	v, ok := rec[key]
	return ok && v != nil && v != ""
}

func containsMarker(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.Contains(v, marker)
	case map[string]any:
		for k, e := range v {
			if strings.Contains(k, marker) || containsMarker(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if containsMarker(e) {
				return true
			}
		}
	}
	return false
}
