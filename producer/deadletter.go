package producer

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

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
	ClassTooComplex     = "too_complex"
	ClassInternal       = "internal_error"
	ClassUnknown        = "unknown"
	// ClassAlertTooLarge: a finding's alert does not fit the alerts topic
	// even cut (see FitAlert); the source record is the dead letter.
	ClassAlertTooLarge = "alert_too_large"
	// ClassOutputRejected: the broker refused an output of the record (an
	// alert or a dead letter) for something about that record alone, such
	// as INVALID_RECORD; the error header has the broker's answer.
	ClassOutputRejected = "output_rejected"
)

var knownClasses = map[string]bool{
	ClassMalformedJSON:  true,
	ClassTooLarge:       true,
	ClassBadEncoding:    true,
	ClassBadCompression: true,
	ClassUnknownShape:   true,
	ClassTooComplex:     true,
	ClassInternal:       true,
	ClassUnknown:        true,
	ClassAlertTooLarge:  true,
	ClassOutputRejected: true,
}

// maxErrorHeader caps the error header: an error message may quote the
// input, and the dead letter must stay producible however large that was.
const maxErrorHeader = 1024

// The headers of a dead letter that was cut to fit its topic: each holds
// the length of the whole key or value, as decimal text.
const (
	HeaderKeyTruncated   = "key-truncated"
	HeaderValueTruncated = "value-truncated"
)

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
// because of cause, cut to fit limit bytes (RecordBytes): the dead-letter
// topic's max.message.bytes, at least MinMessageBytes.
//
// Value and key are copied byte for byte, nil staying nil and empty staying
// empty, so poison input (invalid UTF-8, NUL bytes, a truncated gzip stream)
// can be replayed exactly. The headers are error (cause.Error(), at most
// 1 KiB), error-class (Classify(cause)), source-topic, source-partition and
// source-offset. The timestamp is left to the client (the time it is
// produced).
//
// A record that would not fit is cut: the error text to at most a quarter
// of the room left by the other headers, then the value and the key, each to
// a prefix, the key keeping at least half of the room when both are long.
// The headers value-truncated and key-truncated then give the whole
// lengths; the source headers still point at the whole record.
func DeadLetter(value, key []byte, src Source, cause error, topic string, limit int) *kgo.Record {
	msg := ClassUnknown
	if cause != nil {
		msg = cause.Error()
	}
	headers := []kgo.RecordHeader{
		{Key: HeaderError}, // the message, once cut
		{Key: HeaderErrorClass, Value: []byte(Classify(cause))},
		{Key: HeaderSourceTopic, Value: []byte(src.Topic)},
		{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(src.Partition), 10)},
		{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, src.Offset, 10)},
	}
	limit = max(limit, MinMessageBytes)
	fixed := batchOverhead
	for _, h := range headers {
		fixed += headerOverhead + len(h.Key) + len(h.Value)
	}
	msgCap := maxErrorHeader
	if fixed+min(len(msg), msgCap)+len(key)+len(value) > limit {
		// Both truncation headers may be needed, with up to 20 digits.
		fixed += 2 * (headerOverhead + len(HeaderValueTruncated) + 20)
		msgCap = min(msgCap, max(limit-fixed, 0)/4)
	}
	msg = cutUTF8(msg, msgCap)
	headers[0].Value = []byte(msg)
	keep := func(b []byte, n int, header string) []byte {
		if len(b) <= n {
			return b
		}
		headers = append(headers, kgo.RecordHeader{Key: header, Value: strconv.AppendInt(nil, int64(len(b)), 10)})
		return b[:n]
	}
	if room := max(limit-fixed-len(msg), 0); len(key)+len(value) > room {
		keyCap := min(len(key), max(room/2, room-len(value)))
		key = keep(key, keyCap, HeaderKeyTruncated)
		value = keep(value, room-len(key), HeaderValueTruncated)
	}
	return &kgo.Record{
		Topic: topic,
		// Copies, because the caller may reuse its buffers once the
		// record is handed to the client, and produce is asynchronous.
		Key:     bytes.Clone(key),
		Value:   bytes.Clone(value),
		Headers: headers,
	}
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not
// end inside a UTF-8 sequence.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// strippedErrorHeader caps the error header of a stripped dead letter.
const strippedErrorHeader = 256

// StripDeadLetter returns a copy of the dead letter r without its key and
// value, for a dead-letter topic that refused r: its headers are kept, the
// error cut to 256 bytes, and key-truncated and value-truncated give the
// whole lengths (those r had, or those r's own headers gave when it was cut
// already). The source headers still point at the record.
func StripDeadLetter(r *kgo.Record) *kgo.Record {
	headers := make([]kgo.RecordHeader, 0, len(r.Headers)+2)
	seen := map[string]bool{}
	for _, h := range r.Headers {
		if h.Key == HeaderError {
			h.Value = []byte(cutUTF8(string(h.Value), strippedErrorHeader))
		}
		seen[h.Key] = true
		headers = append(headers, h)
	}
	for _, part := range []struct {
		header string
		b      []byte
	}{{HeaderKeyTruncated, r.Key}, {HeaderValueTruncated, r.Value}} {
		if len(part.b) > 0 && !seen[part.header] {
			headers = append(headers, kgo.RecordHeader{Key: part.header, Value: strconv.AppendInt(nil, int64(len(part.b)), 10)})
		}
	}
	return &kgo.Record{Topic: r.Topic, Headers: headers}
}
