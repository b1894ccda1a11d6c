package matcher

import (
	"bytes"
	"strings"

	gojson "github.com/goccy/go-json"
)

// fields is a JSON object indexed one level deep: its members' raw key and
// value bytes, found by the indexer. Keys are matched exactly (CloudTrail's
// keys are case-sensitive, where struct decoding in encoding/json and
// goccy/go-json would fold case) and the last of duplicate keys wins, as in
// a decoded map. Only text the indexer has validated is ever indexed.
type fields struct {
	b       []byte
	members []member
}

// indexObject indexes validated JSON text that should be an object. It
// reports false when the text is not an object.
func indexObject(raw []byte) (fields, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return fields{}, false
	}
	var x indexer
	members, _, errAt := x.index(raw)
	if errAt >= 0 {
		return fields{}, false
	}
	return fields{b: raw, members: members}, true
}

// indexArray returns the elements of validated JSON text that should be an
// array, and false when it is not an array.
func indexArray(raw []byte) ([][]byte, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	var x indexer
	members, _, errAt := x.index(raw)
	if errAt >= 0 {
		return nil, false
	}
	out := make([][]byte, len(members))
	for i, m := range members {
		out[i] = raw[m.val.start:m.val.end]
	}
	return out, true
}

// raw returns the value of key, or nil when it is absent.
func (f fields) raw(key string) []byte {
	for i := len(f.members) - 1; i >= 0; i-- {
		m := &f.members[i]
		raw := f.b[m.key.start:m.key.end]
		if m.escaped {
			// An escaped key is decoded by goccy/go-json.
			var s string
			if gojson.Unmarshal(raw, &s) == nil && s == key {
				return f.b[m.val.start:m.val.end]
			}
			continue
		}
		if len(raw) == len(key)+2 && string(raw[1:len(raw)-1]) == key {
			return f.b[m.val.start:m.val.end]
		}
	}
	return nil
}

func (f fields) has(key string) bool { return f.raw(key) != nil }

// str returns the field as a string, and false when it is absent or not a
// JSON string.
func (f fields) str(key string) (string, bool) {
	return jsonString(f.raw(key))
}

// jsonString decodes a raw JSON string; goccy/go-json decodes escapes.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	var s string
	if err := gojson.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// strIs reports whether the field is the string want, without allocating
// when it holds no escape.
func (f fields) strIs(key, want string) bool {
	raw := f.raw(key)
	if len(raw) < 2 || raw[0] != '"' {
		return false
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == want
	}
	s, _ := jsonString(raw)
	return s == want
}

func (f fields) string(key string) string {
	s, _ := f.str(key)
	return s
}

func (f fields) object(key string) fields {
	o, _ := indexObject(f.raw(key))
	return o
}

// present reports whether the field is present and non-empty in the sense of
// Elastic's CloudTrail pipeline, which drops null and empty-string values
// before it sets event.outcome. A JSON string of any escape decodes to a
// non-empty string, so only `""` is empty.
func (f fields) present(key string) bool {
	raw := f.raw(key)
	return raw != nil && string(raw) != "null" && string(raw) != `""`
}

// record is one CloudTrail record.
type record struct {
	raw []byte
	f   fields
}

func (r *record) eventNameIs(name string) bool { return r.f.strIs("eventName", name) }

func (r *record) failed() bool { return r.f.present("errorCode") || r.f.present("errorMessage") }

// requestParametersContain reports whether any key or string value of the
// request parameters contains s. Elastic flattens them into one
// "{key=value, ...}" string; a marker without '=', ',', ' ', '{', '}', '['
// or ']' can only occur there inside one key or one value, so the two tests
// agree.
func (r *record) requestParametersContain(s []byte) bool {
	raw := r.f.raw("requestParameters")
	if !bytes.Contains(raw, s) && !hasSuspectEscape(raw) {
		return false // by the prefilter's argument, no decoded string holds s
	}
	return containsDeep(raw, s)
}

// containsDeep reports whether a key or string value of the validated JSON
// value raw, at any depth, contains s once decoded.
func containsDeep(raw, s []byte) bool {
	raw = trimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case '"':
		return stringContains(raw, s)
	case '{', '[':
		var x indexer
		members, _, errAt := x.index(raw)
		if errAt >= 0 {
			return false
		}
		for _, m := range members {
			if raw[0] == '{' && stringContains(raw[m.key.start:m.key.end], s) {
				return true
			}
			if containsDeep(raw[m.val.start:m.val.end], s) {
				return true
			}
		}
	}
	return false
}

// stringContains reports whether the quoted JSON string raw contains s once
// decoded; only a string with an escape is decoded, by goccy/go-json.
func stringContains(raw, s []byte) bool {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return bytes.Contains(inner, s)
	}
	str, ok := jsonString(raw)
	return ok && strings.Contains(str, string(s))
}

