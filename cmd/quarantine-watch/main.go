// Command quarantine-watch detects AWS credential quarantine in CloudTrail
// on Kafka. See the README.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quarantine-watch/quarantine-watch/consumer"
	"github.com/quarantine-watch/quarantine-watch/internal/cli"
	"github.com/quarantine-watch/quarantine-watch/internal/demo"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkaopts"
	"github.com/quarantine-watch/quarantine-watch/internal/scan"
	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/matcher/lookback"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// hostname is os.Hostname; tests replace it.
var hostname = os.Hostname

// version is set with -ldflags "-X main.version=..."; see versionString.
var version string

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `quarantine-watch detects AWS credential quarantine (AWSCompromisedKeyQuarantine
attached to an IAM user) in CloudTrail records read from Kafka, exactly once.

Usage:
  quarantine-watch run [flags]          consume a topic, write findings to an alerts topic
  quarantine-watch demo [flags]         the same pipeline on an in-process Kafka with generated traffic
  quarantine-watch scan [flags] FILE... evaluate files offline ("-" is stdin)
  quarantine-watch watchlist list       list the watched users (the watchlist topic's entries)
  quarantine-watch watchlist end ACCOUNT USER
                                        end a user's watch (writes its tombstone)
  quarantine-watch version

Run "quarantine-watch COMMAND -h" for a command's flags. Every flag can also
be set from the environment: --max-batch is QW_MAX_BATCH.
`

