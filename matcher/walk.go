package matcher

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// walker reads one validated JSON value (a record's requestParameters, its
// errorCode) in one pass, as Elastic's CloudTrail ingest pipeline leaves
// it: the last of duplicate keys wins, then null, "" and the objects and
// arrays left with nothing else are dropped, recursively (the pipeline's
// script "Drops null/empty values recursively", which runs before
// event.outcome is set and requestParameters flattened). It reports whether
// anything is left and which markers the keys and strings that are left
// contain; when measuring, also the length of Java's toString of what is
// left, the text Elastic stores in aws.cloudtrail.* fields.
//
// Each byte is read once, whatever the depth: an object's members wait on
// a stack only until the object closes, and duplicate keys are resolved
// then, pairwise for small objects and by sorting for large ones. The
// memory is the members of the objects open at once, which the document's
// limits bound (Config.MaxMembers).
type walker struct {
	b       []byte
	i       int
	markers [][]byte
	measure bool
	// maxEntries is how many members the document holds in all, which
	// the stack never needs more than.
	maxEntries int

	stack []walkEntry
	keys  []byte  // the decoded escaped keys of the entries on the stack
	buf   []byte  // a string being decoded
	order []int32 // scratch for sorting a large object's keys
}

// walkEntry is one member of an open object, in 16 bytes: a million of
// them (Config.MaxMembers) are what one value may hold at once.
type walkEntry struct {
	key   span // without quotes: in walker.b, or in walker.keys if decoded
	found uint32
	// meta is, when measuring, the length of "key=value" (saturated at
	// entryN: Elastic compares it with 32766), and the flags below.
	meta uint32
}

const (
	entryN        = 1<<24 - 1
	entryDecoded  = 1 << 24 // key is in walker.keys
	entryNonEmpty = 1 << 25 // the value is left after pruning
	entryDropped  = 1 << 26 // a later member has the same key
)

func (e *walkEntry) is(flag uint32) bool { return e.meta&flag != 0 }

// walkResult is what is left of a value after pruning.
type walkResult struct {
	nonEmpty bool
	found    uint32 // bit i: markers[i] is in a key or string that is left
	n        int    // when measuring: the length of its toString in UTF-16 units
}

// smallObject is the size up to which duplicate keys are found pairwise.
const smallObject = 16

// walk reads the validated JSON value raw; markers may be nil.
func (w *walker) walk(raw []byte, markers [][]byte, measure bool) walkResult {
	w.b, w.i, w.markers, w.measure = raw, skipSpace(raw, 0), markers, measure
	w.stack, w.keys = w.stack[:0], w.keys[:0]
	if w.i >= len(raw) {
		return walkResult{}
	}
	return w.value()
}

func (w *walker) value() walkResult {
	b := w.b
	switch b[w.i] {
	case '{':
		return w.object()
	case '[':
		return w.array()
	case '"':
		start := w.i
		w.i = skipString(b, w.i)
		if w.i-start == 2 {
			return walkResult{} // ""
		}
		found, n := w.search(b[start:w.i], false)
		return walkResult{nonEmpty: true, found: found, n: n}
	case 'n':
		w.i += len("null")
		return walkResult{}
	case 't':
		w.i += len("true")
		return walkResult{nonEmpty: true, found: w.searchText("true"), n: len("true")}
	case 'f':
		w.i += len("false")
		return walkResult{nonEmpty: true, found: w.searchText("false"), n: len("false")}
	}
	// A number: Elastic's flattened text has it as Java prints it, which
	// a marker of digits, '.', 'E', "Infinity" could be found in.
	start := w.i
	w.i = skipValue(b, w.i)
	r := walkResult{nonEmpty: true}
	if len(w.markers) > 0 || w.measure {
		text := javaNumber(b[start:w.i])
		r.found, r.n = w.searchText(text), len(text)
	}
	return r
}

