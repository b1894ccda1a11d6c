package scan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
)

// span is a document as offsets in the content.
type span struct{ start, end int }

// oldDocuments is how scan cut documents before it read files as streams
// (internal/scan/scan.go at 0582cbb, values): encoding/json's Decoder
// decides where a document starting with '{' or '[' ends, anything else is
// a line. It is the oracle of the framer on content without gzip members.
func oldDocuments(data []byte) []span {
	var docs []span
	for off := 0; off < len(data); {
		rest := data[off:]
		skip := len(rest) - len(bytes.TrimLeft(rest, " \t\r\n"))
		off += skip
		rest = rest[skip:]
		if len(rest) == 0 {
			break
		}
		var n int
		if rest[0] == '{' || rest[0] == '[' {
			dec := json.NewDecoder(bytes.NewReader(rest))
			var raw json.RawMessage
			if err := dec.Decode(&raw); err == nil {
				n = int(dec.InputOffset())
			}
		}
		if n == 0 {
			n = bytes.IndexByte(rest, '\n')
			if n < 0 {
				n = len(rest)
			}
		}
		// A line's trailing whitespace (CR) is no part of the document,
		// whose text the matcher trims.
		docs = append(docs, span{off, off + len(bytes.TrimRight(rest[:n], " \t\r\n"))})
		off += n
	}
	return docs
}

// frameAll runs the framer over data cut into chunks at cuts (sorted), with
// gzip member ends at ends, and returns its documents as offsets.
func frameAll(t *testing.T, data []byte, cuts, ends []int, limit int) (docs []span, lines []bool, tooLarge []bool) {
	t.Helper()
	f := &framer{limit: limit, pool: make(bufPool, 1), line: 1}
	prev := 0
	cuts = append(cuts, len(data))
	for i, c := range cuts {
		// Room in front of the data as the reader leaves, or less, so
		// that a long carry is appended to instead.
		front := []int{0, 16, 4096}[i%3]
		if c-prev > 10000 && i%2 == 0 {
			front = reserve
		}
		ch := &chunk{buf: make([]byte, front+c-prev), start: front, end: front + c - prev}
		copy(ch.buf[front:], data[prev:c])
		for _, e := range ends {
			if e > prev && e <= c {
				ch.ends = append(ch.ends, front+e-prev)
			}
		}
		if i == len(cuts)-1 {
			ch.err = io.EOF
		}
		line := f.line
		if b := f.frame(ch); b != nil {
			if b.line != line {
				t.Fatalf("batch line %d, framer was at %d", b.line, line)
			}
			if want := int64(1 + bytes.Count(data[:b.off], []byte{'\n'})); b.line != want {
				t.Fatalf("batch at %d says line %d, it is %d", b.off, b.line, want)
			}
			for _, d := range b.docs {
				docs = append(docs, span{int(b.off) + d.start, int(b.off) + d.end})
				lines = append(lines, d.line)
				tooLarge = append(tooLarge, d.tooLarge)
				if !d.tooLarge && !bytes.Equal(b.region[d.start:d.end], data[int(b.off)+d.start:int(b.off)+d.end]) {
					t.Fatalf("document at %d is not the content's bytes", int(b.off)+d.start)
				}
			}
		}
		prev = c
	}
	return docs, lines, tooLarge
}

// checkAgainstOld compares the framer's documents with the old cut: a
// document that is not a line taken whole is the old one; a line taken
// whole is the old documents it holds, which resplit cuts again.
func checkAgainstOld(t *testing.T, data []byte, want, docs []span, lines []bool) {
	t.Helper()
	var sp splitter
	j := 0
	for i, d := range docs {
		d.end = d.start + len(bytes.TrimRight(data[d.start:d.end], " \t\r\n"))
		if j == len(want) {
			t.Fatalf("document %d %q: the old cut has no more", i, data[d.start:d.end])
		}
		if !lines[i] {
			if d != want[j] {
				t.Fatalf("document %d is %v %.200q, the old cut has %v %.200q", i, d, data[d.start:d.end], want[j], data[want[j].start:want[j].end])
			}
			j++
			continue
		}
		// resplit's cut of the line.
		line := data[d.start:d.end]
		var got []span
		if n, st := sp.valueEnd(line); st != valueOK || n == len(line) {
			got = []span{d}
		} else {
			for pos := 0; ; {
				start := skipSpace(line, pos)
				if start == len(line) {
					break
				}
				end, _ := sp.docEnd(line, start, -1, true)
				trimmed := start + len(bytes.TrimRight(line[start:end], " \t\r\n"))
				got = append(got, span{d.start + start, d.start + trimmed})
				pos = end
			}
		}
		for _, g := range got {
			if j == len(want) || g != want[j] {
				t.Fatalf("line %v %.200q cuts to %v, the old cut has %v", d, line, got, want[j:min(j+len(got), len(want))])
			}
			j++
		}
	}
	if j != len(want) {
		t.Fatalf("%d documents, the old cut has %d more: %v", len(docs), len(want)-j, want[j:])
	}
}

