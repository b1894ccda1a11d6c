package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// TestCaseFileExactlyOnce runs the real binary over a planted case (issue
// 13 §1 and §3): a quarantined user with activity before the quarantine
// on every source partition, in every delivery shape, among the
// generator's traffic. The service detects the quarantine, writes the
// watch entry with the alert, and its case worker writes the context
// document. A read_committed reader must find exactly one, keyed by the
// alert id, whose counts are the generator's ground truth.
//
// On the defaults first; then with the process SIGKILLed while its
// look-back runs (the look-back slowed with --lookback-bytes-per-second
// so that the kill lands inside it, and --session-timeout 6s so that the
// case worker's group hands the entry over soon): the restarted process
// runs the look-back again and the document still appears once.
func TestCaseFileExactlyOnce(t *testing.T) {
	b := kafka.Broker(t)
	for _, tc := range []struct {
		name  string
		extra []string
		kill  bool
	}{
		{"defaults", nil, false},
		{"SIGKILL during the look-back", append([]string{"--lookback-bytes-per-second", "300000"}, fastFailover...), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline(t)
			adm := newAdmin(t, b)
			p.create(t, b, adm, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 11, Noise: 3000})
			if _, err := newSourceWriter(t, b, p.source).write(ctx, c.Values, nil); err != nil {
				t.Fatal(err)
			}
			alertID := producer.AlertID(matcher.ElasticQuarantineRule.ID, c.QuarantineEventID)

			a := startInstance(t, "a", kafkatest.Name(t, "txn-a"), serviceArgs(b, p.source, p.alerts, p.group, tc.extra...))
			killed := 0
			if tc.kill {
				waitLogged(t, a, "case worker: look-back started", alertID, 2*time.Minute)
				if n := countLogged(t, a, "case worker: context document written", alertID); n > 0 {
					t.Fatalf("the look-back finished before the kill: slow it more")
				}
				a.kill(t)
				killed++
			}
			waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, a)
			entry := watchEntryAt(ctx, t, b, p)
			waitContextCommitted(ctx, t, adm, p.group+".context", p.watchlist, entry, a)
			stopAll(t, a)
			checkUnplanned(t, a)

			writeEndMarkers(t, b, p.context)
			committed := readContextTopic(t, b, p, kgo.ReadCommitted())
			written := readContextTopic(t, b, p, kgo.ReadUncommitted())
			started := countLogged(t, a, "case worker: look-back started", alertID)
			if len(committed) != 1 {
				t.Fatalf("%d context documents to read_committed, want 1", len(committed))
			}
			counts := "ok"
			if problems := contextProblems(committed[0], c, alertID); len(problems) > 0 {
				counts = "wrong"
				t.Errorf("the context document does not match the ground truth:\n%s\n%s", problems, committed[0].Value)
			}
			if tc.kill && started < 2 {
				t.Errorf("the look-back started %d times: the killed one was not run again", started)
			}
			fmt.Fprintf(os.Stdout, "eos-case: run=%q context_docs=%d expected_counts=%s lookbacks_started=%d documents_written=%d kills=%d duplicates=%d\n",
				tc.name, len(committed), counts, started, len(written), killed, len(committed)-1)
		})
	}
}

// watchEntryAt returns where the planted user's watch entry is on the
// watchlist topic, read with read_committed.
func watchEntryAt(ctx context.Context, t *testing.T, b cluster, p pipeline) pos {
	t.Helper()
	key := producer.WatchKey(cloudtrailgen.CaseAccount, cloudtrailgen.CaseUserName)
	cl := newClient(t, b, kgo.ConsumeTopics(p.watchlist), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		fs := cl.PollFetches(wctx)
		if wctx.Err() != nil {
			t.Fatalf("no watch entry %q on %s within a minute", key, p.watchlist)
		}
		var at *kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == key && r.Value != nil {
				at = r
			}
		})
		if at != nil {
			return pos{partition: at.Partition, offset: at.Offset}
		}
	}
}

