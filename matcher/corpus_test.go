package matcher

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// corpusDir holds real CloudTrail records from public repositories, none
// written by this project (its README says where each came from).
var corpusDir = filepath.Join("..", "..", "shared", "corpus", "cloudtrail-public")

// corpusRecord is one record of the public corpus.
type corpusRecord struct {
	source string // file and position, to name it
	raw    []byte // the record, compacted
	// elastic holds the fields Elastic's ingest pipeline produced from it
	// (elastic/ only): event.action, event.outcome, event.id,
	// aws.cloudtrail.request_parameters, error fields.
	elastic map[string]string
}

// loadCorpus reads every record: records[] (AWS docs, Stratus Red Team),
// tests[].log (Panther) and docs[] (Elastic: event.original beside
// Elastic's output). awslib's gzip S3 object is read apart (corpusS3Object).
func loadCorpus(t testing.TB) []corpusRecord {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(corpusDir, "*", "*.json"))
	if err != nil || len(files) < 100 {
		t.Fatalf("corpus %s: %d files, %v", corpusDir, len(files), err)
	}
	var out []corpusRecord
	compactRaw := func(raw json.RawMessage) []byte {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for _, path := range files {
		if strings.HasSuffix(path, ".meta.json") {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Records []json.RawMessage `json:"records"`
			Tests   []struct {
				Name string          `json:"name"`
				Log  json.RawMessage `json:"log"`
			} `json:"tests"`
			Docs []map[string]json.RawMessage `json:"docs"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		name := filepath.Join(filepath.Base(filepath.Dir(path)), filepath.Base(path))
		for i, r := range f.Records {
			out = append(out, corpusRecord{source: fmt.Sprintf("%s records[%d]", name, i), raw: compactRaw(r)})
		}
		for i, tc := range f.Tests {
			out = append(out, corpusRecord{source: fmt.Sprintf("%s tests[%d] %q", name, i, tc.Name), raw: compactRaw(tc.Log)})
		}
		for i, d := range f.Docs {
			var original string
			var fields map[string]string
			if err := json.Unmarshal(d["event.original"], &original); err != nil {
				t.Fatalf("%s docs[%d]: %v", name, i, err)
			}
			if err := json.Unmarshal(d["ecs"], &fields); err != nil {
				t.Fatalf("%s docs[%d]: %v", name, i, err)
			}
			out = append(out, corpusRecord{source: fmt.Sprintf("%s docs[%d]", name, i), raw: []byte(original), elastic: fields})
		}
	}
	if len(out) < 600 {
		t.Fatalf("corpus: %d records, want about 650", len(out))
	}
	return out
}

// corpusS3Object is awslib's gzip CloudTrail log object, as it is.
func corpusS3Object(t testing.TB) []byte {
	b, err := os.ReadFile(filepath.Join(corpusDir, "awslib", "SerializerTestFileCompact.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// corpusFindings are the findings the public corpus holds with every rule
// enabled, read by hand from the records: Panther's quarantine test log (a
// V2 attachment) for the Elastic rule. Every other record is a negative for
// every rule, Panther's compromised-key test log included: a PutUserPolicy
// of an inline policy it names AWSCompromisedKeyQuarantineV3, which no rule
// declares (the legacy rule's inline policy is
// AWSExposedCredentialPolicy_DO_NOT_REMOVE; AWS attaches the quarantine
// policies as managed ones).
var corpusFindings = map[string]*Rule{
	`panther/aws_iam_compromised_key_quarantine.json tests[0] "AttachUserPolicy AWSCompromisedKeyQuarantineV2-true"`: ElasticQuarantineRule,
}

// corpusShapes are the shapes a record is wrapped in for the corpus test.
var corpusShapes = []struct {
	name string
	wrap func([]byte) []byte
}{
	{"record", func(b []byte) []byte { return b }},
	{"S3 object", func(b []byte) []byte { return s3Object(b) }},
	{"EventBridge", eventBridge},
	{"CloudWatch gzip", func(b []byte) []byte { return gz(cloudWatchPayload(b)) }},
	{"CloudWatch base64", func(b []byte) []byte { return b64(gz(cloudWatchPayload(b))) }},
	{"CloudWatch awslogs", func(b []byte) []byte { return awslogs(cloudWatchPayload(b)) }},
	{"CloudWatch decoded", func(b []byte) []byte { return cloudWatchPayload(b) }},
	{"Agent message", agentEvent},
}

// TestPublicCorpus: every record of the public corpus, in every shape, is
// evaluated without a dead letter, with the defaults and with
// Config.Validate, and gives exactly the findings read by hand
// (corpusFindings), as the reference does.
func TestPublicCorpus(t *testing.T) {
	all := mustNew(t, Config{Rules: AllRules})
	strict := mustNew(t, Config{Rules: AllRules, Validate: true})
	s, ss := all.NewScanner(), strict.NewScanner()
	found := 0
	for _, r := range loadCorpus(t) {
		var id struct {
			EventID string `json:"eventID"`
		}
		json.Unmarshal(r.raw, &id)
		var want []refFinding
		if rule := corpusFindings[r.source]; rule != nil {
			want = []refFinding{{rule.ID, id.EventID, 0, ""}}
		}
		for _, shape := range corpusShapes {
			value := shape.wrap(r.raw)
			for _, sc := range []*Scanner{s, ss} {
				res := sc.Match(value, nil)
				if res.Err != nil {
					t.Errorf("%s in %s (validate %v): dead letter: %v", r.source, shape.name, sc.m.validate, res.Err)
				}
				if got := findingsOf(res); !slices.Equal(got, want) {
					t.Errorf("%s in %s (validate %v): findings %v, want %v", r.source, shape.name, sc.m.validate, got, want)
				}
				found += len(res.Findings)
			}
			if ref, malformed := reference(value, all); malformed || !slices.Equal(ref, want) {
				t.Errorf("%s in %s: reference %v (malformed %v), want %v", r.source, shape.name, ref, malformed, want)
			}
		}
	}
	if want := len(corpusFindings) * len(corpusShapes) * 2; found != want {
		t.Errorf("%d findings in all, want %d", found, want)
	}
	// awslib's S3 object: six records with placeholder values, gzip. It
	// holds no marker: only Config.Validate decodes it, as an S3 object.
	for _, sc := range []*Scanner{s, ss} {
		res := sc.Match(corpusS3Object(t), nil)
		if res.Err != nil || len(res.Findings) != 0 || sc.m.validate && res.Shape != ShapeS3Object {
			t.Errorf("awslib S3 object (validate %v): error %v, %d findings, shape %v", sc.m.validate, res.Err, len(res.Findings), res.Shape)
		}
	}
}

// TestElasticCorpus holds what the matcher evaluates to Elastic's own output
// on the records of Elastic's pipeline tests: the outcome it computes is
// Elastic's event.outcome; the reference's flattening of the pruned request
// parameters is Elastic's aws.cloudtrail.request_parameters, character for
// character (Java HashMap order included); and for every word of that text,
// and the same word with a character no record holds, the matcher's search
// of the request parameters finds it exactly when the text contains it. The
// ECS document Elastic made, spelled with its dotted field names, gives the
// same findings as the record, with the policy as it is and with a
// quarantine policy in its place.
func TestElasticCorpus(t *testing.T) {
	words := func(flat string) []string {
		var out []string
		for _, w := range strings.FieldsFunc(flat, func(r rune) bool { return strings.ContainsRune("{}[]=, \n\t\"\\/", r) }) {
			if checkMarker(w) == nil {
				out = append(out, w)
			}
		}
		return out
	}
	n := 0
	for _, r := range loadCorpus(t) {
		if r.elastic == nil {
			continue
		}
		n++
		m := mustNew(t, Config{})
		s := m.NewScanner()
		f, err := s.validate(r.raw, -1)
		if err != nil {
			t.Fatalf("%s: %v", r.source, err)
		}
		name, _ := stringView(f.raw("eventName"), nil)
		if got, want := s.outcome(f, name), r.elastic["event.outcome"]; got != want {
			t.Errorf("%s: outcome %q, Elastic %q", r.source, got, want)
		}
		doc, _ := refParse(r.raw, m.limits)
		rec := doc.(*refObj)
		if got, want := refOutcome(rec), r.elastic["event.outcome"]; got != want {
			t.Errorf("%s: reference outcome %q, Elastic %q", r.source, got, want)
		}
		flat, hasFlat := r.elastic["aws.cloudtrail.request_parameters"]
		params, left := refPrune(rec.get("requestParameters"))
		if left != hasFlat || left && refFlatten(params) != flat {
			t.Errorf("%s: flattened request parameters\n%q, Elastic\n%q", r.source, refFlatten(params), flat)
		}
		raw := f.raw("requestParameters")
		checked := 0
		for _, w := range words(flat) {
			for _, probe := range []string{w, w + "#"} {
				pm := mustNew(t, Config{Rules: []*Rule{{ID: "probe", Key: "probe", Name: "probe", Match: Match{
					Actions: []string{"X"}, Outcome: OutcomeSuccess, Field: FieldRequestParameters, Markers: []string{probe}}}}})
				got := pm.NewScanner().markersIn(raw) != 0
				if want := strings.Contains(flat, probe); got != want {
					t.Errorf("%s: the matcher finds %q in the request parameters: %v; Elastic's text holds it: %v", r.source, probe, got, want)
				}
				checked++
			}
		}
		if hasFlat && checked == 0 {
			t.Errorf("%s: no word of %q checked", r.source, flat)
		}

		// The ECS document, dotted as Elastic names its fields, against
		// the record, as they are and with a quarantine policy.
		for _, swap := range [][2]string{{"", ""}, {"AdministratorAccess", "AWSCompromisedKeyQuarantineV2"},
			{"ReadOnlyAccess", "AWSCompromisedKeyQuarantineV3"}, {"SecurityAudit", "AWSCompromisedKeyQuarantine"}} {
			if swap[0] != "" && !bytes.Contains(r.raw, []byte(swap[0])) {
				continue
			}
			fields := map[string]string{"data_stream.dataset": "aws.cloudtrail"}
			for k, v := range r.elastic {
				fields[k] = strings.ReplaceAll(v, swap[0], swap[1])
			}
			ecs, _ := json.Marshal(fields)
			record := r.raw
			if swap[0] != "" {
				record = bytes.ReplaceAll(record, []byte(swap[0]), []byte(swap[1]))
			}
			all := mustNew(t, Config{Rules: AllRules, Validate: true})
			fromRecord := findingsOf(all.NewScanner().Match(record, nil))
			fromECS := all.NewScanner().Match(ecs, nil)
			if fromECS.Err != nil || fromECS.Shape != ShapeECS || !slices.Equal(findingsOf(fromECS), fromRecord) {
				t.Errorf("%s (%s): the ECS document finds %v (error %v, shape %v), the record %v\n%s", r.source, swap[1], findingsOf(fromECS), fromECS.Err, fromECS.Shape, fromRecord, ecs)
			}
			if swap[0] != "" && len(fromRecord) != 1 {
				t.Errorf("%s: with %s, %d findings, want 1", r.source, swap[1], len(fromRecord))
			}
		}
	}
	if n != 17 {
		t.Errorf("%d Elastic documents, want 17", n)
	}
}
