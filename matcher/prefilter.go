package matcher

import (
	"bytes"
	"math/bits"
	"slices"
)

// The prefilter decides, without decoding, whether JSON text can hold an
// event that a rule matches. It may pass a record that does not match; it
// must never reject one that does. Every rule requires one of its markers
// (Match.Markers) in a decoded string (a key or a value), at any level of
// nesting: a record
// can be carried as a string inside another document (the Agent "message",
// CloudWatch logEvents[].message), which is JSON text escaped once more.
//
// Claim: if the bytes B (1) do not contain the marker literally, and (2)
// every occurrence of `\u` in B, wherever it starts, is followed by four hex
// digits naming a code point outside S (the bytes of every enabled rule's
// markers and of "H4sI", the backslash, 'u' and the hex digits: New derives
// S from the rules), then no string decoded from B, nor from JSON text
// inside such a string, contains the marker. (The argument holds for each
// marker; New refuses a marker it cannot hold for: one with a byte outside
// printable ASCII, whose escape would not be in S, or with a byte JSON can
// write as a short escape, which would not be literal; see checkMarker.)
//
// Proof, for one level of decoding D of B; induction carries it down:
//   - Every character of D is a literal byte of B, the result of a short
//     escape (\" \\ \/ \b \f \n \r \t), or a \uXXXX escape, which by (2) is
//     outside S. The marker's bytes are in S and are not short escapes, so
//     each of them in D is a literal byte of B, and consecutive ones are
//     consecutive bytes. The marker in D would be the marker in B: (1) holds
//     for D.
//   - A backslash in D comes from `\\` in B (\u005c is in S), and a 'u'
//     after it is the literal next byte (\u0075 is in S), so `\u` in D means
//     `\\u` in B, which holds `\u` one byte later. By (2) that is followed in
//     B by four literal hex digits (escaped digits are in S), which are the
//     four characters after `\u` in D: (2) holds for D.
//
// So the escapes real CloudTrail uses (\u003d '=', \u0026 '&', \u003c,
// non-ASCII letters) do not make a record a candidate; an escaped letter of
// the marker, or an escape that could build one at a deeper level, does.
//
// Run-time markers: with a watchlist set (Matcher.SetWatchlist) the
// prefilter also passes text where a "userName" member may have a watched
// value. watch.go states that claim and proves it in the same way, with S
// grown by the names' bytes, the key's letters and the separators between a
// key and its value; the markers' claim above is unchanged by it.
//
// Compressed payloads hide everything, so they are never prefiltered as they
// are: a value that is gzip, or base64 of gzip, is decompressed first and
// the prefilter runs on the result. Base64 of gzip always starts with "H4sI"
// (the gzip magic 1f 8b 08), provided the base64 decoder reads the first
// four characters of its input as the first three bytes. JSON holding one
// (the awslogs wrapper) holds it in a decoded string, so by the same
// argument as for the marker (H, 4, s and I are in S) its bytes contain
// "H4sI" literally or a suspect escape.
//
// The argument holds only if every decoder accepts no more than it
// assumes. The inventory of what each decoder tolerates, and the decision
// for each (refused: a dead letter when the value is decoded; covered: the
// argument holds as it is). FuzzMatcher has one seed per line
// (leniencyCases), and its reference evaluator decodes strictly from the
// formats' definitions, so a leniency that is neither shows as a
// disagreement.
//
// base64 (RFC 4648), encoding/base64 through Scanner.gunzipBase64:
//   - CR and LF anywhere (Go's decoder skips them): refused. With them
//     "H4\nsI..." decodes to gzip without "H4sI" in the text, the hole
//     this inventory was made for.
//   - other whitespace, the URL-safe alphabet, any other byte: refused by
//     Go's decoder.
//   - missing or misplaced padding, data after padding: refused by Go's
//     decoder.
//   - non-zero pad bits (section 3.5): refused (Strict).
//   - JSON whitespace around base64 that is the whole value: covered (it
//     is trimmed before the "H4sI" test, and the value is then decoded
//     whatever it holds).
//   - an escaped solidus (\/) in awslogs.data: covered (it is a '/' of the
//     decoded string, and a short escape builds no letter of S).
//
// gzip (RFC 1952), klauspost/compress/gzip through Scanner.gunzip:
//   - several members: covered; they inflate to one text, which the
//     prefilter then reads whole (RFC 1952 allows them).
//   - bytes after the last member, trailing zeros: refused (the reader
//     takes them for a header that is not one).
//   - reserved flag bits: refused by the reader (RFC 1952 requires it).
//   - FEXTRA, FNAME, FCOMMENT, FHCRC: covered; they are skipped, never
//     inflated. A name or comment over 511 bytes is refused.
//   - a bad CRC-32 or ISIZE, a truncated member: refused.
//
// JSON (RFC 8259), the indexer (jsontext.go) and the string decoder:
//   - a byte order mark: refused (not JSON whitespace).
//   - whitespace around a document: covered (it is outside every string).
//   - two documents in one text: refused.
//   - invalid UTF-8: refused (ErrBadEncoding) before any decoding, so a
//     decoded string is what its bytes and escapes say.
//   - escapes other than the eight short ones and \uXXXX: refused.
//   - lone or mismatched surrogate escapes: covered; they decode to U+FFFD,
//     which is not in S.
//   - duplicate keys: the last one wins, everywhere (the argument is about
//     bytes, so it holds whichever member is read).
//   - raw control bytes in strings: refused.
//
// Shapes: the awslogs wrapper spelled exactly as AWS writes it, with data of
// base64 characters alone, skips the JSON decode (canonicalAWSLogs); the
// data it takes is what the decoder would decode, and both reach the same
// evalAWSLogs, so the fast path cannot take a branch the decoder would not.
var (
	escapeU    = []byte(`\u`)
	base64Gzip = []byte("H4sI")
)

