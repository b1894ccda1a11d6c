package matcher

import (
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestIndexerAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range []string{
		``, ` `, `{}`, `[]`, `{"a":1}`, `{"a":1,}`, `[1,]`, `{"a" 1}`, `{"a":}`, `{a:1}`, `"x"`, `"\u00e9"`, `"\u00g9"`,
		`"\x"`, "\"\x01\"", "\"\t\"", `-0`, `-`, `01`, `1.`, `1.5e+3`, `1e`, `.5`, `truee`, `nul`, `[true,false,null]`,
		`{"a":{"b":[1,{"c":"d"}]}}`, ` {"a" : [ 1 , 2 ] } `, `{"a":1}{`, `{"a":"\"}`, `{"a":"\\"}`, "{\"a\":\"\xff\"}",
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000), strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	} {
		var x indexer
		_, _, errAt := x.index([]byte(s))
		if got, want := errAt < 0, json.Valid([]byte(s)); got != want {
			t.Errorf("%.60q: indexer valid %v, encoding/json %v", s, got, want)
		}
	}
}

func TestIndexerMembers(t *testing.T) {
	var x indexer
	text := []byte(` {"a" : 1, "b":{"c":[2]}, "d":"e\"f"} `)
	m, kind, errAt := x.index(text)
	if errAt >= 0 || kind != '{' || len(m) != 3 {
		t.Fatalf("members %v kind %c err %d", m, kind, errAt)
	}
	var got []string
	for _, mm := range m {
		k := mm.keySpan()
		got = append(got, string(text[k.start:k.end])+"="+string(text[mm.val.start:mm.val.end]))
	}
	if strings.Join(got, " ") != `"a"=1 "b"={"c":[2]} "d"="e\"f"` {
		t.Errorf("members: %v", got)
	}
}

// FuzzIndexer holds the validator to encoding/json.Valid.
func FuzzIndexer(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"\u0041"`, `-1.5e-3`, `[`, `{"a":"\n"}`} {
		f.Add([]byte(s))
	}
	var x indexer
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, errAt := x.index(b)
		if got, want := errAt < 0, json.Valid(b); got != want {
			t.Fatalf("%q: indexer valid %v, encoding/json %v", b, got, want)
		}
	})
}

// TestSpecialBytesFirstFlag checks the word scan against a byte loop: the
// lowest flag must be the first quote, backslash or control byte.
func TestSpecialBytesFirstFlag(t *testing.T) {
	special := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 }
	interesting := []byte{0x00, 0x01, 0x1f, 0x20, 0x21, '"', '\\', 0x7f, 0x80, 0x81, 0x9f, 0xa0, 0xdf, 0xe0, 0xff, 'a', '#', '[', ']', '\\' + 1, '"' + 1}
	rng := rand.New(rand.NewPCG(1, 2))
	var w [8]byte
	for n := 0; n < 1_000_000; n++ {
		for i := range w {
			if rng.IntN(3) == 0 {
				w[i] = byte(rng.IntN(256))
			} else {
				w[i] = interesting[rng.IntN(len(interesting))]
			}
		}
		want := 8
		for i, c := range w {
			if special(c) {
				want = i
				break
			}
		}
		m := specialBytes(binary.LittleEndian.Uint64(w[:]))
		got := 8
		if m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if got != want {
			t.Fatalf("% x: first special byte %d, word scan says %d", w, want, got)
		}
	}
}

// FuzzIndexValid holds indexValid, which trusts its input, to the
// validating indexer on every input the latter accepts.
func FuzzIndexValid(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `{"a\"b":"c\\","d":{"e":"]"}}`, `[1,"x",{}]`, ` {} `, `{"k\n":true}`, ` [ 1 , "]" , [] ] `} {
		f.Add([]byte(s))
	}
	var x indexer
	f.Fuzz(func(t *testing.T, b []byte) {
		want, _, errAt := x.index(b)
		if errAt >= 0 {
			return
		}
		if it, ok := elementsOf(b); ok {
			// The iterator over an array gives the indexer's elements.
			var n int
			for e, ok := it.next(); ok; e, ok = it.next() {
				if n >= len(want) || string(e) != string(b[want[n].val.start:want[n].val.end]) {
					t.Fatalf("%q: element %d is %q", b, n, e)
				}
				n++
			}
			if n != len(want) {
				t.Fatalf("%q: %d elements, indexer says %d", b, n, len(want))
			}
		}
		got := indexValid(b, nil)
		if len(got) != len(want) {
			t.Fatalf("%q: %d members, indexer says %d", b, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%q: member %d is %+v, indexer says %+v", b, i, got[i], want[i])
			}
		}
	})
}

// FuzzUnquote holds appendUnquoted to encoding/json on every string the
// indexer accepts.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"a\u0041\"\\\/\b\f\n\r\t"`, `"\ud800\u0041"`, `"\udc00"`, `"\ud83d\ude00"`, `"\ud800\udbff\udc00"`, `"\ud800"`, `"\ud800\n"`, `"é\u00e9"`} {
		f.Add([]byte(s))
	}
	var x indexer
	f.Fuzz(func(t *testing.T, b []byte) {
		// The matcher refuses invalid UTF-8 before it decodes anything,
		// where encoding/json would replace it.
		if !utf8.Valid(b) {
			return
		}
		if _, kind, errAt := x.index(b); errAt >= 0 || kind != '"' {
			return
		}
		raw := trimSpace(b)
		var want string
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatalf("%q: encoding/json: %v", raw, err)
		}
		if got := appendUnquoted(nil, raw); string(got) != want {
			t.Fatalf("%q: decoded %q, encoding/json %q", raw, got, want)
		}
	})
}

// unquoteInputs are strings as CloudTrail escapes them: a user agent with
// '&' and '=', a policy document with quotes, a name with accents, and an
// escaped marker.
var unquoteInputs = [][]byte{
	[]byte(`"aws-sdk-go-v2/1.21.0 os/linux lang/go#1.21.1 md/GOOS#linux api/iam#1.22.5 ft/s3-transfer \u0026 m/E\u003d"`),
	[]byte(`"{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Deny\",\"Action\":[\"iam:AttachUserPolicy\",\"iam:CreateAccessKey\",\"ec2:RunInstances\"],\"Resource\":\"*\"}]}"`),
	[]byte(`"Jos\u00e9 Garc\u00eda"`),
	[]byte(`"arn:aws:iam::aws:policy/AWSCompromisedKey\u0051uarantineV2"`),
}

// BenchmarkUnquote decodes JSON strings with escapes, the only decoding the
// matcher does: with appendUnquoted and with encoding/json, side by side.
func BenchmarkUnquote(b *testing.B) {
	n := 0
	for _, in := range unquoteInputs {
		n += len(in)
	}
	var dst []byte
	for _, c := range []struct {
		name string
		fn   func(raw []byte) int
	}{
		{"appendUnquoted", func(raw []byte) int { dst = appendUnquoted(dst[:0], raw); return len(dst) }},
		{"encoding-json", func(raw []byte) int {
			var s string
			json.Unmarshal(raw, &s)
			return len(s)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				for _, in := range unquoteInputs {
					c.fn(in)
				}
			}
		})
	}
}
