package matcher

import (
	"bytes"
	"strings"
)

// ecsEach calls fn with the raw values of the ECS field path in the object
// f, however it is spelled: nested ({"event":{"action":...}}), dotted
// ({"event.action":...}) or mixed ({"event":{"x.y":...}}), and through
// arrays, whose elements (objects, or values of the field) Elasticsearch
// indexes all as the one field. Of duplicate keys spelled alike the last
// wins; two spellings of one field give it two values, as Elasticsearch
// would. fn returns false to stop; ecsEach returns false when it did. objs
// caches the objects indexed on the way, which the lookups of one document
// share.
func (f fields) ecsEach(path string, objs *ecsObjects, fn func(raw []byte) bool) bool {
	// The keys that can lead to path are its prefixes ending at a dot, one
	// per length: bit l of seen says the key of length l was taken.
	var seen uint64
	for i := len(f.members) - 1; i >= 0; i-- {
		m := &f.members[i]
		if !m.escaped() && int(m.key.end-m.key.start-2) > len(path) {
			continue // too long to lead to path: skip the comparison
		}
		k, _ := f.key(m)
		var rest string
		switch {
		case k == path:
		case len(k) < len(path) && path[len(k)] == '.' && path[:len(k)] == k:
			rest = path[len(k)+1:]
		default:
			continue
		}
		if seen&(1<<len(k)) != 0 {
			continue // an earlier duplicate
		}
		seen |= 1 << len(k)
		if !objs.values(f.b[m.val.start:m.val.end], rest, fn) {
			return false
		}
	}
	return true
}

// ecsObjects indexes the objects of one ECS document once, however many
// fields are looked up in them: the first maxECSObjects of them, which an
// ECS document does not come near. Past them an object is read as it is,
// member by member, and nothing is kept (ecsEachRaw), so that a document of
// a million objects costs linear time and no memory.
type ecsObjects struct {
	arena *memberArena
	seen  map[*byte]fields // by the first byte of the object's text
}

const maxECSObjects = 64

// newECSObjects returns the object cache of one ECS document: the arena's
// map, cleared (its keys point into the text of the last document), or a
// map of its own made on first use when there is no arena. Two caches of
// one document may share the map: an entry is the same for both.
func newECSObjects(arena *memberArena) ecsObjects {
	o := ecsObjects{arena: arena}
	if arena != nil {
		if arena.ecsSeen == nil {
			arena.ecsSeen = make(map[*byte]fields, maxECSObjects)
		}
		clear(arena.ecsSeen)
		o.seen = arena.ecsSeen
	}
	return o
}

// values calls fn with the values at path rest inside the raw value ("":
// the value itself), through arrays.
func (o *ecsObjects) values(raw []byte, rest string, fn func(raw []byte) bool) bool {
	raw = trimSpace(raw)
	if it, ok := elementsOf(raw); ok {
		for e, ok := it.next(); ok; e, ok = it.next() {
			if !o.values(e, rest, fn) {
				return false
			}
		}
		return true
	}
	if rest == "" {
		return fn(raw)
	}
	if len(raw) == 0 || raw[0] != '{' {
		return true
	}
	if f, ok := o.seen[&raw[0]]; ok {
		return f.ecsEach(rest, o, fn)
	}
	if len(o.seen) == maxECSObjects {
		return o.ecsEachRaw(raw, rest, fn)
	}
	if o.seen == nil {
		o.seen = make(map[*byte]fields)
	}
	f, _ := o.arena.object(raw)
	o.seen[&raw[0]] = f
	return f.ecsEach(rest, o, fn)
}

