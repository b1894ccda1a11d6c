package consumer

import (
	"context"
	"errors"
	"sync"
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
