package matcher

import (
	"bytes"
	"strings"
	"unsafe"
)

// fields is a JSON object indexed one level deep: its members' raw key and
// value bytes, found by the indexer. Keys are matched exactly (CloudTrail's
// keys are case-sensitive, where struct decoding in encoding/json would fold
// case) and the last of duplicate keys wins, as in a decoded map. Only text the indexer has validated is ever indexed.
type fields struct {
	b       []byte
	members []member
	arena   *memberArena // where objects inside are indexed
}

// memberArena holds the members of every object indexed while one value is
// evaluated, so that indexing a record and the objects inside it does not
// allocate once the arena has grown to fit. A Scanner resets it per value;
// slices handed out earlier stay valid when it grows (they keep the old
// array), and a nil arena allocates as it goes.
type memberArena struct{ buf []member }

func (a *memberArena) reset() {
	if a != nil {
		a.buf = a.buf[:0]
	}
}

// index runs the validating indexer with the arena's free tail as its
// member slice.
func (a *memberArena) index(b []byte) ([]member, byte, int) {
	if a == nil {
		var x indexer
		return x.index(b)
	}
	x := indexer{members: a.tail()}
	members, kind, errAt := x.index(b)
	if errAt < 0 {
		a.keep(members)
	}
	return members, kind, errAt
}

// indexValid indexes text the indexer has accepted, into the arena.
func (a *memberArena) indexValid(b []byte) []member {
	if a == nil {
		return indexValid(b, nil)
	}
	members := indexValid(b, a.tail())
	a.keep(members)
	return members
}

// tail is the arena's free capacity as an empty slice, or nil.
func (a *memberArena) tail() []member {
	if cap(a.buf) == len(a.buf) {
		return nil
	}
	return a.buf[len(a.buf):len(a.buf):cap(a.buf)]
}

// keep takes members, indexed into tail(), into the arena.
func (a *memberArena) keep(members []member) {
	if len(members) == 0 {
		return
	}
	if n := len(a.buf); cap(a.buf)-n >= len(members) && &a.buf[:n+1][n] == &members[0] {
		a.buf = a.buf[:n+len(members)] // indexed in place
		return
	}
	// The tail was too short: the members got an array of their own.
	// Grow the arena for the next value.
	a.buf = make([]member, 0, 2*cap(a.buf)+len(members))
}

// object indexes validated JSON text that should be an object. It reports
// false when the text is not an object.
func (a *memberArena) object(raw []byte) (fields, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return fields{}, false
	}
	return fields{b: raw, members: a.indexValid(raw), arena: a}, true
}

// array returns the elements of validated JSON text that should be an
// array, and false when it is not an array.
func (a *memberArena) array(raw []byte) ([][]byte, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	members := a.indexValid(raw)
	out := make([][]byte, len(members))
	for i, m := range members {
		out[i] = raw[m.val.start:m.val.end]
	}
	return out, true
}

// key returns member m's key, decoded if it is escaped. An unescaped key
// views the text without a copy: callers compare it and never keep it.
func (f fields) key(m *member) (string, bool) {
	raw := f.b[m.key.start:m.key.end]
	if !m.escaped {
		return unsafeString(raw[1 : len(raw)-1]), true
	}
	return string(appendUnquoted(nil, raw)), true
}

