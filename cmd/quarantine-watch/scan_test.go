package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

// scanSummary reads the counts of scan's last stderr line.
func scanSummary(t *testing.T, stderr string) (documents, findings, malformed int) {
	t.Helper()
	m := regexp.MustCompile(`(\d+) documents, (\d+) findings, (\d+) malformed\n$`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary at the end of stderr:\n%s", stderr)
	}
	documents, _ = strconv.Atoi(m[1])
	findings, _ = strconv.Atoi(m[2])
	malformed, _ = strconv.Atoi(m[3])
	return documents, findings, malformed
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sampleRecord returns sample 02, the quarantine attachment, compact, with
// its eventID replaced by id.
func sampleRecord(t *testing.T, id string) string {
	t.Helper()
	record, err := os.ReadFile(filepath.Join(samples, "02_attach_user_policy_quarantine_v2_panther.json"))
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, record); err != nil {
		t.Fatal(err)
	}
	return strings.Replace(compact.String(), "e7bb4b23-66e1-4656-b607-f575fde3b790", id, 1)
}

// cloudWatchPayload is the JSON CloudWatch Logs sends a subscription's
// destination, each record a log event's message.
func cloudWatchPayload(records ...string) []byte {
	var events []string
	for i, r := range records {
		msg, _ := json.Marshal(r)
		events = append(events, fmt.Sprintf(`{"id":"3795310660696698337880902507980421114328961542429822156%d","timestamp":1700610232000,"message":%s}`, i, msg))
	}
	return []byte(`{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"aws-cloudtrail-logs-123456789012","logStream":"123456789012_CloudTrail_us-east-1","subscriptionFilters":["to-firehose"],"logEvents":[` +
		strings.Join(events, ",") + `]}`)
}

const controlMessage = `{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1700610231000,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}`

// TestScanFirehoseObject: Kinesis Data Firehose writes what a CloudWatch
// Logs subscription sends it to S3 as it came, one gzip member per
// payload, the first often a CONTROL_MESSAGE. Each member is a document.
func TestScanFirehoseObject(t *testing.T) {
	var object []byte
	object = append(object, gzipBytes(t, []byte(controlMessage))...)
	object = append(object, gzipBytes(t, cloudWatchPayload(sampleRecord(t, "00000001-0000-4000-8000-000000000001")))...)
	object = append(object, gzipBytes(t, cloudWatchPayload(sampleRecord(t, "00000002-0000-4000-8000-000000000002"), sampleRecord(t, "00000003-0000-4000-8000-000000000003")))...)
	path := writeFile(t, "firehose-1-2026-01-01-00-00-00-abc", object)

	code, stdout, stderr := runCmd(t, "", "scan", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := strings.Join(eventIDs(t, stdout), ",")
	want := "00000001-0000-4000-8000-000000000001,00000002-0000-4000-8000-000000000002,00000003-0000-4000-8000-000000000003"
	if got != want {
		t.Errorf("findings %s, want %s\nstderr:\n%s", got, want, stderr)
	}
	if docs, _, malformed := scanSummary(t, stderr); docs != 3 || malformed != 0 {
		t.Errorf("%d documents, %d malformed: want the 3 members, none malformed\n%s", docs, malformed, stderr)
	}
}

// TestScanFirehoseGenerated: a Firehose object of 300 generated CloudWatch
// Logs payloads, gzip members as the generator writes them for Kafka; the
// findings are the generator's ground truth. A member whose payload is cut
// short is reported and the members after it are still read.
func TestScanFirehoseGenerated(t *testing.T) {
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 14, QuarantineRate: 0.2, NearMissRate: 0.2,
		Shapes: map[cloudtrailgen.Shape]float64{cloudtrailgen.ShapeCloudWatchGzip: 1}})
	var object []byte
	var want []string
	const members, cut = 300, 150
	for i := range members {
		r := gen.Next()
		if i == cut {
			object = append(object, gzipBytes(t, []byte(`{"messageType":"DATA_MESSAGE","owner":"1234`))...)
			continue
		}
		object = append(object, r.Value...)
		want = append(want, r.Positives()...)
	}
	path := writeFile(t, "firehose.gz", object)

	code, stdout, stderr := runCmd(t, "", "scan", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got := eventIDs(t, stdout); !slices.Equal(got, want) {
		t.Errorf("%d findings, want the %d positives of the ground truth\ngot  %v\nwant %v", len(got), len(want), got, want)
	}
	if docs, _, malformed := scanSummary(t, stderr); docs != members || malformed != 1 {
		t.Errorf("%d documents, %d malformed: want %d and the cut one\n%s", docs, malformed, members, stderr)
	}
}

