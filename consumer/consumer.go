// Package consumer runs the exactly-once loop: it reads CloudTrail from the
// source topics as a member of a consumer group, evaluates each polled batch
// on the matcher pool, and writes findings and dead letters in the same Kafka
// transaction as the consumed offsets.
//
// A batch is either wholly committed (its findings, its dead letters and its
// offsets) or wholly aborted and read again, so readers of the alerts topic
// that use isolation.level=read_committed see every finding exactly once.
// The package does not parse flags, handle signals or serve metrics: cmd
// does, and calls Run.
package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/matcher/lookback"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// Defaults for Config.
const (
	DefaultMaxBatch        = 65536
	DefaultShutdownTimeout = 20 * time.Second
	DefaultTopicPartitions = 6
	DefaultStartupTimeout  = 30 * time.Second
	// DefaultWatchFor is the command's --watch-for: three days, time for
	// a responder to rotate the keys and close the case (Config.WatchFor).
	DefaultWatchFor = 72 * time.Hour
	// DefaultSessionTimeout is franz-go's and Kafka's default.
	DefaultSessionTimeout = 45 * time.Second
	// TransactionTimeoutMargin is how much longer than the session timeout
	// a transaction may stay open by default; see Config.TransactionTimeout.
	TransactionTimeoutMargin = 15 * time.Second
	// maxFailedBatches bounds how many batches in a row may be aborted for
	// produce errors before Run gives up: a persistent failure (a deleted
	// alerts topic, a revoked ACL) is better surfaced as an exit than hidden
	// behind endless replays.
	maxFailedBatches = 5
)

