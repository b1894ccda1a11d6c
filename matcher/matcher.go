// Package matcher decides which CloudTrail events are findings.
//
// It takes Kafka record values as bytes, recognises the shape CloudTrail was
// delivered in (a record, an S3 log object, an EventBridge envelope, a
// CloudWatch Logs subscription payload, an Elastic Agent event, an ECS
// document), and evaluates the enabled rules on every event inside. The
// default rule is Elastic's "AWS IAM CompromisedKeyQuarantine Policy Attached
// to User", evaluated exactly as Elastic evaluates it over its own CloudTrail
// mapping.
//
// Almost no record can match, so a sound prefilter (see prefilter.go)
// rejects those without decoding them. The rest are validated by the
// package's own JSON indexer, which records where each member of an object
// is, and only the strings the rules read are decoded, by the package's own
// string decoder: nothing decodes whole documents. (goccy/go-json did the
// string decoding until BenchmarkUnquote showed it three times slower than
// appendUnquoted and allocating where it does not.) A value that the
// prefilter rejects is checked for its size and framing only: a syntax
// error deep inside a record that cannot be a finding is not reported
// unless Config.Validate asks for it.
//
// Scanner.Select reads values the same way for another purpose: with an
// IdentityFilter (identity.go) in place of the rules' prefilter, it returns
// the events that can name a user or access key, which package lookback
// (matcher/lookback) summarizes into the case file's look-back.
//
// The package imports no Kafka client and no output format: it can be
// fuzzed, benchmarked and used offline on its own. What a finding looks like
// on the wire is package producer's business.
package matcher

import (
	"cmp"
	"errors"
	"fmt"
	"sync/atomic"
)

// Defaults for Config. The limits on a JSON document are far above what
// real CloudTrail holds: the 667 public records of ../shared/corpus nest 11
// levels at most and hold at most 173 members and 21 elements each, 35
// bytes of JSON per member or element on average, so that a CloudTrail log
// file of 1 MB compressed (about 15 MB inflated) holds some 400,000.
const (
	DefaultMaxValueBytes   = 1 << 20  // Kafka's default max.message.bytes
	DefaultMaxDecodedBytes = 32 << 20 // a CloudWatch Logs batch decompresses to at most a few MB
	DefaultMaxDepth        = 512
	DefaultMaxMembers      = 1 << 20
	DefaultMaxElements     = 1 << 20
)

// maxBytes bounds MaxValueBytes and MaxDecodedBytes: the index keeps 32-bit
// offsets.
const maxBytes = 1 << 30

// Config says what to match and how much input to accept.
type Config struct {
	// Rules to evaluate; nil means ElasticQuarantineRule alone.
	Rules []*Rule
	// MaxValueBytes rejects larger record values with ErrTooLarge.
	MaxValueBytes int
	// MaxDecodedBytes rejects compressed payloads that inflate past it (a
	// decompression bomb) with ErrTooLarge.
	MaxDecodedBytes int
	// MaxDepth, MaxMembers and MaxElements limit each JSON document a value
	// holds (the value itself, a CloudWatch Logs payload, a record carried
	// as a string): how deep it nests, how many object members and how many
	// array elements it has in all. A document past one is refused with
	// ErrTooComplex, so that what the index and the search hold per value,
	// and the time they take, stay bounded.
	MaxDepth, MaxMembers, MaxElements int
	// Validate fully validates every value, not only those the prefilter
	// passes, so that every malformed record is reported. It costs a full
	// JSON scan of every record.
	Validate bool
}

// Matcher holds the configuration shared by all Scanners: the rules as New
// compiled them, immutable, and the current watchlist (SetWatchlist), which
// each Match reads once through an atomic pointer.
type Matcher struct {
	rules    []*Rule
	compiled []compiledRule
	// markers are the distinct markers of the rules; a compiledRule names
	// its own by their bit.
	markers         [][]byte
	prefilter       prefilter
	maxValueBytes   int
	maxDecodedBytes int
	limits          limits
	validate        bool
	// watch is the current watchlist with its prefilter; nil for none.
	watch atomic.Pointer[watchState]
}

// New validates cfg and compiles the rules: everything the evaluation
// derives from them (the prefilter's markers, anchors and suspect set, the
// predicates) is computed here, once. It returns an error, never panics,
// when a rule cannot be served soundly (see checkMarker).
func New(cfg Config) (*Matcher, error) {
	m := &Matcher{
		rules:           cfg.Rules,
		maxValueBytes:   cmp.Or(cfg.MaxValueBytes, DefaultMaxValueBytes),
		maxDecodedBytes: cmp.Or(cfg.MaxDecodedBytes, DefaultMaxDecodedBytes),
		limits: limits{
			depth:    cmp.Or(cfg.MaxDepth, DefaultMaxDepth),
			members:  cmp.Or(cfg.MaxMembers, DefaultMaxMembers),
			elements: cmp.Or(cfg.MaxElements, DefaultMaxElements),
		},
		validate: cfg.Validate,
	}
	if m.rules == nil {
		m.rules = []*Rule{ElasticQuarantineRule}
	}
	if len(m.rules) == 0 {
		return nil, errors.New("matcher: no rule to evaluate")
	}
	var err error
	if m.compiled, m.markers, err = compileRules(m.rules); err != nil {
		return nil, err
	}
	m.prefilter = newPrefilter(m.markers, nil)
	for _, l := range []struct {
		name     string
		v, limit int
	}{
		{"MaxValueBytes", m.maxValueBytes, maxBytes},
		{"MaxDecodedBytes", m.maxDecodedBytes, maxBytes},
		{"MaxDepth", m.limits.depth, jsonMaxDepth},
		{"MaxMembers", m.limits.members, maxBytes},
		{"MaxElements", m.limits.elements, maxBytes},
	} {
		if l.v < 0 || l.v > l.limit {
			return nil, fmt.Errorf("matcher: %s is %d, want 1 to %d (0: the default)", l.name, l.v, l.limit)
		}
	}
	return m, nil
}

// overLimit says which limit a document went past (indexer.over).
func (m *Matcher) overLimit(over string) string {
	switch over {
	case "depth":
		return fmt.Sprintf("a JSON document nests deeper than %d levels (MaxDepth)", m.limits.depth)
	case "members":
		return fmt.Sprintf("a JSON document has more than %d object members (MaxMembers)", m.limits.members)
	}
	return fmt.Sprintf("a JSON document has more than %d array elements (MaxElements)", m.limits.elements)
}

// Rules returns the rules this Matcher evaluates.
func (m *Matcher) Rules() []*Rule { return m.rules }

// Result is what one record value produced.
type Result struct {
	// Findings in the order of the events in the value.
	Findings []Finding
	// Err is set when the value, or some event inside it, could not be
	// evaluated; it is always an *InputError. Findings from the other events
	// are still reported.
	Err error
	// Shape is the shape the value was recognised as, when it was decoded.
	Shape Shape
}
