package matcher

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
	"unsafe"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/cpu"
)

// Scanner evaluates record values one at a time, reusing its buffers. It is
// not safe for concurrent use: a Pool gives each worker its own.
type Scanner struct {
	m        *Matcher
	gz       *gzip.Reader
	gzInput  bytes.Reader
	inflated []byte
	b64      []byte
	// screened is set when the prefilter rejected the value or a payload
	// inside it, so its errors, if any, went unreported by design.
	screened bool
	arena    memberArena
	walker   walker
	// name holds a record's eventName when it has to be decoded.
	name []byte
	// large is set when the value's text was over largeText: only then
	// can a buffer have grown past keepBytes.
	large bool
	// sel is set during Select: the identity filter replaces the rules'
	// prefilter, and events are kept in cands instead of evaluated.
	sel   *IdentityFilter
	cands []Candidate
	// ws is the Matcher's watchlist as it was when Match began, so that
	// one value is prefiltered and evaluated with one list.
	ws *watchState
	// own is the state of the list MatchWatchlist was last called with.
	own *watchState
	// Scanners of one Pool are allocated together and each writes its own
	// state for every record: the pad keeps two of them off one cache line.
	_ cpu.CacheLinePad
}

// NewScanner returns a Scanner for m.
func (m *Matcher) NewScanner() *Scanner { return &Scanner{m: m} }

// keepBytes is how much buffer a Scanner keeps between values: a value that
// needed more (a large payload inflated) gives it back when it is done, so
// that one such value does not stay resident in every worker. No buffer
// outgrows it on a text of largeText or less (an index entry takes 16
// bytes for at least four of text).
const (
	keepBytes = 4 << 20
	largeText = 1 << 20
)

// Match evaluates one record value. Findings are appended to dst[:0], which
// lets a caller reuse the slice across values.
func (s *Scanner) Match(value []byte, dst []Finding) (res Result) {
	return s.matchWatch(value, dst, s.m.watch.Load())
}

// MatchWatchlist is Match with the watchlist w instead of the Matcher's
// (nil: none): a caller that must know which entries a value was matched
// with (the consumer writes, per transaction, where each entry began to
// apply) takes one Watchlist and matches with it. The prefilter built for
// w is kept until the next call with another list.
func (s *Scanner) MatchWatchlist(w *Watchlist, value []byte, dst []Finding) Result {
	if s.own == nil || s.own.list != w {
		s.own = s.m.watchState(w)
	}
	return s.matchWatch(value, dst, s.own)
}

func (s *Scanner) matchWatch(value []byte, dst []Finding, ws *watchState) (res Result) {
	res = Result{Findings: dst[:0]}
	s.screened = false
	s.arena.reset()
	s.ws = ws
	// A bug here must not take the service down with it: the value is
	// reported as the matcher's fault and goes to the dead-letter topic.
	defer func() {
		if p := recover(); p != nil {
			res.Findings = res.Findings[:0]
			res.Err = inputError(ErrInternal, -1, -1, "%v", p)
		}
		s.trim()
	}()
	s.match(value, &res)
	return res
}

// trim drops the buffers a large value grew past keepBytes, and the
// references to its text that would keep it alive until the next one.
func (s *Scanner) trim() {
	if !s.large {
		return
	}
	s.large = false
	s.walker.b = nil
	s.gzInput.Reset(nil)
	if cap(s.inflated) > keepBytes {
		s.inflated = nil
	}
	if cap(s.b64) > keepBytes {
		s.b64 = nil
	}
	if cap(s.arena.buf)*int(unsafe.Sizeof(member{})) > keepBytes {
		s.arena.buf = nil
	}
	w := &s.walker
	if cap(w.stack)*int(unsafe.Sizeof(walkEntry{})) > keepBytes || cap(w.keys) > keepBytes || cap(w.buf) > keepBytes || cap(w.order)*4 > keepBytes {
		*w = walker{}
	}
}

const gzipMagic = "\x1f\x8b"

func (s *Scanner) match(value []byte, res *Result) {
	if len(value) > s.m.maxValueBytes {
		res.fail(inputError(ErrTooLarge, -1, -1, "value is %d bytes, limit %d", len(value), s.m.maxValueBytes))
		return
	}
	s.large = len(value) > largeText
	text := trimSpace(value)
	switch {
	case bytes.HasPrefix(value, []byte(gzipMagic)):
		inflated, err := s.gunzip(value)
		if err != nil {
			res.fail(err)
			return
		}
		text = trimSpace(inflated)
	case bytes.HasPrefix(text, base64Gzip):
		inflated, err := s.gunzipBase64(text)
		if err != nil {
			res.fail(err)
			return
		}
		text = trimSpace(inflated)
	default:
		if data := canonicalAWSLogs(text); data != nil {
			// The awslogs wrapper as AWS writes it: its data is taken
			// without a JSON decode, then handled exactly as the decoder's
			// branch for the wrapper handles it (evalAWSLogs).
			s.evalAWSLogs(data, res)
			return
		}
	}
	s.large = s.large || len(text) > largeText
	if err := framing(text); err != nil {
		res.fail(err)
		return
	}
	if s.skip(text) {
		return
	}
	s.decodeValue(text, res)
}

