package matcher

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// The identity filter selects, without decoding, the record values that can
// hold an event of one identity: an IAM user name, an access key id. It is
// the prefilter of the look-back (what did a quarantined user do before the
// quarantine), which reads the same traffic as the rules with other strings
// to find. It lives here, not in a package of its own, because it is the
// rules' prefilter with run-time strings: it shares the soundness argument
// of prefilter.go, the one-pass pair search (indexPair), and the Scanner's
// way into every delivery shape (gzip, base64, the awslogs wrapper, records
// carried as strings), which a separate package would have to copy. Like
// the rest of the package it takes bytes and knows no Kafka client, no
// output format and no internal/ package.
//
// It matches ASCII letters in any case: IAM user names "are not
// distinguished by case" (the IAM API reference, CreateUser), so a call
// naming "Alice" acts on "alice", and a search that missed it would miss the
// call. Access key ids are searched the same way; a search that passes more
// is still sound, and what it passes is decided exactly after the decode.
//
// Claim: let S be the bytes of every identifier in both cases, of "H4sI",
// the backslash, 'u' and the hex digits. If the bytes B (1) contain no
// identifier, compared without regard to ASCII case, and (2) every `\u` in
// B, wherever it starts, is followed by four hex digits naming a code point
// outside S, then no string decoded from B, nor from JSON text inside such
// a string, contains an identifier in any case.
//
// The proof is prefilter.go's, character for character. Every character of
// a decoded string D is a literal byte of B, a short escape (\" \\ \/ \b
// \f \n \r \t) or a \uXXXX escape, outside S by (2). An identifier holds
// none of the eight characters a short escape yields (NewIdentityFilter
// refuses '"', '\' and '/', and control bytes are not printable ASCII), and
// each of its characters, in either case, is in S: so every character of an
// occurrence in D is a literal byte of B, consecutive ones are consecutive,
// and the occurrence is in B, against (1). A `\u` in D comes from `\\u` in
// B (\u005c and \u0075 are in S), whose `\u` is followed in B by the four
// literal hex digits that follow it in D: (2) holds for D, and induction
// carries the claim to every level. Compressed payloads are inflated by the
// Scanner before the filter runs, as for the rules, and base64 of gzip
// inside JSON text is caught by "H4sI" (see prefilter.go).
//
// This is why the filter searches the user name and not the user's ARN: an
// ARN holds '/', which JSON may write `\/` ("arn:aws:iam::1:user\/alice"),
// so the ARN need not be in the bytes; the name, which an ARN ends with and
// requestParameters.userName holds, always is.
//
// An identifier of one byte cannot anchor a pair search: with one, every
// value passes (sound, and slow, which is the price of a one-letter name).
//
// The watch after a quarantine (watch.go) searches run-time names too, but
// not this way: one pass per four anchor pairs would not scale to a
// thousand watched users, so it anchors on the key the names are read from
// and proves that search sound on its own.

// IdentityFilter is the prefilter for a set of identifiers; see above. It is
// immutable and safe for concurrent use.
type IdentityFilter struct {
	ids [][]byte // lowercase
	// before[i] is where the anchor pair of ids[i] starts in it.
	before []int
	groups []pairSet
	// suspect is the set S of the argument above.
	suspect [128]bool
	all     bool // an identifier too short to anchor: everything passes
}

// ErrBadIdentifier is returned by NewIdentityFilter for an identifier the
// filter cannot search soundly.
var ErrBadIdentifier = errors.New("matcher: identifier cannot be searched")

// NewIdentityFilter returns the filter for identifiers: IAM user names and
// access key ids. Each must be printable ASCII without '"', '\' or '/',
// which JSON can write as short escapes (an IAM user name or key id never
// holds them); it returns ErrBadIdentifier (wrapped) otherwise, and for
// none at all.
func NewIdentityFilter(identifiers []string) (*IdentityFilter, error) {
	if len(identifiers) == 0 {
		return nil, fmt.Errorf("%w: no identifier", ErrBadIdentifier)
	}
	f := &IdentityFilter{}
	for _, id := range identifiers {
		if id == "" {
			return nil, fmt.Errorf("%w: an empty identifier", ErrBadIdentifier)
		}
		for i := 0; i < len(id); i++ {
			if c := id[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '/' {
				return nil, fmt.Errorf("%w: %q has byte %q at %d (printable ASCII without '\"', '\\' or '/')", ErrBadIdentifier, id, c, i)
			}
		}
		low := bytes.ToLower([]byte(id))
		if slices.ContainsFunc(f.ids, func(have []byte) bool { return bytes.Equal(have, low) }) {
			continue
		}
		for _, c := range low {
			f.suspect[c], f.suspect[upper(c)] = true, true
		}
		if len(low) < 2 {
			f.all = true
		}
		f.ids = append(f.ids, low)
		f.before = append(f.before, anchorAt(low))
	}
	for _, c := range []byte(string(base64Gzip) + `\u0123456789abcdefABCDEF`) {
		f.suspect[c] = true
	}
	anchors := [][2]byte{{'\\', 'u'}, {'H', '4'}}
	for i, id := range f.ids {
		if len(id) < 2 {
			continue
		}
		a, b := id[f.before[i]], id[f.before[i]+1]
		for _, p := range [][2]byte{{a, b}, {upper(a), b}, {a, upper(b)}, {upper(a), upper(b)}} {
			if !slices.Contains(anchors, p) {
				anchors = append(anchors, p)
			}
		}
	}
	for len(anchors) > 0 {
		var g pairSet
		n := min(len(anchors), len(g.first))
		for k := range g.first {
			a := anchors[min(k, n-1)] // unused slots repeat a pair
			g.first[k], g.second[k] = a[0], a[1]
		}
		f.groups = append(f.groups, g)
		anchors = anchors[n:]
	}
	return f, nil
}

// anchorAt chooses the pair an identifier is anchored on: the first pair
// holding a byte that is not a letter (one spelling to search, not up to
// four), else the first pair.
func anchorAt(id []byte) int {
	for i := 0; i+1 < len(id); i++ {
		if !isLetter(id[i]) || !isLetter(id[i+1]) {
			return i
		}
	}
	return 0
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c - 'A' + 'a'
	}
	return c
}

