package producer

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// The watchlist is state kept in a compacted topic (<alerts>.watchlist):
// one record per watched (account, user), written in the same transaction
// as the finding that opened the watch, so that the watch exists exactly
// when its alert does. Every instance reads the topic from the start to
// know what to watch, and the case worker reads it to write each entry's
// context document. This file is the entry's encoding, which those readers
// share; nothing here reads the clock or talks to Kafka.
//
// The key is WatchKey: "entry/<account>/<lowercase user name>". IAM user
// names are case-insensitive, so one user has one key however a call
// spelt it, and a second quarantine of the user replaces the first entry
// (latest wins; compaction keeps it). A record with a nil value, a
// tombstone, removes the entry; the operator's `watchlist end` writes one
// with an end record (WatchEndRecord), which keeps the same quarantine from
// opening the watch again. Keys outside "entry/" are reserved for other
// state in the same topic (end records, the no-gap markers); readers of
// entries skip them.

// WatchEntrySchema is the version of the entry's JSON, its "schema" field.
// A reader refuses a schema it does not know rather than guess at it.
const WatchEntrySchema = 1

// WatchKeyPrefix starts the key of every watch entry.
const WatchKeyPrefix = "entry/"

// ErrBadWatchEntry is wrapped by every error DecodeWatchEntry and
// ParseWatchKey return: the record is not a watch entry this version can
// use. The topic is written only by this service and by an operator's
// tombstones, so such a record is a bug or a hand-made record; readers log
// it, count it and skip it, they never stop on it.
var ErrBadWatchEntry = errors.New("producer: not a valid watch entry")

// ErrNoWatchAccount is returned for a finding whose event names no
// account: the watch could not say where the user lives.
var ErrNoWatchAccount = errors.New("producer: the finding names no account")

// WatchEntry is one watched user: the finding that opened the watch and
// the window of event time it covers.
type WatchEntry struct {
	// Account is the AWS account of the user (the event's
	// recipientAccountId, else the caller's account).
	Account string
	// UserName is the quarantined IAM user as the finding named it; the
	// key holds it lowercased.
	UserName string
	// AlertID is the id of the alert that opened the watch (EventAlertID):
	// the context document's key, and what post-quarantine alerts name.
	AlertID string
	// RuleID is the id of the rule whose finding opened the watch.
	RuleID string
	// OpenedAt is the finding's event time. The watch covers events with
	// an event time in (OpenedAt, Until]: event time, not the clock, so a
	// replay decides the same way.
	OpenedAt time.Time
	Until    time.Time
	// Source is where the finding was read: the case worker reads the
	// look-back up to it.
	Source WatchSource
	// Lookback is the context document's window before OpenedAt
	// (--context-lookback).
	Lookback time.Duration
}

// WatchSource is the source record of the finding that opened a watch.
type WatchSource struct {
	Topic     string
	Partition int32
	Offset    int64
	// Timestamp is the source record's Kafka timestamp.
	Timestamp time.Time
}

// Key returns the entry's record key, WatchKey(e.Account, e.UserName).
func (e *WatchEntry) Key() string { return WatchKey(e.Account, e.UserName) }

// Covers reports whether an event at event time t falls in the watch:
// after OpenedAt, up to and including Until.
func (e *WatchEntry) Covers(t time.Time) bool { return t.After(e.OpenedAt) && !t.After(e.Until) }

// WatchKey returns the key of the watch entry of user userName in account.
func WatchKey(account, userName string) string {
	return WatchKeyPrefix + account + "/" + strings.ToLower(userName)
}