// run parses the command line, turns SIGINT and SIGTERM into a cancelled
// context, and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The demo's story, progress lines and logger, and the service's
	// logger and metrics server, write from several goroutines; an
	// *os.File takes that, a test's bytes.Buffer does not.
	stdout, stderr = &lockedWriter{w: stdout}, &lockedWriter{w: stderr}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		err = runService(ctx, rest, stderr)
	case "demo":
		err = runDemo(ctx, rest, stdout, stderr)
	case "scan":
		err = runScan(rest, stdin, stdout, stderr)
	case "watchlist":
		err = runWatchlist(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "quarantine-watch", versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "quarantine-watch: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errReported):
		return 1
	default:
		fmt.Fprintln(stderr, "quarantine-watch:", err)
		return 1
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var (
	// errUsage means the flags were wrong; the flag package has said why.
	errUsage = errors.New("usage")
	// errReported means the command failed and has said why.
	errReported = errors.New("failed")
)

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// registerSecurity declares the flags of the connection's security, which
// run and watchlist share.
func registerSecurity(fs *cli.FlagSet, sec *kafkaopts.Security) {
	fs.Bool(&sec.TLS, "tls", false, "connect to the brokers with TLS")
	fs.String(&sec.TLSCAFile, "tls-ca-file", "", "PEM file of the CAs that sign the brokers' certificates (default: the system's)")
	fs.String(&sec.TLSCertFile, "tls-cert-file", "", "PEM client certificate, for mutual TLS")
	fs.String(&sec.TLSKeyFile, "tls-key-file", "", "PEM key of --tls-cert-file")
	fs.String(&sec.TLSServerName, "tls-server-name", "", "name to verify in the brokers' certificates (default: the broker's host)")
	fs.Bool(&sec.TLSInsecureSkipVerify, "tls-insecure-skip-verify", false, "INSECURE: accept any broker certificate; for tests only")
	fs.String(&sec.SASLMechanism, "sasl-mechanism", "", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM (credentials from the AWS default chain)")
	fs.String(&sec.SASLUsername, "sasl-username", "", "SASL user")
	fs.Secret(&sec.SASLPassword, "sasl-password", "SASL password; never printed (prefer the environment or a config file readable by this user only: the command line is visible to every user of the machine)")
}

// pipelineFlags are the flags that run and demo share.
type pipelineFlags struct {
	rules, alertFormat               string
	metricsAddr, kafkaLogLevel       string
	pprof                            bool
	maxBatch, workers, maxValueBytes int
	validate                         bool
	shutdown                         time.Duration
	logLevel, logFormat              string
	// cmdline is the command line with secrets redacted, for pprof.
	cmdline []string
}

const alertFormatUsage = "finding document: ecs (an ECS alert) or ocsf (an OCSF 1.3 Detection Finding)"

// encoder returns the producer.Encoder for an --alert-format value.
func encoder(format string) (producer.Encoder, error) {
	switch format {
	case "ecs", "":
		return producer.ECS{}, nil
	case "ocsf":
		return producer.OCSF{}, nil
	}
	return nil, fmt.Errorf("--alert-format %q: want ecs or ocsf", format)
}

// rulesUsage is the --rules help, shared by every command.
var rulesUsage = "rules to evaluate: elastic (Elastic's rule alone), all, or a comma-separated list of " + ruleKeys()

func ruleKeys() string {
	var keys []string
	for _, r := range matcher.AllRules {
		keys = append(keys, r.Key)
	}
	return strings.Join(keys, ", ")
}

func (p *pipelineFlags) register(fs *cli.FlagSet) {
	fs.String(&p.rules, "rules", "elastic", rulesUsage)
	fs.String(&p.alertFormat, "alert-format", "ecs", alertFormatUsage)
	fs.Int(&p.maxBatch, "max-batch", consumer.DefaultMaxBatch, "records polled into one transaction")
	fs.Int(&p.workers, "workers", 0, "matcher workers (0: one per CPU)")
	fs.Int(&p.maxValueBytes, "max-record-bytes", matcher.DefaultMaxValueBytes, "larger record values go to the dead-letter topic")
	fs.Bool(&p.validate, "validate", false, "fully validate every record, so that every malformed record reaches the dead-letter topic, not only those that could hold a finding (costs a JSON scan of every record)")
	fs.Duration(&p.shutdown, "shutdown-timeout", consumer.DefaultShutdownTimeout, "the whole shutdown on SIGTERM: ending the open transaction (half of it), aborting it if that was cut short, leaving the group (a quarter each, at most 5 s)")
	fs.String(&p.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.String(&p.kafkaLogLevel, "kafka-log-level", "warn", "level of the Kafka client's own logs")
	fs.String(&p.logFormat, "log-format", "auto", "json, text, or auto (JSON unless stderr is a terminal)")
}

// apply validates the flags into cfg and starts the metrics server when
// asked; it stops with ctx.
func (p *pipelineFlags) apply(ctx context.Context, cfg *consumer.Config) error {
	if p.maxBatch <= 0 {
		return fmt.Errorf("--max-batch %d: must be positive", p.maxBatch)
	}
	if p.workers < 0 {
		return fmt.Errorf("--workers %d: must be 0 or more", p.workers)
	}
	if p.maxValueBytes <= 0 {
		return fmt.Errorf("--max-record-bytes %d: must be positive", p.maxValueBytes)
	}
	rules, err := matcher.ParseRules(p.rules)
	if err != nil {
		return fmt.Errorf("--rules: %w", err)
	}
	if cfg.Encoder, err = encoder(p.alertFormat); err != nil {
		return err
	}
	log, err := cli.NewLogger(os.Stderr, p.logLevel, p.logFormat)
	if err != nil {
		return err
	}
	cfg.MaxBatch = p.maxBatch
	cfg.Workers = p.workers
	cfg.Matcher = matcher.Config{Rules: rules, MaxValueBytes: p.maxValueBytes, Validate: p.validate}
	cfg.ShutdownTimeout = p.shutdown
	cfg.Logger = log
	if cfg.KafkaLogger, err = cli.NewLogger(os.Stderr, p.kafkaLogLevel, p.logFormat); err != nil {
		return fmt.Errorf("--kafka-log-level: %w", err)
	}
	cfg.KafkaLogger = cfg.KafkaLogger.With("component", "kafka-client")
	cfg.Metrics = telemetry.New()
	if p.metricsAddr != "" {
		addr, err := telemetry.Serve(ctx, p.metricsAddr, cfg.Metrics.Handler(p.pprof, p.cmdline), log)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		log.Info("serving /metrics, /healthz and /readyz", "addr", addr.String(), "pprof", p.pprof)
	}
	return nil
}

// parse parses flags; the flag set has already printed what was wrong.
func parse(fs *cli.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	return nil
}

func runService(ctx context.Context, args []string, stderr io.Writer) error {
	fs := cli.NewFlagSet("run", stderr)
	var cfg consumer.Config
	var p pipelineFlags
	fs.List(&cfg.Brokers, "brokers", []string{"localhost:9092"}, "Kafka bootstrap brokers, comma-separated")
	fs.List(&cfg.SourceTopics, "source-topics", []string{"cloudtrail"}, "topics holding CloudTrail, comma-separated")
	fs.String(&cfg.AlertsTopic, "alerts-topic", "quarantine-alerts", "topic findings are written to")
	fs.String(&cfg.DLQTopic, "dlq-topic", "", `dead-letter topic (default "<alerts-topic>.dlq")`)
	fs.String(&cfg.Group, "group", "quarantine-watch", "consumer group")
	fs.String(&cfg.TransactionalID, "transactional-id", "", `transactional id: unique per instance, stable across its restarts (default "<group>/<host name>")`)
	fs.Duration(&cfg.WatchFor, "watch-for", consumer.DefaultWatchFor, "after a quarantine, watch the user this long (event time) and report what it does as post-quarantine findings; the watch entries go to <alerts-topic>.watchlist (compacted), the context documents to <alerts-topic>.context; 0 turns the watch off, and neither topic is needed")
	fs.Duration(&cfg.ContextLookback, "context-lookback", lookback.DefaultLookback, "the context document's window before the finding, written into each watch entry")
	lookbackRate := 0
	fs.Int(&lookbackRate, "lookback-bytes-per-second", consumer.DefaultLookbackBytesPerSecond, "most record bytes per second the case worker's look-backs read from the source topics, so that detection keeps its latency; a sixteenth of it while the main loop is more than a batch behind")
	fs.Int(&cfg.LookbackPartitions, "lookback-partitions", consumer.DefaultLookbackPartitions, "source partitions a look-back reads at once")
	fs.Bool(&cfg.CreateTopics, "create-topics", false, "create the output topics if missing: alerts, dead letters and, with --watch-for, the watchlist (compacted) and context topics")
	createRF := 0
	fs.Int(&createRF, "create-topics-replication-factor", 0, "replicas of the topics --create-topics creates (0: min(3, brokers))")
	fs.String(&cfg.CreateTopicsMinInsyncReplicas, "create-topics-min-insync-replicas", "", `min.insync.replicas of the topics --create-topics creates (default 2 with 3 replicas or more, else the broker's)`)
	fs.Bool(&cfg.AllowCompactedSource, "allow-compacted-source", false, "consume a source topic with cleanup.policy=compact, whose records the broker may delete before they are read")
	fs.Duration(&cfg.StartupTimeout, "startup-timeout", consumer.DefaultStartupTimeout, "time allowed to reach the brokers and check the topics")
	fs.Duration(&cfg.SessionTimeout, "session-timeout", 0, "group session timeout: how soon a silent instance's partitions move (0: 45s)")
	fs.Duration(&cfg.TransactionTimeout, "transaction-timeout", 0, "how soon the broker aborts a silent instance's open transaction; above --session-timeout, since a commit can wait out a rebalance (0: session timeout + 15s)")
	fs.Duration(&cfg.StallTimeout, "stall-timeout", consumer.DefaultStallTimeout, "/readyz fails while records wait and nothing has committed for this long")
	fs.Duration(&cfg.LagInterval, "lag-interval", consumer.DefaultLagInterval, "how often the lag is computed from the group's committed offsets")
	fetchBytes := 0
	fs.Int(&fetchBytes, "fetch-max-partition-bytes", 0, "most compressed bytes one fetch returns per partition (0: 1 MiB; less when the memory budget, GOMEMLIMIT, needs it)")
	fs.Bool(&cfg.TransactionsV2, "transactions-v2", true, "use Kafka's transactions v2 (KIP-890: a new producer epoch per transaction, so a request delivered late cannot commit or abort a later transaction) where the brokers enable it; =false speaks v1 to every broker")
	var sec kafkaopts.Security
	registerSecurity(fs, &sec)
	p.register(fs)
	fs.String(&p.metricsAddr, "metrics-addr", ":9090", `address of /metrics, /healthz and /readyz ("" turns them off)`)
	fs.Bool(&p.pprof, "pprof", false, "serve /debug/pprof/ on the metrics address")
	if err := parse(fs, args); err != nil {
		return err
	}
	p.cmdline = append([]string{os.Args[0], "run"}, fs.Redact(args)...)
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected arguments %q", fs.Args())
	}
	if cfg.TransactionalID == "" {
		host, err := hostname()
		if err != nil || host == "" {
			return fmt.Errorf("run: no host name to make the default transactional id of (%v): set --transactional-id, unique per instance and stable across its restarts", err)
		}
		// The group keeps two services on one host (host networking,
		// hostNetwork pods) from sharing an id and fencing each other.
		cfg.TransactionalID = cfg.Group + "/" + host
	}
	if createRF < 0 || createRF > math.MaxInt16 {
		return fmt.Errorf("run: --create-topics-replication-factor %d: want 0 to %d", createRF, math.MaxInt16)
	}
	cfg.CreateTopicsReplication = int16(createRF)
	if fetchBytes < 0 || fetchBytes > math.MaxInt32 {
		return fmt.Errorf("run: --fetch-max-partition-bytes %d: want 0 to %d", fetchBytes, math.MaxInt32)
	}
	cfg.FetchMaxPartitionBytes = int32(fetchBytes)
	if cfg.WatchFor < 0 {
		return fmt.Errorf("run: --watch-for %v: want 0 (off) or more", cfg.WatchFor)
	}
	if cfg.ContextLookback <= 0 {
		return fmt.Errorf("run: --context-lookback %v: must be more than 0", cfg.ContextLookback)
	}
	if lookbackRate <= 0 {
		return fmt.Errorf("run: --lookback-bytes-per-second %d: must be more than 0", lookbackRate)
	}
	cfg.LookbackBytesPerSecond = int64(lookbackRate)
	if cfg.LookbackPartitions <= 0 {
		return fmt.Errorf("run: --lookback-partitions %d: must be more than 0", cfg.LookbackPartitions)
	}
	if err := p.apply(ctx, &cfg); err != nil {
		return err
	}
	secOpts, err := sec.Opts()
	if err != nil {
		return err
	}
	cfg.ClientOpts = append(cfg.ClientOpts, secOpts...)
	if fs.OnCommandLine("sasl-password") {
		cfg.Logger.Warn("--sasl-password is on the command line, which every user of this machine can read (ps, /proc); set QW_SASL_PASSWORD or put it in the --config file instead")
	}
	if sec.TLSInsecureSkipVerify {
		cfg.Logger.Warn("--tls-insecure-skip-verify: broker certificates are not checked; anyone on the path can read and forge this traffic")
	}
	cfg.Logger.Info("starting", "version", versionString(), "brokers", cfg.Brokers, "security", sec, "group", cfg.Group,
		"transactional_id", cfg.TransactionalID, "rules", p.rules, "validate", p.validate)
	return consumer.Run(ctx, cfg)
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("demo", stderr)
	var cfg demo.Config
	var p pipelineFlags
	fs.Duration(&cfg.Duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	fs.Int(&cfg.Rate, "rate", 2000, "records produced per second (0: as fast as the pipeline goes)")
	fs.Int(&cfg.Partitions, "partitions", 6, "source topic partitions")
	seed := 0
	fs.Int(&seed, "seed", 1, "traffic generator seed")
	fs.Float(&cfg.QuarantineRate, "quarantine-rate", 0.001, "fraction of events that are quarantine attachments")
	fs.Float(&cfg.NearMissRate, "near-miss-rate", 0.01, "fraction of events that are near misses (failed, role or group, other policies, detaches)")
	fs.Float(&cfg.MalformedRate, "malformed-rate", 0.001, "fraction of records that are malformed")
	fs.Duration(&cfg.Progress, "progress", 5*time.Second, "progress line interval on stderr (0: none)")
	p.register(fs)
	fs.String(&p.metricsAddr, "metrics-addr", "", `address of /metrics, /healthz and /readyz (default off)`)
	fs.Bool(&p.pprof, "pprof", false, "serve /debug/pprof/ on the metrics address")
	if err := parse(fs, args); err != nil {
		return err
	}
	p.cmdline = append([]string{os.Args[0], "demo"}, fs.Redact(args)...)
	if err := p.apply(ctx, &cfg.Pipeline); err != nil {
		return err
	}
	cfg.Seed = int64(seed)
	cfg.Stdout, cfg.Stderr = stdout, stderr
	cfg.Logger = cfg.Pipeline.Logger
	if cfg.Rate < 0 {
		return fmt.Errorf("--rate %d: must be 0 or more", cfg.Rate)
	}
	return demo.Run(ctx, cfg)
}

func runScan(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("scan", stderr)
	var cfg scan.Config
	maxValue := 0
	fs.Int(&maxValue, "max-record-bytes", 64<<20, "larger documents are reported malformed")
	validate := true
	fs.Bool(&validate, "validate", true, "fully validate every document and report every malformed one; with false, a document that cannot hold a finding is reported only when it is not a whole JSON object, and a line of several such documents counts as one")
	ruleSpec := "elastic"
	fs.String(&ruleSpec, "rules", "elastic", rulesUsage)
	format := "ecs"
	fs.String(&format, "alert-format", "ecs", alertFormatUsage)
	fs.Int(&cfg.Workers, "workers", 0, "matcher workers (0: one per CPU)")
	fs.Bool(&cfg.Context, "context", false, "follow each finding of the elastic or attach-failed rule with its context document: the quarantined user's activity in the files (the files are the window) before the finding; reads the files again, so not stdin")
	fs.Duration(&cfg.Lookback, "context-lookback", lookback.DefaultLookback, "the context document's window before the finding")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: quarantine-watch scan [flags] FILE... (\"-\" is stdin; .gz is read compressed)\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	rules, err := matcher.ParseRules(ruleSpec)
	if err != nil {
		return fmt.Errorf("--rules: %w", err)
	}
	if cfg.Workers < 0 {
		return fmt.Errorf("--workers %d: must be 0 or more", cfg.Workers)
	}
	if cfg.Lookback <= 0 {
		return fmt.Errorf("--context-lookback %v: must be more than 0", cfg.Lookback)
	}
	if cfg.Context && format != "ecs" {
		return fmt.Errorf("--context with --alert-format %s: the context document has an ECS form only", format)
	}
	cfg.Matcher = matcher.Config{Rules: rules, MaxValueBytes: maxValue, Validate: validate}
	if cfg.Encoder, err = encoder(format); err != nil {
		return err
	}
	cfg.Stdin, cfg.Stdout, cfg.Stderr = stdin, stdout, stderr
	if f, ok := stderr.(*os.File); ok {
		cfg.Progress = cli.IsTerminal(f)
	}
	_, err = scan.Run(cfg, fs.Args())
	if errors.Is(err, scan.ErrUnreadable) {
		return errReported
	}
	return err
}