// framing is the check every value gets, screened or not: a whole JSON
// object, which tells a truncated or foreign value from a record.
func framing(text []byte) *InputError {
	if len(text) == 0 || text[0] != '{' || text[len(text)-1] != '}' {
		return inputError(ErrMalformedJSON, -1, -1, "not a whole JSON object: %s", describeEnds(text))
	}
	return nil
}

// skip applies the prefilter, unless every value is to be validated.
func (s *Scanner) skip(text []byte) bool {
	if s.sel != nil {
		s.screened = !s.sel.MayContain(text)
		return s.screened
	}
	p := &s.m.prefilter
	if s.ws != nil {
		p = &s.ws.prefilter
	}
	if s.m.validate || p.mayMatch(text) {
		return false
	}
	s.screened = true
	return true
}

// decodeValue validates JSON text and evaluates every event in it.
func (s *Scanner) decodeValue(text []byte, res *Result) {
	top, err := s.validate(text, -1)
	if err != nil {
		res.fail(err)
		return
	}
	s.dispatch(text, top, res)
}

// dispatch recognises the shape of a decoded top-level object. The order
// matters where shapes share keys, and the reference evaluator follows the
// same order.
func (s *Scanner) dispatch(text []byte, top fields, res *Result) {
	keys := top.shapeKeys()
	switch {
	case keys&keyRecords != 0:
		res.Shape = ShapeS3Object
		records, ok := elementsOf(top.raw("Records"))
		if !ok {
			res.fail(inputError(ErrUnknownShape, -1, -1, "Records is not an array"))
			return
		}
		for i := 0; ; i++ {
			r, ok := records.next()
			if !ok {
				break
			}
			mark := s.arena.mark()
			s.evalRecord(r, i, res)
			s.arena.rewind(mark)
		}
	case keys&keyAWSLogs != 0:
		data, ok := top.object("awslogs").str("data")
		if !ok {
			res.Shape = ShapeCloudWatchLogs
			res.fail(inputError(ErrUnknownShape, -1, -1, "awslogs.data is not a string"))
			return
		}
		s.evalAWSLogs(unsafeBytes(data), res)
	case keys&keyLogEvents != 0:
		res.Shape = ShapeCloudWatchLogs
		s.evalLogEvents(top, res)
	case keys&keyDetail != 0 && keys&keyDetailType != 0:
		res.Shape = ShapeEventBridge
		s.evalRecord(top.raw("detail"), 0, res)
	case keys&keyEventName != 0:
		res.Shape = ShapeRecord
		s.evalFields(top, 0, res)
	case top.ecsHas("event.action"):
		res.Shape = ShapeECS
		if s.sel != nil {
			s.selectEvent(text, ShapeECS, 0)
			return
		}
		d := newECSDoc(text, top)
		for i := range s.m.compiled {
			if c := &s.m.compiled[i]; s.ecsMatches(c, d) {
				res.Findings = append(res.Findings, Finding{Rule: c.rule, Event: ecsEvent(d, c), Shape: ShapeECS})
			}
		}
	case keys&keyMessage != 0:
		res.Shape = ShapeAgentMessage
		msg, ok := top.str("message")
		if !ok {
			res.fail(inputError(ErrUnknownShape, -1, -1, "message is not a string"))
			return
		}
		s.evalRecordText(unsafeBytes(msg), 0, res)
	default:
		res.fail(inputError(ErrUnknownShape, -1, -1, "no Records, awslogs, logEvents, detail, eventName, event.action or message key"))
	}
}

// evalAWSLogs evaluates the data of an awslogs wrapper, base64 of gzip of a
// CloudWatch Logs payload and nothing else. Both ways to the wrapper (the
// canonical spelling and the decoder's branch) come here, so that they
// cannot take different branches on the same payload.
func (s *Scanner) evalAWSLogs(data []byte, res *Result) {
	res.Shape = ShapeCloudWatchLogs
	inflated, err := s.gunzipBase64(data)
	if err != nil {
		res.fail(err)
		return
	}
	inner := trimSpace(inflated)
	s.large = s.large || len(inner) > largeText
	if err := framing(inner); err != nil {
		res.fail(err)
		return
	}
	if s.skip(inner) {
		return
	}
	payload, err := s.validate(inner, -1)
	if err != nil {
		res.fail(err)
		return
	}
	if !payload.has("logEvents") {
		res.fail(inputError(ErrUnknownShape, -1, -1, "awslogs.data is not a CloudWatch Logs payload"))
		return
	}
	s.evalLogEvents(payload, res)
}

