package consumer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

const (
	sourceTopic = "cloudtrail"
	alertsTopic = "quarantine-alerts"
	dlqTopic    = "quarantine-alerts.dlq"
)

// expectation is what the alerts and dead-letter topics must hold once a
// source topic is consumed: each alert id and each malformed record exactly once.
type expectation struct {
	alerts      map[string]bool // alert ids
	deadLetters map[string]bool // "partition/offset" of malformed source records
	records     int
}

// loadSource produces n generated records round-robin over the source
// partitions and says what the outputs must hold.
func loadSource(t *testing.T, cl *kgo.Client, n int, cfg cloudtrailgen.Config) expectation {
	t.Helper()
	gen := cloudtrailgen.New(cfg)
	exp := expectation{alerts: map[string]bool{}, deadLetters: map[string]bool{}, records: n}
	recs := make([]*kgo.Record, 0, n)
	gens := make([]cloudtrailgen.Record, 0, n)
	for range n {
		r := gen.Next()
		gens = append(gens, r)
		recs = append(recs, &kgo.Record{Topic: sourceTopic, Value: r.Value})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatalf("producing source: %v", err)
	}
	for i, r := range gens {
		for _, id := range r.Positives() {
			exp.alerts[producer.AlertID(matcher.ElasticQuarantineRule.ID, id)] = true
		}
		if r.Malformed {
			exp.deadLetters[fmt.Sprintf("%d/%d", recs[i].Partition, recs[i].Offset)] = true
		}
	}
	return exp
}

// drained is what a read_committed reader found on the outputs.
type drained struct {
	alerts      map[string]int // alert id → copies
	deadLetters map[string]int // source "partition/offset" → copies
}

// endMarker is written to every output partition once all members have
// stopped: a read_committed reader that sees it has read everything before
// it, and sees it only if no transaction was left hanging.
const endMarker = "__end_of_test__"

// drain writes an end marker to every partition of the alerts and
// dead-letter topics, then reads both from the start with
// isolation.level=read_committed until it has seen every marker.
func drain(t *testing.T, brokers []string) drained {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	writer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	topics, err := kadm.NewClient(writer).ListTopics(ctx, alertsTopic, dlqTopic)
	if err != nil {
		t.Fatalf("listing outputs: %v", err)
	}
	pending := map[string]bool{}
	for _, td := range topics {
		for p := range td.Partitions {
			pending[fmt.Sprintf("%s/%d", td.Topic, p)] = true
			r := &kgo.Record{Topic: td.Topic, Partition: p, Key: []byte(endMarker)}
			if err := writer.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("writing end marker: %v", err)
			}
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(alertsTopic, dlqTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := drained{alerts: map[string]int{}, deadLetters: map[string]int{}}
	for len(pending) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("draining outputs: %v; no end marker yet from %v", err, pending)
		}
		fs.EachRecord(func(r *kgo.Record) {
			switch {
			case string(r.Key) == endMarker:
				delete(pending, fmt.Sprintf("%s/%d", r.Topic, r.Partition))
			case r.Topic == alertsTopic:
				out.alerts[string(r.Key)]++
			case r.Topic == dlqTopic:
				out.deadLetters[header(r, producer.HeaderSourcePartition)+"/"+header(r, producer.HeaderSourceOffset)]++
			}
		})
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// check compares what was drained with what was expected and reports
// duplicates, losses and strays.
func check(t *testing.T, exp expectation, got drained) {
	t.Helper()
	compare := func(what string, want map[string]bool, have map[string]int) {
		var lost, dup, stray int
		for k := range want {
			switch have[k] {
			case 0:
				lost++
			case 1:
			default:
				dup++
			}
		}
		for k := range have {
			if !want[k] {
				stray++
			}
		}
		t.Logf("%s: expected %d, read %d distinct, lost %d, duplicated %d, unexpected %d", what, len(want), len(have), lost, dup, stray)
		if lost+dup+stray > 0 {
			t.Errorf("%s: lost %d, duplicated %d, unexpected %d", what, lost, dup, stray)
		}
	}
	compare("alerts", exp.alerts, got.alerts)
	compare("dead letters", exp.deadLetters, got.deadLetters)
}

// waitCommitted polls until the group has committed the end of every source partition.
func waitCommitted(t *testing.T, adm *kadm.Client, group string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ends, err1 := adm.ListEndOffsets(ctx, sourceTopic)
		committed, err2 := adm.FetchOffsets(ctx, group)
		cancel()
		behind := -1
		if err1 == nil && err2 == nil {
			behind = 0
			ends.Each(func(o kadm.ListedOffset) {
				c, _ := committed.Lookup(o.Topic, o.Partition)
				if c.At < o.Offset {
					behind++
				}
			})
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s has not committed the source's end after %v (partitions behind: %d, errors: %v %v)", group, timeout, behind, err1, err2)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type member struct {
	cancel context.CancelFunc
	done   chan error
}

func startMember(t *testing.T, cfg Config) *member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- Run(ctx, cfg) }()
	return m
}

func (m *member) stop(t *testing.T) error {
	t.Helper()
	m.cancel()
	select {
	case err := <-m.done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("member did not stop within a minute")
		return nil
	}
}

func newCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, sourceTopic, alertsTopic, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(string(p))
	return len(p), nil
}

func memberConfig(t *testing.T, brokers []string, id int) Config {
	return Config{
		Brokers:         brokers,
		SourceTopics:    []string{sourceTopic},
		AlertsTopic:     alertsTopic,
		Group:           "quarantine-watch",
		TransactionalID: "quarantine-watch-" + strconv.Itoa(id),
		MaxBatch:        500,
		Workers:         2,
		Matcher:         matcher.Config{Validate: true},
		Logger:          testLogger(t),
		ShutdownTimeout: 10 * time.Second,
		Now:             func() time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) },
		ClientOpts:      []kgo.Opt{kgo.FetchMaxWait(100 * time.Millisecond)},
	}
}

