// Package telemetry holds what an operator watches: Prometheus metrics (the
// service's own and franz-go's, from kprom, in one registry), liveness and
// readiness, and pprof when asked for. It does not decide what to count:
// the consumer does, through the fields of Metrics.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/plugin/kprom"
)

const namespace = "quarantine_watch"

// Metrics are the service's metrics and health state. The zero value is not
// usable; call New.
type Metrics struct {
	Registry *prometheus.Registry
	// Kafka is franz-go's client metrics: pass it to kgo.WithHooks.
	Kafka *KafkaHooks

	RecordsConsumed prometheus.Counter
	BytesConsumed   prometheus.Counter
	Findings        *prometheus.CounterVec // rule
	DeadLetters     *prometheus.CounterVec // class
	Transactions    *prometheus.CounterVec // outcome: committed, aborted
	// TransactionsAborted counts aborted transactions by reason; the
	// consumer names the reasons.
	TransactionsAborted *prometheus.CounterVec // reason
	// SessionRecreations counts the Kafka sessions rebuilt in process
	// after a transaction could not end, by reason.
	SessionRecreations *prometheus.CounterVec // reason
	// DetectionLatency is, per finding, from the source record's Kafka
	// timestamp to the commit that made the finding visible.
	DetectionLatency prometheus.Histogram
	// CommitLatency is, per committed batch, from the oldest record's
	// timestamp to the commit: how far behind the stream the service runs.
	CommitLatency prometheus.Histogram
	BatchDuration prometheus.Histogram
	// BatchPhase is, per transaction, the time spent in each phase that
	// ran (the consumer names them): where a batch's duration goes.
	BatchPhase *prometheus.HistogramVec // phase
	// Lag is per source partition this instance owns, records between the
	// group's committed offset (or the log start, if below or none) and
	// the partition's last stable offset (what read_committed can see),
	// measured on a timer.
	Lag *prometheus.GaugeVec // topic, partition
	// LastCommit is the time of the last committed transaction.
	LastCommit prometheus.Gauge
	// FetchErrors counts the errors polls returned, by class.
	FetchErrors *prometheus.CounterVec // class
	// RecordsSkipped counts records deleted before the group read them.
	RecordsSkipped *prometheus.CounterVec // topic

	// KafkaContext is franz-go's client metrics of the case worker's
	// session (consumer/casefile.go): a kprom.Metrics serves one client at
	// a time, and the worker's runs beside the loop's.
	KafkaContext *KafkaHooks
	// Lookbacks counts the case worker's watch entries by outcome:
	// written (a context document committed), failed (the look-back could
	// not run and the entry is read again), bad_entry (a value that is not
	// a watch entry, committed without a document), ended (a tombstone),
	// other_key (a key outside "entry/", state of another kind),
	// too_large (a document that cannot be cut to fit its topic, committed
	// without it).
	Lookbacks *prometheus.CounterVec // outcome
	// LookbackRecords counts the source records look-backs read, every
	// pass over the window (a learned key costs another).
	LookbackRecords prometheus.Counter
	// LookbackDuration is, per look-back that wrote its document, from
	// reading the entry to the commit.
	LookbackDuration prometheus.Histogram
	// LoopBehind is 1 while the main loop has more than a batch left to
	// read after its last poll; look-backs read at a fraction of their
	// rate meanwhile.
	LoopBehind prometheus.Gauge
	// WatchMarks counts the markers the loop committed (the no-gap
	// protocol: where a watch entry began to apply on a partition).
	WatchMarks prometheus.Counter
	// MarkersWaiting is 1 while the case worker waits for the markers of an
	// entry (every source partition's) before it covers the gap below them;
	// MarkerWait is how long each entry waited.
	MarkersWaiting prometheus.Gauge
	MarkerWait     prometheus.Histogram
	// GapFindings counts the post-quarantine findings the case worker
	// committed: events of a watched user read before the loop had the entry.
	GapFindings prometheus.Counter
	// WatchEntries counts the findings that open a watch, by outcome:
	// written (the entry committed with the alert) or refused (no entry
	// could be made of the finding: the reason is logged).
	WatchEntries *prometheus.CounterVec // outcome
	// WatchlistEntries is the number of watch entries this instance has
	// loaded and not seen expire.
	WatchlistEntries prometheus.Gauge
	// WatchlistSkipped counts watchlist records the loader could not use
	// (each is logged): a record that is not a valid entry.
	WatchlistSkipped prometheus.Counter
	// WatchlistCaughtUp is 1 once the loader has read the watchlist up to
	// its end as of start-up: until then the watch may miss a user.
	WatchlistCaughtUp prometheus.Gauge

	ready    atomic.Pointer[func() bool]
	stopping atomic.Bool
}

