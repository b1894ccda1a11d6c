package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// latencyResult is one contender's detection latency under a fixed load:
// from the timestamp the producer gave a source record to the moment a
// read_committed consumer of the findings topic received its finding.
type latencyResult struct {
	contender, label string
	target           int     // records/s asked for
	achieved         float64 // records/s produced
	produced         int64
	// reference marks the ceiling's row: a plain consumer reads the load
	// and finds nothing, so only the producer's wait is measured, the
	// part of every latency that is the broker's, not the contender's.
	reference bool
	// fixed marks quarantine-watch's run at -latency-qw-rate, which has
	// its own target.
	fixed   bool
	samples []time.Duration // positives produced after the warm-up, sorted
	queued  []time.Duration // of those, record timestamp to the broker's ack, sorted
	// own is, of the samples, the broker's ack of the source record to the
	// finding's receipt, sorted: the part of the latency that is the
	// contender's (and the broker's serving of it), not the producer's.
	own      []time.Duration
	censored int           // of those, findings not received by the end of the drain
	drain    time.Duration // how long findings were awaited after the load
	cpu      time.Duration
	busy     time.Duration // warm-up and measurement: the window cpu is compared with
	rss      int64
	note     string // a warning that does not invalidate the result
	err      error
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 1), or
// -1 when it falls among the findings never received (longer than any
// sample).
func (l latencyResult) percentile(p float64) time.Duration {
	return nearestRank(l.samples, l.censored, p)
}

// ownPercentile is percentile of the time from the broker's ack of the
// source record to the finding's receipt.
func (l latencyResult) ownPercentile(p float64) time.Duration {
	return nearestRank(l.own, l.censored, p)
}

// nearestRank returns the nearest-rank p-th percentile of sorted and
// censored more values longer than any of them, or -1 when it falls among
// those.
func nearestRank(sorted []time.Duration, censored int, p float64) time.Duration {
	n := len(sorted) + censored
	if n == 0 {
		return 0
	}
	i := max(0, min(int(float64(n)*p+0.999999)-1, n-1))
	if i >= len(sorted) {
		return -1
	}
	return sorted[i]
}

// queuedP99 is the 99th percentile of the time the measured positives
// spent in the producer: from their timestamp to the broker's ack. It is
// part of the latency, but none of it is the contender's.
func (l latencyResult) queuedP99() time.Duration {
	if len(l.queued) == 0 {
		return 0
	}
	return l.queued[max(0, min(int(float64(len(l.queued))*0.99+0.999999)-1, len(l.queued)-1))]
}

// msCell formats a percentile in milliseconds; a censored one is longer
// than the wait for it.
func (l latencyResult) msCell(p float64) string {
	if l.reference {
		return "-"
	}
	return l.cell(l.percentile(p))
}

// ownCell is msCell of ownPercentile.
func (l latencyResult) ownCell(p float64) string {
	if l.reference {
		return "-"
	}
	return l.cell(l.ownPercentile(p))
}

func (l latencyResult) cell(d time.Duration) string {
	if d < 0 {
		return fmt.Sprintf("> %.0f", msf(l.drain))
	}
	return fmt.Sprintf("%.0f", msf(d))
}

func (l latencyResult) String() string {
	if l.reference {
		s := fmt.Sprintf("latency: %-16s %d records/s asked, %.0f produced; in the producer: p99 %.0f ms of %d positives, with this contender reading",
			l.contender, l.target, l.achieved, msf(l.queuedP99()), len(l.queued))
		if l.err != nil {
			s += ": " + l.err.Error()
		}
		return s
	}
	s := fmt.Sprintf("latency: %-16s %d records/s asked, %.0f produced, %d samples (%d never received), p50 %s ms, p99 %s ms, max %s ms (of which in the producer: p99 %.0f ms; after the broker's ack: p99 %s ms), peak RSS %.0f MB",
		l.contender, l.target, l.achieved, len(l.samples)+l.censored, l.censored, l.msCell(0.5), l.msCell(0.99), l.msCell(1), msf(l.queuedP99()), l.ownCell(0.99), float64(l.rss)/(1<<20))
	if l.note != "" {
		s += "; " + l.note
	}
	if l.err != nil {
		s += ": " + l.err.Error()
	}
	return s
}

