package producer

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/matcher/lookback"
)

// The context document is the case file's look-back: what the user an alert
// names did, and what was done to the user, in the window before the
// finding (package lookback computes it). It is an ECS document of
// event.kind "enrichment" (one of the field's allowed values in ECS 8.11,
// ../shared/schemas/ecs_fields_8.11.0.json) that carries the alert's id, so
// a SIEM joins it to the alert on quarantine_watch.alert_id. Everything in it comes from the
// finding and the summary, nothing from the clock, and every list is
// sorted: the same finding over the same input gives the same bytes, which
// is what lets a streaming look-back write it once under the alert id.
//
// The OCSF form (NewOCSFContext) is the alert's Detection Finding again,
// activity Update (type_uid 200402), with the summary in enrichments[]:
// OCSF 1.3.0 has no class for "what a principal did before a finding"
// (its activity classes are one event each, and nothing in the Findings
// category summarizes), but Detection Finding's Update activity is how a
// producer says more about a finding it already reported, under the same
// finding_info.uid, and its enrichments[] ("additional relevant details
// or context", each a name, a value and data of type json_t) is where
// context goes. So a SIEM that keeps OCSF findings by finding_info.uid
// sees the alert updated with its case file; one that does not, joins on
// it. docs/siem.md shows both.

// ECSContext is the ECS context document of one alert.
type ECSContext struct {
	// Timestamp is the window's end: the finding's event time.
	Timestamp       string                    `json:"@timestamp"`
	Message         string                    `json:"message"`
	ECS             ECSVersionField           `json:"ecs"`
	Event           ECSContextEvent           `json:"event"`
	Cloud           ECSCloud                  `json:"cloud"`
	User            ECSContextUser            `json:"user"`
	Related         *ECSRelated               `json:"related,omitempty"`
	QuarantineWatch ECSContextQuarantineWatch `json:"quarantine_watch"`
}

// ECSContextEvent is event.*: kind "enrichment", and the window as
// event.start and event.end.
type ECSContextEvent struct {
	Kind    string `json:"kind"`    // always "enrichment"
	Module  string `json:"module"`  // always "aws"
	Dataset string `json:"dataset"` // always "aws.cloudtrail"
	Start   string `json:"start"`
	End     string `json:"end"`
}

// ECSContextUser is user.*: the user the summary is about (the alert's
// user.target.name).
type ECSContextUser struct {
	Name string `json:"name"`
}

// ECSRelated is related.*: the addresses the user's calls came from that
// are IP addresses, and the user, for pivoting.
type ECSRelated struct {
	IP   []string `json:"ip,omitempty"`
	User []string `json:"user,omitempty"`
}

// ECSContextQuarantineWatch is quarantine_watch.* of a context document.
type ECSContextQuarantineWatch struct {
	SchemaVersion string `json:"schema_version"`
	// AlertID is the id of the alert the document belongs to (the ECS
	// alert's quarantine_watch.alert_id, EventAlertID).
	AlertID string         `json:"alert_id"`
	Rule    ECSContextRule `json:"rule"`
	Window  ECSWindow      `json:"window"`
	Summary ECSSummary     `json:"summary"`
}

// ECSContextRule names the rule whose finding the document is about.
type ECSContextRule struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// ECSWindow is the look-back window.
type ECSWindow struct {
	// Lookback is the window's length as asked (--context-lookback).
	Lookback string `json:"lookback"`
	Start    string `json:"start"`
	End      string `json:"end"`
	// DataStart is when the input read starts, when known; Cut is set when
	// that is after Start, or unknown: the window holds less than asked.
	DataStart string `json:"data_start,omitempty"`
	Cut       bool   `json:"cut"`
	// CutReason says why the window is cut, in words.
	CutReason string `json:"cut_reason,omitempty"`
}

// ECSSummary is lookback.Summary.
type ECSSummary struct {
	Events       int              `json:"events"`
	AsActor      int              `json:"as_actor"`
	AsTarget     int              `json:"as_target"`
	Actions      []ECSActionCount `json:"actions"`
	SourceIPs    []ECSSeen        `json:"source_ips"`
	UserAgents   []ECSSeen        `json:"user_agents"`
	Regions      []ECSCount       `json:"regions"`
	AccessKeyIDs []string         `json:"access_key_ids"`
	Errors       []ECSCount       `json:"errors"`
	Notable      []ECSNotable     `json:"notable"`
	LeftOut      ECSLeftOut       `json:"left_out"`
	// Truncated lists the lists Cut shortened to fit the topic, with
	// their whole lengths; the counts above are always whole.
	Truncated []ECSTruncated `json:"truncated,omitempty"`
}

