package cloudtrailgen

import (
	"bytes"
	"slices"
)

// deepNesting is how deep DefectTooDeep nests arrays: the default limit of
// Go's encoding/json and of many other decoders.
const deepNesting = 10000

// badUTF8 are byte sequences that are not UTF-8: stray continuation and
// invalid bytes, a truncated sequence, an overlong encoding, a surrogate.
var badUTF8 = []string{"\xff", "\xfe\xfe", "\xc3\x28", "\xe2\x82", "\xc0\xaf", "\xed\xa0\x80", "\xf8\x88\x80\x80\x80"}

// notJSON are values that are text, not JSON; several name the rule's
// event, so that a matcher that looks for substrings before parsing fails.
var notJSON = []string{
	"<14>Nov  1 00:00:01 ip-10-0-1-23 cloudtrail-forwarder[2211]: AttachUserPolicy arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2 userName=test-user",
	`level=info ts=2024-11-01T00:00:01Z msg=forwarded eventName=AttachUserPolicy policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3`,
	"<html><head><title>503 Service Temporarily Unavailable</title></head><body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>",
	"eventTime,eventName,userName,policyArn\n2024-11-01T00:00:01Z,AttachUserPolicy,test-user,arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantine",
	`{'eventName': 'AttachUserPolicy', 'requestParameters': {'userName': 'test-user', 'policyArn': 'arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2'}, 'errorCode': None}`,
	"CWL CONTROL MESSAGE: Checking health of destination Firehose.",
	"PING",
}

// appendMalformed appends a value that no correct decoder accepts. The
// JSON defects are made from a rule positive half of the time.
func (g *Generator) appendMalformed(dst []byte) Record {
	d := Defect(1 + g.rng.IntN(int(numDefects-1)))
	shape := ShapeRecord
	switch d {
	case DefectTruncated:
		raw := g.malformedBase()
		n := 1 + g.rng.IntN(len(raw)-1)
		if g.cfg.Dense {
			// A prefix ending with a brace passes the framing check, and
			// one cut before the marker is never validated: it would
			// yield no output at all.
			for n > 1 && raw[n-1] == '}' {
				n--
			}
		}
		dst = append(dst, raw[:n]...)
	case DefectInvalidUTF8, DefectNUL:
		raw := g.malformedBase()
		bad := "\x00"
		if d == DefectInvalidUTF8 {
			bad = pick(g, badUTF8)
		}
		at := stringValueAt(raw, `"userAgent":"`)
		if at < 0 {
			at = stringValueAt(raw, `"eventID":"`)
		}
		at += g.rng.IntN(8) // inside the value: user agents and ids are longer
		raw = slices.Insert(raw, at, []byte(bad)...)
		g.raw = raw
		dst = append(dst, raw...)
	case DefectBadGzip:
		shape = ShapeCloudWatchGzip
		// A valid gzip header, then a deflate block of the reserved type 3
		// (bits 1-2 of the first byte set), which every inflater rejects.
		dst = append(dst, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff)
		dst = append(dst, byte(0x06|g.rng.IntN(2)|g.rng.IntN(32)<<3))
		for range 16 + g.rng.IntN(400) {
			dst = append(dst, byte(g.rng.Uint32()))
		}
	case DefectNotJSON:
		shape = ShapeUnknown
		dst = append(dst, pick(g, notJSON)...)
	case DefectEmpty:
		shape = ShapeUnknown
	case DefectTooDeep:
		shape = ShapeS3Object
		raw := g.malformedBase()
		dst = append(dst, `{"Records":`...)
		for range deepNesting {
			dst = append(dst, '[')
		}
		dst = append(dst, raw...)
		for range deepNesting {
			dst = append(dst, ']')
		}
		// and the object is never closed
	}
	return Record{Value: dst, Shape: shape, Malformed: true, Defect: d}
}

// malformedBase writes a compact record, a positive half of the time (in a
// dense stream always, so that the marker gets it validated), into g.raw
// without reporting its event.
func (g *Generator) malformedBase() []byte {
	kind := Noise
	if g.cfg.Dense || g.rng.IntN(2) == 0 {
		kind = Quarantine
	}
	st := g.plan(kind, maxSingle)
	g.raw = g.appendCloudTrail(g.raw[:0], st)
	return g.raw
}

// stringValueAt returns the offset just after prefix (which ends inside a
// string value) in raw, or -1.
func stringValueAt(raw []byte, prefix string) int {
	i := bytes.Index(raw, []byte(prefix))
	if i < 0 {
		return -1
	}
	return i + len(prefix)
}
