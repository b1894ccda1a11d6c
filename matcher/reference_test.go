package matcher

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// refFinding is what the reference evaluator and the matcher must agree on.
type refFinding struct {
	RuleID  string
	EventID string
	Index   int
	// Watch names the watch entry of a post-quarantine finding
	// ("account/lowercase user/alert id"), "" for the other rules.
	Watch string
}

// reference is the obviously correct evaluator the fast path is checked
// against. It shares no code, table or assumption with the matcher: it
// sniffs the value by itself, decodes base64 (RFC 4648) and the gzip
// framing (RFC 1952) with its own strict code written from those documents
// (DEFLATE with compress/flate), decodes JSON into a tree with
// encoding/json's tokenizer, uses no prefilter, and evaluates each rule
// from its own logic, literally as Elastic's pipeline and query do: prune
// the record, set event.outcome, flatten requestParameters into Java's
// toString text and search it. From m it reads only the configuration (the
// rules' IDs and the limits). It reports the findings and whether any part
// of the value was malformed or past a limit.
func reference(value []byte, m *Matcher) (found []refFinding, malformed bool) {
	rules := m.rules
	lim := m.limits
	watched := refWatchEntries(m)
	if len(value) > m.maxValueBytes {
		return nil, true
	}
	text := value
	if len(value) >= 2 && value[0] == 0x1f && value[1] == 0x8b {
		var ok bool
		if text, ok = refGunzip(value, m.maxDecodedBytes); !ok {
			return nil, true
		}
	} else if t := refTrimJSONSpace(value); len(t) >= 4 && string(t[:4]) == "H4sI" {
		var ok bool
		if text, ok = refGunzipBase64(t, m.maxDecodedBytes); !ok {
			return nil, true
		}
	}
	doc, ok := refParse(text, lim)
	if !ok {
		return nil, true
	}
	top, ok := doc.(*refObj)
	if !ok {
		return nil, true
	}
	var bad bool
	record := func(v any, index int) {
		rec, ok := v.(*refObj)
		if !ok {
			bad = true
			return
		}
		for _, r := range rules {
			if refRecordRule(r.ID, rec) {
				id, _ := rec.get("eventID").(string)
				found = append(found, refFinding{r.ID, id, index, ""})
			}
		}
		found = append(found, refWatchFindings(rec, watched, index)...)
	}
	recordText := func(v any, index int) {
		s, ok := v.(string)
		if !ok {
			bad = true
			return
		}
		inner, ok := refParse([]byte(s), lim)
		if !ok {
			bad = true
			return
		}
		record(inner, index)
	}
	logEvents := func(payload *refObj) {
		if payload.get("messageType") == "CONTROL_MESSAGE" {
			return
		}
		events, ok := payload.get("logEvents").([]any)
		if !ok {
			bad = true
			return
		}
		for i, e := range events {
			ev, ok := e.(*refObj)
			if !ok {
				bad = true
				continue
			}
			recordText(ev.get("message"), i)
		}
	}
	switch {
	case top.has("Records"):
		records, ok := top.get("Records").([]any)
		if !ok {
			return found, true
		}
		for i, r := range records {
			record(r, i)
		}
	case top.has("awslogs"):
		// The wrapper holds base64 of gzip of a CloudWatch Logs payload,
		// and only its log events are evaluated.
		wrapper, _ := top.get("awslogs").(*refObj)
		data, ok := wrapper.get("data").(string)
		if !ok {
			return found, true
		}
		inflated, ok := refGunzipBase64([]byte(data), m.maxDecodedBytes)
		if !ok {
			return found, true
		}
		inner, ok := refParse(inflated, lim)
		payload, isObject := inner.(*refObj)
		if !ok || !isObject || !payload.has("logEvents") {
			return found, true
		}
		logEvents(payload)
	case top.has("logEvents"):
		logEvents(top)
	case top.has("detail") && top.has("detail-type"):
		record(top.get("detail"), 0)
	case top.has("eventName"):
		record(top, 0)
	case len(refECSValues(top, "event.action")) > 0:
		for _, r := range rules {
			if refECSRule(r.ID, top) {
				id, _ := refECSString(top, "event.id")
				found = append(found, refFinding{r.ID, id, 0, ""})
			}
		}
	case top.has("message"):
		recordText(top.get("message"), 0)
	default:
		return found, true
	}
	return found, bad
}

