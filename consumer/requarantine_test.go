package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// quarantineAt returns the sample quarantine of test-user as another event:
// the id ends in suffix, the event time is eventTime. AWS attaches the
// policy again on a second exposure of the user's keys, or an operator
// attaches another version of it.
func quarantineAt(t *testing.T, suffix, eventTime string) []byte {
	t.Helper()
	q := readSample(t, "02_attach_user_policy_quarantine_v2_panther.json") // 2023-11-21T23:23:52Z
	q = bytes.ReplaceAll(q, []byte("2023-11-21T23:23:52Z"), []byte(eventTime))
	return bytes.ReplaceAll(q, []byte("e7bb4b23-66e1-4656-b607-f575fde3b790"), []byte("e7bb4b23-66e1-4656-b607-f575fde3b7"+suffix))
}

// callsADayLaterThenCheck waits for both context documents of test-user's
// two quarantines, produces calls of the user named by the last three of
// ids: one delivered late, whose time (23:35 on the first day) is between
// the two quarantines, and one a day later on each partition. Then it
// stops member m and checks that each of ids is one post-quarantine
// finding, that there are two context documents, and the windows the
// alerts name (checkWatchWindows).
func callsADayLaterThenCheck(t *testing.T, brokers []string, adm *kadm.Client, cl *kgo.Client, cfg Config, m *member, ids ...string) {
	t.Helper()
	waitFor(t, "a context document per quarantine", func() bool {
		return gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("written")) >= 2
	})
	later := ids[len(ids)-3:]
	if err := cl.ProduceSync(context.Background(),
		&kgo.Record{Partition: 1, Value: userEvent("test-user", nogapIDPrefix+later[0], "2023-11-21T23:35:00Z")},
		&kgo.Record{Partition: 0, Value: userEvent("test-user", nogapIDPrefix+later[1], "2023-11-22T01:00:00Z")},
		&kgo.Record{Partition: 1, Value: userEvent("test-user", nogapIDPrefix+later[2], "2023-11-22T01:00:00Z")},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, adm, cfg.Group, 30*time.Second)
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for _, id := range ids {
		want[nogapIDPrefix+id] = 1
	}
	checkPostFindings(t, brokers, want)
	if docs := readTopic(t, brokers, contextTopic, true); len(docs) != 2 {
		t.Errorf("read_committed: %d context documents, want 2", len(docs))
	}
	checkWatchWindows(t, brokers)
}

// checkWatchWindows checks that every post-quarantine alert names its
// watch's window as the quarantine set it: opened at the time of one of
// the test's quarantines (quarantineTimes), until 72 hours later (the
// service's --watch-for), whichever part of it the instance matched with.
func checkWatchWindows(t *testing.T, brokers []string) {
	t.Helper()
	post := map[string]bool{}
	for _, r := range matcher.PostQuarantineRules {
		post[r.ID] = true
	}
	for _, r := range readTopic(t, brokers, alertsTopic, true) {
		if !post[header(r, producer.HeaderRuleID)] {
			continue
		}
		var a struct {
			QW struct {
				Watch struct {
					OpenedAt time.Time `json:"opened_at"`
					Until    time.Time `json:"until"`
				} `json:"watch"`
			} `json:"quarantine_watch"`
		}
		if err := json.Unmarshal(r.Value, &a); err != nil {
			t.Fatalf("a post-quarantine alert that is not JSON: %v", err)
		}
		w := a.QW.Watch
		if !slices.Contains(quarantineTimes, w.OpenedAt.Format(time.RFC3339)) || !w.Until.Equal(w.OpenedAt.Add(72*time.Hour)) {
			t.Errorf("a post-quarantine alert names the window (%s, %s], want a quarantine's of %v and 72 hours", w.OpenedAt.Format(time.RFC3339),
				w.Until.Format(time.RFC3339), quarantineTimes)
		}
	}
}

// quarantineTimes are the event times of the quarantines of these tests.
var quarantineTimes = []string{"2023-11-21T23:23:52Z", "2023-11-21T23:40:00Z", "2023-11-22T00:00:00Z"}