// ParseWatchKey returns the account and lowercase user name of an entry's
// key. The account holds no "/" (it is twelve digits); the user name is
// the rest of the key.
func ParseWatchKey(key []byte) (account, userName string, err error) {
	rest, ok := bytes.CutPrefix(key, []byte(WatchKeyPrefix))
	if !ok {
		return "", "", fmt.Errorf("%w: key %q does not start with %q", ErrBadWatchEntry, key, WatchKeyPrefix)
	}
	a, u, ok := bytes.Cut(rest, []byte("/"))
	if !ok || len(a) == 0 || len(u) == 0 {
		return "", "", fmt.Errorf("%w: key %q is not %s<account>/<user>", ErrBadWatchEntry, key, WatchKeyPrefix)
	}
	if lower := strings.ToLower(string(u)); lower != string(u) {
		return "", "", fmt.Errorf("%w: key %q: the user name is not lowercase", ErrBadWatchEntry, key)
	}
	return string(a), string(u), nil
}

// NewWatchEntry returns the watch entry that finding f opens: f was read
// from src, whose record timestamp is srcTime; the watch lasts watchFor
// after the event, and the context document looks back lookback before
// it. It fails for a finding that names no IAM user or account, or whose
// event time is not RFC 3339: there is no window to watch.
func NewWatchEntry(f matcher.Finding, src Source, srcTime time.Time, watchFor, lookback time.Duration) (WatchEntry, error) {
	if f.Rule == nil {
		return WatchEntry{}, ErrNoRule
	}
	e := &f.Event
	if e.TargetKind != matcher.TargetUser || e.TargetName == "" {
		return WatchEntry{}, ErrNoTargetUser
	}
	account := cmp.Or(e.RecipientAccountID, e.UserIdentity.AccountID)
	if account == "" || strings.Contains(account, "/") {
		return WatchEntry{}, fmt.Errorf("%w (%q)", ErrNoWatchAccount, account)
	}
	if watchFor <= 0 {
		return WatchEntry{}, fmt.Errorf("producer: watch entry: watch duration %v must be positive", watchFor)
	}
	opened, err := time.Parse(time.RFC3339Nano, e.EventTime)
	if err != nil {
		return WatchEntry{}, fmt.Errorf("producer: watch entry: eventTime %q: %w", e.EventTime, err)
	}
	opened = opened.UTC()
	return WatchEntry{
		Account: account, UserName: e.TargetName,
		AlertID: EventAlertID(f.Rule.ID, e), RuleID: f.Rule.ID,
		OpenedAt: opened, Until: opened.Add(watchFor),
		Source:   WatchSource{Topic: src.Topic, Partition: src.Partition, Offset: src.Offset, Timestamp: srcTime.UTC()},
		Lookback: lookback,
	}, nil
}

// watchEntryJSON is the entry on the topic.
type watchEntryJSON struct {
	Schema   int             `json:"schema"`
	Account  string          `json:"account"`
	UserName string          `json:"user_name"`
	AlertID  string          `json:"alert_id"`
	RuleID   string          `json:"rule_id"`
	OpenedAt string          `json:"opened_at"`
	Until    string          `json:"until"`
	Source   watchSourceJSON `json:"source"`
	Lookback string          `json:"lookback"`
}

type watchSourceJSON struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Timestamp string `json:"timestamp"`
}

