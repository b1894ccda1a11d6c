package matcher

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// referenceSelects is the decode-everything reference of the identity
// filter, sharing nothing with it: encoding/json decodes the whole text;
// every key and string value, at any depth, is searched for an identifier
// without regard to ASCII case; a string that is JSON is decoded and
// searched the same way, and one that is base64 of gzip (standard alphabet)
// is inflated and searched. Text that is not JSON selects nothing.
func referenceSelects(text []byte, ids []string, depth int) bool {
	if depth > 8 {
		return false
	}
	var doc any
	if json.Unmarshal(text, &doc) != nil {
		return false
	}
	var walk func(v any) bool
	str := func(s string) bool {
		low := strings.ToLower(s)
		for _, id := range ids {
			if strings.Contains(low, strings.ToLower(id)) {
				return true
			}
		}
		t := strings.TrimSpace(s)
		if strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
			return referenceSelects([]byte(t), ids, depth+1)
		}
		if raw, err := base64.StdEncoding.DecodeString(t); err == nil {
			if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
				if inflated, err := io.ReadAll(zr); err == nil {
					return referenceSelects(inflated, ids, depth+1)
				}
			}
		}
		return false
	}
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return str(v)
		case map[string]any:
			for k, x := range v {
				if str(k) || walk(x) {
					return true
				}
			}
		case []any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		}
		return false
	}
	return walk(doc)
}

var caseIDs = []string{"ledger-sync", "AKIA0LEDGERSYNC00001"}

func TestIdentityFilter(t *testing.T) {
	gz := func(s string) string {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
		return base64.StdEncoding.EncodeToString(b.Bytes())
	}
	for _, c := range []struct {
		name string
		text string
		want bool
	}{
		{"unrelated record", `{"eventName":"ListBuckets","userIdentity":{"arn":"arn:aws:iam::1:user/alice"}}`, false},
		{"the name in the ARN", `{"userIdentity":{"arn":"arn:aws:iam::1:user/ledger-sync"}}`, true},
		{"the ARN's slash escaped", `{"userIdentity":{"arn":"arn:aws:iam::1:user\/ledger-sync"}}`, true},
		{"the name in userName, another case", `{"requestParameters":{"userName":"Ledger-SYNC"}}`, true},
		{"a letter of the name escaped", `{"requestParameters":{"userName":"\u006cedger-sync"}}`, true},
		{"an uppercase letter of the name escaped", `{"requestParameters":{"userName":"\u004cedger-sync"}}`, true},
		{"the hyphen escaped", `{"requestParameters":{"userName":"ledger\u002dsync"}}`, true},
		{"escaped twice (a record in a string)", `{"message":"{\"userName\":\"\\u006cedger-sync\"}"}`, true},
		{"the key", `{"userIdentity":{"accessKeyId":"AKIA0LEDGERSYNC00001"}}`, true},
		{"the key in lower case", `{"x":"akia0ledgersync00001"}`, true},
		{"half the name", `{"a":"ledger","b":"sync"}`, false},
		{"a longer name holds it", `{"userName":"ledger-sync-old"}`, true},
		{"escape of '=' and of non-ASCII", `{"u":"a\u003db\u00e9"}`, false},
		{"escape of '&'", `{"u":"a\u0026b"}`, false},
		{"escape cut short", `{"u":"\u00`, true},
		{"base64 of gzip", `{"awslogs":{"data":"` + gz(`{"userName":"ledger-sync"}`) + `"}}`, true},
	} {
		f, err := NewIdentityFilter(caseIDs)
		if err != nil {
			t.Fatal(err)
		}
		b := []byte(c.text)
		if got := f.MayContain(b); got != c.want {
			t.Errorf("%s: MayContain(%s) = %v, want %v", c.name, c.text, got, c.want)
		}
		if got := f.mayContainSlow(b); got != c.want {
			t.Errorf("%s: mayContainSlow(%s) = %v, want %v", c.name, c.text, got, c.want)
		}
		// The reference selects exactly the texts that hold an
		// identifier; the filter passes them all.
		if ref := referenceSelects(b, caseIDs, 0); ref && !f.MayContain(b) {
			t.Errorf("%s: the reference selects %s, the filter rejects it", c.name, c.text)
		}
	}
}

func TestNewIdentityFilter(t *testing.T) {
	for _, c := range []struct {
		ids []string
		ok  bool
	}{
		{[]string{"alice"}, true},
		{[]string{"dave@example.com", "a+b=c,d.e_f-g"}, true},
		{nil, false},
		{[]string{""}, false},
		{[]string{"a/b"}, false},
		{[]string{`a"b`}, false},
		{[]string{`a\b`}, false},
		{[]string{"caf\u00e9"}, false},
		{[]string{"tab\there"}, false},
	} {
		_, err := NewIdentityFilter(c.ids)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrBadIdentifier) {
			t.Errorf("NewIdentityFilter(%q): %v, want ok %v", c.ids, err, c.ok)
		}
	}
	// A one-letter name cannot anchor a search: everything passes.
	f, err := NewIdentityFilter([]string{"q"})
	if err != nil || !f.MayContain([]byte(`{"a":"b"}`)) {
		t.Errorf("one-letter identifier: %v, passes %v; want everything to pass", err, err == nil && f.MayContain([]byte(`{"a":"b"}`)))
	}
}

