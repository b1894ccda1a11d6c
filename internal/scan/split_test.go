package scan

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

var samples = filepath.Join("..", "..", "..", "shared", "samples")

// decoderEnd is what encoding/json's Decoder, which scan used to split
// documents with, makes of b: where the first value ends, or that it is
// invalid or cut short.
func decoderEnd(b []byte) (int, status) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw json.RawMessage
	switch err := dec.Decode(&raw); {
	case err == nil:
		return int(dec.InputOffset()), valueOK
	case errors.Is(err, io.ErrUnexpectedEOF):
		return 0, valueShort
	}
	return 0, valueInvalid
}

var statusNames = [...]string{"ok", "invalid", "short"}

func checkValueEnd(t *testing.T, sp *splitter, b []byte) {
	t.Helper()
	n, st := sp.valueEnd(b)
	wn, wst := decoderEnd(b)
	if st != wst || st == valueOK && n != wn {
		t.Fatalf("valueEnd(%.300q) = %d %s, encoding/json: %d %s", b, n, statusNames[st], wn, statusNames[wst])
	}
}

func seedValues(t testing.TB) [][]byte {
	var seeds [][]byte
	files, _ := filepath.Glob(filepath.Join(samples, "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	shapes := cloudtrailgen.DefaultShapes()
	delete(shapes, cloudtrailgen.ShapeCloudWatchGzip)
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 3, QuarantineRate: 0.2, NearMissRate: 0.2, MalformedRate: 0.2, Shapes: shapes})
	for range 200 {
		seeds = append(seeds, gen.Next().Value)
	}
	for _, s := range []string{
		`{}`, `[]`, `{ }`, `[ ]`, `{"a":1}`, `[1,2,3]`, `{"a":[1,{"b":null}],"c":true,"d":false}`,
		`{"a":-0.5e+10}`, `[0]`, `[01]`, `[1.]`, `[1e]`, `[-]`, `[.5]`, `[1.5E-3]`, `[tru]`, `[nul`, `[falsey]`,
		`{"a" 1}`, `{"a":1,}`, `[1,]`, `{,}`, `{"a":1}}`, `[}`, `{]`, `{"\u00e9\n\"\\\/\b\f\r\t":1}`,
		`{"\u00g0":1}`, `{"\x":1}`, "{\"a\x01\":1}", "{\"a\x7f\xff\":1}", `{"a":"\u12`, `{"a`, `{"a":`, `{"a":1`,
		"{\"a\":1}{\"b\":2}", "{\"a\":1}\n{\"b\":2}", "{\n  \"a\": [\n    1\n  ]\n}\ngarbage",
		strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth),
		strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
		`{"a":"` + strings.Repeat("x", 100) + `\"` + strings.Repeat("y", 7) + `"}`,
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// TestValueEnd holds valueEnd to encoding/json's Decoder on real and
// generated documents, every prefix of each (cut short), and hand-written
// edge cases.
func TestValueEnd(t *testing.T) {
	var sp splitter
	for k, b := range seedValues(t) {
		b = bytes.TrimLeft(b, " \t\r\n")
		if len(b) == 0 || b[0] != '{' && b[0] != '[' {
			continue
		}
		checkValueEnd(t, &sp, b)
		// Every prefix of the short ones, a sample of the others'.
		step := 1
		if len(b) > 600 || k%3 != 0 {
			step = 37 + k%60
		}
		for i := 1; i < len(b) && i < 5000; i += step {
			checkValueEnd(t, &sp, b[:i])
		}
	}
}

func FuzzValueEnd(f *testing.F) {
	for _, b := range seedValues(f) {
		f.Add(b)
	}
	var sp splitter
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || b[0] != '{' && b[0] != '[' {
			b = append([]byte{'{'}, b...)
		}
		checkValueEnd(t, &sp, b)
	})
}

func TestDocEnd(t *testing.T) {
	for _, c := range []struct {
		name     string
		b        string
		boundary int
		final    bool
		end      int
		ok       bool
	}{
		{"object", `{"a":1} {"b":2}`, -1, false, 7, true},
		{"pretty", "{\n \"a\": 1\n}\n", -1, false, 11, true},
		{"value cut short", `{"a":`, -1, false, 0, false},
		{"value cut short at the end", "{\"a\":", -1, true, 5, true},
		{"invalid value: its line", "{\"a\" 1}\n{}", -1, false, 7, true},
		{"invalid value: its line, cut short", "{\"a\" 1}", -1, false, 0, false},
		{"invalid value: its line to the end", "{\"a\" 1}", -1, true, 7, true},
		{"invalid value: to the member's end", "{\"a\":\"x{}\n", 5, false, 5, true},
		{"valid value across a member's end", `{"a":1}`, 3, false, 7, true},
		{"not JSON", "H4sIAAAA\nx", -1, false, 8, true},
		{"not JSON, cut short", "H4sIAAAA", -1, false, 0, false},
		{"not JSON, CRLF", "garbage\r\nx", -1, false, 8, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var sp splitter
			end, ok := sp.docEnd([]byte(c.b), 0, c.boundary, c.final)
			if end != c.end || ok != c.ok {
				t.Errorf("docEnd(%q, %d, %v) = %d %v, want %d %v", c.b, c.boundary, c.final, end, ok, c.end, c.ok)
			}
		})
	}
}

// BenchmarkValueEnd: the splitter beside one bytes.IndexByte pass (the
// search for a newline) over the same records.
func BenchmarkValueEnd(b *testing.B) {
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 1, Shapes: map[cloudtrailgen.Shape]float64{cloudtrailgen.ShapeRecord: 1}})
	var values [][]byte
	var size int64
	for range 4096 {
		v := gen.Next().Value
		var c bytes.Buffer
		json.Compact(&c, v)
		values = append(values, c.Bytes())
		size += int64(c.Len())
	}
	b.Run("valueEnd", func(b *testing.B) {
		b.SetBytes(size)
		var sp splitter
		for b.Loop() {
			for _, v := range values {
				if n, st := sp.valueEnd(v); st != valueOK || n != len(v) {
					b.Fatal(n, st)
				}
			}
		}
	})
	b.Run("IndexByte", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			for _, v := range values {
				if bytes.IndexByte(v, '\n') >= 0 {
					b.Fatal("newline")
				}
			}
		}
	})
}
