// Package lookback summarizes what an IAM user did before a finding: the
// case file's look-back. Given the user (name and account), the finding's
// event time and a window length, it is offered the CloudTrail events that
// a matcher.IdentityFilter could not rule out, decides which of them are
// the user's activity, and summarizes those in the window.
//
// "The user's activity" is every event whose actor is the user (its IAM user
// ARN, in any partition and under any path, or an access key id seen for
// the user) and every event that acts on the user (requestParameters.userName
// is the user, in the user's account). A key is seen for the user when the
// user's own event used it, when a call created it for the user
// (responseElements.accessKey of CreateAccessKey), when a call by the user
// returned it (responseElements.credentials of GetSessionToken,
// GetFederationToken, AssumeRole) or when a call on the user named it
// (requestParameters.accessKeyId of UpdateAccessKey, DeleteAccessKey). So a
// federated session the user opened is the user's too: its events name the
// federated user, not the IAM user, and are found by the key alone (Stratus
// Red Team's sts-federation-token detonation is such a trail). Names are
// compared without regard to ASCII case, as IAM compares them.
//
// Keys are learned only from events in the window, so a summary never
// depends on what happened after the finding; learning a key can make more
// events the user's, which can teach more keys: Summary iterates to the
// fixed point, and Keys tells the caller which keys its search must add
// (the filter selects by bytes, and a key learned late may be in events
// already passed over: package scan reads its files again for them).
//
// It lives under matcher because it decides what events are, from bytes,
// like the matcher, and keeps its rules: no Kafka client, no output format
// (the ECS context document is package producer's), no internal/ package.
// It decodes the candidates with encoding/json: they are few (the filter
// passed them), and a decoder shared with no fast path keeps this a second
// opinion on what the filter selected.
//
// It does not read the stream, hold state across findings, or watch what
// the user does after the finding; those are the streaming look-back's and
// the watchlist's.
package lookback

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// DefaultLookback is the window before the finding that is summarized.
const DefaultLookback = 24 * time.Hour

// Subject is the IAM user whose activity is summarized.
type Subject struct {
	Account  string
	UserName string
}

// Config says whose activity to summarize, and when.
type Config struct {
	Subject Subject
	// End is the finding's event time: the window is [End-Lookback, End],
	// inclusive, because CloudTrail times have one-second resolution and
	// an event in the finding's second may have come before it.
	End      time.Time
	Lookback time.Duration
	// Exclude is the eventID of the finding's own event, which the alert
	// carries; it is not counted.
	Exclude string
}

// Summarizer collects candidate events and summarizes the subject's
// activity among them. It is not safe for concurrent use.
type Summarizer struct {
	cfg   Config
	start time.Time
	seen  map[string]bool // event keys offered so far
	// events are the candidates that could be the subject's: dated, in
	// the window, and not the finding.
	events []*event
	// Counts of candidates left out, by why.
	undated, unreadECS, malformed int
}

// New returns a Summarizer for cfg.
func New(cfg Config) (*Summarizer, error) {
	switch {
	case cfg.Subject.UserName == "":
		return nil, errors.New("lookback: no user name")
	case cfg.Subject.Account == "":
		return nil, errors.New("lookback: no account")
	case cfg.End.IsZero():
		return nil, errors.New("lookback: no end time")
	case cfg.Lookback <= 0:
		return nil, fmt.Errorf("lookback: look-back %v is not positive", cfg.Lookback)
	}
	return &Summarizer{cfg: cfg, start: cfg.End.Add(-cfg.Lookback), seen: map[string]bool{}}, nil
}

// Start is the window's start, End-Lookback.
func (s *Summarizer) Start() time.Time { return s.start }

// event is what the summary reads of one CloudTrail record.
type event struct {
	id, name, source, region, ip, agent, errorCode, outcome string
	time                                                    time.Time
	timeText                                                string
	account                                                 string // recipientAccountId, else the caller's account
	identType, arn, actorAccount, actorUser, actorKey       string
	paramUser, paramKey, policyARN                          string
	createdKey, createdKeyUser, returnedKey                 string
}

