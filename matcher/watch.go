package matcher

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The watch: for a while after AWS quarantined IAM user U in account A
// (a WatchEntry, opened by the Elastic rule's or attach-failed's finding),
// the events of U are findings of the post-quarantine rules
// (PostQuarantineRules). The entries change at run time (the consumer loads
// them from a compacted topic), so they are not part of Config: a Matcher
// holds the current Watchlist behind an atomic pointer, swapped whole by
// SetWatchlist, and every Match reads it once, without a lock.
//
// The events of U, decided exactly on the decoded record:
//   - U is the actor when userIdentity is of type IAMUser with userName U
//     and accountId A, or when userIdentity.sessionContext.sessionIssuer is
//     of type IAMUser with userName U and accountId A (a session U opened
//     with GetSessionToken or GetFederationToken);
//   - the call acts on U when requestParameters.userName is U and
//     recipientAccountId is A (the rules then ask for IAM's event source:
//     other services' userName parameters name other things).
//
// Names compare without regard to ASCII case: IAM user names are ASCII and
// "not distinguished by case" (the IAM API reference, CreateUser); no other
// folding applies (U+212A KELVIN SIGN is not "k" here, as it is not to IAM).
// The event is in the entry's window when its eventTime, read as RFC 3339,
// is in (OpenedAt, Until]: event time, not the clock, so a replay decides the
// same way, and the quarantine's own event (at OpenedAt) is not in it. An
// eventTime that does not parse puts the event in no window.
//
// The ARN is not read: an IAM user's userIdentity carries userName beside it
// (CloudTrail's userIdentity element), and the ARN's name may be written
// with escapes the name alone never needs ("user\/alice"), which would cost
// the prefilter a second structural search. A record whose identity has an
// ARN and no userName (hand-written test fixtures do that) is not U's. ECS
// documents (ShapeECS) are not watched: Elastic has already normalised
// them, and its own rules see them.
//
// What an event of U is, and why, is in the rules' declarations
// (PostQuarantineRules): the first rule that matches gives the finding, one
// per event and watch entry.
//
// # The watch's prefilter
//
// Searching every watched name the way IdentityFilter does costs one pass
// over the text per four anchor pairs: a thousand names would cost hundreds
// of passes. The watch searches one key instead. The decision above reads a
// name only from a member whose key is "userName", at some level of the
// value (a record may be carried as a string, escaped once more), whose
// value is a string that folds to a watched name. So the prefilter anchors
// on the key, with one more pair ("rN") in the rules' group of anchors, and
// at each literal "userName" skips what may stand between a key and its
// string value at any level of escaping (the separators: '"', ':', JSON
// whitespace, a backslash, and a backslash followed by 't', 'n' or 'r'),
// reads the bytes up to the next '"' or '\' (at most 64, an IAM name's
// longest) and looks them up, folded, in the Watchlist's set. The work per
// key does not grow with the number of entries.
//
// Claim: let S be the set of prefilter.go's argument for the rules, with
// the bytes of every watched name in both cases, the letters of "userName",
// '"', ':', the four JSON whitespace characters and 't', 'n', 'r'. If the
// bytes B (1) contain no `\u` followed by anything but four hex digits
// naming a code point outside S (no suspect escape), and (2) at no literal
// "userName" in B do the separators skipped from its end lead to bytes,
// read up to the next '"' or '\' or the end, that fold to a watched name,
// then no JSON text decoded from B, at any level, has a member "userName"
// whose value is a string that folds to a watched name.
//
// Proof. Suppose some level-k text D (B is level 0; level j+1 is a string
// of level j) has the member `"userName"` ws* `:` ws* `"v"` with v folding
// to a watched name N. By (1) and prefilter.go's induction, no level has a
// suspect escape, so a character of S in D is, at every level above it,
// either itself or a short escape (\" \\ \/ \b \f \n \r \t), never \uXXXX.
//   - The key. Its letters are in S and no short escape yields a letter, so
//     they are literal and consecutive at every level: "userName" is in B.
//   - The value. v has N's length and its bytes fold to N's, so each is a
//     byte of a watched name in one case, which is in S and is no short
//     escape's result ('"', '\', '/' and control bytes are not in IAM
//     names; NewWatchlist checks): v is literal and consecutive in B too.
//   - Between them, each character of `"` ws* `:` ws* `"` is, in B, either
//     itself (':' and ' ' need no escape at any level, and level 0 holds
//     '"' and whitespace as they are) or backslashes followed by the short
//     escape's letter ('"', 't', 'n' or 'r'), those backslashes themselves
//     only ever escaped as `\\` (\u005c is in S). The skip takes a backslash
//     with the 't', 'n' or 'r' after it, any other backslash alone, and the
//     other separators one by one; a 't', 'n' or 'r' of the region always
//     directly follows a backslash, which the skip reaches as the start of
//     a pair (the second byte of a pair is never a backslash). So the skip
//     consumes the region whole, and stops on v's first byte: the byte
//     before v is the end of the opening quote, '"' at every level, so v's
//     first byte is never taken as the letter of an escape, and it is not a
//     separator itself unless it is 't', 'n' or 'r' after a backslash,
//     which it is not.
//   - After v comes the closing quote: '"' at level 0, `\` and more at
//     every other level. So the bytes read up to the next '"' or '\' are v
//     exactly, at most 64 of them, and they fold to N: against (2). The
//     test that runs before the read (watchValueAt's mayStart) passes v
//     too: it holds the first two bytes of every name, and for a name of
//     one byte that byte followed by '"' and by '\', the first byte of the
//     closing quote at any level, each byte with bit 0x20 set; v's bytes
//     fold to N's, and setting bit 0x20 maps a byte and its fold to the
//     same byte.
//
// Induction over the levels is prefilter.go's own; compressed payloads are
// inflated before the prefilter runs, and base64 of gzip inside JSON text
// holds "H4sI" or a suspect escape (prefilter.go). The set S grows with the
// names' bytes: with many names it holds the letters and digits, and an
// escape of one of them, which CloudTrail does not write for ASCII
// letters, makes a record a candidate. The decision reads the three members
// above at their places only, so the filter passes a superset of what it
// needs; FuzzWatchFilter holds it to a decode-everything reference and its
// one-pass search to a search one occurrence at a time.