// twoQuarantinesInOneBatch produces batch, test-user's two quarantines
// and calls, on the source topic's two partitions, then starts one member
// on the service's defaults, and goes on as callsADayLaterThenCheck. It
// returns the cluster's brokers.
func twoQuarantinesInOneBatch(t *testing.T, batch []*kgo.Record, ids ...string) []string {
	t.Helper()
	brokers, adm, cl := oneBrokerWatchCluster(t, 2)
	ctx := context.Background()
	if err := cl.ProduceSync(ctx, batch...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg := watchConfig(t, brokers, 1)
	m := startMember(t, cfg)
	waitCommitted(t, adm, cfg.Group, 30*time.Second)
	callsADayLaterThenCheck(t, brokers, adm, cl, cfg, m, ids...)
	return brokers
}

// TestSecondQuarantineInTheSameBatch: test-user is quarantined twice and
// both quarantines arrive in one batch with the user's calls on both
// partitions, so the loader has the second entry before any marker of the
// first is written. Every call after the first quarantine is one
// post-quarantine finding: those between the two as well as those after
// the second. Run on the service's defaults, one member.
func TestSecondQuarantineInTheSameBatch(t *testing.T) {
	at := func(p int32, value []byte) *kgo.Record { return &kgo.Record{Partition: p, Value: value} }
	twoQuarantinesInOneBatch(t, []*kgo.Record{
		at(0, quarantineAt(t, "a1", "2023-11-21T23:23:52Z")),
		at(1, userEvent("test-user", nogapIDPrefix+"j0", "2023-11-21T23:30:00Z")),
		at(0, userEvent("test-user", nogapIDPrefix+"j1", "2023-11-21T23:31:00Z")),
		at(0, quarantineAt(t, "a2", "2023-11-21T23:40:00Z")),
		at(1, userEvent("test-user", nogapIDPrefix+"j2", "2023-11-21T23:50:00Z")),
		at(0, userEvent("test-user", nogapIDPrefix+"j3", "2023-11-21T23:51:00Z")),
	}, "j0", "j1", "j2", "j3", "j6", "j4", "j5")
}

// TestQuarantinesOutOfOrder: test-user's second quarantine is on partition
// 0 and its first on partition 1 of one batch, so the loop writes the
// second's entry first (the loaders read the first one last). Every call
// after the first quarantine is one post-quarantine finding.
func TestQuarantinesOutOfOrder(t *testing.T) {
	at := func(p int32, value []byte) *kgo.Record { return &kgo.Record{Partition: p, Value: value} }
	brokers := twoQuarantinesInOneBatch(t, []*kgo.Record{
		at(0, quarantineAt(t, "d2", "2023-11-21T23:40:00Z")),
		at(0, userEvent("test-user", nogapIDPrefix+"m0", "2023-11-21T23:30:00Z")),
		at(0, userEvent("test-user", nogapIDPrefix+"m1", "2023-11-21T23:50:00Z")),
		at(1, quarantineAt(t, "d1", "2023-11-21T23:23:52Z")),
		at(1, userEvent("test-user", nogapIDPrefix+"m2", "2023-11-21T23:31:00Z")),
		at(1, userEvent("test-user", nogapIDPrefix+"m3", "2023-11-21T23:51:00Z")),
	}, "m0", "m1", "m2", "m3", "m6", "m4", "m5")
	entries := watchEntryRecords(t, brokers)
	if len(entries) != 2 || !bytes.Contains(entries[0].Value, []byte("2023-11-21T23:40:00Z")) {
		t.Errorf("watch entries %d, want 2, the second quarantine's first: the test no longer reads them out of order", len(entries))
	}
}

// TestSecondQuarantineAfterTheFirstsMarkers: test-user's first watch is
// loaded and marked everywhere; then the second quarantine arrives in one
// batch with the user's calls after it, which the loop matches with the
// first watch (the second is loaded after the batch). The second watch's
// case worker must not report them again below its markers. Every call is
// one post-quarantine finding.
func TestSecondQuarantineAfterTheFirstsMarkers(t *testing.T) {
	brokers, adm, cl := oneBrokerWatchCluster(t, 2)
	ctx := context.Background()
	at := func(p int32, value []byte) *kgo.Record { return &kgo.Record{Partition: p, Value: value} }
	cfg := watchConfig(t, brokers, 1)
	m := startMember(t, cfg)
	if err := cl.ProduceSync(ctx,
		at(0, quarantineAt(t, "b1", "2023-11-21T23:23:52Z")),
		at(1, userEvent("test-user", nogapIDPrefix+"k0", "2023-11-21T23:30:00Z")),
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first context document", func() bool {
		return gaugeValue(t, cfg.Metrics.Lookbacks.WithLabelValues("written")) >= 1
	})
	if err := cl.ProduceSync(ctx,
		at(0, quarantineAt(t, "b2", "2023-11-22T00:00:00Z")),
		at(1, userEvent("test-user", nogapIDPrefix+"k1", "2023-11-22T00:10:00Z")),
		at(0, userEvent("test-user", nogapIDPrefix+"k2", "2023-11-22T00:11:00Z")),
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	callsADayLaterThenCheck(t, brokers, adm, cl, cfg, m, "k0", "k1", "k2", "k5", "k3", "k4")
}

// TestSuccessiveWatchesOfAUser: the loader's windows for test-user
// quarantined four times, the entries read out of the order of their
// opening (the second watch set to 24 hours, the others to 72), and the
// gap of each watch's case worker, as successive.go defines them, written
// out by hand.
func TestSuccessiveWatchesOfAUser(t *testing.T) {
	cfg := watchConfig(t, nil, 1)
	now := time.Date(2023, 11, 22, 1, 30, 0, 0, time.UTC)
	cfg.Now = func() time.Time { return now }
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		t.Fatal(err)
	}
	w := newWatchLoader(&cfg, m)
	offset := int64(0)
	apply := func(alert, opened, until string) {
		t.Helper()
		r := entryRecord("test-user", opened, until)
		i := bytes.Index(r.Value, []byte(`"alert_id":"`)) + len(`"alert_id":"`)
		copy(r.Value[i:], alert) // the alert id's first two hex digits
		r.Offset = offset
		offset++
		w.apply(r)
		w.entriesDirty = true
		w.publish()
	}
	type window struct{ alert, opened, until string }
	check := func(what string, want []window) {
		t.Helper()
		var got []window
		for _, e := range m.Watchlist().Entries() {
			got = append(got, window{e.AlertID[:2], e.OpenedAt.Format(time.RFC3339), e.Until.Format(time.RFC3339)})
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: windows %v, want %v", what, got, want)
		}
	}
	checkGap := func(what string, want []window) {
		t.Helper()
		s, _ := w.current()
		var got []window
		for id, gap := range s.gap {
			if len(gap) == 0 {
				got = append(got, window{id[:2], "", ""})
			}
			for _, e := range gap {
				got = append(got, window{id[:2], e.OpenedAt.Format(time.RFC3339), e.Until.Format(time.RFC3339)})
			}
		}
		slices.SortFunc(got, func(a, b window) int { return strings.Compare(a.alert+a.opened, b.alert+b.opened) })
		if !slices.Equal(got, want) {
			t.Errorf("%s: gaps %v, want %v", what, got, want)
		}
	}
	apply("e1", "2023-11-21T23:00:00Z", "2023-11-24T23:00:00Z")
	apply("e3", "2023-11-22T02:00:00Z", "2023-11-25T02:00:00Z") // read before the second
	apply("e2", "2023-11-22T01:00:00Z", "2023-11-23T01:00:00Z")
	three := []window{
		{"e1", "2023-11-21T23:00:00Z", "2023-11-22T01:00:00Z"},
		{"e2", "2023-11-22T01:00:00Z", "2023-11-22T02:00:00Z"},
		{"e3", "2023-11-22T02:00:00Z", "2023-11-25T02:00:00Z"},
	}
	check("three quarantines", three)
	checkGap("three quarantines", []window{
		{"e1", "2023-11-21T23:00:00Z", "2023-11-24T23:00:00Z"},
		{"e2", "", ""}, // the first and the third had all of it
		{"e3", "2023-11-24T23:00:00Z", "2023-11-25T02:00:00Z"},
	})

	apply("e0", "2023-11-21T22:00:00Z", "2023-11-24T22:00:00Z") // an earlier quarantine, read last
	four := append([]window{{"e0", "2023-11-21T22:00:00Z", "2023-11-21T23:00:00Z"}}, three...)
	check("an earlier quarantine read last", four)
	checkGap("an earlier quarantine read last", []window{
		{"e0", "2023-11-21T22:00:00Z", "2023-11-21T23:00:00Z"},
		{"e1", "2023-11-21T23:00:00Z", "2023-11-24T23:00:00Z"},
		{"e2", "", ""},
		{"e3", "2023-11-24T23:00:00Z", "2023-11-25T02:00:00Z"},
	})
	apply("e2", "2023-11-22T01:00:00Z", "2023-11-23T01:00:00Z")
	check("the second quarantine read again", four)
	if s, _ := w.current(); len(s.entries) != 4 {
		t.Errorf("the snapshot has %d watches, want 4 (markers are written for each)", len(s.entries))
	}

	// The windows of e0 and e1 ended at 23:00 and 01:00; an hour of grace
	// after, they are dropped; e2's (to 02:00) is not.
	now = time.Date(2023, 11, 22, 2, 0, 1, 0, time.UTC)
	if !w.expire() {
		t.Error("expire: nothing dropped, want the first two windows")
	}
	w.entriesDirty = true
	w.publish()
	check("the first two windows expired", three[1:])

	for i := range 40 {
		opened := time.Date(2023, 11, 22, 4, i, 0, 0, time.UTC)
		apply(fmt.Sprintf("%02x", 0x10+i), opened.Format(time.RFC3339), opened.Add(72*time.Hour).Format(time.RFC3339))
	}
	if n := m.Watchlist().Len(); n != maxWatchesPerUser {
		t.Errorf("after 42 quarantines of the user: %d windows, want %d", n, maxWatchesPerUser)
	}
}

