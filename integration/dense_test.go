package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// The dense oracle. The source is a dense stream (cloudtrailgen.Config.Dense):
// on the service's default flags every source record yields exactly one
// output, a finding or a dead letter, so the outputs, read with
// read_committed, must name every record of the source log exactly once. A
// record skipped or committed twice anywhere shows, not only the one in a
// hundred that is a finding. The source is written in transactions, some of
// them aborted: their records are in the log, invisible to read_committed,
// and must produce nothing.
//
// Two readers judge, one franz-go and one not (kcat, librdkafka), each during
// the faults and again after, and they must agree record for record. The
// franz-go reader takes each output's source position from what the output
// says (quarantine_watch.source in the alert, the source-* headers of a dead
// letter); kcat reads keys only (an alert's key is its alert id, a dead
// letter's is the source record's key, unique per record), which the test
// maps to source records from what it wrote. The expected set is the source
// log itself, read with read_committed by both libraries.

// elasticRuleID is the id of Elastic's rule, from Elastic's rule file, not
// from the matcher.
const elasticRuleID = "0b79f5c0-2c31-4fea-86cd-e62644278205"

// postQuarantineRuleIDs are the post-quarantine rules' ids (docs/rules.md).
var postQuarantineRuleIDs = []string{"4fa36cd2-2037-4749-98fb-f038ad0d03f5", "5f65c987-11ee-4c03-9b3d-8cd6983599d9", "fa33cc09-e802-4dfd-83db-cf6a9e763cc3"}

// alertIDOf is the alert id of rule ruleID's finding on eventID, derived as
// docs/siem.md specifies it (SHA-256 over the domain, the rule id and the
// event id, NUL separated), independently of package producer.
func alertIDOf(ruleID, eventID string) string {
	sum := sha256.Sum256([]byte("quarantine-watch/alert-id/v1\x00" + ruleID + "\x00event-id\x00" + eventID))
	return hex.EncodeToString(sum[:])
}

// postAlertIDOf is the alert id of post-quarantine rule ruleID's finding
// on event eventID for the watch of user in account, as docs/siem.md
// specifies (producer.FindingAlertID), written out here.
func postAlertIDOf(ruleID, eventID, account, user string) string {
	sum := sha256.Sum256([]byte("quarantine-watch/alert-id/v1\x00" + ruleID + "\x00alert-id\x00" + alertIDOf(ruleID, eventID) +
		"\x00watch\x00" + account + "\x00" + strings.ToLower(user)))
	return hex.EncodeToString(sum[:])
}

// denseArgs are the service's flags in the dense runs: its defaults (the
// Elastic rule, no --validate, the default batch size, the default session
// and transaction timeouts), with JSON logs, which the test reads, and no
// metrics listener, since instances share the host's ports. A run adds
// what it needs (extra).
func denseArgs(brokers []string, p pipeline, extra ...string) []string {
	args := []string{"run",
		"--brokers", strings.Join(brokers, ","),
		"--source-topics", p.source,
		"--alerts-topic", p.alerts,
		"--group", p.group,
		"--metrics-addr", "",
		"--log-format", "json",
	}
	return append(args, extra...)
}

// fate is how the writer's transaction holding a source record ended.
type fate uint8

const (
	fateCommitted fate = iota + 1
	fateAborted
	// fateUnknown: the transaction's end was not acknowledged (a broker
	// died under it). The source log says which way it went.
	fateUnknown
)

// denseRecord is what the writer knows of one source record.
type denseRecord struct {
	alertID string // the finding it must yield; empty: malformed, a dead letter
	fate    fate
	pos     pos // where the writer was told it landed; zero if never told
}

// denseSourceConfig shapes the writer's traffic.
type denseSourceConfig struct {
	records    int           // how many to write, aborted ones included
	chunk      int           // records per source transaction
	abortEvery int           // every n-th transaction is aborted
	every      time.Duration // pause between two transactions
	// period, if set, replaces every: a transaction starts every period,
	// however long the last took, and a start missed while a transaction
	// was slow is dropped, not made up in a burst, so that the rate is
	// steady at chunk records a period (the soak's source).
	period time.Duration
	seed   int64
}

// denseSource writes a dense stream to the source topic in transactions,
// with its own transactional id, and keeps the ledger of what it wrote.
// Each record's key is unique ("d<sequence>"), so a dead letter, which
// keeps its source record's key, names the record it stands for.
type denseSource struct {
	cfg   denseSourceConfig
	topic string

	mu      sync.Mutex
	records map[string]*denseRecord // by key
	byAlert map[string]string       // alert id → key
	// byPost maps the alert id each post-quarantine rule would give each
	// event to its record's key: which events are a watched user's depends
	// on when the instance loaded each watch (the watch is on by default),
	// so such alerts are not expected, but each must be its record's, once.
	byPost   map[string]string
	txns     int
	aborted  int // transactions aborted on purpose
	unknown  int // transactions whose end was not acknowledged
	restarts int // times the writer's client was replaced after an error
	written  int
	errs     []string

	release chan struct{} // closed to start writing
	done    chan struct{}
}