// prefilter searches the markers of the enabled rules. Everything in it is
// derived from the markers by newPrefilter.
type prefilter struct {
	markers []markerSearch
	// groups anchor every search (`\u`, "H4" and one pair per marker) for
	// indexPair, four to a group: one pass over the text per group.
	groups []pairSet
	// suspect is the set S of the argument above.
	suspect [128]bool
	// watch, when set, is searched too: the values of "userName" members
	// (watch.go, which extends the argument above to it). watchOnly is set
	// when no marker is anchored on the watch's pair, so that a hit of it
	// is the watch's alone.
	watch     *Watchlist
	watchOnly bool
}

// newPrefilter derives the prefilter of a set of markers, which
// checkMarker has accepted, and of a watchlist, nil for none.
func newPrefilter(markers [][]byte, watch *Watchlist) prefilter {
	p := prefilter{watch: watch}
	for _, m := range markers {
		dup := false
		for _, have := range p.markers {
			dup = dup || bytes.Equal(have.marker, m)
		}
		if !dup {
			p.markers = append(p.markers, newMarkerSearch(m))
		}
		for _, c := range m {
			p.suspect[c] = true
		}
	}
	for _, c := range []byte(string(base64Gzip) + `\u0123456789abcdefABCDEF`) {
		p.suspect[c] = true
	}
	anchors := [][2]byte{{'\\', 'u'}, {'H', '4'}}
	for _, ms := range p.markers {
		a := [2]byte{ms.marker[ms.before], ms.marker[ms.before+1]}
		if !slices.Contains(anchors, a) {
			anchors = append(anchors, a)
		}
	}
	if watch != nil {
		for _, c := range []byte(watchSuspect) {
			p.suspect[c] = true
		}
		for c, in := range watch.alphabet {
			p.suspect[c] = p.suspect[c] || in
		}
		if a := [2]byte{watchKey[watchAnchorAt], watchKey[watchAnchorAt+1]}; !slices.Contains(anchors, a) {
			// The fourth slot of the first group: its search can rule the
			// watch's hits out without stopping (searchGroup).
			anchors = slices.Insert(anchors, 3, a)
			p.watchOnly = true
		}
	}
	for len(anchors) > 0 {
		var g pairSet
		n := min(len(anchors), len(g.first))
		for k := range g.first {
			a := anchors[min(k, n-1)] // unused slots repeat a pair
			g.first[k], g.second[k] = a[0], a[1]
		}
		p.groups = append(p.groups, g)
		anchors = anchors[n:]
	}
	return p
}

// mayMatch reports whether the JSON text b can hold a matching event, or a
// compressed payload that can: whether it contains a marker, a suspect
// escape or "H4sI", or, with a watchlist, a "userName" whose value is
// watched (watch.go). See the soundness argument above. One pass per group of
// anchors finds every anchor pair; each hit is checked in full.
func (p *prefilter) mayMatch(b []byte) bool {
	for g := range p.groups {
		if p.searchGroup(b, &p.groups[g], g == 0 && p.watchOnly) {
			return true
		}
	}
	return false
}

// searchGroup checks every position of b where a pair of ps starts, in
// order, and reports whether one matches. With AVX2 it takes a block of 32
// positions at a time and checks each hit of the block from its mask, so a
// hit that does not match (a "userName" of the watch, about one a record)
// costs the check and not a new search from the byte after it.
//
// With watch set, the group's fourth pair is the watch's alone, and the
// search does not stop at a block where it alone occurs at places where
// watchValueAt would say no (nextPairBlockWatch): the common `"userName":"`
// and a value whose first two bytes start no watched name.
func (p *prefilter) searchGroup(b []byte, ps *pairSet, watch bool) bool {
	if !pairBlocks(b) {
		for pos := 0; pos < len(b); {
			i := indexPair(b[pos:], ps)
			if i < 0 {
				return false
			}
			i += pos
			if p.matchesAt(b, i) {
				return true
			}
			pos = i + 1
		}
		return false
	}
	// Whole blocks over positions [0, end); the last reads b[end], which
	// exists. Then one block ending at the last position, whose positions
	// below end are masked off.
	end := (len(b) - 1) &^ 31
	next := func(off, end int) (int, uint32) {
		if watch {
			return nextPairBlockWatch(b, off, end, ps, &p.watch.prefix2)
		}
		return nextPairBlock(b, off, end, ps)
	}
	for off := 0; off < end; {
		at, mask := next(off, end)
		if at < 0 {
			break
		}
		for ; mask != 0; mask &= mask - 1 {
			if p.hitMatches(b, at+bits.TrailingZeros32(mask)) {
				return true
			}
		}
		off = at + 32
	}
	if end == len(b)-1 {
		return false
	}
	last := len(b) - 33
	at, mask := next(last, last+32)
	if at < 0 {
		return false
	}
	for mask &^= 1<<(end-last) - 1; mask != 0; mask &= mask - 1 {
		if p.hitMatches(b, at+bits.TrailingZeros32(mask)) {
			return true
		}
	}
	return false
}

