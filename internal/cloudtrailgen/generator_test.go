package cloudtrailgen

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// allShapes weighs every shape equally.
func allShapes() map[Shape]float64 {
	m := map[Shape]float64{}
	for s := ShapeRecord; s < numShapes; s++ {
		m[s] = 1
	}
	return m
}

func recordsEqual(a, b Record) bool {
	return bytes.Equal(a.Value, b.Value) && a.Shape == b.Shape && a.Malformed == b.Malformed &&
		a.Defect == b.Defect && slices.Equal(a.Events, b.Events)
}

func TestDeterminism(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"zero config", Config{}},
		{"default mix", Config{Seed: 7}},
		{"everything", Config{Seed: -3, QuarantineRate: 0.1, NearMissRate: 0.3, MalformedRate: 0.1, Shapes: allShapes()}},
		{"start time", Config{Seed: 7, Start: time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC), QuarantineRate: 0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c := New(tc.cfg), New(tc.cfg), New(tc.cfg)
			var buf []byte
			for i := range 3000 {
				ra, rb := a.Next(), b.Next()
				if !recordsEqual(ra, rb) {
					t.Fatalf("record %d differs between two generators with one config:\n%q\n%q", i, ra.Value, rb.Value)
				}
				// AppendNext draws the same sequence, into a reused buffer.
				rc := c.AppendNext(buf[:0])
				buf = rc.Value
				if !recordsEqual(ra, rc) {
					t.Fatalf("record %d: AppendNext differs from Next:\n%q\n%q", i, ra.Value, rc.Value)
				}
			}
			other := tc.cfg
			other.Seed++
			d, e := New(other), New(tc.cfg)
			same := 0
			for range 100 {
				if bytes.Equal(d.Next().Value, e.Next().Value) {
					same++
				}
			}
			if same > 5 { // empty malformed values may coincide
				t.Errorf("seeds %d and %d gave %d identical values of 100", tc.cfg.Seed, other.Seed, same)
			}
		})
	}
}

// TestAgainstNaiveOracle holds every record against the naive oracle: the
// shape it finds, the events and their order, which are positives, and
// what each near miss is near to. Malformed values must be invalid input.
func TestAgainstNaiveOracle(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		n    int
	}{
		{"default mix", Config{Seed: 1, QuarantineRate: 0.05, NearMissRate: 0.2, MalformedRate: 0.02}, 10000},
		{"all shapes", Config{Seed: 2, QuarantineRate: 0.1, NearMissRate: 0.4, MalformedRate: 0.05, Shapes: allShapes()}, 10000},
	}
	for s := ShapeRecord; s < numShapes; s++ {
		cases = append(cases, struct {
			name string
			cfg  Config
			n    int
		}{"only " + s.String(), Config{Seed: int64(10 + s), QuarantineRate: 0.2, NearMissRate: 0.4, Shapes: map[Shape]float64{s: 1}}, 3000})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := New(tc.cfg)
			kinds := map[Kind]int{}
			shapes := map[Shape]int{}
			for i := range tc.n {
				r := g.Next()
				shape, evs, err := naiveDecode(r.Value)
				if r.Malformed {
					if err == nil || validInput(r.Value) {
						t.Fatalf("record %d (%v) is valid input:\n%q", i, r.Defect, r.Value)
					}
					if len(r.Events) != 0 {
						t.Fatalf("record %d is malformed but has events %v", i, r.Events)
					}
					continue
				}
				shapes[r.Shape]++
				if err != nil {
					t.Fatalf("record %d (%v): %v\n%s", i, r.Shape, err, r.Value)
				}
				if shape != r.Shape {
					t.Fatalf("record %d: oracle finds shape %v, generator says %v\n%s", i, shape, r.Shape, r.Value)
				}
				if len(evs) != len(r.Events) {
					t.Fatalf("record %d: oracle finds %d events, generator says %d\n%s", i, len(evs), len(r.Events), r.Value)
				}
				var want []string
				for j, e := range r.Events {
					n := evs[j]
					kinds[e.Kind]++
					if n.ID != e.EventID || n.Name != e.EventName || n.Account != e.AccountID {
						t.Fatalf("record %d event %d: oracle %+v, generator %+v\n%s", i, j, n, e, r.Value)
					}
					if e.Kind != Noise && (n.UserName != e.UserName || n.PolicyARN != e.PolicyARN) {
						t.Fatalf("record %d event %d: oracle %+v, generator %+v\n%s", i, j, n, e, r.Value)
					}
					if n.Positive != e.Kind.Positive() {
						t.Fatalf("record %d event %d: kind %v, but the oracle says positive=%v\n%s", i, j, e.Kind, n.Positive, r.Value)
					}
					// A near miss is near: the marker is in the event exactly
					// when the kind puts it there.
					wantMarker := e.Kind != Noise && e.Kind != LegacyInlineQuarantine && e.Kind != OtherPolicyAttach && e.Kind != CaseMismatch
					if n.Marker != wantMarker {
						t.Fatalf("record %d event %d: kind %v, marker present=%v\n%s", i, j, e.Kind, n.Marker, r.Value)
					}
					if n.Positive {
						want = append(want, n.ID)
					}
				}
				if got := r.Positives(); !slices.Equal(got, want) {
					t.Fatalf("record %d: Positives() = %v, oracle %v\n%s", i, got, want, r.Value)
				}
			}
			for s, w := range tc.cfg.Shapes {
				if w > 0 && shapes[s] == 0 {
					t.Errorf("no record of shape %v", s)
				}
			}
			if tc.n >= 10000 {
				for k := Noise; k < numKinds; k++ {
					if kinds[k] == 0 {
						t.Errorf("no event of kind %v", k)
					}
				}
			}
		})
	}
}