func (s *Scanner) evalLogEvents(payload fields, res *Result) {
	// CloudWatch Logs checks a subscription's destination with a
	// CONTROL_MESSAGE whose log events are not CloudTrail records.
	if payload.string("messageType") == "CONTROL_MESSAGE" {
		return
	}
	events, ok := elementsOf(payload.raw("logEvents"))
	if !ok {
		res.fail(inputError(ErrUnknownShape, -1, -1, "logEvents is not an array"))
		return
	}
	for i := 0; ; i++ {
		e, ok := events.next()
		if !ok {
			return
		}
		mark := s.arena.mark()
		s.evalLogEvent(e, i, res)
		s.arena.rewind(mark)
	}
}

func (s *Scanner) evalLogEvent(e []byte, i int, res *Result) {
	ev, ok := s.arena.object(e)
	if !ok {
		if res.Err == nil {
			res.fail(inputError(ErrUnknownShape, i, -1, "log event is not an object"))
		}
		return
	}
	msg, ok := ev.str("message")
	if !ok {
		if res.Err == nil {
			res.fail(inputError(ErrUnknownShape, i, -1, "log event has no message string"))
		}
		return
	}
	s.evalRecordText(unsafeBytes(msg), i, res)
}

// evalRecordText evaluates a record carried as a string, which has not been
// validated as JSON yet.
func (s *Scanner) evalRecordText(text []byte, index int, res *Result) {
	f, err := s.validate(text, index)
	if err != nil {
		res.fail(err)
		return
	}
	s.evalFields(f, index, res)
}

// evalRecord evaluates one CloudTrail record from validated JSON.
func (s *Scanner) evalRecord(raw []byte, index int, res *Result) {
	f, _ := s.arena.object(raw)
	s.evalFields(f, index, res)
}

// evalFields evaluates one indexed CloudTrail record. What every rule reads
// is computed once, when the first rule needs it: the event name, then the
// outcome, then the markers in the request parameters.
func (s *Scanner) evalFields(f fields, index int, res *Result) {
	if f.b == nil {
		if res.Err == nil {
			res.fail(inputError(ErrUnknownShape, index, -1, "record is not a JSON object"))
		}
		return
	}
	if s.sel != nil {
		s.selectEvent(f.b, res.Shape, index)
		return
	}
	r := &record{raw: f.b, f: f}
	name, _ := stringView(f.raw("eventName"), s.name[:0])
	var (
		outcome   string
		found     uint32
		haveFound bool
	)
	for i := range s.m.compiled {
		c := &s.m.compiled[i]
		if !c.wants(unsafeString(name)) {
			continue
		}
		if outcome == "" {
			outcome = s.outcome(f, name)
		}
		if outcome != c.outcome {
			continue
		}
		if !haveFound {
			found, haveFound = s.markersIn(f.raw("requestParameters")), true
		}
		if found&c.markers != 0 {
			res.Findings = append(res.Findings, Finding{Rule: c.rule, Event: recordEvent(r, outcome), Shape: res.Shape, Index: index})
		}
	}
	if s.ws != nil {
		s.evalWatch(f, r, name, outcome, index, res)
	}
}

// validate runs before anything reads the text: the indexer accepts what
// encoding/json.Valid accepts, nesting to 10,000 levels (FuzzIndexer), and
// nothing else ever decodes text it has not accepted; encoding/json then
// says what is wrong, for the error only. It returns the text's members
// when it is an object (fields.b is nil otherwise), so the text is read
// once.
func (s *Scanner) validate(text []byte, index int) (fields, *InputError) {
	if !utf8.Valid(text) {
		return fields{}, inputError(ErrBadEncoding, index, int64(firstInvalidUTF8(text)), "invalid UTF-8")
	}
	text = trimSpace(text)
	members, kind, errAt, over, count := s.arena.index(text, s.m.limits)
	s.walker.maxEntries = count
	if over != "" {
		return fields{}, inputError(ErrTooComplex, index, int64(errAt), "%s", s.m.overLimit(over))
	}
	if errAt < 0 {
		if kind != '{' {
			return fields{}, nil
		}
		return fields{b: text, members: members, arena: &s.arena}, nil
	}
	var v json.RawMessage
	err := json.Unmarshal(text, &v)
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fields{}, inputError(ErrMalformedJSON, index, syn.Offset, "%s", syn.Error())
	}
	return fields{}, inputError(ErrMalformedJSON, index, -1, "%v", err)
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// gunzipBase64 decodes base64 as RFC 4648 defines it, strictly: the
// standard alphabet, padding, zero pad bits and no other byte. Go's decoder
// skips CR and LF anywhere, which the prefilter's argument does not cover
// (it needs "H4sI" literally); AWS writes neither, so they are refused.
func (s *Scanner) gunzipBase64(text []byte) ([]byte, *InputError) {
	for _, c := range []byte{'\n', '\r'} {
		if i := bytes.IndexByte(text, c); i >= 0 {
			return nil, inputError(ErrBadCompression, -1, -1, "base64: line break at byte %d", i)
		}
	}
	n := base64.StdEncoding.DecodedLen(len(text))
	if n > s.m.maxDecodedBytes {
		return nil, inputError(ErrTooLarge, -1, -1, "base64 payload of %d bytes, limit %d", len(text), s.m.maxDecodedBytes)
	}
	if cap(s.b64) < n {
		s.b64 = make([]byte, n)
	}
	n, err := strictBase64.Decode(s.b64[:n], text)
	if err != nil {
		return nil, inputError(ErrBadCompression, -1, -1, "base64: %v", err)
	}
	return s.gunzip(s.b64[:n])
}

