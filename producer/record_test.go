package producer

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

func TestRecord(t *testing.T) {
	src := Source{Topic: "cloudtrail", Partition: 7, Offset: 99}
	tests := []struct {
		name    string
		finding matcher.Finding
		wantKey string
	}{
		{"quarantine V2", sampleFinding(t, quarantineV2, matcher.ShapeRecord), "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd"},
		{"legacy inline policy", sampleFinding(t, "10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json", matcher.ShapeRecord),
			AlertID(ruleID, "1c2a53d1-58cc-41b3-85b8-bd7565370e0d")},
		{"no eventID", sampleFinding(t, "05_s3_object_Records_iam_addusertogroup_awsdocs.json", matcher.ShapeS3Object),
			EventAlertID(ruleID, &matcher.Event{Original: sampleEvent(t, "05_s3_object_Records_iam_addusertogroup_awsdocs.json").Original})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Record(tt.finding, src, detected, "alerts")
			if err != nil {
				t.Fatal(err)
			}
			validate(t, r.Value)
			if r.Topic != "alerts" {
				t.Errorf("topic = %q", r.Topic)
			}
			if string(r.Key) != tt.wantKey {
				t.Errorf("key = %s, want %s", r.Key, tt.wantKey)
			}
			if !r.Timestamp.Equal(detected) {
				t.Errorf("timestamp = %v, want the detection time %v", r.Timestamp, detected)
			}
			want := []kgo.RecordHeader{
				{Key: "content-type", Value: []byte("application/json")},
				{Key: "rule-id", Value: []byte(ruleID)},
				{Key: "schema-version", Value: []byte("1")},
				{Key: "alert-format", Value: []byte("ecs")},
			}
			if !reflect.DeepEqual(r.Headers, want) {
				t.Errorf("headers = %s, want %s", headerText(r.Headers), headerText(want))
			}
			var doc struct {
				QW struct {
					AlertID string `json:"alert_id"`
					Source  struct {
						Topic     string `json:"topic"`
						Partition int32  `json:"partition"`
						Offset    int64  `json:"offset"`
					} `json:"source"`
				} `json:"quarantine_watch"`
			}
			if err := json.Unmarshal(r.Value, &doc); err != nil {
				t.Fatal(err)
			}
			if doc.QW.AlertID != string(r.Key) {
				t.Errorf("document alert_id %s differs from key %s", doc.QW.AlertID, r.Key)
			}
			if got := (Source{doc.QW.Source.Topic, doc.QW.Source.Partition, doc.QW.Source.Offset}); got != src {
				t.Errorf("document source = %+v, want %+v", got, src)
			}
		})
	}
}

func TestRecordErrors(t *testing.T) {
	f := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	if _, err := Record(matcher.Finding{Event: f.Event}, Source{}, detected, "alerts"); !errors.Is(err, ErrNoRule) {
		t.Errorf("no rule: err = %v, want ErrNoRule", err)
	}
	if _, err := Record(f, Source{}, time.Time{}, "alerts"); !errors.Is(err, ErrNoDetectionTime) {
		t.Errorf("zero time: err = %v, want ErrNoDetectionTime", err)
	}
	boom := errors.New("boom")
	_, err := EncodeRecord(fakeEncoder{err: boom}, f, Source{}, detected, "alerts")
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "producer: encoding fake alert for rule "+ruleID) {
		t.Errorf("encoder failure: err = %v", err)
	}
}

// TestEncodeRecordOtherFormat shows a second format slots in: key and
// headers stay, alert-format and schema-version come from the encoder.
func TestEncodeRecordOtherFormat(t *testing.T) {
	f := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	r, err := EncodeRecord(fakeEncoder{}, f, Source{}, detected, "alerts-ocsf")
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Value) != `{"class_uid":2004}` {
		t.Errorf("value = %s", r.Value)
	}
	if string(r.Key) != EventAlertID(ruleID, &f.Event) {
		t.Errorf("key = %s", r.Key)
	}
	h := headerMap(r.Headers)
	if h["alert-format"] != "fake" || h["schema-version"] != "9" || h["rule-id"] != ruleID {
		t.Errorf("headers = %v", h)
	}
}

type fakeEncoder struct{ err error }

func (fakeEncoder) Format() string        { return "fake" }
func (fakeEncoder) SchemaVersion() string { return "9" }
func (e fakeEncoder) Encode(matcher.Finding, Source, time.Time) ([]byte, error) {
	if e.err != nil {
		return nil, e.err
	}
	return []byte(`{"class_uid":2004}`), nil
}

func headerMap(hs []kgo.RecordHeader) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[h.Key] = string(h.Value)
	}
	return m
}

func headerText(hs []kgo.RecordHeader) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(h.Key + "=" + string(h.Value) + " ")
	}
	return b.String()
}

func BenchmarkRecord(b *testing.B) {
	f := sampleFinding(b, quarantineV2, matcher.ShapeRecord)
	src := Source{Topic: "cloudtrail", Partition: 3, Offset: 1234}
	b.SetBytes(int64(len(f.Event.Original)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Record(f, src, detected, "alerts"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordBaseline is the part of Record no format can avoid:
// escaping the original event into a JSON string.
func BenchmarkRecordBaseline(b *testing.B) {
	f := sampleFinding(b, quarantineV2, matcher.ShapeRecord)
	b.SetBytes(int64(len(f.Event.Original)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(string(f.Event.Original)); err != nil {
			b.Fatal(err)
		}
	}
}