// waitContextCommitted waits until the case worker's group has committed
// past the entry.
func waitContextCommitted(ctx context.Context, t *testing.T, adm *kadm.Client, group, topic string, entry pos, in *instance) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		offsets, err := adm.FetchOffsets(ctx, group)
		if err == nil {
			if o, ok := offsets.Lookup(topic, entry.partition); ok && o.At > entry.offset {
				return
			}
		}
		in.mu.Lock()
		failure := in.failure
		in.mu.Unlock()
		if failure != nil {
			t.Fatalf("waiting for the case worker: %v", failure)
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s has not committed past the watch entry at %s %s in 3 minutes (%v)", group, topic, entry, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readContextTopic reads the context topic up to the end markers with the
// isolation level given and returns the documents.
func readContextTopic(t *testing.T, b cluster, p pipeline, level kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	cl := newClient(t, b, kgo.ConsumeTopics(p.context), kgo.FetchIsolationLevel(level),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	markers := map[int32]bool{}
	var docs []*kgo.Record
	for len(markers) < outputPartitions {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: end markers of %d of %d partitions seen", p.context, len(markers), outputPartitions)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == endMarker {
				markers[r.Partition] = true
				return
			}
			docs = append(docs, r)
		})
	}
	return docs
}

// contextProblems compares a context document with the case's ground
// truth for the default 24h window; it returns what differs.
func contextProblems(rec *kgo.Record, c *cloudtrailgen.Case, alertID string) string {
	var doc struct {
		Event struct{ Kind string }
		User  struct{ Name string }
		QW    struct {
			AlertID string `json:"alert_id"`
			Window  struct {
				Start, End string
				Cut        bool
			}
			Summary struct {
				Events   int
				AsActor  int `json:"as_actor"`
				AsTarget int `json:"as_target"`
				Actions  []struct {
					Provider, Action string
					Count            int
				}
				AccessKeyIDs []string `json:"access_key_ids"`
				Errors       []struct {
					Value string
					Count int
				}
				Notable []struct{ ID string }
			}
		} `json:"quarantine_watch"`
	}
	if err := json.Unmarshal(rec.Value, &doc); err != nil {
		return err.Error()
	}
	start := c.QuarantineTime.Add(-24 * time.Hour)
	want := c.Truth(start)
	var b bytes.Buffer
	check := func(what string, ok bool, got, want any) {
		if !ok {
			fmt.Fprintf(&b, "%s: got %v, want %v\n", what, got, want)
		}
	}
	s := doc.QW.Summary
	check("key", string(rec.Key) == alertID, string(rec.Key), alertID)
	check("alert id", doc.QW.AlertID == alertID, doc.QW.AlertID, alertID)
	check("kind", doc.Event.Kind == "enrichment", doc.Event.Kind, "enrichment")
	check("user", doc.User.Name == cloudtrailgen.CaseUserName, doc.User.Name, cloudtrailgen.CaseUserName)
	check("window", doc.QW.Window.Start == start.Format(time.RFC3339) && doc.QW.Window.End == c.QuarantineTime.Format(time.RFC3339) && !doc.QW.Window.Cut,
		doc.QW.Window, []any{start, c.QuarantineTime, "not cut"})
	check("events", s.Events == want.Events && s.AsActor == want.AsActor && s.AsTarget == want.AsTarget,
		[]int{s.Events, s.AsActor, s.AsTarget}, []int{want.Events, want.AsActor, want.AsTarget})
	actions := map[string]int{}
	for _, a := range s.Actions {
		actions[a.Provider+" "+a.Action] = a.Count
	}
	check("actions", maps.Equal(actions, want.Actions), actions, want.Actions)
	check("keys", slices.Equal(s.AccessKeyIDs, want.AccessKeyIDs), s.AccessKeyIDs, want.AccessKeyIDs)
	errs := map[string]int{}
	for _, e := range s.Errors {
		errs[e.Value] = e.Count
	}
	check("errors", maps.Equal(errs, want.Errors), errs, want.Errors)
	var notable []string
	for _, n := range s.Notable {
		notable = append(notable, n.ID)
	}
	slices.Sort(notable)
	check("notable", slices.Equal(notable, want.Notable), notable, want.Notable)
	if want.Events == 0 {
		fmt.Fprintf(&b, "the ground truth holds no event: the case tests nothing\n")
	}
	return b.String()
}

// waitLogged waits until the instance has logged msg with alertID.
func waitLogged(t *testing.T, in *instance, msg, alertID string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for countLogged(t, in, msg, alertID) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("instance %s did not log %q for alert %s within %v", in.name, msg, alertID, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countLogged counts the instance's JSON log lines (all its processes)
// with message msg and alert_id alertID.
func countLogged(t *testing.T, in *instance, msg, alertID string) int {
	t.Helper()
	data, err := os.ReadFile(in.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		var l struct {
			Msg     string `json:"msg"`
			AlertID string `json:"alert_id"`
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == msg && l.AlertID == alertID {
			n++
		}
	}
	return n
}