// TestExactlyOnce runs three group members over thousands of generated
// records with known findings and malformed records: one member is stopped
// abruptly mid-run and one joins late. A read_committed reader must then see
// every expected finding once and every malformed record once in the DLQ.
func TestExactlyOnce(t *testing.T) {
	cluster := newCluster(t)
	brokers := cluster.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	exp := loadSource(t, cl, 6000, cloudtrailgen.Config{Seed: 7, QuarantineRate: 0.01, NearMissRate: 0.05, MalformedRate: 0.01})
	if len(exp.alerts) < 50 || len(exp.deadLetters) < 30 {
		t.Fatalf("generator gave too few cases to prove anything: %d alerts, %d malformed", len(exp.alerts), len(exp.deadLetters))
	}

	first := startMember(t, memberConfig(t, brokers, 1))
	// The second member is stopped abruptly: its open transaction gets no
	// time to end, so it is cut off and must be aborted and its batch
	// replayed by the others.
	abrupt := memberConfig(t, brokers, 2)
	abrupt.ShutdownTimeout = time.Millisecond
	second := startMember(t, abrupt)
	waitProgress(t, cl, "quarantine-watch", 1000)
	second.cancel()
	third := startMember(t, memberConfig(t, brokers, 3))

	adm := kadm.NewClient(cl)
	waitCommitted(t, adm, "quarantine-watch", 2*time.Minute)
	for _, m := range []*member{first, third} {
		if err := m.stop(t); err != nil {
			t.Errorf("member stopped with an error: %v", err)
		}
	}
	<-second.done
	check(t, exp, drain(t, brokers))
}

// waitProgress polls until the group has committed at least min offsets in total.
func waitProgress(t *testing.T, cl *kgo.Client, group string, min int64) {
	t.Helper()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		offsets, err := adm.FetchOffsets(context.Background(), group)
		if err == nil {
			var total int64
			offsets.Each(func(o kadm.OffsetResponse) { total += max(o.At, 0) })
			if total >= min {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("group %s made no progress in a minute", group)
}

func TestMissingTopicsAreNamed(t *testing.T) {
	cluster := newCluster(t)
	cfg := memberConfig(t, cluster.ListenAddrs(), 1)
	cfg.SourceTopics = []string{"no-such-source"}
	cfg.AlertsTopic = "no-such-alerts"
	err := Run(context.Background(), cfg)
	for _, want := range []string{`"no-such-source"`, `"no-such-alerts"`, `"no-such-alerts.dlq"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}

	cfg.SourceTopics = []string{sourceTopic}
	cfg.CreateTopics = true
	m := startMember(t, cfg)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(30 * time.Second)
	for {
		topics, err := adm.ListTopics(context.Background(), "no-such-alerts", "no-such-alerts.dlq")
		if err == nil && topics.Has("no-such-alerts") && topics.Has("no-such-alerts.dlq") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CreateTopics did not create the outputs: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := m.stop(t); err != nil {
		t.Fatalf("with CreateTopics: %v", err)
	}
}

func TestTimeouts(t *testing.T) {
	base := Config{Brokers: []string{"127.0.0.1:9092"}, SourceTopics: []string{sourceTopic},
		AlertsTopic: alertsTopic, Group: "g", TransactionalID: "t"}
	for _, tc := range []struct {
		name                 string
		session, transaction time.Duration
		wantSession, wantTxn time.Duration
		wantErr              string
	}{
		{name: "defaults", wantSession: 45 * time.Second, wantTxn: time.Minute},
		{name: "session only", session: 6 * time.Second, wantSession: 6 * time.Second, wantTxn: 21 * time.Second},
		{name: "both", session: 6 * time.Second, transaction: 10 * time.Second, wantSession: 6 * time.Second, wantTxn: 10 * time.Second},
		{name: "transaction only", transaction: 50 * time.Second, wantSession: 45 * time.Second, wantTxn: 50 * time.Second},
		{name: "transaction below session", session: 6 * time.Second, transaction: 5 * time.Second,
			wantErr: "consumer: transaction timeout 5s must exceed the session timeout 6s"},
		{name: "transaction equal to session", session: 6 * time.Second, transaction: 6 * time.Second,
			wantErr: "consumer: transaction timeout 6s must exceed the session timeout 6s"},
		{name: "transaction below the default session", transaction: 40 * time.Second,
			wantErr: "consumer: transaction timeout 40s must exceed the session timeout 45s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := base
			in.SessionTimeout, in.TransactionTimeout = tc.session, tc.transaction
			got, err := in.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one starting %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.SessionTimeout != tc.wantSession || got.TransactionTimeout != tc.wantTxn {
				t.Errorf("session %v, transaction %v; want %v, %v", got.SessionTimeout, got.TransactionTimeout, tc.wantSession, tc.wantTxn)
			}
		})
	}
}

func TestShutdownBudgets(t *testing.T) {
	for _, c := range []struct{ total, end, abort, leave time.Duration }{
		{20 * time.Second, 10 * time.Second, 5 * time.Second, 5 * time.Second},
		{60 * time.Second, 50 * time.Second, 5 * time.Second, 5 * time.Second},
		{8 * time.Second, 4 * time.Second, 2 * time.Second, 2 * time.Second},
	} {
		end, abort, leave := shutdownBudgets(c.total)
		if end != c.end || abort != c.abort || leave != c.leave || end+abort+leave != c.total {
			t.Errorf("shutdownBudgets(%v) = %v, %v, %v; want %v, %v, %v", c.total, end, abort, leave, c.end, c.abort, c.leave)
		}
	}
}