// TestScanFirehoseObjectCompressedAgain: with compression on, Firehose
// gzips the object it writes, whose content is the CloudWatch Logs gzip
// members.
func TestScanFirehoseObjectCompressedAgain(t *testing.T) {
	var members []byte
	members = append(members, gzipBytes(t, []byte(controlMessage))...)
	members = append(members, gzipBytes(t, cloudWatchPayload(sampleRecord(t, "00000001-0000-4000-8000-000000000001")))...)
	members = append(members, gzipBytes(t, cloudWatchPayload(sampleRecord(t, "00000002-0000-4000-8000-000000000002")))...)
	path := writeFile(t, "firehose.gz", gzipBytes(t, members))

	code, stdout, stderr := runCmd(t, "", "scan", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := strings.Join(eventIDs(t, stdout), ",")
	want := "00000001-0000-4000-8000-000000000001,00000002-0000-4000-8000-000000000002"
	if got != want {
		t.Errorf("findings %s, want %s\nstderr:\n%s", got, want, stderr)
	}
	if docs, _, malformed := scanSummary(t, stderr); docs != 3 || malformed != 0 {
		t.Errorf("%d documents, %d malformed: want the 3 members, none malformed\n%s", docs, malformed, stderr)
	}
}

// textValues generates n well-formed values of every shape that is text,
// and the eventIDs the rule must report in them, in order.
func textValues(seed int64, n int) (values [][]byte, positives []string) {
	shapes := cloudtrailgen.DefaultShapes()
	delete(shapes, cloudtrailgen.ShapeCloudWatchGzip)
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: seed, QuarantineRate: 0.05, NearMissRate: 0.05, Shapes: shapes})
	for len(values) < n {
		r := gen.Next()
		values = append(values, r.Value)
		positives = append(positives, r.Positives()...)
	}
	return values, positives
}

// TestScanFramings: the same generated documents, every shape (some
// pretty-printed, as the generator indents a few), framed as files are:
// one per line, concatenated with and without whitespace between, CRLF,
// gzip in one member or several. The findings are the ground truth, in
// order; every document is counted and none is malformed.
func TestScanFramings(t *testing.T) {
	values, positives := textValues(7, 400)
	if len(positives) < 10 {
		t.Fatalf("only %d positives in the corpus", len(positives))
	}
	isJSON := func(v []byte) bool { return v[0] == '{' }
	join := func(sep func(i int) string) []byte {
		var b []byte
		for i, v := range values {
			if i > 0 {
				s := sep(i)
				if !isJSON(v) || !isJSON(values[i-1]) {
					s += "\n" // base64 text is one line
				}
				b = append(b, s...)
			}
			b = append(b, v...)
		}
		return b
	}
	rng := rand.New(rand.NewPCG(1, 2))
	spaces := []string{"", " ", "\t", "\n", "\r\n", "\n\n", "  \n  "}
	lines := join(func(int) string { return "\n" })
	concatenated := join(func(int) string { return "" })
	mixed := join(func(int) string { return spaces[rng.IntN(len(spaces))] })
	crlf := join(func(int) string { return "\r\n" })
	// Members cut at document boundaries, several documents each.
	var members []byte
	for start := 0; start < len(values); {
		end := min(len(values), start+1+rng.IntN(20))
		var b []byte
		for _, v := range values[start:end] {
			b = append(append(b, v...), '\n')
		}
		members = append(members, gzipBytes(t, b)...)
		start = end
	}
	for _, c := range []struct {
		name  string
		data  []byte
		flags []string
	}{
		{"lines.json", lines, nil},
		{"lines-one-worker.json", lines, []string{"--workers", "1"}},
		{"lines-three-workers.json", lines, []string{"--workers", "3"}},
		{"concatenated.json", concatenated, nil},
		{"mixed.json", mixed, nil},
		{"crlf.json", crlf, nil},
		{"trailing-newlines.json", append(append([]byte("\n\n  "), lines...), "\n\n\n"...), nil},
		{"lines.json.gz", gzipBytes(t, lines), nil},
		{"mixed.json.gz", gzipBytes(t, mixed), nil},
		{"members.json.gz", members, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, "", append(append([]string{"scan"}, c.flags...), writeFile(t, c.name, c.data))...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := eventIDs(t, stdout); !slices.Equal(got, positives) {
				t.Errorf("%d findings, want the %d positives in order\ngot  %v\nwant %v", len(got), len(positives), got, positives)
			}
			if docs, _, malformed := scanSummary(t, stderr); docs != len(values) || malformed != 0 {
				t.Errorf("%d documents, %d malformed: want %d, none\n%s", docs, malformed, len(values), stderr)
			}
		})
	}
}

