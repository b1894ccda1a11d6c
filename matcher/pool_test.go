package matcher_test

import (
	"slices"
	"testing"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// TestPoolMatchesScannerInOrder: whatever the number of workers, result i
// is what one Scanner says of value i, and reusing the results slice across
// batches leaves no stale findings.
func TestPoolMatchesScannerInOrder(t *testing.T) {
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 5, QuarantineRate: 0.05, NearMissRate: 0.05, MalformedRate: 0.02})
	var values [][]byte
	for range 5000 {
		values = append(values, gen.Next().Value)
	}
	m, err := matcher.New(matcher.Config{Rules: matcher.AllRules})
	if err != nil {
		t.Fatal(err)
	}
	one := m.NewScanner()
	want := make([][]string, len(values))
	wantErr := make([]bool, len(values))
	for i, v := range values {
		res := one.Match(v, nil)
		for _, f := range res.Findings {
			want[i] = append(want[i], f.Rule.Key+"/"+f.Event.EventID)
		}
		wantErr[i] = res.Err != nil
	}
	for _, workers := range []int{1, 2, 3, 8} {
		p := m.NewPool(workers)
		results := make([]matcher.Result, len(values))
		for batch := range 3 { // the same slots, reused
			p.Match(values, results)
			for i, res := range results {
				var got []string
				for _, f := range res.Findings {
					got = append(got, f.Rule.Key+"/"+f.Event.EventID)
				}
				if !slices.Equal(got, want[i]) || (res.Err != nil) != wantErr[i] {
					t.Fatalf("workers %d, batch %d, value %d: findings %v err %v, want %v err %v", workers, batch, i, got, res.Err, want[i], wantErr[i])
				}
			}
		}
		// A shorter batch in the same slots.
		p.Match(values[:7], results)
	}
}