// New returns metrics registered in a new registry, with Go runtime and
// process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	}
	latencyBuckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	m := &Metrics{
		Registry:        reg,
		Kafka:           newKafkaHooks(kprom.NewMetrics(namespace, kprom.Registry(reg), kprom.Subsystem("kafka"))),
		RecordsConsumed: f("records_consumed_total", "Source records in committed transactions."),
		BytesConsumed:   f("bytes_consumed_total", "Bytes of source record values in committed transactions."),
		Findings: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "findings_total",
			Help: "Findings committed to the alerts topic, by rule key."}, []string{"rule"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "dead_letters_total",
			Help: "Records committed to the dead-letter topic, by error class."}, []string{"class"}),
		Transactions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "transactions_total",
			Help: "Transactions ended, by outcome (committed, aborted)."}, []string{"outcome"}),
		DetectionLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "detection_latency_seconds",
			Help: "From a matching source record's timestamp to the commit of its finding.", Buckets: latencyBuckets}),
		CommitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "commit_latency_seconds",
			Help: "From the oldest record's timestamp in a batch to the batch's commit.", Buckets: latencyBuckets}),
		BatchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "batch_duration_seconds",
			Help: "From the start of a transaction to its end.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		BatchPhase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "batch_phase_seconds",
			Help:    "Per transaction, the time spent in each phase that ran: match, open (the offsets' commit that opens a transaction under transactions v2), markers, produce (alerts, dead letters and watch entries, to the flush), end (the commit or abort).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"phase"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "consumer_lag_records",
			Help: "Records between the group's committed offset and the last stable offset, per source partition this instance owns."}, []string{"topic", "partition"}),
		LastCommit: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "last_commit_timestamp_seconds",
			Help: "Unix time of the last committed transaction."}),
	}
	m.FetchErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "fetch_errors_total",
		Help: "Errors returned by polls, by class."}, []string{"class"})
	m.RecordsSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "records_skipped_total",
		Help: "Source records deleted (retention) before the group read them, by topic."}, []string{"topic"})
	m.TransactionsAborted = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "transactions_aborted_total",
		Help: "Transactions aborted, by reason."}, []string{"reason"})
	// ready is /readyz as a metric, so that an alert can see a stalled
	// instance whose /metrics Prometheus still scrapes.
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "ready",
		Help: "1 when /readyz answers 200: started, joined, not stalled, not shutting down."}, func() float64 {
		if m.Ready() {
			return 1
		}
		return 0
	})
	m.SessionRecreations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "session_recreations_total",
		Help: "Kafka sessions rebuilt in process (same transactional id) after a transaction could not end, by reason."}, []string{"reason"})
	m.KafkaContext = newKafkaHooks(kprom.NewMetrics(namespace, kprom.Registry(reg), kprom.Subsystem("kafka_context")))
	m.Lookbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "lookbacks_total",
		Help: "Watchlist records the case worker handled, by outcome (written, failed, bad_entry, ended, other_key, too_large, " +
			"duplicate: the same quarantine's entry again)."}, []string{"outcome"})
	m.LookbackRecords = f("lookback_records_read_total", "Source records read by look-backs, every pass counted.")
	m.LookbackDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "lookback_duration_seconds",
		Help: "From reading a watch entry to the commit of its context document.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)})
	m.LoopBehind = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "loop_behind",
		Help: "1 while the main loop had more than a batch left to read after its last poll (look-backs are slowed)."})
	reg.MustRegister(m.Lookbacks, m.LookbackRecords, m.LookbackDuration, m.LoopBehind)
	m.WatchMarks = f("watch_marks_total", "Markers committed by the loop: where a watch entry began to apply on a source partition.")
	m.MarkersWaiting = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "case_markers_waiting",
		Help: "1 while the case worker waits for the markers of a watch entry on every source partition."})
	m.MarkerWait = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "case_marker_wait_seconds",
		Help: "How long the case worker waited for a watch entry's markers.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)})
	m.GapFindings = f("gap_findings_total", "Post-quarantine findings the case worker committed for events read before the loop had the watch entry.")
	reg.MustRegister(m.WatchMarks, m.MarkersWaiting, m.MarkerWait, m.GapFindings)
	for _, outcome := range []string{"written", "failed", "bad_entry", "ended", "other_key", "too_large", "duplicate"} {
		m.Lookbacks.WithLabelValues(outcome)
	}
	m.WatchEntries = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "watch_entries_total",
		Help: "Findings that open a watch, by outcome: written (the entry committed with the alert), refused (no entry could be made; logged), " +
			"already_open (the same quarantine read again while its watch is open) or ended (a quarantine at or before one whose watch an operator ended)."}, []string{"outcome"})
	m.WatchlistEntries = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "watchlist_entries",
		Help: "Watches (one per quarantine, a user's earlier ones included) loaded by this instance and not expired."})
	m.WatchlistSkipped = f("watchlist_skipped_total", "Watchlist records the loader skipped as not valid entries (each is logged).")
	m.WatchlistCaughtUp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "watchlist_caught_up",
		Help: "1 once the watchlist loader has read the topic up to its end as of start-up."})
	reg.MustRegister(m.WatchEntries, m.WatchlistEntries, m.WatchlistSkipped, m.WatchlistCaughtUp)
	for _, outcome := range []string{"written", "refused", "already_open", "ended"} {
		m.WatchEntries.WithLabelValues(outcome)
	}
	reg.MustRegister(m.FetchErrors, m.RecordsSkipped, m.LastCommit, m.TransactionsAborted, m.SessionRecreations, ready)
	reg.MustRegister(m.RecordsConsumed, m.BytesConsumed, m.Findings, m.DeadLetters, m.Transactions,
		m.DetectionLatency, m.CommitLatency, m.BatchDuration, m.BatchPhase, m.Lag)
	for _, outcome := range []string{"committed", "aborted"} {
		m.Transactions.WithLabelValues(outcome)
	}
	return m
}

