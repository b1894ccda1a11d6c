//go:build eossafety

package integration

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/quarantine-watch/quarantine-watch/internal/kafkaproxy"
)

// The transaction safety test: transactions v1 or v2, decided by what a
// stale request does. Kafka's transactions v1 keep one producer epoch
// across a producer's transactions, so a request of transaction N that the
// network delays past the client's request timeout (the client has given
// up on it, sent it again, and gone on) can land in transaction N+1 and be
// taken for one of its own: a late EndTxn commits or aborts the wrong
// transaction, a late TxnOffsetCommit commits stale offsets in it (the
// class of anomalies Jepsen found, KAFKA-17754). Transactions v2 (KIP-890
// part 2) bump the epoch with every transaction, so the broker fences the
// late request.
//
// The service, on its default flags (v2; --transactions-v2=false for v1), runs
// behind a Kafka-frame-aware proxy (kafkaproxy) that holds one EndTxn,
// TxnOffsetCommit or AddOffsetsToTxn at a time, and everything after it on
// its connection, past franz-go's request timeout (10 s), then delivers it
// to the broker the moment the broker shows the instance's next
// transaction open. The source is the dense stream of dense_test.go.
//
// The test keeps its own ledger of transactions, from the logs and not
// from the service: the transaction log (__transaction_state) says, for
// each transaction the coordinator ended, its producer id and epoch, its
// partitions and whether it committed; the outputs and __consumer_offsets,
// read with read_uncommitted and their control records, give each
// transaction's records (those of its producer id before its marker on
// each of its partitions), which map to source records through what the
// outputs say of their source (the alert id, a dead letter's key). From
// that: torn transactions (a committed transaction whose outputs are not
// exactly the source records between the group's previous committed
// offsets and those it commits, or a commit marker no ended transaction
// accounts for), aborted reads (a read_committed reader, franz-go or kcat,
// saw a record of an aborted or never-ended transaction), lost writes
// (the group committed past a source record without a committed output)
// and duplicates.

// envSafety names the transaction version TestTransactionSafety runs
// (v1 or v2). The test is behind the eossafety build tag: make eos-safety
// runs it, make test neither compiles nor skips it.
const envSafety = "QW_EOS_SAFETY"

// envSabotage, set to 1, has the proxy turn one EndTxn commit into an
// abort while the service is told it committed: the run must then fail.
const envSabotage = "QW_EOS_SAFETY_SABOTAGE"

// safetyDelays are how long the proxy holds a request: both past the
// 10 s request timeout, so that franz-go has given up on it and gone on.
var safetyDelays = []time.Duration{12 * time.Second, 25 * time.Second}

// safetyKinds are the requests held.
var safetyKinds = []kmsg.Key{kmsg.EndTxn, kmsg.TxnOffsetCommit, kmsg.AddOffsetsToTxn}

// safetyRun is a dense run behind the frame proxy and the faults done.
type safetyRun struct {
	*denseRun
	proxy   *kafkaproxy.Proxy
	events  []kafkaproxy.Event
	landed  []string // the instance's transaction as the broker described it when each late request was let go
	notSent map[string]int
}