func startDenseSource(ctx context.Context, t *testing.T, b cluster, topic string, cfg denseSourceConfig) *denseSource {
	s := &denseSource{
		cfg: cfg, topic: topic,
		records: map[string]*denseRecord{}, byAlert: map[string]string{}, byPost: map[string]string{},
		release: make(chan struct{}), done: make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	txnID := kafkatest.Name(t, "source-txn")
	go s.run(ctx, b, txnID)
	return s
}

func (s *denseSource) newClient(b cluster, txnID string) (*kgo.Client, error) {
	return kgo.NewClient(
		kgo.SeedBrokers(b.Brokers()...),
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(30*time.Second),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
}

func (s *denseSource) run(ctx context.Context, b cluster, txnID string) {
	defer close(s.done)
	select {
	case <-s.release:
	case <-ctx.Done():
		return
	}
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: s.cfg.seed, Dense: true, NearMissRate: 0.2, MalformedRate: 0.08})
	cl, err := s.newClient(b, txnID)
	if err != nil {
		s.fail(err)
		return
	}
	defer func() { cl.Close() }()
	seq := 0
	next := time.Now()
	// The last transaction commits a record to every partition, and is
	// written again until its commit is acknowledged: the group can then
	// be seen to have read the whole source (see caughtUp).
	for txn, closed := 1, false; !closed; txn++ {
		left := s.remaining()
		last := left <= 0
		abort := !last && s.cfg.abortEvery > 0 && txn%s.cfg.abortEvery == 0
		n := min(s.cfg.chunk, left)
		if last {
			n = sourcePartitions
		}
		rs := make([]*kgo.Record, n)
		recs := make([]*denseRecord, n)
		s.mu.Lock()
		for i := range rs {
			r := gen.Next()
			key := "d" + strconv.Itoa(seq)
			rs[i] = &kgo.Record{Topic: s.topic, Partition: int32(seq % sourcePartitions), Key: []byte(key), Value: r.Value}
			recs[i] = &denseRecord{fate: fateUnknown}
			if !r.Malformed {
				recs[i].alertID = alertIDOf(elasticRuleID, r.Positives()[0])
				s.byAlert[recs[i].alertID] = key
				for _, e := range r.Events {
					for _, rule := range postQuarantineRuleIDs {
						// Every event of the dense stream acts on its
						// user: the watch it can fall under is that user's.
						s.byPost[postAlertIDOf(rule, e.EventID, e.AccountID, e.UserName)] = key
					}
				}
			}
			s.records[key] = recs[i]
			seq++
		}
		s.written += n
		s.txns++
		s.mu.Unlock()

		end, err := s.transact(ctx, cl, rs, abort)
		s.mu.Lock()
		for i, r := range rs {
			if r.Offset >= 0 && err == nil {
				recs[i].pos = pos{r.Partition, r.Offset}
			}
			recs[i].fate = end
		}
		switch {
		case end == fateUnknown:
			s.unknown++
		case abort:
			s.aborted++
		}
		closed = last && end == fateCommitted
		s.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// The transaction's outcome is for the log to say; a new client
			// with the same transactional id fences this one and aborts
			// whatever it left open.
			s.mu.Lock()
			s.restarts++
			s.errs = append(s.errs, err.Error())
			s.mu.Unlock()
			cl.Close()
			for {
				if cl, err = s.newClient(b, txnID); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
		wait := s.cfg.every
		if s.cfg.period > 0 {
			next = next.Add(s.cfg.period)
			if now := time.Now(); next.Before(now) {
				next = now
			}
			wait = time.Until(next)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// transact writes rs in one transaction and commits it, or aborts it if
// abort. It reports the transaction's fate as far as the writer knows it.
func (s *denseSource) transact(ctx context.Context, cl *kgo.Client, rs []*kgo.Record, abort bool) (fate, error) {
	for _, r := range rs {
		r.Offset = -1
	}
	if err := cl.BeginTransaction(); err != nil {
		return fateAborted, fmt.Errorf("source writer: beginning a transaction: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := cl.ProduceSync(pctx, rs...).FirstErr()
	cancel()
	try, want := kgo.TryCommit, fateCommitted
	if abort || err != nil {
		try, want = kgo.TryAbort, fateAborted
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err != nil {
		if aerr := cl.AbortBufferedRecords(ectx); aerr != nil {
			return fateUnknown, fmt.Errorf("source writer: producing: %w; aborting buffered records: %v", err, aerr)
		}
	}
	if eerr := cl.EndTransaction(ectx, try); eerr != nil {
		return fateUnknown, fmt.Errorf("source writer: ending a transaction (%v; produce error %v): %w", try, err, eerr)
	}
	if err != nil {
		return want, fmt.Errorf("source writer: producing: %w", err)
	}
	return want, nil
}

func (s *denseSource) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err.Error())
}

func (s *denseSource) writtenSoFar() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written
}

// remaining is how many records are left to write before the last
// transaction.
func (s *denseSource) remaining() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.records - s.written
}

// endNow makes the writer's next transaction its last, for a run whose
// faults take as long as they take: records is then a ceiling.
func (s *denseSource) endNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.records = min(s.cfg.records, s.written)
}

// start lets the writer begin.
func (s *denseSource) start() { close(s.release) }

// wait waits until every record is written, or timeout passes.
func (s *denseSource) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		t.Fatalf("the source writer has not finished within %v (%d records written, %d left)", timeout, s.writtenSoFar(), s.remaining())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written < s.cfg.records+sourcePartitions {
		t.Fatalf("the source writer stopped after %d of %d records: %v", s.written, s.cfg.records, s.errs)
	}
	if len(s.errs) > 0 {
		t.Logf("source writer: %d errors, client replaced %d times; first: %s", len(s.errs), s.restarts, s.errs[0])
	}
}

// ends returns, per source partition, the offset after the last record of
// a transaction whose commit the writer saw acknowledged. The group has read
// the whole source once it has committed these: its offsets stop short of
// the end offsets, which count the commit and abort markers and the
// aborted records after the last committed record.
func (s *denseSource) ends() map[int32]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ends := map[int32]int64{}
	for _, r := range s.records {
		if r.fate == fateCommitted {
			ends[r.pos.partition] = max(ends[r.pos.partition], r.pos.offset+1)
		}
	}
	return ends
}

