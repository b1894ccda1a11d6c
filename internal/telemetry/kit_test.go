package telemetry_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
)

// deployDir holds the operators' kit: the alerting rules and the dashboard.
var deployDir = filepath.Join("..", "..", "deploy")

// metricName matches the names of the series the kit reads: the service's
// own and franz-go's (quarantine_watch_), and the Go and process collectors'.
// up is Prometheus's own, not the service's.
var metricName = regexp.MustCompile(`\b(?:quarantine_watch_|process_|go_)[a-zA-Z0-9_]+\b`)

// TestOperatorsKitMetricsExist: every series named in an expression of
// deploy/prometheus/alerts.yaml and deploy/grafana/quarantine-watch.json is
// one the service exports, read from a scrape of its registry after each
// metric has moved (franz-go's through a client against kfake, as the
// service wires them). A metric renamed in telemetry or in kprom's
// configuration fails it, rather than leaving an alert that never fires.
func TestOperatorsKitMetricsExist(t *testing.T) {
	exported := scrapeExercised(t)

	exprs := map[string]string{} // expression → where
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	raw, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs[r.Expr] = "alerts.yaml " + r.Alert
		}
	}
	alerts := len(exprs)
	raw, err = os.ReadFile(filepath.Join(deployDir, "grafana", "quarantine-watch.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("quarantine-watch.json: %v", err)
	}
	collectExprs(dash, "dashboard", exprs)
	if alerts < 6 || len(exprs)-alerts < 15 {
		t.Fatalf("%d alert expressions and %d dashboard expressions: the files are not what this test reads", alerts, len(exprs)-alerts)
	}

	used, missing := map[string]bool{}, 0
	for expr, where := range exprs {
		names := metricName.FindAllString(expr, -1)
		if len(names) == 0 && !strings.Contains(expr, "up{") {
			t.Errorf("%s: %q names no metric of the service", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] {
				missing++
				t.Errorf("%s: %s is not exported by the service", where, n)
			}
		}
	}
	t.Logf("%d alert and %d dashboard expressions use %d series names, %d of them not exported (the scrape has %d)",
		alerts, len(exprs)-alerts, len(used), missing, len(exported))
}

// collectExprs adds every "expr" string and every label_values query of a
// decoded dashboard to exprs.
func collectExprs(v any, where string, exprs map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		title, _ := v["title"].(string)
		if title != "" {
			where = "dashboard panel " + title
		}
		for k, c := range v {
			if s, ok := c.(string); ok && (k == "expr" || (k == "definition" && strings.HasPrefix(s, "label_values("))) {
				exprs[s] = where
				continue
			}
			collectExprs(c, where, exprs)
		}
	case []any:
		for _, c := range v {
			collectExprs(c, where, exprs)
		}
	}
}

// scrapeExercised moves every metric of a telemetry.New() as the service
// does, and returns the sample names of a scrape of /metrics (a histogram's
// _bucket, _sum and _count).
func scrapeExercised(t *testing.T) map[string]bool {
	t.Helper()
	m := telemetry.New()
	m.RecordsConsumed.Add(3)
	m.BytesConsumed.Add(300)
	m.Findings.WithLabelValues("elastic").Inc()
	m.DeadLetters.WithLabelValues("malformed_json").Inc()
	m.Transactions.WithLabelValues("committed").Inc()
	m.TransactionsAborted.WithLabelValues("commit_refused").Inc()
	m.SessionRecreations.WithLabelValues("fenced").Inc()
	m.DetectionLatency.Observe(0.2)
	m.CommitLatency.Observe(0.3)
	m.BatchDuration.Observe(0.01)
	m.BatchPhase.WithLabelValues("end").Observe(0.005)
	m.SetLag("cloudtrail", 0, 5)
	m.LastCommit.SetToCurrentTime()
	m.FetchErrors.WithLabelValues("transient").Inc()
	m.RecordsSkipped.WithLabelValues("cloudtrail").Add(2)
	m.Lookbacks.WithLabelValues("failed").Inc()
	m.LookbackRecords.Add(10)
	m.LookbackDuration.Observe(1.5)
	m.SetReady(func() bool { return true })

	// franz-go's metrics, from a client with the service's hooks that
	// produces and fetches a record.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "cloudtrail"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.WithHooks(m.Kafka),
		kgo.ConsumeTopics("cloudtrail"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "cloudtrail", Value: []byte(`{}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for fetched := 0; fetched == 0; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no record fetched within 30 s")
		}
		fetched = fs.NumRecords()
	}
	// A failed connection, as franz-go reports one to its hooks.
	m.Kafka.OnBrokerConnect(kgo.BrokerMetadata{NodeID: 1, Host: "127.0.0.1", Port: 1}, 0, nil, errors.New("connection refused"))

	srv := httptest.NewServer(m.Handler(false, nil))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"quarantine_watch_records_consumed_total", "quarantine_watch_kafka_fetch_bytes_total", "go_goroutines"} {
		if !names[want] {
			t.Fatalf("the scrape has no %s: %v", want, slices.Sorted(maps.Keys(names)))
		}
	}
	return names
}
