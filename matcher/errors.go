package matcher

import (
	"errors"
	"fmt"
)

// Sentinel errors that an *InputError matches with errors.Is. Each names a
// reason a record value cannot be evaluated; the consumer sends such records
// to the dead-letter topic.
var (
	// ErrTooLarge: the value, or what it decompresses to, is over the configured limit.
	ErrTooLarge = errors.New("too large")
	// ErrMalformedJSON: the value is not valid JSON, or is nested deeper than JSON decoders accept.
	ErrMalformedJSON = errors.New("malformed JSON")
	// ErrBadEncoding: the value is not valid UTF-8 or holds bytes JSON forbids.
	ErrBadEncoding = errors.New("bad encoding")
	// ErrBadCompression: a gzip or base64 payload that does not decode.
	ErrBadCompression = errors.New("bad compression")
	// ErrUnknownShape: valid JSON in none of the shapes CloudTrail is delivered in.
	ErrUnknownShape = errors.New("unknown shape")
	// ErrTooComplex: a JSON document in the value nests deeper, or holds
	// more object members or array elements, than Config allows.
	ErrTooComplex = errors.New("too complex")
	// ErrInternal: the matcher itself panicked on the value, a bug; the
	// panic was recovered so the value can be set aside and looked at.
	ErrInternal = errors.New("internal error")
)

var errorClasses = map[error]string{
	ErrTooLarge:       "too_large",
	ErrMalformedJSON:  "malformed_json",
	ErrBadEncoding:    "bad_encoding",
	ErrBadCompression: "bad_compression",
	ErrUnknownShape:   "unknown_shape",
	ErrTooComplex:     "too_complex",
	ErrInternal:       "internal_error",
}

// InputError says why a record value, or one event inside it, could not be
// evaluated.
type InputError struct {
	Kind error // one of the sentinel errors above
	// Event is the index of the event inside the value, or -1 when the
	// value as a whole is at fault.
	Event int
	// Offset is the byte offset of the fault in the decoded payload where known, else -1.
	Offset int64
	Detail string
}

func (e *InputError) Error() string {
	var where string
	if e.Event >= 0 {
		where = fmt.Sprintf(" in event %d", e.Event)
	}
	if e.Offset >= 0 {
		where += fmt.Sprintf(" at byte %d", e.Offset)
	}
	return fmt.Sprintf("matcher: %s%s: %s", e.Kind, where, e.Detail)
}

// Unwrap lets errors.Is match the sentinel Kind.
func (e *InputError) Unwrap() error { return e.Kind }

// Class is a short fixed label for the error, fit for a metric label or a
// dead-letter header.
func (e *InputError) Class() string {
	if c, ok := errorClasses[e.Kind]; ok {
		return c
	}
	return "unknown"
}

func inputError(kind error, event int, offset int64, format string, args ...any) *InputError {
	return &InputError{Kind: kind, Event: event, Offset: offset, Detail: fmt.Sprintf(format, args...)}
}
