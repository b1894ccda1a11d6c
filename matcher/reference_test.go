package matcher

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf8"
)

// refFinding is what the reference evaluator and the matcher must agree on.
type refFinding struct {
	RuleID  string
	EventID string
	Index   int
}

// reference is the obviously correct evaluator the fast path is checked
// against. It shares no code, table or assumption with the matcher: it
// sniffs the value by itself, decodes base64 (RFC 4648) and the gzip
// framing (RFC 1952) with its own strict code written from those
// documents (DEFLATE with compress/flate, JSON with encoding/json), uses no
// prefilter, and evaluates every rule from its own logic. It reports the
// findings and whether any part of the value was malformed.
func reference(value []byte, rules []*Rule, maxValue, maxDecoded int) (found []refFinding, malformed bool) {
	if len(value) > maxValue {
		return nil, true
	}
	text := value
	if len(value) >= 2 && value[0] == 0x1f && value[1] == 0x8b {
		var ok bool
		if text, ok = refGunzip(value, maxDecoded); !ok {
			return nil, true
		}
	} else if t := refTrimJSONSpace(value); len(t) >= 4 && string(t[:4]) == "H4sI" {
		var ok bool
		if text, ok = refGunzipBase64(t, maxDecoded); !ok {
			return nil, true
		}
	}
	doc, ok := refParse(text)
	if !ok {
		return nil, true
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, true
	}
	var bad bool
	record := func(v any, index int) {
		rec, ok := v.(map[string]any)
		if !ok {
			bad = true
			return
		}
		for _, r := range rules {
			if refRecordRule(r.ID, rec) {
				id, _ := rec["eventID"].(string)
				found = append(found, refFinding{r.ID, id, index})
			}
		}
	}
	recordText := func(v any, index int) {
		s, ok := v.(string)
		if !ok {
			bad = true
			return
		}
		inner, ok := refParse([]byte(s))
		if !ok {
			bad = true
			return
		}
		record(inner, index)
	}
	logEvents := func(payload map[string]any) {
		if payload["messageType"] == "CONTROL_MESSAGE" {
			return
		}
		events, ok := payload["logEvents"].([]any)
		if !ok {
			bad = true
			return
		}
		for i, e := range events {
			ev, ok := e.(map[string]any)
			if !ok {
				bad = true
				continue
			}
			recordText(ev["message"], i)
		}
	}
	has := func(k string) bool { _, ok := top[k]; return ok }
	event, _ := top["event"].(map[string]any)
	_, ecsAction := event["action"]
	switch {
	case has("Records"):
		records, ok := top["Records"].([]any)
		if !ok {
			return found, true
		}
		for i, r := range records {
			record(r, i)
		}
	case has("awslogs"):
		// The wrapper holds base64 of gzip of a CloudWatch Logs payload,
		// and only its log events are evaluated.
		wrapper, _ := top["awslogs"].(map[string]any)
		data, ok := wrapper["data"].(string)
		if !ok {
			return found, true
		}
		inflated, ok := refGunzipBase64([]byte(data), maxDecoded)
		if !ok {
			return found, true
		}
		inner, ok := refParse(inflated)
		payload, isObject := inner.(map[string]any)
		if !ok || !isObject {
			return found, true
		}
		if _, ok := payload["logEvents"]; !ok {
			return found, true
		}
		logEvents(payload)
	case has("logEvents"):
		logEvents(top)
	case has("detail") && has("detail-type"):
		record(top["detail"], 0)
	case has("eventName"):
		record(top, 0)
	case ecsAction:
		for _, r := range rules {
			if refECSRule(r.ID, top) {
				id, _ := event["id"].(string)
				found = append(found, refFinding{r.ID, id, 0})
			}
		}
	case has("message"):
		recordText(top["message"], 0)
	default:
		return found, true
	}
	return found, bad
}

// refTrimJSONSpace trims the four whitespace characters of RFC 8259.
func refTrimJSONSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}

