package producer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka refuses a record batch larger than its topic's max.message.bytes,
// and franz-go refuses, before sending it, a record that would not fit a
// batch of its own under its producer limit. The functions here cut alerts
// and dead letters to a given limit, so that one large input record never
// makes a transaction fail; the consumer reads each output topic's
// max.message.bytes at start-up and passes it in.

// DefaultMaxMessageBytes is Kafka's default max.message.bytes (and
// message.max.bytes): 1 MiB and the 12 bytes of a batch's offset and length
// fields. A topic created without the setting takes batches up to this size.
const DefaultMaxMessageBytes = 1048588

// MinMessageBytes is the smallest limit an output topic may have: a dead
// letter must fit in it with its source headers, an error message and
// nothing of the record's key and value.
const MinMessageBytes = 1024

// batchOverhead is what a record costs beside its key, value and headers in
// a batch of its own, counted as franz-go counts it before producing: the
// batch header and record-array length (65 bytes), then the record's
// length, attributes, timestamp delta, offset delta and the lengths of its
// key, value and header array, each varint at its widest. The broker counts
// 4 bytes less (no array length), so a record within RecordBytes of the
// limit is taken by both.
const batchOverhead = 65 + 5 + 1 + 10 + 5 + 5 + 5 + 5

// headerOverhead is what a header costs beside its key and value: the two
// varint lengths at their widest.
const headerOverhead = 5 + 5

// RecordBytes returns an upper bound of the size of r in a batch of its own,
// the size that max.message.bytes and franz-go's ProducerBatchMaxBytes are
// compared with. Compression can only make the batch smaller: franz-go
// sends a batch uncompressed when compressing does not shrink it.
func RecordBytes(r *kgo.Record) int {
	n := batchOverhead + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += headerOverhead + len(h.Key) + len(h.Value)
	}
	return n
}

// minKeptString is how much of each cut string an alert keeps at least
// (encoded bytes): identifiers, hashes and ARNs, all shorter, are never cut,
// and a cut value still shows what it was.
const minKeptString = 256

// TruncatedField is one entry of an alert's list of the fields FitAlert cut:
// where the field is, how long it was and a hash of its whole value, so that
// the value can be found and checked again in the source record. The list
// is quarantine_watch.truncated in ECS, unmapped.quarantine_watch.truncated
// in OCSF (see TruncationMarker).
type TruncatedField struct {
	// Field is the field's dotted path, array elements by index:
	// "event.original", "evidences.0.api.operation".
	Field string `json:"field"`
	// Bytes is the length of the whole value (UTF-8).
	Bytes int `json:"bytes"`
	// SHA256 is the lowercase hex SHA-256 of the whole value (UTF-8).
	SHA256 string `json:"sha256"`
}

// TruncationMarker is implemented by Encoders that say where in their
// documents FitAlert lists the fields it cut: the keys from the root, the
// last one the name of the list. Without it the list is "truncated" at the
// document's root.
type TruncationMarker interface {
	TruncationMarker() []string
}

// TruncationMarker returns quarantine_watch.truncated.
func (ECS) TruncationMarker() []string { return []string{"quarantine_watch", "truncated"} }

// TruncationMarker returns unmapped.quarantine_watch.truncated: OCSF has no
// attribute for it.
func (OCSF) TruncationMarker() []string {
	return []string{"unmapped", "quarantine_watch", "truncated"}
}

// StringCap is implemented by Encoders whose format bounds the length of
// string values: FitAlert cuts every longer string, but those under the
// subtrees Exempt names (top-level keys), to MaxChars characters, and lists
// it as it lists the strings it cuts for size.
type StringCap interface {
	StringCap() (maxChars int, exempt []string)
}

// ocsfMaxStringChars is OCSF 1.3's max_len of string_t, the base type of
// every string attribute: a longer raw_data (the whole source event, often
// over it when a user agent or request is large) makes the document invalid.
const ocsfMaxStringChars = 65535

// StringCap returns OCSF's 65,535 characters; unmapped, OCSF's generic
// object, is not bound by it.
func (OCSF) StringCap() (int, []string) { return ocsfMaxStringChars, []string{"unmapped"} }

// AlertTooLargeError is FitAlert's error when an alert does not fit its
// topic even with every long string cut to minKeptString bytes. Its class
// is ClassAlertTooLarge: the source record goes to the dead-letter topic.
type AlertTooLargeError struct {
	Format string // the alert format
	RuleID string
	// Size is the whole record's size (RecordBytes), Min its size once
	// cut as far as FitAlert cuts, Limit the topic's.
	Size, Min, Limit int
}