// TestScanMalformedPositions: malformed input is reported with its file,
// line and byte offset and counted, and the documents around it are read:
// a garbage line, a record cut short in a string and one cut short between
// members (which must not swallow the records after it), a pretty-printed
// document with a syntax error, and a document cut short by the end of the
// file.
func TestScanMalformedPositions(t *testing.T) {
	r1 := sampleRecord(t, "00000001-0000-4000-8000-000000000001")
	r2 := sampleRecord(t, "00000002-0000-4000-8000-000000000002")
	r3 := sampleRecord(t, "00000003-0000-4000-8000-000000000003")
	r4 := sampleRecord(t, "00000004-0000-4000-8000-000000000004")
	var b strings.Builder
	var want []string
	line := 1
	add := func(s string, malformed bool) {
		if malformed {
			want = append(want, fmt.Sprintf("bad.json:%d (byte %d)", line, b.Len()))
		}
		b.WriteString(s)
		line += strings.Count(s, "\n")
	}
	// Between the malformed documents, enough records that they fall in
	// different chunks of the reader.
	other := strings.Replace(sampleRecord(t, "ffffffff-0000-4000-8000-000000000000"), "AWSCompromisedKeyQuarantineV2", "ReadOnlyAccess", 1)
	filler := strings.Repeat(other+"\n", 900)
	add(r1, false)
	add("\n", false)
	add(filler, false)
	add("not json at all", true)
	add("\n", false)
	add(`{"eventVersion":"1.08","userIdentity":{"type":"Ro`, true)
	add("\n", false)
	add(r2, false)
	add("\n", false)
	add(filler, false)
	add(`{"eventVersion":"1.08","eventName":"AttachUserPolicy",`, true)
	add("\n", false)
	add(r3, false)
	add("\n", false)
	add(filler, false)
	add("{\n  \"eventName\": \"AttachUserPolicy\"\n  \"eventID\": \"x\"\n}", true)
	add("\n", false)
	add(r4, false)
	add("\n", false)
	add(filler, false)
	add(`{"Records":[`+r1, true)
	path := writeFile(t, "bad.json", []byte(b.String()))

	code, stdout, stderr := runCmd(t, "", "scan", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got, want := strings.Join(eventIDs(t, stdout), ","), "00000001-0000-4000-8000-000000000001,00000002-0000-4000-8000-000000000002,00000003-0000-4000-8000-000000000003,00000004-0000-4000-8000-000000000004"; got != want {
		t.Errorf("findings %s, want %s", got, want)
	}
	for _, pos := range want {
		if !strings.Contains(stderr, filepath.Dir(path)+"/"+pos+":") {
			t.Errorf("stderr does not report %s:\n%s", pos, stderr)
		}
	}
	if _, _, malformed := scanSummary(t, stderr); malformed < len(want) {
		t.Errorf("%d malformed, want at least %d\n%s", malformed, len(want), stderr)
	}
}

// TestScanFramingsNotValidating: with --validate=false the findings are
// the same and nothing well-formed is reported; a line of several
// documents that cannot match may count as one.
func TestScanFramingsNotValidating(t *testing.T) {
	values, positives := textValues(8, 300)
	var lines, concatenated []byte
	for _, v := range values {
		lines = append(append(lines, v...), '\n')
		concatenated = append(concatenated, v...)
		if v[0] != '{' {
			concatenated = append(concatenated, '\n')
		}
	}
	for _, c := range []struct {
		name  string
		data  []byte
		exact bool // every document counted
	}{
		{"lines.json", lines, true},
		{"concatenated.json", concatenated, false},
		{"concatenated.json.gz", gzipBytes(t, concatenated), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, "", "scan", "--validate=false", writeFile(t, c.name, c.data))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := eventIDs(t, stdout); !slices.Equal(got, positives) {
				t.Errorf("%d findings, want the %d positives in order\ngot  %v\nwant %v", len(got), len(positives), got, positives)
			}
			docs, _, malformed := scanSummary(t, stderr)
			if malformed != 0 || docs > len(values) || c.exact && docs != len(values) {
				t.Errorf("%d documents, %d malformed: want %d (at most), none malformed\n%s", docs, malformed, len(values), stderr)
			}
		})
	}
}