// Add offers one candidate (matcher.Candidate's text and shape). An event
// offered twice (the same eventID, or the same text when it has none) counts
// once, whichever shape it came in. It returns an error for text that is
// not a JSON object; the caller reports it (the filter passed it, so it
// could have been the subject's).
func (s *Summarizer) Add(text []byte, shape matcher.Shape) error {
	var doc map[string]any
	if err := json.Unmarshal(text, &doc); err != nil {
		s.malformed++
		return fmt.Errorf("lookback: %w", err)
	}
	if shape == matcher.ShapeECS {
		// Elastic keeps the record in event.original when asked to
		// (preserve_original_event); without it the document's own
		// fields would have to be read, which this version does not do.
		orig, ok := ecsOriginal(doc)
		if !ok {
			s.unreadECS++
			return nil
		}
		doc = nil
		if err := json.Unmarshal([]byte(orig), &doc); err != nil || doc == nil {
			s.malformed++
			return fmt.Errorf("lookback: event.original of an ECS document: not a JSON object")
		}
	}
	e := readEvent(doc)
	key := "id:" + e.id
	if e.id == "" {
		sum := sha256.Sum256(text)
		key = "sha256:" + hex.EncodeToString(sum[:])
	}
	if s.seen[key] {
		return nil
	}
	s.seen[key] = true
	if e.id != "" && e.id == s.cfg.Exclude {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, e.timeText)
	if err != nil {
		// Undated: counted only if it would be the subject's by the
		// identifiers it holds itself (a key learned later cannot be
		// checked against a time it does not have).
		if s.byARN(e) || s.onSubject(e) {
			s.undated++
		}
		return nil
	}
	e.time = t.UTC()
	if e.time.Before(s.start) || e.time.After(s.cfg.End) {
		return nil
	}
	s.events = append(s.events, e)
	return nil
}

func ecsOriginal(doc map[string]any) (string, bool) {
	if v, ok := doc["event.original"].(string); ok {
		return v, true
	}
	if ev, ok := doc["event"].(map[string]any); ok {
		if v, ok := ev["original"].(string); ok {
			return v, true
		}
	}
	return "", false
}

func readEvent(doc map[string]any) *event {
	e := &event{
		id:        str(doc, "eventID"),
		name:      str(doc, "eventName"),
		source:    str(doc, "eventSource"),
		region:    str(doc, "awsRegion"),
		ip:        str(doc, "sourceIPAddress"),
		agent:     str(doc, "userAgent"),
		errorCode: str(doc, "errorCode"),
		timeText:  str(doc, "eventTime"),
	}
	id, _ := doc["userIdentity"].(map[string]any)
	e.identType, e.arn = str(id, "type"), str(id, "arn")
	e.actorAccount, e.actorUser, e.actorKey = str(id, "accountId"), str(id, "userName"), str(id, "accessKeyId")
	e.account = cmp.Or(str(doc, "recipientAccountId"), e.actorAccount)
	params, _ := doc["requestParameters"].(map[string]any)
	e.paramUser, e.paramKey, e.policyARN = str(params, "userName"), str(params, "accessKeyId"), str(params, "policyArn")
	resp, _ := doc["responseElements"].(map[string]any)
	if ak, ok := resp["accessKey"].(map[string]any); ok {
		e.createdKey, e.createdKeyUser = str(ak, "accessKeyId"), str(ak, "userName")
	}
	if cr, ok := resp["credentials"].(map[string]any); ok {
		e.returnedKey = str(cr, "accessKeyId")
	}
	e.outcome = outcome(doc, resp)
	return e
}

// outcome is event.outcome as Elastic's CloudTrail pipeline sets it
// (docs/rules.md): failure when errorCode or errorMessage is present and
// not empty, and for ConsoleLogin responseElements.ConsoleLogin lowercased.
func outcome(doc, resp map[string]any) string {
	o := "success"
	if present(doc["errorCode"]) || present(doc["errorMessage"]) {
		o = "failure"
	}
	if str(doc, "eventName") == "ConsoleLogin" {
		if v := str(resp, "ConsoleLogin"); v != "" {
			o = strings.ToLower(v)
		}
	}
	return o
}