// TestEscapedQuarantineBytes checks that an EscapedQuarantine is not
// findable by its plain bytes: the literal eventName or the literal marker
// is missing from the record, though the decoded values are there.
func TestEscapedQuarantineBytes(t *testing.T) {
	g := New(Config{Seed: 3, QuarantineRate: 1, Shapes: map[Shape]float64{ShapeRecord: 1}})
	seen := 0
	for seen < 200 {
		r := g.Next()
		if r.Events[0].Kind != EscapedQuarantine {
			continue
		}
		seen++
		plainName := bytes.Contains(r.Value, []byte(`"AttachUserPolicy"`))
		plainMarker := bytes.Contains(r.Value, []byte(Marker))
		if plainName && plainMarker {
			t.Fatalf("escaped positive has both the plain name and marker:\n%s", r.Value)
		}
	}
}

func TestShapeRates(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shapes map[Shape]float64
		n      int
	}{
		{"default", nil, 100000},
		{"all equal", allShapes(), 30000},
		{"two", map[Shape]float64{ShapeRecord: 3, ShapeECS: 1}, 30000},
		{"one", map[Shape]float64{ShapeAgentMessage: 0.5}, 10000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			g := New(Config{Seed: 4, Shapes: tc.shapes, MalformedRate: 0.01})
			counts := map[Shape]int{}
			wellFormed := 0
			var buf []byte
			for range n {
				r := g.AppendNext(buf[:0])
				buf = r.Value
				if !r.Malformed {
					counts[r.Shape]++
					wellFormed++
				}
			}
			weights := tc.shapes
			if weights == nil {
				weights = DefaultShapes()
			}
			sum := 0.0
			for _, w := range weights {
				sum += w
			}
			for s := ShapeUnknown; s < numShapes; s++ {
				p := weights[s] / sum
				got := float64(counts[s]) / float64(wellFormed)
				if tol := 5*math.Sqrt(p*(1-p)/float64(wellFormed)) + 1e-9; math.Abs(got-p) > tol {
					t.Errorf("shape %v: rate %.4f, want %.4f ± %.4f", s, got, p, tol)
				}
			}
		})
	}
}

