package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// kafkaDefaultMaxMessageBytes is Kafka's default max.message.bytes (1 MiB
// and the 12 bytes of a batch's offset and length): what a topic created
// without that setting accepts.
const kafkaDefaultMaxMessageBytes = 1048588

// sizeCase is one source record of TestOversizedOutputs and what it must
// produce: an alert (maybe cut to fit, with the fields that must say so) or
// a dead letter.
type sizeCase struct {
	name  string
	key   []byte
	value []byte
	// alertID is set when the record must produce this alert.
	alertID string
	// truncated are the fields the alert must list as cut, with the SHA-256
	// of each field's whole value, computed here from what the test wrote.
	truncated map[string]string
	// prefixes are fields whose (cut) value must be a prefix of these.
	prefixes map[string]string
	// deadClass is set when the record must produce a dead letter of this
	// error class instead; deadKeyCut and deadValueCut say whether its key
	// and value must have been cut to fit.
	deadClass    string
	deadKeyCut   bool
	deadValueCut bool
}

// TestOversizedOutputs feeds the service, run with its default flags,
// records whose outputs would not fit their topic as they are: a matching
// record of 700 KB (a user agent of `\"` repeated, which the ECS alert
// escapes twice over), a matching CloudWatch Logs payload of a few KB that
// inflates to 4 MB, a malformed record with a 20 KB key, and, on outputs
// with a small max.message.bytes, records whose alerts or dead letters do
// not fit at all. Each is followed by a good quarantine record. The group
// must never stop, and every source record must be accounted for once, read
// with read_committed: its alert (cut to fit, saying which fields were cut
// with a hash of each whole value) or its dead letter (cut to fit, key and
// headers included, or of class alert_too_large when the alert cannot be
// cut to fit).
func TestOversizedOutputs(t *testing.T) {
	quarantine := sampleWithID(t, "02_attach_user_policy_quarantine_v2_panther.json")
	alertID := func(id string) string { return producer.AlertID(matcher.ElasticQuarantineRule.ID, id) }
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	const ua = `"userAgent":"AWS Internal"`

	// quoted700k is a quarantine record whose user agent is "AWS Internal"
	// followed by 350,000 double quotes, each escaped: 700 KB of `\"`.
	quoted700k := func(id string) sizeCase {
		v := mustReplace(t, quarantine(id), ua, `"userAgent":"AWS Internal`+strings.Repeat(`\"`, 350_000)+`"`)
		agent := "AWS Internal" + strings.Repeat(`"`, 350_000)
		return sizeCase{
			name: "700KB-user-agent", value: v, alertID: alertID(id),
			truncated: map[string]string{"event.original": sum(string(v)), "user_agent.original": sum(agent)},
			prefixes:  map[string]string{"event.original": string(v), "user_agent.original": agent},
		}
	}
	// inflating is a CloudWatch Logs payload, gzip on the wire, holding one
	// quarantine record with a user agent of 1,000,000 escaped quotes: about
	// 8 KB compressed, 4 MB inflated, and an alert of 4 MB before cutting.
	inflating := func(id string) sizeCase {
		record := mustReplace(t, quarantine(id), ua, `"userAgent":"AWS Internal`+strings.Repeat(`\"`, 1_000_000)+`"`)
		payload, err := json.Marshal(map[string]any{
			"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "CloudTrail", "logStream": "s",
			"subscriptionFilters": []string{"f"},
			"logEvents":           []map[string]any{{"id": "1", "timestamp": 1700000000000, "message": string(record)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(payload)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return sizeCase{
			name: "cloudwatch-inflating-to-4MB", value: buf.Bytes(), alertID: alertID(id),
			truncated: map[string]string{"event.original": sum(string(record))},
			prefixes:  map[string]string{"event.original": string(record)},
		}
	}
	// malformed is a quarantine record of size bytes (padded in its user
	// agent) without its closing brace: it holds the marker, so it is
	// decoded by default, and is malformed JSON.
	malformed := func(id string, size int) []byte {
		q := quarantine(id)
		pad := size - (len(q) - 1) - len(" ")
		if pad < 0 {
			pad = 0
		}
		v := mustReplace(t, q, ua, `"userAgent":"AWS Internal `+incompressible(pad)+`"`)
		return v[:len(v)-1]
	}
	bigKey := []byte(incompressible(20 << 10))
	good := func(id string) sizeCase { return sizeCase{name: "good", value: quarantine(id), alertID: alertID(id)} }

	for _, tc := range []struct {
		name        string
		alerts, dlq int // max.message.bytes; 0: the broker's default
		cases       func(prefix string) []sizeCase
	}{
		{
			name: "broker-defaults",
			cases: func(prefix string) []sizeCase {
				// The largest value the source topic takes with a 20 KB
				// key; its dead letter's headers do not fit beside them.
				largest := kafkaDefaultMaxMessageBytes - 74 - len(bigKey) - 100
				return []sizeCase{
					quoted700k(prefix + "-700k"),
					good(prefix + "-after-700k"),
					inflating(prefix + "-inflating"),
					good(prefix + "-after-inflating"),
					{name: "20KB-key-1MB-malformed", key: bigKey, value: malformed(prefix+"-key", largest), deadClass: producer.ClassMalformedJSON, deadValueCut: true},
					good(prefix + "-after-key"),
				}
			},
		},
		{
			name: "small-outputs", alerts: 8192, dlq: 2048,
			cases: func(prefix string) []sizeCase {
				return []sizeCase{
					good(prefix + "-first"),
					quoted700k(prefix + "-700k"),
					good(prefix + "-after-700k"),
					{name: "20KB-key-malformed", key: bigKey, value: []byte(`{"eventName":"AttachUserPolicy","requestParameters":{"policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"`), deadClass: producer.ClassMalformedJSON, deadKeyCut: true},
					good(prefix + "-after-key"),
					{name: "4KB-malformed", value: malformed(prefix+"-4k", 4096), deadClass: producer.ClassMalformedJSON, deadValueCut: true},
					good(prefix + "-after-4k"),
				}
			},
		},
		{
			// No ECS alert fits in 1 KB, however cut: the source record
			// goes to the dead-letter topic whole.
			name: "alerts-topic-too-small", alerts: 1024,
			cases: func(prefix string) []sizeCase {
				return []sizeCase{
					{name: "quarantine", value: quarantine(prefix + "-q1"), deadClass: producer.ClassAlertTooLarge},
					{name: "700KB-user-agent", value: quoted700k(prefix + "-700k").value, deadClass: producer.ClassAlertTooLarge},
					{name: "malformed", value: malformed(prefix+"-m", 2000), deadClass: producer.ClassMalformedJSON},
					{name: "quarantine-after", value: quarantine(prefix + "-q2"), deadClass: producer.ClassAlertTooLarge},
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testOversized(t, tc.alerts, tc.dlq, tc.cases(tc.name))
		})
	}
}

func testOversized(t *testing.T, alertsLimit, dlqLimit int, cases []sizeCase) {
	b := kafka.Broker(t)
	p := newPipeline(t)
	adm := newAdmin(t, b)
	p.create(t, b, adm, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for topic, limit := range map[string]int{p.alerts: alertsLimit, p.dlq: dlqLimit} {
		if limit == 0 {
			continue
		}
		v := strconv.Itoa(limit)
		resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &v}}, topic)
		if err == nil {
			_, err = resp.On(topic, nil)
		}
		if err != nil {
			t.Fatalf("setting max.message.bytes=%d on %s: %v", limit, topic, err)
		}
	}
	if dlqLimit == 0 {
		dlqLimit = kafkaDefaultMaxMessageBytes
	}

	// A writer that takes records up to the source topic's limit (franz-go
	// defaults to 1,000,012 bytes), every record to partition 0 in order.
	w := newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(kafkaDefaultMaxMessageBytes))
	exp := newExpected()
	byAlert := map[string]sizeCase{}
	byPos := map[pos]sizeCase{}
	for _, c := range cases {
		r := &kgo.Record{Topic: p.source, Partition: int32(len(byPos) % sourcePartitions), Key: c.key, Value: c.value}
		if err := w.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("%s: writing %d bytes with a %d-byte key: %v", c.name, len(c.value), len(c.key), err)
		}
		at := pos{r.Partition, r.Offset}
		byPos[at] = c
		exp.records++
		switch {
		case c.alertID != "":
			exp.alerts[c.alertID] = c.name
			byAlert[c.alertID] = c
		default:
			var value []byte
			if !c.deadValueCut {
				value = c.value
			}
			exp.dead[at] = deadWant{what: c.name, classes: []string{c.deadClass}, value: value}
		}
	}

	in := startInstance(t, "default-flags", kafkatest.Name(t, "txn"), serviceArgs(b, p.source, p.alerts, p.group))
	waitCaughtUpNoExit(t, adm, p, 3*time.Minute, in)
	stopAll(t, in)
	checkUnplanned(t, in)

	r, _ := drainOutputs(t, b, p, exp)
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, rec := range r.alertRecords {
		c, ok := byAlert[id]
		if !ok {
			continue // drainOutputs has said so
		}
		checkTruncatedAlert(t, c, rec)
	}
	for at, rec := range r.deadRecords {
		c, ok := byPos[at]
		if !ok {
			continue
		}
		checkCutDeadLetter(t, c, rec)
	}
}

// checkTruncatedAlert checks that an alert lists exactly the fields the case
// expects as cut (none for a good record), with the hash of each whole
// value, and that each cut value is a prefix of the whole one.
func checkTruncatedAlert(t *testing.T, c sizeCase, rec *kgo.Record) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(rec.Value, &doc); err != nil {
		t.Errorf("%s: alert is not JSON: %v", c.name, err)
		return
	}
	qw, _ := doc["quarantine_watch"].(map[string]any)
	list, _ := qw["truncated"].([]any)
	got := map[string]string{}
	for _, e := range list {
		m, _ := e.(map[string]any)
		field, _ := m["field"].(string)
		hash, _ := m["sha256"].(string)
		got[field] = hash
	}
	if len(c.truncated) == 0 && len(got) > 0 {
		t.Errorf("%s: alert of %d bytes says fields were cut: %v", c.name, len(rec.Value), got)
	}
	for field, want := range c.truncated {
		if got[field] != want {
			t.Errorf("%s: quarantine_watch.truncated has %s with sha256 %q, want %q (all: %v)", c.name, field, got[field], want, got)
		}
	}
	for field, whole := range c.prefixes {
		v := lookup(doc, field)
		if v == "" || !strings.HasPrefix(whole, v) || len(v) >= len(whole) {
			t.Errorf("%s: %s is %d bytes, not a cut prefix of the %d-byte value", c.name, field, len(v), len(whole))
		}
	}
	t.Logf("%s: alert of %d bytes, %d fields cut", c.name, len(rec.Value), len(got))
}