// hold holds the next request of kind for delay, then until the broker
// shows the instance's transaction open, and waits until the broker has
// answered it and the group has committed more.
func (r *safetyRun) hold(kind kmsg.Key, delay time.Duration) {
	r.t.Helper()
	in := r.instances["a"]
	ctx := context.Background()
	var landed kadm.DescribedTransaction
	a := r.proxy.Arm(kafkaproxy.Fault{Key: int16(kind), Action: kafkaproxy.Hold, Delay: delay,
		ReleaseWhen: func() bool {
			landed = describeTxn(ctx, r.adm, in.txnID)
			return landed.State == "Ongoing"
		}}, 1)
	deadline := time.Now().Add(15 * time.Second)
	for len(a.Events()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(a.Events()) == 0 {
		a.Disarm()
		if len(a.Events()) == 0 {
			r.notSent[kind.Name()]++
			r.step("no %s sent within 15 s: none held", kind.Name())
			return
		}
	}
	for deadline := time.Now().Add(delay + time.Minute); ; {
		ev := a.Events()[0]
		if !ev.Answered.IsZero() {
			r.events = append(r.events, ev)
			l := fmt.Sprintf("%s at epoch %d", landed.State, landed.ProducerEpoch)
			r.landed = append(r.landed, l)
			r.step("late %v; the instance's transaction was %s", ev, l)
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the held %s was not answered within %v: %v", kind.Name(), delay+time.Minute, ev)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.progress(300, 3*time.Minute)
}

// TestTransactionSafety runs the dense stream through one instance behind
// the frame proxy, holds each of EndTxn, TxnOffsetCommit and
// AddOffsetsToTxn four times (12 s and 25 s, twice) and delivers it late
// into the instance's next open transaction, then checks the ledger and
// the dense oracle. It prints one eos-safety line.
//
// The instance runs the service's default flags, the session timeout
// included: franz-go's heartbeats share the connection the proxy holds,
// and the default 45 s session outlives every hold, so the group does not
// move partitions because of the fault (with --session-timeout 6s each
// hold would also expire the member, which is another test); nothing here
// kills an instance, so there is no failover to speed up.
func TestTransactionSafety(t *testing.T) {
	version := os.Getenv(envSafety)
	if version != "v1" && version != "v2" {
		t.Fatalf("%s=%q: set it to v1 or v2 (make eos-safety runs both)", envSafety, version)
	}
	b, proxy := frameBroker(t)
	if b.External() {
		t.Skip("needs a broker of its own, behind the proxy")
	}
	level := finalizedTransactionVersion(t, b)
	t.Logf("the broker's finalized transaction.version: %d", level)
	var extra []string
	if version == "v2" && level < 2 {
		t.Fatalf("transaction.version %d: the broker does not enable transactions v2", level)
	}
	if version == "v1" {
		extra = append(extra, "--transactions-v2=false")
	}
	r := &safetyRun{
		denseRun: startDenseRun(t, b, []string{proxy.Addr()},
			denseSourceConfig{records: 200_000, chunk: 50, abortEvery: 5, every: 100 * time.Millisecond, seed: 1712}, extra...),
		proxy: proxy, notSent: map[string]int{},
	}
	r.step("start a (%s, flags %v) through the frame proxy %s; the writer starts", version, extra, proxy.Addr())
	r.start("a")
	r.src.start()
	r.progress(1000, 3*time.Minute)

	if os.Getenv(envSabotage) == "1" {
		// No late request: one commit turned into an abort, which the
		// ledger and the dense oracle must both catch.
		r.step("SABOTAGE: the next EndTxn commit reaches the broker as an abort; the instance is told it committed")
		a := proxy.Arm(kafkaproxy.Fault{Key: int16(kmsg.EndTxn), Action: kafkaproxy.AbortInstead,
			Match: func(q kafkaproxy.Request) bool { return q.Msg.(*kmsg.EndTxnRequest).Commit }}, 1)
		for len(a.Events()) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		r.step("sabotaged %v", a.Events()[0])
		r.progress(1000, 3*time.Minute)
	} else {
		for round := range 2 {
			for _, kind := range safetyKinds {
				for _, d := range safetyDelays {
					r.step("round %d: hold %s for %v, then until the next transaction is open", round+1, kind.Name(), d)
					r.hold(kind, d)
				}
			}
		}
	}

	r.src.endNow()
	res := r.finish(3 * time.Minute)
	ex := r.unplanned()
	for _, e := range ex {
		t.Errorf("unplanned exit: %s: %s", firstLine(e.line), e.cause)
	}
	t.Logf("what the instance said of its sessions:\n%s", grepLog(r.instances["a"], `"msg":"rebuilding the Kafka session`, `"msg":"session rebuilt"`))

	seen := proxy.Seen()
	t.Logf("requests the proxy saw: %v", seen)
	checkVersionSpoken(t, version, seen)

	l := readLedger(t, r.denseRun, r.instances["a"].txnID)
	v := l.check(t, r.src, res)
	stale, open := 0, 0
	for i, e := range r.events {
		if e.ClientGone {
			stale++
		}
		if strings.HasPrefix(r.landed[i], "Ongoing") {
			open++
		}
	}
	answers := map[string]int{}
	for _, e := range r.events {
		answers[kmsg.NameForKey(e.Key)+" "+e.ErrName()]++
	}
	t.Logf("what the broker answered the late requests: %v; kinds never sent: %v", answers, r.notSent)
	line := fmt.Sprintf("eos-safety: version=%s transactions=%d committed=%d delayed=%d stale_delivered=%d stale_in_open_txn=%d torn=%d aborted_reads=%d lost=%d duplicates=%d",
		version, len(l.txns), l.committed(), len(r.events), stale, open, v.torn, v.abortedReads, max(v.lost, res.lost), max(v.duplicates, res.duplicates))
	if os.Getenv(envSabotage) == "1" {
		line += " sabotaged=true"
	}
	t.Log(line)
	fmt.Println(line)
	if v.torn+v.abortedReads+v.lost+v.duplicates > 0 {
		t.Errorf("the ledger shows anomalies: %s", line)
	}
	if stale == 0 {
		t.Errorf("no request was delivered after the client gave up on it: the run proves nothing")
	}
}

// finalizedTransactionVersion returns the transaction.version feature
// level the broker has finalized (0 if none), from ApiVersions.
func finalizedTransactionVersion(t *testing.T, b cluster) int16 {
	t.Helper()
	cl := newClient(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName, req.ClientSoftwareVersion = "qw-test", "0"
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	for _, f := range resp.FinalizedFeatures {
		if f.Name == "transaction.version" {
			return f.MaxVersionLevel
		}
	}
	return 0
}

// checkVersionSpoken fails t unless the instance spoke the transaction
// version asked for: EndTxn v5 is transactions v2, and under v2 franz-go
// sends no AddOffsetsToTxn.
func checkVersionSpoken(t *testing.T, version string, seen map[string]int) {
	t.Helper()
	v5, older, addOffsets := 0, 0, 0
	for k, n := range seen {
		switch {
		case k == "EndTxn v5":
			v5 += n
		case strings.HasPrefix(k, "EndTxn "):
			older += n
		case strings.HasPrefix(k, "AddOffsetsToTxn "):
			addOffsets += n
		}
	}
	switch {
	case version == "v1" && (v5 > 0 || older == 0):
		t.Errorf("v1 run: %d EndTxn v5 and %d older, want only older", v5, older)
	case version == "v2" && (v5 == 0 || older > 0 || addOffsets > 0):
		t.Errorf("v2 run: %d EndTxn v5, %d older, %d AddOffsetsToTxn; want only v5 and no AddOffsetsToTxn", v5, older, addOffsets)
	}
}

// tp is a topic partition.
type tp struct {
	topic     string
	partition int32
}

// segment is a producer's records on one partition up to its next control
// record: one transaction's share of the partition.
type segment struct {
	tp      tp
	pid     int64
	records []*kgo.Record
	ended   bool // a control record closed it
	commit  bool
	marker  int64 // the control record's offset
	txn     *ledgerTxn
}

// ledgerTxn is one transaction the coordinator ended, as the logs tell it.
type ledgerTxn struct {
	n          int
	pid        int64
	epoch      int16
	commit     bool
	partitions []tp
	segments   []*segment
	outputs    []string           // source record keys of its outputs
	offsets    map[int32]int64    // the group's offsets it commits, by source partition
	ranges     map[int32][2]int64 // the source range those offsets close, once checked
}

// ledger is every transaction of one transactional id and every segment
// of the outputs and of __consumer_offsets.
type ledger struct {
	p        pipeline
	txns     []*ledgerTxn
	segments map[tp]map[int64][]*segment // by partition, producer id, in offset order
	byCoord  map[coord]*segment
	problems []string
}

func (l *ledger) committed() int {
	n := 0
	for _, x := range l.txns {
		if x.commit {
			n++
		}
	}
	return n
}

func (l *ledger) problem(format string, args ...any) {
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

// Transaction states as the transaction log writes them (Kafka's
// TransactionState ids).
const (
	txnPrepareCommit = 2
	txnPrepareAbort  = 3
)

// readLedger reads the transaction log, the outputs and __consumer_offsets
// to their ends, read_uncommitted with control records, and builds the
// ledger of txnID's transactions. Call it once nothing writes.
func readLedger(t *testing.T, r *denseRun, txnID string) *ledger {
	t.Helper()
	logs := readToEnd(t, r, r.p.alerts, r.p.dlq, "__consumer_offsets", "__transaction_state")
	l := &ledger{p: r.p, segments: map[tp]map[int64][]*segment{}, byCoord: map[coord]*segment{}}
	for _, topic := range []string{"__transaction_state"} {
		for _, part := range slices.Sorted(maps.Keys(logs[topic])) {
			for _, rec := range logs[topic][part] {
				id, e, err := parseTxnLog(rec.Key, rec.Value)
				if err != nil {
					l.problem("transaction log %d@%d: %v", part, rec.Offset, err)
					continue
				}
				if id != txnID || (e.status != txnPrepareCommit && e.status != txnPrepareAbort) {
					continue
				}
				l.txns = append(l.txns, &ledgerTxn{n: len(l.txns) + 1, pid: e.pid, epoch: e.epoch,
					commit: e.status == txnPrepareCommit, partitions: e.partitions, offsets: map[int32]int64{}})
			}
		}
	}
	for _, topic := range []string{r.p.alerts, r.p.dlq, "__consumer_offsets"} {
		for part, recs := range logs[topic] {
			k := tp{topic, part}
			open := map[int64]*segment{}
			l.segments[k] = map[int64][]*segment{}
			for _, rec := range recs {
				if rec.ProducerID < 0 {
					continue // the test's end markers, the group's own non-transactional records
				}
				s := open[rec.ProducerID]
				if s == nil {
					s = &segment{tp: k, pid: rec.ProducerID}
					open[rec.ProducerID] = s
					l.segments[k][rec.ProducerID] = append(l.segments[k][rec.ProducerID], s)
				}
				if rec.Attrs.IsControl() {
					commit, err := parseControl(rec.Key)
					if err != nil {
						l.problem("control record %s/%d@%d: %v", topic, part, rec.Offset, err)
					}
					s.ended, s.commit, s.marker = true, commit, rec.Offset
					delete(open, rec.ProducerID)
					continue
				}
				s.records = append(s.records, rec)
				l.byCoord[coord{topic, part, rec.Offset}] = s
			}
		}
	}
	// Each ended transaction takes, on each of its partitions, its
	// producer's next segment there.
	next := map[tp]map[int64]int{}
	for _, x := range l.txns {
		for _, k := range x.partitions {
			if _, ok := l.segments[k]; !ok {
				continue // a partition the test does not read (none expected)
			}
			if next[k] == nil {
				next[k] = map[int64]int{}
			}
			i := next[k][x.pid]
			segs := l.segments[k][x.pid]
			if i >= len(segs) || !segs[i].ended {
				l.problem("transaction #%d (producer %d/%d): no marker of its on %s/%d", x.n, x.pid, x.epoch, k.topic, k.partition)
				continue
			}
			next[k][x.pid] = i + 1
			s := segs[i]
			s.txn = x
			x.segments = append(x.segments, s)
			if s.commit != x.commit {
				l.problem("transaction #%d (producer %d/%d, commit %t): marker %s/%d@%d says commit %t", x.n, x.pid, x.epoch, x.commit, k.topic, k.partition, s.marker, s.commit)
			}
		}
	}
	return l
}

// readToEnd reads every partition of topics from its start to its high
// watermark, read_uncommitted, control records included.
func readToEnd(t *testing.T, r *denseRun, topics ...string) map[string]map[int32][]*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ends, err := r.adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		t.Fatalf("listing end offsets of %v: %v", topics, err)
	}
	parts := map[string]map[int32]kgo.Offset{}
	want := map[tp]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		if parts[o.Topic] == nil {
			parts[o.Topic] = map[int32]kgo.Offset{}
		}
		parts[o.Topic][o.Partition] = kgo.NewOffset().AtStart()
		if o.Offset > 0 {
			want[tp{o.Topic, o.Partition}] = o.Offset
		}
	})
	cl := newClient(t, r.b, kgo.ConsumePartitions(parts), kgo.KeepControlRecords(), kgo.FetchMaxWait(200*time.Millisecond))
	defer cl.Close()
	out := map[string]map[int32][]*kgo.Record{}
	for _, topic := range topics {
		out[topic] = map[int32][]*kgo.Record{}
	}
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %v to their ends: %d partitions not done within 3 minutes: %v", topics, len(want), want)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("reading %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(rec *kgo.Record) {
			out[rec.Topic][rec.Partition] = append(out[rec.Topic][rec.Partition], rec)
			k := tp{rec.Topic, rec.Partition}
			if end, ok := want[k]; ok && rec.Offset+1 >= end {
				delete(want, k)
			}
		})
	}
	return out
}

