package cloudtrailgen

import (
	"fmt"
	"sort"
	"testing"
)

func TestScratchOps(t *testing.T) {
	g := New(Config{Seed: 1, Shapes: map[Shape]float64{ShapeRecord: 1}})
	sum := map[string]int{}
	cnt := map[string]int{}
	mn := map[string]int{}
	for i := 0; i < 100000; i++ {
		r := g.Next()
		n := r.Events[0].EventName
		sum[n] += len(r.Value)
		cnt[n]++
		if mn[n] == 0 || len(r.Value) < mn[n] {
			mn[n] = len(r.Value)
		}
	}
	var names []string
	for n := range sum {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("%-28s %6d mean %5d min %5d\n", n, cnt[n], sum[n]/cnt[n], mn[n])
	}
}