// ecsDoc holds the fields of an ECS document that rules read.
type ecsDoc struct {
	raw               []byte
	f                 fields
	event             fields
	action            string
	outcome           string
	requestParameters string
	datasets          [2]string // event.dataset, data_stream.dataset
}

func newECSDoc(raw []byte, f fields) *ecsDoc {
	d := &ecsDoc{raw: raw, f: f, event: f.object("event")}
	d.action = d.event.string("action")
	d.outcome = d.event.string("outcome")
	d.datasets[0] = d.event.string("dataset")
	d.datasets[1] = f.object("data_stream").string("dataset")
	d.requestParameters = f.object("aws").object("cloudtrail").string("request_parameters")
	return d
}

func (d *ecsDoc) isCloudTrail() bool {
	return d.datasets[0] == "aws.cloudtrail" || d.datasets[1] == "aws.cloudtrail"
}

func containsString(s string, sub []byte) bool { return strings.Contains(s, string(sub)) }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// trimSpace trims JSON whitespace, which is narrower than Unicode's.
func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// The event fields of a finding are copied out of decoded values, so a
// Finding never aliases the Scanner's buffers.

func recordEvent(r *record) Event {
	id := r.f.object("userIdentity")
	params := r.f.object("requestParameters")
	return Event{
		EventID:            r.f.string("eventID"),
		EventTime:          r.f.string("eventTime"),
		EventName:          r.f.string("eventName"),
		EventSource:        r.f.string("eventSource"),
		AWSRegion:          r.f.string("awsRegion"),
		RecipientAccountID: r.f.string("recipientAccountId"),
		ErrorCode:          r.f.string("errorCode"),
		ErrorMessage:       r.f.string("errorMessage"),
		SourceIPAddress:    r.f.string("sourceIPAddress"),
		UserAgent:          r.f.string("userAgent"),
		UserIdentity: Identity{
			Type:        id.string("type"),
			PrincipalID: id.string("principalId"),
			ARN:         id.string("arn"),
			AccountID:   id.string("accountId"),
			AccessKeyID: id.string("accessKeyId"),
			UserName:    id.string("userName"),
		},
		RequestParameters: bytes.Clone(r.f.raw("requestParameters")),
		TargetUserName:    params.string("userName"),
		PolicyARN:         params.string("policyArn"),
		PolicyName:        params.string("policyName"),
		Original:          bytes.Clone(trimSpace(r.raw)),
	}
}

func ecsEvent(d *ecsDoc) Event {
	ct := d.f.object("aws").object("cloudtrail")
	uid := ct.object("user_identity")
	flat := ct.object("flattened").object("request_parameters")
	source := d.f.object("source")
	ip := source.string("ip")
	if ip == "" {
		ip = source.string("address")
	}
	account := d.f.object("cloud").object("account").string("id")
	if account == "" {
		account = ct.string("recipient_account_id")
	}
	e := Event{
		EventID:            d.event.string("id"),
		EventTime:          d.f.string("@timestamp"),
		EventName:          d.action,
		EventSource:        d.event.string("provider"),
		AWSRegion:          d.f.object("cloud").string("region"),
		RecipientAccountID: account,
		ErrorCode:          ct.string("error_code"),
		ErrorMessage:       ct.string("error_message"),
		SourceIPAddress:    ip,
		UserAgent:          d.f.object("user_agent").string("original"),
		UserIdentity: Identity{
			Type:        uid.string("type"),
			ARN:         uid.string("arn"),
			AccessKeyID: uid.string("access_key_id"),
			AccountID:   account,
		},
		RequestParameters: []byte(d.requestParameters),
		TargetUserName:    d.f.object("user").object("target").string("name"),
		PolicyARN:         flat.string("policyArn"),
		PolicyName:        flat.string("policyName"),
		Original:          bytes.Clone(trimSpace(d.raw)),
	}
	if e.TargetUserName == "" {
		e.TargetUserName = flat.string("userName")
	}
	if e.PolicyARN == "" {
		e.PolicyARN = flatValue(d.requestParameters, "policyArn")
	}
	if e.PolicyName == "" {
		e.PolicyName = flatValue(d.requestParameters, "policyName")
	}
	if e.TargetUserName == "" {
		e.TargetUserName = flatValue(d.requestParameters, "userName")
	}
	return e
}

// flatValue reads key from Elastic's flattened "{k1=v1, k2=v2}" text. It is
// only used to report a finding, never to decide one.
func flatValue(flat, key string) string {
	flat = strings.TrimSuffix(strings.TrimPrefix(flat, "{"), "}")
	for _, kv := range strings.Split(flat, ", ") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
