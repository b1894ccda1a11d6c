package matcher

import (
	"bytes"
	"unsafe"
)

// fields is a JSON object indexed one level deep: its members' raw key and
// value bytes, found by the indexer. Keys are matched exactly (CloudTrail's
// keys are case-sensitive, where struct decoding in encoding/json would fold
// case) and the last of duplicate keys wins, as in a decoded map. Only text
// the indexer has validated is ever indexed.
type fields struct {
	b       []byte
	members []member
	arena   *memberArena // where objects inside are indexed
}

// memberArena holds the members of every object indexed while one value is
// evaluated, so that indexing a record and the objects inside it does not
// allocate once the arena has grown to fit. A Scanner resets it per value
// and rewinds it after each record of a batch, so that it holds one
// record's objects at a time, not the batch's; slices handed out earlier
// stay valid when it grows (they keep the old array), and a nil arena
// allocates as it goes.
type memberArena struct {
	buf []member
	// ecsSeen is the object cache of the ECS document being evaluated
	// (newECSObjects), kept here so that a document does not allocate one.
	ecsSeen map[*byte]fields
}

func (a *memberArena) reset() {
	if a != nil {
		a.buf = a.buf[:0]
		if len(a.ecsSeen) > 0 {
			clear(a.ecsSeen) // its keys would keep the last value's text alive
		}
	}
}

// mark and rewind free what was indexed after mark. Nothing indexed after
// mark may be used after rewind.
func (a *memberArena) mark() int { return len(a.buf) }

func (a *memberArena) rewind(mark int) {
	if mark <= len(a.buf) {
		a.buf = a.buf[:mark]
	} // else the arena grew into a new array since mark, which starts empty
}

// index runs the validating indexer, within lim, with the arena's free
// tail as its member slice. over names the limit the text went past, if
// that is why it failed; count is how many members the document has in all.
func (a *memberArena) index(b []byte, lim limits) (members []member, kind byte, errAt int, over string, count int) {
	x := indexer{members: a.tail(), lim: lim}
	members, kind, errAt = x.index(b)
	if errAt < 0 {
		a.keep(members)
	}
	return members, kind, errAt, x.over, x.nMembers
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
	// The tail was too short: the members got an array of their own,
	// which the arena goes on in.
	a.buf = members
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

// elements iterates over the elements of a validated JSON array, one at a
// time, so that a batch is never held as a list of its records.
type elements struct {
	b []byte
	i int
}

// elementsOf returns the elements of validated JSON text that should be an
// array, and false when it is not an array.
func elementsOf(raw []byte) (elements, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return elements{}, false
	}
	i := skipSpace(raw, 1)
	if raw[i] == ']' {
		i = len(raw)
	}
	return elements{b: raw, i: i}, true
}

func (e *elements) next() ([]byte, bool) {
	if e.i >= len(e.b) {
		return nil, false
	}
	start := e.i
	end := skipValue(e.b, start)
	e.i = skipSpace(e.b, end)
	if e.b[e.i] == ',' {
		e.i = skipSpace(e.b, e.i+1)
	} else {
		e.i = len(e.b) // the closing bracket
	}
	return e.b[start:end], true
}

// key returns member m's key, decoded if it is escaped. An unescaped key
// views the text without a copy: callers compare it and never keep it.
func (f fields) key(m *member) (string, bool) {
	k := m.keySpan()
	raw := f.b[k.start:k.end]
	if !m.escaped() {
		return unsafeString(raw[1 : len(raw)-1]), true
	}
	return string(appendUnquoted(nil, raw)), true
}

// raw returns the value of key, or nil when it is absent.
func (f fields) raw(key string) []byte {
	for i := len(f.members) - 1; i >= 0; i-- {
		m := &f.members[i]
		if !m.escaped() && int(m.key.end-m.key.start) != len(key)+2 {
			continue // cannot be key: skip the comparison
		}
		if k, ok := f.key(m); ok && k == key {
			return f.b[m.val.start:m.val.end]
		}
	}
	return nil
}

func (f fields) has(key string) bool { return f.raw(key) != nil }

