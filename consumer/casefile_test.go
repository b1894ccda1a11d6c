package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

const casePartitions = 6

// caseSource is a planted case on a kfake cluster: the case's values spread
// over the source partitions, with records written before them that hold
// nothing of the user.
type caseSource struct {
	cluster *kfake.Cluster
	brokers []string
	c       *cloudtrailgen.Case
	// where the quarantine's record landed.
	partition int32
	offset    int64
	timestamp time.Time
}

// plantOnCluster produces old records (oldAt, oldPerPartition on each
// partition, noise of the generator's own that names no planted identity),
// then the case's values round-robin, each with a Kafka timestamp an hour
// after the quarantine: a delivery later than every event it holds, as
// CloudTrail's is.
func plantOnCluster(t *testing.T, seed int64, oldAt time.Time, oldPerPartition int) *caseSource {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(casePartitions, sourceTopic),
		kfake.SeedTopics(1, alertsTopic, dlqTopic, ContextTopic(alertsTopic)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	s := &caseSource{cluster: cluster, brokers: cluster.ListenAddrs(), c: cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: seed, Noise: 1500})}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	compact := "compact"
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": &compact}, WatchlistTopic(alertsTopic)); err != nil {
		t.Fatal(err)
	}
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: seed + 1000, Start: oldAt})
	var recs []*kgo.Record
	for p := range int32(casePartitions) {
		for range oldPerPartition {
			recs = append(recs, &kgo.Record{Topic: sourceTopic, Partition: p, Timestamp: oldAt, Value: gen.Next().Value})
		}
	}
	delivered := s.c.QuarantineTime.Add(time.Hour)
	for i, v := range s.c.Values {
		recs = append(recs, &kgo.Record{Topic: sourceTopic, Partition: int32(i % casePartitions), Timestamp: delivered, Value: v})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, r := range recs {
		if bytes.Contains(r.Value, []byte(s.c.QuarantineEventID)) {
			s.partition, s.offset, s.timestamp = r.Partition, r.Offset, r.Timestamp
			found++
		}
	}
	if found != 1 {
		t.Fatalf("the quarantine's event is in %d records", found)
	}
	return s
}

// entry writes a watch entry in the plan's format (ISSUE13-PLAN.md), as
// the main loop writes it when the Elastic rule fires.
func (s *caseSource) entry(lookback string) []byte {
	e := map[string]any{
		"schema": 1, "account": cloudtrailgen.CaseAccount, "user_name": cloudtrailgen.CaseUserName,
		"alert_id": producer.AlertID(matcher.ElasticQuarantineRule.ID, s.c.QuarantineEventID), "rule_id": matcher.ElasticQuarantineRule.ID,
		"opened_at": s.c.QuarantineTime.Format(time.RFC3339), "until": s.c.QuarantineTime.Add(72 * time.Hour).Format(time.RFC3339),
		"source":   map[string]any{"topic": sourceTopic, "partition": s.partition, "offset": s.offset, "timestamp": s.timestamp.Format(time.RFC3339Nano)},
		"lookback": lookback,
	}
	b, _ := json.Marshal(e)
	return b
}

