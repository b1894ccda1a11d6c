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
// The package imports no Kafka client and no output format: it can be
// fuzzed, benchmarked and used offline on its own. What a finding looks like
// on the wire is package producer's business.
package matcher

import (
	"errors"
	"fmt"
)

// Defaults for Config.
const (
	DefaultMaxValueBytes   = 1 << 20  // Kafka's default max.message.bytes
	DefaultMaxDecodedBytes = 32 << 20 // a CloudWatch Logs batch decompresses to at most a few MB
)

// Config says what to match and how much input to accept.
type Config struct {
	// Rules to evaluate; nil means ElasticQuarantineRule alone.
	Rules []*Rule
	// MaxValueBytes rejects larger record values with ErrTooLarge.
	MaxValueBytes int
	// MaxDecodedBytes rejects compressed payloads that inflate past it (a
	// decompression bomb) with ErrTooLarge.
	MaxDecodedBytes int
	// Validate fully validates every value, not only those the prefilter
	// passes, so that every malformed record is reported. It costs a full
	// JSON scan of every record.
	Validate bool
}

// Matcher holds the immutable configuration shared by all Scanners: the
// rules as New compiled them.
type Matcher struct {
	rules    []*Rule
	compiled []compiledRule
	// markers are the distinct markers of the rules; a compiledRule names
	// its own by their bit.
	markers         [][]byte
	prefilter       prefilter
	maxValueBytes   int
	maxDecodedBytes int
	validate        bool
}

// New validates cfg and compiles the rules: everything the evaluation
// derives from them (the prefilter's markers, anchors and suspect set, the
// predicates) is computed here, once. It returns an error, never panics,
// when a rule cannot be served soundly (see checkMarker).
func New(cfg Config) (*Matcher, error) {
	m := &Matcher{
		rules:           cfg.Rules,
		maxValueBytes:   cfg.MaxValueBytes,
		maxDecodedBytes: cfg.MaxDecodedBytes,
		validate:        cfg.Validate,
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
	m.prefilter = newPrefilter(m.markers)
	if m.maxValueBytes == 0 {
		m.maxValueBytes = DefaultMaxValueBytes
	}
	if m.maxDecodedBytes == 0 {
		m.maxDecodedBytes = DefaultMaxDecodedBytes
	}
	if m.maxValueBytes < 0 || m.maxDecodedBytes < 0 {
		return nil, fmt.Errorf("matcher: size limits must be positive, got value %d, decoded %d", m.maxValueBytes, m.maxDecodedBytes)
	}
	return m, nil
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
