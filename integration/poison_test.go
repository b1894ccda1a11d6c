package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// poisonLimit is --max-record-bytes in the first phase of TestPoison, and
// poisonBig the size of the record that exceeds it.
const (
	poisonLimit = 65536
	poisonBig   = 100 << 10
	poisonDepth = 100_000
)

// poison is a record value that cannot be evaluated.
type poison struct {
	name string
	// value builds it from a quarantine record (or a noise record, for
	// the poisons that cannot hold a finding) with the given eventID.
	value func(id string) []byte
	// classes are the error-class headers its dead letter may carry.
	classes []string
	// marker: it contains AWSCompromisedKeyQuarantine, so the prefilter
	// passes it and it is reported without --validate too. Without
	// --validate a record that cannot hold a finding is only checked for
	// its size and framing (a whole {...} object, or gzip or base64 that
	// inflates): one with a syntax error inside is not reported, by
	// design (see the README, "Bad input").
	marker bool
}

// TestPoison feeds the service records that cannot be evaluated, each
// followed by a good quarantine record in the same partition, then a
// thousand generated good records: every poison must be in the dead-letter
// topic once with its error class, every good record's finding on the
// alerts topic once, and the group must reach the end of the source. It
// runs with --validate and without it (the default), where every poison
// that contains the marker must still be reported.
//
// In the first phase the instance runs with --max-record-bytes 65536, which
// turns a 100 KiB record into a too_large dead letter, and JSON nested
// 100,000 deep too: it needs 200 KB of brackets, so the size check stops it
// before any parser sees it. The second phase restarts the instance with
// the default limit (1 MiB) and sends the deep record again: the matcher's
// depth limit (512 levels) must now report it as too_complex.
//
// It runs on the default flags, with --validate, and with batches of 20
// records, so that poisons and the good records after them fall on both
// sides of many transaction boundaries.
func TestPoison(t *testing.T) {
	for _, mode := range []struct {
		name     string
		validate bool
		extra    []string
	}{
		{"default", false, nil},
		{"validate", true, []string{"--validate"}},
		{"max-batch-20", false, []string{"--max-batch", "20"}},
	} {
		t.Run(mode.name, func(t *testing.T) { testPoison(t, mode.name, mode.validate, mode.extra) })
	}
}