// present is whether a value survives Elastic's pruning of null and empty
// values (docs/rules.md).
func present(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case string:
		return v != ""
	case map[string]any:
		for _, x := range v {
			if present(x) {
				return true
			}
		}
		return false
	case []any:
		return slices.ContainsFunc(v, present)
	}
	return true
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// byARN reports whether e's actor is the subject by its ARN
// (arn:PARTITION:iam::ACCOUNT:user/PATH/NAME) or, lacking one, by the
// IAMUser identity's account and name.
func (s *Summarizer) byARN(e *event) bool {
	sub := s.cfg.Subject
	if e.arn != "" {
		parts := strings.SplitN(e.arn, ":", 6)
		if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" || parts[4] != sub.Account || !strings.HasPrefix(parts[5], "user/") {
			return false
		}
		res := parts[5]
		return strings.EqualFold(res[strings.LastIndexByte(res, '/')+1:], sub.UserName)
	}
	return e.identType == "IAMUser" && e.actorAccount == sub.Account && strings.EqualFold(e.actorUser, sub.UserName)
}

// onSubject reports whether e acts on the subject.
func (s *Summarizer) onSubject(e *event) bool {
	return e.account == s.cfg.Subject.Account && strings.EqualFold(e.paramUser, s.cfg.Subject.UserName)
}

// role says how an event is the subject's.
type role struct{ actor, target bool }

// members computes the fixed point: the subject's events in the window,
// and the keys seen for the subject in them.
func (s *Summarizer) members() (map[*event]role, map[string]bool) {
	keys := map[string]bool{}
	for {
		m := map[*event]role{}
		next := map[string]bool{}
		for _, e := range s.events {
			r := role{actor: s.byARN(e) || e.actorKey != "" && keys[e.actorKey], target: s.onSubject(e)}
			if !r.actor && !r.target {
				continue
			}
			m[e] = r
			if r.actor {
				add(next, e.actorKey)
				add(next, e.returnedKey)
			}
			if r.target {
				add(next, e.paramKey)
			}
			if e.createdKey != "" && strings.EqualFold(cmp.Or(e.createdKeyUser, e.paramUser), s.cfg.Subject.UserName) && (r.target || r.actor) {
				add(next, e.createdKey)
			}
		}
		if maps.Equal(keys, next) {
			return m, keys
		}
		keys = next
	}
}

// add learns a key. Only what can be an access key id is learned: the IAM
// API's AccessKeyId is 16 to 128 characters of [\w] (letters, digits,
// '_'), which the identity filter can search; anything else in the field
// is not a key and would not be one on AWS's side either.
func add(set map[string]bool, k string) {
	if len(k) < 16 || len(k) > 128 {
		return
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return
		}
	}
	set[k] = true
}

// Keys returns the access key ids seen for the subject in the events
// offered so far, sorted.
func (s *Summarizer) Keys() []string {
	_, keys := s.members()
	return slices.Sorted(maps.Keys(keys))
}

// Summary is the subject's activity in the window. Every list is sorted,
// so that the same events give the same summary byte for byte, whatever
// order they came in.
type Summary struct {
	// Events is how many events are the subject's; AsActor and AsTarget
	// split them (an event the subject made on itself is both).
	Events, AsActor, AsTarget int
	// Actions counts events by source and name, sorted by both.
	Actions []ActionCount
	// SourceIPs and UserAgents are sorted by value.
	SourceIPs  []Seen
	UserAgents []Seen
	// Regions is sorted by name.
	Regions []Count
	// AccessKeyIDs are the keys seen for the subject, sorted.
	AccessKeyIDs []string
	// Errors counts failed events by errorCode, sorted by code; a failure
	// without a code (errorMessage alone) counts under "".
	Errors []Count
	// Notable are the subject's events that NotableCalls names, sorted by
	// time, then eventID.
	Notable []Notable
	// Left out, and why: Undated events named the subject but had no
	// eventTime to place in the window; UnreadECS are ECS documents
	// without event.original; Malformed candidates were not JSON objects.
	Undated, UnreadECS, Malformed int
}

// ActionCount is the number of the subject's events of one API call.
type ActionCount struct {
	Source, Name string
	Count        int
}

