package matcher

import (
	"bytes"
	"encoding/binary"
)

// maxDepth is encoding/json's nesting limit, so that this validator and the
// reference evaluator agree on what is too deep.
const maxDepth = 10000

// span is b[start:end] of the text being indexed.
type span struct{ start, end int }

// member is one member of a top-level object (key and value) or array
// (value only).
type member struct{ key, val span }

// indexer validates JSON text as encoding/json.Valid does (RFC 8259, at most
// maxDepth levels; UTF-8 is checked apart) and, in the same pass, records the
// members of the top-level object or array. goccy/go-json only ever sees
// text this has accepted, which keeps its crash bugs on malformed input out
// of reach, and the matcher reads keys without decoding whole objects.
type indexer struct {
	b       []byte
	i       int
	members []member
}

// index validates b and returns the top-level members (none for a scalar),
// the first byte of the top-level value, and -1; or, for invalid text, the
// offset where it went wrong.
func (x *indexer) index(b []byte) (members []member, kind byte, errAt int) {
	x.b, x.i, x.members = b, 0, x.members[:0]
	x.space()
	if x.i < len(b) {
		kind = b[x.i]
	}
	if !x.value(0) {
		return nil, 0, x.i
	}
	x.space()
	if x.i != len(b) {
		return nil, 0, x.i
	}
	return x.members, kind, -1
}

func (x *indexer) space() {
	for x.i < len(x.b) {
		switch x.b[x.i] {
		case ' ', '\t', '\n', '\r':
			x.i++
		default:
			return
		}
	}
}

func (x *indexer) value(depth int) bool {
	if x.i >= len(x.b) {
		return false
	}
	switch c := x.b[x.i]; c {
	case '{':
		return x.object(depth + 1)
	case '[':
		return x.array(depth + 1)
	case '"':
		return x.str()
	case 't':
		return x.literal("true")
	case 'f':
		return x.literal("false")
	case 'n':
		return x.literal("null")
	default:
		if c == '-' || '0' <= c && c <= '9' {
			return x.number()
		}
		return false
	}
}

func (x *indexer) object(depth int) bool {
	if depth > maxDepth {
		return false
	}
	x.i++ // {
	x.space()
	if x.i < len(x.b) && x.b[x.i] == '}' {
		x.i++
		return true
	}
	for {
		if x.i >= len(x.b) || x.b[x.i] != '"' {
			return false
		}
		key := span{x.i, 0}
		if !x.str() {
			return false
		}
		key.end = x.i
		x.space()
		if x.i >= len(x.b) || x.b[x.i] != ':' {
			return false
		}
		x.i++
		x.space()
		val := span{x.i, 0}
		if !x.value(depth) {
			return false
		}
		if depth == 1 {
			val.end = x.i
			x.members = append(x.members, member{key, val})
		}
		x.space()
		if x.i >= len(x.b) {
			return false
		}
		switch x.b[x.i] {
		case ',':
			x.i++
			x.space()
		case '}':
			x.i++
			return true
		default:
			return false
		}
	}
}

func (x *indexer) array(depth int) bool {
	if depth > maxDepth {
		return false
	}
	x.i++ // [
	x.space()
	if x.i < len(x.b) && x.b[x.i] == ']' {
		x.i++
		return true
	}
	for {
		val := span{x.i, 0}
		if !x.value(depth) {
			return false
		}
		if depth == 1 {
			val.end = x.i
			x.members = append(x.members, member{val: val})
		}
		x.space()
		if x.i >= len(x.b) {
			return false
		}
		switch x.b[x.i] {
		case ',':
			x.i++
			x.space()
		case ']':
			x.i++
			return true
		default:
			return false
		}
	}
}

// str accepts a string. Most of CloudTrail's bytes are inside strings, so
// the run up to the next quote is found with IndexByte and checked for
// backslashes and control bytes eight bytes at a time.
func (x *indexer) str() bool {
	x.i++ // opening quote
	for {
		q := bytes.IndexByte(x.b[x.i:], '"')
		if q < 0 {
			x.i = len(x.b)
			return false
		}
		run := x.b[x.i : x.i+q]
		e := bytes.IndexByte(run, '\\')
		if e < 0 {
			if hasControl(run) {
				x.i += controlAt(run)
				return false
			}
			x.i += q + 1
			return true
		}
		if hasControl(run[:e]) {
			x.i += controlAt(run[:e])
			return false
		}
		x.i += e
		if !x.escape() {
			return false
		}
	}
}

// escape accepts one escape sequence at x.b[x.i], the backslash.
func (x *indexer) escape() bool {
	if x.i+1 >= len(x.b) {
		x.i = len(x.b)
		return false
	}
	switch x.b[x.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		x.i += 2
		return true
	case 'u':
		if x.i+6 > len(x.b) {
			x.i = len(x.b)
			return false
		}
		if _, ok := hex4(x.b[x.i+2 : x.i+6]); !ok {
			return false
		}
		x.i += 6
		return true
	}
	return false
}

const (
	swarOnes  = 0x0101010101010101
	swarHighs = 0x8080808080808080
)

// hasControl reports whether b holds a byte below 0x20, which JSON forbids
// inside strings.
func hasControl(b []byte) bool {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		// The high bit of a byte of the result is set where w's byte is
		// below 0x20 (bytes with the high bit set never count).
		if (w-swarOnes*0x20)&^w&swarHighs != 0 {
			return true
		}
	}
	for ; i < len(b); i++ {
		if b[i] < 0x20 {
			return true
		}
	}
	return false
}

func controlAt(b []byte) int {
	for i, c := range b {
		if c < 0x20 {
			return i
		}
	}
	return len(b)
}

func (x *indexer) literal(lit string) bool {
	if !bytes.HasPrefix(x.b[x.i:], []byte(lit)) {
		return false
	}
	x.i += len(lit)
	return true
}

// number accepts -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (x *indexer) number() bool {
	b := x.b
	if b[x.i] == '-' {
		x.i++
	}
	switch {
	case x.i < len(b) && b[x.i] == '0':
		x.i++
	case x.i < len(b) && '1' <= b[x.i] && b[x.i] <= '9':
		x.digits()
	default:
		return false
	}
	if x.i < len(b) && b[x.i] == '.' {
		x.i++
		if !x.digits() {
			return false
		}
	}
	if x.i < len(b) && (b[x.i] == 'e' || b[x.i] == 'E') {
		x.i++
		if x.i < len(b) && (b[x.i] == '+' || b[x.i] == '-') {
			x.i++
		}
		if !x.digits() {
			return false
		}
	}
	return true
}

func (x *indexer) digits() bool {
	start := x.i
	for x.i < len(x.b) && '0' <= x.b[x.i] && x.b[x.i] <= '9' {
		x.i++
	}
	return x.i > start
}