// Config is what Run needs. Brokers, SourceTopics, AlertsTopic, Group and
// TransactionalID are required.
type Config struct {
	Brokers         []string
	SourceTopics    []string
	AlertsTopic     string
	DLQTopic        string // default: AlertsTopic + ".dlq"
	Group           string
	TransactionalID string
	// MaxBatch bounds the records polled into one transaction. A poll
	// returns at most what franz-go has buffered, one fetch per broker, so
	// the default, larger than a fetch of most topics, takes whole fetches:
	// franz-go asks for the next fetch as soon as the buffered one is
	// taken, and it arrives while this batch is matched and committed.
	MaxBatch int
	// Workers is the matcher pool size; 0 means GOMAXPROCS.
	Workers int
	Matcher matcher.Config
	// Encoder is the alert format; nil means ECS.
	Encoder producer.Encoder
	// WatchFor is how long after a quarantine, in event time, the
	// quarantined user is watched (issue 13 §2): each finding of a rule
	// that opens a watch writes a watch entry (with ContextLookback) to
	// WatchlistTopic(AlertsTopic) in its own transaction, and every
	// instance loads the entries into its matcher. Run checks (or creates)
	// the watchlist and the ContextTopic at start-up. Zero disables the
	// watch, and neither topic is needed; the command's --watch-for
	// defaults to DefaultWatchFor.
	WatchFor time.Duration
	// CreateTopics creates the output topics (alerts, dead letters and,
	// when the watch is on, the watchlist and context topics) when missing.
	CreateTopics bool
	// CreateTopicsReplication is the replication factor of the topics
	// CreateTopics creates; 0 means min(3, brokers).
	CreateTopicsReplication int16
	// CreateTopicsMinInsyncReplicas is their min.insync.replicas; "" means
	// 2 when they have 3 replicas or more, else the broker's default.
	CreateTopicsMinInsyncReplicas string
	// AllowCompactedSource lets a source topic have cleanup.policy=compact,
	// under which the broker deletes records that may not have been read.
	AllowCompactedSource bool
	// StartupTimeout bounds reaching the brokers and checking the topics.
	StartupTimeout time.Duration
	// SessionTimeout is how long the group waits for a silent member
	// before moving its partitions; zero means DefaultSessionTimeout.
	SessionTimeout time.Duration
	// TransactionTimeout is how long the broker lets a transaction stay
	// open before aborting it and fencing its producer. It must exceed
	// SessionTimeout: GroupTransactSession.End waits for a heartbeat, and
	// while the group rebalances no heartbeat runs until the join
	// completes, which waits up to the session timeout for a member that
	// died. A shorter timeout lets the broker abort a live member's
	// transaction during that wait and fence it, so one crashed instance
	// takes the others down with it. On Kafka 2.5 and later (KIP-447)
	// offsets are fetched stable, so a longer timeout cannot let a zombie
	// commit. Zero means SessionTimeout + TransactionTimeoutMargin.
	TransactionTimeout time.Duration
	// LagInterval is how often the lag of this instance's partitions is
	// computed from the group's committed offsets and the partitions' last
	// stable offsets; zero means DefaultLagInterval.
	LagInterval time.Duration
	// StallTimeout: an instance whose partitions have lag and that has
	// committed nothing for this long is not ready; zero means
	// DefaultStallTimeout.
	StallTimeout time.Duration
	// watchExpiryEvery is how often the watchlist loader drops expired
	// entries; zero means watchExpiryEvery's constant (tests shorten it).
	watchExpiryEvery time.Duration
	// unknownTopicGrace is how long a source topic may be reported unknown
	// before Run gives up on it: a partition just created is unknown to its
	// leader for a moment.
	unknownTopicGrace time.Duration
	// ShutdownTimeout bounds Run's return once ctx is cancelled: the open
	// transaction gets what is left after reserving a quarter (at most 5 s)
	// to abort it on a fresh context, if its end was cut short, and a
	// quarter (at most 5 s) to leave the group. Keep it under the
	// orchestrator's grace period (Kubernetes' terminationGracePeriodSeconds).
	ShutdownTimeout time.Duration
	// FetchMaxPartitionBytes bounds what one fetch returns per partition
	// (compressed); 0 means 1 MiB, Kafka's default. Fetches are smaller
	// when the memory budget requires it (see MemoryLimit).
	FetchMaxPartitionBytes int32
	// MemoryLimit is the memory budget, in bytes, that the fetch sizes and
	// the producer's buffer derive from: the fetched records of a batch and
	// those fetched while it is processed hold at most 40% of it, the
	// alerts and dead letters being produced a sixteenth. Zero means the
	// runtime's limit (GOMEMLIMIT), else DefaultMemoryLimit; set
	// GOMEMLIMIT to the same value so the garbage collector keeps to it.
	MemoryLimit int64
	// TransactionsV2 lets franz-go use Kafka's transactions v2 (KIP-890
	// part 2) where the broker enables it (Kafka 4.0 and later): a new
	// producer epoch per transaction, so that a request of an earlier
	// transaction delivered late is fenced (see txnv2.go). The command's
	// --transactions-v2 is on by default. Off, the client speaks
	// transactions v1 to every broker; see ClientOpts.
	TransactionsV2 bool
	// ContextLookback is the look-back window written into each watch
	// entry, and the case worker's for an entry that names none; zero
	// means lookback.DefaultLookback (24h).
	ContextLookback time.Duration
	// LookbackPartitions bounds the source partitions one look-back reads
	// at once; zero means DefaultLookbackPartitions.
	LookbackPartitions int
	// LookbackBytesPerSecond bounds what look-backs read, in record value
	// bytes per second; zero means DefaultLookbackBytesPerSecond.
	LookbackBytesPerSecond int64
	// ClientOpts are appended to the options Run builds (TLS, SASL, logging,
	// tuning, test hooks).
	ClientOpts []kgo.Opt
	Logger     *slog.Logger
	// Now is the detection clock; nil means time.Now.
	Now func() time.Time
	// Stats, if set, is updated as batches commit.
	Stats *Stats
	// Metrics, if set, is updated as batches commit, and told when the
	// group is joined and when shutdown begins.
	Metrics *telemetry.Metrics
	// KafkaLogger receives franz-go's own logs; nil means none.
	KafkaLogger *slog.Logger

	// limits are the output topics' max.message.bytes, once Run has read
	// them.
	limits *outputLimits
	// health is the member's partitions, lag and last commit, once Run
	// has made it.
	health *health
	// sizer sizes the fetches to the memory budget.
	sizer *fetchSizer
	// kafkaHooks, when set, take the place of Metrics.Kafka in ClientOpts:
	// the case worker's session has franz-go metrics of its own.
	kafkaHooks kgo.Hook
}