// raw returns the value of key, or nil when it is absent.
func (f fields) raw(key string) []byte {
	for i := len(f.members) - 1; i >= 0; i-- {
		m := &f.members[i]
		if !m.escaped && m.key.end-m.key.start != len(key)+2 {
			continue // cannot be key: skip the comparison
		}
		if k, ok := f.key(m); ok && k == key {
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

// jsonString decodes a raw JSON string of validated text.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	return string(appendUnquoted(nil, raw)), true
}

// stringView returns the contents of a raw JSON string of validated text:
// a view of the text when it holds no escape, else the string decoded into
// buf[:0]. ok is false when raw is not a string.
func stringView(raw, buf []byte) (s []byte, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
		return inner, true
	}
	return appendUnquoted(buf[:0], raw), true
}

func (f fields) string(key string) string {
	s, _ := f.str(key)
	return s
}

func (f fields) object(key string) fields {
	o, _ := f.arena.object(f.raw(key))
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

func (r *record) failed() bool { return r.f.present("errorCode") || r.f.present("errorMessage") }

// markersIn returns the set of markers (bit i: m.markers[i]) that a key or
// string value of the request parameters raw contains, at any depth. Elastic
// flattens them into one "{key=value, ...}" string; a marker has none of
// the characters that flattening puts between keys and values
// (checkMarker), so it occurs there only inside one key or one value, and
// the two tests agree.
func (s *Scanner) markersIn(raw []byte) uint64 {
	var found uint64
	for i, mk := range s.m.markers {
		if !bytes.Contains(raw, mk) && !s.m.prefilter.hasSuspectEscape(raw) {
			continue // by the prefilter's argument, no decoded string holds it
		}
		if s.arena.containsDeep(raw, mk) {
			found |= 1 << i
		}
	}
	return found
}

// containsDeep reports whether a key or string value of the validated JSON
// value raw, at any depth, contains s once decoded.
func (a *memberArena) containsDeep(raw, s []byte) bool {
	raw = trimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case '"':
		return stringContains(raw, s)
	case '{', '[':
		for _, m := range a.indexValid(raw) {
			if raw[0] == '{' && stringContains(raw[m.key.start:m.key.end], s) {
				return true
			}
			if a.containsDeep(raw[m.val.start:m.val.end], s) {
				return true
			}
		}
	}
	return false
}

// stringContains reports whether the quoted JSON string raw contains s once
// decoded; only a string with an escape is decoded.
func stringContains(raw, s []byte) bool {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return bytes.Contains(inner, s)
	}
	var buf [128]byte
	return bytes.Contains(appendUnquoted(buf[:0], raw), s)
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
	e := Event{Original: bytes.Clone(trimSpace(r.raw))}
	var strs stringCopier
	var identity, params []byte
	// One pass over the members; a later duplicate overwrites an earlier
	// one, as fields.raw's last-wins lookup does.
	r.f.each(func(key string, val []byte) {
		switch key {
		case "eventID":
			e.EventID = strs.copy(val)
		case "eventTime":
			e.EventTime = strs.copy(val)
		case "eventName":
			e.EventName = strs.copy(val)
		case "eventSource":
			e.EventSource = strs.copy(val)
		case "awsRegion":
			e.AWSRegion = strs.copy(val)
		case "recipientAccountId":
			e.RecipientAccountID = strs.copy(val)
		case "errorCode":
			e.ErrorCode = strs.copy(val)
		case "errorMessage":
			e.ErrorMessage = strs.copy(val)
		case "sourceIPAddress":
			e.SourceIPAddress = strs.copy(val)
		case "userAgent":
			e.UserAgent = strs.copy(val)
		case "userIdentity":
			identity = val
		case "requestParameters":
			params = val
		}
	})
	if id, ok := r.f.arena.object(identity); ok {
		id.each(func(key string, val []byte) {
			switch key {
			case "type":
				e.UserIdentity.Type = strs.copy(val)
			case "principalId":
				e.UserIdentity.PrincipalID = strs.copy(val)
			case "arn":
				e.UserIdentity.ARN = strs.copy(val)
			case "accountId":
				e.UserIdentity.AccountID = strs.copy(val)
			case "accessKeyId":
				e.UserIdentity.AccessKeyID = strs.copy(val)
			case "userName":
				e.UserIdentity.UserName = strs.copy(val)
			}
		})
	}
	e.Outcome = "success"
	if r.failed() {
		e.Outcome = "failure"
	}
	e.RequestParameters = bytes.Clone(params)
	if p, ok := r.f.arena.object(params); ok {
		var targets [len(targetParams)]string
		p.each(func(key string, val []byte) {
			switch key {
			case "userName":
				targets[0] = strs.copy(val)
			case "roleName":
				targets[1] = strs.copy(val)
			case "groupName":
				targets[2] = strs.copy(val)
			case "policyArn":
				e.PolicyARN = strs.copy(val)
			case "policyName":
				e.PolicyName = strs.copy(val)
			}
		})
		e.TargetKind, e.TargetName = chooseTarget(e.EventName, targets)
	}
	return e
}

// each calls fn with every member's decoded key and raw value, in order.
func (f fields) each(fn func(key string, val []byte)) {
	for i := range f.members {
		m := &f.members[i]
		if key, ok := f.key(m); ok {
			fn(key, f.b[m.val.start:m.val.end])
		}
	}
}

// stringCopier copies the strings of one finding into shared blocks, so a
// finding's dozen short fields cost a few allocations rather than one each.
// A block is never written again once a string points into it.
type stringCopier struct{ block []byte }

// copy returns the raw JSON value as a string the finding owns: "" when it
// is not a string, as fields.string does.
func (c *stringCopier) copy(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	inner := raw[1 : len(raw)-1]
	if len(inner) == 0 {
		return ""
	}
	// A decoded string is never longer than its escaped text.
	if cap(c.block)-len(c.block) < len(inner) {
		c.block = make([]byte, 0, max(512, len(inner)))
	}
	start := len(c.block)
	if bytes.IndexByte(inner, '\\') >= 0 {
		c.block = appendUnquoted(c.block, raw)
	} else {
		c.block = append(c.block, inner...)
	}
	return unsafeString(c.block[start:len(c.block):len(c.block)])
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
		Outcome:           d.outcome,
		RequestParameters: []byte(d.requestParameters),
		PolicyARN:         flat.string("policyArn"),
		PolicyName:        flat.string("policyName"),
		Original:          bytes.Clone(trimSpace(d.raw)),
	}
	if e.PolicyARN == "" {
		e.PolicyARN = flatValue(d.requestParameters, "policyArn")
	}
	if e.PolicyName == "" {
		e.PolicyName = flatValue(d.requestParameters, "policyName")
	}
	// The target: Elastic's flattened object, else the fields its pipeline
	// copies userName and groupName to, else the flattened text.
	var targets [len(targetParams)]string
	for i, p := range targetParams {
		targets[i] = flat.string(p.param)
	}
	if targets[0] == "" {
		targets[0] = d.f.object("user").object("target").string("name")
	}
	if targets[2] == "" {
		targets[2] = d.f.object("group").string("name")
	}
	for i, p := range targetParams {
		if targets[i] == "" {
			targets[i] = flatValue(d.requestParameters, p.param)
		}
	}
	e.TargetKind, e.TargetName = chooseTarget(e.EventName, targets)
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

// unsafeString views b as a string without copying. Callers guarantee that
// b is never written again: the indexed text of a value while it is
// evaluated, or a stringCopier block.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// unsafeBytes views a string decoded for this evaluation as bytes without
// copying; the matcher only reads them (findings copy what they keep).
func unsafeBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
