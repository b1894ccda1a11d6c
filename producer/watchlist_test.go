package producer

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// watchFinding is sample 02's finding with the user spelt in mixed case.
func watchFinding() matcher.Finding {
	f := contextFinding()
	f.Event.TargetName = "Test-User"
	return f
}

// The entry's JSON, written by hand from the issue 13 plan: the encoding
// is a contract with the case worker and with tools reading the topic.
const watchEntryGolden = `{"schema":1,"account":"123456789012","user_name":"Test-User",` +
	`"alert_id":"f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd",` +
	`"rule_id":"0b79f5c0-2c31-4fea-86cd-e62644278205",` +
	`"opened_at":"2023-11-21T23:23:52Z","until":"2023-11-24T23:23:52Z",` +
	`"source":{"topic":"cloudtrail","partition":3,"offset":1234,"timestamp":"2023-11-21T23:24:01.5Z"},` +
	`"lookback":"24h0m0s"}`

const watchKeyGolden = "entry/123456789012/test-user"

func TestWatchEntryEncoding(t *testing.T) {
	srcTime := time.Date(2023, 11, 22, 0, 24, 1, 5e8, time.FixedZone("CET", 3600))
	e, err := NewWatchEntry(watchFinding(), Source{Topic: "cloudtrail", Partition: 3, Offset: 1234}, srcTime, 72*time.Hour, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	value, err := EncodeWatchEntry(e)
	if err != nil {
		t.Fatal(err)
	}
	if string(value) != watchEntryGolden {
		t.Errorf("value\n got %s\nwant %s", value, watchEntryGolden)
	}
	if e.Key() != watchKeyGolden {
		t.Errorf("key %q, want %q", e.Key(), watchKeyGolden)
	}
	back, err := DecodeWatchEntry([]byte(watchKeyGolden), []byte(watchEntryGolden))
	if err != nil {
		t.Fatal(err)
	}
	if back != e {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, e)
	}
	opened := time.Date(2023, 11, 21, 23, 23, 52, 0, time.UTC)
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{opened, false}, // the quarantine itself is not after it
		{opened.Add(time.Nanosecond), true},
		{opened.Add(72 * time.Hour), true},
		{opened.Add(72*time.Hour + time.Nanosecond), false},
		{opened.Add(-time.Hour), false},
	} {
		if got := back.Covers(tc.at); got != tc.want {
			t.Errorf("Covers(%s) = %v, want %v", tc.at.Format(time.RFC3339Nano), got, tc.want)
		}
	}

	rec, err := WatchRecord(e, "alerts.watchlist", srcTime)
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Key) != watchKeyGolden || string(rec.Value) != watchEntryGolden || rec.Topic != "alerts.watchlist" {
		t.Errorf("record %q %q on %q", rec.Key, rec.Value, rec.Topic)
	}
	// The alert and the entry name the same alert id: the alert record's key.
	alert, err := Record(watchFinding(), Source{Topic: "cloudtrail", Partition: 3, Offset: 1234}, srcTime, "alerts")
	if err != nil {
		t.Fatal(err)
	}
	if string(alert.Key) != e.AlertID {
		t.Errorf("alert key %s, entry alert_id %s", alert.Key, e.AlertID)
	}
	tomb := WatchTombstone("123456789012", "TEST-USER", "alerts.watchlist")
	if string(tomb.Key) != watchKeyGolden || tomb.Value != nil {
		t.Errorf("tombstone %q %q", tomb.Key, tomb.Value)
	}
	if a, u, err := ParseWatchKey(tomb.Key); err != nil || a != "123456789012" || u != "test-user" {
		t.Errorf("ParseWatchKey(%q) = %q, %q, %v", tomb.Key, a, u, err)
	}
}