// EncodeWatchEntry returns the entry's record value, one line of JSON:
//
//	{"schema":1,"account":"123456789012","user_name":"Alice","alert_id":"…","rule_id":"…",
//	 "opened_at":"2023-11-21T23:23:52Z","until":"2023-11-24T23:23:52Z",
//	 "source":{"topic":"cloudtrail","partition":3,"offset":1234,"timestamp":"…"},"lookback":"24h0m0s"}
//
// Times are RFC 3339 in UTC, the look-back a Go duration. It refuses an
// entry DecodeWatchEntry would refuse, so that nothing this service writes
// is skipped by its readers.
func EncodeWatchEntry(e WatchEntry) ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(watchEntryJSON{
		Schema: WatchEntrySchema, Account: e.Account, UserName: e.UserName, AlertID: e.AlertID, RuleID: e.RuleID,
		OpenedAt: ts(e.OpenedAt), Until: ts(e.Until),
		Source:   watchSourceJSON{Topic: e.Source.Topic, Partition: e.Source.Partition, Offset: e.Source.Offset, Timestamp: ts(e.Source.Timestamp)},
		Lookback: e.Lookback.String(),
	})
	if err != nil {
		return nil, fmt.Errorf("producer: encoding watch entry: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// DecodeWatchEntry decodes the entry of a record with key and value. The
// value must be a known schema's JSON with every field set and valid, and
// the key must be the entry's WatchKey. A tombstone (nil value) is not an
// entry: callers check for it first (ParseWatchKey reads its key). Every
// error wraps ErrBadWatchEntry.
func DecodeWatchEntry(key, value []byte) (WatchEntry, error) {
	bad := func(format string, args ...any) (WatchEntry, error) {
		return WatchEntry{}, fmt.Errorf("%w: key %q: %s", ErrBadWatchEntry, key, fmt.Sprintf(format, args...))
	}
	if value == nil {
		return bad("a tombstone has no entry")
	}
	// The schema first: a later schema may change any other field.
	var head struct {
		Schema *int `json:"schema"`
	}
	if err := json.Unmarshal(value, &head); err != nil {
		return bad("value is not a JSON object: %v", err)
	}
	switch {
	case head.Schema == nil:
		return bad(`no "schema"`)
	case *head.Schema != WatchEntrySchema:
		return bad("schema %d: this version reads schema %d", *head.Schema, WatchEntrySchema)
	}
	var w watchEntryJSON
	if err := json.Unmarshal(value, &w); err != nil {
		return bad("%v", err)
	}
	e := WatchEntry{
		Account: w.Account, UserName: w.UserName, AlertID: w.AlertID, RuleID: w.RuleID,
		Source: WatchSource{Topic: w.Source.Topic, Partition: w.Source.Partition, Offset: w.Source.Offset},
	}
	times := []struct {
		name, s string
		t       *time.Time
	}{{"opened_at", w.OpenedAt, &e.OpenedAt}, {"until", w.Until, &e.Until}, {"source.timestamp", w.Source.Timestamp, &e.Source.Timestamp}}
	for _, f := range times {
		t, err := time.Parse(time.RFC3339Nano, f.s)
		if err != nil {
			return bad("%s %q is not an RFC 3339 time", f.name, f.s)
		}
		*f.t = t.UTC()
	}
	lb, err := time.ParseDuration(w.Lookback)
	if err != nil {
		return bad("lookback %q is not a duration", w.Lookback)
	}
	e.Lookback = lb
	if err := e.validate(); err != nil {
		return WatchEntry{}, fmt.Errorf("%w: key %q", err, key)
	}
	if want := e.Key(); string(key) != want {
		return bad("the entry is for %q", want)
	}
	return e, nil
}

// validate checks what both ends of the encoding require.
func (e *WatchEntry) validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"account", e.Account}, {"user_name", e.UserName}, {"alert_id", e.AlertID}, {"rule_id", e.RuleID}, {"source.topic", e.Source.Topic},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	switch {
	case len(missing) > 0:
		return fmt.Errorf("%w: %s empty", ErrBadWatchEntry, strings.Join(missing, ", "))
	case !isAlertID(e.AlertID):
		return fmt.Errorf("%w: alert_id %q is not an alert id (64 lowercase hex digits)", ErrBadWatchEntry, e.AlertID)
	case strings.Contains(e.Account, "/"):
		return fmt.Errorf("%w: account %q holds a /", ErrBadWatchEntry, e.Account)
	case e.OpenedAt.IsZero() || e.Until.IsZero():
		return fmt.Errorf("%w: opened_at or until is zero", ErrBadWatchEntry)
	case !e.Until.After(e.OpenedAt):
		return fmt.Errorf("%w: until %s is not after opened_at %s", ErrBadWatchEntry,
			e.Until.UTC().Format(time.RFC3339Nano), e.OpenedAt.UTC().Format(time.RFC3339Nano))
	case e.Source.Partition < 0 || e.Source.Offset < 0:
		return fmt.Errorf("%w: source partition %d, offset %d: negative", ErrBadWatchEntry, e.Source.Partition, e.Source.Offset)
	case e.Lookback < 0:
		return fmt.Errorf("%w: lookback %v is negative", ErrBadWatchEntry, e.Lookback)
	}
	return nil
}

