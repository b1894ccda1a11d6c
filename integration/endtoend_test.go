package integration

import (
	"context"
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
	b := kafka.Broker(t)
	p := newPipeline(t)
	adm := newAdmin(t, b)
	p.create(t, b, adm, nil)

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
