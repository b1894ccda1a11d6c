package main

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

// TestNaiveMatchGroundTruth checks the naive baseline's rule against the
// generator's ground truth on the benchmark's traffic, with positives and
// near misses (escaped spellings, empty error codes, other policies, the
// marker outside the parameters, another case) far more frequent than in
// the benchmark.
func TestNaiveMatchGroundTruth(t *testing.T) {
	g := cloudtrailgen.New(genConfig(3, 0.02))
	var positives, nearMisses int
	for i := range 20_000 {
		r := g.Next()
		var doc map[string]any
		if err := json.Unmarshal(r.Value, &doc); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want := len(r.Positives()) > 0
		if got := naiveMatch(doc); got != want {
			t.Fatalf("record %d (%v): naiveMatch = %t, want %t\n%s", i, r.Events[0].Kind, got, want, r.Value)
		}
		if want {
			positives++
		} else if r.Events[0].Kind != cloudtrailgen.Noise {
			nearMisses++
		}
	}
	if positives < 200 || nearMisses < 2000 {
		t.Fatalf("too few cases to prove anything: %d positives, %d near misses", positives, nearMisses)
	}
}

func TestFindingID(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
	}{
		{"ecs alert", `{"event":{"kind":"alert","id":"e7bb4b23"},"rule":{"id":"x"}}`, "e7bb4b23"},
		{"cloudtrail record", `{"eventVersion":"1.09","eventID":"3f0c9a7e","eventName":"AttachUserPolicy"}`, "3f0c9a7e"},
		{"neither", `{"a":1}`, ""},
		{"not json", `nope`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := findingID([]byte(tc.value)); got != tc.want {
				t.Errorf("findingID = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCheckFindings(t *testing.T) {
	rec := func(id string) []byte { return []byte(`{"eventID":"` + id + `"}`) }
	post := func(id, rule string) []byte {
		return []byte(`{"event":{"id":"` + id + `"},"rule":{"id":"` + rule + `"},"quarantine_watch":{"watch":{"alert_id":"x"}}}`)
	}
	want := map[string]bool{"a": true, "b": true}
	for _, tc := range []struct {
		name   string
		values [][]byte
		errHas string // "" means no error
	}{
		{"exact", [][]byte{rec("a"), rec("b")}, ""},
		{"missing", [][]byte{rec("a")}, "1 missing: b"},
		{"unexpected", [][]byte{rec("a"), rec("b"), rec("c")}, `1 unexpected: "c"×1`},
		{"duplicated", [][]byte{rec("a"), rec("b"), rec("b")}, "1 duplicated: b×2"},
		// quarantine-watch's post-quarantine alerts (the watch is on by
		// default): not expected, but once each.
		{"post-quarantine", [][]byte{rec("a"), rec("b"), post("c", "r1"), post("a", "r1")}, ""},
		{"post-quarantine duplicated", [][]byte{rec("a"), rec("b"), post("c", "r1"), post("c", "r1")}, `1 duplicated post-quarantine: "c" of rule r1×2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkFindings(tc.values, want)
			switch {
			case tc.errHas == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
				t.Fatalf("error %v, want one containing %q", err, tc.errHas)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	var samples []time.Duration
	for i := 1; i <= 100; i++ {
		samples = append(samples, ms(i))
	}
	for _, tc := range []struct {
		name     string
		censored int
		p        float64
		want     time.Duration
		cell     string
	}{
		{"p50", 0, 0.5, ms(50), "50"},
		{"p99", 0, 0.99, ms(99), "99"},
		{"max", 0, 1, ms(100), "100"},
		{"p99 of 102 with 2 never received", 2, 0.99, -1, "> 60000"},
		{"p50 with 2 never received", 2, 0.5, ms(51), "51"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := latencyResult{samples: samples, censored: tc.censored, drain: time.Minute}
			if got := l.percentile(tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
			if got := l.msCell(tc.p); got != tc.cell {
				t.Errorf("msCell(%v) = %q, want %q", tc.p, got, tc.cell)
			}
		})
	}
}

// TestReferenceRow checks that the ceiling's latency row reports the
// producer's wait and no detection latency.
func TestReferenceRow(t *testing.T) {
	var queued []time.Duration
	for i := 1; i <= 200; i++ {
		queued = append(queued, time.Duration(i)*time.Millisecond)
	}
	l := latencyResult{contender: "ceiling", reference: true, queued: queued, target: 1000, achieved: 1000}
	if got := l.msCell(0.99); got != "-" {
		t.Errorf("msCell(0.99) = %q, want -", got)
	}
	if got := l.queuedP99(); got != 198*time.Millisecond {
		t.Errorf("queuedP99 = %v, want 198ms", got)
	}
	if got := l.String(); !strings.Contains(got, "in the producer: p99 198 ms of 200 positives") {
		t.Errorf("String() = %q", got)
	}
}

func TestReadProcStats(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	// Burn some CPU so that utime+stime cannot be zero.
	deadline := time.Now().Add(50 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ {
		_ = bytes.Repeat([]byte{byte(n)}, 1024)
	}
	s, err := readProcStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.CPU <= 0 || s.HWM < 1<<20 {
		t.Fatalf("stats %+v: want some CPU time and at least 1 MiB peak RSS", s)
	}
}

func TestTable(t *testing.T) {
	var tw table
	tw.addf("contender\trecords/s\t× ceiling")
	tw.addf("ceiling\t1,000\t1.00")
	tw.addf("quarantine-watch run\t900\t0.90")
	var b strings.Builder
	tw.print(&b)
	want := "" +
		"contender             records/s  × ceiling\n" +
		"ceiling                   1,000       1.00\n" +
		"quarantine-watch run        900       0.90\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestCollect checks the split of each finding's latency into the
// producer's wait and the part after the broker's ack, on times written by
// hand: a warm-up positive is left out of every column, a finding never
// received is censored in both latencies.
func TestCollect(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	all := []*sent{
		{id: "warm", at: ms(0), acked: ms(5)},  // before measureFrom
		{id: "a", at: ms(100), acked: ms(130)}, // received at 180: 80 in all, 50 after the ack
		{id: "b", at: ms(200), acked: ms(400)}, // received at 420: 220 in all, 20 after the ack
		{id: "c", at: ms(300), acked: ms(310)}, // never received
		{id: "d", at: ms(500), acked: ms(501)}, // received at 601: 101 in all, 100 after the ack
	}
	seen := map[string]time.Time{"warm": ms(50), "a": ms(180), "b": ms(420), "d": ms(601)}
	var lr latencyResult
	if missing := lr.collect(all, seen, ms(100)); missing != 1 {
		t.Errorf("missing = %d, want 1", missing)
	}
	d := func(n ...int) (out []time.Duration) {
		for _, v := range n {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	if want := d(80, 101, 220); !slices.Equal(lr.samples, want) {
		t.Errorf("samples = %v, want %v", lr.samples, want)
	}
	if want := d(20, 50, 100); !slices.Equal(lr.own, want) {
		t.Errorf("own = %v, want %v", lr.own, want)
	}
	if want := d(1, 10, 30, 200); !slices.Equal(lr.queued, want) {
		t.Errorf("queued = %v, want %v", lr.queued, want)
	}
	if lr.censored != 1 {
		t.Errorf("censored = %d, want 1", lr.censored)
	}
	// Of four measured findings, the 75th percentile is the third (100 ms
	// after the ack) and the 99th the censored one.
	if got := lr.ownPercentile(0.75); got != 100*time.Millisecond {
		t.Errorf("ownPercentile(0.75) = %v, want 100ms", got)
	}
	lr.drain = time.Minute
	if got := lr.ownCell(0.99); got != "> 60000" {
		t.Errorf("ownCell(0.99) = %q, want > 60000", got)
	}

	var ref latencyResult
	ref.reference = true
	if missing := ref.collect(all, nil, ms(100)); missing != 0 || len(ref.samples) != 0 || len(ref.own) != 0 || len(ref.queued) != 4 {
		t.Errorf("reference: missing %d, %d samples, %d own, %d queued; want 0, 0, 0, 4", missing, len(ref.samples), len(ref.own), len(ref.queued))
	}
	if got := ref.ownCell(0.99); got != "-" {
		t.Errorf("reference ownCell = %q, want -", got)
	}
}
