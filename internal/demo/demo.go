// Package demo runs quarantine-watch with nothing around it: an in-process
// Kafka (franz-go's kfake), a generator of realistic CloudTrail traffic, the
// same exactly-once pipeline as the run command, and a read_committed reader
// that prints every alert and context document. It plants one case among
// the traffic (cloudtrailgen.PlantCase: a user whose key AWS quarantines,
// with what it did before, then cloudtrailgen's Aftermath: what it and an
// admin do after) and narrates it on stderr: the alert, the case file's
// context document, then the post-quarantine findings. It is for trying the
// detector, not for measuring it: kfake is an in-memory fake, not Apache
// Kafka.
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/consumer"
	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

// Config says how much traffic to make and how to run the pipeline.
type Config struct {
	// Duration stops the demo; 0 runs until ctx is cancelled.
	Duration time.Duration
	// Rate is the records produced per second; 0 means as fast as the
	// pipeline takes them (bounded by a 10,000-record backlog).
	Rate       int
	Partitions int
	Seed       int64
	// QuarantineRate, NearMissRate and MalformedRate are fractions of the
	// generated events (see cloudtrailgen.Config).
	QuarantineRate float64
	NearMissRate   float64
	MalformedRate  float64
	// Pipeline is the consumer configuration; Brokers and topics are set by Run.
	Pipeline consumer.Config
	// Progress is how often a progress line goes to Stderr; 0 means never.
	Progress time.Duration
	// Stdout and Stderr are written from several goroutines at once: they
	// must take that (an *os.File does; wrap a bytes.Buffer in a mutex).
	Stdout io.Writer
	Stderr io.Writer
	Logger *slog.Logger
}

const (
	sourceTopic = "cloudtrail"
	alertsTopic = "quarantine-alerts"
)

// Run runs the demo until cfg.Duration has passed or ctx is cancelled, then
// prints a summary to Stderr. Findings are JSON lines on Stdout.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(cfg.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 6
	}
	genCfg := cloudtrailgen.Config{Seed: cfg.Seed, QuarantineRate: cfg.QuarantineRate, NearMissRate: cfg.NearMissRate, MalformedRate: cfg.MalformedRate}
	if err := genCfg.Validate(); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(cfg.Partitions), sourceTopic))
	if err != nil {
		return fmt.Errorf("demo: starting in-process Kafka: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	pipeline := cfg.Pipeline
	pipeline.Brokers = brokers
	pipeline.SourceTopics = []string{sourceTopic}
	pipeline.AlertsTopic = alertsTopic
	pipeline.CreateTopics = true
	if pipeline.Group == "" {
		pipeline.Group = "quarantine-watch-demo"
	}
	if pipeline.TransactionalID == "" {
		pipeline.TransactionalID = "quarantine-watch-demo"
	}
	if pipeline.Logger == nil {
		pipeline.Logger = cfg.Logger
	}
	if pipeline.WatchFor == 0 {
		pipeline.WatchFor = consumer.DefaultWatchFor
	}
	stats := new(consumer.Stats)
	pipeline.Stats = stats
	planted := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: cfg.Seed, Noise: caseNoise})
	story := newCaseStory(cfg.Stderr, planted, planted.Aftermath(cfg.Seed))

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 3)

	// The pipeline gets its own context so that it can finish its open
	// transaction, and the reader can print it, after the generator stops.
	pipeCtx, stopPipeline := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipeline()
	wg.Go(func() {
		if err := consumer.Run(pipeCtx, pipeline); err != nil {
			errs <- fmt.Errorf("demo: pipeline: %w", err)
		}
	})

	var produced atomic.Int64
	wg.Go(func() {
		if err := story.plant(ctx, brokers, &produced); err != nil {
			errs <- err
		}
	})
	wg.Go(func() {
		if err := generate(ctx, brokers, cloudtrailgen.New(genCfg), cfg.Rate, &produced); err != nil {
			errs <- err
		}
	})

	readCtx, stopReading := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReading()
	var findings atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		if err := printFindings(readCtx, brokers, cfg.Stdout, &findings, story); err != nil {
			errs <- err
		}
	}()

	if cfg.Progress > 0 {
		go progress(ctx, cfg.Stderr, cfg.Progress, start, &produced, stats)
	}

	select {
	case <-ctx.Done():
	case err := <-errs:
		stopPipeline()
		stopReading()
		return err
	}
	// Let the pipeline catch up with what was produced, for a bounded time,
	// so the summary describes a finished run.
	drainBy := time.Now().Add(10 * time.Second)
	for (stats.Records.Load() < produced.Load() || !story.told()) && time.Now().Before(drainBy) {
		time.Sleep(20 * time.Millisecond)
	}
	stopPipeline()
	wg.Wait()
	// The reader has seen every committed finding once its count matches.
	for findings.Load() < stats.Findings.Load() && time.Now().Before(drainBy.Add(5*time.Second)) {
		time.Sleep(20 * time.Millisecond)
	}
	stopReading()
	<-readDone
	select {
	case err := <-errs:
		return err
	default:
	}

	story.summary()
	elapsed := time.Since(start)
	fmt.Fprintf(cfg.Stderr, "demo: %d records produced, %d consumed (%.0f records/s, %.1f MB/s), %d findings, %d dead letters, %d transactions committed, %d aborted, in %s\n",
		produced.Load(), stats.Records.Load(), float64(stats.Records.Load())/elapsed.Seconds(),
		float64(stats.Bytes.Load())/elapsed.Seconds()/1e6, findings.Load(), stats.DeadLetters.Load(),
		stats.Committed.Load(), stats.Aborted.Load(), elapsed.Round(time.Millisecond))
	return nil
}