// Stats counts what committed transactions carried. Counts only move when
// a transaction commits, so they never count a replayed record twice.
type Stats struct {
	Records     atomic.Int64
	Findings    atomic.Int64
	DeadLetters atomic.Int64
	Committed   atomic.Int64 // transactions committed
	Aborted     atomic.Int64 // transactions aborted (rebalance, produce error, shutdown)
	Bytes       atomic.Int64 // record value bytes
}

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	var missing []string
	if len(cfg.Brokers) == 0 {
		missing = append(missing, "brokers")
	}
	if len(cfg.SourceTopics) == 0 {
		missing = append(missing, "source topics")
	}
	if cfg.AlertsTopic == "" {
		missing = append(missing, "alerts topic")
	}
	if cfg.Group == "" {
		missing = append(missing, "group")
	}
	if cfg.TransactionalID == "" {
		missing = append(missing, "transactional id")
	}
	if len(missing) > 0 {
		return cfg, fmt.Errorf("consumer: missing %s", strings.Join(missing, ", "))
	}
	if cfg.DLQTopic == "" {
		cfg.DLQTopic = cfg.AlertsTopic + ".dlq"
	}
	if cfg.WatchFor < 0 {
		return cfg, fmt.Errorf("consumer: watch duration %v is negative (0 turns the watch off)", cfg.WatchFor)
	}
	if cfg.ContextLookback < 0 {
		return cfg, fmt.Errorf("consumer: context look-back %v is negative", cfg.ContextLookback)
	}
	if cfg.ContextLookback == 0 {
		cfg.ContextLookback = lookback.DefaultLookback
	}
	for _, t := range cfg.SourceTopics {
		if slices.Contains(cfg.outputTopics(), t) {
			return cfg, fmt.Errorf("consumer: topic %q is both a source and an output", t)
		}
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Encoder == nil {
		cfg.Encoder = producer.ECS{}
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = DefaultStartupTimeout
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if cfg.TransactionTimeout <= 0 {
		cfg.TransactionTimeout = cfg.SessionTimeout + TransactionTimeoutMargin
	}
	if cfg.TransactionTimeout <= cfg.SessionTimeout {
		return cfg, fmt.Errorf("consumer: transaction timeout %v must exceed the session timeout %v: "+
			"a commit waits out a rebalance, which waits up to the session timeout for a member that died, "+
			"and a transaction that times out meanwhile fences this instance", cfg.TransactionTimeout, cfg.SessionTimeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = telemetry.New()
	}
	if cfg.LagInterval <= 0 {
		cfg.LagInterval = DefaultLagInterval
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.unknownTopicGrace <= 0 {
		cfg.unknownTopicGrace = defaultUnknownTopicGrace
	}
	cfg.MemoryLimit = memoryLimit(cfg.MemoryLimit)
	watchlist := ""
	if cfg.watching() {
		watchlist = cfg.watchlistTopic()
	}
	cfg.limits = newOutputLimits(cfg.AlertsTopic, cfg.DLQTopic, watchlist, outputBudget(cfg.MemoryLimit)/2)
	cfg.sizer = newFetchSizer(cfg.MemoryLimit, cfg.FetchMaxPartitionBytes)
	cfg.health = nil // ClientOpts and Run take the copy's
	return cfg, nil
}

// watching reports whether the watch is on (WatchFor > 0).
func (c *Config) watching() bool { return c.WatchFor > 0 }

func (c *Config) watchlistTopic() string { return WatchlistTopic(c.AlertsTopic) }

// outputTopics are the topics Run writes: the alerts and dead-letter
// topics, and the watchlist and context topics when the watch is on.
func (c *Config) outputTopics() []string {
	out := []string{c.AlertsTopic, c.DLQTopic}
	if c.watching() {
		out = append(out, c.watchlistTopic(), ContextTopic(c.AlertsTopic))
	}
	return out
}

// ClientOpts returns the franz-go options of the exactly-once session:
//
//   - SeedBrokers: where to bootstrap.
//   - ConsumerGroup, ConsumeTopics: the group this instance is a member of.
//   - TransactionalID: unique per instance and stable across its restarts,
//     so a restarted instance fences its own zombie.
//   - FetchIsolationLevel(ReadCommitted): a source written transactionally
//     is read as its readers see it; aborted records are never evaluated.
//   - Balancers(CooperativeSticky): a member joining or leaving moves only
//     the partitions it must, so a scale-out does not abort every member's
//     transaction.
//   - DisableAutoCommit is implied by the transactional session, which
//     commits offsets inside each transaction.
//   - RecordPartitioner(outputPartitioner): alerts are keyed by alert id,
//     so the copies of one alert land on one partition; a watch entry's
//     markers land on one partition together (partition.go).
//   - ProducerBatchMaxBytesFn: a batch to an output topic is at most that
//     topic's max.message.bytes, read by Run before anything is produced
//     (franz-go asks when it first produces to a partition); a batch the
//     broker would refuse as too large aborts the transaction of every
//     record in it.
//   - FetchMaxBytes, FetchMaxPartitionBytes and a HookFetchBatchRead: the
//     fetch sizes that keep the fetched records within the memory budget
//     (see MemoryLimit), set again as the loop measures what a fetched
//     byte costs in memory.
//   - MaxBufferedBytes: the alerts and dead letters buffered for producing
//     stay within their share of the budget; Produce waits for the broker
//     beyond it.
//   - WithHooks(kprom): franz-go's client metrics, in the service's registry.
//   - OnPartitionsAssigned/Revoked/Lost: the partitions whose lag this
//     member measures (see health).
//   - KeepRetryableFetchErrors: franz-go hides retryable fetch errors,
//     among them UNKNOWN_TOPIC_OR_PARTITION, which is all a deleted source
//     topic ever shows; every error is counted by class, and the fatal
//     ones end Run (see classifyFetchError).
//   - WithLogger(kslog): franz-go's logs through the service's slog.
//   - SessionTimeout, HeartbeatInterval (a fifteenth of it: 3s, Kafka's
//     default, at the default 45s session timeout),
//     TransactionTimeout: as given or defaulted (see Config).
//   - MaxVersions with EndTxn capped at v4, unless TransactionsV2: the
//     client then speaks transactions v1, under which a request delivered
//     late can end the wrong transaction (docs/reliability.md,
//     TestTransactionSafety). Under v2, franz-go 1.22 commits a
//     transaction's offsets with TxnOffsetCommit v5 and no AddOffsetsToTxn,
//     and End aborts the batch when the broker answers it
//     CONCURRENT_TRANSACTIONS; openForOffsets (txnv2.go) keeps that from
//     happening.
func ClientOpts(cfg *Config) []kgo.Opt {
	h := cfg.health
	if h == nil {
		h = newHealth(cfg)
	}
	var kafkaHooks kgo.Hook = cfg.Metrics.Kafka
	if cfg.kafkaHooks != nil {
		kafkaHooks = cfg.kafkaHooks
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.SourceTopics...),
		kgo.TransactionalID(cfg.TransactionalID),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.RecordPartitioner(outputPartitioner()),
		kgo.WithHooks(kafkaHooks),
		kgo.OnPartitionsAssigned(h.assigned),
		kgo.OnPartitionsRevoked(h.gone),
		kgo.OnPartitionsLost(h.gone),
		kgo.KeepRetryableFetchErrors(),
	}
	if cfg.KafkaLogger != nil {
		opts = append(opts, kgo.WithLogger(kslog.New(cfg.KafkaLogger)))
	}
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout), kgo.HeartbeatInterval(max(cfg.SessionTimeout/15, 100*time.Millisecond)))
	}
	if cfg.TransactionTimeout > 0 {
		opts = append(opts, kgo.TransactionTimeout(cfg.TransactionTimeout))
	}
	if cfg.limits != nil {
		opts = append(opts, kgo.ProducerBatchMaxBytesFn(cfg.limits.batchMax))
	}
	if s := cfg.sizer; s != nil {
		opts = append(opts,
			kgo.FetchMaxBytes(s.maxBytes),
			kgo.FetchMaxPartitionBytes(s.partitionSize),
			kgo.WithHooks(s),
			kgo.MaxBufferedBytes(int(outputBudget(cfg.MemoryLimit))),
		)
	} else if cfg.FetchMaxPartitionBytes > 0 {
		opts = append(opts, kgo.FetchMaxPartitionBytes(cfg.FetchMaxPartitionBytes))
	}
	if !cfg.TransactionsV2 {
		versions := kversion.Stable()
		versions.SetMaxKeyVersion(int16(kmsg.EndTxn), lastEndTxnOfTransactionsV1)
		opts = append(opts, kgo.MaxVersions(versions))
	}
	return opts
}