// checkCutDeadLetter checks that a dead letter's key and value are prefixes
// of the source record's, cut when the case expects it and only then, with
// the header that gives the whole length.
func checkCutDeadLetter(t *testing.T, c sizeCase, rec *kgo.Record) {
	t.Helper()
	for _, part := range []struct {
		what        string
		got, source []byte
		header      string
		cut         bool
	}{
		{"key", rec.Key, c.key, producer.HeaderKeyTruncated, c.deadKeyCut},
		{"value", rec.Value, c.value, producer.HeaderValueTruncated, c.deadValueCut},
	} {
		if !bytes.HasPrefix(part.source, part.got) {
			t.Errorf("%s: dead letter's %s (%d bytes) is not a prefix of the source record's (%d bytes)", c.name, part.what, len(part.got), len(part.source))
		}
		whole := header(rec, part.header)
		switch {
		case part.cut && (len(part.got) >= len(part.source) || whole != strconv.Itoa(len(part.source))):
			t.Errorf("%s: dead letter's %s is %d of %d bytes with header %s=%q; want it cut, and the header", c.name, part.what, len(part.got), len(part.source), part.header, whole)
		case !part.cut && (len(part.got) != len(part.source) || whole != ""):
			t.Errorf("%s: dead letter's %s is %d of %d bytes with header %s=%q; want it whole", c.name, part.what, len(part.got), len(part.source), part.header, whole)
		}
	}
	t.Logf("%s: dead letter %s, key %d bytes, value %d bytes, error %.120q", c.name, header(rec, producer.HeaderErrorClass), len(rec.Key), len(rec.Value), header(rec, producer.HeaderError))
}

