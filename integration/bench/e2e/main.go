// Command e2e is the end-to-end benchmark of quarantine-watch (make
// bench-e2e). Against a real Apache Kafka broker started with
// internal/kafkatest, it preloads a topic with generated CloudTrail records
// and then runs each contender over the whole topic, one at a time, each in
// its own process with its own group and output topic:
//
//   - ceiling: a franz-go group consumer that reads every record and decodes
//     nothing (the physical bound on this machine);
//   - quarantine-watch: the real binary, `quarantine-watch run`, exactly once;
//   - kafka-streams: integration/streams-peer, the same rule as a Kafka
//     Streams application with processing.guarantee=exactly_once_v2;
//   - naive: a franz-go GroupTransactSession loop that decodes every record
//     with encoding/json into a map[string]any (runNaive).
//
// For each it measures records/s and MB/s (from its first committed offset
// to the moment its committed offsets reach the end of the topic), CPU
// seconds per million records and peak RSS (from /proc), and checks that its
// findings, read back with read_committed, are exactly the generator's
// ground truth. Then it measures detection latency of quarantine-watch and
// the Kafka Streams peer at half of quarantine-watch's throughput, and
// prints a table with the machine it ran on and the targets met or missed.
//
// It does not tune the broker beyond its heap, run more than one broker, or
// compare the contenders on input shapes other than single CloudTrail
// records (the peer and the baseline only read those).
//
// The in-process contenders are this binary run again with the contender as
// its first argument ("e2e ceiling ...", "e2e naive ..."), so that they are
// measured exactly as the others.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "ceiling", "naive":
			os.Exit(childMain(os.Args[1], os.Args[2:]))
		}
	}
	os.Exit(benchMain(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the benchmark's flags.
type options struct {
	records        int
	partitions     int
	rounds         int
	seed           int64
	quarantineRate float64
	contenders     string

	qwBin          string
	qwArgs         string
	qwBArgs        string
	qwBBin         string
	qwEnv          string
	qwBEnv         string
	maxBatch       int
	streamsJar     string
	java           string
	javaOpts       string
	streamsThreads int
	kafkaHeap      string

	latency          bool
	latencyRate      int
	latencyQWRate    int
	latencyPosRate   float64
	latencyWarmup    time.Duration
	latencyFor       time.Duration
	latencyDrain     time.Duration
	latencyProducers int

	timeout      time.Duration
	pprofOut     string
	pprofSeconds int
	logDir       string
}

func benchMain(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("e2e", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.records, "records", 2_000_000, "records preloaded into the source topic")
	fs.IntVar(&o.partitions, "partitions", 12, "source topic partitions")
	fs.IntVar(&o.rounds, "rounds", 3, "times each contender reads the whole topic (medians are reported)")
	fs.Int64Var(&o.seed, "seed", 1, "traffic generator seed")
	fs.Float64Var(&o.quarantineRate, "quarantine-rate", 1e-4, "fraction of preloaded events that are findings (near misses are 10 times as many)")
	fs.StringVar(&o.contenders, "contenders", "ceiling,quarantine-watch,kafka-streams,naive", "contenders to run, in this order")
	fs.StringVar(&o.qwBin, "quarantine-watch", "bin/quarantine-watch", "the quarantine-watch binary (make build)")
	fs.StringVar(&o.qwArgs, "qw-args", "", "more arguments of quarantine-watch run, space-separated")
	fs.StringVar(&o.qwBBin, "quarantine-watch-b", "", "the binary of the contender quarantine-watch-b (default: -quarantine-watch's): an A/B comparison of two builds in one run")
	fs.StringVar(&o.qwBArgs, "qw-b-args", "", "arguments that the contender quarantine-watch-b adds to quarantine-watch's, space-separated: an A/B comparison in one run (-contenders ceiling,quarantine-watch,quarantine-watch-b)")
	fs.StringVar(&o.qwEnv, "qw-env", "GOMEMLIMIT=230MiB", "environment variables of quarantine-watch, space-separated NAME=value (default: as deploy/kubernetes runs it under a 256Mi limit)")
	fs.StringVar(&o.qwBEnv, "qw-b-env", "", "environment variables that quarantine-watch-b adds to quarantine-watch's")
	fs.IntVar(&o.maxBatch, "max-batch", 65536, "--max-batch of quarantine-watch, and the naive baseline's records per transaction")
	fs.StringVar(&o.streamsJar, "streams-jar", "integration/streams-peer/target/streams-peer.jar", "the Kafka Streams peer (mvn package)")
	fs.StringVar(&o.java, "java", "java", "the java command")
	fs.StringVar(&o.javaOpts, "java-opts", "", "JVM options of the Kafka Streams peer, space-separated (default: the JVM's)")
	fs.IntVar(&o.streamsThreads, "streams-threads", 2, "num.stream.threads of the Kafka Streams peer")
	fs.StringVar(&o.kafkaHeap, "kafka-heap", "-Xmx1g -Xms1g", "KAFKA_HEAP_OPTS of the broker")
	fs.BoolVar(&o.latency, "latency", true, "measure detection latency after throughput")
	fs.IntVar(&o.latencyRate, "latency-rate", 0, "records/s of the latency runs (0: half of quarantine-watch's median throughput)")
	fs.IntVar(&o.latencyQWRate, "latency-qw-rate", 30000, "records/s of one more latency run, of quarantine-watch alone, for its target at a fixed load (0: none)")
	fs.Float64Var(&o.latencyPosRate, "latency-quarantine-rate", 1e-3, "fraction of latency-run records that are findings")
	fs.DurationVar(&o.latencyWarmup, "latency-warmup", 10*time.Second, "load before latency is measured")
	fs.DurationVar(&o.latencyFor, "latency-duration", 45*time.Second, "load during which latency is measured")
	fs.DurationVar(&o.latencyDrain, "latency-drain", time.Minute, "how long findings are awaited after the load ends; later ones count as longer than any measured")
	fs.IntVar(&o.latencyProducers, "latency-producers", 1, "producer clients of the latency runs, records spread round-robin")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "longest a contender may take to read the topic")
	fs.StringVar(&o.pprofOut, "pprof", "", "after the rounds, run quarantine-watch once more with --pprof and write a CPU profile to this file (and its /metrics to FILE.metrics, and those of its latency runs to FILE.latency-RATE.metrics)")
	fs.IntVar(&o.pprofSeconds, "pprof-seconds", 10, "length of the CPU profile")
	fs.StringVar(&o.logDir, "log-dir", "", "where the contenders' logs go (default: a new temporary directory)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "e2e: unexpected arguments %q\n", fs.Args())
		return 2
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"records", o.records}, {"partitions", o.partitions}, {"rounds", o.rounds}, {"max-batch", o.maxBatch},
		{"streams-threads", o.streamsThreads}, {"latency-producers", o.latencyProducers}, {"pprof-seconds", o.pprofSeconds}} {
		if f.v <= 0 {
			fmt.Fprintf(stderr, "e2e: -%s %d: must be positive\n", f.name, f.v)
			return 2
		}
	}
	if o.latencyRate < 0 || o.latencyQWRate < 0 || !(o.latencyPosRate > 0 && o.latencyPosRate <= 1) || !(o.quarantineRate > 0 && o.quarantineRate < 0.09) {
		fmt.Fprintln(stderr, "e2e: -latency-rate and -latency-qw-rate must be 0 or more, -latency-quarantine-rate in (0, 1], -quarantine-rate in (0, 0.09)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{o: o, stdout: stdout, stderr: stderr, began: time.Now()}
	err := b.run(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "e2e: FAILED:", err)
		return 1
	}
	return 0
}

// contender is one program the benchmark measures.
type contender struct {
	key, label string
	// findings is false for the ceiling, which writes nothing.
	findings bool
	argv     func(b *bench, s spec) []string
	// outputs are the topics it writes: findings first, then any that
	// must stay empty (dead letters).
	outputs func(s spec) []string
	// env is added to the benchmark's environment for the process.
	env func(b *bench) []string
}

// childEnv is the environment c runs with, on top of the benchmark's.
func (c contender) childEnv(b *bench) []string {
	if c.env == nil {
		return nil
	}
	return c.env(b)
}

// spec names what one run of a contender uses.
type spec struct {
	source, group, out, dlq, txnID string
	metricsAddr                    string // quarantine-watch with --pprof only
}

var allContenders = []contender{
	{
		key: "ceiling", label: "ceiling: franz-go consumer, no decoding",
		argv: func(b *bench, s spec) []string {
			return []string{b.self, "ceiling", "--brokers", b.brokerList(), "--topic", s.source, "--group", s.group}
		},
		outputs: func(spec) []string { return nil },
	},
	{
		key: "quarantine-watch", label: "quarantine-watch run", findings: true,
		argv:    func(b *bench, s spec) []string { return qwArgv(b, s) },
		outputs: func(s spec) []string { return []string{s.out, s.dlq} },
		env:     func(b *bench) []string { return strings.Fields(b.o.qwEnv) },
	},
	{
		key: "quarantine-watch-b", label: "quarantine-watch run (B)", findings: true,
		argv: func(b *bench, s spec) []string {
			argv := append(qwArgv(b, s), strings.Fields(b.o.qwBArgs)...)
			if b.o.qwBBin != "" {
				argv[0] = b.o.qwBBin
			}
			return argv
		},
		outputs: func(s spec) []string { return []string{s.out, s.dlq} },
		env: func(b *bench) []string {
			return append(strings.Fields(b.o.qwEnv), strings.Fields(b.o.qwBEnv)...)
		},
	},
	{
		key: "kafka-streams", label: "Kafka Streams, exactly_once_v2", findings: true,
		argv: func(b *bench, s spec) []string {
			argv := append([]string{b.o.java}, strings.Fields(b.o.javaOpts)...)
			return append(argv, "-jar", b.o.streamsJar, "--bootstrap-servers", b.brokerList(),
				"--application-id", s.group, "--source-topic", s.source, "--output-topic", s.out,
				"--threads", strconv.Itoa(b.o.streamsThreads))
		},
		outputs: func(s spec) []string { return []string{s.out} },
	},
	{
		key: "naive", label: "naive: encoding/json map, EOS", findings: true,
		argv: func(b *bench, s spec) []string {
			return []string{b.self, "naive", "--brokers", b.brokerList(), "--topic", s.source, "--group", s.group,
				"--output", s.out, "--transactional-id", s.txnID, "--max-batch", strconv.Itoa(b.o.maxBatch)}
		},
		outputs: func(s spec) []string { return []string{s.out} },
	},
}

// qwArgv is quarantine-watch's command line.
func qwArgv(b *bench, s spec) []string {
	argv := []string{b.o.qwBin, "run", "--brokers", b.brokerList(), "--source-topics", s.source,
		"--alerts-topic", s.out, "--dlq-topic", s.dlq, "--group", s.group, "--transactional-id", s.txnID,
		"--log-format", "json", "--max-batch", strconv.Itoa(b.o.maxBatch),
		// The watch is on by default: the service creates its watchlist
		// (compacted) and context topics, which createTopic cannot.
		"--create-topics"}
	if s.metricsAddr != "" {
		argv = append(argv, "--metrics-addr", s.metricsAddr, "--pprof")
	} else {
		argv = append(argv, "--metrics-addr", "")
	}
	return append(argv, strings.Fields(b.o.qwArgs)...)
}

// bench is one run of the benchmark.
type bench struct {
	o              options
	stdout, stderr io.Writer
	began          time.Time
	self           string
	logDir         string

	broker  *kafkatest.Broker
	brokers []string
	adm     *kadm.Client
	seq     int

	machine   machine
	source    string
	end       map[int32]int64 // end offsets of the source topic
	truth     truth
	diskBytes int64

	results  []result
	latency  []latencyResult
	failures []error // wrong findings and failed runs, reported at the end
	profile  string  // the CPU profile's top, when -pprof
}

func (b *bench) brokerList() string { return strings.Join(b.brokers, ",") }

func (b *bench) progress(msg string) {
	fmt.Fprintf(b.stderr, "[%s] %s\n", time.Since(b.began).Round(time.Second), msg)
}

// name returns a topic, group or transactional id unique to this run.
func (b *bench) name(parts ...string) string {
	b.seq++
	return fmt.Sprintf("bench-%s-%d-%x", strings.Join(parts, "-"), b.seq, b.began.UnixNano()&0xffffff)
}

func (b *bench) run(ctx context.Context) error {
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	var todo []contender
	for _, k := range strings.Split(b.o.contenders, ",") {
		i := slices.IndexFunc(allContenders, func(c contender) bool { return c.key == strings.TrimSpace(k) })
		if i < 0 {
			return fmt.Errorf("-contenders: unknown contender %q", k)
		}
		c := allContenders[i]
		if c.key == "quarantine-watch-b" {
			c.label = strings.TrimSpace("quarantine-watch " + b.o.qwBArgs + " " + b.o.qwBEnv)
			if b.o.qwBBin != "" {
				c.label = strings.TrimSpace(b.o.qwBBin + " " + b.o.qwBArgs + " " + b.o.qwBEnv)
			}
		}
		todo = append(todo, c)
	}
	for _, c := range todo {
		switch c.key {
		case "quarantine-watch", "quarantine-watch-b":
			if _, err := os.Stat(b.o.qwBin); err != nil {
				return fmt.Errorf("-quarantine-watch: %w (make build)", err)
			}
			if c.key == "quarantine-watch-b" && b.o.qwBBin != "" {
				if _, err := os.Stat(b.o.qwBBin); err != nil {
					return fmt.Errorf("-quarantine-watch-b: %w", err)
				}
			}
		case "kafka-streams":
			if _, err := os.Stat(b.o.streamsJar); err != nil {
				return fmt.Errorf("-streams-jar: %w (mvn -f integration/streams-peer/pom.xml package)", err)
			}
		}
	}
	b.logDir = b.o.logDir
	if b.logDir == "" {
		if b.logDir, err = os.MkdirTemp("", "bench-e2e-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return err
	}
	b.progress("contender logs in " + b.logDir)

	b.progress("starting the broker")
	b.broker, err = kafkatest.Start(ctx, kafkatest.Options{Env: map[string]string{"KAFKA_HEAP_OPTS": b.o.kafkaHeap}})
	if err != nil {
		return err
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := b.broker.Terminate(tctx); err != nil {
			fmt.Fprintln(b.stderr, "e2e:", err)
		}
	}()
	b.brokers = b.broker.Brokers()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...))
	if err != nil {
		return err
	}
	defer admCl.Close()
	b.adm = kadm.NewClient(admCl)
	b.progress(fmt.Sprintf("broker %s (%s) ready in %s", b.brokerList(), b.broker.Image(), b.broker.StartupTime().Round(time.Millisecond)))
	b.machine = describeMachine(ctx, b)
	if err := b.warmBroker(ctx); err != nil {
		return fmt.Errorf("warming the broker up: %w", err)
	}

	b.source = b.name("source")
	if err := b.createTopic(ctx, b.source, b.o.partitions); err != nil {
		return err
	}
	b.progress(fmt.Sprintf("preloading %s: %d records, %d partitions", b.source, b.o.records, b.o.partitions))
	if b.truth, err = preload(ctx, b.brokers, b.source, b.o.records, b.o.seed, b.o.quarantineRate, b.progress); err != nil {
		return err
	}
	if err := b.readEnd(ctx); err != nil {
		return err
	}

	for round := 1; round <= b.o.rounds; round++ {
		for _, c := range todo {
			r, err := b.throughput(ctx, c, round, false)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil && r.contender == "" {
				return fmt.Errorf("%s, round %d: %w", c.key, round, err)
			}
			b.results = append(b.results, r)
			if err != nil {
				b.failures = append(b.failures, fmt.Errorf("%s, round %d: %w", c.key, round, err))
			}
			b.progress(r.String())
		}
	}
	if b.o.pprofOut != "" && slices.ContainsFunc(todo, func(c contender) bool { return c.key == "quarantine-watch" }) {
		b.progress("profiling quarantine-watch")
		if _, err := b.throughput(ctx, allContenders[1], 0, true); err != nil {
			b.failures = append(b.failures, fmt.Errorf("profiling run: %w", err))
		}
	}

	if b.o.latency {
		rate := b.o.latencyRate
		if rate == 0 {
			rate = int(b.median("quarantine-watch", func(r result) float64 { return r.rate }) / 2)
		}
		if rate <= 0 {
			b.failures = append(b.failures, errors.New("no latency rate: quarantine-watch was not measured and -latency-rate is 0"))
		} else {
			for _, c := range todo {
				if c.key == "naive" {
					continue
				}
				lr, err := b.measureLatency(ctx, c, rate)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				b.latency = append(b.latency, lr)
				if err != nil {
					b.failures = append(b.failures, fmt.Errorf("%s latency: %w", c.key, err))
				}
				b.progress(lr.String())
			}
		}
		if rate := b.o.latencyQWRate; rate > 0 && slices.ContainsFunc(todo, func(c contender) bool { return c.key == "quarantine-watch" }) {
			lr, err := b.measureLatency(ctx, allContenders[1], rate)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lr.fixed = true
			b.latency = append(b.latency, lr)
			if err != nil {
				b.failures = append(b.failures, fmt.Errorf("quarantine-watch latency at %d records/s: %w", rate, err))
			}
			b.progress(lr.String())
		}
	}
	b.machine.loadEnd = loadAverage()
	b.report(b.stdout)
	return errors.Join(b.failures...)
}