// contents are files the framer must cut as scan always has: generated
// documents of every text shape, some pretty-printed, one per line, run
// together, with garbage, truncations, CRLF, empty lines, and the cases
// the line rule must not take whole.
func contents(t *testing.T) map[string][]byte {
	shapes := cloudtrailgen.DefaultShapes()
	delete(shapes, cloudtrailgen.ShapeCloudWatchGzip)
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 5, QuarantineRate: 0.1, NearMissRate: 0.1, MalformedRate: 0.15, Shapes: shapes})
	rng := rand.New(rand.NewPCG(5, 5))
	seps := []string{"\n", "\n", "\n", "", " ", "\r\n", "\n\n", "\t"}
	var mixed []byte
	for range 300 {
		r := gen.Next()
		mixed = append(mixed, r.Value...)
		mixed = append(mixed, seps[rng.IntN(len(seps))]...)
	}
	c := map[string][]byte{
		"mixed": mixed,
		"hand": []byte(strings.Join([]string{
			`{"a":1}`,
			`{"a":{"b":1}`, `}`, // a line that looks whole, continued
			`{"Records":[{"x":1}`, `,{"y":2}]}`,
			`{"a":1}{"b":2} {"c":3}`, // several on a line
			`{"a":1} junk }`,
			`{"a" 1}`,
			`  {"a":[1,`, `2]}  `,
			`[{"a":1}]`, `[{"a":1}`, `]`,
			`{}`, `{"a":"}"}`, `{"a":"\"}"}`,
			`{"a":1} {"b":{"c":1}`, `}`,
			`H4sIAAAAAAAA/wMAAAAAAAAAAAA=`,
			`{"a":`, `"x"}`,
			"{\n  \"a\": [\n    {}\n  ]\n}",
			`{"unterminated`,
			`{"a":1}`,
		}, "\n")),
	}
	return c
}

// TestFramerCutsAsBefore: on content without gzip members, the framer cuts
// the documents encoding/json's Decoder did, however the content is cut
// into chunks, with the one difference the line rule makes: a line of
// several documents is one until the matcher finds fault with it, and
// resplit then cuts it as before.
func TestFramerCutsAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for name, data := range contents(t) {
		t.Run(name, func(t *testing.T) {
			want := oldDocuments(data)
			for trial := range 30 {
				var cuts []int
				switch {
				case trial == 0: // one chunk
				case trial < 10: // every few bytes (a few hundred in long content)
					step := 1 + rng.IntN(64)
					if len(data) > 100000 {
						step = 200 + rng.IntN(600)
					}
					for c := step; c < len(data); c += step {
						cuts = append(cuts, c)
					}
				default:
					for c := rng.IntN(5000); c < len(data); c += 1 + rng.IntN(20000) {
						cuts = append(cuts, c)
					}
				}
				docs, lines, _ := frameAll(t, data, cuts, nil, 64<<20)
				checkAgainstOld(t, data, want, docs, lines)
			}
		})
	}
}

