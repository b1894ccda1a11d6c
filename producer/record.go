package producer

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// Header keys set on alert and dead-letter records.
const (
	HeaderContentType   = "content-type"
	HeaderRuleID        = "rule-id"
	HeaderSchemaVersion = "schema-version"
	HeaderAlertFormat   = "alert-format"

	HeaderError           = "error"
	HeaderErrorClass      = "error-class"
	HeaderSourceTopic     = "source-topic"
	HeaderSourcePartition = "source-partition"
	HeaderSourceOffset    = "source-offset"
)

// ContentTypeJSON is the content-type header of every alert format so far.
const ContentTypeJSON = "application/json"

// ErrNoRule is returned when a finding has no rule: there is no rule id to
// derive the alert id from, so no alert can be written.
var ErrNoRule = errors.New("producer: finding has no rule")

// ErrNoDetectionTime is returned when the detection time is zero, which
// means a caller forgot to pass its clock's time rather than a real
// detection at year one.
var ErrNoDetectionTime = errors.New("producer: detection time is zero")

// Source is where a finding (or a dead letter) was read from: the input
// record's topic, partition and offset.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Encoder turns a finding into an alert document of one format. ECS is the
// default; a second format (OCSF, say) implements Encoder and is passed to
// EncodeRecord, which keeps the key, headers and timestamp the same for
// every format.
type Encoder interface {
	// Format names the format in the alert-format header, e.g. "ecs".
	Format() string
	// SchemaVersion is the version of the document's shape, sent in the
	// schema-version header so readers can refuse shapes they do not know.
	SchemaVersion() string
	// Encode returns the JSON document for f, read from src and detected at
	// detected. It must not read the clock.
	Encode(f matcher.Finding, src Source, detected time.Time) ([]byte, error)
}

// Record returns the ECS alert record for f, to be produced to topic. See
// EncodeRecord for the record's key, headers and timestamp.
func Record(f matcher.Finding, src Source, detected time.Time, topic string) (*kgo.Record, error) {
	return EncodeRecord(ECS{}, f, src, detected, topic)
}

// EncodeRecord returns the alert record for f in enc's format, to be
// produced to topic. The key is FindingAlertID(&f), so all
// alerts about one event land on one partition and a compacted topic keeps
// one of them. The headers are content-type, rule-id, schema-version and
// alert-format. The timestamp is the detection time, not the event time:
// Kafka's time-based retention would delete alerts about old events (a
// replayed S3 backlog) as soon as they were written.
func EncodeRecord(enc Encoder, f matcher.Finding, src Source, detected time.Time, topic string) (*kgo.Record, error) {
	if f.Rule == nil {
		return nil, ErrNoRule
	}
	if detected.IsZero() {
		return nil, ErrNoDetectionTime
	}
	value, err := enc.Encode(f, src, detected)
	if err != nil {
		return nil, fmt.Errorf("producer: encoding %s alert for rule %s: %w", enc.Format(), f.Rule.ID, err)
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(FindingAlertID(&f)),
		Value:     value,
		Timestamp: detected,
		Headers: []kgo.RecordHeader{
			{Key: HeaderContentType, Value: []byte(ContentTypeJSON)},
			{Key: HeaderRuleID, Value: []byte(f.Rule.ID)},
			{Key: HeaderSchemaVersion, Value: []byte(enc.SchemaVersion())},
			{Key: HeaderAlertFormat, Value: []byte(enc.Format())},
		},
	}, nil
}
