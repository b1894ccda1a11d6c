package consumer

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
)

func TestBehindAfter(t *testing.T) {
	part := func(firstOffset int64, n int, lso, hwm int64) kgo.FetchPartition {
		p := kgo.FetchPartition{LastStableOffset: lso, HighWatermark: hwm}
		for i := range n {
			p.Records = append(p.Records, &kgo.Record{Offset: firstOffset + int64(i)})
		}
		return p
	}
	fetches := func(parts ...kgo.FetchPartition) kgo.Fetches {
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "cloudtrail", Partitions: parts}}}}
	}
	for _, tc := range []struct {
		name     string
		fetches  kgo.Fetches
		maxBatch int
		want     bool
	}{
		{"nothing polled", fetches(), 100, false},
		{"caught up: the last stable offset follows the last record", fetches(part(0, 10, 10, 10)), 100, false},
		{"a transaction marker left", fetches(part(0, 10, 11, 11)), 100, false},
		{"cut at the batch size, with nothing after it", fetches(part(0, 100, 100, 100)), 100, false},
		{"more than a batch left on one partition", fetches(part(0, 10, 200, 200)), 100, true},
		{"a batch left, not more", fetches(part(0, 10, 110, 110)), 100, false},
		{"more than a batch left in all", fetches(part(0, 10, 70, 70), part(5, 10, 75, 75)), 100, true},
		{"no last stable offset: the high watermark", fetches(part(0, 10, -1, 500)), 100, true},
		{"a partition without records says nothing", fetches(part(0, 0, 5000, 5000), part(0, 1, 1, 1)), 100, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := behindAfter(tc.fetches, tc.maxBatch); got != tc.want {
				t.Errorf("behindAfter = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestByteBudgetSlowsWhileTheLoopIsBehind(t *testing.T) {
	behind := false
	b := &byteBudget{rate: 1000, slow: func() bool { return behind }}
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	if got, want := b.reserve(500, t0), t0.Add(500*time.Millisecond); !got.Equal(want) {
		t.Fatalf("500 bytes at 1000 B/s: paid at %v, want %v", got.Sub(t0), want.Sub(t0))
	}
	// The budget is owed from where the last reservation ended.
	if got, want := b.reserve(500, t0), t0.Add(time.Second); !got.Equal(want) {
		t.Fatalf("500 more at once: paid at %v, want %v", got.Sub(t0), want.Sub(t0))
	}
	behind = true
	t1 := t0.Add(10 * time.Second)
	if got, want := b.reserve(1000, t1), t1.Add(16*time.Second); !got.Equal(want) {
		t.Fatalf("1000 bytes while behind: paid at %v, want %v (a sixteenth of the rate)", got.Sub(t1), want.Sub(t1))
	}
	behind = false
	t2 := t1.Add(20 * time.Second)
	if got, want := b.reserve(1000, t2), t2.Add(time.Second); !got.Equal(want) {
		t.Fatalf("1000 bytes once caught up: paid at %v, want %v", got.Sub(t2), want.Sub(t2))
	}
	if got := b.reserve(0, t2); !got.Equal(t2) {
		t.Fatalf("nothing read: paid at %v, want now", got.Sub(t2))
	}
}

// gaugeLog is a gauge that remembers every value set.
type gaugeLog struct {
	prometheus.Gauge
	mu  sync.Mutex
	set []float64
}

func (g *gaugeLog) Set(v float64) {
	g.mu.Lock()
	g.set = append(g.set, v)
	g.mu.Unlock()
	g.Gauge.Set(v)
}

func (g *gaugeLog) values() []float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.set)
}

// TestLoopBehindOnABacklog: a member started on a backlog of many batches
// says it is behind, and says it is not once it has read it.
func TestLoopBehindOnABacklog(t *testing.T) {
	cluster := newCluster(t)
	brokers := cluster.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	exp := loadSource(t, cl, 3000, cloudtrailgen.Config{Seed: 12, QuarantineRate: 0.01})

	metrics := telemetry.New()
	behind := &gaugeLog{Gauge: metrics.LoopBehind}
	metrics.LoopBehind = behind
	cfg := memberConfig(t, brokers, 1)
	cfg.Metrics = metrics
	cfg.MaxBatch = 50 // 60 batches of backlog
	m := startMember(t, cfg)
	waitCommitted(t, kadm.NewClient(cl), cfg.Group, 2*time.Minute)
	poll(t, "the loop to say it caught up", func() bool {
		v := behind.values()
		return len(v) == 0 || v[len(v)-1] == 0
	})
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	if v := behind.values(); !slices.Contains(v, 1) {
		t.Errorf("loop_behind was set to %v over a backlog of 60 batches, never 1", v)
	}
	check(t, exp, drain(t, brokers))
}