// txnLogEntry is what the test reads of a transaction log record.
type txnLogEntry struct {
	pid        int64
	epoch      int16
	status     int8
	partitions []tp
}

// parseTxnLog decodes a __transaction_state record: the key (version,
// transactional id) and the value's fields up to the partitions
// (TransactionLogValue: version 0, or 1, flexible).
func parseTxnLog(key, value []byte) (string, txnLogEntry, error) {
	var e txnLogEntry
	k := &wire{b: key}
	k.int16()
	id := k.string(false)
	if k.err != nil || value == nil {
		return id, e, k.err // a tombstone: the id expired
	}
	v := &wire{b: value}
	version := v.int16()
	flexible := version >= 1
	e.pid = v.int64()
	e.epoch = v.int16()
	v.int32() // timeout
	e.status = int8(v.int8())
	n := v.arrayLen(flexible)
	for range max(n, 0) {
		topic := v.string(flexible)
		m := v.arrayLen(flexible)
		for range max(m, 0) {
			e.partitions = append(e.partitions, tp{topic, v.int32()})
		}
		if flexible {
			v.skipTags()
		}
	}
	return id, e, v.err
}

// parseControl decodes a control record's key: version, then type (0
// abort, 1 commit).
func parseControl(key []byte) (commit bool, err error) {
	w := &wire{b: key}
	w.int16()
	typ := w.int16()
	if w.err == nil && typ != 0 && typ != 1 {
		w.err = fmt.Errorf("control type %d", typ)
	}
	return typ == 1, w.err
}