// lastEndTxnOfTransactionsV1 is the newest EndTxn version before KIP-890
// part 2: franz-go uses transactions v2 only when EndTxn v5 is negotiated.
const lastEndTxnOfTransactionsV1 = 4

// Run consumes until ctx is cancelled or an error a restart would not
// cure: a missing right, a fatal fetch error, outputs that keep failing,
// a transactional id that another process uses. A transaction that
// cannot end (fenced, EndTxn unanswered, the coordinator gone) does not
// end Run: it builds a new session with the same transactional id, unready
// meanwhile (see recovery.go). On cancellation it ends the open transaction (committing it if its records
// were all produced, else aborting), aborts it on a fresh context if that
// did not finish in time, leaves the group and returns nil, all within
// ShutdownTimeout.
func Run(ctx context.Context, c Config) error {
	cfg, err := c.withDefaults()
	if err != nil {
		return err
	}
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	for _, reason := range abortReasons {
		cfg.Metrics.TransactionsAborted.WithLabelValues(reason)
	}
	for _, reason := range rebuildReasons {
		cfg.Metrics.SessionRecreations.WithLabelValues(reason)
	}
	stopReady := context.AfterFunc(ctx, cfg.Metrics.Stopping)
	defer stopReady()
	cfg.health = newHealth(&cfg)
	l := &loop{cfg: &cfg, pool: m.NewPool(cfg.Workers), limits: cfg.limits, sizer: cfg.sizer, health: cfg.health,
		unknownSince: map[string]time.Time{}, unknownLast: map[string]time.Time{}}
	if cfg.watching() {
		watchCtx, stopWatch := context.WithCancel(ctx)
		l.watch, l.watchCtx = newWatchLoader(&cfg, m), watchCtx
		l.marked = map[markKey]int64{}
		cfg.health.gate = l.watch.gate
		defer func() {
			stopWatch()
			if l.watch.started {
				<-l.watch.done
			}
		}()
	}
	if !cfg.watching() {
		return l.run(ctx)
	}
	// With the watch on, the case worker (casefile.go) writes the context
	// document of every watch entry. It starts once the loop's start-up
	// has checked (or created) the topics, stops with the loop, whatever
	// ends it, and Run returns once both have.
	caseCtx, stopCase := context.WithCancel(ctx)
	done := make(chan struct{})
	l.started = func() {
		go func() {
			defer close(done)
			w := newCaseWorker(&cfg)
			w.watch = l.watch
			w.run(caseCtx)
		}()
	}
	err = l.run(ctx)
	stopCase()
	if l.started == nil {
		<-done
	}
	return err
}
