package cloudtrailgen

import (
	"bytes"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// appendECS appends the document Elastic's CloudTrail ingest pipeline makes
// of a record (sample 08), with preserve_original_event: event.action is
// eventName, event.outcome is failure when errorCode or errorMessage is
// non-empty, aws.cloudtrail.request_parameters is the parameters as
// "{key=value, ...}" text, and event.original is the record as delivered.
func (g *Generator) appendECS(dst []byte) []byte {
	format := g.drawFormat()
	st := g.plan(g.drawKind(), capFor(format, 1500))
	g.addEvent(st)
	g.raw = g.appendCloudTrail(g.raw[:0], st)
	var params []byte
	if g.paramsSeen {
		params = g.raw[g.paramsSpan[0]:g.paramsSpan[1]]
		if string(params) == "null" {
			params = nil
		}
	}

	b := dst
	if format != formatCompact {
		b = g.aux[:0]
	}
	b = append(b, `{"@timestamp":"`...)
	b = appendTimeMillis(b, st.sec*1000)
	b = append(b, `","aws":{"cloudtrail":{`...)
	failure := st.errCode != "" || st.errMsg != ""
	if st.errCode != "" {
		b = kv(b, "error_code", st.errCode)
		b = append(b, ',')
	}
	if st.errMsg != "" {
		b = append(b, `"error_message":"`...)
		b = appendJSONString(b, []byte(st.errMsg))
		b = append(b, `",`...)
	}
	if st.modern {
		if st.op.data {
			b = append(b, `"event_category":"Data",`...)
		} else {
			b = append(b, `"event_category":"Management",`...)
		}
	}
	b = kv(b, "event_type", eventType(st.op))
	b = append(b, ',')
	b = kv(b, "event_version", st.version)
	if params != nil {
		b = append(b, `,"flattened":{"request_parameters":`...)
		b = append(b, params...)
		b = append(b, '}')
	}
	if st.op.readOnly {
		b = append(b, `,"read_only":true`...)
	} else {
		b = append(b, `,"read_only":false`...)
	}
	b = append(b, `,"recipient_account_id":"`...)
	b = append(b, st.account...)
	b = append(b, '"')
	if st.has(fRequestID) {
		b = append(b, `,"request_id":"`...)
		b = append(b, st.reqID...)
		b = append(b, '"')
	}
	if params != nil {
		b = append(b, `,"request_parameters":"`...)
		at := len(b)
		g.flat = appendFlattened(g.flat[:0], params, g.rng.IntN(4))
		b = appendJSONString(b, g.flat)
		if st.esc&escMarker != 0 {
			b = escapeMarkerIn(b, at, st)
		}
		b = append(b, '"')
	}
	b = append(b, `,"user_identity":`...)
	b = g.appendECSIdentity(b, st)
	b = append(b, `}},"cloud":{"account":{"id":"`...)
	b = append(b, st.account...)
	b = append(b, `"},"provider":"aws","region":"`...)
	b = append(b, st.region...)
	b = append(b, `"},`...)
	dataset := g.rng.IntN(5)
	if dataset >= 3 {
		b = append(b, `"data_stream":{"dataset":"aws.cloudtrail","namespace":"default","type":"logs"},`...)
	}
	b = append(b, `"ecs":{"version":"8.11.0"},"event":{"action":"`...)
	if st.esc&escName != 0 {
		b = appendEscapedAt(b, st.op.name, int(st.escPos[0]), st.escUpper)
	} else {
		b = append(b, st.op.name...)
	}
	b = append(b, `","category":["`...)
	switch service(st.op) {
	case "iam":
		b = append(b, "iam"...)
	case "signin":
		b = append(b, "authentication"...)
	default:
		b = append(b, "configuration"...)
	}
	b = append(b, `"],"created":"`...)
	b = appendTimeMillis(b, st.ms+int64(60000+g.rng.IntN(300000)))
	b = append(b, '"')
	if dataset != 3 {
		b = append(b, `,"dataset":"aws.cloudtrail"`...)
	}
	b = append(b, `,"id":"`...)
	b = append(b, st.id...)
	b = append(b, `","kind":"event","module":"aws","original":"`...)
	b = appendJSONString(b, g.raw)
	if failure {
		b = append(b, `","outcome":"failure","provider":"`...)
	} else {
		b = append(b, `","outcome":"success","provider":"`...)
	}
	b = append(b, st.op.source...)
	if st.op.readOnly {
		b = append(b, `","type":["info"]},`...)
	} else {
		b = append(b, `","type":["change"]},`...)
	}
	if st.has(fSourceIPAddress) {
		b = append(b, `"source":{"address":"`...)
		b = append(b, st.ip...)
		if c := st.ip[0]; c >= '0' && c <= '9' {
			b = append(b, `","ip":"`...)
			b = append(b, st.ip...)
		}
		b = append(b, `"},`...)
	}
	b = append(b, `"tags":["preserve_original_event","forwarded","aws-cloudtrail"]`...)
	if st.tls {
		b = append(b, `,"tls":{"cipher":"TLS_AES_128_GCM_SHA256","client":{"server_name":"`...)
		b = g.appendHost(b, st)
		b = append(b, `"},"version":"1.3","version_protocol":"tls"}`...)
	}
	if st.itype != idAWSService && st.itype != idServiceEvent {
		b = append(b, `,"user":{"id":"`...)
		b = principalID(b, st)
		b = append(b, '"')
		if st.caller != "" {
			b = kv(append(b, ','), "name", st.caller)
		}
		if st.targetKey == "userName" {
			b = append(b, `,"target":{"name":"`...)
			b = append(b, st.target...)
			b = append(b, `"}`...)
		}
		b = append(b, '}')
	}
	if st.has(fUserAgent) {
		b = append(b, `,"user_agent":{"original":"`...)
		b = append(b, st.ua...)
		b = append(b, `"}`...)
	}
	b = append(b, '}')
	if format == formatCompact {
		return b
	}
	g.aux = b
	return g.appendAs(dst, b, format)
}

func eventType(op *operation) string {
	if op.eventType == "" {
		return "AwsApiCall"
	}
	return op.eventType
}

func (g *Generator) appendECSIdentity(b []byte, st *eventState) []byte {
	switch st.itype {
	case idAWSService, idServiceEvent:
		b = append(b, `{"invoked_by":"`...)
		b = append(b, st.invokedBy...)
		if st.itype == idAWSService {
			return append(b, `","type":"AWSService"}`...)
		}
		return append(b, `"}`...)
	}
	b = append(b, `{"access_key_id":"`...)
	b = append(b, st.akid[:]...)
	b = append(b, `","arn":"`...)
	b = g.callerArn(b, st)
	b = append(b, `","session_context":{"creation_date":"`...)
	b = appendTimeMillis(b, st.created*1000)
	if st.mfa {
		b = append(b, `","mfa_authenticated":"true"`...)
	} else {
		b = append(b, `","mfa_authenticated":"false"`...)
	}
	if st.itype == idAssumedRole {
		b = append(b, `,"session_issuer":{"account_id":"`...)
		b = append(b, st.callerAct...)
		b = append(b, `","arn":"arn:aws:iam::`...)
		b = append(b, st.callerAct...)
		b = append(b, ":role/"...)
		b = append(b, st.caller...)
		b = append(b, `","principal_id":"`...)
		b = append(b, st.pid[:]...)
		b = append(b, `","type":"Role"}`...)
	}
	b = append(b, `},"type":"`...)
	b = append(b, identNames[st.itype]...)
	return append(b, `"}`...)
}

// escapeMarkerIn rewrites the first marker at or after from with one
// character as a \u escape, as planned for an EscapedQuarantine.
func escapeMarkerIn(b []byte, from int, st *eventState) []byte {
	i := bytes.Index(b[from:], []byte(Marker))
	if i < 0 {
		return b
	}
	i += from
	var buf [len(Marker) + 5]byte
	esc := appendEscapedAt(buf[:0], Marker, int(st.escPos[1]), st.escUpper)
	return slices.Replace(b, i, i+len(Marker), esc...)
}

// appendFlattened appends the JSON object src as Elastic's pipeline
// flattens request parameters: Java's Map.toString, "{k=v, k2={a=b}, k3=[x, y]}",
// strings unquoted and unescaped. rot rotates the order of the top-level
// keys, which that text does not keep. src must be valid JSON.
func appendFlattened(dst, src []byte, rot int) []byte {
	i := skipWS(src, 0)
	if i >= len(src) || src[i] != '{' {
		dst, _ = flattenValue(dst, src, i)
		return dst
	}
	var members [24][2]int
	n := 0
	i++
	for n < len(members) {
		i = skipWS(src, i)
		if src[i] == '}' {
			break
		}
		if src[i] == ',' {
			i++
			continue
		}
		start := i
		i = skipString(src, i)
		i = skipWS(src, i) + 1 // ':'
		i = skipValue(src, skipWS(src, i))
		members[n] = [2]int{start, i}
		n++
	}
	dst = append(dst, '{')
	for k := range n {
		m := members[(k+rot)%n]
		if k > 0 {
			dst = append(dst, ", "...)
		}
		j := m[0]
		dst, j = decodeString(dst, src, j)
		dst = append(dst, '=')
		j = skipWS(src, j) + 1
		dst, _ = flattenValue(dst, src, j)
	}
	return append(dst, '}')
}

func flattenValue(dst, src []byte, i int) ([]byte, int) {
	i = skipWS(src, i)
	switch src[i] {
	case '{', '[':
		closing := byte('}')
		if src[i] == '[' {
			closing = ']'
		}
		dst = append(dst, src[i])
		i++
		first := true
		for {
			i = skipWS(src, i)
			if src[i] == closing {
				return append(dst, closing), i + 1
			}
			if src[i] == ',' {
				i++
				continue
			}
			if !first {
				dst = append(dst, ", "...)
			}
			first = false
			if closing == '}' {
				dst, i = decodeString(dst, src, i)
				dst = append(dst, '=')
				i = skipWS(src, i) + 1
			}
			dst, i = flattenValue(dst, src, i)
		}
	case '"':
		return decodeString(dst, src, i)
	}
	j := i
	for j < len(src) && !bytes.ContainsRune([]byte(",}] \t\r\n"), rune(src[j])) {
		j++
	}
	return append(dst, src[i:j]...), j
}

func skipWS(src []byte, i int) int {
	for i < len(src) && (src[i] == ' ' || src[i] == '\t' || src[i] == '\n' || src[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that opens at i.
func skipString(src []byte, i int) int {
	for i++; i < len(src); i++ {
		switch src[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the value that starts at i.
func skipValue(src []byte, i int) int {
	depth := 0
	for i < len(src) {
		switch src[i] {
		case '"':
			i = skipString(src, i)
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 {
				return i
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return i
}

// decodeString appends the decoded contents of the JSON string at i and
// returns the index after it.
func decodeString(dst, src []byte, i int) ([]byte, int) {
	for i++; i < len(src); i++ {
		c := src[i]
		switch c {
		case '"':
			return dst, i + 1
		case '\\':
			i++
			switch src[i] {
			case 'n':
				dst = append(dst, '\n')
			case 't':
				dst = append(dst, '\t')
			case 'r':
				dst = append(dst, '\r')
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'u':
				r := hex4(src[i+1 : i+5])
				i += 4
				if utf16.IsSurrogate(r) && i+6 < len(src) && src[i+1] == '\\' && src[i+2] == 'u' {
					if r2 := utf16.DecodeRune(r, hex4(src[i+3:i+7])); r2 != utf8.RuneError {
						r = r2
						i += 6
					}
				}
				dst = utf8.AppendRune(dst, r)
			default: // " \ /
				dst = append(dst, src[i])
			}
		default:
			dst = append(dst, c)
		}
	}
	return dst, i
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}