func TestKindAndDefectRates(t *testing.T) {
	const q, nm, mal = 0.02, 0.14, 0.2
	g := New(Config{Seed: 5, QuarantineRate: q, NearMissRate: nm, MalformedRate: mal})
	kinds := map[Kind]int{}
	defects := map[Defect]int{}
	events, records := 0, 150000
	var buf []byte
	for range records {
		r := g.AppendNext(buf[:0])
		buf = r.Value
		if r.Malformed != (r.Defect != DefectNone) {
			t.Fatalf("Malformed %v with defect %v", r.Malformed, r.Defect)
		}
		defects[r.Defect]++
		for _, e := range r.Events {
			kinds[e.Kind]++
			events++
		}
	}
	check := func(what string, got int, total int, p float64) {
		t.Helper()
		rate := float64(got) / float64(total)
		if tol := 5 * math.Sqrt(p*(1-p)/float64(total)); math.Abs(rate-p) > tol {
			t.Errorf("%s: rate %.5f, want %.5f ± %.5f", what, rate, p, tol)
		}
	}
	check("positives", kinds[Quarantine]+kinds[EmptyErrorCode]+kinds[EscapedQuarantine], events, q)
	check("Quarantine", kinds[Quarantine], events, q*0.8)
	check("EmptyErrorCode", kinds[EmptyErrorCode], events, q*0.1)
	check("EscapedQuarantine", kinds[EscapedQuarantine], events, q*0.1)
	for k := FailedQuarantineAttach; k < numKinds; k++ {
		check(k.String(), kinds[k], events, nm/float64(numKinds-FailedQuarantineAttach))
	}
	check("malformed", records-defects[DefectNone], records, mal)
	for d := DefectTruncated; d < numDefects; d++ {
		check(d.String(), defects[d], records, mal/float64(numDefects-1))
	}
}