// TestScanTruncatedGzip: a .gz cut short (a partial download) gives the
// findings of what could be read, then says where reading stopped and
// counts the file unreadable.
func TestScanTruncatedGzip(t *testing.T) {
	var lines []byte
	for i := range 2000 {
		lines = append(append(lines, sampleRecord(t, fmt.Sprintf("00000000-0000-4000-8000-%012d", i))...), '\n')
	}
	gz := gzipBytes(t, lines)
	path := writeFile(t, "cut.json.gz", gz[:len(gz)/2])
	code, stdout, stderr := runCmd(t, "", "scan", path)
	if code != 1 {
		t.Errorf("exit %d, want 1: the file could not be read to its end", code)
	}
	ids := eventIDs(t, stdout)
	if len(ids) < 100 || ids[0] != "00000000-0000-4000-8000-000000000000" {
		t.Errorf("%d findings from the first half of the file, want the records before the cut", len(ids))
	}
	if !regexp.MustCompile(`cut\.json\.gz: reading after byte \d+: gzip member 1: unexpected EOF`).MatchString(stderr) ||
		!strings.Contains(stderr, "(1 unreadable)") {
		t.Errorf("stderr does not say where reading stopped:\n%s", stderr)
	}
}

// TestScanDocumentPastLimit: a document past --max-record-bytes is
// reported with its position and skipped without being held, whatever its
// framing, and the documents after it are read.
func TestScanDocumentPastLimit(t *testing.T) {
	r1 := sampleRecord(t, "00000001-0000-4000-8000-000000000001")
	r2 := sampleRecord(t, "00000002-0000-4000-8000-000000000002")
	long := `{"Records":[` + strings.Repeat(sampleRecord(t, "ffffffff-0000-4000-8000-000000000000")+",", 3000) + r1 + `]}`
	var pretty bytes.Buffer
	json.Indent(&pretty, []byte(long), "", "  ")
	for _, c := range []struct{ name, doc string }{
		{"one line", long},
		{"pretty-printed", pretty.String()},
		{"not JSON", "garbage " + long},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, "long.json", []byte(r1+"\n"+c.doc+"\n"+r2+"\n"))
			code, stdout, stderr := runCmd(t, "", "scan", "--max-record-bytes", "100000", path)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := strings.Join(eventIDs(t, stdout), ","); got != "00000001-0000-4000-8000-000000000001,00000002-0000-4000-8000-000000000002" {
				t.Errorf("findings %s, want the records before and after", got)
			}
			if want := fmt.Sprintf("long.json:2 (byte %d): ", len(r1)+1); !strings.Contains(stderr, want) {
				t.Errorf("stderr does not report %q:\n%s", want, stderr)
			}
			if docs, _, malformed := scanSummary(t, stderr); docs != 3 || malformed != 1 {
				t.Errorf("%d documents, %d malformed: want 3, the long one\n%s", docs, malformed, stderr)
			}
		})
	}
}
