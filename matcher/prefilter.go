package matcher

import "bytes"

// The prefilter decides, without decoding, whether JSON text can hold an
// event that a rule matches. It may pass a record that does not match; it
// must never reject one that does. Every rule requires the marker below in
// a decoded string, so the argument for soundness is about how a decoded
// string can contain the marker:
//
//   - JSON encodes a character of a string either literally or as an escape.
//     The marker's characters are letters, which have no short escape (\n,
//     \", ...): an escaped letter is always \uXXXX. So either the marker
//     appears literally in the bytes, or the bytes contain `\u`.
//   - A record carried as a string inside another document (the Agent
//     "message", CloudWatch logEvents[].message) is JSON text escaped once
//     more. By induction over the levels: if the outer bytes contain no `\u`,
//     the outer decoding only turns `\\` into `\` and `\"` into `"`, so the
//     inner text contains `\u` only where the outer bytes hold `\\u`, which
//     contains `\u`; and the marker, which has neither `\` nor `"`, appears
//     in the inner text only where it appears in the outer bytes.
//   - Compressed payloads hide everything, so they are never prefiltered as
//     they are: a value that is gzip or base64 of gzip is decompressed first
//     and the prefilter runs on the result. Base64 of gzip always starts
//     with "H4sI" (the gzip magic 1f 8b 08), so a document holding one (the
//     {"awslogs":{"data":...}} wrapper) contains "H4sI", or `\u` if the
//     writer escaped it.
var (
	marker       = []byte("AWSCompromisedKeyQuarantine")
	escapeU      = []byte(`\u`)
	base64Gzip   = []byte("H4sI")
	markerBefore = marker[:bytes.IndexByte(marker, 'Q')] // "AWSCompromisedKey"
	markerAfter  = marker[bytes.IndexByte(marker, 'Q'):] // "Quarantine"
)

// mayMatch reports whether the JSON text b can hold a matching event, or a
// compressed payload that can. See the soundness argument above.
func mayMatch(b []byte) bool {
	return containsMarker(b) || bytes.Contains(b, escapeU) || bytes.Contains(b, base64Gzip)
}

// containsMarker is bytes.Contains(b, marker), anchored on 'Q': the rarest
// byte of the marker in CloudTrail text, so IndexByte skips most of the
// record at memchr speed where bytes.Index would stop at every 'A'.
func containsMarker(b []byte) bool {
	for i := len(markerBefore); i <= len(b)-len(markerAfter); {
		q := bytes.IndexByte(b[i:len(b)-len(markerAfter)+1], 'Q')
		if q < 0 {
			return false
		}
		i += q
		if bytes.Equal(b[i-len(markerBefore):i], markerBefore) && bytes.Equal(b[i:i+len(markerAfter)], markerAfter) {
			return true
		}
		i++
	}
	return false
}