// Seen is a value (a source address, a user agent) with the times it was
// first and last seen, in RFC 3339 UTC, and how often.
type Seen struct {
	Value       string
	First, Last time.Time
	Count       int
}

// Count is a value and how often it occurred.
type Count struct {
	Value string
	Count int
}

// Notable is a notable call in full.
type Notable struct {
	EventID, Source, Name, Outcome, ErrorCode, SourceIP string
	Time                                                time.Time
	// AsActor is set when the subject made the call, clear when another
	// principal made it on the subject.
	AsActor bool
	// Why is the NotableCall that named it.
	Why *NotableCall
}

// Summary summarizes the events offered so far.
func (s *Summarizer) Summary() Summary {
	m, keys := s.members()
	sum := Summary{
		AccessKeyIDs: slices.Sorted(maps.Keys(keys)),
		Undated:      s.undated,
		UnreadECS:    s.unreadECS,
		Malformed:    s.malformed,
	}
	actions := map[[2]string]int{}
	ips, agents := map[string]*Seen{}, map[string]*Seen{}
	regions, errs := map[string]int{}, map[string]int{}
	for _, e := range s.events {
		r, ok := m[e]
		if !ok {
			continue
		}
		sum.Events++
		if r.actor {
			sum.AsActor++
		}
		if r.target {
			sum.AsTarget++
		}
		actions[[2]string{e.source, e.name}]++
		seen(ips, e.ip, e.time)
		seen(agents, e.agent, e.time)
		if e.region != "" {
			regions[e.region]++
		}
		if e.outcome == "failure" {
			errs[e.errorCode]++
		}
		if why := notable(e); why != nil {
			sum.Notable = append(sum.Notable, Notable{
				EventID: e.id, Source: e.source, Name: e.name, Outcome: e.outcome, ErrorCode: e.errorCode,
				SourceIP: e.ip, Time: e.time, AsActor: r.actor, Why: why,
			})
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(actions), func(a, b [2]string) int {
		return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1]))
	}) {
		sum.Actions = append(sum.Actions, ActionCount{Source: k[0], Name: k[1], Count: actions[k]})
	}
	sum.SourceIPs, sum.UserAgents = sortedSeen(ips), sortedSeen(agents)
	sum.Regions, sum.Errors = sortedCounts(regions), sortedCounts(errs)
	slices.SortFunc(sum.Notable, func(a, b Notable) int {
		return cmp.Or(a.Time.Compare(b.Time), strings.Compare(a.EventID, b.EventID))
	})
	return sum
}

func seen(m map[string]*Seen, v string, t time.Time) {
	if v == "" {
		return
	}
	s, ok := m[v]
	if !ok {
		m[v] = &Seen{Value: v, First: t, Last: t, Count: 1}
		return
	}
	s.Count++
	if t.Before(s.First) {
		s.First = t
	}
	if t.After(s.Last) {
		s.Last = t
	}
}

func sortedSeen(m map[string]*Seen) []Seen {
	out := make([]Seen, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, *m[k])
	}
	return out
}

func sortedCounts(m map[string]int) []Count {
	out := make([]Count, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, Count{Value: k, Count: m[k]})
	}
	return out
}

// Collect offers s the candidates of as many passes over the input as the
// keys it learns require. pass makes one pass over the whole input with a
// filter, offering every candidate to s.Add. The first pass searches the
// user's name; each later one the keys learned since, because a record
// that holds a key and not the name was passed over before the key was
// known. It stops when a pass teaches no new key; there are at most as many
// passes as keys, plus one.
func Collect(s *Summarizer, pass func(*matcher.IdentityFilter) error) error {
	searched := map[string]bool{}
	next := []string{s.cfg.Subject.UserName}
	for len(next) > 0 {
		f, err := matcher.NewIdentityFilter(next)
		if err != nil {
			return fmt.Errorf("lookback: %w", err)
		}
		if err := pass(f); err != nil {
			return err
		}
		for _, id := range next {
			searched[id] = true
		}
		next = next[:0]
		for _, k := range s.Keys() {
			if !searched[k] {
				next = append(next, k)
			}
		}
	}
	return nil
}