// WatchEntry is one watched user: the events of UserName in Account with
// an eventTime in (OpenedAt, Until] are the post-quarantine rules' to judge.
// AlertID is the id of the alert that opened the watch, carried into the
// findings so that a SIEM can join them.
type WatchEntry struct {
	Account, UserName string
	OpenedAt, Until   time.Time
	AlertID           string
}

// Watchlist is a set of watch entries, with what the prefilter and the
// decision need to look names up. It is immutable and safe for concurrent
// use; a new set is a new Watchlist.
type Watchlist struct {
	entries []WatchEntry // by Account, then lowercase UserName
	// names maps a lowercase user name to the indexes of its entries (one
	// per account and window), ascending.
	names map[string][]int
	// lens has bit n-1 set when a name has n bytes; first and last hold
	// the names' first and last bytes, lowercase: a value that fails them
	// is not hashed (role names in sessionIssuer.userName, mostly).
	lens        uint64
	first, last [4]uint64
	// prefix2 has bit prefix2Key(c0, c1) set for the first two bytes of
	// every name (a name of one byte with either '"' or '\' after it, the
	// bytes that may follow it in the text): the test every "userName"
	// value of the traffic meets first, before its end is searched.
	prefix2 [1024]uint64
	// alphabet is the bytes of the names in both cases, which join the
	// prefilter's suspect set.
	alphabet [128]bool
}

// maxUserName is the longest IAM user name (the IAM API reference,
// CreateUser).
const maxUserName = 64

// ErrBadWatchEntry is returned (wrapped) by NewWatchlist for an entry that
// cannot be watched: a name or account IAM would not accept, a window that
// is empty, or a window of a user that overlaps another of the same user.
var ErrBadWatchEntry = errors.New("matcher: bad watch entry")

