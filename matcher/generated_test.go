package matcher_test

import (
	"slices"
	"testing"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// TestGeneratedTraffic checks the matcher against the generator's ground
// truth, which is built independently of it: every positive found, nothing
// else, and every malformed value reported (with Validate; without it, only
// those that could hold a finding or fail the framing check).
func TestGeneratedTraffic(t *testing.T) {
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 42, QuarantineRate: 0.02, NearMissRate: 0.1, MalformedRate: 0.02})
	strict, err := matcher.New(matcher.Config{Validate: true})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := matcher.New(matcher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ss, fs := strict.NewScanner(), fast.NewScanner()
	var positives, malformed int
	for i := range 20000 {
		r := gen.Next()
		want := r.Positives()
		positives += len(want)
		for _, s := range []*matcher.Scanner{ss, fs} {
			res := s.Match(r.Value, nil)
			var got []string
			for _, f := range res.Findings {
				got = append(got, f.Event.EventID)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("record %d (%v, %v): findings %v, want %v\n%s", i, r.Shape, r.Defect, got, want, r.Value)
			}
			if res.Err != nil && !r.Malformed {
				t.Fatalf("record %d (%v): error %v on a well-formed value\n%q", i, r.Shape, res.Err, r.Value)
			}
		}
		if r.Malformed {
			malformed++
			if res := ss.Match(r.Value, nil); res.Err == nil {
				t.Fatalf("record %d: malformed (%v) but no error with Validate\n%q", i, r.Defect, r.Value)
			}
		}
	}
	if positives < 100 || malformed < 100 {
		t.Fatalf("too few cases: %d positives, %d malformed", positives, malformed)
	}
}

// TestDenseTraffic checks what the exactly-once suites rely on: on the
// matcher's defaults (the Elastic rule, no Validate), every record of a
// dense stream yields exactly one output, the generator's one positive as a
// finding or, for a malformed value, an error (a dead letter) and nothing
// else.
func TestDenseTraffic(t *testing.T) {
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 44, Dense: true, NearMissRate: 0.3, MalformedRate: 0.1})
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewScanner()
	var findings, errs int
	for i := range 20000 {
		r := gen.Next()
		res := s.Match(r.Value, nil)
		switch {
		case r.Malformed:
			if res.Err == nil || len(res.Findings) != 0 {
				t.Fatalf("record %d (%v): %d findings, error %v; want no finding and an error\n%q", i, r.Defect, len(res.Findings), res.Err, r.Value)
			}
			errs++
		default:
			want := r.Positives()
			if res.Err != nil || len(res.Findings) != 1 || len(want) != 1 || res.Findings[0].Event.EventID != want[0] {
				t.Fatalf("record %d (%v): findings %v, error %v; want exactly the finding %v\n%s", i, r.Shape, res.Findings, res.Err, want, r.Value)
			}
			findings++
		}
	}
	if findings < 15000 || errs < 1000 {
		t.Fatalf("%d findings and %d errors: not the dense stream asked for", findings, errs)
	}
}

// TestGeneratedTrafficAllRules checks every companion rule against the
// generator's ground truth, in every shape it makes.
func TestGeneratedTrafficAllRules(t *testing.T) {
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 43, QuarantineRate: 0.02, NearMissRate: 0.2, MalformedRate: 0.01})
	m, err := matcher.New(matcher.Config{Rules: matcher.AllRules})
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewScanner()
	perRule := map[string]int{}
	for i := range 20000 {
		r := gen.Next()
		var want []string
		for _, e := range r.Events {
			if key := e.Kind.RuleKey(); key != "" {
				want = append(want, key+"/"+e.EventID)
			}
		}
		res := s.Match(r.Value, nil)
		var got []string
		for _, f := range res.Findings {
			got = append(got, f.Rule.Key+"/"+f.Event.EventID)
			perRule[f.Rule.Key]++
		}
		if !slices.Equal(got, want) {
			t.Fatalf("record %d (%v): findings %v, want %v\n%s", i, r.Shape, got, want, r.Value)
		}
	}
	for _, rule := range matcher.AllRules {
		if perRule[rule.Key] < 20 {
			t.Errorf("rule %s found only %d times: too few to prove anything", rule.Key, perRule[rule.Key])
		}
	}
	t.Logf("findings per rule: %v", perRule)
}
