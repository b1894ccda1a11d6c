package matcher

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonMaxDepth is encoding/json's nesting limit, which the indexer keeps
// when it is given no limits of its own (FuzzIndexer holds it to
// encoding/json.Valid).
const jsonMaxDepth = 10000

// span is b[start:end] of the text being indexed. Offsets are 32 bits: a
// text is at most Config.MaxDecodedBytes, which New keeps under 1 GiB, and
// an index of a million members then takes 20 MB rather than 40.
type span struct{ start, end int32 }

// limits caps what one JSON document may hold (Config.MaxDepth,
// MaxMembers, MaxElements); zero values mean encoding/json's depth and no
// count limit.
type limits struct {
	depth, members, elements int
}

// member is one member of a top-level object (key and value) or array
// (value only), in 16 bytes: a document may have a million of them at its
// top level (Config.MaxMembers). Whether the key holds a backslash escape
// rides in the sign of key.start (newMember, escaped, keySpan).
type member struct {
	key, val span
}

func newMember(key, val span, escaped bool) member {
	if escaped {
		key.start = ^key.start
	}
	return member{key: key, val: val}
}

func (m *member) escaped() bool { return m.key.start < 0 }

// keySpan is the key's raw text, quotes included.
func (m *member) keySpan() span {
	k := m.key
	if k.start < 0 {
		k.start = ^k.start
	}
	return k
}

// indexer validates JSON text as encoding/json.Valid does (RFC 8259, at most
// maxDepth levels; UTF-8 is checked apart) and, in the same pass, records the
// members of the top-level object or array. The rest of the package only
// ever reads text this has accepted (indexValid, appendUnquoted trust it),
// and reads keys without decoding whole objects.
type indexer struct {
	b       []byte
	i       int
	members []member
	escaped bool // the last string accepted held an escape

	lim                 limits
	nMembers, nElements int
	// over names the limit the text went past when index failed on one.
	over string
}