// refObj is a JSON object as Java's HashMap holds it after Elasticsearch's
// parser put its members in: keys in the order they were first put, each
// with the last value put.
type refObj struct {
	keys []string
	vals []any
	// puts is how many distinct keys were put before pruning, which
	// decides the HashMap's table size and so its order.
	puts int
}

func (o *refObj) index(k string) int {
	if o == nil {
		return -1
	}
	return slices.Index(o.keys, k)
}

func (o *refObj) has(k string) bool { return o.index(k) >= 0 }

func (o *refObj) get(k string) any {
	if i := o.index(k); i >= 0 {
		return o.vals[i]
	}
	return nil
}

func (o *refObj) put(k string, v any) {
	if i := o.index(k); i >= 0 {
		o.vals[i] = v
		return
	}
	o.keys, o.vals = append(o.keys, k), append(o.vals, v)
	o.puts++
}

// refTrimJSONSpace trims the four whitespace characters of RFC 8259.
func refTrimJSONSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}

// refParse decodes one JSON text (RFC 8259) that must also be UTF-8
// (section 8.1; encoding/json would replace invalid bytes instead of
// refusing; a byte order mark is refused, as that section allows) into
// *refObj, []any, string, json.Number, bool and nil, and holds it to the
// limits: nesting depth, object members and array elements in all.
func refParse(b []byte, lim limits) (any, bool) {
	if !utf8.Valid(b) {
		return nil, false
	}
	d := refDecoder{dec: json.NewDecoder(bytes.NewReader(b)), lim: lim}
	d.dec.UseNumber()
	v, err := d.value(0)
	if err != nil {
		return nil, false
	}
	if _, err := d.dec.Token(); err != io.EOF {
		return nil, false // a second value, or garbage
	}
	return v, true
}

type refDecoder struct {
	dec               *json.Decoder
	lim               limits
	members, elements int
}

var errRefLimit = errors.New("past a limit")