// idle reports whether the writer has written everything.
func (s *denseSource) idle() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// sourceLog is the source topic as read_committed readers see it: the
// position of every record by key.
type sourceLog map[string]pos

// readSourceLog reads the whole source topic with read_committed with
// franz-go. It writes an end marker to every source partition first (once
// no instance runs, so none reads them) and reads until it has seen them
// all: transaction markers end most partitions and are never returned, so
// the last record read does not say where a partition ends.
func readSourceLog(ctx context.Context, t *testing.T, b cluster, topic string) sourceLog {
	t.Helper()
	w := newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var markers []*kgo.Record
	for part := range int32(sourcePartitions) {
		markers = append(markers, &kgo.Record{Topic: topic, Partition: part, Key: []byte(endMarker)})
	}
	if err := w.ProduceSync(ctx, markers...).FirstErr(); err != nil {
		t.Fatalf("writing end markers to the source: %v", err)
	}
	cl := newClient(t, b,
		kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	defer cl.Close()
	log := sourceLog{}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	ended := map[int32]bool{}
	for len(ended) < sourcePartitions {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading the source log: end markers of %d partitions not read within 3 minutes", sourcePartitions-len(ended))
		}
		fs.EachError(func(_ string, p int32, err error) { t.Logf("reading the source log, partition %d: %v", p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == endMarker {
				ended[r.Partition] = true
				return
			}
			if prev, ok := log[string(r.Key)]; ok {
				t.Errorf("source log: key %s at %d/%d and at %v", r.Key, r.Partition, r.Offset, prev)
			}
			log[string(r.Key)] = pos{r.Partition, r.Offset}
		})
	}
	return log
}

// kcatSourceLog reads the source topic to its end with kcat and
// read_committed.
func kcatSourceLog(ctx context.Context, t *testing.T, kcat string, b cluster, topic string) sourceLog {
	t.Helper()
	log := sourceLog{}
	for _, l := range runKcatLines(ctx, t, kcat, b, topic) {
		if l.key == endMarker {
			continue
		}
		if prev, ok := log[l.key]; ok {
			t.Errorf("kcat source log: key %s at %d/%d and at %v", l.key, l.partition, l.offset, prev)
		}
		log[l.key] = pos{l.partition, l.offset}
	}
	return log
}

// kcatLine is one record as kcat prints it with -f '%p %o %k\n'.
type kcatLine struct {
	partition int32
	offset    int64
	key       string
}

func parseKcatLine(s string) (kcatLine, error) {
	f := strings.SplitN(s, " ", 3)
	if len(f) != 3 {
		return kcatLine{}, fmt.Errorf("kcat line %q: want partition, offset and key", s)
	}
	p, err1 := strconv.ParseInt(f[0], 10, 32)
	o, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return kcatLine{}, fmt.Errorf("kcat line %q: %w", s, err)
	}
	return kcatLine{int32(p), o, f[2]}, nil
}

func kcatArgs(b cluster, topic string, follow bool) []string {
	args := []string{"-b", strings.Join(b.Brokers(), ","), "-C", "-t", topic, "-o", "beginning", "-q", "-u",
		"-X", "isolation.level=read_committed", "-f", `%p %o %k\n`}
	if !follow {
		args = append(args, "-e")
	}
	return args
}

// runKcatLines reads topic from the start to its end with kcat.
func runKcatLines(ctx context.Context, t *testing.T, kcat string, b cluster, topic string) []kcatLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, kcatArgs(b, topic, false)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat reading %s: %v\n%s", topic, err, stderr.String())
	}
	var lines []kcatLine
	for s := range strings.SplitSeq(string(out), "\n") {
		if s == "" {
			continue
		}
		l, err := parseKcatLine(s)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	return lines
}

// coord is an output record's place.
type coord struct {
	topic     string
	partition int32
	offset    int64
}

// denseOutput is one output record as a reader saw it.
type denseOutput struct {
	key string
	// src is the source position the record states (franz-go reader
	// only); srcErr says why it has none.
	src    pos
	srcErr string
}

// denseReader collects the output records one reader saw, each once by its
// place (a reader that reads a record twice has not seen two outputs), and
// the end markers.
type denseReader struct {
	name    string
	p       pipeline
	mu      sync.Mutex
	outs    map[coord]denseOutput
	rereads int
	markers map[string]bool
	all     chan struct{} // closed once every marker is seen
	closed  bool
	stop    func()
	stopped chan struct{}
}

func newDenseReader(name string, p pipeline) *denseReader {
	return &denseReader{name: name, p: p, outs: map[coord]denseOutput{}, markers: map[string]bool{}, all: make(chan struct{}), stopped: make(chan struct{})}
}

func (r *denseReader) add(c coord, o denseOutput) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o.key == endMarker {
		r.markers[fmt.Sprintf("%s/%d", c.topic, c.partition)] = true
		if len(r.markers) == 2*outputPartitions && !r.closed {
			r.closed = true
			close(r.all)
		}
		return
	}
	if _, ok := r.outs[c]; ok {
		r.rereads++
		return
	}
	r.outs[c] = o
}

// waitMarkers waits until the reader has seen every end marker or timeout
// passes, stops it, and returns the partitions whose marker it has not
// seen.
func (r *denseReader) waitMarkers(timeout time.Duration) []string {
	select {
	case <-r.all:
	case <-time.After(timeout):
	}
	r.stop()
	<-r.stopped
	r.mu.Lock()
	defer r.mu.Unlock()
	return missingMarkers(r.markers, r.p.alerts, r.p.dlq)
}

