// Package cloudtrailgen generates realistic AWS CloudTrail traffic as Kafka
// record values, deterministically from a seed, and says for every value
// which events it holds and which of them Elastic's rule "AWS IAM
// CompromisedKeyQuarantine Policy Attached to User" must report.
//
// It is the ground truth for tests and benchmarks of the matcher, so it
// decides what an event is from the way it built it, never by parsing, and it
// imports no other package of this project. It writes every delivery shape
// CloudTrail takes on its way into Kafka (a single record, an S3 log file,
// an EventBridge envelope, a CloudWatch Logs subscription payload gzipped,
// base64'd, wrapped or decoded, an Elastic Agent event and an ECS document
// already normalised by Elastic's ingest pipeline), near misses of the rule,
// and malformed values.
//
// It does not talk to Kafka or to anything else: addresses are
// documentation ranges written as strings, and keys and ids are random
// placeholders. Its records are realistic, not real: field values, sizes and
// mixes are modelled on the samples in shared/samples and on AWS
// documentation, not measured from a production trail.
package cloudtrailgen

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Shape is the delivery shape of a record value. The values ShapeUnknown to
// ShapeECS have the same order and String names as the matcher's shapes; the
// encoded CloudWatch Logs variants come after them and Envelope maps them to
// ShapeCloudWatchLogs.
type Shape uint8

// The delivery shapes.
const (
	ShapeUnknown           Shape = iota // no shape: empty or non-JSON (malformed values only)
	ShapeRecord                         // one CloudTrail record
	ShapeS3Object                       // a CloudTrail log file: {"Records":[...]}
	ShapeEventBridge                    // an EventBridge envelope, the record under "detail"
	ShapeCloudWatchLogs                 // a CloudWatch Logs subscription payload, decoded JSON
	ShapeAgentMessage                   // an Elastic Agent / Filebeat event, the record as a string in "message"
	ShapeECS                            // an ECS document made by Elastic's CloudTrail ingest pipeline
	ShapeCloudWatchGzip                 // the CloudWatch Logs payload as gzip bytes, as Firehose/Kinesis deliver it
	ShapeCloudWatchBase64               // base64 of the gzip bytes
	ShapeCloudWatchAWSLogs              // {"awslogs":{"data":"<base64 of gzip>"}}, as Lambda receives it
	numShapes
)

var shapeNames = [numShapes]string{
	"unknown", "record", "s3_object", "eventbridge", "cloudwatch_logs", "agent_message", "ecs",
	"cloudwatch_logs_gzip", "cloudwatch_logs_base64", "cloudwatch_logs_awslogs",
}

func (s Shape) String() string {
	if s < numShapes {
		return shapeNames[s]
	}
	return fmt.Sprintf("Shape(%d)", s)
}

// Envelope is the shape with the CloudWatch Logs encodings folded into
// ShapeCloudWatchLogs: what a matcher reports after decoding.
func (s Shape) Envelope() Shape {
	switch s {
	case ShapeCloudWatchGzip, ShapeCloudWatchBase64, ShapeCloudWatchAWSLogs:
		return ShapeCloudWatchLogs
	}
	return s
}

// DefaultShapes returns the shape weights used when Config.Shapes is nil:
// mostly single records, a few percent of each other shape.
func DefaultShapes() map[Shape]float64 {
	return map[Shape]float64{
		ShapeRecord:            0.83,
		ShapeS3Object:          0.04,
		ShapeEventBridge:       0.04,
		ShapeCloudWatchLogs:    0.005,
		ShapeCloudWatchGzip:    0.005,
		ShapeCloudWatchBase64:  0.005,
		ShapeCloudWatchAWSLogs: 0.005,
		ShapeAgentMessage:      0.04,
		ShapeECS:               0.03,
	}
}

// Kind is what an event is with respect to the Elastic rule.
type Kind uint8

