package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// The oracle of these tests, after consumer_test.go's: the test knows what
// every source record must produce (the generator's ground truth, or a
// hand-made record), writes an end marker to every output partition once
// the instances have stopped, and reads the outputs with
// isolation.level=read_committed until it has seen every marker. A marker is
// visible only once every transaction before it has ended, so a reader that
// has seen them all has seen everything, and a transaction left hanging
// shows up as a marker never seen.

// outputPartitions is the partition count of the alerts and dead-letter
// topics; sourcePartitions that of the source topics.
const (
	outputPartitions = 6
	sourcePartitions = 6
)

// endMarker keys the end markers.
const endMarker = "__end_of_test__"

// pipeline names one test's topics and group; every name is unique to the
// test (kafkatest.Name).
type pipeline struct {
	source, alerts, dlq, group string
	// watchlist and context are the topics the watch needs, on by
	// default (--watch-for): the service's defaults are what is tested.
	watchlist, context string
}

func newPipeline(t *testing.T) pipeline {
	alerts := kafkatest.Name(t, "alerts")
	return pipeline{
		source:    kafkatest.Name(t, "source"),
		alerts:    alerts,
		dlq:       alerts + ".dlq",
		group:     kafkatest.Name(t, "group"),
		watchlist: alerts + ".watchlist",
		context:   alerts + ".context",
	}
}

// watchTopicConfigs is the watchlist topic's configuration: compacted,
// as the service requires.
var watchTopicConfigs = map[string]*string{"cleanup.policy": kmsg.StringPtr("compact")}