// findingReader reads a findings topic read_committed and notes when each
// eventID's finding was received.
type findingReader struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	dups  int
	stop  context.CancelFunc
	done  chan struct{}
	cl    *kgo.Client
	first error
}

func startReader(ctx context.Context, brokers []string, topic string) (*findingReader, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &findingReader{seen: make(map[string]time.Time), stop: cancel, done: make(chan struct{}), cl: cl}
	go func() {
		defer close(r.done)
		for {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			if ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			fs.EachError(func(t string, p int32, err error) {
				if r.first == nil {
					r.first = fmt.Errorf("reading %s/%d: %w", t, p, err)
				}
			})
			fs.EachRecord(func(rec *kgo.Record) {
				id := findingID(rec.Value)
				if _, ok := r.seen[id]; ok {
					r.dups++
					return
				}
				r.seen[id] = now
			})
			r.mu.Unlock()
		}
	}()
	return r, nil
}

func (r *findingReader) close() {
	r.stop()
	<-r.done
	r.cl.Close()
}

// has reports how many of ids have been received.
func (r *findingReader) has(ids []*sent) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range ids {
		if _, ok := r.seen[s.id]; ok {
			n++
		}
	}
	return n
}

// measureLatency runs c on a new, empty source topic, waits until it owns
// every partition, and then produces rate records/s for the warm-up and the
// measurement, positives at -latency-quarantine-rate.
func (b *bench) measureLatency(ctx context.Context, c contender, rate int) (latencyResult, error) {
	lr := latencyResult{contender: c.key, label: c.label, target: rate, reference: c.key == "ceiling"}
	fail := func(err error) (latencyResult, error) {
		lr.err = err
		return lr, err
	}
	s := spec{source: b.name(c.key, "latency-source"), group: b.name(c.key, "latency-group"),
		out: b.name(c.key, "latency-out"), txnID: b.name(c.key, "latency-txn")}
	s.dlq = s.out + ".dlq"
	if b.o.pprofOut != "" && c.key == "quarantine-watch" {
		// For diagnosis: its own histograms of batch and commit
		// durations, written next to the profile.
		addr, err := freeAddr()
		if err != nil {
			return fail(err)
		}
		s.metricsAddr = addr
	}
	if err := b.createTopic(ctx, s.source, b.o.partitions); err != nil {
		return fail(err)
	}
	for _, t := range c.outputs(s) {
		if err := b.createTopic(ctx, t, 6); err != nil {
			return fail(err)
		}
	}
	var reader *findingReader
	if !lr.reference {
		r, err := startReader(ctx, b.brokers, s.out)
		if err != nil {
			return fail(err)
		}
		defer r.close()
		reader = r
	}
	ch, err := startChild(c.key+"-latency", b.logDir, c.argv(b, s), c.childEnv(b))
	if err != nil {
		return fail(err)
	}
	defer ch.kill()
	if err := b.waitAssigned(ctx, ch, s.group, s.source, 2*time.Minute); err != nil {
		return fail(err)
	}

	// One shipper by default; an idempotent franz-go producer has one
	// request in flight per broker, and several did not queue less here.
	var prods []*kgo.Client
	for range b.o.latencyProducers {
		prod, err := kgo.NewClient(producerOpts(b.brokers, s.source)...)
		if err != nil {
			return fail(err)
		}
		defer prod.Close()
		prods = append(prods, prod)
	}
	load := newPacedLoad(rate, b.o.latencyPosRate, b.o.seed+100, 50_000)
	before, err := ch.stats()
	if err != nil {
		return fail(err)
	}
	began := time.Now()
	measureFrom := began.Add(b.o.latencyWarmup)
	var all []*sent
	lr.produced, lr.achieved, err = load.run(ctx, prods, b.o.latencyWarmup+b.o.latencyFor, func(p *sent) { all = append(all, p) })
	if err != nil {
		return fail(fmt.Errorf("producing: %w", err))
	}
	lr.busy = time.Since(began)
	after, err := ch.stats()
	if err != nil {
		return fail(err)
	}
	lr.cpu = after.CPU - before.CPU

	// Wait for the last findings: a contender that cannot keep up at this
	// rate is given -latency-drain to catch up; the findings it has not
	// written by then count as longer than any latency measured.
	lr.drain = b.o.latencyDrain
	deadline := time.Now().Add(b.o.latencyDrain)
	for reader != nil && reader.has(all) < len(all) && time.Now().Before(deadline) && ch.running() && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	st, err := ch.stats()
	if err != nil {
		return fail(ch.failed(ctx))
	}
	lr.rss = st.HWM
	var metricsErr error
	if s.metricsAddr != "" {
		metricsErr = fetchTo(ctx, "http://"+s.metricsAddr+"/metrics", fmt.Sprintf("%s.latency-%d.metrics", b.o.pprofOut, rate))
	}
	stopErr := ch.stop(time.Minute)

	if lr.reference {
		lr.collect(all, nil, measureFrom)
		var errs []error
		if len(lr.queued) < 100 {
			errs = append(errs, fmt.Errorf("only %d acknowledgement samples", len(lr.queued)))
		}
		lr.err = errors.Join(append(errs, stopErr, metricsErr)...)
		return lr, lr.err
	}

	reader.mu.Lock()
	missing := lr.collect(all, reader.seen, measureFrom)
	extra := len(reader.seen) - (len(all) - missing)
	dups, readErr := reader.dups, reader.first
	reader.mu.Unlock()

	var errs []error
	if missing > 0 {
		lr.note = fmt.Sprintf("%d of %d findings not received within %s of the end of the load: it did not keep up", missing, len(all), b.o.latencyDrain)
	}
	if extra > 0 || dups > 0 {
		errs = append(errs, fmt.Errorf("%d unexpected and %d duplicated findings", extra, dups))
	}
	if len(lr.samples)+lr.censored < 100 {
		errs = append(errs, fmt.Errorf("only %d latency samples", len(lr.samples)))
	}
	if achieved := lr.achieved / float64(rate); achieved < 0.95 {
		if lr.note != "" {
			lr.note += "; "
		}
		lr.note += fmt.Sprintf("the producer reached only %.0f%% of %d records/s (it shares the CPUs with the contender and the broker)", 100*achieved, rate)
	}
	errs = append(errs, readErr, stopErr, metricsErr)
	lr.err = errors.Join(errs...)
	return lr, lr.err
}

