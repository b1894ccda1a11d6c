package consumer

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/producer"
)

// TestEndedWatchStaysEnded: an operator ends the watch of test-user; then
// the quarantine that opened it arrives again (CloudTrail and the
// pipelines that carry it deliver at least once, and a backfill reads old
// events again). The ended watch must stay ended: no entry is written for
// it, no instance loads one, the user's later calls are no findings, and
// the operator's list shows no watch. A later quarantine of the same user
// is a new watch all the same. Run on the service's defaults, one member.
func TestEndedWatchStaysEnded(t *testing.T) {
	brokers, adm, cl := oneBrokerWatchCluster(t, 2)
	ctx := context.Background()
	at := func(p int32, value []byte) *kgo.Record { return &kgo.Record{Partition: p, Value: value} }
	quarantine := readSample(t, "02_attach_user_policy_quarantine_v2_panther.json") // 2023-11-21T23:23:52Z
	later := bytes.ReplaceAll(bytes.ReplaceAll(quarantine,
		[]byte("2023-11-21T23:23:52Z"), []byte("2023-11-23T00:00:00Z")),
		[]byte("e7bb4b23-66e1-4656-b607-f575fde3b790"), []byte("e7bb4b23-66e1-4656-b607-f575fde3b791"))
	want := map[string]int{}
	produce := func(recs ...*kgo.Record) {
		t.Helper()
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	cfg := watchConfig(t, brokers, 1)
	m := startMember(t, cfg)
	produce(at(0, quarantine), at(1, userEvent("test-user", nogapIDPrefix+"e0", "2023-11-21T23:33:52Z")))
	want[nogapIDPrefix+"e0"] = 1
	waitFor(t, "the watch loaded", func() bool { return gaugeValue(t, cfg.Metrics.WatchlistEntries) == 1 })
	waitCommitted(t, adm, cfg.Group, 30*time.Second)
	// The call was in the quarantine's batch: the case worker reports it
	// with the context document, for a watch that is still open.
	waitFor(t, "the first context document", func() bool {
		return gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("written")) >= 1
	})

	endCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := EndWatch(endCtx, cfg, "qw-test-end", "123456789012", "test-user"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watch ended", func() bool { return gaugeValue(t, cfg.Metrics.WatchlistEntries) == 0 })

	// The quarantine again, and the user's call after it: the watch stays
	// ended.
	produce(at(0, quarantine), at(1, userEvent("test-user", nogapIDPrefix+"e1", "2023-11-22T01:00:00Z")))
	waitCommitted(t, adm, cfg.Group, 30*time.Second)
	if entries := watchEntryRecords(t, brokers); len(entries) != 1 {
		t.Errorf("read_committed: %d watch entries after the ended watch's quarantine came again, want the first one only", len(entries))
	}
	list, _, err := WatchlistEntries(endCtx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("the operator's list shows %d watches after the end, want none: %+v", len(list), list)
	}

	// A later quarantine opens a new watch.
	produce(at(0, later), at(1, userEvent("test-user", nogapIDPrefix+"e2", "2023-11-23T01:00:00Z")))
	want[nogapIDPrefix+"e2"] = 1
	waitCommitted(t, adm, cfg.Group, 30*time.Second)
	// Every entry's look-back is done, so that every finding the case
	// worker would write is written.
	waitFor(t, "a context document per watch entry", func() bool {
		return gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("written")) >= float64(len(watchEntryRecords(t, brokers)))
	})
	list, _, err = WatchlistEntries(endCtx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !list[0].OpenedAt.Equal(time.Date(2023, 11, 23, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("the operator's list shows %+v, want the watch opened at 2023-11-23T00:00:00Z", list)
	}
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	checkPostFindings(t, brokers, want)
}

// watchEntryRecords returns the watch entries (not tombstones, markers or
// anything else) on the watchlist topic, read_committed.
func watchEntryRecords(t *testing.T, brokers []string) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	for _, r := range readTopic(t, brokers, watchlistTopic, true) {
		if r.Value != nil && bytes.HasPrefix(r.Key, []byte(producer.WatchKeyPrefix)) {
			out = append(out, r)
		}
	}
	return out
}

// TestQuarantineReadAgainOpensOneWatch: the quarantine arrives twice
// while its watch is open (a duplicate delivery). The second copy is the
// same alert (the same id), and must not write the entry again: the case
// worker would run the look-back again and report the calls in the
// quarantine's batch a second time.
func TestQuarantineReadAgainOpensOneWatch(t *testing.T) {
	brokers, adm, cl := oneBrokerWatchCluster(t, 2)
	ctx := context.Background()
	at := func(p int32, value []byte) *kgo.Record { return &kgo.Record{Partition: p, Value: value} }
	quarantine := readSample(t, "02_attach_user_policy_quarantine_v2_panther.json") // 2023-11-21T23:23:52Z
	cfg := watchConfig(t, brokers, 1)
	m := startMember(t, cfg)
	if err := cl.ProduceSync(ctx, at(0, quarantine), at(1, userEvent("test-user", nogapIDPrefix+"f0", "2023-11-21T23:33:52Z"))).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first context document", func() bool {
		return gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("written")) >= 1
	})
	if err := cl.ProduceSync(ctx, at(0, quarantine), at(1, userEvent("test-user", nogapIDPrefix+"f1", "2023-11-22T01:00:00Z"))).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, adm, cfg.Group, 30*time.Second)
	entries := watchEntryRecords(t, brokers)
	if len(entries) != 1 {
		t.Errorf("read_committed: %d watch entries after the quarantine came twice, want 1", len(entries))
	}
	waitFor(t, "a context document per watch entry", func() bool {
		return gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("written")) >= float64(len(entries))
	})
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	checkPostFindings(t, brokers, map[string]int{nogapIDPrefix + "f0": 1, nogapIDPrefix + "f1": 1})
	if docs := readTopic(t, brokers, contextTopic, true); len(docs) != 1 {
		t.Errorf("read_committed: %d context documents, want 1", len(docs))
	}
}