func TestNewWatchEntryRefuses(t *testing.T) {
	src := Source{Topic: "cloudtrail"}
	at := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name     string
		edit     func(*matcher.Finding)
		watchFor time.Duration
		want     string
	}{
		{"no rule", func(f *matcher.Finding) { f.Rule = nil }, time.Hour, "no rule"},
		{"a role", func(f *matcher.Finding) { f.Event.TargetKind = matcher.TargetRole }, time.Hour, "names no IAM user"},
		{"no user", func(f *matcher.Finding) { f.Event.TargetName = "" }, time.Hour, "names no IAM user"},
		{"no account", func(f *matcher.Finding) { f.Event.RecipientAccountID = "" }, time.Hour, "names no account"},
		{"bad time", func(f *matcher.Finding) { f.Event.EventTime = "yesterday" }, time.Hour, `eventTime "yesterday"`},
		{"no duration", func(*matcher.Finding) {}, 0, "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := watchFinding()
			tc.edit(&f)
			_, err := NewWatchEntry(f, src, at, tc.watchFor, time.Hour)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
	// The caller's account stands in for a missing recipient account.
	f := watchFinding()
	f.Event.RecipientAccountID, f.Event.UserIdentity.AccountID = "", "210987654321"
	if e, err := NewWatchEntry(f, src, at, time.Hour, 0); err != nil || e.Account != "210987654321" {
		t.Errorf("account %q, %v", e.Account, err)
	}
}

// TestDecodeWatchEntryRefuses: whatever is on the topic, decoding answers
// an error that wraps ErrBadWatchEntry and says what is wrong, never a
// panic and never a half-filled entry.
func TestDecodeWatchEntryRefuses(t *testing.T) {
	edit := func(old, new string) string {
		if !strings.Contains(watchEntryGolden, old) {
			t.Fatalf("%q not in the golden entry", old)
		}
		return strings.Replace(watchEntryGolden, old, new, 1)
	}
	for _, tc := range []struct {
		name, key, value, want string
		nilValue               bool
	}{
		{name: "tombstone", key: watchKeyGolden, nilValue: true, want: "tombstone"},
		{name: "empty", key: watchKeyGolden, value: "", want: "not a JSON object"},
		{name: "not JSON", key: watchKeyGolden, value: "entry", want: "not a JSON object"},
		{name: "array", key: watchKeyGolden, value: "[1]", want: "not a JSON object"},
		{name: "no schema", key: watchKeyGolden, value: edit(`"schema":1,`, ""), want: `no "schema"`},
		{name: "schema 2", key: watchKeyGolden, value: edit(`"schema":1`, `"schema":2`), want: "schema 2: this version reads schema 1"},
		{name: "schema a string", key: watchKeyGolden, value: edit(`"schema":1`, `"schema":"1"`), want: "not a JSON object"},
		{name: "no account", key: watchKeyGolden, value: edit(`"account":"123456789012"`, `"account":""`), want: "account empty"},
		{name: "no alert id", key: watchKeyGolden, value: edit(`"alert_id":"f013`, `"x":"`), want: "alert_id empty"},
		{name: "alert id not hex", key: watchKeyGolden, value: edit(`"alert_id":"f013`, `"alert_id":"F013`), want: "is not an alert id"},
		{name: "offset a string", key: watchKeyGolden, value: edit(`"offset":1234`, `"offset":"1234"`), want: "offset"},
		{name: "negative offset", key: watchKeyGolden, value: edit(`"offset":1234`, `"offset":-1`), want: "negative"},
		{name: "bad opened_at", key: watchKeyGolden, value: edit(`"opened_at":"2023-11-21T23:23:52Z"`, `"opened_at":"Tuesday"`), want: `opened_at "Tuesday"`},
		{name: "no until", key: watchKeyGolden, value: edit(`"until":"2023-11-24T23:23:52Z",`, ""), want: `until ""`},
		{name: "until before opened", key: watchKeyGolden, value: edit(`"until":"2023-11-24T23:23:52Z"`, `"until":"2023-11-20T23:23:52Z"`), want: "is not after opened_at"},
		{name: "bad lookback", key: watchKeyGolden, value: edit(`"lookback":"24h0m0s"`, `"lookback":"a day"`), want: `lookback "a day"`},
		{name: "negative lookback", key: watchKeyGolden, value: edit(`"lookback":"24h0m0s"`, `"lookback":"-1h"`), want: "negative"},
		{name: "another user's key", key: "entry/123456789012/bob", value: watchEntryGolden, want: `the entry is for "entry/123456789012/test-user"`},
		{name: "key not lowercase", key: "entry/123456789012/Test-User", value: watchEntryGolden, want: "the entry is for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var value []byte
			if !tc.nilValue {
				value = []byte(tc.value)
			}
			e, err := DecodeWatchEntry([]byte(tc.key), value)
			if !errors.Is(err, ErrBadWatchEntry) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want ErrBadWatchEntry saying %q", err, tc.want)
			}
			if e != (WatchEntry{}) {
				t.Errorf("entry %+v with the error", e)
			}
		})
	}
	for _, key := range []string{"", "mark/1/a", "entry/", "entry/123456789012", "entry//alice", "entry/123456789012/", "entry/1/Alice"} {
		if _, _, err := ParseWatchKey([]byte(key)); !errors.Is(err, ErrBadWatchEntry) {
			t.Errorf("ParseWatchKey(%q): %v, want ErrBadWatchEntry", key, err)
		}
	}
	// A user name is the rest of the key, whatever it holds.
	if a, u, err := ParseWatchKey([]byte("entry/1/a/b")); err != nil || a != "1" || u != "a/b" {
		t.Errorf("ParseWatchKey(entry/1/a/b) = %q, %q, %v", a, u, err)
	}
}