// startDenseGoReader reads the outputs with franz-go and read_committed.
func startDenseGoReader(t *testing.T, b cluster, p pipeline, name string) *denseReader {
	r := newDenseReader(name, p)
	cl := newClient(t, b,
		kgo.ConsumeTopics(p.alerts, p.dlq),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() {
		defer close(r.stopped)
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(rec *kgo.Record) {
				r.add(coord{rec.Topic, rec.Partition, rec.Offset}, goOutput(p, rec))
			})
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-r.stopped
	})
	return r
}

// goOutput reads what an output record says of its source.
func goOutput(p pipeline, rec *kgo.Record) denseOutput {
	o := denseOutput{key: string(rec.Key)}
	if o.key == endMarker {
		return o
	}
	switch rec.Topic {
	case p.alerts:
		var doc struct {
			QW struct {
				AlertID string `json:"alert_id"`
				Source  struct {
					Topic     string `json:"topic"`
					Partition int32  `json:"partition"`
					Offset    int64  `json:"offset"`
				} `json:"source"`
			}
		}
		// Only quarantine_watch is decoded, not the event twice over that
		// precedes it: decoding every alert whole kept the reader minutes
		// behind the service under the race detector. Inside a string the
		// key's quotes would be escaped, so its last occurrence is the
		// document's own.
		err := errors.New("no quarantine_watch object")
		if i := bytes.LastIndex(rec.Value, []byte(`"quarantine_watch":`)); i >= 0 {
			err = json.NewDecoder(bytes.NewReader(rec.Value[i+len(`"quarantine_watch":`):])).Decode(&doc.QW)
		}
		switch {
		case err != nil:
			o.srcErr = fmt.Sprintf("alert document: %v", err)
		case doc.QW.AlertID != o.key:
			o.srcErr = fmt.Sprintf("alert id %q in the document, %q in the key", doc.QW.AlertID, o.key)
		case doc.QW.Source.Topic != p.source:
			o.srcErr = fmt.Sprintf("source topic %q", doc.QW.Source.Topic)
		default:
			o.src = pos{doc.QW.Source.Partition, doc.QW.Source.Offset}
		}
	case p.dlq:
		part, err1 := strconv.ParseInt(header(rec, producer.HeaderSourcePartition), 10, 32)
		off, err2 := strconv.ParseInt(header(rec, producer.HeaderSourceOffset), 10, 64)
		switch {
		case err1 != nil || err2 != nil:
			o.srcErr = fmt.Sprintf("dead letter without a source position: %v", rec.Headers)
		case header(rec, producer.HeaderSourceTopic) != p.source:
			o.srcErr = fmt.Sprintf("dead letter of source topic %q", header(rec, producer.HeaderSourceTopic))
		default:
			o.src = pos{int32(part), off}
		}
	}
	return o
}

