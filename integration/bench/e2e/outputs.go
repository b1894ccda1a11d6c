package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// sentinelHeader marks the records drainTopic writes to find the end of a
// topic.
const sentinelHeader = "bench-e2e-sentinel"

// findingID returns the CloudTrail eventID a finding is about: event.id of
// a quarantine-watch alert, or eventID of the input record that the Kafka
// Streams peer and the naive baseline forward.
func findingID(v []byte) string {
	var doc struct {
		EventID string `json:"eventID"`
		Event   struct {
			ID string `json:"id"`
		} `json:"event"`
	}
	if json.Unmarshal(v, &doc) != nil {
		return ""
	}
	if doc.EventID != "" {
		return doc.EventID
	}
	return doc.Event.ID
}

// postQuarantine reports whether v is a post-quarantine alert of
// quarantine-watch (it names its watch), and returns its event and rule.
func postQuarantine(v []byte) (string, bool) {
	var doc struct {
		Event struct {
			ID string `json:"id"`
		} `json:"event"`
		Rule struct {
			ID string `json:"id"`
		} `json:"rule"`
		QW struct {
			Watch json.RawMessage `json:"watch"`
		} `json:"quarantine_watch"`
	}
	if json.Unmarshal(v, &doc) != nil || doc.QW.Watch == nil {
		return "", false
	}
	return fmt.Sprintf("%q of rule %s", doc.Event.ID, doc.Rule.ID), true
}

// drainTopic reads every committed record of topic, once its writer has
// stopped, and returns their values. It finds the end by writing a
// non-transactional sentinel record to each partition and reading, with
// isolation.level=read_committed, until it has seen all of them: unlike the
// high watermark, a sentinel is past every commit and abort marker.
func drainTopic(ctx context.Context, brokers []string, adm *kadm.Client, topic string) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	d, ok := td[topic]
	if !ok || d.Err != nil {
		return nil, fmt.Errorf("describing %s: %v", topic, d.Err)
	}
	partitions := len(d.Partitions)

	w, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, err
	}
	defer w.Close()
	for p := range partitions {
		r := &kgo.Record{Topic: topic, Partition: int32(p), Headers: []kgo.RecordHeader{{Key: sentinelHeader}}}
		if err := w.ProduceSync(ctx, r).FirstErr(); err != nil {
			return nil, fmt.Errorf("writing the sentinel of %s/%d: %w", topic, p, err)
		}
	}

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var values [][]byte
	seen := make(map[int32]bool)
	for len(seen) < partitions {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading %s: %d of %d sentinels seen: %w", topic, len(seen), partitions, ctx.Err())
		}
		if err := fs.Err0(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if len(r.Headers) > 0 && r.Headers[0].Key == sentinelHeader {
				seen[r.Partition] = true
				return
			}
			values = append(values, r.Value)
		})
	}
	return values, nil
}

// checkFindings compares the findings on a topic with the eventIDs the rule
// must report: each exactly once, nothing else.
//
// quarantine-watch's post-quarantine alerts are apart: with its watch on (the
// default), the generator's quarantined users' later calls are findings of
// their own, and which of them it reports depends on when it loaded each
// watch. They are not expected, but each (event and rule) must be there once.
func checkFindings(values [][]byte, want map[string]bool) error {
	got := make(map[string]int, len(values))
	post := map[string]int{}
	for _, v := range values {
		if key, ok := postQuarantine(v); ok {
			post[key]++
			continue
		}
		got[findingID(v)]++
	}
	var missing, extra, dups []string
	for id := range want {
		if got[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, n := range got {
		switch {
		case !want[id]:
			extra = append(extra, fmt.Sprintf("%q×%d", id, n))
		case n > 1:
			dups = append(dups, fmt.Sprintf("%s×%d", id, n))
		}
	}
	var postDups []string
	for key, n := range post {
		if n > 1 {
			postDups = append(postDups, fmt.Sprintf("%s×%d", key, n))
		}
	}
	if len(missing)+len(extra)+len(dups)+len(postDups) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d findings, %d expected", len(values), len(want))
	for _, l := range []struct {
		what string
		ids  []string
	}{{"missing", missing}, {"unexpected", extra}, {"duplicated", dups}, {"duplicated post-quarantine", postDups}} {
		if len(l.ids) > 0 {
			slices.Sort(l.ids)
			if len(l.ids) > 5 {
				l.ids = append(l.ids[:5], "...")
			}
			fmt.Fprintf(&b, "; %d %s: %s", len(l.ids), l.what, strings.Join(l.ids, ", "))
		}
	}
	return fmt.Errorf("wrong findings: %s", b.String())
}