// create creates the pipeline's topics. sourceConfigs apply to the source
// topic (and, for max.message.bytes, to the dead-letter topic, which gets
// whole source records). On a cluster named by KAFKA_BROKERS the topics and
// the group are deleted when the test ends; a container goes with its data.
func (p pipeline) create(t *testing.T, b cluster, adm *kadm.Client, sourceConfigs map[string]*string) {
	t.Helper()
	if b.External() {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := adm.DeleteTopics(ctx, p.source, p.alerts, p.dlq, p.watchlist, p.context); err != nil {
				t.Logf("deleting the test's topics: %v", err)
			}
			_, _ = adm.DeleteGroup(ctx, p.group)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dlqConfigs := map[string]*string{}
	if v, ok := sourceConfigs["max.message.bytes"]; ok {
		dlqConfigs["max.message.bytes"] = v
	}
	for _, tc := range []struct {
		topic      string
		partitions int32
		configs    map[string]*string
	}{
		{p.source, sourcePartitions, sourceConfigs},
		{p.alerts, outputPartitions, nil},
		{p.dlq, outputPartitions, dlqConfigs},
		{p.watchlist, outputPartitions, watchTopicConfigs},
		{p.context, outputPartitions, nil},
	} {
		resp, err := adm.CreateTopic(ctx, tc.partitions, -1, tc.configs, tc.topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatalf("creating topic %s: %v", tc.topic, err)
		}
	}
	// CreateTopics returns before every broker's metadata has the topics,
	// and an instance started too soon would exit naming them missing. On
	// a cluster, the broker that answers an admin client first may know
	// them while another does not yet (seen under load: "output topic ...
	// does not exist" 147 ms after ListTopics had found them): every
	// broker is asked.
	cl := newClient(t, b)
	want := map[string]int{p.source: sourcePartitions, p.alerts: outputPartitions, p.dlq: outputPartitions,
		p.watchlist: outputPartitions, p.context: outputPartitions}
	for {
		err := topicsOnEveryBroker(ctx, cl, want)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("topics %s, %s, %s not in every broker's metadata within a minute: %v", p.source, p.alerts, p.dlq, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// topicsOnEveryBroker asks each broker of the cluster for the metadata of
// the topics in want, and returns an error unless each knows each topic
// with its number of partitions.
func topicsOnEveryBroker(ctx context.Context, cl *kgo.Client, want map[string]int) error {
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for topic := range want {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, br := range resp.Brokers {
		r, err := req.RequestWith(ctx, cl.Broker(int(br.NodeID)))
		if err != nil {
			return fmt.Errorf("broker %d: %w", br.NodeID, err)
		}
		if len(r.Topics) != len(want) {
			return fmt.Errorf("broker %d: %d topics in its answer, want %d", br.NodeID, len(r.Topics), len(want))
		}
		for _, topic := range r.Topics {
			name := kmsg.StringPtr("")
			if topic.Topic != nil {
				name = topic.Topic
			}
			if err := kerr.ErrorForCode(topic.ErrorCode); err != nil {
				return fmt.Errorf("broker %d: topic %s: %w", br.NodeID, *name, err)
			}
			if len(topic.Partitions) != want[*name] {
				return fmt.Errorf("broker %d: topic %s has %d partitions, want %d", br.NodeID, *name, len(topic.Partitions), want[*name])
			}
		}
	}
	return nil
}

// startPipeline returns the package's broker, an admin client of it, and a
// new pipeline whose topics it has created with the broker's defaults.
func startPipeline(t *testing.T) (*kafkatest.Broker, pipeline, *kadm.Client) {
	t.Helper()
	b := kafka.Broker(t)
	p := newPipeline(t)
	adm := newAdmin(t, b)
	p.create(t, b, adm, nil)
	return b, p, adm
}

func newAdmin(t *testing.T, b cluster) *kadm.Client {
	t.Helper()
	return kadm.NewClient(newClient(t, b))
}

// pos is a source record's place: the dead-letter headers source-partition
// and source-offset name it.
type pos struct {
	partition int32
	offset    int64
}

func (p pos) String() string { return fmt.Sprintf("%d/%d", p.partition, p.offset) }

// deadWant is what the dead letter of one source record must be.
type deadWant struct {
	what    string   // for messages
	classes []string // allowed error-class values; nil: any
	value   []byte   // the source record's value, if checked
	// optional: the record may have no dead letter (at most one, still).
	// Without --validate a malformed record that cannot hold a finding and
	// is framed as a whole object is not reported, by design (README, "Bad
	// input"); which ones the prefilter lets through is the matcher's
	// business, not the oracle's.
	optional bool
}

// ruleMarker is the text every quarantine rule requires (Elastic's rule
// matches AWSCompromisedKeyQuarantine*). A record that holds it literally
// passes the prefilter, so it is fully validated on the default flags.
const ruleMarker = "AWSCompromisedKeyQuarantine"

// reportedByDefault says whether a malformed value must be a dead letter on
// the default flags (no --validate), from the README's contract alone: a
// value that holds the rule's marker is validated; any other is still
// checked for framing, so one that is not a whole {...} object (text,
// empty, cut short before its closing brace, gzip that does not inflate)
// is reported. Anything else may or may not be.
func reportedByDefault(value []byte, d cloudtrailgen.Defect) bool {
	if bytes.Contains(value, []byte(ruleMarker)) {
		return true
	}
	switch d {
	case cloudtrailgen.DefectNotJSON, cloudtrailgen.DefectEmpty, cloudtrailgen.DefectBadGzip, cloudtrailgen.DefectTooDeep:
		return true
	}
	v := bytes.TrimSpace(value)
	return len(v) == 0 || v[0] != '{' || v[len(v)-1] != '}'
}

// expected is what the outputs must hold once the source is consumed.
type expected struct {
	alerts  map[string]string // alert id → what made it, for messages
	dead    map[pos]deadWant
	records int
}

func newExpected() *expected {
	return &expected{alerts: map[string]string{}, dead: map[pos]deadWant{}}
}

// requiredDead counts the dead letters that must be in the outputs.
func (e *expected) requiredDead() int {
	n := 0
	for _, d := range e.dead {
		if !d.optional {
			n++
		}
	}
	return n
}

// sourceWriter writes source records to explicit partitions (round robin
// unless a record names one), so that every record's position is known.
type sourceWriter struct {
	cl    *kgo.Client
	topic string
	next  int32
}

func newSourceWriter(t *testing.T, b cluster, topic string) *sourceWriter {
	t.Helper()
	return &sourceWriter{
		cl: newClient(t, b,
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.MaxBufferedRecords(20000),
		),
		topic: topic,
	}
}

// write produces values, the i-th to partitions[i] if partitions is not
// nil, and returns the records with their offsets.
func (w *sourceWriter) write(ctx context.Context, values [][]byte, partitions []int32) ([]*kgo.Record, error) {
	rs := make([]*kgo.Record, len(values))
	for i, v := range values {
		p := w.next
		if partitions != nil {
			p = partitions[i]
		} else {
			w.next = (w.next + 1) % sourcePartitions
		}
		rs[i] = &kgo.Record{Topic: w.topic, Partition: p, Value: v}
	}
	if err := w.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return nil, fmt.Errorf("producing %d source records: %w", len(rs), err)
	}
	return rs, nil
}

// generated is a batch of generator records and their expectations.
type generated struct {
	values [][]byte
	truth  []cloudtrailgen.Record
}

// generate makes n records. Under rules "all" every companion rule's
// findings are expected too (see cloudtrailgen.Kind.RuleKey).
func generate(gen *cloudtrailgen.Generator, n int) generated {
	g := generated{values: make([][]byte, n), truth: make([]cloudtrailgen.Record, n)}
	for i := range n {
		r := gen.Next()
		g.values[i], g.truth[i] = r.Value, r
	}
	return g
}

// ruleByKey is the shipped rule of a key.
func ruleByKey(key string) *matcher.Rule {
	rules, err := matcher.ParseRules(key)
	if err != nil {
		panic(err)
	}
	return rules[0]
}

// add records what the written batch must produce: every positive's alert
// (every companion finding too when allRules) and every malformed record's
// dead letter.
func (e *expected) add(rs []*kgo.Record, g generated, allRules bool) {
	e.records += len(rs)
	for i, r := range g.truth {
		if allRules {
			for _, ev := range r.Events {
				if key := ev.Kind.RuleKey(); key != "" {
					rule := ruleByKey(key)
					e.alerts[producer.AlertID(rule.ID, ev.EventID)] = rule.Key + " " + ev.EventID
				}
			}
		} else {
			for _, id := range r.Positives() {
				e.alerts[producer.AlertID(matcher.ElasticQuarantineRule.ID, id)] = "elastic " + id
			}
		}
		if r.Malformed {
			e.dead[pos{rs[i].Partition, rs[i].Offset}] = deadWant{what: "generated " + r.Defect.String(), value: g.values[i],
				optional: !reportedByDefault(g.values[i], r.Defect)}
		}
	}
}

// samplesDir holds the shared CloudTrail samples.
var samplesDir = filepath.Join("..", "..", "shared", "samples")

// sampleExpectations says what each sample must produce: 02 is the one
// positive of the Elastic rule, 10 the one of the legacy-inline companion
// rule, and 09's message is a truncated record, a dead letter under
// --validate (on the default flags it may be one: it holds no marker and is
// a whole object). Every other sample produces nothing.
var sampleExpectations = map[string]struct {
	rule      *matcher.Rule // the rule it fires, if any
	allRules  bool          // only under --rules all
	malformed string        // its dead letter's error class, if any
}{
	"02": {rule: matcher.ElasticQuarantineRule},
	"10": {rule: matcher.LegacyInlineQuarantineRule, allRules: true},
	"09": {malformed: producer.ClassMalformedJSON},
}

// loadSamples writes every sample to the source topic and records what the
// outputs must hold.
func loadSamples(ctx context.Context, t *testing.T, w *sourceWriter, exp *expected, allRules bool) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(samplesDir, "*.json"))
	if err != nil || len(files) < 10 {
		t.Fatalf("samples: %d files in %s (%v), want the 10 shared samples", len(files), samplesDir, err)
	}
	sort.Strings(files)
	var values [][]byte
	for _, f := range files {
		v, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
	}
	rs, err := w.write(ctx, values, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp.records += len(rs)
	seen := map[string]bool{}
	for i, f := range files {
		name := filepath.Base(f)
		want, ok := sampleExpectations[name[:2]]
		if !ok {
			continue
		}
		seen[name[:2]] = true
		if want.rule != nil && (allRules || !want.allRules) {
			var rec struct {
				EventID string `json:"eventID"`
			}
			if err := json.Unmarshal(values[i], &rec); err != nil || rec.EventID == "" {
				t.Fatalf("sample %s: no eventID (%v)", name, err)
			}
			exp.alerts[producer.AlertID(want.rule.ID, rec.EventID)] = "sample " + name
		}
		if want.malformed != "" {
			exp.dead[pos{rs[i].Partition, rs[i].Offset}] = deadWant{what: "sample " + name, classes: []string{want.malformed}, value: values[i],
				optional: !reportedByDefault(values[i], cloudtrailgen.DefectNone)}
		}
	}
	if len(seen) != len(sampleExpectations) {
		t.Fatalf("samples: found %v of %d expected samples in %s", slices.Sorted(maps.Keys(seen)), len(sampleExpectations), samplesDir)
	}
}

// writeEndMarkers writes a marker to every partition of the outputs, with a
// plain (non-transactional) producer.
func writeEndMarkers(t *testing.T, b cluster, topics ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var rs []*kgo.Record
	for _, topic := range topics {
		for p := range int32(outputPartitions) {
			rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Key: []byte(endMarker)})
		}
	}
	if err := w.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("writing end markers: %v", err)
	}
}