func (d *refDecoder) value(depth int) (any, error) {
	t, err := d.dec.Token()
	if err != nil {
		return nil, err
	}
	switch t {
	case json.Delim('{'):
		if depth+1 > d.lim.depth {
			return nil, errRefLimit
		}
		o := &refObj{}
		for d.dec.More() {
			k, err := d.dec.Token()
			if err != nil {
				return nil, err
			}
			if d.members++; d.members > d.lim.members {
				return nil, errRefLimit
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			o.put(k.(string), v)
		}
		_, err := d.dec.Token() // }
		return o, err
	case json.Delim('['):
		if depth+1 > d.lim.depth {
			return nil, errRefLimit
		}
		a := []any{}
		for d.dec.More() {
			if d.elements++; d.elements > d.lim.elements {
				return nil, errRefLimit
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := d.dec.Token() // ]
		return a, err
	}
	return t, nil
}

// refBase64 decodes base64 as RFC 4648 section 4 defines it, strictly:
// only the 64 characters of the alphabet and the padding, in quanta of
// four, padding only at the end, and zero pad bits (section 3.5); no line
// breaks or other characters (section 3.3).
func refBase64(s []byte) ([]byte, bool) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	if len(s)%4 != 0 {
		return nil, false
	}
	var out []byte
	for q := 0; q < len(s); q += 4 {
		last := q+4 == len(s)
		var v [4]int
		pad := 0
		for k := range 4 {
			c := s[q+k]
			switch {
			case c == '=' && last && k >= 2:
				pad++
				v[k] = 0
			case c == '=' || pad > 0:
				return nil, false // padding inside, or a character after it
			default:
				v[k] = strings.IndexByte(alphabet, c)
				if v[k] < 0 {
					return nil, false
				}
			}
		}
		n := v[0]<<18 | v[1]<<12 | v[2]<<6 | v[3]
		switch pad {
		case 0:
			out = append(out, byte(n>>16), byte(n>>8), byte(n))
		case 1:
			if n&0xff != 0 {
				return nil, false
			}
			out = append(out, byte(n>>16), byte(n>>8))
		case 2:
			if n&0xffff != 0 {
				return nil, false
			}
			out = append(out, byte(n>>16))
		}
	}
	return out, true
}

func refGunzipBase64(b []byte, limit int) ([]byte, bool) {
	raw, ok := refBase64(b)
	if !ok {
		return nil, false
	}
	return refGunzip(raw, limit)
}

// refGunzip decodes a gzip file as RFC 1952 section 2 defines it: one or
// more members, each a header (ID1 ID2, CM 8, no reserved flag bit, the
// optional fields its flags announce, the header CRC checked when
// present), DEFLATE data and a trailer whose CRC-32 and ISIZE match; no
// byte after the last member. File names and comments are limited to 511
// bytes, as Go's gzip readers limit them (AWS writes neither).
func refGunzip(b []byte, limit int) ([]byte, bool) {
	var out []byte
	members := 0
	for ; len(b) > 0; members++ {
		if len(b) < 10 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 || b[3]&0xe0 != 0 {
			return nil, false
		}
		flg := b[3]
		i := 10
		if flg&0x04 != 0 { // FEXTRA
			if i+2 > len(b) {
				return nil, false
			}
			i += 2 + int(binary.LittleEndian.Uint16(b[i:]))
		}
		for _, bit := range []byte{0x08, 0x10} { // FNAME, FCOMMENT
			if flg&bit == 0 {
				continue
			}
			if i > len(b) {
				return nil, false
			}
			z := bytes.IndexByte(b[i:], 0)
			if z < 0 || z > 511 {
				return nil, false
			}
			i += z + 1
		}
		if flg&0x02 != 0 { // FHCRC
			if i+2 > len(b) || binary.LittleEndian.Uint16(b[i:]) != uint16(crc32.ChecksumIEEE(b[:i])) {
				return nil, false
			}
			i += 2
		}
		if i > len(b) {
			return nil, false
		}
		// compress/flate reads a bytes.Reader (an io.ByteReader) no
		// further than the end of the DEFLATE data.
		rest := bytes.NewReader(b[i:])
		member, err := io.ReadAll(io.LimitReader(flate.NewReader(rest), int64(limit-len(out))+1))
		if err != nil || len(out)+len(member) > limit {
			return nil, false
		}
		b = b[len(b)-rest.Len():]
		if len(b) < 8 || binary.LittleEndian.Uint32(b) != crc32.ChecksumIEEE(member) || binary.LittleEndian.Uint32(b[4:]) != uint32(len(member)) {
			return nil, false
		}
		b = b[8:]
		out = append(out, member...)
	}
	return out, members > 0
}

// refPrune is the script of Elastic's CloudTrail pipeline that "drops
// null/empty values recursively": null and "" go, then maps and lists left
// empty. It reports false when v itself goes.
func refPrune(v any) (any, bool) {
	switch v := v.(type) {
	case nil:
		return nil, false
	case string:
		return v, v != ""
	case *refObj:
		o := &refObj{puts: v.puts}
		for i, k := range v.keys {
			if e, ok := refPrune(v.vals[i]); ok {
				o.keys, o.vals = append(o.keys, k), append(o.vals, e)
			}
		}
		return o, len(o.keys) > 0
	case []any:
		a := []any{}
		for _, e := range v {
			if e, ok := refPrune(e); ok {
				a = append(a, e)
			}
		}
		return a, len(a) > 0
	}
	return v, true
}

// refOutcome is event.outcome as Elastic's CloudTrail pipeline sets it on
// the pruned record: failure when error_code or error_message exists, then,
// for ConsoleLogin, the lowercased responseElements.ConsoleLogin if the
// pipeline could read it from aws.cloudtrail.flattened.response_elements,
// which it sets only for text shorter than 32766.
func refOutcome(rec *refObj) string {
	p, _ := refPrune(rec)
	rec = p.(*refObj)
	out := "success"
	if rec.has("errorCode") || rec.has("errorMessage") {
		out = "failure"
	}
	if rec.get("eventName") != "ConsoleLogin" {
		return out
	}
	re, ok := rec.get("responseElements").(*refObj)
	if !ok || len(utf16.Encode([]rune(refFlatten(re)))) >= 32766 {
		return out
	}
	if s, ok := re.get("ConsoleLogin").(string); ok {
		// Java's toLowerCase(Locale.ROOT): U+0130 becomes "i" and a
		// combining dot; nothing else here lowers to more than one char.
		return strings.ToLower(strings.ReplaceAll(s, "\u0130", "i\u0307"))
	}
	return out
}

// refFlatten is Java's toString of the value as Elasticsearch's parser
// built it (HashMap, ArrayList, String, Integer, Long, BigInteger, Double,
// Boolean): what Elastic's pipeline writes in aws.cloudtrail.request_parameters.
func refFlatten(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case json.Number:
		return refJavaNumber(string(v))
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = refFlatten(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case *refObj:
		parts := make([]string, len(v.keys))
		for i, k := range refHashMapOrder(v) {
			parts[i] = v.keys[k] + "=" + refFlatten(v.vals[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return "null"
}

// refHashMapOrder is the order a java.util.HashMap of default capacity
// iterates over o's keys: by bucket of the final table (16, doubled each
// time the size passes three quarters of it), then in the order put. (A
// bucket of eight keys or more in a table of 64 or more becomes a tree,
// whose order differs; no CloudTrail object comes near.)
func refHashMapOrder(o *refObj) []int {
	n := 16
	for o.puts > n*3/4 {
		n *= 2
	}
	bucket := func(k string) int {
		var h int32
		for _, u := range utf16.Encode([]rune(k)) {
			h = 31*h + int32(u)
		}
		x := uint32(h)
		return int((x ^ x>>16) & uint32(n-1))
	}
	order := make([]int, len(o.keys))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return bucket(o.keys[a]) - bucket(o.keys[b]) })
	return order
}

// refJavaNumber is how a JSON number prints after Jackson read it: an
// integer as Integer, Long or BigInteger (its digits, "-0" as 0), anything
// else as a Double.
func refJavaNumber(s string) string {
	if !strings.ContainsAny(s, ".eE") {
		if s == "-0" {
			return "0"
		}
		return s
	}
	f, _ := strconv.ParseFloat(s, 64)
	switch {
	case math.IsInf(f, 0) && f > 0:
		return "Infinity"
	case math.IsInf(f, 0):
		return "-Infinity"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	// Double.toString (Java 19+): the shortest decimal that reads back, or
	// of those with one or two digits the closest; plain from 10^-3 to
	// 10^7, else d.dddE±n.
	abs := math.Abs(f)
	digits, exp := refShortest(abs)
	neg := ""
	if f < 0 {
		neg = "-"
	}
	if abs >= 1e-3 && abs < 1e7 {
		// digits × 10^(exp-len(digits)+1) written out
		point := exp + 1
		var intPart, frac string
		switch {
		case point <= 0:
			intPart, frac = "0", strings.Repeat("0", -point)+digits
		case point >= len(digits):
			intPart, frac = digits+strings.Repeat("0", point-len(digits)), "0"
		default:
			intPart, frac = digits[:point], digits[point:]
		}
		return neg + intPart + "." + frac
	}
	frac := digits[1:]
	if frac == "" {
		frac = "0"
	}
	return neg + digits[:1] + "." + frac + "E" + strconv.Itoa(exp)
}

// refShortest returns the significant digits (no trailing zeros) and the
// decimal exponent of the first of them for the decimal Java 19's
// Double.toString picks for f > 0.
func refShortest(f float64) (string, int) {
	for prec := 1; prec <= 17; prec++ {
		s := strconv.FormatFloat(f, 'e', prec-1, 64)
		if g, _ := strconv.ParseFloat(s, 64); g != f {
			continue
		}
		if prec == 1 {
			// Two digits may be closer than the one that reads back.
			s = strconv.FormatFloat(f, 'e', 1, 64)
		}
		mant, e, _ := strings.Cut(s, "e")
		exp, _ := strconv.Atoi(e)
		d := strings.TrimRight(strings.ReplaceAll(mant, ".", ""), "0")
		if d == "" {
			d = "0"
		}
		return d, exp
	}
	panic("no decimal reads back")
}

// refContains is EQL's stringContains(aws.cloudtrail.request_parameters, s)
// on the record as Elastic's pipeline maps it: requestParameters pruned and
// flattened into Java's toString text.
func refContains(rec *refObj, s string) bool {
	p, ok := refPrune(rec.get("requestParameters"))
	return ok && strings.Contains(refFlatten(p), s)
}

func refRecordRule(ruleID string, rec *refObj) bool {
	success := refOutcome(rec) == "success"
	failure := refOutcome(rec) == "failure"
	name, _ := rec.get("eventName").(string)
	quarantine := refContains(rec, "AWSCompromisedKeyQuarantine")
	switch ruleID {
	case ElasticQuarantineRule.ID:
		return name == "AttachUserPolicy" && success && quarantine
	case QuarantineAttachFailedRule.ID:
		return name == "AttachUserPolicy" && failure && quarantine
	case QuarantineDetachedRule.ID:
		return (name == "DetachUserPolicy" || name == "DetachRolePolicy" || name == "DetachGroupPolicy") && success && quarantine
	case QuarantineRoleOrGroupRule.ID:
		return (name == "AttachRolePolicy" || name == "AttachGroupPolicy") && success && quarantine
	case LegacyInlineQuarantineRule.ID:
		return name == "PutUserPolicy" && success && refContains(rec, "AWSExposedCredentialPolicy_DO_NOT_REMOVE")
	case zeroTrustRule.ID:
		return (name == "AttachUserPolicy" || name == "PutUserPolicy") && success &&
			(refContains(rec, "ZeroTrustBoundary-Jx") || refContains(rec, "DenyAll-Zq"))
	}
	panic("reference: no logic for rule " + ruleID)
}

// refECSValues is every value of the field path in an ECS document as
// Elasticsearch indexes it: the path spelled nested, dotted or mixed, each
// array's elements as values of the one field.
func refECSValues(v any, path string) []any {
	var out []any
	var walk func(v any, rest string)
	walk = func(v any, rest string) {
		if a, ok := v.([]any); ok {
			for _, e := range a {
				walk(e, rest)
			}
			return
		}
		if rest == "" {
			out = append(out, v)
			return
		}
		o, ok := v.(*refObj)
		if !ok {
			return
		}
		for i, k := range o.keys {
			switch {
			case k == rest:
				walk(o.vals[i], "")
			case strings.HasPrefix(rest, k+"."):
				walk(o.vals[i], rest[len(k)+1:])
			}
		}
	}
	walk(v, path)
	return out
}

// refECSHas reports whether a value of the field is the string want.
func refECSHas(doc *refObj, path, want string) bool {
	for _, v := range refECSValues(doc, path) {
		if v == want {
			return true
		}
	}
	return false
}

func refECSString(doc *refObj, path string) (string, bool) {
	for _, v := range refECSValues(doc, path) {
		if s, ok := v.(string); ok {
			return s, true
		}
	}
	return "", false
}

func refECSContains(doc *refObj, s string) bool {
	for _, v := range refECSValues(doc, "aws.cloudtrail.request_parameters") {
		if p, ok := v.(string); ok && strings.Contains(p, s) {
			return true
		}
	}
	return false
}

func refECSRule(ruleID string, doc *refObj) bool {
	cloudtrail := refECSHas(doc, "event.dataset", "aws.cloudtrail") || refECSHas(doc, "data_stream.dataset", "aws.cloudtrail")
	action := func(names ...string) bool {
		for _, n := range names {
			if refECSHas(doc, "event.action", n) {
				return true
			}
		}
		return false
	}
	success := refECSHas(doc, "event.outcome", "success")
	failure := refECSHas(doc, "event.outcome", "failure")
	quarantine := refECSContains(doc, "AWSCompromisedKeyQuarantine")
	switch ruleID {
	case ElasticQuarantineRule.ID:
		return cloudtrail && action("AttachUserPolicy") && success && quarantine
	case QuarantineAttachFailedRule.ID:
		return cloudtrail && action("AttachUserPolicy") && failure && quarantine
	case QuarantineDetachedRule.ID:
		return cloudtrail && action("DetachUserPolicy", "DetachRolePolicy", "DetachGroupPolicy") && success && quarantine
	case QuarantineRoleOrGroupRule.ID:
		return cloudtrail && action("AttachRolePolicy", "AttachGroupPolicy") && success && quarantine
	case LegacyInlineQuarantineRule.ID:
		return cloudtrail && action("PutUserPolicy") && success && refECSContains(doc, "AWSExposedCredentialPolicy_DO_NOT_REMOVE")
	case zeroTrustRule.ID:
		return cloudtrail && action("AttachUserPolicy", "PutUserPolicy") && success &&
			(refECSContains(doc, "ZeroTrustBoundary-Jx") || refECSContains(doc, "DenyAll-Zq"))
	}
	panic("reference: no logic for rule " + ruleID)
}

// refWatchEntries is the watchlist m holds, as configuration: the entries,
// in the order the findings of one event come in (by account, then
// lowercase user name, then opening time), sorted here.
func refWatchEntries(m *Matcher) []WatchEntry {
	entries := m.Watchlist().Entries()
	slices.SortFunc(entries, func(a, b WatchEntry) int {
		if a.Account != b.Account {
			return strings.Compare(a.Account, b.Account)
		}
		if c := strings.Compare(refASCIILower(a.UserName), refASCIILower(b.UserName)); c != 0 {
			return c
		}
		return a.OpenedAt.Compare(b.OpenedAt)
	})
	return entries
}

// refASCIILower lowers A to Z alone: IAM names are ASCII and compare
// without regard to case, and no other character is folded.
func refASCIILower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// refWatchFindings is the post-quarantine rules on one decoded record, from
// issue 13's definitions, literally: for each watched user U of account A
// whose window (OpenedAt, Until] holds the record's eventTime, U is the
// actor when userIdentity, or its sessionContext.sessionIssuer, is an
// IAMUser with userName U and accountId A; the call is on U when
// requestParameters.userName is U and recipientAccountId is A. A failed
// call is never a finding; the quarantine removed (DetachUserPolicy of a
// quarantine policy, DeleteUserPolicy, on U, in IAM) is defense evasion; a
// key or login profile created or a password changed in IAM, for or by U,
// is persistence; any other call by U is activity.
func refWatchFindings(rec *refObj, entries []WatchEntry, index int) []refFinding {
	var out []refFinding
	if len(entries) == 0 {
		return nil
	}
	at, err := time.Parse(time.RFC3339, refStr(rec.get("eventTime")))
	if err != nil {
		return nil
	}
	name := refStr(rec.get("eventName"))
	iam := refStr(rec.get("eventSource")) == "iam.amazonaws.com"
	params, _ := rec.get("requestParameters").(*refObj)
	isUser := func(identity any, e WatchEntry) bool {
		o, ok := identity.(*refObj)
		return ok && refStr(o.get("type")) == "IAMUser" && refStr(o.get("accountId")) == e.Account &&
			refASCIILower(refStr(o.get("userName"))) == refASCIILower(e.UserName)
	}
	for _, e := range entries {
		if !at.After(e.OpenedAt) || at.After(e.Until) {
			continue
		}
		identity, _ := rec.get("userIdentity").(*refObj)
		var issuer any
		if sc, ok := identity.get("sessionContext").(*refObj); ok {
			issuer = sc.get("sessionIssuer")
		}
		actor := isUser(identity, e) || isUser(issuer, e)
		userParam, isString := params.get("userName").(string)
		target := isString && refASCIILower(userParam) == refASCIILower(e.UserName) && refStr(rec.get("recipientAccountId")) == e.Account
		if refOutcome(rec) != "success" || !actor && !target {
			continue
		}
		var rule *Rule
		switch {
		case target && iam && (name == "DetachUserPolicy" && strings.Contains(refStr(params.get("policyArn")), "AWSCompromisedKeyQuarantine") || name == "DeleteUserPolicy"):
			rule = PostQuarantineDefenseEvasionRule
		case iam && (name == "CreateAccessKey" || name == "CreateLoginProfile" || name == "UpdateLoginProfile"):
			rule = PostQuarantinePersistenceRule
		case actor:
			rule = PostQuarantineActivityRule
		default:
			continue
		}
		out = append(out, refFinding{rule.ID, refStr(rec.get("eventID")), index, e.Account + "/" + refASCIILower(e.UserName) + "/" + e.AlertID})
	}
	return out
}

// refStr is v when it is a string, else "".
func refStr(v any) string {
	s, _ := v.(string)
	return s
}