// TestSecondQuarantineAcrossMembers: two members share six partitions;
// test-user is quarantined twice, each time with calls on every partition
// in the quarantine's burst (the member without the quarantine's partition
// matches them before its loader has the entry). Then one member stops and
// its partitions move. Every call after the first quarantine is one
// finding to read_committed, and each watch has its markers on every
// partition.
func TestSecondQuarantineAcrossMembers(t *testing.T) {
	const partitions = 6
	brokers, adm, cl := oneBrokerWatchCluster(t, partitions)
	want := map[string]int{}
	produce := func(quarantine []byte, digit byte, eventTime string) {
		t.Helper()
		var recs []*kgo.Record
		if quarantine != nil {
			recs = append(recs, &kgo.Record{Partition: 1, Value: quarantine})
		}
		for p := range int32(partitions) {
			id := nogapIDPrefix + string(rune(digit)) + string(rune('0'+p))
			recs = append(recs, &kgo.Record{Partition: p, Value: userEvent("test-user", id, eventTime)})
			want[id] = 1
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	documents := func(cfgs ...Config) float64 {
		n := 0.0
		for _, c := range cfgs {
			n += gaugeValue(t, c.Metrics.Lookbacks.WithLabelValues("written"))
		}
		return n
	}

	cfg1, cfg2 := watchConfig(t, brokers, 1), watchConfig(t, brokers, 2)
	m1, m2 := startMember(t, cfg1), startMember(t, cfg2)
	waitReady(t, cfg1, m1)
	waitReady(t, cfg2, m2)
	waitTwoMembersAssigned(t, adm, cfg1.Group)

	produce(quarantineAt(t, "c1", "2023-11-21T23:23:52Z"), 'a', "2023-11-21T23:33:52Z")
	waitFor(t, "the first context document", func() bool { return documents(cfg1, cfg2) >= 1 })
	produce(quarantineAt(t, "c2", "2023-11-22T00:00:00Z"), 'b', "2023-11-22T00:10:00Z")
	waitFor(t, "the second context document", func() bool { return documents(cfg1, cfg2) >= 2 })
	produce(nil, 'c', "2023-11-22T01:00:00Z")
	waitCommitted(t, adm, cfg1.Group, 30*time.Second)
	if err := m2.stop(t); err != nil {
		t.Fatal(err)
	}
	produce(nil, 'd', "2023-11-22T02:00:00Z")
	waitCommitted(t, adm, cfg1.Group, 30*time.Second)
	if err := m1.stop(t); err != nil {
		t.Fatal(err)
	}
	checkPostFindings(t, brokers, want)
	checkWatchWindows(t, brokers)
	if marks := committedMarkers(t, brokers); marks != 2*partitions {
		t.Errorf("%d markers committed, want one per watch and partition (%d)", marks, 2*partitions)
	}
}
