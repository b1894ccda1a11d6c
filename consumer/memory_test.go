package consumer

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetMemoryLimit(prev)
	if got := memoryLimit(0); got != DefaultMemoryLimit {
		t.Errorf("no GOMEMLIMIT, no setting: %d, want DefaultMemoryLimit %d", got, DefaultMemoryLimit)
	}
	debug.SetMemoryLimit(230 << 20)
	if got := memoryLimit(0); got != 230<<20 {
		t.Errorf("GOMEMLIMIT=230MiB: %d, want %d", got, 230<<20)
	}
	if got := memoryLimit(100 << 20); got != 100<<20 {
		t.Errorf("the setting beside GOMEMLIMIT: %d, want %d", got, 100<<20)
	}
}

func TestFetchSizes(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name          string
		limit         int64
		partitionCap  int32
		brokers       int
		inflation     float64
		wantMax       int32
		wantPartition int32
	}{
		// 40% of 230 MiB is 92 MiB: two fetches of 46 MiB in memory,
		// 11.5 MiB on the wire at 4 bytes of memory per byte fetched.
		{"deployment, lz4 CloudTrail", 230 * mib, 0, 1, 4, 23 * mib / 2, mib},
		{"three brokers", 230 * mib, 0, 3, 4, 23 * mib / 6, mib},
		{"before anything is measured", 230 * mib, 0, 1, initialInflation, 4_823_449, mib},
		{"small budget: partitions fetch less", 16 * mib, 0, 1, 4, 838_860, 838_860},
		{"tiny budget: a fetch is worth its round trip", 1 * mib, 0, 3, 4, minFetchBytes, minFetchBytes},
		{"--fetch-max-partition-bytes", 230 * mib, 256 << 10, 1, 4, 23 * mib / 2, 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFetchSizer(tc.limit, tc.partitionCap)
			gotMax, gotPart := s.sizes(tc.brokers, tc.inflation)
			// Rounding: within a few bytes of the figures above.
			if d := gotMax - tc.wantMax; d < -64 || d > 64 || gotPart-tc.wantPartition < -64 || gotPart-tc.wantPartition > 64 {
				t.Errorf("sizes(%d brokers, %.1f) = %d, %d; want %d, %d", tc.brokers, tc.inflation, gotMax, gotPart, tc.wantMax, tc.wantPartition)
			}
		})
	}
}

func TestFetchSizerMeasures(t *testing.T) {
	s := newFetchSizer(230<<20, 0)
	if got := s.inflation(); got != initialInflation {
		t.Fatalf("nothing fetched: %.2f, want %v", got, initialInflation)
	}
	// 1,000 records of 1,500 bytes in lz4 batches of 450,000 bytes.
	batch := kgo.FetchBatchMetrics{NumRecords: 1000, UncompressedBytes: 1_500_000, CompressedBytes: 450_000}
	for range 10 {
		s.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, batch)
	}
	want := (1_500_000 + 1000*float64(recordMemory)) / 450_000
	if got := s.inflation(); math.Abs(got-want) > 1e-9 {
		t.Errorf("inflation %.4f, want %.4f", got, want)
	}
	if recordMemory < 150 || recordMemory > 400 {
		t.Errorf("recordMemory %d bytes: not what a Record, a pointer, a slice and a Result cost", recordMemory)
	}
	// The history halves past the window, so new traffic soon dominates:
	// uncompressed batches cost their size and their Records.
	plain := kgo.FetchBatchMetrics{NumRecords: 1000, UncompressedBytes: 1_500_000, CompressedBytes: 1_500_000}
	for range 2 * measureWindow / 1_500_000 {
		s.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, plain)
		s.inflation()
	}
	if got, want := s.inflation(), (1_500_000+1000*float64(recordMemory))/1_500_000; math.Abs(got-want) > 0.5 {
		t.Errorf("after a change of traffic: %.2f, want near %.2f", got, want)
	}
}