func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		name               string
		shapes             map[Shape]float64
		minMean, maxMean   float64
		minSize, maxSize   int
		checkMin, checkMax bool
	}{
		{"single records", map[Shape]float64{ShapeRecord: 1}, 1400, 1600, 512, 5000, true, true},
		{"default mix", nil, 1500, 1800, 0, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 100000
			g := New(Config{Seed: 6, Shapes: tc.shapes})
			sizes := make([]int, 0, n)
			total := 0
			var buf []byte
			for range n {
				r := g.AppendNext(buf[:0])
				buf = r.Value
				sizes = append(sizes, len(r.Value))
				total += len(r.Value)
			}
			sort.Ints(sizes)
			mean := float64(total) / n
			t.Logf("%s: mean %.0f B, min %d, p10 %d, p50 %d, p90 %d, p99 %d, max %d", tc.name, mean,
				sizes[0], sizes[n/10], sizes[n/2], sizes[n*9/10], sizes[n*99/100], sizes[n-1])
			if mean < tc.minMean || mean > tc.maxMean {
				t.Errorf("mean size %.0f B, want %.0f–%.0f", mean, tc.minMean, tc.maxMean)
			}
			if tc.checkMin && sizes[0] < tc.minSize {
				t.Errorf("smallest record %d B, want ≥ %d", sizes[0], tc.minSize)
			}
			if tc.checkMax && sizes[n-1] > tc.maxSize {
				t.Errorf("largest record %d B, want ≤ %d", sizes[n-1], tc.maxSize)
			}
		})
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestEventIDsAndTimes(t *testing.T) {
	g := New(Config{Seed: 8, QuarantineRate: 0.1, NearMissRate: 0.1})
	ids := map[string]bool{}
	for len(ids) < 200000 {
		r := g.Next()
		for _, e := range r.Events {
			if !uuidV4.MatchString(e.EventID) {
				t.Fatalf("eventID %q is not a version 4 UUID", e.EventID)
			}
			if ids[e.EventID] {
				t.Fatalf("eventID %q repeats", e.EventID)
			}
			ids[e.EventID] = true
		}
	}
	// Event times advance from Start and never go back.
	start := time.Date(2025, 12, 31, 23, 59, 58, 0, time.UTC)
	g = New(Config{Seed: 9, Start: start, Shapes: map[Shape]float64{ShapeRecord: 1}})
	prev := start
	for range 2000 {
		var rec struct{ EventTime time.Time }
		if err := json.Unmarshal(g.Next().Value, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.EventTime.Before(prev) {
			t.Fatalf("eventTime %v before %v", rec.EventTime, prev)
		}
		prev = rec.EventTime
	}
	if !prev.After(start.Add(5 * time.Second)) {
		t.Errorf("2000 events only reached %v from %v", prev, start)
	}
}

// TestMalformedDefects checks each defect for what makes it invalid.
func TestMalformedDefects(t *testing.T) {
	g := New(Config{Seed: 11, MalformedRate: 1})
	seen := map[Defect]bool{}
	for len(seen) < int(numDefects-1) {
		r := g.Next()
		seen[r.Defect] = true
		v := r.Value
		var ok bool
		switch r.Defect {
		case DefectTruncated:
			ok = len(v) > 0 && !json.Valid(v)
		case DefectInvalidUTF8:
			ok = !utf8.Valid(v)
		case DefectNUL:
			ok = bytes.IndexByte(v, 0) >= 0 && !json.Valid(v)
		case DefectBadGzip:
			_, err := gunzip(v)
			ok = bytes.HasPrefix(v, []byte{0x1f, 0x8b}) && err != nil
		case DefectNotJSON:
			ok = len(v) > 0 && !json.Valid(v)
		case DefectEmpty:
			ok = len(v) == 0
		case DefectTooDeep:
			ok = bytes.Count(v, []byte("[")) >= deepNesting && !json.Valid(v)
		}
		if !ok || validInput(v) {
			t.Fatalf("defect %v not as described: %.200q", r.Defect, v)
		}
	}
}

func TestAppendTime(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	secs := []int64{0, -1, 86399, 86400, 951782400 /* 2000-02-29 */, 4107542400 /* 2100-03-01 */, -2208988800}
	for range 100000 {
		secs = append(secs, r.Int64N(10_000_000_000)-2_000_000_000)
	}
	for _, s := range secs {
		want := time.Unix(s, 0).UTC().Format(time.RFC3339)
		if got := string(appendTime(nil, s)); got != want {
			t.Fatalf("appendTime(%d) = %s, want %s", s, got, want)
		}
	}
	if got, want := string(appendTimeMillis(nil, -1)), "1969-12-31T23:59:59.999Z"; got != want {
		t.Errorf("appendTimeMillis(-1) = %s, want %s", got, want)
	}
}

func TestAppendFlattened(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		rot      int
		want     string
	}{
		{"policy attach", `{"userName":"alice","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"}`, 0,
			"{userName=alice, policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}"},
		{"rotated", `{"userName":"alice","policyArn":"x"}`, 1, "{policyArn=x, userName=alice}"},
		{"nested", `{"a":{"b":[1,true,null,"c"]},"d":{}}`, 0, "{a={b=[1, true, null, c]}, d={}}"},
		{"escapes", `{"p":"{\"V\":\"1\"}","q":"\u0041\/\u00e9\ud83d\ude00"}`, 0, `{p={"V":"1"}, q=A/é😀}`},
		{"spaced", `{ "a" : "b" , "c" : [ 1 , 2 ] }`, 0, "{a=b, c=[1, 2]}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(appendFlattened(nil, []byte(tc.in), tc.rot)); got != tc.want {
				t.Errorf("appendFlattened(%s) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestAppendJSONString(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	inputs := []string{"", `plain`, `a"b\c`, "tab\there\nnl\r\x00\x1f", "é😀", `{"k":"v\"w"}`}
	for range 2000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(128))
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		out := appendJSONString([]byte(`"`), []byte(in))
		out = append(out, '"')
		var back string
		if err := json.Unmarshal(out, &back); err != nil || back != in {
			t.Fatalf("%q escaped to %s, which decodes to %q (%v)", in, out, back, err)
		}
	}
}

// TestReformat checks that spaced and indented records are the same JSON.
func TestReformat(t *testing.T) {
	g := New(Config{Seed: 12, QuarantineRate: 0.3, NearMissRate: 0.3, Shapes: allShapes()})
	for range 500 {
		st := g.plan(g.drawKind(), maxSingle)
		src := g.appendCloudTrail(nil, st)
		for _, out := range [][]byte{appendSpaced(nil, src), appendIndented(nil, src, "  "), appendIndented(nil, src, "\t")} {
			var c bytes.Buffer
			if err := json.Compact(&c, out); err != nil || !bytes.Equal(c.Bytes(), src) {
				t.Fatalf("reformatted record is not the same JSON (%v):\n%s\n%s", err, src, out)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"rates", Config{QuarantineRate: 0.5, NearMissRate: 0.5, MalformedRate: 1}, true},
		{"negative rate", Config{QuarantineRate: -0.1}, false},
		{"NaN rate", Config{NearMissRate: math.NaN()}, false},
		{"rate above one", Config{MalformedRate: 1.5}, false},
		{"rates sum above one", Config{QuarantineRate: 0.6, NearMissRate: 0.6}, false},
		{"unknown shape", Config{Shapes: map[Shape]float64{ShapeUnknown: 1}}, false},
		{"shape out of range", Config{Shapes: map[Shape]float64{numShapes: 1}}, false},
		{"negative weight", Config{Shapes: map[Shape]float64{ShapeRecord: 1, ShapeECS: -1}}, false},
		{"no weight", Config{Shapes: map[Shape]float64{ShapeRecord: 0}}, false},
		{"infinite weight", Config{Shapes: map[Shape]float64{ShapeRecord: math.Inf(1)}}, false},
		{"dense", Config{Dense: true, NearMissRate: 0.5, MalformedRate: 0.1}, true},
		{"dense with positives", Config{Dense: true, QuarantineRate: 0.1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			defer func() {
				if p := recover(); (p == nil) != tc.ok {
					t.Errorf("New panicked with %v, want ok=%v", p, tc.ok)
				}
			}()
			New(tc.cfg)
		})
	}
}

// TestDense holds a dense stream against the naive oracle: every
// well-formed value holds exactly one positive, whatever its shape, and
// every malformed one shows it in its own bytes to a matcher that validates
// only what may hold the marker: it fails the framing check (no object from
// the first to the last non-space byte), is gzip that does not inflate, or
// holds the marker literally. The check is written from the matcher's
// documented behaviour, not from its code.
func TestDense(t *testing.T) {
	g := New(Config{Seed: 5, Dense: true, NearMissRate: 0.3, MalformedRate: 0.2, Shapes: allShapes()})
	shapes := map[Shape]int{}
	defects := map[Defect]int{}
	kinds := map[Kind]int{}
	for i := range 20000 {
		r := g.Next()
		_, evs, err := naiveDecode(r.Value)
		if r.Malformed {
			defects[r.Defect]++
			if err == nil || validInput(r.Value) || len(r.Events) != 0 {
				t.Fatalf("record %d (%v) is valid input or has events:\n%q", i, r.Defect, r.Value)
			}
			v := bytes.TrimSpace(r.Value)
			framed := len(v) > 0 && v[0] == '{' && v[len(v)-1] == '}'
			gz := bytes.HasPrefix(r.Value, []byte{0x1f, 0x8b})
			if framed && !gz && !bytes.Contains(v, []byte("AWSCompromisedKeyQuarantine")) {
				t.Fatalf("record %d (%v) passes the framing check without the marker: a matcher on its defaults would say nothing\n%q", i, r.Defect, r.Value)
			}
			continue
		}
		shapes[r.Shape]++
		if err != nil {
			t.Fatalf("record %d (%v): %v\n%s", i, r.Shape, err, r.Value)
		}
		positives := 0
		for j, e := range evs {
			if e.Positive {
				positives++
			}
			if e.Positive != r.Events[j].Kind.Positive() {
				t.Fatalf("record %d event %d: the oracle says positive=%v, the generator %v", i, j, e.Positive, r.Events[j].Kind)
			}
			kinds[r.Events[j].Kind]++
		}
		if positives != 1 || len(r.Positives()) != 1 {
			t.Fatalf("record %d (%v): %d positives by the oracle, %d by the generator, want 1\n%s", i, r.Shape, positives, len(r.Positives()), r.Value)
		}
	}
	for s := ShapeRecord; s < numShapes; s++ {
		if shapes[s] == 0 {
			t.Errorf("no dense record of shape %v", s)
		}
	}
	for d := DefectTruncated; d < numDefects; d++ {
		if defects[d] == 0 {
			t.Errorf("no dense record with defect %v", d)
		}
	}
	for _, k := range []Kind{Quarantine, EmptyErrorCode, EscapedQuarantine, FailedQuarantineAttach, Noise} {
		if kinds[k] == 0 {
			t.Errorf("no event of kind %v", k)
		}
	}
}

// TestAppendNextAllocs proves the zero-garbage path: with a reused buffer,
// a record costs no allocation (eventIDs come in chunks of 256).
func TestAppendNextAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations over many records")
	}
	g := New(Config{Seed: 13, QuarantineRate: 0.01, NearMissRate: 0.01, MalformedRate: 0.001, Shapes: allShapes()})
	buf := make([]byte, 0, 64<<10)
	for range 2000 { // warm up the generator's buffers
		buf = g.AppendNext(buf[:0]).Value
	}
	const n = 20000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		buf = g.AppendNext(buf[:0]).Value
	}
	runtime.ReadMemStats(&after)
	if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.05 {
		t.Errorf("%.3f allocations per record, want < 0.05", per)
	}
}