// outputReader reads the alerts and dead-letter topics from the start with
// isolation.level=read_committed, counting every copy of every alert and
// dead letter, until it has seen an end marker in every partition or is
// closed. It runs in its own goroutine, so one can watch the outputs while
// faults happen.
type outputReader struct {
	p      pipeline
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}
	logf   func(string, ...any)

	mu           sync.Mutex
	alerts       map[string]int
	dead         map[pos]int
	deadRecords  map[pos]*kgo.Record    // the first copy
	alertRecords map[string]*kgo.Record // the first copy
	// post counts the post-quarantine alerts (the watch's), by id: which
	// of the generator's events are a watched user's depends on when the
	// instance loaded each watch, so the oracle does not expect them, but
	// each must be read once.
	post        map[string]int
	postRecords map[string]*kgo.Record // the first copy
	markers     map[string]bool        // "topic/partition" of markers seen
	duplicates  int                    // copies beyond the first, counted as read
	bad         []string               // records that are not what an output may hold
	records     int
}

func startReader(t *testing.T, b cluster, p pipeline) *outputReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &outputReader{
		p: p, cancel: cancel, done: make(chan struct{}), logf: t.Logf,
		alerts: map[string]int{}, dead: map[pos]int{}, deadRecords: map[pos]*kgo.Record{}, alertRecords: map[string]*kgo.Record{}, markers: map[string]bool{}, post: map[string]int{}, postRecords: map[string]*kgo.Record{},
	}
	r.cl = newClient(t, b,
		kgo.ConsumeTopics(p.alerts, p.dlq),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	go r.run(ctx)
	t.Cleanup(r.close)
	return r
}

