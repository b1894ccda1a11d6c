package matcher

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
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
// against: it decodes everything with encoding/json, uses no prefilter and
// shares no code with the matcher. It reports the findings and whether any
// part of the value was malformed.
func reference(value []byte, rules []*Rule, maxValue, maxDecoded int) (found []refFinding, malformed bool) {
	if len(value) > maxValue {
		return nil, true
	}
	text := value
	if bytes.HasPrefix(value, []byte{0x1f, 0x8b}) {
		var ok bool
		if text, ok = refGunzip(value, maxDecoded); !ok {
			return nil, true
		}
	} else if t := bytes.Trim(value, " \t\r\n"); bytes.HasPrefix(t, []byte("H4sI")) {
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

func refGunzip(b []byte, limit int) ([]byte, bool) {
	// RFC 1952: a decoder must refuse a header with reserved flag bits set;
	// compress/gzip does not check them.
	if len(b) >= 4 && b[3]&0xe0 != 0 {
		return nil, false
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, false
	}
	out, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil || len(out) > limit {
		return nil, false
	}
	return out, true
}

func refGunzipBase64(b []byte, limit int) ([]byte, bool) {
	raw, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil {
		return nil, false
	}
	return refGunzip(raw, limit)
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
	}
	panic("reference: no logic for rule " + ruleID)
}
