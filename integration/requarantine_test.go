package integration

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// TestExactlyOnceRequarantine: the case's user U is quarantined twice in a
// fault run on the service's defaults (docs/rules.md, "Successive
// quarantines of one user"). Each quarantine is written in one produce
// request with U's events on every partition after it (the gap case); an
// instance is SIGKILLed before each, and the rolling restart of the other
// comes while U's last events are written, with events of U delivered
// late (their time between the quarantines). The oracle, from the plan
// alone: every finding the plan gives U's events after the first
// quarantine is read exactly once by franz-go (while the run goes and
// after it) and by kcat, read_committed; an event before the second
// quarantine is a finding of the first watch, an event after it of either
// watch (of the one the loop had loaded when it matched it, or in the gap
// of the first whose window holds it), and names the window its quarantine
// opened; there are two context documents,
// keyed by the two alerts, and two watch entries.
func TestExactlyOnceRequarantine(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute; -short skips it")
	}
	r, kcat := newCaseRun(t, 1316, 0x2e9a)
	b, p, adm := r.b, r.p, r.adm
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	q1 := r.began.Add(-2 * time.Hour).Truncate(time.Second).UTC()
	q2 := q1.Add(30 * time.Minute)
	c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 1313, Quarantine: q1})
	var first []byte
	for _, v := range c.Values {
		if bytes.Contains(v, []byte(c.QuarantineEventID)) {
			first = v
		}
	}
	// The second quarantine: the first's record, another event at q2.
	secondEventID := "d2a7c0de-5eca-4d0e-9a11-000000000002"
	second := bytes.ReplaceAll(first, []byte(c.QuarantineEventID), []byte(secondEventID))
	second = bytes.ReplaceAll(second, []byte(q1.Format(time.RFC3339)), []byte(q2.Format(time.RFC3339)))
	if first == nil || bytes.Count(first, []byte(q1.Format(time.RFC3339))) != 1 || bytes.Count(first, []byte(c.QuarantineEventID)) != 1 {
		t.Fatalf("the case's quarantine record does not hold its event time and id once each: %s", first)
	}
	id1, id2 := alertIDOf(elasticRuleID, c.QuarantineEventID), alertIDOf(elasticRuleID, secondEventID)

	t.Logf("requarantine run: seed %d, quarantines at %s and %s", r.seed, q1.Format(time.RFC3339), q2.Format(time.RFC3339))
	r.exp.alerts[id1] = "the first quarantine " + c.QuarantineEventID
	r.exp.alerts[id2] = "the second quarantine " + secondEventID

	outDuring := startReader(t, b, p)
	caseDuring := startCaseReader(t, b, p, "franz-go during")
	r.write(ctx, caseNoisePhase, nil)
	args := serviceArgs(b, p.source, p.alerts, p.group, fastFailover...)
	ins := map[string]*instance{
		"a": startInstance(t, "a", kafkatest.Name(t, "txn-a"), args),
		"b": startInstance(t, "b", kafkatest.Name(t, "txn-b"), args),
	}
	all := func() []*instance { return slices.Collect(maps.Values(ins)) }
	waitCaughtUp(t, adm, p.group, p.source, caseWaitLimit, all()...)
	r.step("a and b have read the first records")

	quarantine := func(value []byte, at time.Time, shift int) {
		t.Helper()
		batch := append([]placed{{value, int32(r.rng.IntN(sourcePartitions))}}, r.plantPosts(shift, at.Add(time.Second), true)...)
		rs, err := r.w.write(ctx, slicesValues(batch), slicesParts(batch))
		if err != nil {
			t.Fatal(err)
		}
		r.exp.records += len(rs)
		r.landed(rs[1:])
		r.step("a quarantine at %s on partition %d, and %d of the user's events on every partition in the same request",
			at.Format(time.RFC3339), rs[0].Partition, len(rs)-1)
	}

	pid := ins["a"].kill(t)
	r.step("kill 1: SIGKILL a (pid %d); restarted", pid)
	quarantine(first, q1, 0)
	r.write(ctx, caseNoisePhase/4, nil)
	pid = ins["b"].kill(t)
	r.step("kill 2: SIGKILL b (pid %d); restarted", pid)
	quarantine(second, q2, 1)
	r.landed(r.write(ctx, caseNoisePhase, r.plantPosts(2, q2.Add(20*time.Minute), false)))
	waitCaughtUp(t, adm, p.group, p.source, caseWaitLimit, all()...)
	r.step("caught up after the kills")

	// The last of the user's events, and as many delivered late: their
	// time is between the two quarantines, and the loaders have both.
	r.restartAndStop(ctx, ins, args, caseDuring, append(r.plantPosts(3, q2.Add(time.Hour), false), r.plantPosts(4, q1.Add(10*time.Minute), false)...))

	e := r.finish(ctx, kcat, outDuring, caseDuring, ins["a"], ins["b"])
	vDuring, vAfter := outDuring.compare(t, r.exp), e.outAfter.compare(t, r.exp)
	mustMatch(t, "franz-go during", vDuring)
	mustMatch(t, "franz-go after", vAfter)
	checkUnplanned(t, all()...)

	docs := 0
	for _, rd := range []struct {
		name string
		recs []caseRecord
	}{
		{"franz-go during", func() []caseRecord { d, _, _ := caseDuring.snapshot(); return d }()},
		{"franz-go after", func() []caseRecord { d, _, _ := e.caseAfter.snapshot(); return d }()},
		{"kcat", slices.DeleteFunc(e.kcatContext, func(cr caseRecord) bool { return cr.key == endMarker })},
	} {
		var keys []string
		for _, cr := range rd.recs {
			keys = append(keys, cr.key)
		}
		slices.Sort(keys)
		docs = max(docs, len(keys))
		if want := []string{min(id1, id2), max(id1, id2)}; !slices.Equal(keys, want) {
			t.Errorf("%s: context documents keyed %v, want one per quarantine %v", rd.name, keys, want)
		}
	}
	_, entries, _ := e.caseAfter.snapshot()
	if len(entries) != 2 {
		t.Errorf("%d watch entry records on the watchlist topic, want two (one per quarantine)", len(entries))
	}
	order := "first, second"
	if len(entries) == 2 && bytes.Contains(entries[0].value, []byte(id2)) {
		order = "second, first" // the quarantines' partitions were matched in the other order
	}
	t.Logf("watch entries written: %s", order)
	want, found, dups, gapMisses := r.countPosts(e, map[string]time.Time{id1: q1, id2: q2}, func(ev postEvent) []string {
		if ev.eventTime.After(q2) {
			return []string{id1, id2}
		}
		return []string{id1}
	})
	dups = max(dups, docs-2, vDuring.duplicateCopies, vAfter.duplicateCopies, vDuring.duplicates(), vAfter.duplicates())
	line := fmt.Sprintf("eos-requarantine: quarantines=2 context_docs=%d post_findings=%d/%d duplicates=%d gap_misses=%d hanging=%d",
		docs, found, want, dups, gapMisses, e.hanging)
	t.Log(line)
	fmt.Println(line)
	if docs != 2 || found != want || dups != 0 || gapMisses != 0 || e.hanging != 0 {
		t.Errorf("want context_docs=2 post_findings=%d/%d duplicates=0 gap_misses=0 hanging=0", want, want)
	}
}