// NewWatchlist checks the entries and returns them as a Watchlist. A user
// name must be 1 to 64 characters of IAM's user name alphabet (letters,
// digits and "+=,.@_-"), an account twelve digits, and Until after OpenedAt,
// which must be set. A user (Account, UserName regardless of case) may
// have several entries, one per quarantine, whose windows must not
// overlap: an event is in one entry's window at most, so it is one finding
// of one watch. The entries are copied.
func NewWatchlist(entries []WatchEntry) (*Watchlist, error) {
	w := &Watchlist{entries: slices.Clone(entries), names: make(map[string][]int, len(entries))}
	for _, e := range w.entries {
		if err := checkWatchEntry(e); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(w.entries, func(a, b WatchEntry) int {
		return cmp.Or(strings.Compare(a.Account, b.Account), strings.Compare(strings.ToLower(a.UserName), strings.ToLower(b.UserName)),
			a.OpenedAt.Compare(b.OpenedAt))
	})
	for i, e := range w.entries {
		low := strings.ToLower(e.UserName)
		if prev := w.entries[max(i-1, 0)]; i > 0 && e.Account == prev.Account && strings.EqualFold(e.UserName, prev.UserName) && e.OpenedAt.Before(prev.Until) {
			return nil, fmt.Errorf("%w: user %q of account %s: the windows (%s, %s] and (%s, %s] overlap", ErrBadWatchEntry, e.UserName, e.Account,
				prev.OpenedAt.Format(time.RFC3339), prev.Until.Format(time.RFC3339), e.OpenedAt.Format(time.RFC3339), e.Until.Format(time.RFC3339))
		}
		w.names[low] = append(w.names[low], i)
		w.lens |= 1 << (len(low) - 1)
		f, l := low[0], low[len(low)-1]
		w.first[f>>6] |= 1 << (f & 63)
		w.last[l>>6] |= 1 << (l & 63)
		for j := 0; j < len(low); j++ {
			w.alphabet[low[j]], w.alphabet[upper(low[j])] = true, true
		}
		if len(low) == 1 {
			w.setPrefix2(low[0], '"')
			w.setPrefix2(low[0], '\\')
		} else {
			w.setPrefix2(low[0], low[1])
		}
	}
	return w, nil
}

func checkWatchEntry(e WatchEntry) error {
	if len(e.Account) != 12 || strings.Trim(e.Account, "0123456789") != "" {
		return fmt.Errorf("%w: account %q is not twelve digits", ErrBadWatchEntry, e.Account)
	}
	if e.UserName == "" || len(e.UserName) > maxUserName {
		return fmt.Errorf("%w: user name %q: want 1 to %d characters", ErrBadWatchEntry, e.UserName, maxUserName)
	}
	for i := 0; i < len(e.UserName); i++ {
		if c := e.UserName[i]; !isLetter(c) && (c < '0' || c > '9') && !strings.ContainsRune("+=,.@_-", rune(c)) {
			return fmt.Errorf("%w: user name %q has %q at %d (IAM allows letters, digits and +=,.@_-)", ErrBadWatchEntry, e.UserName, c, i)
		}
	}
	if e.OpenedAt.IsZero() || !e.Until.After(e.OpenedAt) {
		return fmt.Errorf("%w: user %q of account %s: the window (%s, %s] is empty", ErrBadWatchEntry, e.UserName, e.Account,
			e.OpenedAt.Format(time.RFC3339), e.Until.Format(time.RFC3339))
	}
	return nil
}

// Len returns the number of entries.
func (w *Watchlist) Len() int {
	if w == nil {
		return 0
	}
	return len(w.entries)
}

// Entries returns a copy of the entries, by account, then user name.
func (w *Watchlist) Entries() []WatchEntry {
	if w == nil {
		return nil
	}
	return slices.Clone(w.entries)
}

func (w *Watchlist) setPrefix2(c0, c1 byte) {
	k := prefix2Key(c0, c1)
	w.prefix2[k>>6] |= 1 << (k & 63)
}

// mayStart reports whether a value starting with c0, c1 can be a watched
// name followed by its closing quote.
func (w *Watchlist) mayStart(c0, c1 byte) bool {
	k := prefix2Key(c0, c1)
	return w.prefix2[k>>6]&(1<<(k&63)) != 0
}

// prefix2Key folds two bytes by setting bit 0x20 of each: a letter's two
// cases become one, as lower does, and a few other bytes join them ('@'
// with '`', '\' with '|'), so the set is a superset of the names' folded
// prefixes. Unlike lower it needs no branch, which the assembly's check of
// every "userName" value (pairMaskWatchAVX2) would mispredict on names
// that start with a capital.
func prefix2Key(c0, c1 byte) uint16 { return uint16(c0|0x20)<<8 | uint16(c1|0x20) }

// lookup returns the indexes of the entries watching the name v, compared
// without regard to ASCII case.
func (w *Watchlist) lookup(v []byte) []int {
	n := len(v)
	if n == 0 || n > maxUserName || w.lens&(1<<(n-1)) == 0 {
		return nil
	}
	f, l := lower(v[0]), lower(v[n-1])
	if w.first[f>>6]&(1<<(f&63)) == 0 || w.last[l>>6]&(1<<(l&63)) == 0 {
		return nil
	}
	var buf [maxUserName]byte
	for i, c := range v {
		buf[i] = lower(c)
	}
	return w.names[string(buf[:n])]
}

// The watch's key and the pair of it the prefilter anchors on: "rN" is
// rarer in CloudTrail text than the key's other pairs.
const (
	watchKey      = "userName"
	watchAnchorAt = 3
)

// watchKeyWord is watchKey read as a little-endian word.
var watchKeyWord = binary.LittleEndian.Uint64([]byte(watchKey))

// watchValueAt reports whether the "userName" that may start at b[start:]
// is followed, past the separators, by a watched name (see the argument
// above). It runs once per "rN" in every record, about once per record, so
// the common spelling `":"` is taken whole and the value is delimited with
// bytes.IndexByte rather than byte by byte.
func (w *Watchlist) watchValueAt(b []byte, start int) bool {
	i := start + len(watchKey)
	if start < 0 || i > len(b) || binary.LittleEndian.Uint64(b[start:]) != watchKeyWord {
		return false
	}
	if i+3 <= len(b) && b[i] == '"' && b[i+1] == ':' && b[i+2] == '"' {
		i += 3
	}
	i = skipWatchSeparators(b, i)
	if i+1 < len(b) && !w.mayStart(b[i], b[i+1]) {
		return false
	}
	v := b[i:min(len(b), i+maxUserName+1)]
	if q := bytes.IndexByte(v, '"'); q >= 0 {
		v = v[:q]
	}
	if e := bytes.IndexByte(v, '\\'); e >= 0 {
		v = v[:e]
	}
	return len(v) <= maxUserName && w.lookup(v) != nil
}

// skipWatchSeparators returns the index of the first byte from i on that is
// not a separator between a key and its value at some level of escaping.
func skipWatchSeparators(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case '"', ':', ' ', '\t', '\n', '\r':
			i++
		case '\\':
			if i+1 < len(b) && (b[i+1] == 't' || b[i+1] == 'n' || b[i+1] == 'r') {
				i += 2
			} else {
				i++
			}
		default:
			return i
		}
	}
	return i
}