// writeWatchlist writes values under the user's entry key, and, with
// otherKey, first a record under a key of another kind of state.
func (s *caseSource) writeWatchlist(t *testing.T, otherKey bool, values ...[]byte) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	key := []byte("entry/" + cloudtrailgen.CaseAccount + "/" + cloudtrailgen.CaseUserName)
	recs := []*kgo.Record{}
	if otherKey {
		recs = append(recs, &kgo.Record{Topic: WatchlistTopic(alertsTopic), Key: []byte("mark/" + cloudtrailgen.CaseAccount + "/" + cloudtrailgen.CaseUserName + "/cloudtrail/0"), Value: []byte("5")})
	}
	for _, v := range values {
		recs = append(recs, &kgo.Record{Topic: WatchlistTopic(alertsTopic), Key: key, Value: v})
	}
	for _, r := range recs {
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *caseSource) workerConfig(t *testing.T) Config {
	t.Helper()
	c := memberConfig(t, s.brokers, 1)
	c.WatchFor = DefaultWatchFor
	cfg, err := c.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startWorker runs a case worker until the test ends.
func startWorker(t *testing.T, cfg *Config, w *caseWorker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitEntries waits until the worker's group has committed n watchlist
// records.
func (s *caseSource) waitEntries(t *testing.T, cfg *Config, n int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(time.Minute)
	for {
		offsets, err := adm.FetchOffsets(context.Background(), cfg.Group+".context")
		if err == nil {
			if o, ok := offsets.Lookup(WatchlistTopic(alertsTopic), 0); ok && o.At >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the case worker has not committed %d watchlist records in a minute (%v)", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// contextDocs reads the context topic to its end with the isolation level
// given and returns the documents.
func (s *caseSource) contextDocs(t *testing.T, level kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	topic := ContextTopic(alertsTopic)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(level),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	var docs []*kgo.Record
	// Whatever isolation, every offset below the end is a record, an
	// aborted one or a transaction marker: reading stops at the marker's.
	for seen := int64(0); seen < end.Offset; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading the context topic: %v (at %d of %d)", ctx.Err(), seen, end.Offset)
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			seen = max(seen, p.LastStableOffset)
			for _, r := range p.Records {
				docs = append(docs, r)
			}
		})
	}
	return docs
}

// checkContextDoc checks one context document against the case's ground
// truth for a window of lookback, cut or not.
func checkContextDoc(t *testing.T, s *caseSource, rec *kgo.Record, lookback time.Duration, cut bool, dataStart time.Time) {
	t.Helper()
	alertID := producer.AlertID(matcher.ElasticQuarantineRule.ID, s.c.QuarantineEventID)
	if string(rec.Key) != alertID {
		t.Errorf("key %q, want the alert id %s", rec.Key, alertID)
	}
	var doc producer.ECSContext
	if header(rec, producer.HeaderAlertFormat) == producer.FormatOCSF {
		// The alert's Detection Finding, updated: the ECS form's
		// quarantine_watch.* is enrichments[0].data.
		var o producer.OCSFDetectionFinding
		if err := json.Unmarshal(rec.Value, &o); err != nil || len(o.Enrichments) != 1 {
			t.Fatalf("OCSF context document (%v): %s", err, rec.Value)
		}
		if o.TypeUID != 200402 || o.FindingInfo.UID != alertID || o.Metadata.UID != alertID || o.Cloud.Account == nil {
			t.Fatalf("not an update of the alert's finding: type %d, finding %s, metadata %s, cloud %+v", o.TypeUID, o.FindingInfo.UID, o.Metadata.UID, o.Cloud)
		}
		doc.Event.Kind = "enrichment"
		doc.User.Name = o.Enrichments[0].Value
		doc.Cloud.Account = &producer.ECSCloudAccount{ID: o.Cloud.Account.UID}
		doc.QuarantineWatch = o.Enrichments[0].Data
	} else if err := json.Unmarshal(rec.Value, &doc); err != nil {
		t.Fatalf("context document: %v\n%s", err, rec.Value)
	}
	if doc.Event.Kind != "enrichment" || doc.QuarantineWatch.AlertID != alertID || doc.User.Name != cloudtrailgen.CaseUserName ||
		doc.Cloud.Account == nil || doc.Cloud.Account.ID != cloudtrailgen.CaseAccount {
		t.Errorf("kind %q, alert id %q, user %q, cloud %+v", doc.Event.Kind, doc.QuarantineWatch.AlertID, doc.User.Name, doc.Cloud)
	}
	start := s.c.QuarantineTime.Add(-lookback)
	w := doc.QuarantineWatch.Window
	if w.Start != start.Format(time.RFC3339) || w.End != s.c.QuarantineTime.Format(time.RFC3339) || w.Cut != cut ||
		w.DataStart != dataStart.Format(time.RFC3339) || cut != (w.CutReason != "") {
		t.Errorf("window %+v; want %v to %v, data from %v, cut %v", w, start, s.c.QuarantineTime, dataStart, cut)
	}
	got, want := doc.QuarantineWatch.Summary, s.c.Truth(start)
	ok := got.Events == want.Events && got.AsActor == want.AsActor && got.AsTarget == want.AsTarget
	actions := map[string]int{}
	for _, a := range got.Actions {
		actions[a.Provider+" "+a.Action] = a.Count
	}
	ok = ok && maps.Equal(actions, want.Actions) && slices.Equal(got.AccessKeyIDs, want.AccessKeyIDs)
	var notable []string
	for _, n := range got.Notable {
		notable = append(notable, n.ID)
	}
	slices.Sort(notable)
	ok = ok && slices.Equal(notable, want.Notable)
	ips := map[string]int{}
	for _, v := range got.SourceIPs {
		ips[v.Value] = v.Count
	}
	wantIPs := map[string]int{}
	for k, v := range want.SourceIPs {
		wantIPs[k] = v.Count
	}
	ok = ok && maps.Equal(ips, wantIPs)
	errs := map[string]int{}
	for _, e := range got.Errors {
		errs[e.Value] = e.Count
	}
	ok = ok && maps.Equal(errs, want.Errors)
	if !ok {
		t.Errorf("summary does not match the ground truth:\n got  events %d (%d, %d) actions %v keys %v notable %v ips %v errors %v\n want events %d (%d, %d) actions %v keys %v notable %v ips %v errors %v",
			got.Events, got.AsActor, got.AsTarget, actions, got.AccessKeyIDs, notable, ips, errs,
			want.Events, want.AsActor, want.AsTarget, want.Actions, want.AccessKeyIDs, want.Notable, wantIPs, want.Errors)
	}
	if want.Events == 0 || len(want.AccessKeyIDs) < 2 {
		t.Fatalf("the ground truth holds %d events and %d keys: the case tests nothing", want.Events, len(want.AccessKeyIDs))
	}
}

// TestCaseWorkerContextDocument: a watch entry in, exactly one context
// document out, keyed by the alert id, whose summary is the generator's
// ground truth; a tombstone, a value that is not an entry and a key of
// another kind are skipped and counted, and write nothing.
func TestCaseWorkerContextDocument(t *testing.T) {
	for _, tc := range []struct {
		name      string
		lookback  time.Duration
		oldAt     time.Duration // before the quarantine
		deleteTo  int64         // DeleteRecords on every partition up to this offset
		cut       bool
		dataStart time.Duration // before the quarantine; 0: the window's start
		ocsf      bool          // --alert-format ocsf
	}{
		{name: "24h, old records before the window", lookback: 24 * time.Hour, oldAt: 72 * time.Hour},
		{name: "48h, retention deleted the window's start", lookback: 48 * time.Hour, oldAt: 40 * time.Hour, deleteTo: 10, cut: true, dataStart: 40 * time.Hour},
		{name: "24h, OCSF", lookback: 24 * time.Hour, oldAt: 72 * time.Hour, ocsf: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := plantOnCluster(t, 7, time.Date(2024, 11, 2, 12, 0, 0, 0, time.UTC).Add(-tc.oldAt), 50)
			if tc.deleteTo > 0 {
				cl, _ := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
				del := kadm.Offsets{}
				for p := range int32(casePartitions) {
					del.Add(kadm.Offset{Topic: sourceTopic, Partition: p, At: tc.deleteTo})
				}
				res, err := kadm.NewClient(cl).DeleteRecords(context.Background(), del)
				if err == nil {
					err = res.Error()
				}
				cl.Close()
				if err != nil {
					t.Fatalf("deleting records: %v", err)
				}
			}
			s.writeWatchlist(t, true, nil, []byte(`{"schema":1,"account":`), s.entry(tc.lookback.String()))
			cfg := s.workerConfig(t)
			if tc.ocsf {
				cfg.Encoder = producer.OCSF{}
			}
			startWorker(t, &cfg, newCaseWorker(&cfg))
			s.waitEntries(t, &cfg, 4)
			docs := s.contextDocs(t, kgo.ReadCommitted())
			if len(docs) != 1 {
				t.Fatalf("%d context documents, want 1", len(docs))
			}
			ds := s.c.QuarantineTime.Add(-tc.lookback)
			if tc.dataStart > 0 {
				ds = s.c.QuarantineTime.Add(-tc.dataStart)
			}
			checkContextDoc(t, s, docs[0], tc.lookback, tc.cut, ds)
			for outcome, want := range map[string]float64{"written": 1, "ended": 1, "bad_entry": 1, "other_key": 1, "failed": 0} {
				if got := value(t, cfg.Metrics.Lookbacks.WithLabelValues(outcome)); got != want {
					t.Errorf("lookbacks_total{outcome=%q} = %v, want %v", outcome, got, want)
				}
			}
			read := value(t, cfg.Metrics.LookbackRecords)
			// The finding's record once, then every case value once a
			// pass (the name, then the keys it taught), the old records
			// before the window never.
			if read < float64(1+len(s.c.Values)) || tc.deleteTo == 0 && (int(read)-1)%len(s.c.Values) != 0 {
				t.Errorf("look-back read %v records; the case has %d values after %d old ones", read, len(s.c.Values), 50*casePartitions)
			}
			t.Logf("context document: %s", docs[0].Value)
		})
	}
}

// TestCaseWorkerExactlyOnce: a look-back whose transaction is aborted, or
// whose process dies, after its document was produced is run again, and a
// read_committed reader sees one document; a read_uncommitted one sees
// the copy that was written and never committed, which shows the re-run
// happened.
func TestCaseWorkerExactlyOnce(t *testing.T) {
	errTestAbort := errors.New("test: abort")
	for _, tc := range []struct {
		name  string
		fault error
	}{
		{"abort after producing", errTestAbort},
		{"crash after producing", errCrashed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := plantOnCluster(t, 3, time.Date(2024, 10, 30, 0, 0, 0, 0, time.UTC), 20)
			s.writeWatchlist(t, false, s.entry("24h0m0s"))
			cfg := s.workerConfig(t)
			w := newCaseWorker(&cfg)
			var faults atomic.Int32
			w.testBeforeEnd = func() error {
				if faults.Add(1) == 1 {
					return tc.fault
				}
				return nil
			}
			startWorker(t, &cfg, w)
			s.waitEntries(t, &cfg, 1)
			committed := s.contextDocs(t, kgo.ReadCommitted())
			all := s.contextDocs(t, kgo.ReadUncommitted())
			t.Logf("%s: runs=%d context_docs(read_committed)=%d written(read_uncommitted)=%d", tc.name, faults.Load(), len(committed), len(all))
			if faults.Load() != 2 || len(all) != 2 {
				t.Fatalf("%d runs, %d documents written: the fault did not happen as planned", faults.Load(), len(all))
			}
			if len(committed) != 1 {
				t.Fatalf("%d context documents to read_committed, want 1", len(committed))
			}
			checkContextDoc(t, s, committed[0], 24*time.Hour, false, s.c.QuarantineTime.Add(-24*time.Hour))
			if !bytes.Equal(all[0].Value, all[1].Value) {
				t.Errorf("the re-run wrote another document:\n%s\n%s", all[0].Value, all[1].Value)
			}
			fmt.Fprintf(testOutput{t}, "eos-case(kfake, %s): context_docs=1 expected_counts=ok reruns=1\n", tc.name)
		})
	}
}

