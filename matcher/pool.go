package matcher

import (
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// chunkSize is how many values a worker claims at a time: large enough that
// the shared counter is touched once per chunk rather than once per record,
// small enough that a few slow (matching or compressed) values do not leave
// one worker finishing alone. On the 4,096-record batch of BenchmarkPoolScaling
// 64 did at least as well as 8, 16 and 32; the tail is at most one chunk,
// about 3% of a batch.
const chunkSize = 64

// Pool evaluates a batch of values on several workers without locks: the
// workers claim chunks of the batch with one atomic counter and write each
// result into the slot of the same index, so results come out in input order
// with no mutex and no channel operation per record.
//
// Scaling (BenchmarkPoolScaling, one worker against two in alternate passes):
// on this project's 2-core machines two workers run about 1.7 to 1.8 times as
// fast as one; pure computation with no shared memory reaches 1.93 there. On
// more cores it should scale with the core count until memory bandwidth is
// the limit: each value is read once, and the workers share nothing but the
// counter (touched once per chunk, alone on its cache line) and the read-only
// Matcher. Each Scanner is padded to its own cache lines, since it writes its
// state for every record: unpadded, two Scanners allocated side by side
// shared a line and two workers reached 1.68 instead of 1.72 in one run.
// Past about 8 workers, a larger batch (--max-batch) keeps the tail small.
type Pool struct {
	scanners []*Scanner
}

// NewPool returns a Pool of workers Scanners; workers <= 0 means GOMAXPROCS.
func (m *Matcher) NewPool(workers int) *Pool {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	p := &Pool{scanners: make([]*Scanner, workers)}
	for i := range p.scanners {
		p.scanners[i] = m.NewScanner()
	}
	return p
}

// Workers returns the number of workers.
func (p *Pool) Workers() int { return len(p.scanners) }

// Match evaluates values[i] into results[i]; results must be at least as
// long as values. Each result's Findings slice is reused. Match is not safe
// for concurrent use: one batch at a time.
func (p *Pool) Match(values [][]byte, results []Result) {
	p.match(values, results, p.scanners[0].m.watch.Load())
}

// MatchWatchlist is Match with the watchlist w instead of the Matcher's
// (nil: none), for every value of the batch: see Scanner.MatchWatchlist.
func (p *Pool) MatchWatchlist(w *Watchlist, values [][]byte, results []Result) {
	p.match(values, results, p.scanners[0].m.watchState(w))
}

func (p *Pool) match(values [][]byte, results []Result, ws *watchState) {
	results = results[:len(values)]
	// The counter is the one word the workers share: padded so that it
	// does not share a cache line with anything else they touch.
	var claim struct {
		_    cpu.CacheLinePad
		next atomic.Int64
		_    cpu.CacheLinePad
	}
	work := func(s *Scanner) {
		for {
			end := int(claim.next.Add(chunkSize))
			start := end - chunkSize
			if start >= len(values) {
				return
			}
			end = min(end, len(values))
			for i := start; i < end; i++ {
				results[i] = s.matchWatch(values[i], results[i].Findings, ws)
			}
		}
	}
	workers := min(len(p.scanners), (len(values)+chunkSize-1)/chunkSize)
	if workers <= 1 {
		work(p.scanners[0])
		return
	}
	var wg sync.WaitGroup
	for _, s := range p.scanners[1:workers] {
		wg.Go(func() { work(s) })
	}
	work(p.scanners[0])
	wg.Wait()
}
