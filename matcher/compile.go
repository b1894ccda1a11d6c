package matcher

import (
	"errors"
	"fmt"
	"slices"
)

// compiledRule is a Rule's Match as New compiles it: what the predicates
// test, with the markers named by their bit in Matcher.markers.
type compiledRule struct {
	rule    *Rule
	actions []string
	outcome string
	markers uint32
}

// maxMarkers is how many distinct markers the enabled rules may have: a
// record's markers are a bit set.
const maxMarkers = 32

// compileRules checks the rules and compiles them, and returns the distinct
// markers they search, in the order the rules name them.
func compileRules(rules []*Rule) ([]compiledRule, [][]byte, error) {
	var (
		out     []compiledRule
		markers [][]byte
		ids     = map[string]bool{}
		keys    = map[string]bool{}
	)
	for _, r := range rules {
		if r == nil {
			return nil, nil, errors.New("matcher: a nil rule")
		}
		if r.Watch != nil {
			return nil, nil, fmt.Errorf("matcher: rule %q (%s) is a post-quarantine rule: it is on whenever a watchlist is set (Matcher.SetWatchlist), not in Config.Rules", r.Name, r.ID)
		}
		if r.ID == "" || r.Key == "" || r.Name == "" {
			return nil, nil, fmt.Errorf("matcher: rule %q (%s): a rule needs an ID, a Key and a Name", r.Name, r.ID)
		}
		if ids[r.ID] || keys[r.Key] {
			return nil, nil, fmt.Errorf("matcher: rule %q (%s): its ID or Key is another enabled rule's", r.Name, r.ID)
		}
		ids[r.ID], keys[r.Key] = true, true
		c, err := compileMatch(r, &markers)
		if err != nil {
			return nil, nil, fmt.Errorf("matcher: rule %q (%s): %w", r.Name, r.ID, err)
		}
		out = append(out, c)
	}
	return out, markers, nil
}

func compileMatch(r *Rule, markers *[][]byte) (compiledRule, error) {
	m := &r.Match
	c := compiledRule{rule: r, actions: slices.Clone(m.Actions), outcome: m.Outcome}
	if len(m.Actions) == 0 || slices.Contains(m.Actions, "") {
		return c, errors.New("Match.Actions must name one or more event names")
	}
	switch m.Outcome {
	case OutcomeSuccess, OutcomeFailure:
	default:
		return c, fmt.Errorf("Match.Outcome %q is neither %q nor %q", m.Outcome, OutcomeSuccess, OutcomeFailure)
	}
	if m.Field != FieldRequestParameters {
		return c, fmt.Errorf("Match.Field %q: only %q is served", m.Field, FieldRequestParameters)
	}
	if len(m.Markers) == 0 {
		return c, errors.New("Match.Markers is empty: every rule needs a marker for the prefilter to search")
	}
	for _, mk := range m.Markers {
		if err := checkMarker(mk); err != nil {
			return c, err
		}
		i := slices.IndexFunc(*markers, func(have []byte) bool { return string(have) == mk })
		if i < 0 {
			if len(*markers) == maxMarkers {
				return c, fmt.Errorf("more than %d distinct markers among the enabled rules", maxMarkers)
			}
			i = len(*markers)
			*markers = append(*markers, []byte(mk))
		}
		c.markers |= 1 << i
	}
	return c, nil
}

// checkMarker refuses a marker the matcher cannot search soundly:
//   - shorter than two bytes (the prefilter anchors on a byte pair);
//   - a byte outside printable ASCII: the prefilter's argument takes an
//     escape of a code point past ASCII as harmless, and a control byte
//     is never literal in JSON;
//   - '"', '\' or '/': JSON may only or also write them as a short escape
//     (\" \\ \/), so the marker would not be in the bytes literally;
//   - ' ', ',', '=', '{', '}', '[' or ']': Elastic's flattened text puts
//     them between keys and values, so stringContains over it would no
//     longer be "one key or value contains the marker", which the matcher
//     tests.
func checkMarker(m string) error {
	if len(m) < 2 {
		return fmt.Errorf("marker %q: shorter than two bytes", m)
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		switch {
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("marker %q: byte %#x at %d is not printable ASCII", m, c, i)
		case c == '"' || c == '\\' || c == '/':
			return fmt.Errorf("marker %q: %q at %d has a short JSON escape", m, c, i)
		case c == ',' || c == '=' || c == '{' || c == '}' || c == '[' || c == ']':
			return fmt.Errorf("marker %q: %q at %d separates keys and values in Elastic's flattened text", m, c, i)
		}
	}
	return nil
}

// wants reports whether the rule accepts the event name.
func (c *compiledRule) wants(name string) bool {
	for _, a := range c.actions {
		if name == a {
			return true
		}
	}
	return false
}