// ecsEachRaw is ecsEach over an object's validated text, read once: it
// keeps the last member of each key that can lead to path (one per dot of
// path, and path itself) and then follows those, the latest first.
func (o *ecsObjects) ecsEachRaw(b []byte, path string, fn func(raw []byte) bool) bool {
	type candidate struct {
		at     int  // where the member starts, to order them
		val    span // its value
		keyLen int
		ok     bool
	}
	var last [maxECSPathDots + 1]candidate
	i := skipSpace(b, 1)
	for i < len(b) && b[i] == '"' {
		ks := i
		i = skipString(b, i)
		key := b[ks:i]
		i = skipSpace(b, skipSpace(b, i)+1) // the colon
		vs := i
		i = skipValue(b, i)
		if len(key)-2 <= len(path) || bytes.IndexByte(key, '\\') >= 0 {
			k, _ := jsonString(key)
			if k == path || len(k) < len(path) && path[len(k)] == '.' && path[:len(k)] == k {
				if n := strings.Count(k, "."); n < len(last) {
					last[n] = candidate{at: ks, val: span{int32(vs), int32(i)}, keyLen: len(k), ok: true}
				}
			}
		}
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	for {
		best := -1
		for l := range last {
			if last[l].ok && (best < 0 || last[l].at > last[best].at) {
				best = l
			}
		}
		if best < 0 {
			return true
		}
		c := last[best]
		last[best].ok = false
		rest := ""
		if c.keyLen < len(path) {
			rest = path[c.keyLen+1:]
		}
		if !o.values(b[c.val.start:c.val.end], rest, fn) {
			return false
		}
	}
}

// maxECSPathDots is how many dots a field path a rule or a finding reads
// may have (aws.cloudtrail.flattened.request_parameters.policyArn has four).
const maxECSPathDots = 7

// ecsDoc holds the fields of an ECS document that rules read, every value
// of each.
type ecsDoc struct {
	raw        []byte
	f          fields
	objs       ecsObjects
	cloudtrail bool // event.dataset or data_stream.dataset is aws.cloudtrail
	actions    []string
	outcomes   []string
	params     []string // aws.cloudtrail.request_parameters
}

func newECSDoc(raw []byte, f fields) *ecsDoc {
	d := &ecsDoc{raw: raw, f: f, objs: newECSObjects(f.arena)}
	d.actions = d.strings("event.action")
	d.outcomes = d.strings("event.outcome")
	d.params = d.strings(FieldRequestParameters)
	for _, path := range []string{"event.dataset", "data_stream.dataset"} {
		d.cloudtrail = d.cloudtrail || !d.f.ecsEach(path, &d.objs, func(raw []byte) bool {
			return !stringIs(raw, "aws.cloudtrail")
		})
	}
	return d
}

// ecsHas reports whether the document f has the field path, of any value.
func (f fields) ecsHas(path string) bool {
	objs := newECSObjects(f.arena)
	return !f.ecsEach(path, &objs, func([]byte) bool { return false })
}

// strings returns the string values of the field path.
func (d *ecsDoc) strings(path string) []string {
	var out []string
	d.f.ecsEach(path, &d.objs, func(raw []byte) bool {
		if s, ok := jsonString(raw); ok {
			out = append(out, s)
		}
		return true
	})
	return out
}

// string returns the first string value of the field path, or "".
func (d *ecsDoc) string(path string) string {
	var out string
	d.f.ecsEach(path, &d.objs, func(raw []byte) bool {
		s, ok := jsonString(raw)
		out = s
		return !ok
	})
	return out
}

// stringIs reports whether the raw JSON value is the string want.
func stringIs(raw []byte, want string) bool {
	var buf [64]byte
	s, ok := stringView(raw, buf[:0])
	return ok && string(s) == want
}

// ecsMatches evaluates a rule on an ECS document as Elastic has mapped it:
// a multi-valued field matches when one of its values does, as an
// Elasticsearch query would.
func (s *Scanner) ecsMatches(c *compiledRule, d *ecsDoc) bool {
	if !d.cloudtrail {
		return false
	}
	action, outcome := false, false
	for _, a := range d.actions {
		action = action || c.wants(a)
	}
	for _, o := range d.outcomes {
		outcome = outcome || o == c.outcome
	}
	if !action || !outcome {
		return false
	}
	for i, mk := range s.m.markers {
		if c.markers&(1<<i) == 0 {
			continue
		}
		for _, p := range d.params {
			if strings.Contains(p, unsafeString(mk)) {
				return true
			}
		}
	}
	return false
}

// ecsEvent is the finding's event from an ECS document that rule c
// matched: its event name and outcome are the values c matched on.
func ecsEvent(d *ecsDoc, c *compiledRule) Event {
	get := d.string
	ip := get("source.ip")
	if ip == "" {
		ip = get("source.address")
	}
	account := get("cloud.account.id")
	if account == "" {
		account = get("aws.cloudtrail.recipient_account_id")
	}
	var params string
	if len(d.params) > 0 {
		params = d.params[0]
	}
	e := Event{
		EventID:            get("event.id"),
		EventTime:          get("@timestamp"),
		EventSource:        get("event.provider"),
		AWSRegion:          get("cloud.region"),
		RecipientAccountID: account,
		ErrorCode:          get("aws.cloudtrail.error_code"),
		ErrorMessage:       get("aws.cloudtrail.error_message"),
		SourceIPAddress:    ip,
		UserAgent:          get("user_agent.original"),
		UserIdentity: Identity{
			Type:        get("aws.cloudtrail.user_identity.type"),
			ARN:         get("aws.cloudtrail.user_identity.arn"),
			AccessKeyID: get("aws.cloudtrail.user_identity.access_key_id"),
			AccountID:   account,
		},
		Outcome:           c.outcome,
		RequestParameters: []byte(params),
		PolicyARN:         get("aws.cloudtrail.flattened.request_parameters.policyArn"),
		PolicyName:        get("aws.cloudtrail.flattened.request_parameters.policyName"),
		Original:          bytes.Clone(trimSpace(d.raw)),
	}
	for _, a := range d.actions {
		if c.wants(a) {
			e.EventName = a
			break
		}
	}
	if e.PolicyARN == "" {
		e.PolicyARN = flatValue(params, "policyArn")
	}
	if e.PolicyName == "" {
		e.PolicyName = flatValue(params, "policyName")
	}
	// The target: Elastic's flattened object, else the fields its pipeline
	// copies userName and groupName to, else the flattened text.
	var targets [len(targetParams)]string
	for i, p := range targetParams {
		targets[i] = get("aws.cloudtrail.flattened.request_parameters." + p.param)
	}
	if targets[0] == "" {
		targets[0] = get("user.target.name")
	}
	if targets[2] == "" {
		targets[2] = get("group.name")
	}
	for i, p := range targetParams {
		if targets[i] == "" {
			targets[i] = flatValue(params, p.param)
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
