package scan

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/bits"
)

// How a document is told from the next, the rule scan has always had: at
// the first byte that is not JSON whitespace, a '{' or '[' starts a JSON
// value, and when the text from there is valid JSON, that value is the
// document, whatever follows it (concatenated documents need no separator,
// pretty-printed ones span lines). Anything else (text that is not JSON, a
// value with a syntax error or cut short) is a document up to the end of
// its line, so that one bad line does not hide the lines after it; the
// matcher reports it.
//
// valueEnd decides validity exactly as encoding/json's Decoder does
// (FuzzValueEnd holds it to that): the grammar, control characters and
// escapes in strings, nesting up to 10,000 levels, and no UTF-8 check. It
// is the one pass over every byte that scan adds to the matcher's, so it
// reads string contents, most of a CloudTrail record, eight bytes at a time.

// status is what valueEnd found.
type status uint8

const (
	valueOK      status = iota // a valid value ends at the returned index
	valueInvalid               // a syntax error (or nesting past maxDepth)
	valueShort                 // the text ends before the value, valid so far
)

// maxDepth is encoding/json's limit on nesting.
const maxDepth = 10000

// splitter holds valueEnd's stack, reused from document to document.
type splitter struct {
	stack []byte
}

// The states of valueEnd between tokens.
const (
	stValue      = iota // a value is expected
	stKey               // an object key (a string) is expected
	stColon             // ':' is expected
	stAfterValue        // ',' or the close of the container is expected
)