// strictBase64 refuses non-zero pad bits (RFC 4648 section 3.5).
var strictBase64 = base64.StdEncoding.Strict()

// gunzip inflates into the Scanner's buffer, which is valid until the next
// call. The buffer is sized once from the gzip trailer's ISIZE, bounded by
// the limit and by DEFLATE's best ratio (about 1032 to 1), so that a large
// payload is not copied through a doubling buffer.
func (s *Scanner) gunzip(b []byte) ([]byte, *InputError) {
	var err error
	s.gzInput.Reset(b)
	if s.gz == nil {
		s.gz, err = gzip.NewReader(&s.gzInput)
	} else {
		err = s.gz.Reset(&s.gzInput)
	}
	if err != nil {
		return nil, inputError(ErrBadCompression, -1, -1, "gzip: %v", err)
	}
	limit := s.m.maxDecodedBytes
	size := 0
	if len(b) >= 4 {
		size = int(binary.LittleEndian.Uint32(b[len(b)-4:]))
	}
	size = min(size, limit, 1032*len(b)) + 1 // room to see the end
	buf := s.inflated[:0]
	if cap(buf) < size {
		// Doubling, within the limit, so that payloads growing a little
		// at a time do not each cost a new buffer.
		buf = make([]byte, 0, max(size, min(2*cap(buf), limit+1)))
	}
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				s.inflated = buf[:0]
				return nil, inputError(ErrTooLarge, -1, -1, "gzip payload inflates past %d bytes", limit)
			}
			buf = slices.Grow(buf, min(len(buf), limit+1-len(buf)))
		}
		n, err := s.gz.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			s.inflated = buf[:0]
			return nil, inputError(ErrBadCompression, -1, -1, "gzip: %v", err)
		}
	}
	s.inflated = buf[:0]
	s.large = s.large || cap(buf) > keepBytes // an ISIZE can promise more than came
	if len(buf) > limit {
		return nil, inputError(ErrTooLarge, -1, -1, "gzip payload inflates past %d bytes", limit)
	}
	return buf, nil
}

func (r *Result) fail(err *InputError) {
	if r.Err == nil {
		r.Err = err
	}
}

// describeEnds shows both ends of a value that failed the framing check,
// which is what a person needs to tell truncation from the wrong data.
func describeEnds(b []byte) string {
	const n = 16
	switch {
	case len(b) == 0:
		return "empty"
	case len(b) <= 2*n:
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("starts %q, ends %q", b[:n], b[len(b)-n:])
}

var (
	awslogsPrefix = []byte(`{"awslogs":{"data":"`)
	awslogsSuffix = []byte(`"}}`)
)

// canonicalAWSLogs returns the data of an awslogs wrapper written exactly as
// {"awslogs":{"data":"<base64>"}}, or nil. Data of base64 characters alone
// is what the decoder would read from such text, character for character;
// any other spelling (spaces, more keys, escapes, other bytes) takes the
// decoder, which reaches the same evalAWSLogs.
func canonicalAWSLogs(text []byte) []byte {
	if len(text) < len(awslogsPrefix)+len(awslogsSuffix) || !bytes.HasPrefix(text, awslogsPrefix) || !bytes.HasSuffix(text, awslogsSuffix) {
		return nil
	}
	data := text[len(awslogsPrefix) : len(text)-len(awslogsSuffix)]
	for _, c := range data {
		if !base64Char[c] {
			return nil
		}
	}
	return data
}

// base64Char marks the standard base64 alphabet and its padding.
var base64Char = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") {
		t[c] = true
	}
	return t
}()
