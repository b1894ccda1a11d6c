package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
)

// gathered reads a counter's value by metric name and labels from a
// registry, without the code under test's own accessors; ok is false when
// no such series is exported.
func gathered(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
		}
	}
	return 0, false
}

// refuser makes the cluster answer every TxnOffsetCommit with an error
// code in each partition while refusing is set, and counts the aborting
// EndTxn requests from then on: the test's own count of aborted transactions
// (franz-go retries some refusals, NOT_COORDINATOR among them, before it
// gives up on a commit, so refusals are not aborts).
type refuser struct {
	mu       sync.Mutex
	refusing bool
	aborts   int
}

func (r *refuser) install(cluster *kfake.Cluster, code int16) {
	cluster.ControlKey(int16(kmsg.TxnOffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.refusing {
			return nil, nil, false
		}
		tr := req.(*kmsg.TxnOffsetCommitRequest)
		resp := tr.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		for _, rt := range tr.Topics {
			st := kmsg.NewTxnOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	cluster.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		r.mu.Lock()
		defer r.mu.Unlock()
		if !req.(*kmsg.EndTxnRequest).Commit {
			r.aborts++
		}
		return nil, nil, false
	})
}

func (r *refuser) set(on bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refusing = on
	return r.aborts
}

func (r *refuser) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.aborts
}

// TestCommitRefusedBacksOff: an abort that is not a rebalance (the
// coordinator answers CONCURRENT_TRANSACTIONS or NOT_COORDINATOR to the
// offset commit, or a commit fails for lack of one) is retried after a growing back-off, not at once, and
// each abort is counted under its reason in transactions_aborted_total.
// The test counts the aborts while it refuses commits; a member that
// re-polls at once makes dozens in the window, one that backs off from
// 100 ms doubling makes a handful.
func TestCommitRefusedBacksOff(t *testing.T) {
	for _, c := range []struct {
		name string
		code int16
	}{
		{"CONCURRENT_TRANSACTIONS", kerr.ConcurrentTransactions.Code},
		// NOT_COORDINATOR is not among them: franz-go retries the commit
		// itself, with its own back-off (no abort in 3 s).
		{"TRANSACTION_ABORTABLE", kerr.TransactionAbortable.Code},
	} {
		t.Run(c.name, func(t *testing.T) {
			cluster := newCluster(t)
			admin, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			cfg := memberConfig(t, cluster.ListenAddrs(), 1)
			cfg.Metrics = telemetry.New()
			m := startMember(t, cfg)
			defer m.stop(t)
			waitReady(t, cfg, m)
			loadSource(t, admin, 300, cloudtrailgen.Config{Seed: 21})
			waitCommitted(t, kadm.NewClient(admin), "quarantine-watch", time.Minute)

			var r refuser
			r.install(cluster, c.code)
			r.set(true)
			loadSource(t, admin, 240, cloudtrailgen.Config{Seed: 22})
			const window = 3 * time.Second
			time.Sleep(window)
			aborts := r.set(false)
			waitCommitted(t, kadm.NewClient(admin), "quarantine-watch", time.Minute)
			// An abort whose EndTxn was on its way when refusing stopped.
			aborts = r.count()

			// 100 ms, 200, 400, 800, 1600: six attempts fit in 3 s.
			t.Logf("transactions aborted while commits were refused (%v): %d", window, aborts)
			if aborts == 0 {
				t.Fatal("no transaction was aborted: the test injected nothing")
			}
			if aborts > 8 {
				t.Errorf("%d transactions aborted in %v: the member retried without backing off", aborts, window)
			}
			reg := cfg.Metrics.Registry
			const name = "quarantine_watch_transactions_aborted_total"
			poll(t, "every refused commit counted as an abort", func() bool {
				v, _ := gathered(t, reg, name, map[string]string{"reason": "commit_refused"})
				return v >= float64(aborts)
			})
			if v, ok := gathered(t, reg, name, map[string]string{"reason": "commit_refused"}); !ok || v != float64(aborts) {
				t.Errorf("%s{reason=commit_refused} = %v (exported: %t), want %d, the aborts the broker saw", name, v, ok, aborts)
			}
			if v, _ := gathered(t, reg, name, map[string]string{"reason": "rebalance"}); v != 0 {
				t.Errorf("%s{reason=rebalance} = %v, want 0: one member, no rebalance", name, v)
			}
		})
	}
}