func (r *outputReader) run(ctx context.Context) {
	defer close(r.done)
	for {
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		r.mu.Lock()
		fs.EachRecord(r.add)
		all := len(r.markers) == 2*outputPartitions
		r.mu.Unlock()
		if all {
			return
		}
	}
}

func (r *outputReader) add(rec *kgo.Record) {
	r.records++
	if string(rec.Key) == endMarker {
		r.markers[fmt.Sprintf("%s/%d", rec.Topic, rec.Partition)] = true
		return
	}
	switch rec.Topic {
	case r.p.alerts:
		id := string(rec.Key)
		var post struct {
			QW struct {
				AlertID string          `json:"alert_id"`
				Watch   json.RawMessage `json:"watch"`
			} `json:"quarantine_watch"`
		}
		if json.Unmarshal(rec.Value, &post) == nil && post.QW.Watch != nil {
			r.post[id]++
			if r.post[id] == 1 {
				r.postRecords[id] = rec
			}
			if r.post[id] > 1 {
				r.duplicates++
				r.logf("reader: post-quarantine alert %s read %d times (now at %s/%d@%d)", id, r.post[id], rec.Topic, rec.Partition, rec.Offset)
			}
			if post.QW.AlertID != id {
				r.bad = append(r.bad, fmt.Sprintf("post-quarantine alert at %d@%d keyed %s: document's alert id %q", rec.Partition, rec.Offset, id, post.QW.AlertID))
			}
			return
		}
		r.alerts[id]++
		if r.alerts[id] > 1 {
			r.duplicates++
			r.logf("reader: alert %s read %d times (now at %s/%d@%d)", id, r.alerts[id], rec.Topic, rec.Partition, rec.Offset)
		} else {
			r.alertRecords[id] = rec
		}
		var doc struct {
			QW struct {
				AlertID string `json:"alert_id"`
			} `json:"quarantine_watch"`
		}
		if err := json.Unmarshal(rec.Value, &doc); err != nil || doc.QW.AlertID != id {
			r.bad = append(r.bad, fmt.Sprintf("alert at %d@%d keyed %s: document's alert id %q (%v)", rec.Partition, rec.Offset, id, doc.QW.AlertID, err))
		}
	case r.p.dlq:
		part, err1 := strconv.ParseInt(header(rec, producer.HeaderSourcePartition), 10, 32)
		off, err2 := strconv.ParseInt(header(rec, producer.HeaderSourceOffset), 10, 64)
		if err1 != nil || err2 != nil || header(rec, producer.HeaderSourceTopic) != r.p.source {
			r.bad = append(r.bad, fmt.Sprintf("dead letter at %d@%d without a source: headers %v", rec.Partition, rec.Offset, rec.Headers))
			return
		}
		at := pos{int32(part), off}
		r.dead[at]++
		if r.dead[at] > 1 {
			r.duplicates++
			r.logf("reader: dead letter of %v read %d times", at, r.dead[at])
			return
		}
		r.deadRecords[at] = rec
	}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// waitMarkers waits until the reader has seen every end marker, or timeout
// passes, and returns the partitions whose marker it has not seen: each is
// a transaction left hanging (or a reader that cannot keep up).
func (r *outputReader) waitMarkers(timeout time.Duration) []string {
	select {
	case <-r.done:
	case <-time.After(timeout):
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return missingMarkers(r.markers, r.p.alerts, r.p.dlq)
}

// alertIDs returns how many times the reader has read each alert id.
func (r *outputReader) alertIDs() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.alerts)
}

