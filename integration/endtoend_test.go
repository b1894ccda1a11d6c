package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// TestEndToEnd runs two instances of the real binary over every shared
// sample and 5,000 generated records. A read_committed reader must then find
// every expected finding on the alerts topic once and every malformed
// record once in the dead-letter topic, and nothing else.
func TestEndToEnd(t *testing.T) {
	b, p, adm := startPipeline(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := newSourceWriter(t, b, p.source)
	exp := newExpected()
	loadSamples(ctx, t, w, exp, false)
	g := generate(cloudtrailgen.New(cloudtrailgen.Config{Seed: 11, QuarantineRate: 0.01, NearMissRate: 0.05, MalformedRate: 0.01}), 5000)
	rs, err := w.write(ctx, g.values, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp.add(rs, g, false)
	if len(exp.alerts) < 40 || len(exp.dead) < 30 {
		t.Fatalf("too few cases to prove anything: %d findings, %d malformed", len(exp.alerts), len(exp.dead))
	}

	args := serviceArgs(b, p.source, p.alerts, p.group)
	a := startInstance(t, "a", kafkatest.Name(t, "txn-a"), args)
	c := startInstance(t, "b", kafkatest.Name(t, "txn-b"), args)
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, a, c)
	stopAll(t, a, c)
	checkUnplanned(t, a, c)
	drainOutputs(t, b, p, exp)
}

// TestBackToBackCommitsAbortNothing reads 3,000 records, few of them
// findings, in transactions of at most 20 records: most transactions
// produce nothing and commit their offsets right after the previous one
// committed, the case in which Kafka 4's transactions v2 answers
// CONCURRENT_TRANSACTIONS (see consumer.ClientOpts). Both transaction
// versions must be exactly-once; by default (v1) not one batch may be
// aborted and read again.
func TestBackToBackCommitsAbortNothing(t *testing.T) {
	b := kafka.Broker(t)
	for _, tc := range []struct {
		name      string
		args      []string
		maxAborts int // -1: only reported
	}{
		{"transactions-v1", []string{"--transactions-v2=false"}, 0},
		{"transactions-v2", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline(t)
			adm := newAdmin(t, b)
			p.create(t, b, adm, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			w := newSourceWriter(t, b, p.source)
			exp := newExpected()
			g := generate(cloudtrailgen.New(cloudtrailgen.Config{Seed: 12, QuarantineRate: 0.003, NearMissRate: 0.02}), 3000)
			rs, err := w.write(ctx, g.values, nil)
			if err != nil {
				t.Fatal(err)
			}
			exp.add(rs, g, false)

			args := serviceArgs(b, p.source, p.alerts, p.group, append([]string{"--max-batch", "20"}, tc.args...)...)
			a := startInstance(t, "a", kafkatest.Name(t, "txn"), args)
			waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, a)
			stopAll(t, a)
			checkUnplanned(t, a)
			drainOutputs(t, b, p, exp)

			sum := stoppingSummary(t, a)
			t.Logf("%s: %d records, %d transactions committed, %d aborted", tc.name, sum.Records, sum.Committed, sum.Aborted)
			if sum.Records < int64(len(g.values)) || sum.Committed < int64(len(g.values)/20) {
				t.Errorf("summary %+v: expected at least %d records in at least %d transactions", sum, len(g.values), len(g.values)/20)
			}
			if tc.maxAborts >= 0 && sum.Aborted > int64(tc.maxAborts) {
				t.Errorf("%d transactions aborted and read again, want at most %d", sum.Aborted, tc.maxAborts)
			}
		})
	}
}

type runSummary struct {
	Records   int64 `json:"records"`
	Committed int64 `json:"transactions_committed"`
	Aborted   int64 `json:"transactions_aborted"`
}

// stoppingSummary sums the "stopping" lines an instance's processes logged.
func stoppingSummary(t *testing.T, in *instance) runSummary {
	t.Helper()
	data, err := os.ReadFile(in.logPath)
	if err != nil {
		t.Fatal(err)
	}
	var sum runSummary
	lines := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		var entry struct {
			Msg string `json:"msg"`
			runSummary
		}
		if json.Unmarshal(line, &entry) != nil || entry.Msg != "stopping" {
			continue
		}
		lines++
		sum.Records += entry.Records
		sum.Committed += entry.Committed
		sum.Aborted += entry.Aborted
	}
	if lines == 0 {
		t.Fatalf("instance %s logged no stopping summary:\n%s", in.name, tailFile(in.logPath, 20))
	}
	return sum
}
