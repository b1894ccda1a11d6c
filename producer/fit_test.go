package producer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// producible produces r through franz-go with ProducerBatchMaxBytes(limit),
// the check that refused outputs before they were cut to fit: the oracle of
// "fits", sharing nothing with RecordBytes.
func producible(t *testing.T, limit int, r *kgo.Record) error {
	t.Helper()
	cl := limitedClient(t, limit)
	r = &kgo.Record{Topic: "out", Key: r.Key, Value: r.Value, Headers: r.Headers}
	return cl.ProduceSync(context.Background(), r).FirstErr()
}

var (
	fakeOnce    sync.Once
	fakeCluster *kfake.Cluster
	fakeErr     error
	clientsMu   sync.Mutex
	clients     = map[int]*kgo.Client{}
)

func limitedClient(t *testing.T, limit int) *kgo.Client {
	t.Helper()
	fakeOnce.Do(func() {
		fakeCluster, fakeErr = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "out"),
			kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(64 << 20)}))
	})
	if fakeErr != nil {
		t.Fatal(fakeErr)
	}
	clientsMu.Lock()
	defer clientsMu.Unlock()
	if cl, ok := clients[limit]; ok {
		return cl
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(fakeCluster.ListenAddrs()...), kgo.ProducerBatchMaxBytes(int32(limit)))
	if err != nil {
		t.Fatal(err)
	}
	clients[limit] = cl
	return cl
}