// createTopic creates topic with one replica.
func (b *bench) createTopic(ctx context.Context, topic string, partitions int) error {
	resp, err := b.adm.CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	// The controller has created it; wait until the broker's metadata
	// lists every partition with a leader, as the contenders check.
	deadline := time.Now().Add(30 * time.Second)
	for {
		td, err := b.adm.ListTopics(ctx, topic)
		if err == nil {
			if d, ok := td[topic]; ok && d.Err == nil && len(d.Partitions) == partitions && d.Partitions.NumReplicas() > 0 {
				ready := true
				for _, p := range d.Partitions {
					ready = ready && p.Leader >= 0 && p.Err == nil
				}
				if ready {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s: not in the metadata 30 s after it was created (%v)", topic, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// warmBroker commits one transaction with group offsets in it, so that the
// broker creates __consumer_offsets and __transaction_state (seconds on two
// cores) before any contender is timed, not during the first one.
func (b *bench) warmBroker(ctx context.Context) error {
	topic := b.name("warmup")
	if err := b.createTopic(ctx, topic, 1); err != nil {
		return err
	}
	p, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.ProduceSync(ctx, &kgo.Record{Value: []byte("{}")}).FirstErr(); err != nil {
		return err
	}
	s, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(b.brokers...), kgo.ConsumerGroup(b.name("warmup-group")),
		kgo.ConsumeTopics(topic), kgo.TransactionalID(b.name("warmup-txn")), kgo.DefaultProduceTopic(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return err
	}
	defer s.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		fs := s.PollFetches(wctx)
		if err := wctx.Err(); err != nil {
			return err
		}
		if fs.NumRecords() == 0 {
			continue
		}
		if err := s.Begin(); err != nil {
			return err
		}
		s.Produce(wctx, &kgo.Record{Value: []byte("{}")}, nil)
		committed, err := s.End(wctx, kgo.TryCommit)
		if err != nil {
			return err
		}
		if committed {
			return nil
		}
	}
}

// readEnd records the source topic's end offsets and its size on disk.
func (b *bench) readEnd(ctx context.Context) error {
	ends, err := b.adm.ListEndOffsets(ctx, b.source)
	if err != nil {
		return err
	}
	if err := ends.Error(); err != nil {
		return err
	}
	b.end = make(map[int32]int64)
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		b.end[o.Partition] = o.Offset
		total += o.Offset
	})
	if total != b.truth.records {
		return fmt.Errorf("the source topic holds %d records, %d were written", total, b.truth.records)
	}
	if dirs, err := b.adm.DescribeAllLogDirs(ctx, nil); err == nil {
		dirs.Each(func(d kadm.DescribedLogDir) {
			for _, p := range d.Topics[b.source] {
				b.diskBytes += p.Size
			}
		})
	}
	return nil
}

// result is one contender's pass over the whole source topic.
type result struct {
	contender, label string
	round            int
	records, bytes   int64
	startup          time.Duration // process start to its first committed offset
	steady           time.Duration // first committed offset to the end of the topic
	wall             time.Duration // process start to the end of the topic
	rate, mbps       float64       // over steady
	cpu              time.Duration
	rss              int64
	findings         int // -1 for the ceiling
	err              error
}

func (r result) String() string {
	s := fmt.Sprintf("round %d: %-16s %9.0f records/s %7.1f MB/s, startup %5.1f s, %6.2f CPU s/M records, peak RSS %5.0f MB",
		r.round, r.contender, r.rate, r.mbps, r.startup.Seconds(), r.cpuPerMillion(), float64(r.rss)/(1<<20))
	if r.findings >= 0 {
		s += fmt.Sprintf(", %d findings", r.findings)
	}
	if r.err != nil {
		s += ": " + r.err.Error()
	}
	return s
}

func (r result) cpuPerMillion() float64 {
	return r.cpu.Seconds() / float64(r.records) * 1e6
}

// throughput runs c over the whole source topic. An error with a result
// whose contender is set is a wrong result (findings); any other error
// means there is no result.
func (b *bench) throughput(ctx context.Context, c contender, round int, profile bool) (result, error) {
	s := spec{source: b.source, group: b.name(c.key, "group"), out: b.name(c.key, "out"), txnID: b.name(c.key, "txn")}
	s.dlq = s.out + ".dlq"
	if profile {
		addr, err := freeAddr()
		if err != nil {
			return result{}, err
		}
		s.metricsAddr = addr
	}
	for _, t := range c.outputs(s) {
		if err := b.createTopic(ctx, t, 6); err != nil {
			return result{}, err
		}
	}
	name := fmt.Sprintf("%s-round%d", c.key, round)
	if profile {
		name = c.key + "-pprof"
	}
	ch, err := startChild(name, b.logDir, c.argv(b, s), c.childEnv(b))
	if err != nil {
		return result{}, err
	}
	defer ch.kill()

	var profDone chan error
	onFirst := func() {}
	if profile {
		profDone = make(chan error, 1)
		onFirst = func() {
			go func() { profDone <- fetchProfile(ctx, s.metricsAddr, b.o.pprofSeconds, b.o.pprofOut) }()
		}
	}
	p, err := b.waitCaughtUp(ctx, ch, s.group, b.o.timeout, onFirst)
	if err != nil {
		return result{}, err
	}
	if profile {
		if err := <-profDone; err != nil {
			return result{}, fmt.Errorf("profiling: %w", err)
		}
		b.profile = profileTop(b.o.pprofOut, b.o.qwBin)
		if err := fetchTo(ctx, "http://"+s.metricsAddr+"/metrics", b.o.pprofOut+".metrics"); err != nil {
			return result{}, fmt.Errorf("reading /metrics: %w", err)
		}
	}
	st, err := ch.stats()
	if err != nil {
		return result{}, err
	}
	if err := ch.stop(time.Minute); err != nil {
		return result{}, err
	}
	r := result{
		contender: c.key, label: c.label, round: round,
		records: b.truth.records, bytes: b.truth.bytes,
		startup: p.first.Sub(ch.started), steady: p.done.Sub(p.first), wall: p.done.Sub(ch.started),
		cpu: st.CPU, rss: st.HWM, findings: -1,
	}
	frac := float64(b.truth.records-p.firstRecords) / float64(b.truth.records)
	r.rate = float64(b.truth.records-p.firstRecords) / r.steady.Seconds()
	r.mbps = float64(b.truth.bytes) * frac / r.steady.Seconds() / 1e6
	if !c.findings {
		return r, nil
	}
	outs := c.outputs(s)
	values, err := drainTopic(ctx, b.brokers, b.adm, outs[0])
	if err != nil {
		return result{}, err
	}
	r.findings = len(values)
	r.err = checkFindings(values, b.truth.positives)
	for _, t := range outs[1:] {
		dead, err := drainTopic(ctx, b.brokers, b.adm, t)
		if err != nil {
			return result{}, err
		}
		if len(dead) > 0 {
			r.err = errors.Join(r.err, fmt.Errorf("%d records in %s, want none", len(dead), t))
		}
	}
	return r, r.err
}

// progress is what waitCaughtUp saw of a group.
type progress struct {
	first        time.Time // when a committed offset was first seen
	firstRecords int64     // how many records were committed then
	done         time.Time // when every committed offset reached the end
}

// waitCaughtUp polls the group's committed offsets every 50 ms until they
// reach the end of the source topic, calling onFirst when the first is seen.
func (b *bench) waitCaughtUp(ctx context.Context, ch *child, group string, timeout time.Duration, onFirst func()) (progress, error) {
	var p progress
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var total int64
	for _, e := range b.end {
		total += e
	}
	for {
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-ch.exited:
			return p, ch.failed(ctx)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("%s did not reach the end of the topic within %s", ch.name, timeout)
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		offs, err := b.adm.FetchOffsets(qctx, group)
		cancel()
		now := time.Now()
		if err != nil {
			continue // the coordinator is loading, or the group does not exist yet
		}
		var committed int64
		done := true
		for part, end := range b.end {
			o, ok := offs.Lookup(b.source, part)
			if !ok || o.Err != nil || o.At < end {
				done = false
			}
			if ok && o.Err == nil && o.At > 0 {
				committed += o.At
			}
		}
		if committed > 0 && p.first.IsZero() {
			p.first, p.firstRecords = now, committed
			onFirst()
		}
		if done {
			p.done = now
			if committed != total {
				return p, fmt.Errorf("committed %d, the topic holds %d", committed, total)
			}
			return p, nil
		}
	}
}

// freeAddr returns a 127.0.0.1 address with a port that was free.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// fetchProfile writes a CPU profile of seconds from addr's /debug/pprof.
func fetchProfile(ctx context.Context, addr string, seconds int, out string) error {
	return fetchTo(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds), out)
}

// fetchTo writes what url serves to the file out.
func fetchTo(ctx context.Context, url, out string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", req.URL, resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