// isAlertID reports whether s has the form of an alert id (AlertID).
func isAlertID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// WatchRecord returns the record of entry e, to be produced to topic (the
// watchlist topic) in the transaction of the finding that opened it. Its
// timestamp is the detection time, as the alert's.
func WatchRecord(e WatchEntry, topic string, detected time.Time) (*kgo.Record, error) {
	if detected.IsZero() {
		return nil, ErrNoDetectionTime
	}
	value, err := EncodeWatchEntry(e)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(e.Key()),
		Value:     value,
		Timestamp: detected,
		Headers: []kgo.RecordHeader{
			{Key: HeaderContentType, Value: []byte(ContentTypeJSON)},
			{Key: HeaderRuleID, Value: []byte(e.RuleID)},
			{Key: HeaderSchemaVersion, Value: []byte(strconv.Itoa(WatchEntrySchema))},
		},
	}, nil
}

// WatchTombstone returns the record that removes the entry of userName in
// account: the entry's key with a nil value. The operator's `watchlist
// end` writes it with the watch's end record (WatchEndRecord).
func WatchTombstone(account, userName, topic string) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(WatchKey(account, userName))}
}

// End records: an operator ended a watch. The key is WatchEndKey,
// "end/<account>/<lowercase user name>", a key of its own so that
// compaction keeps it beside whatever the entry's key holds later; the
// value is the ended entry, as EncodeWatchEntry writes it. A quarantine
// whose event is at or before the ended entry's (the same event delivered
// again, a backfill) does not open the watch again; a later one does. An
// end record is placed on the partition of its entry's key, so that a
// reader of that partition meets it before any entry written after it.

// WatchEndKeyPrefix starts the key of every end record.
const WatchEndKeyPrefix = "end/"

// WatchEndKey returns the key of the end record of userName in account.
func WatchEndKey(account, userName string) string {
	return WatchEndKeyPrefix + account + "/" + strings.ToLower(userName)
}

// WatchEndRecord returns the record that ends the watch of entry e, to be
// produced to topic (the watchlist topic) at the time ended.
func WatchEndRecord(e WatchEntry, topic string, ended time.Time) (*kgo.Record, error) {
	r, err := WatchRecord(e, topic, ended)
	if err != nil {
		return nil, err
	}
	r.Key = []byte(WatchEndKey(e.Account, e.UserName))
	return r, nil
}

// DecodeWatchEnd decodes an end record: the entry whose watch was ended.
// Every error wraps ErrBadWatchEntry.
func DecodeWatchEnd(key, value []byte) (WatchEntry, error) {
	entryKey, ok := EndedWatchKey(key)
	if !ok {
		return WatchEntry{}, fmt.Errorf("%w: key %q does not start with %q", ErrBadWatchEntry, key, WatchEndKeyPrefix)
	}
	return DecodeWatchEntry([]byte(entryKey), value)
}

// EndedWatchKey returns the entry key an end record's key names.
func EndedWatchKey(key []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(key, []byte(WatchEndKeyPrefix))
	return WatchKeyPrefix + string(rest), ok
}