// TestFramerMemberEnds: a gzip member's end ends a document that is not
// valid JSON, and a valid one runs on (members cut anywhere, as bgzip
// writes them).
func TestFramerMemberEnds(t *testing.T) {
	a, cut, b := `{"messageType":"DATA_MESSAGE","logEvents":[]}`, `{"messageType":"DATA_MESSAGE","owner":"1234`, `{"messageType":"CONTROL_MESSAGE"}`
	data := []byte(a + cut + b + a)
	ends := []int{len(a), len(a + cut), len(a + cut + b), len(data)}
	for _, cuts := range [][]int{nil, {10}, {len(a)}, {len(a) + 5}, {len(a + cut)}, {len(a+cut+b) - 1}} {
		docs, _, _ := frameAll(t, data, cuts, ends, 64<<20)
		want := []span{{0, len(a)}, {len(a), len(a + cut)}, {len(a + cut), len(a + cut + b)}, {len(a + cut + b), len(data)}}
		if fmt.Sprint(docs) != fmt.Sprint(want) {
			t.Errorf("chunks cut at %v: documents %v, want %v", cuts, docs, want)
		}
	}
	// One document per line, members cut anywhere: the documents are the
	// lines.
	values, _ := textValues(9, 100)
	var lines []byte
	var want []span
	for _, v := range values {
		var c bytes.Buffer
		if json.Compact(&c, v) != nil {
			c.Reset()
			c.Write(v) // base64 text
		}
		want = append(want, span{len(lines), len(lines) + c.Len()})
		lines = append(append(lines, c.Bytes()...), '\n')
	}
	rng := rand.New(rand.NewPCG(2, 2))
	for range 20 {
		var ends, cuts []int
		for e := rng.IntN(3000); e < len(lines); e += 1 + rng.IntN(3000) {
			ends = append(ends, e)
		}
		for c := rng.IntN(9000); c < len(lines); c += 1 + rng.IntN(9000) {
			cuts = append(cuts, c)
		}
		if docs, _, _ := frameAll(t, lines, cuts, append(ends, len(lines)), 64<<20); fmt.Sprint(docs) != fmt.Sprint(want) {
			t.Fatalf("members ending at %v: %d documents, want %d", ends, len(docs), len(want))
		}
	}
}

// textValues generates n well-formed values of every text shape.
func textValues(seed int64, n int) ([][]byte, []string) {
	shapes := cloudtrailgen.DefaultShapes()
	delete(shapes, cloudtrailgen.ShapeCloudWatchGzip)
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: seed, QuarantineRate: 0.05, NearMissRate: 0.05, Shapes: shapes})
	var values [][]byte
	var positives []string
	for len(values) < n {
		r := gen.Next()
		values = append(values, r.Value)
		positives = append(positives, r.Positives()...)
	}
	return values, positives
}

// TestFramerSkipsTooLarge: a document longer than the limit that does not
// end in the region is reported and skipped to its end without being held,
// and the documents after it are cut as usual.
func TestFramerSkipsTooLarge(t *testing.T) {
	big := `{"a":"` + strings.Repeat("x", 3000) + `","b":{"c":"}"}}`
	pretty := "{\n  \"a\": \"" + strings.Repeat("y", 3000) + "\",\n  \"b\": [1, {}]\n}"
	text := "not json " + strings.Repeat("z", 3000)
	for _, c := range []struct {
		name, doc string
	}{{"one line", big}, {"pretty-printed", pretty}, {"not JSON", text}} {
		t.Run(c.name, func(t *testing.T) {
			data := []byte(`{"before":1}` + "\n" + c.doc + "\n" + `{"after":1}` + "\n")
			start := len(`{"before":1}` + "\n")
			var cuts []int
			for k := start + 100; k < len(data); k += 700 {
				cuts = append(cuts, k)
			}
			docs, _, tooLarge := frameAll(t, data, cuts, nil, 1000)
			if len(docs) != 3 || !tooLarge[1] || tooLarge[0] || tooLarge[2] {
				t.Fatalf("documents %v, too large %v: want before, the long one skipped, after", docs, tooLarge)
			}
			if docs[1].start != start || string(data[docs[2].start:docs[2].end]) != `{"after":1}` {
				t.Errorf("documents %v: the long one should start at %d and be followed by {\"after\":1}", docs, start)
			}
		})
	}
}

// TestFramerLongDocuments: documents of several chunks, on one line (a
// large S3 log file) or pretty-printed, between short ones.
func TestFramerLongDocuments(t *testing.T) {
	gen := cloudtrailgen.New(cloudtrailgen.Config{Seed: 11, Shapes: map[cloudtrailgen.Shape]float64{cloudtrailgen.ShapeRecord: 1}})
	var records [][]byte
	for range 2000 {
		var c bytes.Buffer
		json.Compact(&c, gen.Next().Value)
		records = append(records, c.Bytes())
	}
	s3 := append(append([]byte(`{"Records":[`), bytes.Join(records, []byte(","))...), "]}"...)
	var pretty bytes.Buffer
	json.Indent(&pretty, s3, "", "  ")
	var data []byte
	for _, d := range [][]byte{records[0], s3, records[1], pretty.Bytes(), records[2], s3[:len(s3)-1], records[3]} {
		data = append(append(data, d...), '\n')
	}
	want := oldDocuments(data)
	for _, step := range []int{64 << 10, 300 << 10, chunkSize} {
		var cuts []int
		for c := step; c < len(data); c += step {
			cuts = append(cuts, c)
		}
		docs, lines, _ := frameAll(t, data, cuts, nil, 64<<20)
		checkAgainstOld(t, data, want, docs, lines)
	}
}