// TestSamples checks the oracle itself on the real records in
// shared/samples: it must agree with what they are.
func TestSamples(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "samples")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no samples: %v", err)
	}
	for _, tc := range []struct {
		file     string
		shape    Shape
		positive []bool
		err      bool
	}{
		{"01_attach_user_policy_assumedrole_elastic_integrations.json", ShapeRecord, []bool{false}, false},
		{"02_attach_user_policy_quarantine_v2_panther.json", ShapeRecord, []bool{true}, false},
		{"03_attach_role_policy_iamuser_elastic_integrations.json", ShapeRecord, []bool{false}, false},
		{"04_assume_role_awsservice_elastic_integrations.json", ShapeRecord, []bool{false}, false},
		{"05_s3_object_Records_iam_addusertogroup_awsdocs.json", ShapeS3Object, []bool{false}, false},
		{"06_s3_object_Records_error_updatetrail_awsdocs.json", ShapeS3Object, []bool{false}, false},
		{"07_eventbridge_envelope_root_createbucket_awsdocs.json", ShapeEventBridge, []bool{false}, false},
		{"08_ecs_normalised_attach_user_policy_elastic_integrations_expected.json", ShapeECS, []bool{false}, false},
		// The source truncated the message, so it is not a record.
		{"09_cloudwatch_logs_subscription_decoded_cloudtrail_powertools_docs.json", ShapeCloudWatchLogs, nil, true},
		{"10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json", ShapeRecord, []bool{false}, false},
	} {
		t.Run(tc.file[:2], func(t *testing.T) {
			v, err := os.ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			shape, evs, err := naiveDecode(v)
			if shape != tc.shape || (err != nil) != tc.err {
				t.Fatalf("naiveDecode = %v, %v, want %v, error %v", shape, err, tc.shape, tc.err)
			}
			var got []bool
			for _, e := range evs {
				got = append(got, e.Positive)
			}
			if !slices.Equal(got, tc.positive) {
				t.Errorf("positives %v, want %v", got, tc.positive)
			}
		})
	}
}