// startDenseKcatReader reads the outputs with kcat (one process per topic)
// and read_committed, following them until stopped.
func startDenseKcatReader(t *testing.T, kcat string, b cluster, p pipeline, name string) *denseReader {
	r := newDenseReader(name, p)
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs, restarts []string
	report := func(list *[]string, format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		*list = append(*list, fmt.Sprintf(format, args...))
	}
	for _, topic := range []string{p.alerts, p.dlq} {
		wg.Go(func() {
			// kcat exits on a partition error, which a broker fault may
			// cause: a bounced broker answered "Failed to query logical
			// offset END: Broker: Unknown topic or partition" for a moment
			// after its restart, and the soak's reader of the dead-letter
			// topic ended there (kcat's -E, not to exit, left it reading
			// nothing at all). It is started again, from the beginning:
			// the records it reads again count once, by their place.
			for attempt := 1; ; attempt++ {
				stderr, err := followKcat(ctx, kcat, b, topic, func(l kcatLine) {
					r.add(coord{topic, l.partition, l.offset}, denseOutput{key: l.key, srcErr: "kcat: keys only"})
				}, func(err error) { report(&errs, "%v", err) })
				if ctx.Err() != nil {
					return
				}
				if attempt == 10 {
					report(&errs, "kcat on %s exited %d times, last: %v: %s", topic, attempt, err, stderr)
					return
				}
				report(&restarts, "kcat on %s exited (%v: %s); started again", topic, err, strings.TrimSpace(stderr))
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(r.stopped)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.stopped
		errMu.Lock()
		defer errMu.Unlock()
		for _, e := range restarts {
			t.Logf("%s: %s", name, e)
		}
		for _, e := range errs {
			t.Errorf("%s: %s", name, e)
		}
	})
	return r
}

// followKcat runs kcat following topic from its beginning, calling each
// for every record and bad for every line it cannot parse, until kcat
// exits or ctx ends; it returns what kcat printed on stderr and how it
// exited.
func followKcat(ctx context.Context, kcat string, b cluster, topic string, each func(kcatLine), bad func(error)) (string, error) {
	cmd := exec.CommandContext(ctx, kcat, kcatArgs(b, topic, true)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting kcat: %w", err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l, err := parseKcatLine(sc.Text())
		if err != nil {
			bad(err)
			continue
		}
		each(l)
	}
	err = cmd.Wait()
	return stderr.String(), err
}

// readDenseKcat reads the outputs to their end with kcat, once.
func readDenseKcat(ctx context.Context, t *testing.T, kcat string, b cluster, p pipeline, name string) *denseReader {
	r := newDenseReader(name, p)
	r.stop = func() {}
	close(r.stopped)
	for _, topic := range []string{p.alerts, p.dlq} {
		for _, l := range runKcatLines(ctx, t, kcat, b, topic) {
			r.add(coord{topic, l.partition, l.offset}, denseOutput{key: l.key, srcErr: "kcat: keys only"})
		}
	}
	return r
}

// denseVerdict is how one reader's outputs compare with the source log.
type denseVerdict struct {
	outputs    int // output records read
	lost       int // source records with no output
	duplicates int // outputs beyond the first of a source record
	// phantom counts outputs of no committed source record: of an aborted
	// one, or of nothing the writer wrote.
	phantom int
	// misplaced counts outputs whose stated source position is not their
	// record's (franz-go reader only); wrongKind findings of malformed
	// records and dead letters of positives.
	misplaced, wrongKind int
	// post counts the post-quarantine alerts read (see byPost).
	post  int
	notes []string
}

func (v *denseVerdict) note(format string, args ...any) {
	if len(v.notes) < 15 {
		v.notes = append(v.notes, fmt.Sprintf(format, args...))
	}
}

func (v denseVerdict) ok() bool {
	return v.lost+v.duplicates+v.phantom+v.misplaced+v.wrongKind == 0
}

// judge compares r's outputs with the source log.
func (s *denseSource) judge(r *denseReader, log sourceLog) denseVerdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	v := denseVerdict{outputs: len(r.outs)}
	seen := map[string]int{}
	postSeen := map[string]int{}
	for _, c := range slices.SortedFunc(maps.Keys(r.outs), func(a, b coord) int {
		return cmp.Or(strings.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
	}) {
		o := r.outs[c]
		var key string
		switch c.topic {
		case r.p.alerts:
			key = s.byAlert[o.key]
			if post, ok := s.byPost[o.key]; key == "" && ok {
				// A post-quarantine alert: of a committed record, once.
				v.post++
				if _, inLog := log[post]; !inLog {
					v.phantom++
					v.note("%s: post-quarantine alert %s/%d@%d is of source record %s, not in the log", r.name, c.topic, c.partition, c.offset, post)
				}
				if postSeen[o.key]++; postSeen[o.key] > 1 {
					v.duplicates++
					v.note("%s: post-quarantine alert %s read %d times", r.name, o.key, postSeen[o.key])
				}
				continue
			}
		case r.p.dlq:
			key = o.key
		}
		rec := s.records[key]
		at, inLog := log[key]
		switch {
		case rec == nil:
			v.phantom++
			v.note("%s: output %s/%d@%d keyed %q names no record the writer wrote", r.name, c.topic, c.partition, c.offset, o.key)
			continue
		case !inLog:
			v.phantom++
			v.note("%s: output %s/%d@%d is of source record %s, whose transaction was %s: not in the log", r.name, c.topic, c.partition, c.offset, key, rec.fate)
			continue
		}
		seen[key]++
		if seen[key] > 1 {
			v.duplicates++
			v.note("%s: source record %s (%v) has output #%d at %s/%d@%d", r.name, key, at, seen[key], c.topic, c.partition, c.offset)
		}
		if (rec.alertID == "") != (c.topic == r.p.dlq) {
			v.wrongKind++
			v.note("%s: source record %s (%v, finding %q) has an output on %s", r.name, key, at, rec.alertID, c.topic)
		}
		if o.srcErr == "" && o.src != at {
			v.misplaced++
			v.note("%s: output %s/%d@%d of source record %s at %v says its source is %v", r.name, c.topic, c.partition, c.offset, key, at, o.src)
		} else if o.srcErr != "" && !strings.HasPrefix(o.srcErr, "kcat") {
			v.misplaced++
			v.note("%s: output %s/%d@%d: %s", r.name, c.topic, c.partition, c.offset, o.srcErr)
		}
	}
	for key, at := range log {
		if seen[key] == 0 {
			v.lost++
			v.note("%s: source record %s at %v has no output", r.name, key, at)
		}
	}
	return v
}

func (f fate) String() string {
	switch f {
	case fateCommitted:
		return "committed"
	case fateAborted:
		return "aborted"
	case fateUnknown:
		return "of unknown outcome"
	}
	return "never ended"
}

// checkLedger holds the writer's ledger against the source log: every
// record of a transaction the writer committed is in it at the place the
// writer was told, none of an aborted one is, and nothing else is.
func (s *denseSource) checkLedger(t *testing.T, log sourceLog) (committed, aborted int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	bad := 0
	for key, rec := range s.records {
		at, in := log[key]
		switch {
		case rec.fate == fateCommitted && !in:
			bad++
			if bad < 10 {
				t.Errorf("source record %s: its transaction committed, but it is not in the log", key)
			}
		case rec.fate == fateCommitted && rec.pos != at:
			bad++
			if bad < 10 {
				t.Errorf("source record %s: written at %v, in the log at %v", key, rec.pos, at)
			}
		case rec.fate == fateAborted && in:
			bad++
			if bad < 10 {
				t.Errorf("source record %s: its transaction was aborted, but it is in the log at %v", key, at)
			}
		}
		if in {
			committed++
		} else {
			aborted++
		}
	}
	for key := range log {
		if s.records[key] == nil {
			t.Errorf("source log: record %s was not written by the test", key)
		}
	}
	return committed, aborted
}

// sameOutputs reports whether two readers saw the same output records, and
// the first differences.
func sameOutputs(a, b *denseReader) (bool, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	var diffs []string
	for c, o := range a.outs {
		if ob, ok := b.outs[c]; !ok || ob.key != o.key {
			diffs = append(diffs, fmt.Sprintf("%s/%d@%d (key %s) read by %s, not by %s", c.topic, c.partition, c.offset, o.key, a.name, b.name))
		}
	}
	for c, o := range b.outs {
		if _, ok := a.outs[c]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s/%d@%d (key %s) read by %s, not by %s", c.topic, c.partition, c.offset, o.key, b.name, a.name))
		}
	}
	return len(diffs) == 0, first(diffs)
}

// hangingTxns returns the transactional ids among ids whose transaction is
// still open (Ongoing, PrepareCommit or PrepareAbort) once nothing writes.
func hangingTxns(ctx context.Context, adm *kadm.Client, ids ...string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	txns, err := adm.DescribeTransactions(ctx, ids...)
	if err != nil {
		return nil, err
	}
	var open []string
	for _, id := range ids {
		d, ok := txns[id]
		if !ok || d.Err != nil {
			continue // never used, or expired
		}
		switch d.State {
		case "Ongoing", "PrepareCommit", "PrepareAbort":
			open = append(open, fmt.Sprintf("%s (%s)", id, d.State))
		}
	}
	return open, nil
}

// waitStable polls until the last stable offset of every partition of
// topics equals its high watermark, and returns the partitions where it
// still does not after timeout.
func waitStable(ctx context.Context, adm *kadm.Client, timeout time.Duration, topics ...string) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		hwm, err := adm.ListEndOffsets(lctx, topics...)
		var lso kadm.ListedOffsets
		if err == nil {
			lso, err = adm.ListCommittedOffsets(lctx, topics...)
		}
		cancel()
		var unstable []string
		if err == nil {
			hwm.Each(func(o kadm.ListedOffset) {
				if l, ok := lso.Lookup(o.Topic, o.Partition); !ok || l.Err != nil || o.Err != nil || l.Offset != o.Offset {
					unstable = append(unstable, fmt.Sprintf("%s/%d: stable %d, end %d", o.Topic, o.Partition, l.Offset, o.Offset))
				}
			})
			if len(unstable) == 0 {
				return nil, nil
			}
		}
		if time.Now().After(deadline) {
			return unstable, err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// lookKcat returns kcat's path, or fails or skips the test without it.
func lookKcat(t *testing.T) string {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if kafkatest.Required() {
			t.Fatalf("kcat is not installed (apt-get install kcat; .ci/run does), and %s=1 requires this test", kafkatest.EnvRequire)
		}
		t.Skipf("kcat is not installed: the dense oracle needs a second client library (apt-get install kcat; %s=1 makes this a failure)", kafkatest.EnvRequire)
	}
	return kcat
}

// denseRun is one dense exactly-once run: the source writer, the readers
// that watch the outputs during the faults, the instances, and the faults
// done to them.
type denseRun struct {
	t       *testing.T
	b       cluster  // what the test's clients talk to
	service []string // the brokers the service is given
	kcat    string
	p       pipeline
	adm     *kadm.Client
	src     *denseSource
	extra   []string // flags added to the service's
	began   time.Time
	rng     *rand.Rand

	goDuring, kcatDuring *denseReader
	instances            map[string]*instance
	order                []string // instance names in start order
	running              []string
	kills, windowKills   int
	windowStates         map[string]int // where the targeted kills landed
}

// startDenseRun creates the pipeline and starts the readers and the writer
// (which waits for release).
func startDenseRun(t *testing.T, b cluster, service []string, cfg denseSourceConfig, extra ...string) *denseRun {
	t.Helper()
	kcat := lookKcat(t)
	p := newPipeline(t)
	adm := newAdmin(t, b)
	p.create(t, b, adm, nil)
	seed := uint64(time.Now().UnixNano())
	t.Logf("dense run: fault schedule seed %d", seed)
	r := &denseRun{
		t: t, b: b, service: service, kcat: kcat, p: p, adm: adm, extra: extra, began: time.Now(),
		rng:       rand.New(rand.NewPCG(seed, 0xde45e)),
		instances: map[string]*instance{}, windowStates: map[string]int{},
	}
	r.src = startDenseSource(context.Background(), t, b, p.source, cfg)
	r.goDuring = startDenseGoReader(t, b, p, "franz-go during")
	r.kcatDuring = startDenseKcatReader(t, kcat, b, p, "kcat during")
	return r
}

func (r *denseRun) step(format string, args ...any) {
	r.t.Logf("[%6.1fs] %s", time.Since(r.began).Seconds(), fmt.Sprintf(format, args...))
}

// start starts an instance on the service's brokers.
func (r *denseRun) start(name string) *instance {
	r.t.Helper()
	in := startInstance(r.t, name, kafkatest.Name(r.t, "txn-"+name), denseArgs(r.service, r.p, r.extra...))
	r.instances[name] = in
	r.order = append(r.order, name)
	r.running = append(r.running, name)
	return in
}

// stop stops instances gracefully (a scale-in), each once its process has
// set up its signal handling: a SIGTERM that comes sooner kills a process
// as it would kill any other, which says nothing about the service.
func (r *denseRun) stop(names ...string) {
	r.t.Helper()
	// names may be r.running itself, which the loop shortens.
	names = slices.Clone(names)
	var ins []*instance
	for _, n := range names {
		in := r.instances[n]
		waitConsuming(r.t, in, time.Minute)
		ins = append(ins, in)
		r.running = slices.DeleteFunc(r.running, func(m string) bool { return m == n })
	}
	stopAll(r.t, ins...)
}

// waitConsuming waits until the instance's current process has logged
// "consuming": it has started, checked the topics and set up its signal
// handling.
func waitConsuming(t *testing.T, in *instance, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(in.logPath)
		if err == nil {
			last := data[bytes.LastIndex(data, []byte("=== start "))+1:]
			if bytes.Contains(last, []byte(`"msg":"consuming"`)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s has not logged \"consuming\" within %v:\n%s", in.name, timeout, tailFile(in.logPath, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// progress waits until the group has committed n more source records, or
// the whole source once the writer is done.
func (r *denseRun) progress(n int64, limit time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(limit)
	var base int64 = -1
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		total, err := committedTotal(ctx, r.adm, r.p.group, r.p.source)
		cancel()
		if err != nil {
			last = err
		} else {
			if base < 0 {
				base = total
			}
			if total-base >= n {
				return
			}
			if r.src.idle() {
				if behind, err := r.behind(); err == nil && len(behind) == 0 {
					return
				}
			}
		}
		for _, in := range r.instances {
			in.mu.Lock()
			failure := in.failure
			in.mu.Unlock()
			if failure != nil {
				r.t.Fatalf("waiting for progress: %v", failure)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.t.Fatalf("the group made no progress of %d records within %v (last error %v)", n, limit, last)
}

// inWindow reports whether a described transaction is between its offset
// commit and its end: the offsets partition is in it (AddOffsetsToTxn was
// accepted) or the coordinator is writing its commit markers.
func inWindow(d kadm.DescribedTransaction) bool {
	if d.State == "PrepareCommit" {
		return true
	}
	if d.State != "Ongoing" {
		return false
	}
	_, ok := d.Topics["__consumer_offsets"]
	return ok
}

// killInWindow SIGKILLs a running instance at the moment its transaction is
// between the offset commit and its end (see inWindow), the window in
// which a bug commits offsets without outputs or outputs without offsets.
// It polls DescribeTransactions and freezes the process with SIGSTOP as
// soon as the window shows; if the transaction, read again, has left the
// window meanwhile, it lets the process go on (SIGCONT) and tries again.
// After 30 s without a hit it kills the process wherever it is.
func (r *denseRun) killInWindow() {
	r.t.Helper()
	name := r.running[r.rng.IntN(len(r.running))]
	in := r.instances[name]
	describe := func() (kadm.DescribedTransaction, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		txns, err := r.adm.DescribeTransactions(ctx, in.txnID)
		if err != nil {
			return kadm.DescribedTransaction{}, false
		}
		d, ok := txns[in.txnID]
		return d, ok && d.Err == nil
	}
	state, tries := "window missed", 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if d, ok := describe(); !ok || !inWindow(d) {
			continue
		}
		tries++
		in.pause(r.t)
		if d, ok := describe(); ok && inWindow(d) {
			state = d.State
			if _, ok := d.Topics["__consumer_offsets"]; ok {
				state += " with offsets"
			}
			break
		}
		in.resume(r.t)
	}
	r.windowStates[state]++
	if state != "window missed" {
		r.windowKills++
	}
	r.kills++
	pid := in.kill(r.t)
	r.step("kill %d: SIGKILL instance %s (pid %d) with its transaction %s (%d tries); restarted", r.kills, name, pid, state, tries)
}

// killAny SIGKILLs a running instance wherever it is.
func (r *denseRun) killAny() {
	r.t.Helper()
	name := r.running[r.rng.IntN(len(r.running))]
	r.kills++
	pid := r.instances[name].kill(r.t)
	r.step("kill %d: SIGKILL instance %s (pid %d) at a random moment; restarted", r.kills, name, pid)
}

// behind returns the source partitions on which the group has not
// committed the offset after the last committed record (denseSource.ends).
func (r *denseRun) behind() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	committed, err := r.adm.FetchOffsets(ctx, r.p.group)
	if err != nil {
		return nil, err
	}
	var behind []string
	for part, end := range r.src.ends() {
		if c, _ := committed.Lookup(r.p.source, part); c.At < end {
			behind = append(behind, fmt.Sprintf("%d at %d of %d", part, c.At, end))
		}
	}
	return behind, nil
}

// caughtUp waits until the group has read the whole source (see behind).
func (r *denseRun) caughtUp(limit time.Duration, ins ...*instance) {
	r.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		behind, err := r.behind()
		if err == nil && len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the group has not read the whole source within %v: partitions %v (%v)", limit, behind, err)
		}
		for _, in := range ins {
			in.mu.Lock()
			failure := in.failure
			in.mu.Unlock()
			if failure != nil {
				r.t.Fatalf("waiting for the group to catch up: %v", failure)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// denseResult is what finish found.
type denseResult struct {
	records, outputs, abortedSource int
	lost, duplicates, phantom, bad  int
	hanging                         int
	readersAgree                    bool
	// log is the source log (franz-go's read), readers every reader of
	// the outputs: what a test adds its own checks to.
	log     sourceLog
	readers []*denseReader
}

// finish waits for the writer and for the group to commit the end of the
// source, stops every instance, writes the end markers and judges every
// reader. It fails t on any loss, duplicate, phantom, disagreement or
// hanging transaction.
func (r *denseRun) finish(catchUp time.Duration) denseResult {
	t := r.t
	t.Helper()
	r.step("waiting for the writer and for the group to commit the end of the source")
	r.src.wait(t, 10*time.Minute)
	var ins []*instance
	for _, n := range r.running {
		ins = append(ins, r.instances[n])
	}
	r.caughtUp(catchUp, ins...)
	r.step("stopping %v", r.running)
	r.stop(r.running...)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var ids []string
	for _, n := range r.order {
		ids = append(ids, r.instances[n].txnID)
	}
	var res denseResult
	open, err := hangingTxns(ctx, r.adm, ids...)
	if err != nil {
		t.Errorf("describing the instances' transactions: %v", err)
	}
	res.hanging += len(open)
	if len(open) > 0 {
		t.Errorf("transactions still open after every instance stopped: %v", open)
	}

	// A transaction left open holds the last stable offset of its
	// partitions below the high watermark until the broker aborts it, after
	// the transaction timeout: once every instance has stopped, the two
	// must meet on every output partition well within that timeout.
	unstable, err := waitStable(ctx, r.adm, 15*time.Second, r.p.alerts, r.p.dlq)
	if err != nil {
		t.Errorf("listing the outputs' offsets: %v", err)
	}
	if len(unstable) > 0 {
		res.hanging = max(res.hanging, len(unstable))
		t.Errorf("output partitions whose last stable offset is below the high watermark 15 s after every instance stopped (a transaction left open): %v", unstable)
	}
	r.step("end markers; every reader reads to them")
	defer r.step("judged")
	writeEndMarkers(t, r.b, r.p.alerts, r.p.dlq)
	goAfter := startDenseGoReader(t, r.b, r.p, "franz-go after")
	readers := []*denseReader{r.goDuring, r.kcatDuring, goAfter}
	for _, rd := range readers {
		if missing := rd.waitMarkers(3 * time.Minute); len(missing) > 0 {
			res.hanging = max(res.hanging, len(missing))
			t.Errorf("%s: end markers not visible to read_committed within 3 minutes: %v", rd.name, missing)
		}
	}
	r.step("readers done")
	kcatAfter := readDenseKcat(ctx, t, r.kcat, r.b, r.p, "kcat after")
	readers = append(readers, kcatAfter)
	if n := len(kcatAfter.markers); n != 2*outputPartitions {
		res.hanging = max(res.hanging, 2*outputPartitions-n)
		t.Errorf("kcat after: %d of %d end markers", n, 2*outputPartitions)
	}

	goLog := readSourceLog(ctx, t, r.b, r.p.source)
	kLog := kcatSourceLog(ctx, t, r.kcat, r.b, r.p.source)
	if !maps.Equal(goLog, kLog) {
		t.Errorf("franz-go and kcat read different source logs: %d and %d records", len(goLog), len(kLog))
	}
	committed, aborted := r.src.checkLedger(t, goLog)
	res.records, res.abortedSource = len(goLog), aborted
	res.log, res.readers = goLog, readers
	if committed != len(goLog) {
		t.Errorf("the source log has %d records, the writer's committed ones %d", len(goLog), committed)
	}

	res.readersAgree = true
	for _, pair := range [][2]*denseReader{{goAfter, kcatAfter}, {r.goDuring, r.kcatDuring}, {r.goDuring, goAfter}} {
		if same, diffs := sameOutputs(pair[0], pair[1]); !same {
			res.readersAgree = false
			t.Errorf("%s and %s disagree: %v", pair[0].name, pair[1].name, diffs)
		}
	}
	for _, rd := range readers {
		v := r.src.judge(rd, goLog)
		t.Logf("%s: %d outputs for %d source records: lost %d, duplicates %d, phantom %d, misplaced %d, wrong kind %d (records read twice by the reader itself: %d; post-quarantine alerts: %d)",
			rd.name, v.outputs, len(goLog), v.lost, v.duplicates, v.phantom, v.misplaced, v.wrongKind, rd.rereads, v.post)
		for _, n := range v.notes {
			t.Log("  " + n)
		}
		res.outputs = max(res.outputs, v.outputs)
		res.lost = max(res.lost, v.lost)
		res.duplicates = max(res.duplicates, v.duplicates)
		res.phantom = max(res.phantom, v.phantom)
		res.bad = max(res.bad, v.misplaced+v.wrongKind)
		if !v.ok() {
			t.Errorf("%s: the outputs are not exactly the source log", rd.name)
		}
	}
	if res.abortedSource == 0 {
		t.Errorf("no source record was aborted: the run proves nothing about aborted source transactions")
	}
	return res
}

// unplanned returns every unplanned exit of the run's instances.
func (r *denseRun) unplanned() []exit {
	var all []exit
	for _, n := range r.order {
		all = append(all, r.instances[n].unplannedExits()...)
	}
	return all
}

// TestExactlyOnceDense runs the dense oracle on the package's broker, with
// the service on its default flags: 30,000 dense records written in
// transactions of 100, every fifth aborted, while the group scales from one
// instance to three and back and instances are SIGKILLed, three times in
// the window between the offset commit and the end of the transaction. No
// fault here excuses an exit: there is no broker fault.
func TestExactlyOnceDense(t *testing.T) {
	if testing.Short() {
		t.Skip("takes minutes; -short skips it")
	}
	b := kafka.Broker(t)
	// A session timeout of 6 s, not 45: a killed instance's partitions
	// move in seconds.
	r := startDenseRun(t, b, b.Brokers(), denseSourceConfig{records: 30_000, chunk: 100, abortEvery: 5, every: 40 * time.Millisecond, seed: 1212},
		"--session-timeout", "6s")
	r.step("start a; the writer starts")
	r.start("a")
	r.src.start()
	r.progress(3000, 3*time.Minute)
	r.step("scale to 3")
	r.start("b")
	r.start("c")
	r.progress(3000, 3*time.Minute)
	for range 3 {
		r.killInWindow()
		r.progress(2000, 3*time.Minute)
	}
	r.killAny()
	r.progress(2000, 3*time.Minute)
	r.step("scale to 1: SIGTERM b and c")
	r.stop("b", "c")
	res := r.finish(3 * time.Minute)
	ex := r.unplanned()
	for _, e := range ex {
		t.Errorf("unplanned exit: %s: %s", firstLine(e.line), e.cause)
	}
	line := fmt.Sprintf("eos-dense: records=%d outputs=%d aborted_source=%d kills=%d window_kills=%d unplanned_exits=%d lost=%d duplicates=%d phantom=%d hanging=%d readers_agree=%t",
		res.records, res.outputs, res.abortedSource, r.kills, r.windowKills, len(ex), res.lost, res.duplicates, res.phantom, res.hanging, res.readersAgree)
	t.Log(line)
	fmt.Println(line)
	t.Logf("targeted kills landed: %v", r.windowStates)
}