// index validates b and returns the top-level members (none for a scalar),
// the first byte of the top-level value, and -1; or, for invalid text, the
// offset where it went wrong.
func (x *indexer) index(b []byte) (members []member, kind byte, errAt int) {
	if x.members == nil {
		// A CloudTrail record has about twenty top-level members: one
		// allocation instead of a slice grown five times.
		x.members = make([]member, 0, 32)
	}
	x.b, x.i, x.members = b, 0, x.members[:0]
	x.nMembers, x.nElements, x.over = 0, 0, ""
	if x.lim.depth == 0 {
		x.lim.depth = jsonMaxDepth
	}
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

func (x *indexer) space() { x.i = skipSpace(x.b, x.i) }

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

// tooDeep reports whether depth is past the limit, and says so.
func (x *indexer) tooDeep(depth int) bool {
	if depth <= x.lim.depth {
		return false
	}
	if x.lim.depth != jsonMaxDepth {
		x.over = "depth"
	}
	return true
}

func (x *indexer) object(depth int) bool {
	if x.tooDeep(depth) {
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
		if x.nMembers++; x.lim.members > 0 && x.nMembers > x.lim.members {
			x.over = "members"
			return false
		}
		key := span{int32(x.i), 0}
		if !x.str() {
			return false
		}
		key.end = int32(x.i)
		escaped := x.escaped
		x.space()
		if x.i >= len(x.b) || x.b[x.i] != ':' {
			return false
		}
		x.i++
		x.space()
		val := span{int32(x.i), 0}
		if !x.value(depth) {
			return false
		}
		if depth == 1 {
			val.end = int32(x.i)
			x.members = append(grow(x.members), newMember(key, val, escaped))
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
	if x.tooDeep(depth) {
		return false
	}
	x.i++ // [
	x.space()
	if x.i < len(x.b) && x.b[x.i] == ']' {
		x.i++
		return true
	}
	for {
		if x.nElements++; x.lim.elements > 0 && x.nElements > x.lim.elements {
			x.over = "elements"
			return false
		}
		val := span{int32(x.i), 0}
		if !x.value(depth) {
			return false
		}
		if depth == 1 {
			val.end = int32(x.i)
			x.members = append(grow(x.members), member{val: val})
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

// plainString marks the bytes that can stand for themselves in a string:
// not the quote, the backslash or a control byte.
var plainString = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str accepts a string. Eight bytes at a time, specialBytes finds the first
// quote, backslash or control byte of the word; the tail goes through the
// table a byte at a time. The position stays in a local variable, which the
// compiler keeps in a register.
func (x *indexer) str() bool {
	b, i := x.b, x.i+1 // past the opening quote
	x.escaped = false
	for {
		if i+8 <= len(b) {
			m := specialBytes(binary.LittleEndian.Uint64(b[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		} else {
			for i < len(b) && plainString[b[i]] {
				i++
			}
			if i >= len(b) {
				x.i = i
				return false
			}
		}
		switch b[i] {
		case '"':
			x.i = i + 1
			return true
		case '\\':
			x.escaped = true
			x.i = i
			if !x.escape() {
				return false
			}
			i = x.i
		default:
			x.i = i
			return false // a control byte
		}
	}
}

const (
	ones   = 0x0101010101010101
	highs  = 0x8080808080808080
	quotes = '"' * ones
	slashs = '\\' * ones
)

// specialBytes flags the high bit of each byte of w (little-endian) that is
// a quote, a backslash or below 0x20. A borrow can flag a byte above one
// that is flagged, never below it: the lowest flag is always exact, and it
// is the only one str reads.
func specialBytes(w uint64) uint64 {
	q, s := w^quotes, w^slashs
	return ((w-0x20*ones) & ^w | (q-ones) & ^q | (s-ones) & ^s) & highs
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

// indexValid returns the members of the top-level object or array of text
// that the indexer has already accepted, like index but without checking
// again: strings are skipped by searching for their closing quote, nested
// values by counting brackets outside strings. It must only see validated
// text (FuzzIndexValid holds it to index on valid JSON).
func indexValid(b []byte, members []member) []member {
	members = members[:0]
	i := skipSpace(b, 0)
	if i >= len(b) || (b[i] != '{' && b[i] != '[') {
		return members
	}
	isObject := b[i] == '{'
	i = skipSpace(b, i+1)
	if i < len(b) && (b[i] == '}' || b[i] == ']') {
		return members
	}
	for i < len(b) {
		var key, val span
		escaped := false
		if isObject {
			key.start = int32(i)
			i = skipString(b, i)
			key.end = int32(i)
			escaped = bytes.IndexByte(b[key.start:i], '\\') >= 0
			i = skipSpace(b, i)
			i = skipSpace(b, i+1) // the colon
		}
		val.start = int32(i)
		i = skipValue(b, i)
		val.end = int32(i)
		members = append(grow(members), newMember(key, val, escaped))
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ',' {
			break
		}
		i = skipSpace(b, i+1)
	}
	return members
}

// skipSpace returns the first index from i that is not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the end of the valid string at b[i], its opening
// quote: the first quote after it that an even number of backslashes
// precedes.
func skipString(b []byte, i int) int {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return len(b)
		}
		j += k
		n := 0
		for b[j-1-n] == '\\' {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		j++
	}
}

// skipValue returns the end of the valid value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// grow returns s with room for one more element, doubling its capacity
// when it is full: a large index then costs two copies of itself at most,
// not the five that append's growth of a quarter leaves behind.
func grow[T any](s []T) []T {
	if len(s) < cap(s) {
		return s
	}
	return slices.Grow(s, max(len(s), 32))
}

// appendUnquoted appends the decoded contents of raw, a JSON string (quotes
// included) that the indexer has accepted, to dst. A surrogate escape that
// is not half of a pair decodes to U+FFFD, as in encoding/json
// (FuzzUnquote holds it to encoding/json).
func appendUnquoted(dst, raw []byte) []byte {
	s := raw[1 : len(raw)-1]
	// Room for the result at once: a \u escape of six bytes decodes to
	// three at most. (A "\\u" miscounts, and append grows as it must.)
	dst = slices.Grow(dst, max(0, len(s)-3*bytes.Count(s, []byte(`\u`))))
	for {
		j := bytes.IndexByte(s, '\\')
		if j < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:j]...)
		s = s[j:]
		c := s[1]
		if c != 'u' {
			dst = append(dst, shortEscape[c])
			s = s[2:]
			continue
		}
		r, _ := hex4(s[2:6])
		s = s[6:]
		if utf16.IsSurrogate(r) {
			r2 := rune(-1)
			if len(s) >= 6 && s[0] == '\\' && s[1] == 'u' {
				r2, _ = hex4(s[2:6])
			}
			if p := utf16.DecodeRune(r, r2); p != utf8.RuneError {
				r = p
				s = s[6:]
			} else {
				r = utf8.RuneError
			}
		}
		dst = utf8.AppendRune(dst, r)
	}
}

// shortEscape maps the byte after a backslash to what it stands for, for
// the seven escapes other than \u.
var shortEscape = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}