func testPoison(t *testing.T, mode string, validate bool, extra []string) {
	b := kafka.Broker(t)
	p := newPipeline(t)
	adm := newAdmin(t, b)
	// The source topic must take the 100 KiB and 200 KB records, and the
	// dead-letter topic their dead letters: 2 MiB, whatever the broker's
	// default.
	maxMessage := "2097152"
	p.create(t, b, adm, map[string]*string{"max.message.bytes": &maxMessage})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	quarantine := sampleWithID(t, "02_attach_user_policy_quarantine_v2_panther.json")
	noise := sampleWithID(t, "04_assume_role_awsservice_elastic_integrations.json")
	deep := func(id string) []byte {
		return slices.Concat([]byte(`{"Records":`), bytes.Repeat([]byte("["), poisonDepth), quarantine(id), bytes.Repeat([]byte("]"), poisonDepth), []byte("}"))
	}
	poisons := []poison{
		{name: "malformed-json", marker: true, classes: []string{producer.ClassMalformedJSON}, value: func(id string) []byte {
			return mustReplace(t, quarantine(id), `"eventName":"AttachUserPolicy"`, `"eventName" "AttachUserPolicy"`)
		}},
		{name: "truncated", marker: true, classes: []string{producer.ClassMalformedJSON}, value: func(id string) []byte {
			q := quarantine(id)
			return q[:bytes.Index(q, []byte("AWSCompromisedKeyQuarantine"))+40]
		}},
		{name: "over-max-record-bytes", marker: true, classes: []string{producer.ClassTooLarge}, value: func(id string) []byte {
			return mustReplace(t, quarantine(id), `"userAgent":"AWS Internal"`, `"userAgent":"AWS Internal `+strings.Repeat("x", poisonBig)+`"`)
		}},
		{name: "nested-100000-deep-over-the-limit", marker: true, classes: []string{producer.ClassTooLarge}, value: deep},
		{name: "invalid-utf8", marker: true, classes: []string{producer.ClassBadEncoding}, value: func(id string) []byte {
			return mustReplace(t, quarantine(id), `"userAgent":"AWS Internal"`, "\"userAgent\":\"AWS \xff\xfe Internal\"")
		}},
		// JSON forbids control characters in strings; the matcher calls
		// that malformed JSON, and bad encoding would be as right.
		{name: "nul-byte", marker: true, classes: []string{producer.ClassMalformedJSON, producer.ClassBadEncoding}, value: func(id string) []byte {
			return mustReplace(t, quarantine(id), `"userAgent":"AWS Internal"`, "\"userAgent\":\"AWS \x00 Internal\"")
		}},
		{name: "gzip-that-is-not", marker: true, classes: []string{producer.ClassBadCompression}, value: func(id string) []byte {
			return notGzip(t, quarantine(id))
		}},
		{name: "gzip-that-is-not-base64", marker: true, classes: []string{producer.ClassBadCompression}, value: func(id string) []byte {
			return []byte(base64.StdEncoding.EncodeToString(notGzip(t, quarantine(id))))
		}},
		{name: "gzip-that-is-not-awslogs", marker: true, classes: []string{producer.ClassBadCompression}, value: func(id string) []byte {
			return fmt.Appendf(nil, `{"awslogs":{"data":%q}}`, base64.StdEncoding.EncodeToString(notGzip(t, quarantine(id))))
		}},
		{name: "noise-malformed-json", classes: []string{producer.ClassMalformedJSON}, value: func(id string) []byte {
			return mustReplace(t, noise(id), `"eventName":"AssumeRole"`, `"eventName" "AssumeRole"`)
		}},
	}

	args := serviceArgs(b, p.source, p.alerts, p.group, extra...)
	w := newSourceWriter(t, b, p.source)
	exp := newExpected()
	txnID := kafkatest.Name(t, "txn")

	// writePoisons writes each poison, then a good quarantine record, to
	// partition i%sourcePartitions.
	writePoisons := func(phase string, ps []poison) {
		t.Helper()
		var values [][]byte
		var parts []int32
		for i, ps := range ps {
			values = append(values, ps.value(fmt.Sprintf("poison-%s-%s-%s", mode, phase, ps.name)),
				quarantine(fmt.Sprintf("good-%s-%s-%s", mode, phase, ps.name)))
			parts = append(parts, int32(i%sourcePartitions), int32(i%sourcePartitions))
		}
		rs, err := w.write(ctx, values, parts)
		if err != nil {
			t.Fatal(err)
		}
		exp.records += len(rs)
		for i, ps := range ps {
			poisonAt, good := rs[2*i], rs[2*i+1]
			if poisonAt.Partition != good.Partition || good.Offset != poisonAt.Offset+1 {
				t.Fatalf("%s: the good record is at %d/%d, not right after the poison at %d/%d", ps.name, good.Partition, good.Offset, poisonAt.Partition, poisonAt.Offset)
			}
			if validate || ps.marker {
				exp.dead[pos{poisonAt.Partition, poisonAt.Offset}] = deadWant{what: phase + " " + ps.name, classes: ps.classes, value: poisonAt.Value}
			}
			id := fmt.Sprintf("good-%s-%s-%s", mode, phase, ps.name)
			exp.alerts[producer.AlertID(matcher.ElasticQuarantineRule.ID, id)] = "good record after " + ps.name
		}
		t.Logf("%s: wrote %d poisons, each followed by a good record", phase, len(ps))
	}

	writePoisons("limited", poisons)
	g := generate(cloudtrailgen.New(cloudtrailgen.Config{Seed: 23, QuarantineRate: 0.02, NearMissRate: 0.05}), 1000)
	rs, err := w.write(ctx, g.values, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp.add(rs, g, false)

	in := startInstance(t, "limited", txnID, append(args, "--max-record-bytes", fmt.Sprint(poisonLimit)))
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, in)
	stopAll(t, in)
	checkUnplanned(t, in)

	// The same transactional id and group, the default size limit: the
	// deep record reaches the matcher's depth limit.
	writePoisons("unlimited", []poison{{name: "nested-100000-deep", marker: true, classes: []string{producer.ClassTooComplex}, value: deep}})
	in = startInstance(t, "unlimited", txnID, args)
	waitCaughtUp(t, adm, p.group, p.source, 3*time.Minute, in)
	stopAll(t, in)
	checkUnplanned(t, in)

	drainOutputs(t, b, p, exp)
	t.Logf("%s: %d records, %d findings, %d dead letters expected", mode, exp.records, len(exp.alerts), len(exp.dead))
}

// sampleWithID returns a function that gives a shared sample, compacted,
// with its eventID replaced.
func sampleWithID(t *testing.T, name string) func(id string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(samplesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		t.Fatalf("sample %s: %v", name, err)
	}
	var rec struct {
		EventID string `json:"eventID"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil || rec.EventID == "" {
		t.Fatalf("sample %s: no eventID (%v)", name, err)
	}
	compact := buf.Bytes()
	old := []byte(`"eventID":"` + rec.EventID + `"`)
	if !bytes.Contains(compact, old) {
		t.Fatalf("sample %s: %s not found", name, old)
	}
	return func(id string) []byte {
		return bytes.Replace(compact, old, []byte(`"eventID":"`+id+`"`), 1)
	}
}

func mustReplace(t *testing.T, v []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(v, []byte(old)) {
		t.Fatalf("%q not found in %.80q...", old, v)
	}
	return bytes.Replace(v, []byte(old), []byte(new), 1)
}

// notGzip returns a CloudWatch Logs payload holding record, gzipped, with
// its deflate stream broken: the first block has the reserved type 3,
// which every inflater rejects.
func notGzip(t *testing.T, record []byte) []byte {
	t.Helper()
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
	gz := buf.Bytes()
	gz[10] |= 0x07 // BFINAL=1, BTYPE=11
	return gz
}
