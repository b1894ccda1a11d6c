package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// TestCrashFencesNoSurvivor SIGKILLs one of two instances three times,
// each time restarting it at once, as an orchestrator would. The new
// process joins at once, and the rebalance then waits for the dead one's
// session to expire (6 s) while the survivor keeps reading: its commits
// wait for that join to end, since GroupTransactSession.End waits for a
// heartbeat. Its transactions must outlive the wait. With a transaction
// timeout below the session timeout the broker aborted the survivor's
// transaction during it and fenced its producer, and the survivor exited
// (TestExactlyOnceUnderFaults caught it now and then). The broker of these
// tests looks for timed-out transactions every 500 ms, not every 10 s, so
// such an abort is not left to chance.
func TestCrashFencesNoSurvivor(t *testing.T) {
	b, p, adm := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 47, QuarantineRate: 0.02, NearMissRate: 0.05, MalformedRate: 0.002})
	stream := startStream(ctx, t, b, p.source, gen, 100, 100*time.Millisecond, 120_000)

	args := serviceArgs(b, p.source, p.alerts, p.group, fastFailover...)
	survivor := startInstance(t, "a", kafkatest.Name(t, "txn-a"), args)
	crashing := startInstance(t, "b", kafkatest.Name(t, "txn-b"), args)
	// shared reports whether the group is stable with two members sharing
	// the partitions, keep of whom were members before.
	shared := func(before []string, keep int) func(kadm.DescribedGroup) bool {
		return func(g kadm.DescribedGroup) bool {
			if ex := survivor.unplannedExits(); len(ex) > 0 {
				t.Fatalf("a exited on its own: %s: %s", firstLine(ex[0].line), ex[0].cause)
			}
			if g.State != "Stable" || len(g.Members) != 2 {
				return false
			}
			kept := 0
			for _, m := range g.Members {
				if assigned(m, p.source) == 0 {
					return false
				}
				if slices.Contains(before, m.MemberID) {
					kept++
				}
			}
			return kept == keep
		}
	}
	g := waitGroup(t, adm, p.group, "a and b share the partitions", shared(nil, 0))
	for crash := 1; crash <= 3; crash++ {
		var before []string
		for _, m := range g.Members {
			before = append(before, m.MemberID)
		}
		began := time.Now()
		pid := crashing.kill(t)
		// a keeps its member id; b's new process has a new one.
		g = waitGroup(t, adm, p.group, "a and the restarted b share the partitions", shared(before, 1))
		t.Logf("crash %d: SIGKILLed b (pid %d) and restarted it; the group was stable again %v later", crash, pid, time.Since(began).Round(time.Millisecond))
	}

	if err := stream.stop(); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, survivor, crashing)
	stopAll(t, survivor, crashing)
	checkUnplanned(t, survivor, crashing)
	drainOutputs(t, b, p, stream.expected())
}