func (e *AlertTooLargeError) Error() string {
	return fmt.Sprintf("producer: the %s alert for rule %s is %d bytes, and %d once every long field is cut to %d bytes: over the alerts topic's limit of %d (max.message.bytes)",
		e.Format, e.RuleID, e.Size, e.Min, minKeptString, e.Limit)
}

// Class returns ClassAlertTooLarge.
func (e *AlertTooLargeError) Class() string { return ClassAlertTooLarge }

// FitAlert returns r, an alert record of enc's format (EncodeRecord), cut
// to fit limit bytes (RecordBytes) and enc's StringCap. A record that fits
// both is returned as it is. Otherwise strings over the cap are cut to it,
// then, if the document is still too large, the longest string values are
// cut, each to the same length (the longest that fits, at least
// minKeptString encoded bytes) at a character boundary; every cut string is
// listed with its whole length and SHA-256 (TruncatedField) where enc's
// TruncationMarker says; every other value, and the key and headers, are
// kept. When even that does not fit, the error is an *AlertTooLargeError.
func FitAlert(enc Encoder, r *kgo.Record, limit int) (*kgo.Record, error) {
	size := RecordBytes(r)
	maxChars, exempt := 0, []string(nil)
	if c, ok := enc.(StringCap); ok {
		maxChars, exempt = c.StringCap()
	}
	// A value of no more bytes than the cap holds no string over it.
	if size <= limit && (maxChars <= 0 || len(r.Value) <= maxChars) {
		return r, nil
	}
	marker := []string{"truncated"}
	if m, ok := enc.(TruncationMarker); ok {
		marker = m.TruncationMarker()
	}
	doc, err := parseDoc(r.Value)
	if err != nil {
		return nil, fmt.Errorf("producer: cutting the %s alert to fit: %w", enc.Format(), err)
	}
	if doc.kind != '{' {
		return nil, fmt.Errorf("producer: cutting the %s alert to fit: the document is not a JSON object", enc.Format())
	}
	leaves := doc.strings("", nil)
	capped := capStrings(leaves, maxChars, exempt)
	if size <= limit && capped == 0 {
		return r, nil
	}
	budget := limit - (size - len(r.Value))
	value, minSize, err := doc.fit(leaves, budget, marker)
	if err != nil {
		return nil, fmt.Errorf("producer: cutting the %s alert to fit: %w", enc.Format(), err)
	}
	if value == nil {
		return nil, &AlertTooLargeError{Format: enc.Format(), RuleID: header(r, HeaderRuleID), Size: size, Min: minSize + size - len(r.Value), Limit: limit}
	}
	cut := *r
	cut.Value = value
	return &cut, nil
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// node is a JSON value with its object members in document order, so that
// a document cut to fit reads like the one that was encoded.
type node struct {
	kind    byte // '{', '[', '"' or 'l' (a number, true, false or null)
	text    string
	keys    []string // of an object
	members []*node  // of an object or array
}

// parseDoc parses one JSON value.
func parseDoc(data []byte) (*node, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	n, err := parseNode(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("text after the document")
	}
	return n, nil
}

func parseNode(dec *json.Decoder) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := tok.(type) {
	case json.Delim:
		n := &node{kind: byte(v)}
		for dec.More() {
			if v == '{' {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, k.(string))
			}
			m, err := parseNode(dec)
			if err != nil {
				return nil, err
			}
			n.members = append(n.members, m)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return &node{kind: '"', text: v}, nil
	case json.Number:
		return &node{kind: 'l', text: string(v)}, nil
	case bool:
		return &node{kind: 'l', text: strconv.FormatBool(v)}, nil
	case nil:
		return &node{kind: 'l', text: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// leaf is a string value of a document and its dotted path.
type leaf struct {
	path string
	n    *node
	enc  int // encoded length, quotes included
	// whole is the value before capStrings cut it, when it did (capped).
	whole  string
	capped bool
	// entry is the leaf's TruncatedField as JSON, made when first needed.
	entry []byte
}

// capStrings cuts every leaf longer than maxChars characters (0: no cap),
// but those under an exempt top-level key, to its first maxChars, and
// returns how many it cut.
func capStrings(leaves []*leaf, maxChars int, exempt []string) int {
	if maxChars <= 0 {
		return 0
	}
	n := 0
	for _, l := range leaves {
		// Characters are at most bytes: only a longer value can be over.
		if len(l.n.text) <= maxChars || underAny(l.path, exempt) {
			continue
		}
		i, chars := 0, 0
		for i < len(l.n.text) && chars < maxChars {
			_, w := utf8.DecodeRuneInString(l.n.text[i:])
			i += w
			chars++
		}
		if i == len(l.n.text) {
			continue
		}
		l.whole, l.capped = l.n.text, true
		l.n.text = l.n.text[:i]
		l.enc = encodedLen(l.n.text)
		n++
	}
	return n
}

// underAny says whether the dotted path is one of tops or below one.
func underAny(path string, tops []string) bool {
	for _, t := range tops {
		if path == t || (len(path) > len(t) && path[len(t)] == '.' && path[:len(t)] == t) {
			return true
		}
	}
	return false
}

func (n *node) strings(path string, out []*leaf) []*leaf {
	switch n.kind {
	case '"':
		return append(out, &leaf{path: path, n: n, enc: encodedLen(n.text)})
	case '{', '[':
		for i, m := range n.members {
			k := strconv.Itoa(i)
			if n.kind == '{' {
				k = n.keys[i]
			}
			if path != "" {
				k = path + "." + k
			}
			out = m.strings(k, out)
		}
	}
	return out
}

// truncatedEntry returns l's TruncatedField as JSON.
func (l *leaf) truncatedEntry() ([]byte, error) {
	if l.entry == nil {
		whole := l.n.text
		if l.capped {
			whole = l.whole
		}
		sum := sha256.Sum256([]byte(whole))
		b, err := json.Marshal(TruncatedField{Field: l.path, Bytes: len(whole), SHA256: hex.EncodeToString(sum[:])})
		if err != nil {
			return nil, err
		}
		l.entry = b
	}
	return l.entry, nil
}

// fit returns the document (an object, whose string values are leaves)
// encoded with its strings cut to the longest common length that fits
// budget bytes, and the cut fields (those capStrings cut too) listed at
// marker; nil if it does not fit even when cut to minKeptString, with its
// size then.
//
// The search for that length works on sizes computed from each string's
// encoded length and the list's, with the document encoded once with an
// empty list for the rest; the result is encoded and measured, and searched
// again by measuring if it does not fit.
func (n *node) fit(leaves []*leaf, budget int, marker []string) ([]byte, int, error) {
	if n.kind != '{' {
		return nil, 0, errors.New("the document is not a JSON object")
	}
	// Capped strings alone may be all the cutting needed.
	if out, err := n.encodeCut(leaves, math.MaxInt, marker); err != nil || len(out) <= budget {
		return out, len(out), err
	}
	var frame bytes.Buffer
	if err := n.encode(&frame, marker, []byte("[]")); err != nil {
		return nil, 0, err
	}
	// size is the document's size with strings cut to c, if the
	// encoded length of each cut string is as runeEncodedLen says.
	size := func(c int) (int, error) {
		total, list := frame.Len()-len("[]"), len("[]")
		cut := 0
		for _, l := range leaves {
			if l.enc <= c && !l.capped {
				continue
			}
			e, err := l.truncatedEntry()
			if err != nil {
				return 0, err
			}
			_, kept := prefixEncodedWithin(l.n.text, c)
			total -= l.enc - kept
			list += len(e)
			cut++
		}
		if cut > 1 {
			list += cut - 1 // commas
		}
		return total + list, nil
	}
	longest := minKeptString
	for _, l := range leaves {
		longest = max(longest, l.enc)
	}
	// size grows with c but for the list, which loses an entry each time
	// c passes a string's length: a binary search for the largest c that
	// fits therefore finds one that fits, if not always the largest.
	lo, hi := minKeptString, longest
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		sz, err := size(mid)
		if err != nil {
			return nil, 0, err
		}
		if sz <= budget {
			lo = mid
		} else {
			hi = mid
		}
	}
	out, err := n.encodeCut(leaves, lo, marker)
	if err != nil || len(out) <= budget {
		return out, len(out), err
	}
	// The estimate was off (a string the encoder escapes otherwise than
	// runeEncodedLen says): search again below lo, measuring each length.
	hi, lo = lo, minKeptString
	if out, err = n.encodeCut(leaves, lo, marker); err != nil || len(out) > budget {
		return nil, len(out), err
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		b, err := n.encodeCut(leaves, mid, marker)
		if err != nil {
			return nil, 0, err
		}
		if len(b) <= budget {
			lo, out = mid, b
		} else {
			hi = mid
		}
	}
	return out, len(out), nil
}

// encodeCut encodes the document with every string longer than limit
// encoded bytes cut to at most limit and listed at marker.
func (n *node) encodeCut(leaves []*leaf, limit int, marker []string) ([]byte, error) {
	list := []byte{'['}
	var saved []string
	var cutNodes []*node
	defer func() {
		for i, c := range cutNodes {
			c.text = saved[i]
		}
	}()
	for _, l := range leaves {
		if l.enc <= limit && !l.capped {
			continue
		}
		e, err := l.truncatedEntry()
		if err != nil {
			return nil, err
		}
		if len(list) > 1 {
			list = append(list, ',')
		}
		list = append(list, e...)
		saved = append(saved, l.n.text)
		cutNodes = append(cutNodes, l.n)
		l.n.text, _ = prefixEncodedWithin(l.n.text, limit)
	}
	list = append(list, ']')
	var buf bytes.Buffer
	if err := n.encode(&buf, marker, list); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encode writes n, adding the member marker (a path of keys below n) with
// the value list when list is not nil.
func (n *node) encode(w *bytes.Buffer, marker []string, list []byte) error {
	switch n.kind {
	case '"':
		writeString(w, n.text)
	case 'l':
		w.WriteString(n.text)
	case '[':
		w.WriteByte('[')
		for i, m := range n.members {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := m.encode(w, nil, nil); err != nil {
				return err
			}
		}
		w.WriteByte(']')
	case '{':
		w.WriteByte('{')
		placed := len(marker) == 0 || list == nil
		for i, m := range n.members {
			if i > 0 {
				w.WriteByte(',')
			}
			writeString(w, n.keys[i])
			w.WriteByte(':')
			var sub []string
			var subList []byte
			if !placed && n.keys[i] == marker[0] {
				if len(marker) == 1 {
					// An earlier list: replaced, never listed twice.
					w.Write(list)
					placed = true
					continue
				}
				if m.kind == '{' {
					sub, subList, placed = marker[1:], list, true
				}
			}
			if err := m.encode(w, sub, subList); err != nil {
				return err
			}
		}
		if !placed {
			if len(n.members) > 0 {
				w.WriteByte(',')
			}
			writeString(w, marker[0])
			w.WriteByte(':')
			if len(marker) == 1 {
				w.Write(list)
			} else {
				if err := (&node{kind: '{'}).encode(w, marker[1:], list); err != nil {
					return err
				}
			}
		}
		w.WriteByte('}')
	default:
		return fmt.Errorf("unknown JSON node %q", n.kind)
	}
	return nil
}

// writeString writes s as a JSON string as the encoders of this package do
// (encoding/json with HTML escaping off).
func writeString(w *bytes.Buffer, s string) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a string always encodes
	w.Truncate(w.Len() - 1) // the newline Encode adds
}

// encodedLen is the length of s as a JSON string, quotes included.
func encodedLen(s string) int {
	_, n := prefixEncodedWithin(s, math.MaxInt)
	return n
}

// runeEncodedLen is how many bytes encoding/json (HTML escaping off) writes
// for r inside a string.
func runeEncodedLen(r rune) int {
	switch {
	case r == '"' || r == '\\' || r == '\b' || r == '\f' || r == '\n' || r == '\r' || r == '\t':
		return 2
	case r < 0x20 || r == '\u2028' || r == '\u2029':
		return 6
	}
	return utf8.RuneLen(r)
}

// asciiEncodedLen is runeEncodedLen of each ASCII character.
var asciiEncodedLen = func() (t [utf8.RuneSelf]uint8) {
	for r := range t {
		t[r] = uint8(runeEncodedLen(rune(r)))
	}
	return t
}()

// prefixEncodedWithin returns the longest prefix of s, cut at a character
// boundary, whose JSON encoding (quotes included) is at most limit bytes,
// and the length of that encoding.
func prefixEncodedWithin(s string, limit int) (string, int) {
	n := 2
	for i := 0; i < len(s); {
		var c, w int
		if b := s[i]; b < utf8.RuneSelf {
			c, w = int(asciiEncodedLen[b]), 1
		} else {
			var r rune
			r, w = utf8.DecodeRuneInString(s[i:])
			c = runeEncodedLen(r)
			if r == utf8.RuneError && w == 1 {
				c = 6 // invalid UTF-8: written as \ufffd
			}
		}
		if n+c > limit {
			return s[:i], n
		}
		n += c
		i += w
	}
	return s, n
}