// parseOffsetCommit decodes a __consumer_offsets record of an offset
// commit: ok is false for the other kinds of record and for tombstones.
func parseOffsetCommit(key, value []byte) (group, topic string, partition int32, offset int64, ok bool) {
	k := &wire{b: key}
	if kind := k.int16(); kind != 0 && kind != 1 {
		return "", "", 0, 0, false
	}
	group, topic, partition = k.string(false), k.string(false), k.int32()
	if k.err != nil || value == nil {
		return "", "", 0, 0, false
	}
	v := &wire{b: value}
	v.int16()
	offset = v.int64()
	return group, topic, partition, offset, v.err == nil
}

// wire reads Kafka's encodings, the first error sticking.
type wire struct {
	b   []byte
	err error
}

func (w *wire) take(n int) []byte {
	if w.err != nil {
		return nil
	}
	if n < 0 || len(w.b) < n {
		w.err = errors.New("short record")
		return nil
	}
	out := w.b[:n]
	w.b = w.b[n:]
	return out
}

func (w *wire) int8() byte {
	if b := w.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (w *wire) int16() int16 {
	if b := w.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (w *wire) int32() int32 {
	if b := w.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (w *wire) int64() int64 {
	if b := w.take(8); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func (w *wire) uvarint() int {
	if w.err != nil {
		return 0
	}
	v, n := binary.Uvarint(w.b)
	if n <= 0 {
		w.err = errors.New("bad varint")
		return 0
	}
	w.b = w.b[n:]
	return int(v)
}

func (w *wire) string(compact bool) string {
	n := 0
	if compact {
		n = w.uvarint() - 1
	} else {
		n = int(w.int16())
	}
	if n < 0 {
		return ""
	}
	return string(w.take(n))
}

func (w *wire) arrayLen(compact bool) int {
	if compact {
		return w.uvarint() - 1
	}
	return int(w.int32())
}

func (w *wire) skipTags() {
	for range w.uvarint() {
		w.uvarint()
		w.take(w.uvarint())
	}
}

// safetyVerdict is what the ledger shows.
type safetyVerdict struct {
	torn, abortedReads, lost, duplicates int
}

// check holds the ledger against the source log and the readers.
func (l *ledger) check(t *testing.T, src *denseSource, res denseResult) safetyVerdict {
	t.Helper()
	var v safetyVerdict
	for _, p := range l.problems {
		t.Errorf("ledger: %s", p)
	}
	src.mu.Lock()
	keyOf := func(topic string, rec *kgo.Record) string {
		if topic == l.p.alerts {
			return src.byAlert[string(rec.Key)]
		}
		return string(rec.Key)
	}
	// Outputs and offsets of each ended transaction.
	for _, x := range l.txns {
		for _, s := range x.segments {
			for _, rec := range s.records {
				switch s.tp.topic {
				case "__consumer_offsets":
					if g, topic, part, off, ok := parseOffsetCommit(rec.Key, rec.Value); ok && g == l.p.group && topic == l.p.source {
						x.offsets[part] = off
					}
				default:
					if _, post := src.byPost[string(rec.Key)]; post && s.tp.topic == l.p.alerts && src.byAlert[string(rec.Key)] == "" {
						// A post-quarantine alert (the watch is on by
						// default): the dense oracle judges it (byPost).
						continue
					}
					x.outputs = append(x.outputs, keyOf(s.tp.topic, rec))
				}
			}
		}
	}
	src.mu.Unlock()
	at := map[pos]string{}
	for key, p := range res.log {
		at[p] = key
	}
	// Committed transactions in the coordinator's order: each must carry
	// exactly the outputs of the source records its offsets close.
	committedAt := map[int32]int64{}
	outputs := map[string]int{}
	flag := func(x *ledgerTxn, why string) {
		v.torn++
		if v.torn <= 20 {
			t.Errorf("torn: transaction #%d (producer %d/%d, %s; %d partitions, %d outputs, offsets %v): %s",
				x.n, x.pid, x.epoch, map[bool]string{true: "committed", false: "aborted"}[x.commit], len(x.partitions), len(x.outputs), x.offsets, why)
		}
	}
	for _, x := range l.txns {
		if !x.commit {
			continue
		}
		for _, k := range x.outputs {
			outputs[k]++
		}
		if len(x.offsets) == 0 {
			if len(x.outputs) > 0 {
				flag(x, "outputs committed without the group's offsets")
			}
			continue
		}
		want := map[string]bool{}
		x.ranges = map[int32][2]int64{}
		rewound := false
		for part, off := range x.offsets {
			from := committedAt[part]
			x.ranges[part] = [2]int64{from, off}
			if off < from {
				rewound = true
				flag(x, fmt.Sprintf("offsets of source partition %d go back from %d to %d", part, from, off))
			}
			for o := from; o < off; o++ {
				if key, ok := at[pos{part, o}]; ok {
					want[key] = true
				}
			}
			committedAt[part] = off
		}
		if rewound {
			continue
		}
		got := map[string]bool{}
		for _, k := range x.outputs {
			got[k] = true
		}
		var missing, extra []string
		for k := range want {
			if !got[k] {
				missing = append(missing, k)
			}
		}
		for k := range got {
			if !want[k] {
				extra = append(extra, k)
			}
		}
		if len(missing)+len(extra) > 0 {
			slices.Sort(missing)
			slices.Sort(extra)
			flag(x, fmt.Sprintf("source ranges %v: %d records without their output in it %v, %d outputs of records outside them %v",
				x.ranges, len(missing), first(missing), len(extra), first(extra)))
		}
	}
	// Committed data no ended transaction accounts for.
	for k, byPID := range l.segments {
		if k.topic == "__consumer_offsets" {
			continue
		}
		for _, segs := range byPID {
			for _, s := range segs {
				if s.txn == nil && s.ended && s.commit && len(s.records) > 0 {
					v.torn++
					t.Errorf("torn: %d records of producer %d on %s/%d committed by marker @%d, which no ended transaction accounts for",
						len(s.records), s.pid, k.topic, k.partition, s.marker)
				}
			}
		}
	}
	// Lost and duplicated, against the group's last committed offsets.
	for key, p := range res.log {
		if p.offset < committedAt[p.partition] && outputs[key] == 0 {
			v.lost++
			if v.lost <= 10 {
				t.Errorf("lost: source record %s at %v is behind the group's committed offset %d and has no committed output", key, p, committedAt[p.partition])
			}
		}
	}
	for key, n := range outputs {
		if n > 1 {
			v.duplicates += n - 1
			if v.duplicates <= 10 {
				t.Errorf("duplicate: source record %s has %d committed outputs", key, n)
			}
		}
	}
	// Aborted reads: what a read_committed reader saw must be in a
	// committed transaction.
	for _, rd := range res.readers {
		rd.mu.Lock()
		bad := 0
		for _, c := range slices.SortedFunc(maps.Keys(rd.outs), func(a, b coord) int {
			return cmp.Or(strings.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
		}) {
			s := l.byCoord[c]
			if s == nil || (s.ended && s.commit) {
				continue // not transactional (an end marker), or committed
			}
			bad++
			if bad <= 5 {
				t.Errorf("aborted read: %s read %s/%d@%d, of producer %d, in a segment that ended %s", rd.name, c.topic, c.partition, c.offset, s.pid,
					map[bool]string{true: "in an abort", false: "never"}[s.ended])
			}
		}
		rd.mu.Unlock()
		v.abortedReads = max(v.abortedReads, bad)
	}
	t.Logf("ledger: %d transactions ended (%d committed), %d source partitions' offsets committed up to %v", len(l.txns), l.committed(), len(committedAt), committedAt)
	if path := os.Getenv(envLedger); path != "" {
		if err := l.write(path); err != nil {
			t.Errorf("writing the ledger: %v", err)
		}
	}
	return v
}

// envLedger, if set, is a file the ledger is written to, one transaction
// a line (make eos-safety writes bin/eos-safety-<version>.ledger).
const envLedger = "QW_EOS_SAFETY_LEDGER"

// write writes one line per ended transaction: its number, producer id
// and epoch, outcome, each partition with its marker's outcome and record
// count, its outputs, the group offsets it commits and the source ranges
// they close.
func (l *ledger) write(path string) error {
	var b strings.Builder
	for _, x := range l.txns {
		fmt.Fprintf(&b, "#%d producer=%d/%d %s outputs=%d", x.n, x.pid, x.epoch, map[bool]string{true: "commit", false: "abort"}[x.commit], len(x.outputs))
		for _, s := range x.segments {
			fmt.Fprintf(&b, " %s/%d:%s:%d", s.tp.topic, s.tp.partition, map[bool]string{true: "commit", false: "abort"}[s.commit], len(s.records))
		}
		for _, part := range slices.Sorted(maps.Keys(x.ranges)) {
			fmt.Fprintf(&b, " source/%d:[%d,%d)", part, x.ranges[part][0], x.ranges[part][1])
		}
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