// ECSTruncated is one list of the summary that was cut: Kept of Total
// entries remain.
type ECSTruncated struct {
	Field string `json:"field"`
	Total int    `json:"total"`
	Kept  int    `json:"kept"`
}

// ECSActionCount counts one API call.
type ECSActionCount struct {
	Provider string `json:"provider"` // eventSource
	Action   string `json:"action"`   // eventName
	Count    int    `json:"count"`
}

// ECSSeen is a value seen, when first and last, and how often.
type ECSSeen struct {
	Value     string `json:"value"`
	FirstSeen string `json:"first_seen"`
	LastSeen  string `json:"last_seen"`
	Count     int    `json:"count"`
}

// ECSCount is a value and how often it occurred.
type ECSCount struct {
	Value string `json:"value"`
	Count int    `json:"count"`
}

// ECSNotable is one notable call in full.
type ECSNotable struct {
	ID        string `json:"id"` // eventID
	Time      string `json:"time"`
	Provider  string `json:"provider"`
	Action    string `json:"action"`
	Outcome   string `json:"outcome"`
	ErrorCode string `json:"error_code,omitempty"`
	SourceIP  string `json:"source_ip,omitempty"`
	// By is "user" when the user made the call, "other" when another
	// principal made it on the user.
	By        string `json:"by"`
	Reason    string `json:"reason"`
	Technique string `json:"technique,omitempty"`
	Reference string `json:"reference"`
}

// ECSLeftOut counts what named the user but could not be summarized.
type ECSLeftOut struct {
	Undated   int `json:"undated"`
	UnreadECS int `json:"unread_ecs"`
	Malformed int `json:"malformed"`
}

// ContextWindow is the window a summary covers, as the caller read it.
type ContextWindow struct {
	Lookback   time.Duration
	Start, End time.Time
	// DataStart is when the input starts; zero when it could not be told.
	DataStart time.Time
}

// ErrNoTargetUser is returned for a finding that names no IAM user to
// summarize.
var ErrNoTargetUser = errors.New("producer: the finding names no IAM user")