type testOutput struct{ t *testing.T }

func (o testOutput) Write(p []byte) (int, error) {
	o.t.Log(string(bytes.TrimSuffix(p, []byte("\n"))))
	return len(p), nil
}

// TestRunStartsCaseWorker: with the watch on, Run runs the case worker
// beside the loop; an entry on the watchlist gets its context document.
// The loop's rules are one that the case does not fire, so that the entry
// written here is the only one.
func TestRunStartsCaseWorker(t *testing.T) {
	s := plantOnCluster(t, 5, time.Date(2024, 10, 30, 0, 0, 0, 0, time.UTC), 10)
	cfg := memberConfig(t, s.brokers, 1)
	cfg.WatchFor = DefaultWatchFor
	cfg.Matcher.Rules = []*matcher.Rule{matcher.QuarantineDetachedRule}
	m := startMember(t, cfg)
	s.writeWatchlist(t, false, s.entry("24h0m0s"))
	withDefaults, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s.waitEntries(t, &withDefaults, 1)
	if err := m.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	docs := s.contextDocs(t, kgo.ReadCommitted())
	if len(docs) != 1 {
		t.Fatalf("%d context documents, want 1", len(docs))
	}
	checkContextDoc(t, s, docs[0], 24*time.Hour, false, s.c.QuarantineTime.Add(-24*time.Hour))
}

