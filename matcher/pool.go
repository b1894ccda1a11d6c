package matcher

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// chunkSize is how many values a worker claims at a time: large enough that
// the shared counter is touched once per chunk rather than once per record,
// small enough that a few slow (matching or compressed) values do not leave
// one worker finishing alone.
const chunkSize = 32

// Pool evaluates a batch of values on several workers without locks: the
// workers claim chunks of the batch with one atomic counter and write each
// result into the slot of the same index, so results come out in input order
// with no mutex and no channel operation per record.
//
// On this project's 2-core machines two workers run close to twice as fast
// as one (BenchmarkPool). On more cores it should scale with the core count
// until memory bandwidth is the limit: each value is read once and the
// workers share nothing but the counter, which is touched once per chunk.
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
	results = results[:len(values)]
	var next atomic.Int64
	work := func(s *Scanner) {
		for {
			end := int(next.Add(chunkSize))
			start := end - chunkSize
			if start >= len(values) {
				return
			}
			end = min(end, len(values))
			for i := start; i < end; i++ {
				results[i] = s.Match(values[i], results[i].Findings)
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