// TestQuarantineTwiceInOneBatch: both copies of the quarantine are in the
// member's first batch, before any loader has the entry: the batch writes
// one entry.
func TestQuarantineTwiceInOneBatch(t *testing.T) {
	brokers, adm, cl := oneBrokerWatchCluster(t, 2)
	at := func(p int32, value []byte) *kgo.Record { return &kgo.Record{Partition: p, Value: value} }
	quarantine := readSample(t, "02_attach_user_policy_quarantine_v2_panther.json")
	if err := cl.ProduceSync(context.Background(), at(0, quarantine), at(0, quarantine),
		at(1, userEvent("test-user", nogapIDPrefix+"g0", "2023-11-21T23:33:52Z"))).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg := watchConfig(t, brokers, 1)
	m := startMember(t, cfg)
	waitCommitted(t, adm, cfg.Group, 30*time.Second)
	if n := len(watchEntryRecords(t, brokers)); n != 1 {
		t.Errorf("read_committed: %d watch entries from one batch holding the quarantine twice, want 1", n)
	}
	waitFor(t, "the context document", func() bool {
		return gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("written")) >= 1
	})
	if got := gaugeValue(t, cfg.Metrics.WatchEntries.WithLabelValues("already_open")); got != 1 {
		t.Errorf("watch_entries_total{outcome=already_open} = %v, want 1", got)
	}
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	checkPostFindings(t, brokers, map[string]int{nogapIDPrefix + "g0": 1})
}

// TestCaseWorkerSkipsAnEntryWrittenAgain: the same entry twice on the
// watchlist topic (two instances read the quarantine before either loader
// had its entry). The case worker writes the context document of the first
// and counts the second as a duplicate.
func TestCaseWorkerSkipsAnEntryWrittenAgain(t *testing.T) {
	brokers, _, cl := oneBrokerWatchCluster(t, 2)
	// Written now: the watch of an old quarantine lasts its window from
	// when it was written.
	written := func() *kgo.Record {
		r := entryRecord("test-user", "2023-11-21T23:23:52Z", "2023-11-24T23:23:52Z")
		r.Timestamp = time.Now()
		return r
	}
	writeWatchlist(t, brokers, "w1", true, written())
	writeWatchlist(t, brokers, "w2", true, written())
	// The entries name offset 1 of partition 0 as their source: another
	// user's call there (the case worker's look-back reads it again).
	if err := cl.ProduceSync(context.Background(),
		&kgo.Record{Partition: 0, Value: userEvent("bob", nogapIDPrefix+"b0", "2023-11-21T23:00:00Z")},
		&kgo.Record{Partition: 0, Value: userEvent("bob", nogapIDPrefix+"b1", "2023-11-21T23:23:52Z")},
		&kgo.Record{Partition: 1, Value: userEvent("test-user", nogapIDPrefix+"h0", "2023-11-22T01:00:00Z")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg := watchConfig(t, brokers, 1)
	m := startMember(t, cfg)
	waitFor(t, "both entries handled", func() bool {
		return gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("written"))+gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("duplicate")) >= 2
	})
	if got := gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("duplicate")); got != 1 {
		t.Errorf("lookbacks_total{outcome=duplicate} = %v, want 1", got)
	}
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	if docs := readTopic(t, brokers, contextTopic, true); len(docs) != 1 {
		t.Errorf("read_committed: %d context documents, want 1", len(docs))
	}
	checkPostFindings(t, brokers, map[string]int{nogapIDPrefix + "h0": 1})
}