// searchText returns the markers in the text of a scalar.
func (w *walker) searchText(text string) (found uint32) {
	for i, m := range w.markers {
		if strings.Contains(text, unsafeString(m)) {
			found |= 1 << i
		}
	}
	return found
}

func (w *walker) object() walkResult {
	b := w.b
	w.i = skipSpace(b, w.i+1)
	if b[w.i] == '}' {
		w.i++
		return walkResult{}
	}
	base, keysBase := len(w.stack), len(w.keys)
	for {
		keyStart := w.i
		w.i = skipString(b, w.i)
		keyEnd := w.i
		w.i = skipSpace(b, w.i)
		w.i = skipSpace(b, w.i+1) // the colon
		v := w.value()
		e := walkEntry{key: span{int32(keyStart + 1), int32(keyEnd - 1)}}
		if bytes.IndexByte(b[keyStart+1:keyEnd-1], '\\') >= 0 {
			// Decoded after the value, whose own keys are gone by now.
			start := len(w.keys)
			w.keys = appendUnquoted(w.keys, b[keyStart:keyEnd])
			e.key = span{int32(start), int32(len(w.keys))}
			e.meta |= entryDecoded
		}
		if v.nonEmpty {
			// A key is searched only if it stays: a pruned value takes
			// its key with it.
			found, n := w.search(w.keyOf(&e), true)
			e.found = v.found | found
			e.meta |= entryNonEmpty | uint32(min(n+len("=")+v.n, entryN))
		}
		w.push(e)
		w.i = skipSpace(b, w.i)
		if b[w.i] == ',' {
			w.i = skipSpace(b, w.i+1)
			continue
		}
		w.i++ // '}'
		break
	}
	r := w.resolve(w.stack[base:])
	w.stack, w.keys = w.stack[:base], w.keys[:keysBase]
	return r
}

// push grows the stack by doubling, or past 64K entries straight to what
// the document can need, so that a large object costs its entries and
// little more, not the series of copies that append's growth leaves.
func (w *walker) push(e walkEntry) {
	if len(w.stack) == cap(w.stack) {
		n := max(2*cap(w.stack), 64)
		if n > 64<<10 && w.maxEntries > len(w.stack) {
			n = w.maxEntries
		}
		w.stack = slices.Grow(w.stack, n-len(w.stack))
	}
	w.stack = append(w.stack, e)
}

// resolve is what is left of an object whose members are es.
func (w *walker) resolve(es []walkEntry) walkResult {
	anyLeft, allLeft, anyFound := false, true, false
	for i := range es {
		left := es[i].is(entryNonEmpty)
		anyLeft = anyLeft || left
		allLeft = allLeft && left
		anyFound = anyFound || es[i].found != 0
	}
	switch {
	case !anyLeft:
		return walkResult{}
	case allLeft && !anyFound && !w.measure:
		return walkResult{nonEmpty: true} // whichever duplicate wins, something is left
	}
	w.dropDuplicates(es)
	var r walkResult
	left := 0
	for i := range es {
		if e := &es[i]; e.is(entryNonEmpty) && !e.is(entryDropped) {
			r.nonEmpty = true
			r.found |= e.found
			r.n += int(e.meta & entryN)
			left++
		}
	}
	if r.nonEmpty {
		r.n += len("{}") + len(", ")*(left-1)
	}
	return r
}

// dropDuplicates marks every member that a later member of the same key
// overwrites.
func (w *walker) dropDuplicates(es []walkEntry) {
	if len(es) <= smallObject {
		for i := range es {
			for j := i + 1; j < len(es); j++ {
				if bytes.Equal(w.keyOf(&es[i]), w.keyOf(&es[j])) {
					es[i].meta |= entryDropped
					break
				}
			}
		}
		return
	}
	if cap(w.order) < len(es) {
		w.order = make([]int32, 0, len(es))
	}
	order := w.order[:0]
	for i := range es {
		order = append(order, int32(i))
	}
	// Stable: members of one key stay in document order, the last last.
	slices.SortStableFunc(order, func(a, b int32) int { return bytes.Compare(w.keyOf(&es[a]), w.keyOf(&es[b])) })
	for k := 0; k+1 < len(order); k++ {
		if bytes.Equal(w.keyOf(&es[order[k]]), w.keyOf(&es[order[k+1]])) {
			es[order[k]].meta |= entryDropped
		}
	}
	w.order = order
}