// TestCaseWorkerSourceRecordGone: an entry whose finding's source record
// cannot be read again (here its topic is not a source topic: an entry
// written by another deployment, or a topic since deleted) still gets its
// document, promptly, with the finding's own event counted (it could not
// be told apart), instead of holding the worker on the entry forever.
func TestCaseWorkerSourceRecordGone(t *testing.T) {
	s := plantOnCluster(t, 7, time.Date(2024, 10, 30, 0, 0, 0, 0, time.UTC), 10)
	var e map[string]any
	if err := json.Unmarshal(s.entry("24h0m0s"), &e); err != nil {
		t.Fatal(err)
	}
	e["source"].(map[string]any)["topic"] = "cloudtrail-of-another-deployment"
	entry, _ := json.Marshal(e)
	s.writeWatchlist(t, false, entry)
	cfg := s.workerConfig(t)
	startWorker(t, &cfg, newCaseWorker(&cfg))
	began := time.Now()
	s.waitEntries(t, &cfg, 1)
	docs := s.contextDocs(t, kgo.ReadCommitted())
	if len(docs) != 1 {
		t.Fatalf("%d context documents, want 1", len(docs))
	}
	var doc producer.ECSContext
	if err := json.Unmarshal(docs[0].Value, &doc); err != nil {
		t.Fatal(err)
	}
	want := s.c.Truth(s.c.QuarantineTime.Add(-24 * time.Hour))
	alertID := producer.AlertID(matcher.ElasticQuarantineRule.ID, s.c.QuarantineEventID)
	if string(docs[0].Key) != alertID || doc.QuarantineWatch.AlertID != alertID ||
		doc.QuarantineWatch.Summary.Events != want.Events+1 || doc.QuarantineWatch.Summary.AsTarget != want.AsTarget+1 {
		t.Errorf("key %s, alert id %s, events %d (on the user %d); want %s, %d (%d): the truth and the finding's own event",
			docs[0].Key, doc.QuarantineWatch.AlertID, doc.QuarantineWatch.Summary.Events, doc.QuarantineWatch.Summary.AsTarget,
			alertID, want.Events+1, want.AsTarget+1)
	}
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("the document took %v", took)
	}
}