// FuzzDecodeWatchEntry: no value panics, and an entry that decodes
// encodes back to a value that decodes to the same entry.
func FuzzDecodeWatchEntry(f *testing.F) {
	f.Add([]byte(watchKeyGolden), []byte(watchEntryGolden))
	f.Add([]byte("entry/1/a"), []byte(`{"schema":1}`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		e, err := DecodeWatchEntry(key, value)
		if err != nil {
			return
		}
		again, err := EncodeWatchEntry(e)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", e, err)
		}
		back, err := DecodeWatchEntry(key, again)
		if err != nil || back != e {
			t.Fatalf("%+v -> %s -> %+v, %v", e, again, back, err)
		}
	})
}

// TestWatchMarkEncoding: a marker's key and value are the plan's, written
// here by hand, and decode back; what is not a marker is refused.
func TestWatchMarkEncoding(t *testing.T) {
	alert := strings.Repeat("ab", 32)
	rec, err := WatchMarkRecord(WatchMark{AlertID: alert, Topic: "cloudtrail", Partition: 3, Offset: 1234}, "alerts.watchlist")
	if err != nil {
		t.Fatal(err)
	}
	wantKey := "mark/" + alert + "/cloudtrail/3"
	wantValue := `{"schema":1,"alert_id":"` + alert + `","topic":"cloudtrail","partition":3,"offset":1234}`
	if string(rec.Key) != wantKey || string(rec.Value) != wantValue || rec.Topic != "alerts.watchlist" {
		t.Fatalf("record %s %q = %s", rec.Topic, rec.Key, rec.Value)
	}
	m, err := DecodeWatchMark(rec.Key, rec.Value)
	if err != nil || m != (WatchMark{AlertID: alert, Topic: "cloudtrail", Partition: 3, Offset: 1234}) {
		t.Fatalf("decoded %+v, %v", m, err)
	}
	every := `{"schema":1,"alert_id":"` + alert + `","topic":"cloudtrail","partition":0,"offset":-1}`
	if m, err := DecodeWatchMark([]byte("mark/"+alert+"/cloudtrail/0"), []byte(every)); err != nil || m.Offset != -1 {
		t.Errorf("offset -1: %+v, %v", m, err)
	}
	for _, c := range []struct{ name, key, value string }{
		{"not JSON", wantKey, "5"},
		{"tombstone", wantKey, ""},
		{"other schema", wantKey, strings.Replace(wantValue, `"schema":1`, `"schema":2`, 1)},
		{"key of another partition", "mark/" + alert + "/cloudtrail/4", wantValue},
		{"offset below -1", wantKey, strings.Replace(wantValue, "1234", "-2", 1)},
		{"not an alert id", "mark/x/cloudtrail/3", strings.Replace(wantValue, alert, "x", 1)},
	} {
		var value []byte
		if c.value != "" {
			value = []byte(c.value)
		}
		if _, err := DecodeWatchMark([]byte(c.key), value); !errors.Is(err, ErrBadWatchEntry) {
			t.Errorf("%s: %v, want ErrBadWatchEntry", c.name, err)
		}
	}
}

// TestWatchEndRecord: an end record is the ended entry, as the golden
// encoding writes it, under "end/<account>/<lowercase user>"; it decodes
// back to the entry, and a key of another kind is refused.
func TestWatchEndRecord(t *testing.T) {
	e, err := DecodeWatchEntry([]byte(watchKeyGolden), []byte(watchEntryGolden))
	if err != nil {
		t.Fatal(err)
	}
	ended := time.Date(2023, 11, 22, 9, 0, 0, 0, time.UTC)
	r, err := WatchEndRecord(e, "alerts.watchlist", ended)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Key) != "end/123456789012/test-user" || string(r.Value) != watchEntryGolden || !r.Timestamp.Equal(ended) || r.Topic != "alerts.watchlist" {
		t.Errorf("end record: key %q, topic %q, timestamp %v, value %s", r.Key, r.Topic, r.Timestamp, r.Value)
	}
	if key, ok := EndedWatchKey(r.Key); !ok || key != watchKeyGolden {
		t.Errorf("EndedWatchKey(%q) = %q, %v; want %q", r.Key, key, ok, watchKeyGolden)
	}
	back, err := DecodeWatchEnd(r.Key, r.Value)
	if err != nil || back != e {
		t.Errorf("DecodeWatchEnd: %+v, %v; want %+v", back, err, e)
	}
	for _, key := range []string{watchKeyGolden, "end/123456789012/other-user", "end/123456789012/Test-User"} {
		if _, err := DecodeWatchEnd([]byte(key), []byte(watchEntryGolden)); !errors.Is(err, ErrBadWatchEntry) {
			t.Errorf("DecodeWatchEnd(%q) = %v, want ErrBadWatchEntry", key, err)
		}
	}
}