// collect sorts the positives produced from measureFrom on into lr: each
// one's wait in the producer (its timestamp to the broker's ack) and, when
// seen holds when its finding was received, its latency from the timestamp
// and from the ack, or censored when it was not received. It returns how
// many of all (warm-up included) were not received; a reference row (seen
// nil) has only the producer's wait.
func (lr *latencyResult) collect(all []*sent, seen map[string]time.Time, measureFrom time.Time) (missing int) {
	for _, p := range all {
		measured := !p.at.Before(measureFrom)
		if measured {
			lr.queued = append(lr.queued, p.acked.Sub(p.at))
		}
		if seen == nil {
			continue
		}
		at, ok := seen[p.id]
		switch {
		case !ok:
			missing++
			if measured {
				lr.censored++
			}
		case measured:
			lr.samples = append(lr.samples, at.Sub(p.at))
			lr.own = append(lr.own, at.Sub(p.acked))
		}
	}
	slices.Sort(lr.queued)
	slices.Sort(lr.samples)
	slices.Sort(lr.own)
	return missing
}

// waitAssigned waits until the group is stable with every partition of
// topic assigned.
func (b *bench) waitAssigned(ctx context.Context, ch *child, group, topic string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch.exited:
			return ch.failed(ctx)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not own all of %s within %s", ch.name, topic, timeout)
		}
		dg, err := b.adm.DescribeGroups(ctx, group)
		if err != nil {
			continue
		}
		g, ok := dg[group]
		if !ok || g.Err != nil || g.State != "Stable" {
			continue
		}
		if len(g.AssignedPartitions()[topic]) == b.o.partitions {
			return nil
		}
	}
}