// TestCaseWorkerDocumentTooLarge: a context document larger than the
// context topic's max.message.bytes (a busy user: many addresses, agents,
// calls) is cut to fit, its lists shortened to their most frequent values
// and the cuts listed, its counts whole; it is written once, and the worker
// goes on to the next entry instead of producing the refused document
// again and again.
func TestCaseWorkerDocumentTooLarge(t *testing.T) {
	s := plantOnCluster(t, 7, time.Date(2024, 10, 30, 0, 0, 0, 0, time.UTC), 10)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	small := "4000"
	_, err = kadm.NewClient(cl).AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: &small}}, ContextTopic(alertsTopic))
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	s.writeWatchlist(t, false, s.entry("24h0m0s"), nil)
	cfg := s.workerConfig(t)
	startWorker(t, &cfg, newCaseWorker(&cfg))
	s.waitEntries(t, &cfg, 2)
	docs := s.contextDocs(t, kgo.ReadCommitted())
	if len(docs) != 1 {
		t.Fatalf("%d context documents, want 1", len(docs))
	}
	if len(docs[0].Value) > 4000 {
		t.Errorf("the document is %d bytes, over the topic's 4000", len(docs[0].Value))
	}
	var doc producer.ECSContext
	if err := json.Unmarshal(docs[0].Value, &doc); err != nil {
		t.Fatal(err)
	}
	want := s.c.Truth(s.c.QuarantineTime.Add(-24 * time.Hour))
	got := doc.QuarantineWatch.Summary
	if got.Events != want.Events || got.AsActor != want.AsActor || got.AsTarget != want.AsTarget || len(got.Truncated) == 0 {
		t.Errorf("events %d (%d, %d), cut %+v; want %d (%d, %d) and the cuts listed", got.Events, got.AsActor, got.AsTarget, got.Truncated,
			want.Events, want.AsActor, want.AsTarget)
	}
	for _, c := range got.Truncated {
		if c.Kept >= c.Total {
			t.Errorf("cut %+v keeps everything", c)
		}
	}
	if v := value(t, cfg.Metrics.Lookbacks.WithLabelValues("written")); v != 1 {
		t.Errorf("lookbacks_total{outcome=written} = %v, want 1", v)
	}
	t.Logf("%d bytes: %s", len(docs[0].Value), docs[0].Value)
}