// postIDs returns how many times the reader has read each post-quarantine
// alert id.
func (r *outputReader) postIDs() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.post)
}

func (r *outputReader) close() {
	r.cancel()
	<-r.done
	r.cl.Close()
}

// verdict is how the outputs compare with what was expected.
type verdict struct {
	alerts, dead                     int // distinct ids and positions read
	lostAlerts, lostDead             int
	dupAlerts, dupDead               int // ids and positions read more than once
	strayAlerts, strayDead           int // read but not expected
	wrongDead                        int // wrong error class or value
	bad                              int // malformed output records
	duplicateCopies, recordsInOutput int
	// post and dupPost: post-quarantine alerts read, and those read more
	// than once (see outputReader.post).
	post, dupPost int
}

func (v verdict) lost() int       { return v.lostAlerts + v.lostDead }
func (v verdict) duplicates() int { return v.dupAlerts + v.dupDead + v.dupPost }
func (v verdict) wrong() int      { return v.strayAlerts + v.strayDead + v.wrongDead + v.bad }

// compare checks what r has read against exp, logs every difference (at
// most a few of each kind) and returns the counts.
func (r *outputReader) compare(t *testing.T, exp *expected) verdict {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	v := verdict{alerts: len(r.alerts), dead: len(r.dead), bad: len(r.bad), duplicateCopies: r.duplicates, recordsInOutput: r.records}
	v.post = len(r.post)
	for _, n := range r.post {
		if n > 1 {
			v.dupPost++
		}
	}
	var notes []string
	note := func(format string, args ...any) {
		if len(notes) < 20 {
			notes = append(notes, fmt.Sprintf(format, args...))
		}
	}
	for id, what := range exp.alerts {
		switch n := r.alerts[id]; {
		case n == 0:
			v.lostAlerts++
			note("alert %s (%s) lost", id, what)
		case n > 1:
			v.dupAlerts++
			note("alert %s (%s) read %d times", id, what, n)
		}
	}
	for id := range r.alerts {
		if _, ok := exp.alerts[id]; !ok {
			v.strayAlerts++
			note("alert %s not expected", id)
		}
	}
	optional := 0
	for at, want := range exp.dead {
		n := r.dead[at]
		switch {
		case n == 0 && want.optional:
			optional++
			continue
		case n == 0:
			v.lostDead++
			note("dead letter of %v (%s) lost", at, want.what)
			continue
		case n > 1:
			v.dupDead++
			note("dead letter of %v (%s) read %d times", at, want.what, n)
		}
		rec := r.deadRecords[at]
		class := header(rec, producer.HeaderErrorClass)
		if want.classes != nil && !slices.Contains(want.classes, class) {
			v.wrongDead++
			note("dead letter of %v (%s): error-class %q, want one of %q (error %q)", at, want.what, class, want.classes, header(rec, producer.HeaderError))
		}
		if header(rec, producer.HeaderError) == "" {
			v.wrongDead++
			note("dead letter of %v (%s): no error header", at, want.what)
		}
		if want.value != nil && string(rec.Value) != string(want.value) {
			v.wrongDead++
			note("dead letter of %v (%s): value differs from the source record (%d bytes, want %d)", at, want.what, len(rec.Value), len(want.value))
		}
	}
	for at := range r.dead {
		if _, ok := exp.dead[at]; !ok {
			v.strayDead++
			rec := r.deadRecords[at]
			note("dead letter of %v not expected: error-class %q, error %q", at, header(rec, producer.HeaderErrorClass), header(rec, producer.HeaderError))
		}
	}
	for i, b := range r.bad {
		if i < 5 {
			note("%s", b)
		}
	}
	t.Logf("outputs: alerts expected %d, read %d distinct (lost %d, duplicated %d, unexpected %d); dead letters expected %d, read %d distinct (lost %d, duplicated %d, unexpected %d, wrong %d; %d optional ones absent); %d malformed output records",
		len(exp.alerts), v.alerts, v.lostAlerts, v.dupAlerts, v.strayAlerts,
		len(exp.dead), v.dead, v.lostDead, v.dupDead, v.strayDead, v.wrongDead, optional, v.bad)
	if v.post > 0 {
		t.Logf("outputs: %d post-quarantine alerts (the watch's, on by default: not in the oracle's set, each read once or counted as duplicated: %d)", v.post, v.dupPost)
	}
	classes := map[string]int{}
	for _, rec := range r.deadRecords {
		classes[header(rec, producer.HeaderErrorClass)]++
	}
	t.Logf("dead letters by error-class: %v", classes)
	for _, n := range notes {
		t.Log("  " + n)
	}
	return v
}