// hitMatches is matchesAt with the watch's anchor, the most frequent hit by
// far, tested first and inline.
func (p *prefilter) hitMatches(b []byte, i int) bool {
	if p.watchOnly && b[i] == watchKey[watchAnchorAt] && b[i+1] == watchKey[watchAnchorAt+1] {
		return p.watch.watchValueAt(b, i-watchAnchorAt)
	}
	return p.matchesAt(b, i)
}

// matchesAt reports whether a search matches at its anchor b[i:i+2].
func (p *prefilter) matchesAt(b []byte, i int) bool {
	switch {
	case b[i] == '\\' && b[i+1] == 'u':
		return suspectEscapeAt(&p.suspect, b, i+2)
	case b[i] == 'H' && b[i+1] == '4':
		return bytes.HasPrefix(b[i:], base64Gzip)
	}
	if p.watch != nil && b[i] == watchKey[watchAnchorAt] && b[i+1] == watchKey[watchAnchorAt+1] {
		if p.watch.watchValueAt(b, i-watchAnchorAt) {
			return true
		}
		if p.watchOnly {
			return false
		}
	}
	for k := range p.markers {
		ms := &p.markers[k]
		start := i - ms.before
		if start >= 0 && start+len(ms.marker) <= len(b) && bytes.Equal(b[start:start+len(ms.marker)], ms.marker) {
			return true
		}
	}
	return false
}

// mayMatchSlow is mayMatch as one search after the other: the specification
// the one-pass version is held to (FuzzPrefilter).
func (p *prefilter) mayMatchSlow(b []byte) bool {
	for i := range p.markers {
		if p.markers[i].in(b) {
			return true
		}
	}
	return p.hasSuspectEscape(b) || bytes.Contains(b, base64Gzip) || p.watch != nil && p.watch.watchSlow(b)
}

// hasSuspectEscape reports whether some `\u` in b, wherever it starts, is
// not followed by four hex digits naming a code point outside suspect.
func (p *prefilter) hasSuspectEscape(b []byte) bool {
	i := bytes.IndexByte(b, '\\')
	if i < 0 {
		return false
	}
	for {
		j := bytes.Index(b[i:], escapeU)
		if j < 0 {
			return false
		}
		i += j + len(escapeU)
		if suspectEscapeAt(&p.suspect, b, i) {
			return true
		}
	}
}

// suspectEscapeAt, with the set S of the searched strings' letters in
// suspect, reports whether the four bytes at b[i:], after a `\u`,
// are not hex digits naming a code point outside suspect.
func suspectEscapeAt(suspect *[128]bool, b []byte, i int) bool {
	if i+4 > len(b) {
		return true
	}
	cp, ok := hex4(b[i : i+4])
	return !ok || cp < 0x80 && suspect[cp]
}

func hex4(h []byte) (rune, bool) {
	var r rune
	for _, c := range h {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// markerSearch is one marker and its anchor: the marker's rarest byte in
// CloudTrail text ('Q', '_'), which with the byte after it anchors the
// marker in the one-pass search; in is the plain search by that byte.
type markerSearch struct {
	marker        []byte
	anchor        byte
	before, after int // bytes of the marker before and from the anchor
}

// rareBytes are bytes seldom seen in CloudTrail, rarest first.
const rareBytes = "QXZJ_"

func newMarkerSearch(marker []byte) markerSearch {
	at := 0
	for _, c := range []byte(rareBytes) {
		if j := bytes.IndexByte(marker, c); j >= 0 && j+1 < len(marker) {
			at = j
			break
		}
	}
	return markerSearch{marker: marker, anchor: marker[at], before: at, after: len(marker) - at}
}

func (ms *markerSearch) in(b []byte) bool {
	for i := ms.before; i <= len(b)-ms.after; {
		j := bytes.IndexByte(b[i:len(b)-ms.after+1], ms.anchor)
		if j < 0 {
			return false
		}
		i += j
		if bytes.Equal(b[i-ms.before:i+ms.after], ms.marker) {
			return true
		}
		i++
	}
	return false
}
