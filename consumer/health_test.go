package consumer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
)

// exitWithin waits for the member to exit on its own and returns its error;
// it fails t if it is still running after d (the stall the test provoked
// went unnoticed).
func exitWithin(t *testing.T, m *member, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-m.done:
		return err
	case <-time.After(d):
		m.cancel()
		<-m.done
		t.Fatalf("%s: still running %v later, with nothing to show for it", what, d)
		return nil
	}
}

// TestFatalFetchErrorsExit: a source topic deleted under the group and a
// revoked Read right leave a session that fetches nothing and retries
// forever. Each must be counted under its class in fetch_errors_total and
// end Run with an error that names the topic and what to do.
func TestFatalFetchErrorsExit(t *testing.T) {
	t.Run("source deleted", func(t *testing.T) {
		cluster := newCluster(t)
		admin, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		cfg := memberConfig(t, cluster.ListenAddrs(), 1)
		cfg.Metrics = telemetry.New()
		cfg.unknownTopicGrace = 2 * time.Second
		m := startMember(t, cfg)
		loadSource(t, admin, 300, cloudtrailgen.Config{Seed: 3})
		waitCommitted(t, kadm.NewClient(admin), "quarantine-watch", time.Minute)
		if _, err := kadm.NewClient(admin).DeleteTopics(context.Background(), sourceTopic); err != nil {
			t.Fatal(err)
		}
		err = exitWithin(t, m, 30*time.Second, "source topic deleted")
		if err == nil || !strings.Contains(err.Error(), `"cloudtrail"`) || !strings.Contains(err.Error(), "UNKNOWN_TOPIC") {
			t.Errorf("want an error naming the topic and UNKNOWN_TOPIC_*, got %v", err)
		}
		if n := value(t, cfg.Metrics.FetchErrors.WithLabelValues("unknown_topic")); n < 1 {
			t.Errorf("fetch_errors_total{class=\"unknown_topic\"} = %v, want at least 1", n)
		}
	})

	t.Run("read revoked", func(t *testing.T) {
		cluster := aclCluster(t, everyRight())
		admin, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), saslOpt("admin", "admin-password"),
			kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		cfg := memberConfig(t, cluster.ListenAddrs(), 1)
		cfg.ClientOpts = append(cfg.ClientOpts, saslOpt(testUser, testPassword))
		cfg.Metrics = telemetry.New()
		m := startMember(t, cfg)
		loadSource(t, admin, 300, cloudtrailgen.Config{Seed: 5})
		waitCommitted(t, kadm.NewClient(admin), "quarantine-watch", time.Minute)
		read := everyRight()["read source"]
		if _, err := kadm.NewClient(admin).DeleteACLs(context.Background(), kadm.NewACLs().
			Allow("User:"+testUser).AllowHosts().Topics(read.Name).ResourcePatternType(kadm.ACLPatternLiteral).Operations(kadm.OpRead)); err != nil {
			t.Fatal(err)
		}
		loadSource(t, admin, 30, cloudtrailgen.Config{Seed: 6})
		err = exitWithin(t, m, 30*time.Second, "Read on the source revoked")
		if err == nil || !strings.Contains(err.Error(), `"cloudtrail"`) || !strings.Contains(err.Error(), "AUTHORIZATION_FAILED") {
			t.Errorf("want an error naming the topic and the authorization failure, got %v", err)
		}
		if n := value(t, cfg.Metrics.FetchErrors.WithLabelValues("authorization")); n < 1 {
			t.Errorf("fetch_errors_total{class=\"authorization\"} = %v, want at least 1", n)
		}
	})
}