// NewECSContext builds the context document of finding f.
func NewECSContext(f matcher.Finding, sum lookback.Summary, w ContextWindow) (*ECSContext, error) {
	if f.Rule == nil {
		return nil, ErrNoRule
	}
	e := &f.Event
	if e.TargetKind != matcher.TargetUser || e.TargetName == "" {
		return nil, ErrNoTargetUser
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	c := &ECSContext{
		Timestamp: ts(w.End),
		ECS:       ECSVersionField{Version: ECSVersion},
		Event:     ECSContextEvent{Kind: "enrichment", Module: "aws", Dataset: "aws.cloudtrail", Start: ts(w.Start), End: ts(w.End)},
		Cloud:     ECSCloud{Provider: "aws"},
		User:      ECSContextUser{Name: e.TargetName},
		QuarantineWatch: ECSContextQuarantineWatch{
			SchemaVersion: SchemaVersion,
			AlertID:       EventAlertID(f.Rule.ID, e),
			Rule:          ECSContextRule{ID: f.Rule.ID, Key: f.Rule.Key},
			Window:        ECSWindow{Lookback: w.Lookback.String(), Start: ts(w.Start), End: ts(w.End)},
		},
	}
	if acct := cmp.Or(e.RecipientAccountID, e.UserIdentity.AccountID); acct != "" {
		c.Cloud.Account = &ECSCloudAccount{ID: acct}
	}
	win := &c.QuarantineWatch.Window
	switch {
	case w.DataStart.IsZero():
		win.Cut, win.CutReason = true, "the start of the input could not be told: the window may hold less than asked"
	case w.DataStart.After(w.Start):
		win.DataStart = ts(w.DataStart)
		win.Cut = true
		win.CutReason = fmt.Sprintf("the input starts at %s, after the window's start: the first %s of the window were not read",
			ts(w.DataStart), w.DataStart.Sub(w.Start))
	default:
		win.DataStart = ts(w.DataStart)
	}
	s := ECSSummary{
		Events: sum.Events, AsActor: sum.AsActor, AsTarget: sum.AsTarget,
		Actions: []ECSActionCount{}, SourceIPs: []ECSSeen{}, UserAgents: []ECSSeen{}, Regions: []ECSCount{},
		AccessKeyIDs: append([]string{}, sum.AccessKeyIDs...), Errors: []ECSCount{}, Notable: []ECSNotable{},
		LeftOut: ECSLeftOut{Undated: sum.Undated, UnreadECS: sum.UnreadECS, Malformed: sum.Malformed},
	}
	for _, a := range sum.Actions {
		s.Actions = append(s.Actions, ECSActionCount{Provider: a.Source, Action: a.Name, Count: a.Count})
	}
	var ips []string
	for _, v := range sum.SourceIPs {
		s.SourceIPs = append(s.SourceIPs, ECSSeen{Value: v.Value, FirstSeen: ts(v.First), LastSeen: ts(v.Last), Count: v.Count})
		// CloudTrail puts a service name there for calls AWS makes.
		if ip, err := netip.ParseAddr(v.Value); err == nil && ip.Zone() == "" {
			ips = append(ips, ip.String())
		}
	}
	for _, v := range sum.UserAgents {
		s.UserAgents = append(s.UserAgents, ECSSeen{Value: v.Value, FirstSeen: ts(v.First), LastSeen: ts(v.Last), Count: v.Count})
	}
	for _, r := range sum.Regions {
		s.Regions = append(s.Regions, ECSCount{Value: r.Value, Count: r.Count})
	}
	for _, r := range sum.Errors {
		s.Errors = append(s.Errors, ECSCount{Value: r.Value, Count: r.Count})
	}
	for _, n := range sum.Notable {
		by := "other"
		if n.AsActor {
			by = "user"
		}
		s.Notable = append(s.Notable, ECSNotable{
			ID: n.EventID, Time: ts(n.Time), Provider: n.Source, Action: n.Name, Outcome: n.Outcome, ErrorCode: n.ErrorCode,
			SourceIP: n.SourceIP, By: by, Reason: n.Why.Why, Technique: n.Why.Technique, Reference: n.Why.Reference,
		})
	}
	c.QuarantineWatch.Summary = s
	slices.Sort(ips)
	c.Related = &ECSRelated{IP: slices.Compact(ips), User: []string{e.TargetName}}
	c.Message = fmt.Sprintf("%s in %s, %s before the finding: %d events (%d by the user, %d on the user), %d notable, %d source addresses, %d access keys",
		e.TargetName, cmp.Or(e.RecipientAccountID, e.UserIdentity.AccountID, "an unknown account"), w.End.Sub(w.Start), s.Events, s.AsActor, s.AsTarget,
		len(s.Notable), len(s.SourceIPs), len(s.AccessKeyIDs))
	if win.Cut {
		c.Message += " (window cut: " + win.CutReason + ")"
	}
	return c, nil
}

// EncodeContext returns the context document as one line of JSON.
func EncodeContext(c *ECSContext) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("producer: encoding context document: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// OCSFEnrichment is an OCSF 1.3.0 enrichment object: the context of the
// attribute Name whose value is Value, in Data.
type OCSFEnrichment struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Type      string `json:"type"`
	Provider  string `json:"provider"`
	ShortDesc string `json:"short_desc"`
	// Data is quarantine_watch.* of the ECS context document: the alert
	// id, the rule, the window and the summary, in the same shape.
	Data ECSContextQuarantineWatch `json:"data"`
}

// OCSFContextType is the enrichment type of a context document.
const OCSFContextType = "quarantine_watch.context"

// NewOCSFContext builds the OCSF form of the context document of finding
// f, read from src: its Detection Finding with activity Update, the
// summary in enrichments[0] (on the target user's name, as resources[]
// holds it) and the message of the ECS form. Its times are the window's
// end, the finding's event time, not the clock, so that the same finding
// over the same input gives the same bytes, as in the ECS form.
func NewOCSFContext(f matcher.Finding, src Source, sum lookback.Summary, w ContextWindow) (*OCSFDetectionFinding, error) {
	c, err := NewECSContext(f, sum, w)
	if err != nil {
		return nil, err
	}
	d, err := NewOCSFDetectionFinding(f, src, w.End)
	if err != nil {
		return nil, err
	}
	d.ActivityID, d.ActivityName = ocsfActivityUpdate, "Update"
	d.TypeUID, d.TypeName = ocsfClassDetection*100+ocsfActivityUpdate, "Detection Finding: Update"
	d.Message = c.Message
	d.Enrichments = []OCSFEnrichment{{
		Name: "resources.name", Value: c.User.Name, Type: OCSFContextType, Provider: OCSFProductName,
		ShortDesc: c.Message, Data: c.QuarantineWatch,
	}}
	return d, nil
}

// SetAlertID sets the alert id a context document is keyed by, where the
// finding it was built from is not the alert's own event (the case worker
// could not read it again).
func (d *OCSFDetectionFinding) SetAlertID(id string) {
	d.Metadata.UID, d.FindingInfo.UID = id, id
	for i := range d.Enrichments {
		d.Enrichments[i].Data.AlertID = id
	}
}

// EncodeOCSFContext returns the OCSF context document as one line of JSON.
func EncodeOCSFContext(d *OCSFDetectionFinding) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("producer: encoding OCSF context document: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Cut shortens the summary's longest list (by its JSON size; the notable
// calls only when no other list can be cut) to half its entries, keeping
// those seen most often (of the notable calls, the latest: those closest
// to the finding), in their order, and records the cut in Truncated. It reports false when no list has more than one entry left.
// The counts (events, as actor, as target) are never cut: they are the
// whole window's, whatever the lists keep.
func (s *ECSSummary) Cut() bool {
	type list struct {
		field string
		n     int
		cut   func(keep int)
	}
	byCount := func(counts []int, keep int) []bool {
		idx := make([]int, len(counts))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(counts[b], counts[a]) })
		kept := make([]bool, len(counts))
		for _, i := range idx[:keep] {
			kept[i] = true
		}
		return kept
	}
	seen := func(v *[]ECSSeen) func(int) {
		return func(keep int) {
			counts := make([]int, len(*v))
			for i, x := range *v {
				counts[i] = x.Count
			}
			kept := byCount(counts, keep)
			i := 0
			*v = slices.DeleteFunc(*v, func(ECSSeen) bool { i++; return !kept[i-1] })
		}
	}
	count := func(v *[]ECSCount) func(int) {
		return func(keep int) {
			counts := make([]int, len(*v))
			for i, x := range *v {
				counts[i] = x.Count
			}
			kept := byCount(counts, keep)
			i := 0
			*v = slices.DeleteFunc(*v, func(ECSCount) bool { i++; return !kept[i-1] })
		}
	}
	lists := []list{
		{"source_ips", len(s.SourceIPs), seen(&s.SourceIPs)},
		{"user_agents", len(s.UserAgents), seen(&s.UserAgents)},
		{"regions", len(s.Regions), count(&s.Regions)},
		{"errors", len(s.Errors), count(&s.Errors)},
		{"actions", len(s.Actions), func(keep int) {
			counts := make([]int, len(s.Actions))
			for i, x := range s.Actions {
				counts[i] = x.Count
			}
			kept := byCount(counts, keep)
			i := 0
			s.Actions = slices.DeleteFunc(s.Actions, func(ECSActionCount) bool { i++; return !kept[i-1] })
		}},
		{"access_key_ids", len(s.AccessKeyIDs), func(keep int) { s.AccessKeyIDs = s.AccessKeyIDs[:keep] }},
		{"notable", len(s.Notable), func(keep int) { s.Notable = s.Notable[len(s.Notable)-keep:] }},
	}
	sizes := map[string]int{}
	for _, l := range []struct {
		field string
		v     any
	}{{"source_ips", s.SourceIPs}, {"user_agents", s.UserAgents}, {"regions", s.Regions}, {"errors", s.Errors},
		{"actions", s.Actions}, {"access_key_ids", s.AccessKeyIDs}, {"notable", s.Notable}} {
		b, _ := json.Marshal(l.v)
		sizes[l.field] = len(b)
	}
	// The notable calls, the summary's point, are cut last.
	best := -1
	for _, notable := range []bool{false, true} {
		for i, l := range lists {
			if (l.field == "notable") == notable && l.n > 1 && (best < 0 || sizes[l.field] > sizes[lists[best].field]) {
				best = i
			}
		}
		if best >= 0 {
			break
		}
	}
	if best < 0 {
		return false
	}
	l := lists[best]
	keep := l.n / 2
	l.cut(keep)
	for i := range s.Truncated {
		if s.Truncated[i].Field == l.field {
			s.Truncated[i].Kept = keep
			return true
		}
	}
	s.Truncated = append(s.Truncated, ECSTruncated{Field: l.field, Total: l.n, Kept: keep})
	return true
}

// Cut cuts the document's summary (ECSSummary.Cut) and keeps related.ip
// to the source addresses it still lists.
func (c *ECSContext) Cut() bool {
	if !c.QuarantineWatch.Summary.Cut() {
		return false
	}
	if c.Related != nil {
		var ips []string
		for _, v := range c.QuarantineWatch.Summary.SourceIPs {
			if ip, err := netip.ParseAddr(v.Value); err == nil && ip.Zone() == "" {
				ips = append(ips, ip.String())
			}
		}
		slices.Sort(ips)
		c.Related.IP = slices.Compact(ips)
	}
	return true
}