func (w *walker) keyOf(e *walkEntry) []byte {
	if e.is(entryDecoded) {
		return w.keys[e.key.start:e.key.end]
	}
	return w.b[e.key.start:e.key.end]
}

func (w *walker) array() walkResult {
	b := w.b
	w.i = skipSpace(b, w.i+1)
	if b[w.i] == ']' {
		w.i++
		return walkResult{}
	}
	var r walkResult
	left := 0
	for {
		if v := w.value(); v.nonEmpty {
			r.nonEmpty = true
			r.found |= v.found
			r.n += v.n
			left++
		}
		w.i = skipSpace(b, w.i)
		if b[w.i] == ',' {
			w.i = skipSpace(b, w.i+1)
			continue
		}
		w.i++ // ']'
		break
	}
	if r.nonEmpty {
		r.n += len("[]") + len(", ")*(left-1)
	}
	return r
}

// search returns the markers in a string and, when measuring, its length
// in UTF-16 units (Java's String.length). s is a raw JSON string, quotes
// included, or a decoded key when decoded is set.
func (w *walker) search(s []byte, decoded bool) (found uint32, n int) {
	if !decoded {
		if inner := s[1 : len(s)-1]; bytes.IndexByte(inner, '\\') < 0 {
			s = inner
		} else {
			w.buf = appendUnquoted(w.buf[:0], s)
			s = w.buf
		}
	}
	for i, m := range w.markers {
		if bytes.Contains(s, m) {
			found |= 1 << i
		}
	}
	if w.measure {
		n = utf16Len(s)
	}
	return found, n
}

// utf16Len is the length of UTF-8 text in UTF-16 units: one per code point,
// two for those past U+FFFF, whose UTF-8 lead byte is 0xF0 or above.
func utf16Len(s []byte) int {
	n := utf8.RuneCount(s)
	for _, c := range s {
		if c >= 0xf0 {
			n++
		}
	}
	return n
}

// javaNumber is a JSON number as Elasticsearch's JSON parser (Jackson)
// reads it and Java prints it: an integer as its digits (-0 is 0), any
// other number as a double, in Double.toString's form.
func javaNumber(text []byte) string {
	if bytes.IndexAny(text, ".eE") < 0 {
		if string(text) == "-0" {
			return "0"
		}
		return string(text)
	}
	f, _ := strconv.ParseFloat(string(text), 64) // ±Inf past the range, as Jackson
	return javaDouble(f)
}

// javaDouble is Double.toString (Java 19 and later): the shortest decimal
// that reads back as f, but at least two digits when the shortest has one
// (the closest of those), in plain notation from 10^-3 to 10^7 and in
// computerized scientific notation elsewhere, always with a fraction.
func javaDouble(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0 && math.Signbit(f):
		return "-0.0"
	case f == 0:
		return "0.0"
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	if !strings.Contains(e, ".") {
		e = strconv.FormatFloat(f, 'e', 1, 64) // one digit: the closest of two
	}
	mant, exps, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(exps)
	digits := strings.TrimRight(strings.Replace(mant, ".", "", 1), "0")
	if digits == "" {
		digits = "0"
	}
	if f >= 1e-3 && f < 1e7 {
		if exp < 0 {
			return sign + "0." + strings.Repeat("0", -exp-1) + digits
		}
		if len(digits) <= exp+1 {
			return sign + digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
		}
		return sign + digits[:exp+1] + "." + digits[exp+1:]
	}
	frac := digits[1:]
	if frac == "" {
		frac = "0"
	}
	return sign + digits[:1] + "." + frac + "E" + strconv.Itoa(exp)
}