// SetLag records a partition's lag.
func (m *Metrics) SetLag(topic string, partition int32, lag int64) {
	m.Lag.WithLabelValues(topic, strconv.Itoa(int(partition))).Set(float64(max(lag, 0)))
}

// DropLag forgets a partition this instance no longer consumes.
func (m *Metrics) DropLag(topic string, partition int32) {
	m.Lag.DeleteLabelValues(topic, strconv.Itoa(int(partition)))
}

// SetReady installs the readiness check: the consumer says when it has
// joined its group.
func (m *Metrics) SetReady(ready func() bool) { m.ready.Store(&ready) }

// Stopping makes /readyz fail from now on: shutdown has begun.
func (m *Metrics) Stopping() { m.stopping.Store(true) }

// Ready reports whether the service is ready to be counted on.
func (m *Metrics) Ready() bool {
	if m.stopping.Load() {
		return false
	}
	f := m.ready.Load()
	return f != nil && (*f)()
}

// Handler serves /metrics, /healthz and /readyz, and /debug/pprof/ when
// withPprof is set. pprof's cmdline page shows cmdline, not os.Args: the
// caller passes the command line with its secrets redacted.
func (m *Metrics) Handler(withPprof bool, cmdline []string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprint(w, strings.Join(cmdline, "\x00"))
		})
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Serve listens on addr until ctx is cancelled. It returns once listening,
// with the bound address (useful with port 0), and serves in the
// background; errors after start-up are logged.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("telemetry: listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	})
	return ln.Addr(), nil
}