// mustMatch fails t unless v is exact.
func mustMatch(t *testing.T, who string, v verdict) {
	t.Helper()
	if v.lost()+v.duplicates()+v.wrong() > 0 {
		t.Errorf("%s: lost %d, duplicated %d, unexpected or wrong %d", who, v.lost(), v.duplicates(), v.wrong())
	}
}

// drainOutputs writes the end markers and reads the outputs from the start
// until every marker is seen; it fails t if one is not seen within a minute
// (a transaction left hanging), and compares what it read with exp.
func drainOutputs(t *testing.T, b cluster, p pipeline, exp *expected) (*outputReader, verdict) {
	t.Helper()
	writeEndMarkers(t, b, p.alerts, p.dlq)
	r := startReader(t, b, p)
	if missing := r.waitMarkers(time.Minute); len(missing) > 0 {
		t.Errorf("end markers not visible to read_committed within a minute (a transaction left open?): %v", missing)
	}
	v := r.compare(t, exp)
	mustMatch(t, "drain", v)
	return r, v
}

// groupLag returns, for the source topic, how many records the group has
// not committed, and how many partitions are behind.
func groupLag(ctx context.Context, adm *kadm.Client, group, topic string) (behind int64, partitions int, err error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, 0, err
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && err == nil {
			err = o.Err
		}
		c, _ := committed.Lookup(o.Topic, o.Partition)
		if lag := o.Offset - max(c.At, 0); lag > 0 {
			behind += lag
			partitions++
		}
	})
	if len(ends[topic]) == 0 && err == nil {
		err = fmt.Errorf("no partitions of %s listed", topic)
	}
	return behind, partitions, err
}

