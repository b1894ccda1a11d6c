package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

// producerOpts are the options of every source producer: what a CloudTrail
// shipper would set (lz4 batches, 10 ms linger, 1 MiB batches).
func producerOpts(brokers []string, topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerLinger(10 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(1 << 20),
	}
}

// genConfig is the traffic of the benchmark: single CloudTrail records only
// (every contender can parse every value as one record), with positives at
// quarantineRate and near misses at ten times that, nothing malformed.
func genConfig(seed int64, quarantineRate float64) cloudtrailgen.Config {
	return cloudtrailgen.Config{
		Seed:           seed,
		QuarantineRate: quarantineRate,
		NearMissRate:   min(10*quarantineRate, 1-quarantineRate),
		Shapes:         map[cloudtrailgen.Shape]float64{cloudtrailgen.ShapeRecord: 1},
	}
}

// truth is what was written to a source topic, from the generator's ground
// truth.
type truth struct {
	records, bytes int64
	positives      map[string]bool // eventIDs the rule must report
}

// preload writes n generated records to topic from two generators in
// parallel and returns what it wrote. It reports progress on progress.
func preload(ctx context.Context, brokers []string, topic string, n int, seed int64, quarantineRate float64, progress func(string)) (truth, error) {
	cl, err := kgo.NewClient(producerOpts(brokers, topic)...)
	if err != nil {
		return truth{}, err
	}
	defer cl.Close()
	const writers = 2
	var (
		mu       sync.Mutex
		t        = truth{positives: make(map[string]bool)}
		produced atomic.Int64
		firstErr error
		wg       sync.WaitGroup
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
	}
	began := time.Now()
	stopProgress := every(5*time.Second, func() {
		p := produced.Load()
		progress(fmt.Sprintf("preload: %d/%d records, %.0f records/s", p, n, float64(p)/time.Since(began).Seconds()))
	})
	defer stopProgress()
	for w := range writers {
		share := n / writers
		if w == writers-1 {
			share = n - share*(writers-1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := cloudtrailgen.New(genConfig(seed+int64(w), quarantineRate))
			var bytes int64
			var ids []string
			for range share {
				if ctx.Err() != nil {
					return
				}
				r := g.Next()
				bytes += int64(len(r.Value))
				ids = append(ids, r.Positives()...)
				cl.Produce(ctx, &kgo.Record{Value: r.Value}, promise)
				produced.Add(1)
			}
			mu.Lock()
			t.records += int64(share)
			t.bytes += bytes
			for _, id := range ids {
				if t.positives[id] {
					firstErr = errors.Join(firstErr, fmt.Errorf("generator repeated eventID %s", id))
				}
				t.positives[id] = true
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := cl.Flush(ctx); err != nil {
		return t, err
	}
	if firstErr != nil {
		return t, fmt.Errorf("preload: %w", firstErr)
	}
	progress(fmt.Sprintf("preload: %d records, %d MB of values in %s", t.records, t.bytes>>20, time.Since(began).Round(time.Millisecond)))
	return t, ctx.Err()
}

// every calls fn every d until the returned stop is called.
func every(d time.Duration, fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// pacedLoad is the traffic of a latency run: rate records per second for a
// duration, every record stamped with the time it was handed to the
// producer. Ordinary records are drawn from a pool made by the generator
// beforehand, so that generating them does not compete with the contender
// for CPU; positives are generated as they are sent, one in 1/positiveRate.
type pacedLoad struct {
	rate         int
	positiveRate float64
	pool         [][]byte
	pos          *cloudtrailgen.Generator
	pick         *rand.Rand
}

func newPacedLoad(rate int, positiveRate float64, seed int64, poolSize int) *pacedLoad {
	noise := cloudtrailgen.New(genConfig(seed, 0))
	pool := make([][]byte, poolSize)
	for i := range pool {
		pool[i] = noise.Next().Value
	}
	// Every event of this generator is a positive: 80% plain, 10% with an
	// empty errorCode, 10% spelt with \u escapes.
	cfg := genConfig(seed+1, 1)
	cfg.NearMissRate = 0
	return &pacedLoad{
		rate: rate, positiveRate: positiveRate, pool: pool,
		pos:  cloudtrailgen.New(cfg),
		pick: rand.New(rand.NewPCG(uint64(seed), 7)),
	}
}

// sent is one positive a latency run wrote: its eventID, its timestamp, and
// when the broker acknowledged it (set by the time run returns).
type sent struct {
	id    string
	at    time.Time
	acked time.Time
}

// run produces for d, calling onPositive for every positive, and returns
// the records produced and the rate achieved.
func (l *pacedLoad) run(ctx context.Context, cls []*kgo.Client, d time.Duration, onPositive func(*sent)) (int64, float64, error) {
	var (
		mu       sync.Mutex
		firstErr error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
	}
	began := time.Now()
	var n int64
	next := 0
	for ctx.Err() == nil {
		elapsed := time.Since(began)
		if elapsed >= d {
			break
		}
		due := int64(float64(l.rate) * elapsed.Seconds())
		for ; n < due; n++ {
			now := time.Now()
			cl := cls[n%int64(len(cls))]
			if l.pick.Float64() >= l.positiveRate {
				cl.Produce(ctx, &kgo.Record{Value: l.pool[next], Timestamp: now}, promise)
				next = (next + 1) % len(l.pool)
				continue
			}
			r := l.pos.Next()
			var ps []*sent
			for _, id := range r.Positives() {
				p := &sent{id: id, at: now}
				ps = append(ps, p)
				onPositive(p)
			}
			cl.Produce(ctx, &kgo.Record{Value: r.Value, Timestamp: now}, func(r *kgo.Record, err error) {
				acked := time.Now()
				mu.Lock()
				for _, p := range ps {
					p.acked = acked
				}
				mu.Unlock()
				promise(r, err)
			})
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(began)
	for _, cl := range cls {
		if err := cl.Flush(ctx); err != nil {
			return n, 0, err
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return n, float64(n) / elapsed.Seconds(), firstErr
}