// flatten returns every scalar of a decoded JSON document by dotted path,
// array elements by index.
func flatten(v any, path string, out map[string]any) map[string]any {
	switch v := v.(type) {
	case map[string]any:
		for k, c := range v {
			flatten(c, join(path, k), out)
		}
	case []any:
		for i, c := range v {
			flatten(c, join(path, strconv.Itoa(i)), out)
		}
	default:
		out[path] = v
	}
	return out
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// hugeFinding is the quarantine sample with a user agent of n copies of
// unit and the event's original record grown to match, as a long user agent
// grows it.
func hugeFinding(t testing.TB, unit string, n int) matcher.Finding {
	t.Helper()
	f := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	agent := "AWS Internal" + strings.Repeat(unit, n)
	quoted, err := json.Marshal(agent)
	if err != nil {
		t.Fatal(err)
	}
	old := []byte(`"userAgent": "AWS Internal"`)
	if !bytes.Contains(f.Event.Original, old) {
		t.Fatalf("sample has no %s", old)
	}
	f.Event.UserAgent = agent
	f.Event.Original = bytes.Replace(f.Event.Original, old, append([]byte(`"userAgent": `), quoted...), 1)
	return f
}

func TestFitAlert(t *testing.T) {
	src := Source{Topic: "cloudtrail", Partition: 1, Offset: 99}
	quotes := hugeFinding(t, `"`, 350_000)
	mixed := hugeFinding(t, "é\u2028\x01\\ 😀", 60_000)
	tests := []struct {
		name  string
		enc   Encoder
		f     matcher.Finding
		limit int
		// mustCut are fields that must be listed as cut.
		mustCut []string
		tooBig  bool
		// capOnly: cutting the strings over the format's cap (OCSF's
		// 65,535 characters) is enough to fit, so room may be left.
		capOnly bool
	}{
		{"ECS 700 KB user agent, default limit", ECS{}, quotes, DefaultMaxMessageBytes, []string{"event.original", "user_agent.original"}, false, false},
		{"ECS 700 KB user agent, 8 KiB", ECS{}, quotes, 8192, []string{"event.original", "user_agent.original"}, false, false},
		{"ECS multibyte and escaped runes, 64 KiB", ECS{}, mixed, 64 << 10, []string{"event.original", "user_agent.original"}, false, false},
		{"ECS, limit below any alert", ECS{}, quotes, 1024, nil, true, false},
		{"OCSF 700 KB user agent, default limit", OCSF{}, quotes, DefaultMaxMessageBytes, []string{"raw_data"}, false, true},
		{"OCSF 700 KB user agent, 8 KiB", OCSF{}, quotes, 8192, []string{"raw_data"}, false, false},
		{"OCSF multibyte and escaped runes, 64 KiB", OCSF{}, mixed, 64 << 10, []string{"raw_data"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			whole, err := EncodeRecord(tt.enc, tt.f, src, detected, "alerts")
			if err != nil {
				t.Fatal(err)
			}
			if err := producible(t, tt.limit, whole); err == nil {
				t.Fatalf("the whole alert (%d bytes) is producible at %d: the case proves nothing", len(whole.Value), tt.limit)
			}
			cut, err := FitAlert(tt.enc, whole, tt.limit)
			if tt.tooBig {
				var tooLarge *AlertTooLargeError
				if !errors.As(err, &tooLarge) || Classify(err) != ClassAlertTooLarge || tooLarge.Limit != tt.limit {
					t.Fatalf("FitAlert = %v, want an AlertTooLargeError of class %s at limit %d", err, ClassAlertTooLarge, tt.limit)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := producible(t, tt.limit, cut); err != nil {
				t.Fatalf("cut alert of %d bytes: %v", len(cut.Value), err)
			}
			if string(cut.Key) != string(whole.Key) || headerText(cut.Headers) != headerText(whole.Headers) || !cut.Timestamp.Equal(whole.Timestamp) {
				t.Error("key, headers or timestamp changed")
			}
			// Little of the room is wasted: the cut fields share it.
			if room := tt.limit - RecordBytes(cut); room > tt.limit/8+600 && !tt.capOnly {
				t.Errorf("%d of %d bytes left unused", room, tt.limit)
			}
			checkCut(t, tt.enc, whole.Value, cut.Value, tt.mustCut)
		})
	}
}

// checkCut compares a cut document with the whole one, both decoded with
// encoding/json: every scalar is the same but the listed ones, each a
// shorter valid-UTF-8 prefix of the whole value, listed with its whole
// length and SHA-256; the list is where the encoder says; the cut document
// validates against the format's schema.
func checkCut(t *testing.T, enc Encoder, wholeDoc, cutDoc []byte, mustCut []string) {
	t.Helper()
	var whole, cut map[string]any
	if err := json.Unmarshal(wholeDoc, &whole); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(cutDoc, &cut); err != nil {
		t.Fatalf("cut document is not JSON: %v", err)
	}
	marker := strings.Join(enc.(TruncationMarker).TruncationMarker(), ".")
	switch enc.(type) {
	case ECS:
		if err := validateErr(cutDoc); err != nil {
			t.Errorf("cut ECS alert does not validate: %v", err)
		}
	case OCSF:
		if err := validateOCSFErr(cutDoc); err != nil {
			t.Errorf("cut OCSF alert does not validate: %v", err)
		}
	}
	wf, cf := flatten(whole, "", map[string]any{}), flatten(cut, "", map[string]any{})
	listed := map[string]bool{}
	for i := 0; ; i++ {
		field, ok := cf[fmt.Sprintf("%s.%d.field", marker, i)].(string)
		if !ok {
			break
		}
		listed[field] = true
		w, _ := wf[field].(string)
		c, _ := cf[field].(string)
		sum := sha256.Sum256([]byte(w))
		if got := cf[fmt.Sprintf("%s.%d.sha256", marker, i)]; got != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: sha256 %v, want that of the whole value", field, got)
		}
		if got := cf[fmt.Sprintf("%s.%d.bytes", marker, i)]; got != float64(len(w)) {
			t.Errorf("%s: bytes %v, want %d", field, got, len(w))
		}
		if !strings.HasPrefix(w, c) || len(c) >= len(w) || !utf8.ValidString(c) || len(c) < 100 {
			t.Errorf("%s: %d bytes of %d, not a shorter, valid, non-trivial prefix", field, len(c), len(w))
		}
	}
	for _, f := range mustCut {
		if !listed[f] {
			t.Errorf("%s not listed as cut; listed: %v", f, listed)
		}
	}
	for path, w := range wf {
		if listed[path] {
			continue
		}
		if c, ok := cf[path]; !ok || c != w {
			t.Errorf("%s changed: %.80v, was %.80v", path, c, w)
		}
	}
	for path := range cf {
		if _, ok := wf[path]; !ok && !strings.HasPrefix(path, marker+".") {
			t.Errorf("%s added", path)
		}
	}
	t.Logf("%d bytes cut to %d; fields cut: %v", len(wholeDoc), len(cutDoc), listed)
}

func TestFitAlertKeepsWhatFits(t *testing.T) {
	whole, err := EncodeRecord(ECS{}, sampleFinding(t, quarantineV2, matcher.ShapeRecord), Source{Topic: "t"}, detected, "alerts")
	if err != nil {
		t.Fatal(err)
	}
	cut, err := FitAlert(ECS{}, whole, RecordBytes(whole))
	if err != nil || cut != whole {
		t.Errorf("an alert that fits exactly: FitAlert = %p, %v; want the record itself", cut, err)
	}
	// One byte less: something is cut, and what is listed says what.
	cut, err = FitAlert(ECS{}, whole, RecordBytes(whole)-1)
	if err != nil || cut == whole || RecordBytes(cut) > RecordBytes(whole)-1 {
		t.Fatalf("one byte over: FitAlert = %v; %d bytes", err, len(cut.Value))
	}
	checkCut(t, ECS{}, whole.Value, cut.Value, []string{"event.original"})
}

func TestDeadLetterFits(t *testing.T) {
	long := strings.Repeat("k", 20<<10)
	tests := []struct {
		name             string
		value, key       int // lengths; -1: nil
		topic            string
		cause            error
		limit            int
		keyCut, valueCut bool
	}{
		{"small", 100, 3, "cloudtrail", errors.New("x"), DefaultMaxMessageBytes, false, false},
		{"2 MB value", 2 << 20, -1, "cloudtrail", errors.New("x"), DefaultMaxMessageBytes, false, true},
		{"20 KB key, value up to the source's limit", DefaultMaxMessageBytes - 74 - len(long), len(long), "cloudtrail", errors.New("x"), DefaultMaxMessageBytes, false, true},
		{"20 KB key, small value, 2 KiB limit", 120, len(long), "cloudtrail", errors.New("x"), 2048, true, false},
		{"20 KB key and value, 2 KiB limit", len(long), len(long), "cloudtrail", errors.New("x"), 2048, true, true},
		{"long error, longest topic, smallest limit", 5000, 5000, strings.Repeat("t", 249), errors.New(strings.Repeat("é", 2000)), MinMessageBytes, true, true},
		{"limit below the minimum", 5000, -1, "cloudtrail", errors.New("x"), 100, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mk := func(n int) []byte {
				if n < 0 {
					return nil
				}
				return []byte(strings.Repeat("v", n))
			}
			value, key := mk(tt.value), mk(tt.key)
			r := DeadLetter(value, key, Source{Topic: tt.topic, Partition: 5, Offset: 1 << 40}, tt.cause, "dlq", tt.limit)
			if err := producible(t, max(tt.limit, MinMessageBytes), r); err != nil {
				t.Fatalf("dead letter (key %d, value %d bytes) does not fit %d: %v", len(r.Key), len(r.Value), tt.limit, err)
			}
			h := headerMap(r.Headers)
			for _, part := range []struct {
				name       string
				got, whole []byte
				header     string
				cut        bool
			}{{"key", r.Key, key, HeaderKeyTruncated, tt.keyCut}, {"value", r.Value, value, HeaderValueTruncated, tt.valueCut}} {
				if !bytes.HasPrefix(part.whole, part.got) || (part.got == nil) != (part.whole == nil) {
					t.Errorf("%s: not a prefix of the input", part.name)
				}
				switch {
				case part.cut && (len(part.got) >= len(part.whole) || h[part.header] != strconv.Itoa(len(part.whole))):
					t.Errorf("%s: %d of %d bytes, header %q: want it cut and the whole length in %s", part.name, len(part.got), len(part.whole), h[part.header], part.header)
				case !part.cut && (len(part.got) != len(part.whole) || h[part.header] != ""):
					t.Errorf("%s: %d of %d bytes, header %q: want it whole", part.name, len(part.got), len(part.whole), h[part.header])
				}
			}
			if !strings.HasPrefix(tt.cause.Error(), h[HeaderError]) || h[HeaderError] == "" || !utf8.ValidString(h[HeaderError]) {
				t.Errorf("error header %q is not a valid, non-empty prefix of the cause", h[HeaderError])
			}
			if h[HeaderSourceTopic] != tt.topic || h[HeaderSourcePartition] != "5" || h[HeaderSourceOffset] != strconv.Itoa(1<<40) {
				t.Errorf("source headers %v", h)
			}
			if tt.keyCut && tt.valueCut && (len(r.Key) < 100 || len(r.Value) < 100) {
				t.Errorf("both cut: key %d and value %d bytes; want both to keep something", len(r.Key), len(r.Value))
			}
			if tt.valueCut && !tt.keyCut && RecordBytes(r) < max(tt.limit, MinMessageBytes)-64 {
				t.Errorf("value cut to %d bytes with %d of %d bytes unused", len(r.Value), max(tt.limit, MinMessageBytes)-RecordBytes(r), tt.limit)
			}
		})
	}
}

// BenchmarkFitAlert times cutting an alert with a 700 KB user agent to the
// default limit: the price of one such record, paid only when it comes.
func BenchmarkFitAlert(b *testing.B) {
	f := hugeFinding(b, `"`, 350_000)
	whole, err := EncodeRecord(ECS{}, f, Source{}, detected, "alerts")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(whole.Value)))
	for b.Loop() {
		if _, err := FitAlert(ECS{}, whole, DefaultMaxMessageBytes); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzFitAlert feeds FitAlert any document and limit: it must not panic,
// and must return either an AlertTooLargeError or a record within the
// limit whose document is valid JSON with every value of the input, each
// string whole or a valid prefix listed under "truncated".
func FuzzFitAlert(f *testing.F) {
	for _, enc := range []Encoder{ECS{}, OCSF{}} {
		r, err := EncodeRecord(enc, sampleFinding(f, quarantineV2, matcher.ShapeRecord), Source{Topic: "t"}, detected, "alerts")
		if err != nil {
			f.Fatal(err)
		}
		for _, limit := range []int{len(r.Value), len(r.Value) / 2, 1500} {
			f.Add(r.Value, uint32(limit))
		}
	}
	f.Add([]byte(`{"a":"`+strings.Repeat("é\\n\\u2028\\\"", 200)+`","b":[1,2.50,{"c":"`+strings.Repeat("x", 1000)+`"}],"truncated":7}`), uint32(900))
	f.Add([]byte(`{"a":{"b":{"c":"`+strings.Repeat("\\ud83d\\ude00", 300)+`"}},"d":null,"e":true}`), uint32(700))
	f.Fuzz(func(t *testing.T, doc []byte, limit uint32) {
		var whole map[string]any
		if json.Unmarshal(doc, &whole) != nil || !utf8.Valid(doc) {
			return
		}
		rec := &kgo.Record{Key: []byte("k"), Value: doc}
		lim := int(limit%(1<<20)) + RecordBytes(&kgo.Record{Key: rec.Key})
		cut, err := FitAlert(fakeEncoder{}, rec, lim)
		var tooLarge *AlertTooLargeError
		if errors.As(err, &tooLarge) {
			return
		}
		if err != nil {
			// Duplicate keys and the like: refused, not mangled.
			return
		}
		if RecordBytes(cut) > lim {
			t.Fatalf("cut to %d bytes, over the limit %d", RecordBytes(cut), lim)
		}
		if cut == rec {
			return
		}
		var got map[string]any
		if err := json.Unmarshal(cut.Value, &got); err != nil {
			t.Fatalf("cut document is not JSON: %v\n%s", err, cut.Value)
		}
		wf, cf := flatten(whole, "", map[string]any{}), flatten(got, "", map[string]any{})
		listed := map[string]bool{}
		for i := 0; ; i++ {
			field, ok := cf[fmt.Sprintf("truncated.%d.field", i)].(string)
			if !ok {
				break
			}
			listed[field] = true
		}
		for path, w := range wf {
			if strings.HasPrefix(path, "truncated") {
				continue // replaced by the list
			}
			c, ok := cf[path]
			ws, isString := w.(string)
			switch {
			case !ok:
				t.Fatalf("%s lost", path)
			case listed[path] && isString:
				cs, _ := c.(string)
				if !strings.HasPrefix(ws, cs) || len(cs) >= len(ws) || !utf8.ValidString(cs) {
					t.Fatalf("%s: %q is not a shorter valid prefix of %q", path, cs, ws)
				}
			case c != w:
				t.Fatalf("%s changed: %v, was %v", path, c, w)
			}
		}
	})
}
