package cloudtrailgen

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// The naive oracle: decode a record value the slow, obvious way with the
// standard library and evaluate the Elastic rule on what comes out. It
// shares no code with the generator, so tests can hold the generator's
// account of each record against it.

// naiveEvent is what the oracle finds out about one event.
type naiveEvent struct {
	ID, Name, Account, UserName, PolicyARN string
	Positive                               bool
	Marker                                 bool // the marker appears anywhere in the event
}

// naiveDecode finds the shape of v by its content and returns its events.
func naiveDecode(v []byte) (Shape, []naiveEvent, error) {
	if len(v) == 0 {
		return ShapeUnknown, nil, errors.New("empty value")
	}
	if bytes.HasPrefix(v, []byte{0x1f, 0x8b}) {
		doc, err := gunzip(v)
		if err != nil {
			return ShapeCloudWatchGzip, nil, err
		}
		evs, err := naiveCloudWatch(doc)
		return ShapeCloudWatchGzip, evs, err
	}
	if z, err := base64.StdEncoding.DecodeString(string(v)); err == nil && bytes.HasPrefix(z, []byte{0x1f, 0x8b}) {
		doc, err := gunzip(z)
		if err != nil {
			return ShapeCloudWatchBase64, nil, err
		}
		evs, err := naiveCloudWatch(doc)
		return ShapeCloudWatchBase64, evs, err
	}
	doc, err := parseObject(v)
	if err != nil {
		return ShapeUnknown, nil, err
	}
	switch {
	case doc["awslogs"] != nil:
		data, _ := dig(doc, "awslogs", "data").(string)
		z, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return ShapeCloudWatchAWSLogs, nil, err
		}
		payload, err := gunzip(z)
		if err != nil {
			return ShapeCloudWatchAWSLogs, nil, err
		}
		evs, err := naiveCloudWatch(payload)
		return ShapeCloudWatchAWSLogs, evs, err
	case doc["Records"] != nil:
		recs, ok := doc["Records"].([]any)
		if !ok {
			return ShapeS3Object, nil, errors.New("Records is not an array")
		}
		var evs []naiveEvent
		for _, r := range recs {
			m, ok := r.(map[string]any)
			if !ok {
				return ShapeS3Object, nil, errors.New("a record is not an object")
			}
			evs = append(evs, naiveRecord(m))
		}
		return ShapeS3Object, evs, nil
	case doc["detail-type"] != nil:
		m, ok := doc["detail"].(map[string]any)
		if !ok {
			return ShapeEventBridge, nil, errors.New("detail is not an object")
		}
		return ShapeEventBridge, []naiveEvent{naiveRecord(m)}, nil
	case doc["logEvents"] != nil:
		evs, err := naiveCloudWatch(v)
		return ShapeCloudWatchLogs, evs, err
	case doc["message"] != nil:
		msg, _ := doc["message"].(string)
		m, err := parseObject([]byte(msg))
		if err != nil {
			return ShapeAgentMessage, nil, fmt.Errorf("message: %w", err)
		}
		return ShapeAgentMessage, []naiveEvent{naiveRecord(m)}, nil
	case dig(doc, "event", "action") != nil:
		e, err := naiveECS(doc)
		return ShapeECS, []naiveEvent{e}, err
	}
	return ShapeRecord, []naiveEvent{naiveRecord(doc)}, nil
}

// naiveRecord evaluates the rule on a CloudTrail record: eventName is
// AttachUserPolicy, the outcome is success (no non-empty errorCode or
// errorMessage) and the request parameters contain the marker.
func naiveRecord(m map[string]any) naiveEvent {
	e := naiveEvent{
		ID:      sval(m["eventID"]),
		Name:    sval(m["eventName"]),
		Account: sval(m["recipientAccountId"]),
		Marker:  contains(m, Marker),
	}
	params := m["requestParameters"]
	if p, ok := params.(map[string]any); ok {
		e.UserName, e.PolicyARN = sval(p["userName"]), sval(p["policyArn"])
	}
	failure := sval(m["errorCode"]) != "" || sval(m["errorMessage"]) != ""
	e.Positive = e.Name == "AttachUserPolicy" && !failure && contains(params, Marker)
	return e
}

// naiveECS evaluates the rule as Elastic writes it, on the ECS fields, and
// checks that event.original, where present, says the same.
func naiveECS(doc map[string]any) (naiveEvent, error) {
	params := sval(dig(doc, "aws", "cloudtrail", "request_parameters"))
	dataset := sval(dig(doc, "event", "dataset")) == "aws.cloudtrail" || sval(dig(doc, "data_stream", "dataset")) == "aws.cloudtrail"
	e := naiveEvent{
		ID:        sval(dig(doc, "event", "id")),
		Name:      sval(dig(doc, "event", "action")),
		Account:   sval(dig(doc, "cloud", "account", "id")),
		UserName:  sval(dig(doc, "user", "target", "name")),
		PolicyARN: sval(dig(doc, "aws", "cloudtrail", "flattened", "request_parameters", "policyArn")),
		Marker:    contains(doc, Marker),
	}
	e.Positive = dataset && e.Name == "AttachUserPolicy" && sval(dig(doc, "event", "outcome")) == "success" &&
		strings.Contains(params, Marker)
	if orig, ok := dig(doc, "event", "original").(string); ok {
		m, err := parseObject([]byte(orig))
		if err != nil {
			return e, fmt.Errorf("event.original: %w", err)
		}
		o := naiveRecord(m)
		if o.ID != e.ID || o.Positive != e.Positive || o.Name != e.Name {
			return e, fmt.Errorf("ECS fields %+v disagree with event.original %+v", e, o)
		}
	}
	return e, nil
}

func naiveCloudWatch(payload []byte) ([]naiveEvent, error) {
	doc, err := parseObject(payload)
	if err != nil {
		return nil, err
	}
	if doc["messageType"] == "CONTROL_MESSAGE" {
		return nil, nil
	}
	logEvents, _ := doc["logEvents"].([]any)
	var evs []naiveEvent
	for _, le := range logEvents {
		msg, _ := dig(le, "message").(string)
		m, err := parseObject([]byte(msg))
		if err != nil {
			return nil, fmt.Errorf("logEvents message: %w", err)
		}
		evs = append(evs, naiveRecord(m))
	}
	return evs, nil
}

// parseObject accepts JSON text that is valid UTF-8 (RFC 8259 §8.1; Go's
// decoder does not check it) and is an object.
func parseObject(b []byte) (map[string]any, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("invalid UTF-8")
	}
	if !json.Valid(b) {
		return nil, errors.New("invalid JSON")
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func gunzip(b []byte) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// validInput reports whether v is valid input in some encoding: JSON in
// UTF-8, or gzip (bare or base64) of it.
func validInput(v []byte) bool {
	if bytes.HasPrefix(v, []byte{0x1f, 0x8b}) {
		doc, err := gunzip(v)
		return err == nil && utf8.Valid(doc) && json.Valid(doc)
	}
	if z, err := base64.StdEncoding.DecodeString(string(v)); err == nil && bytes.HasPrefix(z, []byte{0x1f, 0x8b}) {
		return validInput(z)
	}
	return utf8.Valid(v) && json.Valid(v)
}

func dig(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func sval(v any) string {
	s, _ := v.(string)
	return s
}

// contains reports whether sub occurs in any string, key or value, in v.
func contains(v any, sub string) bool {
	switch v := v.(type) {
	case string:
		return strings.Contains(v, sub)
	case map[string]any:
		for k, x := range v {
			if strings.Contains(k, sub) || contains(x, sub) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if contains(x, sub) {
				return true
			}
		}
	}
	return false
}