// watchSuspect are the bytes the watch adds to the suspect set besides the
// names' own (see the argument above).
const watchSuspect = watchKey + "\": \t\n\rtnr"

// watchState is what a Matcher holds for its current Watchlist: the list
// and the rules' prefilter with the watch's anchor and suspect bytes.
type watchState struct {
	list      *Watchlist
	prefilter prefilter
}

// SetWatchlist replaces the Matcher's watchlist, atomically: every Match
// that starts afterwards, on any Scanner or Pool made from m, evaluates the
// post-quarantine rules for w's entries; nil or an empty list turns the
// watch off. It is safe to call while Scanners of m are matching.
func (m *Matcher) SetWatchlist(w *Watchlist) {
	if w.Len() == 0 {
		m.watch.Store(nil)
		return
	}
	m.watch.Store(&watchState{list: w, prefilter: newPrefilter(m.markers, w)})
}

// watchState returns the state of list w: the Matcher's own when w is the
// one set last, else one built for w; nil when w is empty.
func (m *Matcher) watchState(w *Watchlist) *watchState {
	if w.Len() == 0 {
		return nil
	}
	if ws := m.watch.Load(); ws != nil && ws.list == w {
		return ws
	}
	return &watchState{list: w, prefilter: newPrefilter(m.markers, w)}
}

// Watchlist returns the watchlist set last, or nil when there is none.
func (m *Matcher) Watchlist() *Watchlist {
	if ws := m.watch.Load(); ws != nil {
		return ws.list
	}
	return nil
}

// watchRef is a name the decoded event shows as its actor's or target's,
// with the account it is in.
type watchRef struct {
	name, account string
	as            uint8
}

