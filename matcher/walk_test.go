package matcher

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

// FuzzWalk holds the one-pass walker to the reference's literal reading of
// Elastic's pipeline on every valid JSON text: prune, then flatten into
// Java's toString text; the walker must say whether anything is left, which
// markers that text contains, and its length.
func FuzzWalk(f *testing.F) {
	for _, s := range []string{
		`{"a":{"b":null},"ab":"x","c":[1,"",{}],"d":"Zq"}`, `{"k":"v","k":null}`, `{"ab":0}`, `[null,"",[]]`,
		`{"x":1e400,"y":-0,"z":1.0E3}`, `"\u0061b"`, `{"a\u0062":true}`, `{"😀":"é"}`,
		`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"ab":1,"k1":null}`,
	} {
		f.Add([]byte(s))
	}
	markers := [][]byte{[]byte("ab"), []byte("Zq"), []byte("1.0E"), []byte("Infinity")}
	var x indexer
	var w walker
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, errAt := x.index(b); errAt >= 0 {
			return
		}
		v, ok := refParse(b, limits{depth: jsonMaxDepth, members: 1 << 30, elements: 1 << 30})
		if !ok {
			return // invalid UTF-8
		}
		got := w.walk(b, markers, true)
		pruned, left := refPrune(v)
		if got.nonEmpty != left {
			t.Fatalf("%q: walker says left %v, reference %v", b, got.nonEmpty, left)
		}
		if !left {
			return
		}
		flat := refFlatten(pruned)
		var want uint32
		for i, m := range markers {
			if strings.Contains(flat, string(m)) {
				want |= 1 << i
			}
		}
		if got.found != want {
			t.Fatalf("%q: walker found %b, reference %b in %q", b, got.found, want, flat)
		}
		if n := len(utf16.Encode([]rune(flat))); got.n != n {
			t.Fatalf("%q: walker length %d, reference %d (%q)", b, got.n, n, flat)
		}
	})
}

// TestShapeKeys: the one pass dispatch reads the shape keys from agrees
// with encoding/json on which of them a document has, on every delivery
// shape of the generator and on keys written with escapes, twice, or in
// an array.
func TestShapeKeys(t *testing.T) {
	docs := [][]byte{
		[]byte(`{"Rec\u006frds":[],"x":1}`),
		[]byte(`{"detail":{},"detail-type":"AWS API Call via CloudTrail","detail":1}`),
		[]byte(`{"message":"{}","eventName\t":"x"}`),
		[]byte(`{}`),
		[]byte(`[{"Records":[]}]`),
	}
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 7, Shapes: cloudtrailgen.DefaultShapes()})
	for len(docs) < 500 {
		if v := gen.Next().Value; json.Valid(v) { // not the compressed shapes
			docs = append(docs, v)
		}
	}
	names := map[string]int{"Records": keyRecords, "awslogs": keyAWSLogs, "logEvents": keyLogEvents, "detail": keyDetail,
		"detail-type": keyDetailType, "eventName": keyEventName, "message": keyMessage}
	for _, doc := range docs {
		var x indexer
		members, _, errAt := x.index(doc)
		if errAt >= 0 {
			t.Fatalf("%.80s: not valid JSON at %d", doc, errAt)
		}
		want := 0
		var top map[string]json.RawMessage
		if json.Unmarshal(doc, &top) == nil {
			for name, bit := range names {
				if _, ok := top[name]; ok {
					want |= bit
				}
			}
		}
		if got := (fields{b: doc, members: members}).shapeKeys(); got != want {
			t.Errorf("%.120s: shapeKeys %07b, encoding/json %07b", doc, got, want)
		}
	}
}

// TestECSCacheForgetsTheLastValue: the Scanner's ECS object cache holds
// pointers into the text it was built from; the next value clears it, so
// that a long-lived Scanner does not keep the last ECS document's buffer
// (a whole fetched batch) alive.
func TestECSCacheForgetsTheLastValue(t *testing.T) {
	m, err := New(Config{Validate: true})
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewScanner()
	s.Match([]byte(`{"event":{"action":"ListBuckets","outcome":"success","dataset":"aws.cloudtrail"},"aws":{"cloudtrail":{"request_parameters":"{}"}}}`), nil)
	if len(s.arena.ecsSeen) == 0 {
		t.Fatal("an ECS document left nothing in the cache: the test shows nothing")
	}
	s.Match([]byte(`{"eventName":"ListBuckets"}`), nil)
	if n := len(s.arena.ecsSeen); n != 0 {
		t.Errorf("the next value left %d entries of the last ECS document in the cache", n)
	}
}