func TestAbortReason(t *testing.T) {
	cut, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	produceErr, endErr := errors.New("produce"), errors.New("end")
	for _, c := range []struct {
		name       string
		ctx        context.Context
		produceErr error
		endErr     error
		rebalanced bool
		want       string
	}{
		{"shutdown cut the end", cut, nil, endErr, false, "shutdown"},
		{"end failed", live, produceErr, endErr, true, "end_failed"},
		{"produce error", live, produceErr, nil, true, "produce_error"},
		{"partitions moved", live, nil, nil, true, "rebalance"},
		{"refused without a rebalance", live, nil, nil, false, "commit_refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := abortReason(c.ctx, c.produceErr, c.endErr, c.rebalanced); got != c.want {
				t.Errorf("abortReason = %q, want %q", got, c.want)
			}
		})
	}
}

// endTxnFault answers the first n committing EndTxn requests after arm
// with fault instead of the cluster's answer, and counts them: the test's
// own count of sessions that had to be rebuilt.
type endTxnFault struct {
	mu       sync.Mutex
	left     int
	injected int
}

// install makes the cluster answer with code (closing the connection
// instead when code is 0).
func (f *endTxnFault) install(cluster *kfake.Cluster, code int16) {
	cluster.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		f.mu.Lock()
		defer f.mu.Unlock()
		end := req.(*kmsg.EndTxnRequest)
		if f.left == 0 || !end.Commit {
			return nil, nil, false
		}
		f.left--
		f.injected++
		if code == 0 {
			return nil, errors.New("connection dropped by the test"), true
		}
		resp := end.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = code
		return resp, nil, true
	})
}

func (f *endTxnFault) arm(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = n
}

func (f *endTxnFault) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected
}

// TestSessionRebuilt: a transaction that cannot end (its producer fenced,
// or EndTxn never answered, so its outcome is unknown) no longer ends Run:
// a new session with the same transactional id takes over in process,
// counted in session_recreations_total under its reason, and every record
// is still processed exactly once. A missing right still ends Run.
func TestSessionRebuilt(t *testing.T) {
	for _, c := range []struct {
		name   string
		code   int16 // 0: the connection is dropped, EndTxn goes unanswered
		faults int
		reason string // "": Run must exit
	}{
		{"fenced", kerr.ProducerFenced.Code, 1, "fenced"},
		{"EndTxn unanswered", 0, 100, "unreachable"},
		{"not authorized", kerr.TransactionalIDAuthorizationFailed.Code, 1, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cluster := newCluster(t)
			brokers := cluster.ListenAddrs()
			admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			cfg := memberConfig(t, brokers, 1)
			cfg.Metrics = telemetry.New()
			// Few retries, so that an unanswered EndTxn fails in seconds.
			cfg.ClientOpts = append(cfg.ClientOpts, kgo.RequestRetries(2), kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }))
			m := startMember(t, cfg)
			waitReady(t, cfg, m)
			exp := loadSource(t, admin, 600, cloudtrailgen.Config{Seed: 41, QuarantineRate: 0.05, MalformedRate: 0.02})
			waitCommitted(t, kadm.NewClient(admin), "quarantine-watch", time.Minute)

			// Readiness is sampled from the first fault on: a session
			// being rebuilt is not ready.
			var unready atomic.Bool
			sampling, stopSampling := context.WithCancel(context.Background())
			defer stopSampling()
			var f endTxnFault
			f.install(cluster, c.code)
			f.arm(c.faults)
			go func() {
				for sampling.Err() == nil {
					if f.count() > 0 && !cfg.Metrics.Ready() {
						unready.Store(true)
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
			more := loadSource(t, admin, 600, cloudtrailgen.Config{Seed: 42, QuarantineRate: 0.05, MalformedRate: 0.02})
			if c.reason == "" {
				err := exitWithin(t, m, time.Minute, "a transaction refused for want of a right")
				if err == nil || !strings.Contains(err.Error(), "TRANSACTIONAL_ID_AUTHORIZATION_FAILED") {
					t.Fatalf("Run returned %v, want the authorization error", err)
				}
				return
			}
			const name = "quarantine_watch_session_recreations_total"
			rebuilt := func() float64 {
				v, _ := gathered(t, cfg.Metrics.Registry, name, map[string]string{"reason": c.reason})
				return v
			}
			// The faults go on until the session is rebuilt or Run exits.
			poll(t, "a fault injected, then the session rebuilt or Run ended", func() bool {
				return f.count() > 0 && (rebuilt() >= 1 || len(m.done) > 0)
			})
			f.arm(0)
			if len(m.done) > 0 {
				t.Fatalf("Run exited instead of rebuilding its session: %v", <-m.done)
			}
			waitCommitted(t, kadm.NewClient(admin), "quarantine-watch", time.Minute)
			if len(m.done) > 0 {
				t.Fatalf("Run exited after rebuilding its session: %v", <-m.done)
			}
			poll(t, "ready again", func() bool { return cfg.Metrics.Ready() })
			stopSampling()
			if !unready.Load() {
				t.Error("/readyz never failed while the session was rebuilt")
			}
			t.Logf("faults injected: %d; %s{reason=%s} = %v", f.count(), name, c.reason, rebuilt())
			if err := m.stop(t); err != nil {
				t.Errorf("member stopped with an error: %v", err)
			}
			for k := range more.alerts {
				exp.alerts[k] = true
			}
			for k := range more.deadLetters {
				exp.deadLetters[k] = true
			}
			check(t, exp, drain(t, brokers))
		})
	}
}