// The kinds of event. Quarantine, EmptyErrorCode and EscapedQuarantine are
// the rule's positives; the kinds after them are near misses, which the rule
// must not report.
const (
	// Noise is ordinary traffic: EC2, S3, STS, KMS, IAM reads, Lambda,
	// CloudTrail, Logs, sign-in, DynamoDB, SSM, Secrets Manager, ECR, ELB.
	Noise Kind = iota
	// Quarantine is a successful AttachUserPolicy of a V1–V4 quarantine
	// policy by "AWS Internal".
	Quarantine
	// EmptyErrorCode is a Quarantine whose record has "errorCode":"" (and
	// sometimes "errorMessage":"" or null): empty values do not make a
	// failure, so it is a positive.
	EmptyErrorCode
	// EscapedQuarantine is a Quarantine whose JSON spells eventName, the
	// policy ARN or a key with \u escapes (e.g. "\u0041ttachUserPolicy",
	// "AWSCompromisedKey\u0051uarantine", "policy\/..."): the same values,
	// so a positive, but not the same bytes.
	EscapedQuarantine
	// FailedQuarantineAttach is a quarantine AttachUserPolicy with a
	// non-empty errorCode, errorMessage or both.
	FailedQuarantineAttach
	// QuarantineDetach is a successful DetachUserPolicy, DetachRolePolicy or
	// DetachGroupPolicy of a quarantine policy.
	QuarantineDetach
	// QuarantineRoleOrGroupAttach is a successful AttachRolePolicy or
	// AttachGroupPolicy of a quarantine policy.
	QuarantineRoleOrGroupAttach
	// LegacyInlineQuarantine is the pre-2020 mechanism: PutUserPolicy of the
	// inline policy AWSExposedCredentialPolicy_DO_NOT_REMOVE (sample 10).
	LegacyInlineQuarantine
	// OtherPolicyAttach is a successful AttachUserPolicy of another policy.
	OtherPolicyAttach
	// MarkerOutsideParams is a successful AttachUserPolicy of another policy
	// with the marker elsewhere: the userAgent, the caller's role name or
	// responseElements.
	MarkerOutsideParams
	// CaseMismatch is a successful AttachUserPolicy of a policy whose name
	// is the marker in another case: the rule is case-sensitive.
	CaseMismatch
	numKinds
)

var kindNames = [numKinds]string{
	"noise", "quarantine", "empty_error_code", "escaped_quarantine", "failed_quarantine_attach",
	"quarantine_detach", "quarantine_role_or_group_attach", "legacy_inline_quarantine",
	"other_policy_attach", "marker_outside_params", "case_mismatch",
}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Positive reports whether the Elastic rule must report an event of kind k.
func (k Kind) Positive() bool {
	return k == Quarantine || k == EmptyErrorCode || k == EscapedQuarantine
}

// RuleKey is the key (matcher.Rule.Key) of the rule that must report an
// event of kind k when every shipped rule is enabled, or "" when none must.
// It is the ground truth the generator makes each kind to, written here
// beside the kinds rather than in each test that checks a matcher.
func (k Kind) RuleKey() string {
	switch k {
	case Quarantine, EmptyErrorCode, EscapedQuarantine:
		return "elastic"
	case FailedQuarantineAttach:
		return "attach-failed"
	case QuarantineDetach:
		return "detached"
	case QuarantineRoleOrGroupAttach:
		return "role-group-attached"
	case LegacyInlineQuarantine:
		return "legacy-inline"
	}
	return ""
}

// Defect is why a malformed record value is not valid input.
type Defect uint8

// The defects, drawn evenly. Each one makes the value invalid for any
// correct JSON or gzip decoder, but note that Go's encoding/json (v1) does
// not check UTF-8: json.Valid accepts DefectInvalidUTF8.
const (
	DefectNone        Defect = iota
	DefectTruncated          // a record cut short
	DefectInvalidUTF8        // invalid UTF-8 bytes inside a string
	DefectNUL                // a raw NUL byte inside a string
	DefectBadGzip            // a gzip header followed by an invalid deflate stream
	DefectNotJSON            // a line of text (syslog, logfmt, HTML)
	DefectEmpty              // a zero-length value
	DefectTooDeep            // arrays nested 10,000 deep and never closed
	numDefects
)

var defectNames = [numDefects]string{"none", "truncated", "invalid_utf8", "nul", "bad_gzip", "not_json", "empty", "too_deep"}

func (d Defect) String() string {
	if d < numDefects {
		return defectNames[d]
	}
	return fmt.Sprintf("Defect(%d)", d)
}

// Config says what traffic to generate. The zero Config, with a seed, gives
// a realistic mix with no positives, no near misses and nothing malformed.
type Config struct {
	// Seed makes the traffic: the same Config gives the same records.
	Seed int64
	// QuarantineRate is the fraction of events that are the rule's
	// positives: 80% Quarantine, 10% EmptyErrorCode, 10% EscapedQuarantine.
	QuarantineRate float64
	// NearMissRate is the fraction of events that are near misses, the
	// kinds from FailedQuarantineAttach to CaseMismatch, evenly.
	NearMissRate float64
	// MalformedRate is the fraction of record values that are malformed.
	MalformedRate float64
	// Shapes weighs the delivery shapes of well-formed values; the weights
	// need not sum to 1. Nil means DefaultShapes.
	Shapes map[Shape]float64
	// Start is the eventTime of the first event; zero means
	// 2024-11-01T00:00:00Z. Event times advance by 0–20 ms per event.
	Start time.Time
	// Dense makes a stream in which every record value yields exactly one
	// output of a matcher on its defaults (the Elastic rule alone, the
	// prefilter on, no full validation): a finding or a dead letter. An
	// exactly-once oracle over such a stream sees every record, not the one
	// in a hundred that is a finding. A well-formed value holds exactly one
	// positive event, whatever its shape (the other events of an S3 object
	// or a CloudWatch Logs payload are noise or near misses, and there is no
	// CONTROL_MESSAGE); a malformed value (MalformedRate) is malformed in a
	// way its own bytes show to a matcher that validates only candidates: it
	// fails the framing check (empty, not an object, cut short before a
	// closing brace, nested too deep), is gzip that does not inflate, or
	// holds the rule's marker literally, so that it is validated. Dense
	// requires QuarantineRate 0: every well-formed value is a positive.
	Dense bool
}