// The parts a watched user plays in an event.
const (
	asActor uint8 = 1 << iota
	asTarget
)

// watchHit is a watch entry an event is about, and U's part in it.
type watchHit struct {
	entry int
	as    uint8
}

// evalWatch evaluates the post-quarantine rules on one decoded CloudTrail
// record: see the decision above. outcome is the record's, if computed.
func (s *Scanner) evalWatch(f fields, r *record, name []byte, outcome string, index int, res *Result) {
	w := s.ws.list
	var refs [3]watchRef
	n := 0
	if ui, ok := s.arena.object(f.raw("userIdentity")); ok {
		if ui.string("type") == "IAMUser" {
			refs[n] = watchRef{ui.string("userName"), ui.string("accountId"), asActor}
			n++
		}
		if sc, ok := s.arena.object(ui.raw("sessionContext")); ok {
			if si, ok := s.arena.object(sc.raw("sessionIssuer")); ok && si.string("type") == "IAMUser" {
				refs[n] = watchRef{si.string("userName"), si.string("accountId"), asActor}
				n++
			}
		}
	}
	var params fields
	if p, ok := s.arena.object(f.raw("requestParameters")); ok {
		params = p
		if v, ok := p.str("userName"); ok {
			refs[n] = watchRef{v, f.string("recipientAccountId"), asTarget}
			n++
		}
	}
	var hitsBuf [4]watchHit
	hits := hitsBuf[:0]
	for _, ref := range refs[:n] {
		for _, i := range w.lookup(unsafeBytes(ref.name)) {
			if w.entries[i].Account != ref.account {
				continue
			}
			k := slices.IndexFunc(hits, func(h watchHit) bool { return h.entry == i })
			if k < 0 {
				hits = append(hits, watchHit{entry: i})
				k = len(hits) - 1
			}
			hits[k].as |= ref.as
		}
	}
	if len(hits) == 0 {
		return
	}
	at, err := time.Parse(time.RFC3339, f.string("eventTime"))
	if err != nil {
		return
	}
	if outcome == "" {
		outcome = s.outcome(f, name)
	}
	slices.SortFunc(hits, func(a, b watchHit) int { return a.entry - b.entry })
	source := f.string("eventSource")
	for _, h := range hits {
		e := &w.entries[h.entry]
		if !at.After(e.OpenedAt) || at.After(e.Until) {
			continue
		}
		for _, rule := range PostQuarantineRules {
			if watchMatches(rule.Watch, h.as, outcome, source, unsafeString(name), params) {
				res.Findings = append(res.Findings, Finding{Rule: rule, Event: recordEvent(r, outcome), Shape: res.Shape, Index: index, Watch: e})
				break
			}
		}
	}
}

// watchMatches reports whether a post-quarantine rule matches an event of a
// watched user, who plays the parts as in it.
func watchMatches(wm *WatchMatch, as uint8, outcome, source, name string, params fields) bool {
	if outcome != wm.Outcome {
		return false
	}
	for i := range wm.Clauses {
		c := &wm.Clauses[i]
		switch {
		case c.As == WatchActor && as&asActor == 0,
			c.As == WatchTarget && as&asTarget == 0,
			c.EventSource != "" && c.EventSource != source,
			c.Actions != nil && !slices.Contains(c.Actions, name):
			continue
		}
		if c.PolicyARNMarker != "" {
			arn, ok := params.str("policyArn")
			if params.b == nil || !ok || !strings.Contains(arn, c.PolicyARNMarker) {
				continue
			}
		}
		return true
	}
	return false
}

// watchSlow is the watch's part of the prefilter as a plain search, one
// occurrence of the key after the other and every entry compared in turn:
// the specification watchValueAt's one-pass use is held to (FuzzWatchFilter).
func (w *Watchlist) watchSlow(b []byte) bool {
	for i := 0; ; i++ {
		j := bytes.Index(b[i:], []byte(watchKey))
		if j < 0 {
			return false
		}
		i += j
		v := b[skipWatchSeparators(b, i+len(watchKey)):]
		if k := bytes.IndexAny(v, `"\`); k >= 0 {
			v = v[:k]
		}
		for _, e := range w.entries {
			if bytes.EqualFold(v, []byte(e.UserName)) && asciiOnly(v) {
				return true
			}
		}
	}
}

func asciiOnly(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