// TestDuplicateTransactionalIDExits: two members of the group share one
// transactional id, as two instances on one host with the old default did.
// Each one's start fences the other; neither stalls. Rather than fence
// each other forever, one must end Run with an error that names the id
// and says another process likely uses it.
func TestDuplicateTransactionalIDExits(t *testing.T) {
	cluster := newCluster(t)
	brokers := cluster.ListenAddrs()
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// A steady stream, so that both members always have a
		// transaction to be fenced in.
		gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 51})
		for ctx.Err() == nil {
			var recs []*kgo.Record
			for range 60 {
				recs = append(recs, &kgo.Record{Topic: sourceTopic, Value: gen.Next().Value})
			}
			admin.ProduceSync(ctx, recs...)
			sleepCtx(ctx, 50*time.Millisecond)
		}
	}()
	a := memberConfig(t, brokers, 1)
	b := memberConfig(t, brokers, 1) // the same transactional id
	ma, mb := startMember(t, a), startMember(t, b)
	var exitErr error
	select {
	case exitErr = <-ma.done:
		mb.stop(t)
	case exitErr = <-mb.done:
		ma.stop(t)
	case <-time.After(2 * time.Minute):
		ma.stop(t)
		mb.stop(t)
		t.Fatal("two members sharing a transactional id still run after 2 minutes")
	}
	t.Logf("exited with: %v", exitErr)
	for _, want := range []string{`"quarantine-watch-1"`, "another process likely uses the same transactional id"} {
		if exitErr == nil || !strings.Contains(exitErr.Error(), want) {
			t.Errorf("Run's error does not say %q", want)
		}
	}
}

func TestClassifySessionError(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		reason string
		fatal  bool
	}{
		{"fenced", fmt.Errorf("ending: %w", kerr.ProducerFenced), "fenced", false},
		{"old epoch", kerr.InvalidProducerEpoch, "fenced", false},
		{"producer id unknown", kerr.InvalidProducerIDMapping, "fenced", false},
		{"coordinator gone", kerr.NotCoordinator, "unreachable", false},
		{"timed out", fmt.Errorf("x: %w", context.DeadlineExceeded), "unreachable", false},
		{"connection dropped", &kgo.ErrFirstReadEOF{}, "unreachable", false},
		{"start-up timed out", fmt.Errorf("%w: x", errStartTimedOut), "unreachable", false},
		{"not authorized", kerr.TransactionalIDAuthorizationFailed, "", true},
		{"bad password", kerr.SaslAuthenticationFailed, "", true},
		{"anything else", errors.New("?"), "transaction_failed", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			reason, fatal := classifySessionError(c.err)
			if reason != c.reason || fatal != c.fatal {
				t.Errorf("classifySessionError(%v) = %q, %t; want %q, %t", c.err, reason, fatal, c.reason, c.fatal)
			}
		})
	}
}

// TestFencingsExplainedByStalls: a fencing of a transaction open for the
// transaction timeout or longer is the broker's abort of a stalled
// transaction, not a sign of a duplicate id; others count within the
// window.
func TestFencingsExplainedByStalls(t *testing.T) {
	const timeout = time.Minute
	var f fencings
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	for _, s := range []struct {
		at   time.Duration
		open time.Duration
		want int
	}{
		{0, 90 * time.Second, 0},           // SIGSTOPped past the timeout: explained
		{time.Second, 2 * time.Second, 1},  // unexplained
		{2 * time.Second, -1, 0},           // no transaction open: not counted
		{3 * time.Second, timeout, 0},      // open exactly the timeout: explained
		{4 * time.Second, time.Second, 2},  // unexplained
		{11 * time.Minute, time.Second, 1}, // the first two fell out of the window
	} {
		if got := f.add(t0.Add(s.at), s.open, timeout); got != s.want {
			t.Errorf("at %v, open %v: add = %d, want %d", s.at, s.open, got, s.want)
		}
	}
}