// FuzzIdentityFilter holds the filter to the decode-everything reference
// (it must never reject text the reference selects) and its one-pass search
// to the searches one by one, with one identifier and with enough to need
// several groups of anchors.
func FuzzIdentityFilter(f *testing.F) {
	for _, s := range []string{
		`{"userIdentity":{"arn":"arn:aws:iam::1:user\/ledger-sync"}}`,
		`{"userName":"\u006cedger-sync"}`, `{"userName":"\u004cEDGER-SYNC"}`, `{"u":"ledger\u002dsync"}`,
		`{"message":"{\"userName\":\"\\u006cedger-sync\"}"}`, `{"message":"{\"a\":\"\\\\u006cedger-sync\"}"}`,
		`{"k":"akia0ledgersync0000\u0031"}`, `{"u":"\u003d\u00e9"}`, `{"u":"\u00`, `{"a":"H4sI"}`,
		`{"ledger-sync":1}`, `{"\u006c\u0065dger-sync":1}`, strings.Repeat("x", 40) + `{"a":"LEDGER-sync"}`,
	} {
		f.Add([]byte(s))
	}
	one, err := NewIdentityFilter([]string{"ledger-sync"})
	if err != nil {
		f.Fatal(err)
	}
	many, err := NewIdentityFilter([]string{"ledger-sync", "AKIA0LEDGERSYNC00001", "ASIA0LEDGERSYNC00003", "Bob"})
	if err != nil {
		f.Fatal(err)
	}
	if len(many.groups) < 2 {
		f.Fatalf("%d groups of anchors, want several", len(many.groups))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []struct {
			f   *IdentityFilter
			ids []string
		}{{one, []string{"ledger-sync"}}, {many, []string{"ledger-sync", "AKIA0LEDGERSYNC00001", "ASIA0LEDGERSYNC00003", "Bob"}}} {
			got := c.f.MayContain(b)
			if slow := c.f.mayContainSlow(b); got != slow {
				t.Fatalf("MayContain(%q) = %v, the searches one by one say %v", b, got, slow)
			}
			if !got && referenceSelects(b, c.ids, 0) {
				t.Fatalf("the reference selects %q, the filter (%v) rejects it", b, c.ids)
			}
		}
	})
}

// FuzzSelect holds Select to the reference through every shape: every
// event the Scanner finds in a value (Select with a filter that passes
// everything, a one-letter identifier) whose text the reference selects
// must be among what Select returns with the real filter, which skips the
// value or the event by bytes alone.
func FuzzSelect(f *testing.F) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
		return b.Bytes()
	}
	rec := `{"eventName":"ListBuckets","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user\/\u006cedger-sync"}}`
	cw := `{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1","timestamp":1,"message":` + strconvQuote(rec) + `}]}`
	for _, s := range [][]byte{
		[]byte(rec),
		[]byte(`{"Records":[{"eventName":"A","x":"alice"},` + rec + `]}`),
		[]byte(`{"detail-type":"AWS API Call via CloudTrail","detail":` + rec + `}`),
		[]byte(`{"message":` + strconvQuote(rec) + `}`),
		[]byte(cw),
		gz(cw),
		[]byte(base64.StdEncoding.EncodeToString(gz(cw))),
		[]byte(`{"awslogs":{"data":"` + base64.StdEncoding.EncodeToString(gz(cw)) + `"}}`),
		[]byte(`{"event":{"action":"ListBuckets","original":` + strconvQuote(rec) + `},"data_stream":{"dataset":"aws.cloudtrail"}}`),
		[]byte(`{"eventName":"A","requestParameters":{"userName":"LEDGER-SYNC"}}`),
	} {
		f.Add(s)
	}
	m, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	ids := []string{"ledger-sync", "AKIA0LEDGERSYNC00001"}
	filter, err := NewIdentityFilter(ids)
	if err != nil {
		f.Fatal(err)
	}
	everything, err := NewIdentityFilter([]string{"q"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		s := m.NewScanner()
		all, _ := s.Select(v, everything, nil)
		got, _ := s.Select(v, filter, nil)
		for _, c := range all {
			if !referenceSelects(c.Text, ids, 0) {
				continue
			}
			if !slices.ContainsFunc(got, func(g Candidate) bool {
				return g.Index == c.Index && g.Shape == c.Shape && bytes.Equal(g.Text, c.Text)
			}) {
				t.Fatalf("value %q: event %d (%s) holds an identifier, Select dropped it", v, c.Index, c.Text)
			}
		}
	})
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