// refParse decodes JSON text (RFC 8259) that must also be UTF-8 (section
// 8.1; encoding/json would replace invalid bytes instead of refusing).
// A byte order mark is refused, as section 8.1 allows.
func refParse(b []byte) (any, bool) {
	if !utf8.Valid(b) {
		return nil, false
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, false
	}
	return v, true
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

// refContains is Elastic's stringContains over the flattened request
// parameters: any key or string value, at any depth.
func refContains(v any, s string) bool {
	switch v := v.(type) {
	case string:
		return strings.Contains(v, s)
	case map[string]any:
		for k, e := range v {
			if strings.Contains(k, s) || refContains(e, s) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if refContains(e, s) {
				return true
			}
		}
	}
	return false
}

// refNonEmpty: Elastic drops null and "" before it decides event.outcome.
func refNonEmpty(v any, present bool) bool {
	return present && v != nil && v != ""
}

func refRecordRule(ruleID string, rec map[string]any) bool {
	errorCode, hasCode := rec["errorCode"]
	errorMessage, hasMessage := rec["errorMessage"]
	success := !refNonEmpty(errorCode, hasCode) && !refNonEmpty(errorMessage, hasMessage)
	name, _ := rec["eventName"].(string)
	quarantine := refContains(rec["requestParameters"], "AWSCompromisedKeyQuarantine")
	switch ruleID {
	case ElasticQuarantineRule.ID:
		return name == "AttachUserPolicy" && success && quarantine
	case QuarantineAttachFailedRule.ID:
		return name == "AttachUserPolicy" && !success && quarantine
	case QuarantineDetachedRule.ID:
		return (name == "DetachUserPolicy" || name == "DetachRolePolicy" || name == "DetachGroupPolicy") && success && quarantine
	case QuarantineRoleOrGroupRule.ID:
		return (name == "AttachRolePolicy" || name == "AttachGroupPolicy") && success && quarantine
	case LegacyInlineQuarantineRule.ID:
		return name == "PutUserPolicy" && success && refContains(rec["requestParameters"], "AWSExposedCredentialPolicy_DO_NOT_REMOVE")
	case zeroTrustRule.ID:
		return (name == "AttachUserPolicy" || name == "PutUserPolicy") && success &&
			(refContains(rec["requestParameters"], "ZeroTrustBoundary-Jx") || refContains(rec["requestParameters"], "DenyAll-Zq"))
	}
	panic("reference: no logic for rule " + ruleID)
}

func refECSRule(ruleID string, doc map[string]any) bool {
	event, _ := doc["event"].(map[string]any)
	stream, _ := doc["data_stream"].(map[string]any)
	aws, _ := doc["aws"].(map[string]any)
	ct, _ := aws["cloudtrail"].(map[string]any)
	params, _ := ct["request_parameters"].(string)
	cloudtrail := event["dataset"] == "aws.cloudtrail" || stream["dataset"] == "aws.cloudtrail"
	action, _ := event["action"].(string)
	success := event["outcome"] == "success"
	failure := event["outcome"] == "failure"
	quarantine := strings.Contains(params, "AWSCompromisedKeyQuarantine")
	switch ruleID {
	case ElasticQuarantineRule.ID:
		return cloudtrail && action == "AttachUserPolicy" && success && quarantine
	case QuarantineAttachFailedRule.ID:
		return cloudtrail && action == "AttachUserPolicy" && failure && quarantine
	case QuarantineDetachedRule.ID:
		return cloudtrail && (action == "DetachUserPolicy" || action == "DetachRolePolicy" || action == "DetachGroupPolicy") && success && quarantine
	case QuarantineRoleOrGroupRule.ID:
		return cloudtrail && (action == "AttachRolePolicy" || action == "AttachGroupPolicy") && success && quarantine
	case LegacyInlineQuarantineRule.ID:
		return cloudtrail && action == "PutUserPolicy" && success && strings.Contains(params, "AWSExposedCredentialPolicy_DO_NOT_REMOVE")
	case zeroTrustRule.ID:
		return cloudtrail && (action == "AttachUserPolicy" || action == "PutUserPolicy") && success &&
			(strings.Contains(params, "ZeroTrustBoundary-Jx") || strings.Contains(params, "DenyAll-Zq"))
	}
	panic("reference: no logic for rule " + ruleID)
}