// The top-level keys dispatch tells the shapes by (shapeKeys).
const (
	keyRecords = 1 << iota
	keyAWSLogs
	keyLogEvents
	keyDetail
	keyDetailType
	keyEventName
	keyMessage
)

// shapeKeys returns which of dispatch's keys f has, in one pass over its
// members: has of each in turn walked them all once per key.
func (f fields) shapeKeys() int {
	var keys int
	for i := range f.members {
		m := &f.members[i]
		var k string
		if ks := m.keySpan(); m.escaped() {
			k, _ = f.key(m)
		} else if ks.end-ks.start >= 2 { // an array's elements have no key
			k = unsafeString(f.b[ks.start+1 : ks.end-1])
		}
		switch k {
		case "Records":
			keys |= keyRecords
		case "awslogs":
			keys |= keyAWSLogs
		case "logEvents":
			keys |= keyLogEvents
		case "detail":
			keys |= keyDetail
		case "detail-type":
			keys |= keyDetailType
		case "eventName":
			keys |= keyEventName
		case "message":
			keys |= keyMessage
		}
	}
	return keys
}

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
	return unsafeString(appendUnquoted(nil, raw)), true // never written again
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

// record is one CloudTrail record.
type record struct {
	raw []byte
	f   fields
}

// left reports whether the raw JSON value is left after Elastic's pipeline
// drops null, "" and the objects and arrays holding nothing else,
// recursively: whether it is present in the pipeline's sense. A JSON
// string of any escape decodes to a non-empty string.
func (s *Scanner) left(raw []byte) bool {
	switch {
	case raw == nil || string(raw) == "null" || string(raw) == `""`:
		return false
	case raw[0] == '{' || raw[0] == '[':
		return s.walker.walk(raw, nil, false).nonEmpty
	}
	return true
}

// maxFlattened is the length up to which Elastic's pipeline keeps an object
// in aws.cloudtrail.flattened.* (a keyword's longest term is 32766 bytes).
const maxFlattened = 32766

// outcome is event.outcome as Elastic's CloudTrail pipeline sets it:
// failure when errorCode or errorMessage is left after pruning, else
// success; for ConsoleLogin, the lowercased responseElements.ConsoleLogin
// when the pipeline can read it (a non-empty string, in an object whose
// flattened text it keeps).
func (s *Scanner) outcome(f fields, name []byte) string {
	out := OutcomeSuccess
	if s.left(f.raw("errorCode")) || s.left(f.raw("errorMessage")) {
		out = OutcomeFailure
	}
	if string(name) != "ConsoleLogin" {
		return out
	}
	re := f.raw("responseElements")
	o, ok := s.arena.object(re)
	if !ok {
		return out
	}
	v, ok := stringView(o.raw("ConsoleLogin"), nil)
	if !ok || len(v) == 0 || s.walker.walk(re, nil, true).n >= maxFlattened {
		return out
	}
	return asciiLower(v)
}

// asciiLower is Java's toLowerCase(Locale.ROOT) as far as comparing with
// "success" and "failure" goes: no other character lowers to one of their
// letters.
func asciiLower(b []byte) string {
	l := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		l[i] = c
	}
	return string(l)
}

// markersIn returns the set of markers (bit i: m.markers[i]) that a key or
// string of the request parameters raw contains, at any depth, after
// Elastic's pipeline has pruned them (walker). Elastic flattens them into
// one "{key=value, ...}" string; a marker has none of the characters that
// flattening puts between keys and values (checkMarker), so it occurs there
// only inside one key or one value, and the two tests agree.
func (s *Scanner) markersIn(raw []byte) uint32 {
	literal := false
	for _, mk := range s.m.markers {
		literal = literal || bytes.Contains(raw, mk)
	}
	if !literal && !s.m.prefilter.hasSuspectEscape(raw) {
		return 0 // by the prefilter's argument, no decoded string holds one
	}
	return s.walker.walk(raw, s.m.markers, false).found
}

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

func recordEvent(r *record, outcome string) Event {
	e := Event{Original: bytes.Clone(trimSpace(r.raw)), Outcome: outcome}
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