// MayContain reports whether the JSON text b can hold one of the
// identifiers in a decoded string, at any depth, or a compressed payload
// that can: whether it contains an identifier in any case, a suspect escape
// or "H4sI". It never reports false for text that holds one (see the
// argument above).
func (f *IdentityFilter) MayContain(b []byte) bool {
	if f.all {
		return true
	}
	for g := range f.groups {
		for pos := 0; pos < len(b); {
			i := indexPair(b[pos:], &f.groups[g])
			if i < 0 {
				break
			}
			i += pos
			if f.matchesAt(b, i) {
				return true
			}
			pos = i + 1
		}
	}
	return false
}

// matchesAt reports whether a search matches at its anchor b[i:i+2].
func (f *IdentityFilter) matchesAt(b []byte, i int) bool {
	switch {
	case b[i] == '\\' && b[i+1] == 'u':
		return suspectEscapeAt(&f.suspect, b, i+2)
	case b[i] == 'H' && b[i+1] == '4' && bytes.HasPrefix(b[i:], base64Gzip):
		return true
	}
	a, c := lower(b[i]), lower(b[i+1])
	for k, id := range f.ids {
		at := f.before[k]
		if id[at] != a || id[at+1] != c {
			continue
		}
		start := i - at
		if start >= 0 && start+len(id) <= len(b) && bytes.EqualFold(b[start:start+len(id)], id) {
			return true
		}
	}
	return false
}

// mayContainSlow is MayContain as one search after the other, the
// specification the one-pass version is held to (FuzzIdentityFilter).
func (f *IdentityFilter) mayContainSlow(b []byte) bool {
	if f.all {
		return true
	}
	low := bytes.ToLower(b)
	for _, id := range f.ids {
		if bytes.Contains(low, id) {
			return true
		}
	}
	for i := 0; ; {
		j := bytes.Index(b[i:], escapeU)
		if j < 0 {
			break
		}
		i += j + len(escapeU)
		if suspectEscapeAt(&f.suspect, b, i) {
			return true
		}
	}
	return bytes.Contains(b, base64Gzip)
}

// Candidate is one event of a record value that an IdentityFilter could not
// rule out: a CloudTrail record, or an ECS document.
type Candidate struct {
	// Text is the event's JSON text, a copy the caller owns: the record
	// as delivered (decoded from its envelope), or the ECS document.
	Text  []byte
	Shape Shape
	// Index is the position of the event inside the value, as in Finding.
	Index int
}

// Select returns, appended to dst[:0], the events of one record value
// whose own text f passes: those that can hold an identifier. Values it
// rejects are not decoded. The value goes through the same shapes, limits
// and decoders as Match; err is an *InputError when the value, or an event
// inside it that could hold an identifier, could not be read (the events
// read are still returned). Rules are not evaluated.
func (s *Scanner) Select(value []byte, f *IdentityFilter, dst []Candidate) (c []Candidate, err error) {
	res := Result{}
	s.screened = false
	s.arena.reset()
	s.sel, s.cands = f, dst[:0]
	defer func() {
		if p := recover(); p != nil {
			s.cands = s.cands[:0]
			res.Err = inputError(ErrInternal, -1, -1, "%v", p)
		}
		c, s.sel, s.cands = s.cands, nil, nil
		if res.Err != nil {
			err = res.Err
		}
		s.trim()
	}()
	s.match(value, &res)
	return
}

// selectEvent keeps an event for Select when its own text may hold an
// identifier: a value passes as a whole when one of its records does, and
// the others are dropped here, by the same test on fewer bytes.
func (s *Scanner) selectEvent(text []byte, shape Shape, index int) {
	if s.sel.MayContain(text) {
		s.cands = append(s.cands, Candidate{Text: bytes.Clone(trimSpace(text)), Shape: shape, Index: index})
	}
}
