package consumer

import (
	"log/slog"
	"math"
	"runtime/debug"
	"sync/atomic"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// DefaultMemoryLimit is the memory budget when neither Config.MemoryLimit
// nor GOMEMLIMIT sets one.
const DefaultMemoryLimit = 512 << 20

// How the memory budget is shared. Fetched records are what grows with the
// partitions an instance owns: a batch is the fetches that a poll took
// (one per broker at most), and while it is matched and committed franz-go
// reads the next fetch from each broker, so up to two fetches per broker
// are in memory at once. They get fetchShare of the budget; the producer's
// buffer of alerts and dead letters gets outputShare; the rest is the
// runtime's, the matcher's and the GC's headroom (with GOMEMLIMIT at the
// budget, the heap may grow to it before a collection, so live data must
// stay well below it for collections to be rare).
const (
	fetchShare  = 0.40
	outputShare = 1.0 / 16
	// initialInflation is the memory per byte fetched assumed until
	// fetches have been measured: above what lz4 or zstd make of
	// CloudTrail, so the first fetches are small rather than too large.
	initialInflation = 10.0
	// minFetchBytes keeps fetches worth their round trip under a tiny
	// budget.
	minFetchBytes = 64 << 10
	// maxPartitionFetchBytes is franz-go's and Kafka's default per
	// partition, kept unless the fetch itself must be smaller.
	maxPartitionFetchBytes = 1 << 20
	// measureWindow: the measured inflation halves its history past this
	// many fetched bytes, so it follows the traffic.
	measureWindow = 256 << 20
)

// recordMemory is what a fetched record costs beside its bytes while its
// batch is processed: franz-go's Record, the poll's pointer to it, and the
// loop's value slice and match result.
const recordMemory = int64(unsafe.Sizeof(kgo.Record{})) + 8 + int64(unsafe.Sizeof([]byte(nil))) + int64(unsafe.Sizeof(matcher.Result{}))

// memoryLimit returns the budget: limit if set, else the runtime's memory
// limit (GOMEMLIMIT, or debug.SetMemoryLimit), else DefaultMemoryLimit.
func memoryLimit(limit int64) int64 {
	if limit > 0 {
		return limit
	}
	if l := debug.SetMemoryLimit(-1); l > 0 && l < math.MaxInt64 {
		return l
	}
	return DefaultMemoryLimit
}

// fetchSizer keeps what the fetched records hold in memory within the
// fetch share of the budget. Kafka bounds a fetch in bytes on the wire
// (compressed), while memory holds them decompressed, each with its
// Record: the sizer measures that ratio on every batch franz-go reads (a
// HookFetchBatchRead) and sets the fetch size (UpdateFetchMaxBytes) to the
// per-fetch share divided by it, the share being the fetch budget over two
// fetches per broker.
type fetchSizer struct {
	budget        int64 // bytes the fetched records may hold
	partitionCap  int32 // FetchMaxPartitionBytes ceiling
	wire, memory  atomic.Int64
	maxBytes      int32 // in force
	partitionSize int32 // in force
}

func newFetchSizer(limit int64, partitionCap int32) *fetchSizer {
	if partitionCap <= 0 {
		partitionCap = maxPartitionFetchBytes
	}
	s := &fetchSizer{budget: int64(float64(limit) * fetchShare), partitionCap: partitionCap}
	s.maxBytes, s.partitionSize = s.sizes(1, initialInflation)
	return s
}

// OnFetchBatchRead implements kgo.HookFetchBatchRead.
func (s *fetchSizer) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	s.wire.Add(int64(m.CompressedBytes))
	s.memory.Add(int64(m.UncompressedBytes) + int64(m.NumRecords)*recordMemory)
}

// inflation is the memory per byte fetched, as measured, or
// initialInflation before 1 MiB has been fetched.
func (s *fetchSizer) inflation() float64 {
	w, m := s.wire.Load(), s.memory.Load()
	if w < 1<<20 {
		return initialInflation
	}
	if w > measureWindow {
		s.wire.Add(-w / 2)
		s.memory.Add(-m / 2)
	}
	return max(float64(m)/float64(w), 1)
}

// sizes returns FetchMaxBytes and FetchMaxPartitionBytes for brokers
// brokers and an inflation.
func (s *fetchSizer) sizes(brokers int, inflation float64) (maxBytes, partition int32) {
	perFetch := float64(s.budget) / float64(2*max(brokers, 1))
	b := int64(perFetch / inflation)
	b = min(max(b, minFetchBytes), math.MaxInt32)
	return int32(b), min(int32(b), s.partitionCap)
}

// adjust sets the client's fetch sizes from the inflation measured so far
// and the brokers the client knows, when they moved by more than an eighth.
// It runs after each poll, on the loop's goroutine.
func (s *fetchSizer) adjust(cl *kgo.Client, log *slog.Logger) {
	brokers, inflation := len(cl.DiscoveredBrokers()), s.inflation()
	maxBytes, partition := s.sizes(brokers, inflation)
	if d := int64(maxBytes) - int64(s.maxBytes); d*8 > int64(s.maxBytes) || -d*8 > int64(s.maxBytes) || partition != s.partitionSize {
		s.maxBytes, s.partitionSize = maxBytes, partition
		cl.UpdateFetchMaxBytes(maxBytes, partition)
		log.Debug("fetch sizes set", "fetch_max_bytes", maxBytes, "fetch_max_partition_bytes", partition,
			"brokers", brokers, "memory_per_fetched_byte", inflation)
	}
}

// outputBudget is what the producer may buffer of alerts and dead letters
// (kgo.MaxBufferedBytes): Produce waits beyond it.
func outputBudget(limit int64) int64 { return int64(float64(limit) * outputShare) }