// committedTotal returns the sum of the group's committed offsets on topic.
func committedTotal(ctx context.Context, adm *kadm.Client, group, topic string) (int64, error) {
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, err
	}
	var total int64
	committed.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			total += max(o.At, 0)
		}
	})
	return total, nil
}

// waitCaughtUp polls until the group has committed the end offset of every
// source partition, failing t after timeout.
func waitCaughtUp(t *testing.T, adm *kadm.Client, group, topic string, timeout time.Duration, instances ...*instance) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		behind, parts, err := groupLag(ctx, adm, group, topic)
		cancel()
		if err == nil && behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s has not committed the end of %s after %v: %d records behind on %d partitions (%v)", group, topic, timeout, behind, parts, err)
		}
		for _, in := range instances {
			in.mu.Lock()
			failure := in.failure
			in.mu.Unlock()
			if failure != nil {
				t.Fatalf("waiting for the group to catch up: %v", failure)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkUnplanned fails t if an instance exited on its own where nothing
// justifies it.
func checkUnplanned(t *testing.T, ins ...*instance) {
	t.Helper()
	for _, in := range ins {
		if ex := in.unplannedExits(); len(ex) > 0 {
			var lines []string
			for _, e := range ex {
				lines = append(lines, e.line)
			}
			t.Errorf("instance %s exited on its own %d times without a fault to explain it:\n%s", in.name, len(ex), strings.Join(lines, "\n"))
		}
	}
}

// stopAll stops instances gracefully and fails t unless each exits 0.
func stopAll(t *testing.T, ins ...*instance) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(ins))
	for i, in := range ins {
		wg.Go(func() { errs[i] = in.stop() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("instance %s: graceful stop exited with %v", ins[i].name, err)
		}
	}
}

// missingMarkers returns, as "topic/partition", the partitions of the
// output topics on which a reader has not seen a transaction marker.
func missingMarkers(seen map[string]bool, topics ...string) []string {
	var missing []string
	for _, topic := range topics {
		for part := range outputPartitions {
			if k := fmt.Sprintf("%s/%d", topic, part); !seen[k] {
				missing = append(missing, k)
			}
		}
	}
	return missing
}