// Validate reports the first field of c that is out of range.
func (c Config) Validate() error {
	for _, r := range []struct {
		name string
		v    float64
	}{{"QuarantineRate", c.QuarantineRate}, {"NearMissRate", c.NearMissRate}, {"MalformedRate", c.MalformedRate}} {
		if !(r.v >= 0 && r.v <= 1) {
			return fmt.Errorf("cloudtrailgen: %s %v is not in [0, 1]", r.name, r.v)
		}
	}
	if c.Dense && c.QuarantineRate != 0 {
		return fmt.Errorf("cloudtrailgen: QuarantineRate %v with Dense: every well-formed value of a dense stream is a positive; leave it 0", c.QuarantineRate)
	}
	if c.QuarantineRate+c.NearMissRate > 1 {
		return fmt.Errorf("cloudtrailgen: QuarantineRate %v + NearMissRate %v exceed 1", c.QuarantineRate, c.NearMissRate)
	}
	if c.Shapes != nil {
		sum := 0.0
		for s, w := range c.Shapes {
			if s == ShapeUnknown || s >= numShapes {
				return fmt.Errorf("cloudtrailgen: Shapes has invalid shape %v", s)
			}
			if !(w >= 0) || math.IsInf(w, 0) {
				return fmt.Errorf("cloudtrailgen: Shapes[%v] weight %v is not a finite non-negative number", s, w)
			}
			sum += w
		}
		if sum == 0 {
			return errors.New("cloudtrailgen: Shapes has no positive weight")
		}
	}
	return nil
}

// Event is one CloudTrail event inside a record value.
type Event struct {
	EventID string
	Kind    Kind
	// EventName is the decoded eventName (also for EscapedQuarantine).
	EventName string
	// AccountID is recipientAccountId, the account the event belongs to.
	AccountID string
	// UserName and PolicyARN are requestParameters.userName and .policyArn
	// (decoded) of the IAM policy operations that make the positives and
	// near misses: the user and policy a finding names. They are empty for
	// Noise except its AttachRolePolicy calls, which set PolicyARN.
	UserName  string
	PolicyARN string
}

// Record is one Kafka record value and what it holds.
type Record struct {
	Value []byte
	// Shape is the delivery shape; for a malformed value, the shape it
	// imitates (ShapeUnknown for empty and non-JSON text).
	Shape Shape
	// Events are the CloudTrail events in Value, in order; empty when
	// Malformed, and for a CloudWatch Logs CONTROL_MESSAGE.
	Events []Event
	// Malformed is true when Value is not valid input; Defect says why.
	Malformed bool
	Defect    Defect
}

// Positives returns the eventIDs of the events the rule must report, in order.
func (r Record) Positives() []string {
	var ids []string
	for _, e := range r.Events {
		if e.Kind.Positive() {
			ids = append(ids, e.EventID)
		}
	}
	return ids
}

// Generator makes records. It is not safe for concurrent use; give each
// goroutine its own, with its own seed.
type Generator struct {
	cfg      Config
	src      *rand.PCG // the source of rng, for bits without the interface call
	rng      *rand.Rand
	idRng    *rand.PCG
	shapeCum [numShapes]float64
	opCum    []int

	ms      int64 // current event time, Unix milliseconds
	timeSec int64 // the second formatted in timeBuf
	timeBuf [20]byte
	ids     string // a chunk of pre-made eventIDs
	idPos   int
	events  []Event
	ev      eventState
	// positiveDue is set, in a dense stream, until the record being made
	// has its one positive event.
	positiveDue bool

	// Scratch buffers, reused from record to record: raw holds a record
	// that goes inside another document, aux a document before it is
	// reformatted or compressed, fill the growing field of a record, flat
	// the flattened request parameters of an ECS document, out Next's value.
	raw, aux, fill, flat, out []byte
	gz                        *gzip.Writer
	gzOut                     appendWriter
	fieldOrderBuf             [numFields - 1]field
	// paramsSpan is where the last record's requestParameters value is,
	// if paramsSeen.
	paramsSpan [2]int
	paramsSeen bool
}