// Markers (the no-gap protocol, docs/rules.md): where a watch entry began
// to apply on one source partition. The main loop writes one per entry and
// partition it owns, in the transaction of the first batch it matches with
// the entry: offset is the first offset of that batch on the partition,
// or the partition's position when the batch has none of it, or -1 when
// the group had neither committed nor consumed it (every record of it is
// matched with the entry). The case worker covers the offsets below it.
// The key is WatchMarkKey; the value one line of JSON:
//
//	{"schema":1,"alert_id":"…","topic":"cloudtrail","partition":3,"offset":1234}

// WatchMarkKeyPrefix starts the key of every marker.
const WatchMarkKeyPrefix = "mark/"

// WatchMark is one marker.
type WatchMark struct {
	AlertID   string // the watch entry's
	Topic     string
	Partition int32
	// Offset is the first offset matched with the entry; -1 for every one.
	Offset int64
}

// WatchMarkKey returns the key of the marker of the entry of alertID on
// topic's partition: "mark/<alert id>/<topic>/<partition>". Topic names
// hold no "/" (Kafka allows letters, digits, ".", "_" and "-").
func WatchMarkKey(alertID, topic string, partition int32) string {
	return WatchMarkKeyPrefix + alertID + "/" + topic + "/" + strconv.Itoa(int(partition))
}

type watchMarkJSON struct {
	Schema    int    `json:"schema"`
	AlertID   string `json:"alert_id"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

func (m *WatchMark) validate() error {
	switch {
	case !isAlertID(m.AlertID):
		return fmt.Errorf("%w: marker: alert_id %q is not an alert id", ErrBadWatchEntry, m.AlertID)
	case m.Topic == "" || strings.Contains(m.Topic, "/"):
		return fmt.Errorf("%w: marker: topic %q", ErrBadWatchEntry, m.Topic)
	case m.Partition < 0 || m.Offset < -1:
		return fmt.Errorf("%w: marker: partition %d, offset %d", ErrBadWatchEntry, m.Partition, m.Offset)
	}
	return nil
}

// WatchMarkRecord returns marker m's record, to be produced to topic (the
// watchlist topic) in the transaction of the batch it marks.
func WatchMarkRecord(m WatchMark, topic string) (*kgo.Record, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	value, err := json.Marshal(watchMarkJSON{Schema: WatchEntrySchema, AlertID: m.AlertID, Topic: m.Topic, Partition: m.Partition, Offset: m.Offset})
	if err != nil {
		return nil, fmt.Errorf("producer: encoding marker: %w", err)
	}
	return &kgo.Record{
		Topic: topic, Key: []byte(WatchMarkKey(m.AlertID, m.Topic, m.Partition)), Value: value,
		Headers: []kgo.RecordHeader{
			{Key: HeaderContentType, Value: []byte(ContentTypeJSON)},
			{Key: HeaderSchemaVersion, Value: []byte(strconv.Itoa(WatchEntrySchema))},
		},
	}, nil
}

// DecodeWatchMark decodes the marker of a record with key and value; the
// key must be the marker's. Every error wraps ErrBadWatchEntry.
func DecodeWatchMark(key, value []byte) (WatchMark, error) {
	var j watchMarkJSON
	if err := json.Unmarshal(value, &j); err != nil {
		return WatchMark{}, fmt.Errorf("%w: key %q: marker value: %v", ErrBadWatchEntry, key, err)
	}
	if j.Schema != WatchEntrySchema {
		return WatchMark{}, fmt.Errorf("%w: key %q: marker schema %d: this version reads schema %d", ErrBadWatchEntry, key, j.Schema, WatchEntrySchema)
	}
	m := WatchMark{AlertID: j.AlertID, Topic: j.Topic, Partition: j.Partition, Offset: j.Offset}
	if err := m.validate(); err != nil {
		return WatchMark{}, fmt.Errorf("%w (key %q)", err, key)
	}
	if want := WatchMarkKey(m.AlertID, m.Topic, m.Partition); string(key) != want {
		return WatchMark{}, fmt.Errorf("%w: key %q: the marker is for %q", ErrBadWatchEntry, key, want)
	}
	return m, nil
}
