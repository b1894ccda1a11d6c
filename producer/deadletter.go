package producer

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The error-class header values of dead-letter records: a small fixed set,
// fit for a metric label.
const (
	ClassMalformedJSON  = "malformed_json"
	ClassTooLarge       = "too_large"
	ClassBadEncoding    = "bad_encoding"
	ClassBadCompression = "bad_compression"
	ClassUnknownShape   = "unknown_shape"
	ClassInternal       = "internal_error"
	ClassUnknown        = "unknown"
)

var knownClasses = map[string]bool{
	ClassMalformedJSON:  true,
	ClassTooLarge:       true,
	ClassBadEncoding:    true,
	ClassBadCompression: true,
	ClassUnknownShape:   true,
	ClassInternal:       true,
	ClassUnknown:        true,
}

// maxErrorHeader caps the error header: an error message may quote the
// input, and the dead letter must stay producible however large that was.
const maxErrorHeader = 1024

// MaxDeadLetterValue caps a dead letter's value below Kafka's default
// max.message.bytes (1 MiB), so that a poison record too large for the
// dead-letter topic cannot stall the group by failing every transaction.
// A longer value is cut, and the header value-truncated gives its length;
// the source headers still point at the whole record.
const MaxDeadLetterValue = 960 << 10

// HeaderValueTruncated is set on a dead letter whose value was cut to
// MaxDeadLetterValue; its value is the original length.
const HeaderValueTruncated = "value-truncated"

// Classify returns the error class of err, one of the Class constants.
//
// The matcher decides: the first error in err's chain (errors.As) that has
// a method
//
//	Class() string
//
// names the class, so the matcher's input errors classify themselves and
// this package imports none of its sentinels. A Class() value outside the
// fixed set is ClassUnknown, so a header value never appears that dashboards
// and alerts on it do not know. Errors without the method fall back to the
// standard library's decoding errors (JSON syntax and type errors, corrupt
// base64, gzip and flate data); anything else, and a nil err, is
// ClassUnknown.
func Classify(err error) string {
	if err == nil {
		return ClassUnknown
	}
	var c interface{ Class() string }
	if errors.As(err, &c) {
		if class := c.Class(); knownClasses[class] {
			return class
		}
		return ClassUnknown
	}
	var (
		syntax  *json.SyntaxError
		typ     *json.UnmarshalTypeError
		b64     base64.CorruptInputError
		corrupt flate.CorruptInputError
	)
	switch {
	case errors.As(err, &syntax), errors.As(err, &typ):
		return ClassMalformedJSON
	case errors.As(err, &b64):
		return ClassBadEncoding
	case errors.As(err, &corrupt), errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum):
		return ClassBadCompression
	}
	return ClassUnknown
}

// DeadLetter returns the dead-letter record, to be produced to topic, for
// an input record (value, key) read from src that could not be evaluated
// because of cause. Value and key are copied byte for byte, nil staying nil
// and empty staying empty, so poison input (invalid UTF-8, NUL bytes, a
// truncated gzip stream) can be replayed exactly. The headers are error
// (cause.Error(), at most 1 KiB), error-class (Classify(cause)),
// source-topic, source-partition and source-offset. The timestamp is left
// to the client (the time it is produced).
func DeadLetter(value, key []byte, src Source, cause error, topic string) *kgo.Record {
	msg := ClassUnknown
	if cause != nil {
		msg = cause.Error()
	}
	if len(msg) > maxErrorHeader {
		msg = msg[:maxErrorHeader]
	}
	var truncated []kgo.RecordHeader
	if len(value) > MaxDeadLetterValue {
		truncated = append(truncated, kgo.RecordHeader{Key: HeaderValueTruncated, Value: strconv.AppendInt(nil, int64(len(value)), 10)})
		value = value[:MaxDeadLetterValue]
	}
	return &kgo.Record{
		Topic: topic,
		// Copies, because the caller may reuse its buffers once the
		// record is handed to the client, and produce is asynchronous.
		Key:   bytes.Clone(key),
		Value: bytes.Clone(value),
		Headers: append([]kgo.RecordHeader{
			{Key: HeaderError, Value: []byte(msg)},
			{Key: HeaderErrorClass, Value: []byte(Classify(cause))},
			{Key: HeaderSourceTopic, Value: []byte(src.Topic)},
			{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(src.Partition), 10)},
			{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, src.Offset, 10)},
		}, truncated...),
	}
}