// New returns a Generator for cfg. It panics if cfg.Validate fails: check
// the Config first where it comes from user input.
func New(cfg Config) *Generator {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	g := &Generator{
		cfg:   cfg,
		src:   rand.NewPCG(uint64(cfg.Seed), 0x9e3779b97f4a7c15),
		idRng: rand.NewPCG(uint64(cfg.Seed), 0xd1b54a32d192ed03),
	}
	g.rng = rand.New(g.src)
	shapes := cfg.Shapes
	if shapes == nil {
		shapes = DefaultShapes()
	}
	sum, last := 0.0, ShapeRecord
	for s := Shape(0); s < numShapes; s++ {
		sum += shapes[s]
		if shapes[s] > 0 {
			last = s
		}
	}
	acc := 0.0
	for s := Shape(0); s < numShapes; s++ {
		acc += shapes[s]
		g.shapeCum[s] = acc / sum
		if s >= last {
			g.shapeCum[s] = 1 // no rounding gap at the end
		}
	}
	g.opCum = make([]int, len(operations))
	n := 0
	for i := range operations {
		n += operations[i].weight
		g.opCum[i] = n
	}
	start := cfg.Start
	if start.IsZero() {
		start = time.Date(2024, 11, 1, 0, 0, 0, 0, time.UTC)
	}
	g.ms = start.UnixMilli()
	g.timeSec = math.MinInt64
	gz, _ := gzip.NewWriterLevel(&g.gzOut, gzip.BestSpeed) // the level is valid
	g.gz = gz
	return g
}

// Next returns the next record, with Value and Events owned by the caller.
func (g *Generator) Next() Record {
	r := g.AppendNext(g.out[:0])
	g.out = r.Value
	r.Value = append([]byte(nil), r.Value...)
	r.Events = append([]Event(nil), r.Events...)
	return r
}

// AppendNext appends the next record value to dst and returns the record
// with Value set to the extended dst, as append does: pass buf[:0] to reuse
// a buffer. Events is owned by the Generator and valid until the next call.
// Next and AppendNext draw from the same sequence.
func (g *Generator) AppendNext(dst []byte) Record {
	g.events = g.events[:0]
	g.positiveDue = g.cfg.Dense
	if g.cfg.MalformedRate > 0 && g.rng.Float64() < g.cfg.MalformedRate {
		return g.appendMalformed(dst)
	}
	u := g.rng.Float64()
	shape := ShapeRecord
	for s := ShapeRecord; s < numShapes; s++ {
		if u < g.shapeCum[s] {
			shape = s
			break
		}
	}
	switch shape {
	case ShapeRecord:
		dst = g.appendSingle(dst)
	case ShapeS3Object:
		dst = g.appendS3Object(dst)
	case ShapeEventBridge:
		dst = g.appendEventBridge(dst)
	case ShapeCloudWatchLogs:
		g.aux = g.appendCloudWatch(g.aux[:0])
		dst = g.appendFormatted(dst, g.aux)
	case ShapeCloudWatchGzip, ShapeCloudWatchBase64, ShapeCloudWatchAWSLogs:
		dst = g.appendCloudWatchEncoded(dst, shape)
	case ShapeAgentMessage:
		dst = g.appendAgentMessage(dst)
	case ShapeECS:
		dst = g.appendECS(dst)
	}
	return Record{Value: dst, Shape: shape, Events: g.events}
}

// nextID returns a new random (version 4) UUID as a string. IDs are made
// in chunks so that an eventID costs no allocation of its own.
func (g *Generator) nextID() string {
	const chunk = 256
	if g.idPos == len(g.ids) {
		var sb strings.Builder
		sb.Grow(chunk * 36)
		var b [36]byte
		for range chunk {
			sb.Write(appendUUID(b[:0], g.idRng))
		}
		g.ids, g.idPos = sb.String(), 0
	}
	id := g.ids[g.idPos : g.idPos+36]
	g.idPos += 36
	return id
}

// drawKind decides what the next event is. In a dense stream the first
// event of a record is its positive and the others are not.
func (g *Generator) drawKind() Kind {
	q, n := g.cfg.QuarantineRate, g.cfg.NearMissRate
	if g.positiveDue {
		g.positiveDue = false
		return g.drawPositive()
	}
	if q == 0 && n == 0 {
		return Noise
	}
	u := g.rng.Float64()
	switch {
	case u < q:
		return g.drawPositive()
	case u < q+n:
		return FailedQuarantineAttach + Kind(g.rng.IntN(int(numKinds-FailedQuarantineAttach)))
	}
	return Noise
}

// drawPositive draws the kind of a positive: 80% Quarantine, 10%
// EmptyErrorCode, 10% EscapedQuarantine.
func (g *Generator) drawPositive() Kind {
	switch v := g.rng.IntN(10); {
	case v == 0:
		return EmptyErrorCode
	case v == 1:
		return EscapedQuarantine
	}
	return Quarantine
}

// appendWriter is an io.Writer appending to a byte slice, for gzip.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