// generate produces generated records until ctx is done, at rate per second
// when rate > 0.
func generate(ctx context.Context, brokers []string, gen *cloudtrailgen.Generator, rate int, produced *atomic.Int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(sourceTopic),
		kgo.MaxBufferedRecords(10_000), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return fmt.Errorf("demo: generator client: %w", err)
	}
	defer cl.Close()
	var firstErr error
	var mu sync.Mutex
	promise := func(_ *kgo.Record, err error) {
		if err == nil {
			produced.Add(1)
			return
		}
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	var tick *time.Ticker
	perTick := 0
	if rate > 0 {
		tick = time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		perTick = max(1, rate/100)
	}
	for ctx.Err() == nil {
		if tick != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
				continue
			}
		}
		// Records already handed over are produced even when ctx ends:
		// the summary counts what was produced, not what was abandoned.
		for range max(perTick, 1) {
			r := gen.Next()
			cl.Produce(context.WithoutCancel(ctx), &kgo.Record{Value: r.Value}, promise)
		}
	}
	cl.Flush(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return fmt.Errorf("demo: producing: %w", firstErr)
	}
	return nil
}

// printFindings is what a SIEM does: read the alerts topic and the context
// topic with isolation.level=read_committed. It prints each alert and each
// context document as one line, and tells the story what it read.
func printFindings(ctx context.Context, brokers []string, w io.Writer, n *atomic.Int64, story *caseStory) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(alertsTopic, consumer.ContextTopic(alertsTopic)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AllowAutoTopicCreation(), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return fmt.Errorf("demo: reader client: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var werr error
		fs.EachRecord(func(r *kgo.Record) {
			if werr == nil {
				_, werr = fmt.Fprintf(w, "%s\n", r.Value)
				if r.Topic == alertsTopic {
					n.Add(1)
				}
				story.read(r.Topic != alertsTopic, r.Value)
			}
		})
		if werr != nil {
			return fmt.Errorf("demo: writing findings: %w", werr)
		}
	}
}

func progress(ctx context.Context, w io.Writer, every time.Duration, start time.Time, produced *atomic.Int64, st *consumer.Stats) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			el := time.Since(start).Seconds()
			fmt.Fprintf(w, "demo: %.0fs: %d produced, %d consumed (%.0f/s), %d findings, %d dead letters\n",
				el, produced.Load(), st.Records.Load(), float64(st.Records.Load())/el, st.Findings.Load(), st.DeadLetters.Load())
		}
	}
}