// incompressible returns n letters and digits that no compression shrinks
// much, so that a record's size on the broker is near its size in memory:
// the broker checks max.message.bytes against the compressed batch.
func incompressible(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		h := sha256.Sum256([]byte(strconv.Itoa(i)))
		b.WriteString(base64.RawURLEncoding.EncodeToString(h[:]))
	}
	return b.String()[:n]
}

// lookup returns the string at a dotted path of doc, or "".
func lookup(doc map[string]any, path string) string {
	var v any = doc
	for part := range strings.SplitSeq(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[part]
	}
	s, _ := v.(string)
	return s
}

// waitCaughtUpNoExit is waitCaughtUp for a test in which no instance may
// exit on its own: it fails at the first such exit, with its cause, rather
// than after the instance has crash-looped until the timeout.
func waitCaughtUpNoExit(t *testing.T, adm *kadm.Client, p pipeline, timeout time.Duration, ins ...*instance) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, in := range ins {
			if ex := in.unplannedExits(); len(ex) > 0 {
				t.Fatalf("instance %s exited on its own: %s", in.name, ex[0].line)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		behind, parts, err := groupLag(ctx, adm, p.group, p.source)
		cancel()
		if err == nil && behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s has not committed the end of %s after %v: %d records behind on %d partitions (%v)", p.group, p.source, timeout, behind, parts, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestOutputLimitLoweredWhileRunning lowers the alerts topic's
// max.message.bytes under a running instance (default flags), then feeds it
// a record whose alert, cut to the limit read at start-up, is now too
// large: the broker refuses the batch that holds it (MESSAGE_TOO_LARGE),
// and the instance must put the source record in the dead-letter topic
// (class output_rejected), produce the rest of the batch again, and commit,
// on a real broker's transactions.
func TestOutputLimitLoweredWhileRunning(t *testing.T) {
	b, p, adm := startPipeline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	quarantine := sampleWithID(t, "02_attach_user_policy_quarantine_v2_panther.json")
	alertID := func(id string) string { return producer.AlertID(matcher.ElasticQuarantineRule.ID, id) }
	w := newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(kafkaDefaultMaxMessageBytes))
	exp := newExpected()
	// Partition 0 alone, so that the big record's alert and the good ones
	// around it are produced in one transaction.
	first := &kgo.Record{Topic: p.source, Partition: 0, Value: quarantine("lowered-before")}
	if err := w.ProduceSync(ctx, first).FirstErr(); err != nil {
		t.Fatal(err)
	}
	exp.records++
	exp.alerts[alertID("lowered-before")] = "before"

	in := startInstance(t, "default-flags", kafkatest.Name(t, "txn"), serviceArgs(b, p.source, p.alerts, p.group))
	waitCaughtUpNoExit(t, adm, p, 3*time.Minute, in)

	small := "65536"
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &small}}, p.alerts)
	if err == nil {
		_, err = resp.On(p.alerts, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	// 300 KB that no compression shrinks much: its alert, cut to the
	// 1 MiB read at start-up, is far over 64 KiB even compressed.
	big := mustReplace(t, quarantine("lowered-big"), `"userAgent":"AWS Internal"`, `"userAgent":"AWS Internal `+incompressible(300_000)+`"`)
	var values [][]byte
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("lowered-good-%d", i)
		values, ids = append(values, quarantine(id)), append(ids, id)
		if i == 10 {
			values, ids = append(values, big), append(ids, "")
		}
	}
	rs := make([]*kgo.Record, len(values))
	for i, v := range values {
		rs[i] = &kgo.Record{Topic: p.source, Partition: 0, Value: v}
	}
	if err := w.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		exp.records++
		if ids[i] == "" {
			exp.dead[pos{r.Partition, r.Offset}] = deadWant{what: "big", classes: []string{producer.ClassOutputRejected}, value: big}
			continue
		}
		exp.alerts[alertID(ids[i])] = ids[i]
	}
	waitCaughtUpNoExit(t, adm, p, 3*time.Minute, in)
	stopAll(t, in)
	checkUnplanned(t, in)
	r, _ := drainOutputs(t, b, p, exp)
	r.mu.Lock()
	defer r.mu.Unlock()
	for at, rec := range r.deadRecords {
		// franz-go gives the compressed size of a batch the broker refused,
		// and not of a record it refused itself.
		if e := header(rec, producer.HeaderError); !strings.Contains(e, "MESSAGE_TOO_LARGE") || !strings.Contains(e, "compressed_bytes=") {
			t.Errorf("dead letter of %v: error %q, want the broker's MESSAGE_TOO_LARGE", at, e)
		} else {
			t.Logf("dead letter of %v: %s", at, e)
		}
	}
	sum := stoppingSummary(t, in)
	t.Logf("%d records, %d transactions committed, %d aborted", sum.Records, sum.Committed, sum.Aborted)
	if sum.Aborted > 0 {
		t.Errorf("%d transactions aborted: the refused record must not abort its batch", sum.Aborted)
	}
}