// TestExposedUsersOnlyQuarantined: the users generated quarantines name
// appear in no other generated event, so a watch they open finds none of
// the generated traffic (see exposedUserNames). The names are those the
// quarantines' ground truth gives; records holding a quarantine are left
// out whole, and compressed values are not searched (drawn the same way).
func TestExposedUsersOnlyQuarantined(t *testing.T) {
	quarantines := map[Kind]bool{Quarantine: true, EmptyErrorCode: true, EscapedQuarantine: true, FailedQuarantineAttach: true, LegacyInlineQuarantine: true}
	g := New(Config{Seed: 7, QuarantineRate: 0.01, NearMissRate: 0.05})
	var others []string // values of records without a quarantine, lowercased
	exposed := map[string]bool{}
	for range 30000 {
		r := g.Next()
		holds := false
		for _, e := range r.Events {
			if quarantines[e.Kind] {
				holds = true
				exposed[strings.ToLower(e.UserName)] = true
			}
		}
		if !holds && r.Shape != ShapeCloudWatchGzip && r.Shape != ShapeCloudWatchBase64 && r.Shape != ShapeCloudWatchAWSLogs {
			others = append(others, strings.ToLower(string(r.Value)))
		}
	}
	if len(exposed) < 5 {
		t.Fatalf("only %d quarantined users in 30,000 records at rate 0.01: the test checked too little", len(exposed))
	}
	for name := range exposed {
		for _, v := range others {
			if strings.Contains(v, `"`+name+`"`) || strings.Contains(v, "/"+name+`"`) {
				t.Fatalf("a record without a quarantine names the quarantined user %s: %.300s", name, v)
			}
		}
	}
}
