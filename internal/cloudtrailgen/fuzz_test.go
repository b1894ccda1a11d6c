package cloudtrailgen

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// addSeeds seeds a fuzz target with the shared samples and a few records.
func addSeeds(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "..", "shared", "samples", "*.json"))
	for _, name := range files {
		if v, err := os.ReadFile(name); err == nil {
			f.Add(v)
		}
	}
	g := New(Config{Seed: 1, QuarantineRate: 0.3, NearMissRate: 0.3, Shapes: map[Shape]float64{ShapeRecord: 1, ShapeECS: 1}})
	for range 10 {
		f.Add(g.Next().Value)
	}
}

// FuzzAppendJSONString checks that escaping round-trips through encoding/json.
func FuzzAppendJSONString(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, s []byte) {
		if !utf8.Valid(s) {
			t.Skip("encoding/json replaces invalid UTF-8")
		}
		out := append(appendJSONString([]byte(`"`), s), '"')
		var back string
		if err := json.Unmarshal(out, &back); err != nil || back != string(s) {
			t.Fatalf("%q escaped to %s, which decodes to %q (%v)", s, out, back, err)
		}
	})
}

// FuzzReformat checks that the spaced and indented forms of any compact
// JSON are the same JSON, and that flattening it does not fail.
func FuzzReformat(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, v []byte) {
		var c bytes.Buffer
		if err := json.Compact(&c, v); err != nil {
			t.Skip("not JSON")
		}
		src := c.Bytes()
		for _, out := range [][]byte{appendSpaced(nil, src), appendIndented(nil, src, "  ")} {
			var back bytes.Buffer
			if err := json.Compact(&back, out); err != nil || !bytes.Equal(back.Bytes(), src) {
				t.Fatalf("reformatted %s to %s (%v)", src, out, err)
			}
		}
		appendFlattened(nil, src, 1)
	})
}
