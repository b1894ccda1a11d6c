package consumer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
)

// TestMetricsAndReadiness scrapes a running service: /readyz turns 200 once
// the group is joined and 503 as soon as shutdown begins, and the counters,
// the latency histogram and the per-partition lag move with the traffic.
func TestMetricsAndReadiness(t *testing.T) {
	cluster := newCluster(t)
	brokers := cluster.ListenAddrs()
	metrics := telemetry.New()
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	addr, err := telemetry.Serve(srvCtx, "127.0.0.1:0", metrics.Handler(false, nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before start: %d, want 503", code)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}

	cfg := memberConfig(t, brokers, 1)
	cfg.Metrics = metrics
	cfg.LagInterval = 100 * time.Millisecond
	m := startMember(t, cfg)
	poll(t, "ready", func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK })

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	exp := loadSource(t, cl, 2000, cloudtrailgen.Config{Seed: 11, QuarantineRate: 0.01, MalformedRate: 0.01})

	want := map[string]float64{
		`quarantine_watch_records_consumed_total`:                2000,
		`quarantine_watch_findings_total{rule="elastic"}`:        float64(len(exp.alerts)),
		`quarantine_watch_detection_latency_seconds_count`:       float64(len(exp.alerts)),
		`quarantine_watch_transactions_total{outcome="aborted"}`: 0,
		// Measured on a timer from the committed offsets: 0 once caught up.
		`quarantine_watch_consumer_lag_records{partition="0",topic="cloudtrail"}`: 0,
	}
	var body string
	poll(t, "counters to reach the traffic", func() bool {
		_, body = get(t, base+"/metrics")
		for name, v := range want {
			if got, ok := sample(body, name); !ok || got != v {
				return false
			}
		}
		return true
	})
	var deadLetters float64
	for _, class := range []string{"malformed_json", "bad_encoding", "bad_compression", "unknown_shape"} {
		v, _ := sample(body, fmt.Sprintf(`quarantine_watch_dead_letters_total{class=%q}`, class))
		deadLetters += v
	}
	if deadLetters != float64(len(exp.deadLetters)) {
		t.Errorf("dead letters in metrics %v, want %d", deadLetters, len(exp.deadLetters))
	}
	for _, name := range []string{`quarantine_watch_last_commit_timestamp_seconds`,
		`quarantine_watch_kafka_produce_bytes_total`, `quarantine_watch_commit_latency_seconds_count`} {
		if _, ok := sample(body, name); !ok {
			t.Errorf("metric %s missing", name)
		}
	}

	m.cancel()
	poll(t, "not ready after shutdown began", func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusServiceUnavailable })
	if err := <-m.done; err != nil {
		t.Fatal(err)
	}
	// Every transaction, committed or aborted, is matched, produces (or
	// not) and ends: each of those phases is observed once per transaction.
	_, body = get(t, base+"/metrics")
	committed, _ := sample(body, `quarantine_watch_transactions_total{outcome="committed"}`)
	aborted, _ := sample(body, `quarantine_watch_transactions_total{outcome="aborted"}`)
	if committed == 0 {
		t.Fatal("no transaction committed")
	}
	for _, phase := range []string{"match", "produce", "end"} {
		name := fmt.Sprintf(`quarantine_watch_batch_phase_seconds_count{phase=%q}`, phase)
		if n, ok := sample(body, name); !ok || n != committed+aborted {
			t.Errorf("%s = %v (present %v), want %v: one per transaction", name, n, ok, committed+aborted)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sample reads one sample's value from a Prometheus text exposition;
// labels must be written in the order the exposition uses (sorted).
func sample(body, name string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:\{[^}]*\})? ([0-9.e+-]+)$`)
	if m := re.FindStringSubmatch(body); m != nil {
		v, err := strconv.ParseFloat(m[1], 64)
		return v, err == nil
	}
	return 0, false
}

func poll(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