// TestLagAndStall: the lag gauge is the group's committed offsets against
// the last stable offsets, on a timer, so it moves while nothing commits;
// and an instance with lag that has committed nothing for StallTimeout is
// not ready. Commits are made to fail by refusing every TxnOffsetCommit
// with CONCURRENT_TRANSACTIONS, which aborts each transaction.
func TestLagAndStall(t *testing.T) {
	cluster := newCluster(t)
	admin, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	cfg := memberConfig(t, cluster.ListenAddrs(), 1)
	cfg.Metrics = telemetry.New()
	cfg.LagInterval = 200 * time.Millisecond
	cfg.StallTimeout = 3 * time.Second
	m := startMember(t, cfg)
	defer m.stop(t)
	waitReady(t, cfg, m)
	loadSource(t, admin, 600, cloudtrailgen.Config{Seed: 9})
	waitCommitted(t, kadm.NewClient(admin), "quarantine-watch", time.Minute)
	poll(t, "lag 0 on every partition", func() bool { return totalLag(t, cfg.Metrics, 6) == 0 })

	var refuse sync.Mutex
	refusing := true
	cluster.ControlKey(int16(kmsg.TxnOffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		refuse.Lock()
		defer refuse.Unlock()
		if !refusing {
			return nil, nil, false
		}
		r := req.(*kmsg.TxnOffsetCommitRequest)
		resp := r.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewTxnOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.ConcurrentTransactions.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	stalledAt := time.Now()
	loadSource(t, admin, 240, cloudtrailgen.Config{Seed: 10})
	poll(t, "the lag gauge to show the 240 records nothing committed", func() bool { return totalLag(t, cfg.Metrics, 6) == 240 })
	if !cfg.Metrics.Ready() {
		t.Errorf("not ready %v after commits began to fail, before StallTimeout (%v)", time.Since(stalledAt).Round(time.Millisecond), cfg.StallTimeout)
	}
	poll(t, "not ready after StallTimeout without a commit", func() bool { return !cfg.Metrics.Ready() })
	if waited := time.Since(stalledAt); waited < cfg.StallTimeout {
		t.Errorf("unready %v after the stall began, before StallTimeout %v", waited.Round(time.Millisecond), cfg.StallTimeout)
	}
	refuse.Lock()
	refusing = false
	refuse.Unlock()
	poll(t, "ready again once commits go through", func() bool { return cfg.Metrics.Ready() })
	poll(t, "lag back to 0", func() bool { return totalLag(t, cfg.Metrics, 6) == 0 })
}

func totalLag(t *testing.T, m *telemetry.Metrics, partitions int) float64 {
	t.Helper()
	var total float64
	for p := range partitions {
		g, err := m.Lag.GetMetricWithLabelValues(sourceTopic, fmt.Sprint(p))
		if err != nil {
			t.Fatal(err)
		}
		total += value(t, g)
	}
	ch := make(chan prometheus.Metric, 64)
	m.Lag.Collect(ch)
	close(ch)
	if len(ch) != partitions {
		return -1 // not every partition reported yet
	}
	return total
}

// TestRecordsDeletedBeforeRead: the group committed offset 10 of each
// partition, then retention deleted everything below 60 while no member
// ran. franz-go resets to the log start and says so at info; the service
// must say it at warn, with the partition and the count, and count it in
// records_skipped_total.
func TestRecordsDeletedBeforeRead(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, sourceTopic, alertsTopic, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	admin, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 12})
	var recs []*kgo.Record
	for p := range int32(2) {
		for range 100 {
			recs = append(recs, &kgo.Record{Topic: sourceTopic, Partition: p, Value: gen.Next().Value})
		}
	}
	if err := admin.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(admin)
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: sourceTopic, Partition: 0, At: 10, LeaderEpoch: -1})
	offsets.Add(kadm.Offset{Topic: sourceTopic, Partition: 1, At: 90, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(context.Background(), "quarantine-watch", offsets); err != nil || resp.Error() != nil {
		t.Fatalf("committing: %v %v", err, resp.Error())
	}
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: sourceTopic, Partition: 0, At: 60})
	del.Add(kadm.Offset{Topic: sourceTopic, Partition: 1, At: 60})
	if resp, err := adm.DeleteRecords(context.Background(), del); err != nil || resp.Error() != nil {
		t.Fatalf("deleting records: %v %v", err, resp.Error())
	}

	var logs lockedBuffer
	cfg := memberConfig(t, cluster.ListenAddrs(), 1)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Metrics = telemetry.New()
	m := startMember(t, cfg)
	waitCommitted(t, adm, "quarantine-watch", time.Minute)
	if err := m.stop(t); err != nil {
		t.Fatal(err)
	}
	skipped := value(t, cfg.Metrics.RecordsSkipped.WithLabelValues(sourceTopic))
	if skipped != 50 {
		t.Errorf("records_skipped_total = %v, want 50 (partition 0: committed 10, log start 60; partition 1 committed above it)", skipped)
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "partition=0") || !strings.Contains(out, "skipped=50") || strings.Contains(out, "partition=1") {
		t.Errorf("want one warning for partition 0 with skipped=50; logged:\n%s", out)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// value reads a counter's or a gauge's value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatal(err)
	}
	switch {
	case pb.Counter != nil:
		return pb.Counter.GetValue()
	case pb.Gauge != nil:
		return pb.Gauge.GetValue()
	}
	t.Fatalf("%v is neither a counter nor a gauge", m.Desc())
	return 0
}

func TestClassifyFetchError(t *testing.T) {
	for _, c := range []struct {
		err   error
		class string
		fatal bool
	}{
		{kerr.TopicAuthorizationFailed, "authorization", true},
		{&kgo.ErrGroupSession{Err: kerr.GroupAuthorizationFailed}, "authorization", true},
		{kerr.UnknownTopicOrPartition, "unknown_topic", false}, // fatal once it lasts
		{kerr.UnknownTopicID, "unknown_topic", false},
		{&kgo.ErrDataLoss{Topic: "t"}, "data_loss", false},
		{kerr.OffsetOutOfRange, "offset_out_of_range", false},
		{&kgo.ErrGroupSession{Err: kerr.CoordinatorNotAvailable}, "group", false},
		{kerr.NotLeaderForPartition, "transient", false},
		{fmt.Errorf("reading: %w", io.EOF), "transient", false},
		{kerr.CorruptMessage, "transient", false}, // Kafka calls it retryable
		{kerr.UnknownServerError, "transient", false},
		{kerr.UnsupportedCompressionType, "other", true},
		{&kgo.ErrDecompressTooLarge{}, "other", true},
	} {
		class, fatal := classifyFetchError(c.err)
		if class != c.class || fatal != c.fatal {
			t.Errorf("classifyFetchError(%v) = %s, %v; want %s, %v", c.err, class, fatal, c.class, c.fatal)
		}
	}
}