// valueEnd finds the end of the JSON object or array that b starts with
// (b[0] is '{' or '['): the index just past it, with valueOK.
func (sp *splitter) valueEnd(b []byte) (int, status) {
	stack := sp.stack[:0]
	defer func() { sp.stack = stack[:0] }()
	i, state := 0, stValue
	for {
		// Whitespace between tokens.
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		if i == len(b) {
			return i, valueShort
		}
		c := b[i]
		switch state {
		case stValue:
			switch {
			case c == '{' || c == '[':
				if len(stack) == maxDepth {
					return i, valueInvalid
				}
				stack = append(stack, c)
				i++
				// An empty container closes at once.
				for i < len(b) && isSpace(b[i]) {
					i++
				}
				if i == len(b) {
					return i, valueShort
				}
				if b[i] == c+2 { // '}' is '{'+2, ']' is '['+2
					i++
					stack = stack[:len(stack)-1]
					if len(stack) == 0 {
						return i, valueOK
					}
					state = stAfterValue
				} else if c == '{' {
					state = stKey
				}
				continue
			case c == '"':
				var st status
				if i, st = stringEnd(b, i+1); st != valueOK {
					return i, st
				}
			case c == '-' || c >= '0' && c <= '9':
				var st status
				if i, st = numberEnd(b, i); st != valueOK {
					return i, st
				}
			case c == 't':
				if st := literal(b[i:], "true"); st != valueOK {
					return i, st
				}
				i += 4
			case c == 'f':
				if st := literal(b[i:], "false"); st != valueOK {
					return i, st
				}
				i += 5
			case c == 'n':
				if st := literal(b[i:], "null"); st != valueOK {
					return i, st
				}
				i += 4
			default:
				return i, valueInvalid
			}
			state = stAfterValue
		case stKey:
			if c != '"' {
				return i, valueInvalid
			}
			var st status
			if i, st = stringEnd(b, i+1); st != valueOK {
				return i, st
			}
			state = stColon
		case stColon:
			if c != ':' {
				return i, valueInvalid
			}
			i++
			state = stValue
		case stAfterValue:
			top := stack[len(stack)-1]
			switch c {
			case ',':
				i++
				state = stValue
				if top == '{' {
					state = stKey
				}
			case top + 2:
				i++
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return i, valueOK
				}
			default:
				return i, valueInvalid
			}
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// stringEnd returns the index just past the closing quote of the string
// whose contents start at b[i].
func stringEnd(b []byte, i int) (int, status) {
	for {
		// Eight bytes at a time to the first quote, backslash or control
		// character: the lowest byte flagged in each mask is exact (a
		// borrow only flags bytes above a true one).
		for i+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[i:])
			q := x ^ ('"' * ones)
			bs := x ^ ('\\' * ones)
			m := ((q - ones) &^ q) | ((bs - ones) &^ bs) | ((x - 0x20*ones) &^ x)
			if m &= highs; m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i == len(b) {
			return i, valueShort
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, valueOK
		case c == '\\':
			if i+1 == len(b) {
				return i, valueShort
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k == len(b) {
						return k, valueShort
					}
					if !isHex(b[k]) {
						return k, valueInvalid
					}
				}
				i += 6
			default:
				return i + 1, valueInvalid
			}
		case c < 0x20:
			return i, valueInvalid
		default:
			i++ // fewer than eight bytes were left
		}
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// numberEnd returns the index just past the number at b[i]: -?(0|[1-9]\d*)
// (\.\d+)?([eE][+-]?\d+)?. A number that runs to the end of b is short: the
// value it is in has not ended.
func numberEnd(b []byte, i int) (int, status) {
	if b[i] == '-' {
		i++
	}
	if i == len(b) {
		return i, valueShort
	}
	switch {
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	default:
		return i, valueInvalid
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i == len(b) {
			return i, valueShort
		}
		if !isDigit(b[i]) {
			return i, valueInvalid
		}
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == len(b) {
			return i, valueShort
		}
		if !isDigit(b[i]) {
			return i, valueInvalid
		}
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	if i == len(b) {
		return i, valueShort
	}
	return i, valueOK
}

// literal checks that b starts with lit, or with a prefix of it that b ends in.
func literal(b []byte, lit string) status {
	n := min(len(b), len(lit))
	if string(b[:n]) != lit[:n] {
		return valueInvalid
	}
	if n < len(lit) {
		return valueShort
	}
	return valueOK
}

// skipSpace returns the index of the first byte of b at or after i that is
// not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// docEnd finds the end of the document that starts at b[start], which is
// not whitespace. boundary is the first end of a gzip member after start
// in b, or -1: a document that is not valid JSON ends there if its line
// has not. final says that b ends the stream. ok is false when b must be
// extended to decide: it ends before the value, or before the line of a
// document that is not valid JSON.
func (sp *splitter) docEnd(b []byte, start, boundary int, final bool) (end int, ok bool) {
	if c := b[start]; c == '{' || c == '[' {
		n, st := sp.valueEnd(b[start:])
		if st == valueOK {
			return start + n, true
		}
		if st == valueShort && !final {
			return 0, false
		}
	}
	if boundary < 0 && final {
		boundary = len(b)
	}
	nl := bytes.IndexByte(b[start:], '\n')
	switch {
	case nl >= 0 && (boundary < 0 || start+nl < boundary):
		return start + nl, true
	case boundary >= 0:
		return boundary, true
	}
	return 0, false
}

// doc is one document of a batch, region[start:end].
type doc struct {
	start, end int
	// line marks a whole line that starts with '{' and ends with '}' and
	// is not followed by what would continue a JSON value (',', '}' or
	// ']'). It is taken for one document without reading it: in a file of
	// one document per line it is one, and the matcher, which reads the
	// document anyway, says when it is not (see scanner.resplit).
	line bool
	// tooLarge marks a document longer than the limit, skipped to its end
	// without being held: end-start is its length.
	tooLarge bool
}

// batch is the documents the framer cut from one region of the content.
type batch struct {
	buf    []byte // the chunk buffer region is in, to recycle; nil if none
	region []byte
	off    int64 // offset of region[0] in the content
	line   int64 // line of region[0]
	docs   []doc
	values [][]byte // the documents that are not tooLarge, for the matcher
	used   int      // bytes of region the documents took (the rest was carried over)
	err    error    // why reading stopped after this batch, unless it reached the end
}

func (b *batch) add(d doc) {
	b.docs = append(b.docs, d)
	if !d.tooLarge {
		b.values = append(b.values, b.region[d.start:d.end])
	}
}

// framer cuts the content into documents, chunk by chunk. What does not end
// in a chunk is carried to the next.
type framer struct {
	sp    splitter
	limit int // the largest document held; longer ones are skipped
	pool  bufPool
	carry []byte // the end of the last region, not cut yet
	cEnds []int  // member ends in carry
	off   int64  // offset of carry[0] in the content
	line  int64  // line of carry[0]
	// need is the length of region below which cutting is not tried
	// again: a document longer than a chunk is read again only once the
	// region has doubled.
	need int
	skip *skipper // set while skipping a document past the limit
}

// run reads chunks until in is closed and sends their batches.
func (f *framer) run(in <-chan *chunk, out chan<- *batch, stop <-chan struct{}) {
	defer close(out)
	f.line = 1
	for ch := range in {
		b := f.frame(ch)
		if b == nil {
			continue
		}
		select {
		case out <- b:
		case <-stop:
			return
		}
	}
}

// frame cuts what a chunk adds to the carry.
func (f *framer) frame(ch *chunk) *batch {
	final := ch.err != nil
	b := &batch{off: f.off, line: f.line}
	if ch.err != io.EOF {
		b.err = ch.err
	}
	var ends []int
	data := ch.buf[ch.start:ch.end]
	if len(f.carry) <= ch.start && f.need == 0 {
		// The carry goes in front of the chunk: the region is contiguous
		// and the chunk is not copied.
		b.buf = ch.buf
		b.region = ch.buf[ch.start-len(f.carry) : ch.end]
		copy(b.region, f.carry)
		ends = append(f.cEnds, ch.ends...)
		for i := len(f.cEnds); i < len(ends); i++ {
			ends[i] -= ch.start - len(f.carry)
		}
	} else {
		// A long document: the chunk is appended to it.
		n := len(f.carry)
		b.region = append(f.carry, data...)
		ends = f.cEnds
		for _, e := range ch.ends {
			ends = append(ends, e-ch.start+n)
		}
		f.pool.put(ch.buf)
		f.carry = nil // the region owns it now
	}
	used, tried := 0, false
	if final || len(b.region) >= f.need {
		f.need = 0
		used, tried = f.cut(b, ends, final), true
	}
	b.used = used
	// Carry the rest, with the member ends in it.
	rest := b.region[used:]
	f.cEnds = f.cEnds[:0]
	for _, e := range ends {
		if e > used {
			f.cEnds = append(f.cEnds, e-used)
		}
	}
	if len(rest) > reserve && b.buf == nil && len(b.docs) == 0 {
		// Nothing was cut from a long region: keep it as it is.
		f.carry = b.region[used:]
	} else {
		f.carry = append(f.carry[:0:min(cap(f.carry), 2*reserve)], rest...)
	}
	f.off += int64(used)
	if tried && len(rest) > reserve && !final {
		f.need = min(2*len(rest), f.limit+1)
	}
	if len(b.docs) == 0 && b.err == nil {
		f.pool.put(b.buf)
		if !final {
			return nil
		}
		b.buf = nil
	}
	return b
}

// cut adds the documents of b.region to b and returns how many bytes they
// took; what follows is carried over. ends are the member ends in the
// region; final says that the region ends the content. It counts the lines
// of what it takes as it goes (a line taken whole holds no newline), which
// saves a pass over the region.
func (f *framer) cut(b *batch, ends []int, final bool) int {
	region := b.region
	pos := 0
	if f.skip != nil {
		end, ok := f.skip.feed(region, ends, final)
		if !ok {
			end = len(region)
		}
		f.line += int64(bytes.Count(region[:end], []byte{'\n'}))
		if !ok {
			return end
		}
		f.skip = nil
		pos = end
	}
	e := 0 // the first member end after pos
	for {
		start := pos
		for start < len(region) && isSpace(region[start]) {
			if region[start] == '\n' {
				f.line++
			}
			start++
		}
		if start == len(region) {
			return start
		}
		for e < len(ends) && ends[e] <= start {
			e++
		}
		bound := -1
		if e < len(ends) {
			bound = ends[e]
		}
		// The line, which a member's end also ends.
		lineEnd := -1
		if nl := bytes.IndexByte(region[start:], '\n'); nl >= 0 {
			lineEnd = start + nl
		}
		if bound >= 0 && (lineEnd < 0 || bound < lineEnd) {
			lineEnd = bound
		}
		if lineEnd < 0 && final {
			lineEnd = len(region)
		}
		if lineEnd >= 0 {
			last := lineEnd
			for isSpace(region[last-1]) {
				last--
			}
			if region[start] == '{' && region[last-1] == '}' {
				next := skipSpace(region, lineEnd)
				if next == len(region) && !final && len(region)-start <= f.limit {
					return f.pending(b, start)
				}
				if next == len(region) || region[next] != ',' && region[next] != '}' && region[next] != ']' {
					b.add(doc{start: start, end: last, line: true})
					pos = last
					continue
				}
			}
		} else if len(region)-start <= reserve {
			return f.pending(b, start)
		}
		end, ok := f.sp.docEnd(region, start, bound, final)
		if !ok {
			return f.pending(b, start)
		}
		b.add(doc{start: start, end: end})
		f.line += int64(bytes.Count(region[start:end], []byte{'\n'}))
		pos = end
	}
}

// pending is cut's end when region[start:] does not hold a whole document:
// it is carried over, unless it is longer than the limit, in which case
// the document is skipped to its end.
func (f *framer) pending(b *batch, start int) int {
	region := b.region
	if len(region)-start <= f.limit {
		return start
	}
	f.skip = newSkipper(&f.sp, region[start:])
	b.add(doc{start: start, end: len(region), tooLarge: true})
	f.line += int64(bytes.Count(region[start:], []byte{'\n'}))
	return len(region)
}

// skipper finds the end of a document too long to hold, from what is
// known of it by the limit: a JSON value still valid is skipped to its
// closing bracket, anything else to the end of its line.
type skipper struct {
	line     bool
	depth    int
	str, esc bool
}

func newSkipper(sp *splitter, head []byte) *skipper {
	k := &skipper{line: true}
	if c := head[0]; c == '{' || c == '[' {
		if _, st := sp.valueEnd(head); st == valueShort {
			k.line = false
			k.feed(head, nil, false)
		}
	}
	return k
}

// feed reads the next bytes of the document; it returns the index just
// past its end, if b holds it.
func (k *skipper) feed(b []byte, ends []int, final bool) (int, bool) {
	if k.line {
		end := bytes.IndexByte(b, '\n')
		if len(ends) > 0 && (end < 0 || ends[0] < end) {
			end = ends[0]
		}
		if end >= 0 {
			return end, true
		}
	} else {
		for i, c := range b {
			switch {
			case k.esc:
				k.esc = false
			case k.str:
				k.esc = c == '\\'
				k.str = c != '"'
			case c == '"':
				k.str = true
			case c == '{' || c == '[':
				k.depth++
			case c == '}' || c == ']':
				if k.depth--; k.depth == 0 {
					return i + 1, true
				}
			}
		}
	}
	if final {
		return len(b), true
	}
	return 0, false
}
